"""Hard-cut histograms of one ColumnChunk: ``hist.Hist`` per cut set, channel × process × variation × observable.

The selection is ``Channel.hard_mask(chunk.view(variation), θ)`` — the hard cuts derived from the same
declarations as the optimiser's soft ones — and only the **held-out half** enters: the event weight is
``2 · [parity = 1] · w`` (×2: one half stands for the full luminosity, exactly as the optimiser's
validation templates). Variations, as in the optimiser's layout:

* ``nominal``: nominal columns, nominal weight;
* weight variations (``btag_sf_up`` …, every weight except nominal): nominal columns, varied weight;
* kinematic variations (``jes_up`` …, every ``chunk.variations`` entry): varied columns, nominal weight;
* data: ``nominal`` only, process ``data``.

The observable axis has the optimiser's edges and no flow bins (the fit sees only these bins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import hist
import numpy as np

from zprime_grad.errors import UserError
from zprime_grad.selection import Channel

NOMINAL = "nominal"
DATA = "data"
HELDOUT_PARITY = 1  # odd event numbers: never seen by the optimiser
HALF_SCALE = 2.0  # one half of the events stands for the full luminosity


@dataclass(frozen=True)
class Binning:
    """What is histogrammed: the channels (each bound to its fit observable) and the observable's edges;
    ``observable`` is the common observable's name, or a "channel: observable" list when they differ."""

    channels: tuple[Channel, ...]
    observable: str
    edges: tuple[float, ...]

    @classmethod
    def from_config(cls, channels: Sequence[Channel], config) -> "Binning":
        """The optimiser's binning (``optimise.observable``, ``bins``, ``range``): same as its layout."""
        opt = config.optimise
        edges = tuple(float(e) for e in np.linspace(opt.range[0], opt.range[1], opt.bins + 1))
        if opt.observable is None:  # each channel bins its own observable (declared by the processor)
            label = ", ".join(dict.fromkeys(f"{c.name}: {c.observable}" for c in channels))
            return cls(tuple(channels), label, edges)
        return cls(tuple(Channel(c.name, c.cuts, opt.observable) for c in channels), opt.observable, edges)


def empty_hist(binning: Binning, channels=(), processes=(), variations=()) -> hist.Hist:
    """Growing categories (optionally with some already present), the optimiser's observable bins."""
    return hist.Hist(
        hist.axis.StrCategory(list(channels), growth=True, name="channel", label="channel"),
        hist.axis.StrCategory(list(processes), growth=True, name="process", label="process"),
        hist.axis.StrCategory(list(variations), growth=True, name="variation", label="variation"),
        hist.axis.Variable(binning.edges, name="observable", label=binning.observable, underflow=False, overflow=False),
        storage=hist.storage.Weight(),
    )


def variations_of(chunk) -> list[tuple[str, str, str]]:
    """``(variation, columns view, weight)`` triples the chunk fills."""
    if chunk.is_data:
        return [(NOMINAL, NOMINAL, NOMINAL)]
    if chunk.sample_variation != NOMINAL:  # a two-point systematic sample: its nominal under its own name
        return [(chunk.sample_variation, NOMINAL, NOMINAL)]
    out = [(NOMINAL, NOMINAL, NOMINAL)]
    out += [(w, NOMINAL, w) for w in sorted(chunk.weights) if w != NOMINAL]
    out += [(v, v, NOMINAL) for v in sorted(chunk.variations)]
    return out


def selections(chunk, binning: Binning, thetas: Mapping[str, Mapping[str, float]], parity: int = HELDOUT_PARITY):
    """Yield ``(label, channel, process, variation, keep, x, w)``: the events of one half (default: the
    held-out one) each template receives (``keep``: their mask over the chunk's events; ``x``, ``w``:
    theirs). ``parity=0``: the optimiser's training half (the black-box scan's objective)."""
    n = chunk.n_events
    process = DATA if chunk.is_data else chunk.process
    heldout = np.asarray(chunk.columns["parity"][:n]) == parity
    for label, theta in thetas.items():
        for variation, view, weight in variations_of(chunk):
            columns = {k: v[:n] for k, v in chunk.view(view).items()}
            w = HALF_SCALE * np.asarray(chunk.weights[weight][:n], np.float64)
            for channel in binning.channels:
                keep = heldout & channel.hard_mask(columns, theta)
                if channel.observable not in columns:
                    raise UserError(f"optimise.observable: {channel.observable!r} is not a skimmed column "
                                    f"(channel {channel.name}, chunk of {chunk.dataset})")
                x = np.asarray(columns[channel.observable], np.float64)
                yield label, channel.name, process, variation, keep, x[keep], w[keep]


def fill_chunk(chunk, binning: Binning, thetas: Mapping[str, Mapping[str, float]]) -> dict[str, hist.Hist]:
    """``{label: Hist}`` for each cut set ``thetas[label]`` (e.g. baseline, optimised), held-out events only."""
    process = DATA if chunk.is_data else chunk.process
    categories = ([c.name for c in binning.channels], [process], [v for v, _, _ in variations_of(chunk)])
    out = {label: empty_hist(binning, *categories) for label in thetas}  # every template exists, even if empty
    for label, channel, process, variation, _, x, w in selections(chunk, binning, thetas):
        out[label].fill(channel=channel, process=process, variation=variation, observable=x, weight=w)
    return out


def as_arrays(h: hist.Hist) -> dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]:
    """``{(channel, process, variation): (values, variances)}``: independent of category order."""
    out = {}
    for i, ch in enumerate(h.axes["channel"]):
        for j, p in enumerate(h.axes["process"]):
            for k, v in enumerate(h.axes["variation"]):
                view = h.view()[i, j, k]
                out[(ch, p, v)] = (np.array(view.value), np.array(view.variance))
    return out


def template(h: hist.Hist, channel: str, process: str, variation: str = NOMINAL) -> tuple[np.ndarray, np.ndarray]:
    """Values and variances of one template (zeros where the category never got filled)."""
    n = h.axes["observable"].size
    try:
        view = h[{"channel": channel, "process": process, "variation": variation}].view()
    except KeyError:
        return np.zeros(n), np.zeros(n)
    return np.array(view.value), np.array(view.variance)
