"""Validation with the standard tools: hard cuts at θ* and θ₀ on the held-out (odd) events → hist →
cabinetry → pyhf.

Modules: `hists` (hard-cut ``hist.Hist`` of one ColumnChunk), `processor` (`ValidationProcessor`, the
coffea processor wrapping the analysis processor), `fill` (coffea Runner on any executor, or skimmed
chunks), `dask_mode` (NanoEvents dask mode + dask-histogram), `workspace` (histograms.root, the
generated cabinetry config, the workspaces), `inference` (Asimov discovery Z, MLE fit with pulls),
`compare` (the hard templates in the optimiser's own model), `plots` (mplhep), `driver` (`validate`,
validation.json).
"""

from zprime_grad.validate.driver import validate

__all__ = ["validate"]
