"""Pre-training a network where the chunks are: weighted cross-entropy, per-chunk gradients reduced.

The loss is a sum over events, so — unlike the significance — per-chunk gradients simply add up: every
epoch sends the flat weights to the chunks (`loss_part`, run next to each chunk by the optimiser's
backends), which return ``Σ w·CE``, ``Σ w`` and ``∇ Σ w·CE``; the backends' fixed reduction tree sums
them (bit-identical on local and Dask) and the driver takes an optax Adam step (full batch).

Events: the skim baseline, MC only. The **even** events (parity 0) train; among them, those with
``(event // 2) % m == 0`` (``m = round(1 / validation_fraction)``) are the validation split that early
stopping watches (patience, relative ``min_delta``); the weights of the best validation epoch are
kept. The **odd** events are never trained on: their loss ("heldout") is recorded every epoch, and
they are what the hard-cut validation uses later.

Weights: each event's nominal weight (cross section × luminosity × generator weight …), times a
per-class factor that gives every class the same total weight on the training split — class
balancing by weights, no event is thrown away. Features are standardised with the (unweighted) mean
and standard deviation of the training split, stored with the network (``learn.io``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zprime_grad import atomic
from zprime_grad.errors import UserError
from zprime_grad.jaxconfig import in_float64
from zprime_grad.learn import io
from zprime_grad.learn.mlp import NetworkSpec, check_features, init_params, ravel

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "heldout")


@dataclass(frozen=True)
class TrainTask:
    """The static half of a training round (hashable: the jit key)."""

    spec: NetworkSpec
    class_of: tuple[tuple[str, int], ...]  # process -> class index; other processes take no part
    valid_modulus: int

    def label(self, process: str) -> int:
        return dict(self.class_of).get(process, -1)


def split_masks(chunk, task: TrainTask) -> np.ndarray:
    """``[3, length]`` 0/1: train, validation split (both even), held-out (odd); baseline, real rows."""
    n = chunk.n_events
    real = np.arange(chunk.length) < n
    base = real & (np.asarray(chunk.columns["baseline"]) > 0) & (task.label(chunk.process) >= 0)
    parity = np.asarray(chunk.columns["parity"])
    if "event" in chunk.ids:
        event = np.asarray(chunk.ids["event"], np.int64)
    else:  # chunks without event ids (benchmark replicas): the row number stands in for the event number
        event = 2 * np.arange(chunk.length, dtype=np.int64)
    vsplit = (event // 2) % task.valid_modulus == 0
    even = parity == 0
    return np.stack([base & even & ~vsplit, base & even & vsplit, base & (parity == 1)]).astype(np.float64)


def _features(chunk, spec: NetworkSpec) -> dict:
    return {c: chunk.columns[c] for c in sorted(spec.columns())}


# -------------------------------------------------------------------------- worker functions
def moments_part(chunk, task: TrainTask) -> dict:
    """Per chunk: event counts per split, Σ weight per class (train split), Σx, Σx² of the raw features."""
    masks = split_masks(chunk, task)
    x = np.asarray(task.spec.inputs(_features(chunk, task.spec)))  # spec without scaling: raw features
    train = masks[0]
    n_classes = len(task.spec.classes)
    class_w = np.zeros(n_classes)
    label = task.label(chunk.process)
    if label >= 0:
        class_w[label] = float(np.sum(train * chunk.weights["nominal"]))
    return {"n": masks.sum(axis=1), "class_w": class_w, "sum": train @ x, "sumsq": train @ (x * x)}


def _cross_entropy(spec: NetworkSpec, logits, label):
    if spec.n_outputs == 1:
        return optax.sigmoid_binary_cross_entropy(logits[:, 0], jnp.asarray(label, logits.dtype))
    return optax.softmax_cross_entropy_with_integer_labels(logits, label)


@partial(jax.jit, static_argnames=("spec",))
def _loss_and_grad(features, flat, label, weights, spec):
    """weights: ``[3, N]`` per split. Returns (Σ w·CE per split, ∇ of the training sum)."""
    def losses(f):
        ce = _cross_entropy(spec, spec.logits(spec.unravel(f), spec.inputs(features)), label)
        sums = weights @ ce
        return sums[0], sums

    (_, sums), grad = jax.value_and_grad(losses, has_aux=True)(flat)
    return sums, grad


def loss_part(chunk, task: TrainTask, flat, class_scale) -> dict:
    """Per chunk: ``{"loss": Σ w·CE per split, "wsum": Σ w per split, "grad": ∇ Σ_train w·CE}``."""
    label = task.label(chunk.process)
    w = split_masks(chunk, task) * np.asarray(chunk.weights["nominal"], np.float64)[None, :]
    w = w * (np.asarray(class_scale)[label] if label >= 0 else 0.0)
    labels = np.full(chunk.length, max(label, 0), np.int32)
    sums, grad = _loss_and_grad(_features(chunk, task.spec), jnp.asarray(flat, float), labels, jnp.asarray(w),
                                task.spec)
    return {"loss": np.asarray(sums), "wsum": w.sum(axis=1), "grad": np.asarray(grad)}


# ------------------------------------------------------------------------------- the driver
def classes_for(model, signal: str, processes) -> tuple[tuple[str, ...], str, tuple[tuple[str, int], ...]]:
    """(class names, score class, process -> class index) from ``models.<name>`` and the MC processes."""
    processes = sorted(processes)
    if model.classes is None:
        if signal not in processes:
            raise UserError(f"models: the signal process '{signal}' is not among the MC processes {processes}")
        classes, score = ("background", signal), signal
        class_of = tuple((p, 1 if p == signal else 0) for p in processes)
    else:
        classes = tuple(model.classes)
        unknown = sorted({p for ps in model.classes.values() for p in ps} - set(processes))
        if unknown:
            raise UserError(f"models.classes: processes {unknown} are not among the MC processes {processes}")
        class_of = tuple((p, i) for i, c in enumerate(classes) for p in model.classes[c])
        score = model.score_class or next((c for c in classes if signal in model.classes[c]), None)
        if score is None:
            raise UserError("models.score_class: none given and no class holds the signal process")
    if score not in classes:
        raise UserError(f"models.score_class '{score}' is not one of the classes {list(classes)}")
    return classes, score, class_of


@in_float64
def pretrain(backend, name: str, model, *, signal: str, progress: bool | None = None):
    """Train ``models.<name>`` on the backend's chunks: ``(spec, params, history)``."""
    from tqdm.auto import tqdm

    descriptions = backend.descriptions()
    mc = [d for d in descriptions if not d["is_data"]]
    if not mc:
        raise UserError("train: the columns contain no simulated (MC) chunks")
    check_features(model.features, set(mc[0]["columns"]), mc[0].get("shapes"), name=name)
    classes, score, class_of = classes_for(model, signal, {d["process"] for d in mc})
    cfg = model.train
    spec = NetworkSpec(name, tuple(model.features), tuple(model.hidden), model.activation, classes, score)
    modulus = max(2, round(1.0 / cfg.validation_fraction))
    task = TrainTask(spec, class_of, modulus)
    m = backend.map_reduce(moments_part, task=task)
    counts = dict(zip(SPLITS, map(int, m["n"])))
    if counts["train"] == 0 or counts["valid"] == 0:
        raise UserError(f"train {name}: no training/validation events ({counts})")
    missing = [c for c, w in zip(classes, m["class_w"]) if not w > 0]
    if missing:
        raise UserError(f"train {name}: classes {missing} have no (positively weighted) training events")
    mean = m["sum"] / counts["train"]
    std = np.sqrt(np.maximum(m["sumsq"] / counts["train"] - mean**2, 0.0))
    std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    spec = spec.with_scaling(mean, std)
    task = TrainTask(spec, class_of, modulus)
    class_scale = m["class_w"].sum() / (len(classes) * m["class_w"])

    flat = ravel(init_params(spec, cfg.seed))
    opt = optax.adam(cfg.learning_rate)
    state = opt.init(flat)
    history, best = [], (math.inf, flat, -1)
    bar = tqdm(total=cfg.epochs, desc=f"train {name}", unit="epoch", leave=False,
               disable=None if progress is None else not progress)
    stopped = None
    for epoch in range(cfg.epochs + 1):
        r = backend.map_reduce(loss_part, task=task, flat=flat, class_scale=class_scale)
        loss = r["loss"] / r["wsum"]
        grad = r["grad"] / r["wsum"][0]
        entry = {"epoch": epoch, **{f"loss_{s}": float(v) for s, v in zip(SPLITS, loss)},
                 "grad_norm": float(np.linalg.norm(grad))}
        history.append(entry)
        if not all(map(math.isfinite, loss)):
            raise UserError(f"train {name}: non-finite loss at epoch {epoch}; lower models.{name}.train.learning_rate")
        if loss[1] < best[0] * (1.0 - cfg.min_delta) or best[2] < 0:
            best = (float(loss[1]), flat, epoch)
        elif epoch - best[2] >= cfg.patience:
            stopped = f"early stop: validation loss not better for {cfg.patience} epochs (best at epoch {best[2]})"
            break
        if epoch == cfg.epochs:
            break
        updates, state = opt.update(jnp.asarray(grad), state, flat)
        flat = np.asarray(optax.apply_updates(flat, updates), float)
        bar.update(1)
        bar.set_postfix_str(f"train {loss[0]:.4f} valid {loss[1]:.4f}")
    bar.close()
    best_entry = history[best[2]]
    summary = {"name": name, "classes": list(classes), "score_class": score, "class_of": dict(class_of),
               "class_scale": [float(c) for c in class_scale], "events": counts,
               "validation_modulus": modulus, "n_params": spec.n_params, "best_epoch": best[2],
               "epochs_run": len(history), "stopped": stopped,
               "loss_initial": history[0], "loss_best": best_entry, "history": history}
    return spec, spec.unravel(best[1]), summary


def train_key(config, name: str, descriptions) -> str:
    """What a trained network depends on: its model section, the signal, the chunks."""
    chunks = sorted((tuple(d["key"]), d["n_events"], d["process"]) for d in descriptions if not d["is_data"])
    payload = {"model": config.models[name].model_dump(mode="json"), "signal": config.optimise.signal,
               "analysis": config.analysis.model_dump(mode="json"), "chunks": chunks, "format": io.FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@in_float64
def train_models(config, chunks, out, *, names=None, progress: bool | None = None,
                 reuse: bool = True) -> dict[str, Path]:
    """Pre-train every model of the config (or ``names``) on ``chunks`` (`zprime_grad.chunks`):
    ``OUT/<name>.npz`` + ``OUT/train.json`` (loss curves) + ``OUT/plots/training_<name>.png``. A network
    whose inputs did not change is reused."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(names or config.models)
    unknown = sorted(set(names) - set(config.models))
    if unknown:
        raise UserError(f"train: models {unknown} are not declared (have {sorted(config.models)})")
    summary_path = out / "train.json"
    try:
        summaries = json.loads(summary_path.read_text()).get("models", {})
    except (OSError, json.JSONDecodeError):
        summaries = {}
    paths = {}
    descriptions = chunks.descriptions()
    for name in names:
        path = out / f"{name}.npz"
        key = train_key(config, name, descriptions)
        if reuse and summaries.get(name, {}).get("key") == key and path.exists():
            log.info("train %s: reusing %s", name, path)
            paths[name] = path
            continue
        spec, params, summary = pretrain(chunks, name, config.models[name], signal=config.optimise.signal,
                                         progress=progress)
        summary["key"] = key
        io.save(path, spec, params, meta={"source": "zprime-grad train", "key": key,
                                          "best_epoch": summary["best_epoch"],
                                          "loss_best": summary["loss_best"]})
        summaries[name] = summary
        atomic.write_json(summary_path, {"models": summaries})
        write_loss_plot(out / "plots" / f"training_{name}.png", summary)
        paths[name] = path
        b, i = summary["loss_best"], summary["loss_initial"]
        log.info("train %s: %d parameters, %d epochs, held-out loss %.4f -> %.4f", name, spec.n_params,
                 summary["epochs_run"], i["loss_heldout"], b["loss_heldout"])
    return paths


def write_loss_plot(path: Path, summary: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [e["epoch"] for e in summary["history"]]
    with plt.style.context("default"):  # not the CMS style a validation plot may have set globally
        fig, ax = plt.subplots(figsize=(7, 4.5))
        labels = {"train": "train (even)", "valid": "validation split (even)", "heldout": "held-out (odd)"}
        for split in SPLITS:
            ax.plot(epochs, [e[f"loss_{split}"] for e in summary["history"]], label=labels[split])
        ax.axvline(summary["best_epoch"], color="grey", ls=":", label="kept (best validation)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("class-balanced cross-entropy")
        ax.set_title(f"{summary['name']}: {summary['n_params']} parameters, pre-training")
        ax.legend()
        fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
