"""`ValidationProcessor`: the analysis processor's skim, then hard-cut histograms instead of columns.

A thin coffea ``ProcessorABC`` that wraps the configured analysis processor: per coffea chunk it calls
the analysis' own ``process(events)`` (same objects, same observables, same systematic variations as
the skim the optimiser saw) and fills the hard-cut histograms of `zprime_grad.validate.hists` for
every cut set. Its output, ``{label: hist.Hist}``, adds up under coffea's ``accumulate`` on any
executor (Iterative, Futures, Dask).
"""

from __future__ import annotations

from typing import Mapping

from coffea import processor

from zprime_grad.validate.hists import Binning, fill_chunk


class ValidationProcessor(processor.ProcessorABC):
    def __init__(self, analysis, binning: Binning, thetas: Mapping[str, Mapping[str, float]]):
        self.analysis = analysis
        self.binning = binning
        # thresholds as floats; a network's weights (a pytree, under its name) as given
        self.thetas = {label: {k: v if isinstance(v, (list, dict)) else float(v) for k, v in theta.items()}
                       for label, theta in thetas.items()}

    def check_branches(self, branches, filename, *, is_data):
        check = getattr(self.analysis, "check_branches", None)
        if check is not None:
            check(branches, filename, is_data=is_data)

    def process(self, events):
        out = {}
        for chunk in self.analysis.process(events)["chunks"]:
            filled = fill_chunk(chunk, self.binning, self.thetas)
            out = filled if not out else {k: out[k] + filled[k] for k in out}
        return out

    def postprocess(self, accumulator):
        return accumulator
