"""The hard-cut histograms in the optimiser's own statistical model: separates relaxation from encoding.

``Z_hard`` (cabinetry's workspace) and ``Z_soft`` (the optimiser's soft templates) differ for two
reasons: soft vs hard cuts/KDE (what validation is about), and cabinetry's NormPlusShape encoding of a
variation vs the optimiser's single histosys. `optimiser_model_spec` puts the *hard* templates into the
optimiser's model (`zprime_grad.model_table.pyhf_spec`, same floor, modifiers, staterror), so
``Z_hard_optimiser_model`` differs from ``Z_soft`` only by the relaxation and from ``Z_hard`` only by
the encoding.
"""

from __future__ import annotations

import numpy as np

from zprime_grad.model_table import SUMW2, ModelSettings, ModelShape, pyhf_spec
from zprime_grad.validate.hists import NOMINAL, Binning, template


def hard_layout(binning: Binning, processes, variations) -> ModelShape:
    """The `ModelShape` of the hard templates ``H[process, channel, template, bin]``: the binning's
    channels, ``processes``, then nominal, Σw² and ``variations`` (as `hard_H` fills them)."""
    return ModelShape(processes=tuple(processes), channel_names=tuple(c.name for c in binning.channels),
                      templates=(NOMINAL, SUMW2, *(v for v in variations if v != NOMINAL)),
                      n_bins=len(binning.edges) - 1)


def without_variations_of_empty(H: np.ndarray) -> np.ndarray:
    """``H[…, process, channel, template, bin]`` with the variations of every template whose nominal is
    empty set to that (empty) nominal.

    A process with no held-out MC event in a channel has no yield to vary: an event that a variation
    moves in is an MC fluctuation, and as a yield ratio to the floor it explodes (cabinetry's
    NormPlusShape made W+jets ×371 at JES +1σ in one signal region, Z₀ 3.13 → 2.69). Every hard-cut
    model (cabinetry's inputs, the optimiser's model on hard templates, the bootstrap) applies this rule.
    """
    H = np.array(H, float, copy=True)
    empty = H[..., 0, :].sum(axis=-1) == 0.0  # [..., process, channel]
    H[..., 2:, :] = np.where(empty[..., None, None], H[..., 0:1, :], H[..., 2:, :])
    return H


def hard_H(h, layout: ModelShape) -> np.ndarray:
    """``H[process, channel, template, bin]`` (nominal, Σw², variations) from one label's hist, with
    `without_variations_of_empty`."""
    H = np.zeros(layout.shape)
    for p, process in enumerate(layout.processes):
        for c, channel in enumerate(layout.channel_names):
            values, variances = template(h, channel, process, NOMINAL)
            H[p, c, 0], H[p, c, 1] = values, variances
            for t, variation in enumerate(layout.variations, start=2):
                H[p, c, t] = template(h, channel, process, variation)[0]
    return without_variations_of_empty(H)


def optimiser_model_spec(h, binning: Binning, processes, variations, settings: ModelSettings) -> dict:
    layout = hard_layout(binning, processes, variations)
    return pyhf_spec(layout, settings, hard_H(h, layout))
