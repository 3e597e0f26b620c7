"""A HistFactory likelihood in JAX with pyhf semantics, differentiable in its templates.

``Model.from_pyhf(spec)`` reads a pyhf workspace; ``model.discovery_significance(templates)`` is the
expected discovery Z0 on Asimov data, a JAX scalar whose gradient w.r.t. every template bin comes from
the envelope theorem. Modules, one idea each:

* ``spec`` — reading/validating/writing pyhf JSON; the static ``Structure`` and the templates pytree.
* ``interpolation`` — pyhf interpolation codes 4 (normsys) and 4p (histosys).
* ``likelihood`` — expected yields, constraint terms, the NLL and Asimov data; the parametrisation.
* ``fit`` — L-BFGS profile fits (optax) and implicit differentiation through them.
* ``infer`` — q0, Z0, qmu_tilde, CLs, as in pyhf's asymptotic calculator.
* ``model`` — the ``Model`` class tying them together; ``cli`` — ``zprime-grad significance``.
"""

from zprime_grad.stats.fit import FitOptions, FitResult, argmin_implicit, minimize
from zprime_grad.stats.infer import safe_sqrt
from zprime_grad.stats.model import Model
from zprime_grad.stats.spec import Parameter, Structure, load_spec, parse_spec, validate_spec

__all__ = [
    "FitOptions",
    "FitResult",
    "Model",
    "Parameter",
    "Structure",
    "argmin_implicit",
    "load_spec",
    "minimize",
    "parse_spec",
    "safe_sqrt",
    "validate_spec",
]
