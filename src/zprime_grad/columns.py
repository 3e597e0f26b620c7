"""ColumnChunk: one skimmed coffea chunk as fixed-shape float32 numpy columns, ready for JAX.

Layout (all arrays have the same first dimension ``length``, a bucket size ≥ ``n_events``; rows at
``n_events:`` are padding with zero weight and zero ``baseline``/``valid``):

- ``columns[name]``: float32, shape ``(length,)`` for event quantities (``met_pt``, ``mtt``, ``parity``
  = event number mod 2, ``valid``, ``baseline`` …) or ``(length, width)`` for a padded collection
  (``jet_pt``, ``jet_btag`` … with the 0/1 mask ``jet_mask``).
- ``weights[name]``: float32 ``(length,)`` full event weights: ``nominal`` = xsec·lumi·genWeight/Σ
  genWeight × scale factors, and e.g. ``btag_sf_up`` with one factor varied. Data: ``nominal`` = 1.
- ``variations[var][name]``: alternative kinematic columns (``jes_up`` …) that replace ``columns[name]``
  for that variation; `view` overlays them. Missing variations (data) mean "same as nominal".
- ``ids``: int64 ``run``, ``luminosityBlock``, ``event`` (padding: -1), for bookkeeping, not for JAX.
- ``provenance``: file, entry range, file uuid, config hash, entries read.

Even event numbers (parity 0) are for the optimisation, odd ones (parity 1) for validation.
"""

from __future__ import annotations

import functools
import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import uproot

from zprime_grad.errors import UserError

DEFAULT_BUCKETS = (256, 1024, 4096, 16384, 65536)


@dataclass
class ColumnChunk:
    columns: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    variations: dict[str, dict[str, np.ndarray]]
    ids: dict[str, np.ndarray]
    n_events: int
    dataset: str
    process: str
    sample_variation: str = "nominal"
    is_data: bool = False
    provenance: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # bytes read, process time: not part of the data

    @property
    def length(self) -> int:
        return len(self.weights["nominal"])

    @property
    def key(self) -> tuple:
        """Sort key: where the chunk came from, so that outputs of different executors line up."""
        p = self.provenance
        return (self.dataset, p.get("file", ""), int(p.get("entrystart", 0)))

    def view(self, variation: str = "nominal") -> dict[str, np.ndarray]:
        """The columns as seen under a kinematic variation (nominal where the variation is absent)."""
        return {**self.columns, **self.variations.get(variation, {})}

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array under one flat key (``col.X``, ``w.X``, ``var.V.X``, ``id.X``)."""
        out = {f"col.{k}": v for k, v in self.columns.items()}
        out.update({f"w.{k}": v for k, v in self.weights.items()})
        out.update({f"var.{v}.{k}": a for v, cols in self.variations.items() for k, a in cols.items()})
        out.update({f"id.{k}": v for k, v in self.ids.items()})
        return out

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())

    def meta(self) -> dict:
        return {
            "n_events": self.n_events, "length": self.length, "dataset": self.dataset,
            "process": self.process, "sample_variation": self.sample_variation,
            "is_data": self.is_data, "provenance": self.provenance,
        }

    # ---------------------------------------------------------------------------- on-disk format
    def to_npz_bytes(self) -> bytes:
        """One uncompressed .npz: the `arrays` keys plus ``meta`` (UTF-8 JSON as uint8).

        Written entry by entry with a fixed timestamp and order, so equal chunks give equal bytes.
        """
        meta = np.frombuffer(json.dumps(self.meta(), sort_keys=True).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, array in sorted({**self.arrays(), "meta": meta}.items()):
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
        return buf.getvalue()

    @classmethod
    def from_npz(cls, path_or_file) -> "ColumnChunk":
        with np.load(path_or_file, allow_pickle=False) as npz:
            meta = json.loads(bytes(npz["meta"]).decode())
            columns, weights, ids, variations = {}, {}, {}, {}
            for key in npz.files:
                kind, _, rest = key.partition(".")
                if kind == "col":
                    columns[rest] = npz[key]
                elif kind == "w":
                    weights[rest] = npz[key]
                elif kind == "id":
                    ids[rest] = npz[key]
                elif kind == "var":
                    var, _, name = rest.partition(".")
                    variations.setdefault(var, {})[name] = npz[key]
        return cls(columns, weights, variations, ids, meta["n_events"], meta["dataset"], meta["process"],
                   meta["sample_variation"], meta["is_data"], meta["provenance"])


# ------------------------------------------------------------------------------------ padding helpers
def bucket_length(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket ≥ n; beyond the largest, the next multiple of it."""
    for b in sorted(buckets):
        if n <= b:
            return b
    big = max(buckets)
    return -(-n // big) * big


def pad_rows(array: np.ndarray, length: int, fill=0) -> np.ndarray:
    extra = length - len(array)
    if extra == 0:
        return array
    pad = np.full((extra,) + array.shape[1:], fill, dtype=array.dtype)
    return np.concatenate([array, pad])


def make_chunk(columns, weights, variations, ids, *, buckets=DEFAULT_BUCKETS, **info) -> ColumnChunk:
    """Cast to float32, add ``valid``, pad every array to the bucket length (weights 0, ids -1)."""
    n = len(weights["nominal"])
    length = bucket_length(n, buckets)

    def f32(arrays):
        return {k: pad_rows(np.asarray(v, dtype=np.float32), length) for k, v in arrays.items()}

    columns = f32({**columns, "valid": np.ones(n)})
    return ColumnChunk(
        columns=columns,
        weights=f32(weights),
        variations={var: f32(cols) for var, cols in variations.items()},
        ids={k: pad_rows(np.asarray(v, dtype=np.int64), length, -1) for k, v in ids.items()},
        n_events=n,
        **info,
    )


# ------------------------------------------------------------------------------------------- weights
def parity(event_number) -> np.ndarray:
    """0 for even event numbers (optimisation half), 1 for odd (validation half)."""
    return (np.asarray(event_number).astype(np.uint64) % np.uint64(2)).astype(np.float32)


@functools.lru_cache(maxsize=256)
def file_sumw(filename: str, treename: str = "Events") -> float:
    """Σ genWeight of one file: the Runs tree (``genEventSumw`` or ``genEventSumw_``), else the events."""
    try:
        with uproot.open(filename) as f:
            if "Runs" in f:
                runs = f["Runs"]
                for name in ("genEventSumw", "genEventSumw_"):
                    if name in runs.keys():
                        return float(np.sum(runs[name].array(library="np")))
            tree = f[treename]
            if "genWeight" not in tree.keys():
                raise UserError(f"{filename}: no Runs genEventSumw and no genWeight branch; "
                                "mark the dataset is_data: true or give metadata sumw")
            return float(np.sum(tree["genWeight"].array(library="np"), dtype=np.float64))
    except (OSError, ValueError) as err:
        raise UserError(f"{filename}: cannot read the sum of generator weights ({err})") from None


def dataset_sumw(files: Sequence[str], treename: str = "Events") -> float:
    return float(sum(file_sumw(f, treename) for f in files))


def mc_weight(gen_weight: np.ndarray, xsec_pb: float, lumi_pb: float, sumw: float) -> np.ndarray:
    if sumw == 0:
        raise UserError("Σ genWeight is zero: cannot normalise the sample")
    return np.asarray(gen_weight, dtype=np.float64) * (xsec_pb * lumi_pb / sumw)


# ------------------------------------------------------------------------------------------ summaries
def concatenate(chunks: Sequence[ColumnChunk], variation: str = "nominal") -> dict[str, np.ndarray]:
    """The real (unpadded) rows of several chunks as one dict of columns (+ ``weight.X``), in key order."""
    chunks = sorted(chunks, key=lambda c: c.key)
    out: dict[str, list] = {}
    for c in chunks:
        for k, v in c.view(variation).items():
            out.setdefault(k, []).append(v[: c.n_events])
        for k, v in c.weights.items():
            out.setdefault(f"weight.{k}", []).append(v[: c.n_events])
        for k, v in c.ids.items():
            out.setdefault(f"id.{k}", []).append(v[: c.n_events])
    return {k: np.concatenate(v) for k, v in out.items()}


def channel_counts(chunk: ColumnChunk, channels, params: Mapping[str, float]) -> dict[str, dict]:
    """Raw and weighted nominal event counts per channel at ``params`` (hard cuts)."""
    cols, w = chunk.columns, chunk.weights["nominal"].astype(np.float64)
    out = {"skim": {"raw": int(chunk.n_events), "weighted": float(w.sum())}}
    for ch in channels:
        mask = ch.hard_mask(cols, params)
        out[ch.name] = {"raw": int(mask.sum()), "weighted": float(w[mask].sum())}
    return out
