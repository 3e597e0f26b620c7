"""The scan's figure of merit: the optimiser's objective on *hard-cut* templates of the training half.

The optimiser maximises f(H) on soft (sigmoid × KDE) templates of the even events, each × 2 so that the
half stands for the full luminosity. Here the same f (`zprime_grad.objective`, the same model, floor and
systematics) is evaluated on the hard-cut templates of the same events (`validate.bootstrap`'s filler
with ``parity = 0``, under/overflow folded into the edge bins as the KDE folds them): the limit the soft
analysis relaxes. Many candidates share one pass over the chunks. (The validation's hard templates drop
the flow instead, as cabinetry's do: every analysis compared there is filled the same way.)
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from zprime_grad.config import Config
from zprime_grad.errors import UserError
from zprime_grad.model_table import ModelSettings
from zprime_grad.validate.bootstrap import Analysis, replica_histograms
from zprime_grad.validate.compare import hard_layout, without_variations_of_empty
from zprime_grad.validate.hists import NOMINAL, Binning

TRAIN_PARITY = 0  # the optimiser's half (even event numbers)


def processes_and_variations(descriptions: Sequence[Mapping]) -> tuple[list[str], list[str]]:
    """The MC processes and the variations (weights, kinematic overlays, two-point samples) the chunks
    fill, as `validate.hists.variations_of` names them."""
    processes, variations = set(), set()
    for d in descriptions:
        if d["is_data"]:
            continue
        processes.add(d["process"])
        if d["sample_variation"] != NOMINAL:
            variations.add(d["sample_variation"])
        else:
            variations.update(w for w in d["weights"] if w != NOMINAL)
            variations.update(d["variations"])
    return sorted(processes), sorted(variations)


class HardObjective:
    """``f(hard templates of the training half at θ)`` for batches of θ; counts its evaluations."""

    def __init__(self, config: Config, chunks):
        from zprime_grad.skim.pipeline import make_processor, skim_options

        if config.optimise.networks:
            raise UserError("scan: the learned observables of optimise.networks are not scanned; "
                            "scan a config without optimise.networks")
        analysis = make_processor(config, skim_options(config))
        self.chunks, self.kind = chunks, config.optimise.objective
        self.parameters = analysis.parameters()
        self.binning = Binning.from_config(analysis.channels, config)
        processes, variations = processes_and_variations(chunks.descriptions())
        if not processes:
            raise UserError("scan: the skim holds no MC chunk")
        self.layout = hard_layout(self.binning, processes, variations)
        self.settings = ModelSettings.from_config(config)
        self.evaluations = 0

    def __call__(self, thetas: Sequence[Mapping[str, float]]) -> list[float]:
        """f at each θ (−inf where it is not finite: an empty signal region, a failed fit)."""
        from zprime_grad.objective import Objective

        analyses = {str(i): Analysis(self.binning, dict(theta)) for i, theta in enumerate(thetas)}
        H = replica_histograms(self.chunks, analyses, {k: self.layout for k in analyses}, 0, parity=TRAIN_PARITY,
                               fold=True)
        values = []
        for key in analyses:
            h = without_variations_of_empty(H[key][0])
            value = Objective(self.kind, self.layout, self.settings, h).value(h) if h[:, :, 0].sum() > 0 else -math.inf
            values.append(float(value) if np.isfinite(value) else -math.inf)
        self.evaluations += len(values)
        return values
