"""Distributed gradient-based cut optimisation: exact per-chunk gradient reduction, optax updates.

Modules, one idea each: ``layout`` (the static shape of what the cluster computes), ``model`` (the
pyhf statistical model of the analysis, filled from reduced histograms), ``contribution`` (the pure-JAX
per-chunk kernel and its worker entry points), ``objective`` (f(H), ∂f/∂H on the driver),
``loop`` (optimiser, schedules, NaN guard, early stopping), ``checkpoint``, ``reference`` (the
single-process "hold everything" gradient), ``driver`` (the run on a chunk source of
`zprime_grad.chunks`, and its outputs).
"""

from zprime_grad.optimise.contribution import Relaxation
from zprime_grad.optimise.driver import optimise

__all__ = ["Relaxation", "optimise"]
