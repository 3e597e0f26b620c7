"""Networks on disk: one ``.npz`` per network, the weights as arrays plus a JSON header.

Format ``zprime_grad.mlp/1`` (an uncompressed NumPy ``.npz``, readable with ``numpy.load`` alone):

* ``layer{i}.w`` — float64 ``[n_in, n_out]`` weights of layer ``i`` (0 = the input layer),
  ``layer{i}.b`` — float64 ``[n_out]`` biases; the output of layer ``i`` is
  ``activation(x @ w + b)``, except the last layer, which gives the logits;
* ``header`` — UTF-8 JSON stored as a uint8 array::

    {"format": "zprime_grad.mlp/1", "name": "zprime_nn",
     "features": ["met_pt", "jet_btag[0]", …],      # skim columns; [i] = slot i of a padded collection
     "hidden": [32, 16], "activation": "relu",
     "classes": ["background", "signal"], "score_class": "signal",
     "scaling": {"mean": [...], "std": [...]},     # x_std = (x - mean) / std, fitted on training events
     "n_params": 1089, "meta": {...}}              # provenance: training history summary, config hash …

Two classes give one output logit (score = sigmoid(logit) = P(second class)); more give one logit per
class (score = softmax[score class]). Values are stored exactly (float64), so a saved and reloaded
network gives bit-identical scores. Files are written atomically (temporary name, then rename).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from zprime_grad import atomic
from zprime_grad.errors import UserError
from zprime_grad.learn.mlp import NetworkSpec

FORMAT = "zprime_grad.mlp/1"


def header(spec: NetworkSpec, meta: dict | None = None) -> dict:
    return {"format": FORMAT, "name": spec.name, "features": list(spec.features), "hidden": list(spec.hidden),
            "activation": spec.activation, "classes": list(spec.classes), "score_class": spec.score_class,
            "scaling": None if spec.mean is None else {"mean": list(spec.mean), "std": list(spec.std)},
            "n_params": spec.n_params, "meta": meta or {}}


def to_bytes(spec: NetworkSpec, params, meta: dict | None = None) -> bytes:
    arrays = {"header": np.frombuffer(json.dumps(header(spec, meta), sort_keys=True).encode(), dtype=np.uint8)}
    for i, (layer, (w_shape, b_shape)) in enumerate(zip(params, spec.shapes)):
        w, b = np.asarray(layer["w"], np.float64), np.asarray(layer["b"], np.float64)
        if w.shape != w_shape or b.shape != b_shape:
            raise ValueError(f"network {spec.name}: layer {i} has shapes {w.shape}/{b.shape}, spec {w_shape}/{b_shape}")
        arrays[f"layer{i}.w"], arrays[f"layer{i}.b"] = w, b
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in sorted(arrays.items()):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def save(path, spec: NetworkSpec, params, meta: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, to_bytes(spec, params, meta))
    return path


def load(path) -> tuple[NetworkSpec, list[dict], dict]:
    """``(spec, params, header)``; a missing, foreign or inconsistent file is a `UserError` naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            head = json.loads(bytes(npz["header"]).decode())
            if head.get("format") != FORMAT:
                raise UserError(f"{path}: network format {head.get('format')!r} is not {FORMAT!r}")
            scaling = head.get("scaling") or {}
            spec = NetworkSpec(head["name"], tuple(head["features"]), tuple(head["hidden"]), head["activation"],
                               tuple(head["classes"]), head["score_class"],
                               tuple(scaling["mean"]) if scaling else None, tuple(scaling["std"]) if scaling else None)
            params = [{"w": np.array(npz[f"layer{i}.w"], np.float64), "b": np.array(npz[f"layer{i}.b"], np.float64)}
                      for i in range(len(spec.shapes))]
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{path}: network file not found (zprime-grad train writes it)") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a {FORMAT} network file ({type(err).__name__}: {err})") from None
    for i, (layer, (w_shape, b_shape)) in enumerate(zip(params, spec.shapes)):
        if layer["w"].shape != w_shape or layer["b"].shape != b_shape:
            raise UserError(f"{path}: layer {i} has shapes {layer['w'].shape}/{layer['b'].shape}, "
                            f"the header says {w_shape}/{b_shape}")
    return spec, params, head
