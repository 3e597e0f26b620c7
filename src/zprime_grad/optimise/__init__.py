"""Distributed gradient-based cut optimisation: exact per-chunk gradient reduction, optax updates.

Modules, one idea each: ``layout`` (the static shape of what the cluster computes), ``contribution``
(the pure-JAX per-chunk kernel and its worker entry points), ``loop`` (optimiser, schedules, NaN guard, early stopping), ``checkpoint``, ``reference`` (the
single-process "hold everything" gradient), ``driver`` (the run on a chunk source of
`zprime_grad.chunks`, and its outputs). The statistical model and the objective f(H) it differentiates
are the package's (`zprime_grad.model_table`, `zprime_grad.model`, `zprime_grad.objective`), shared with
the validation.
"""

from zprime_grad.optimise.contribution import Relaxation
from zprime_grad.optimise.driver import optimise

__all__ = ["Relaxation", "optimise"]
