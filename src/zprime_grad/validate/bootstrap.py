"""Bootstrap replicas of the held-out hard-cut Z₀: how much of a difference between analyses is the noise
of the held-out MC itself.

Every held-out MC event gets a Poisson(1) count per replica, drawn from a generator seeded by its chunk,
so each analysis sees the same replica of the same event and their ratio is compared replica by
replica. The hard-cut templates are refilled with weight × count (Σw² with count × w²), exactly as
`zprime_grad.validate.hists` fills them once, and Z₀ on each replica is the optimiser's own likelihood
on the hard templates (`zprime_grad.validate.compare`, ``Z_hard_optimiser_model``: it agrees with
cabinetry's to ~0.1 %, and is fast enough for hundreds of fits). Replica 0 has every count 1: the
nominal templates, which a test compares with the validation's histograms.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import partial
from typing import Mapping

import numpy as np

from zprime_grad.model_table import ModelSettings, ModelShape
from zprime_grad.validate.compare import hard_layout, without_variations_of_empty
from zprime_grad.validate.hists import HELDOUT_PARITY, NOMINAL, Binning, selections


@dataclass(frozen=True)
class Analysis:
    """One set of hard cuts to compare: its channels (with any score cuts) and θ (with any weights)."""

    binning: Binning
    theta: Mapping


def event_counts(chunk, replicas: int, seed: int) -> np.ndarray:
    """``[replicas + 1, n_events]`` Poisson(1) counts, row 0 all ones; the same for a chunk every time."""
    rng = np.random.default_rng([seed, zlib.crc32(repr(chunk.key).encode())])
    draws = rng.poisson(1.0, (replicas, chunk.n_events)).astype(float)
    return np.concatenate([np.ones((1, chunk.n_events)), draws])


def _bin_sums(counts: np.ndarray, w: np.ndarray, x: np.ndarray, edges: np.ndarray,
              fold: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Σ count·w and Σ count·w² per bin, ``[replicas + 1, bins]``: no flow bins, as the validation's fit
    sees them; ``fold``: under/overflow in the edge bins, as the optimiser's KDE templates hold them."""
    index = np.searchsorted(edges, x, side="right") - 1
    if fold:
        index = np.clip(index, 0, len(edges) - 2)
    inside = (index >= 0) & (index < len(edges) - 1)
    onehot = np.zeros((int(inside.sum()), len(edges) - 1))
    onehot[np.arange(len(onehot)), index[inside]] = 1.0
    c, w = counts[:, inside], w[inside]
    return (c * w) @ onehot, (c * w * w) @ onehot


def chunk_replicas(chunk, analyses: Mapping[str, Analysis], layouts: Mapping[str, ModelShape], replicas: int,
                   seed: int = 0, parity: int = HELDOUT_PARITY, fold: bool = False) -> dict[str, np.ndarray]:
    """One chunk's ``{label: H[replica, process, channel, template, bin]}``: its held-out (``parity``)
    MC events as `hists.selections` picks them for the hard-cut templates, each × its replica counts
    (``fold``: see `_bin_sums`)."""
    out = {label: np.zeros((replicas + 1, *layouts[label].shape)) for label in analyses}
    if chunk.is_data:
        return out
    counts = event_counts(chunk, replicas, seed)
    for label, analysis in analyses.items():
        layout, H = layouts[label], out[label]
        if chunk.process not in layout.processes:
            continue
        p = layout.processes.index(chunk.process)
        slots = {NOMINAL: 0, **{v: t for t, v in enumerate(layout.variations, start=2)}}
        edges = np.asarray(analysis.binning.edges, float)
        for _, channel, _, variation, keep, x, w in selections(chunk, analysis.binning, {label: analysis.theta},
                                                                  parity):
            c = layout.channel_names.index(channel)
            sums, squares = _bin_sums(counts[:, keep], w, x, edges, fold)
            H[:, p, c, slots[variation]] += sums
            if variation == NOMINAL:
                H[:, p, c, 1] += squares
    return out


def replica_histograms(chunks, analyses: Mapping[str, Analysis], layouts: Mapping[str, ModelShape],
                       replicas: int, seed: int = 0, parity: int = HELDOUT_PARITY,
                       fold: bool = False) -> dict[str, np.ndarray]:
    """``{label: H[replica, process, channel, template, bin]}`` over the held-out (``parity``) MC events
    of skimmed chunks (`zprime_grad.chunks`; on Dask, filled where the chunks are), replica 0 nominal;
    ``layouts[label]`` fixes the order of processes, channels and variations."""
    return chunks.reduce(partial(chunk_replicas, analyses=analyses, layouts=layouts, replicas=replicas, seed=seed,
                                 parity=parity, fold=fold))


def replica_significances(H: np.ndarray, layout: ModelShape, settings: ModelSettings) -> np.ndarray:
    """Z₀ (expected discovery, Asimov) of each replica in the optimiser's likelihood."""
    from zprime_grad.objective import Objective

    H = without_variations_of_empty(H)  # replica by replica, as every hard-cut model
    objective = Objective("discovery", layout, settings, H[0])
    return np.array([objective.value(h) for h in H])


def summarise(z: Mapping[str, np.ndarray], reference: str) -> dict[str, dict]:
    """Per analysis: nominal Z₀, its bootstrap spread, and the ratio to ``reference`` replica by replica
    (68 % interval, and the fraction of replicas in which the analysis beats the reference)."""
    ref = z[reference]
    out = {}
    for label, values in z.items():
        ratio = values[1:] / ref[1:]
        out[label] = {"Z": float(values[0]), "Z_std": float(np.std(values[1:], ddof=1)),
                      f"ratio_to_{reference}": float(values[0] / ref[0]),
                      "ratio_std": float(np.std(ratio, ddof=1)),
                      "ratio_interval_68": [float(q) for q in np.percentile(ratio, [15.87, 84.13])],
                      "fraction_above_reference": float(np.mean(values[1:] > ref[1:]))}
    return out


def bootstrap(chunks, analyses: Mapping[str, Analysis], *, processes, variations, settings: ModelSettings,
              reference: str, replicas: int, seed: int = 0, also_against: str | None = None) -> dict:
    """Held-out Z₀ of every analysis on ``replicas`` bootstrap replicas, compared with ``reference``
    (and, replica by replica, with ``also_against``: ``against_<label>``)."""
    layouts = {label: hard_layout(a.binning, processes, variations) for label, a in analyses.items()}
    H = replica_histograms(chunks, analyses, layouts, replicas, seed)
    z = {label: replica_significances(H[label], layouts[label], settings) for label in analyses}
    return {"replicas": replicas, "seed": seed, "reference": reference,
            "method": "Poisson(1) bootstrap of the held-out MC events, the same replicas for every analysis; "
                      "Z0 in the optimiser's likelihood on the hard templates",
            "analyses": summarise(z, reference),
            **({f"against_{also_against}": summarise(z, also_against)} if also_against else {})}
