"""The figure of merit as a function of the reduced histograms ``H``: the optimiser's driver half of the
gradient, and the validation's bootstrap Z₀ (``layout``: the optimiser's `Layout` or any `ModelShape`).

The likelihood is non-linear in the *total* histograms, so per-chunk objective gradients do not add up;
per-chunk histograms and their Jacobians do. The driver evaluates ``f(H)`` and ``∂f/∂H`` (the stats
package's profiled significance, differentiated by the envelope theorem) and combines:

* forward mode: ``∇θ f = Σ ∂f/∂H · J`` with ``J = Σ_chunks ∂h_c/∂θ`` reduced on the cluster;
* reverse mode: ``∂f/∂H`` is the cotangent the cluster pulls back through every chunk (VJP), summed.

Objectives (all to be maximised): ``discovery`` — expected Z0 on Asimov data (default); ``cls`` —
1 − expected CLs at μ = 1 (median of the background-only Asimov band); ``mu_uncertainty`` — −σ(μ̂)
from the Hessian of the NLL at the μ = 1 Asimov optimum (which is the generating point, so no fit).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from zprime_grad.errors import UserError
from zprime_grad.model import ModelSettings, histograms_to_templates, make_model
from zprime_grad.stats import Model
from zprime_grad.stats import infer
from zprime_grad.stats import likelihood as lh

OBJECTIVES = ("discovery", "cls", "mu_uncertainty")


def _mu_uncertainty(model: Model, templates) -> jax.Array:
    structure = model.structure
    prep = lh.prepare(structure, templates)
    x, main, aux = infer.asimov_data(structure, prep, 1.0)
    free = np.flatnonzero(lh.layout(structure).free_mask)
    hess = jax.hessian(lambda v: lh.nll(x.at[free].set(v), structure, prep, main, aux))(x[free])
    poi = int(np.flatnonzero(free == structure.poi_index)[0])
    return jnp.sqrt(jnp.linalg.inv(hess)[poi, poi])


def objective_value(H: jax.Array, kind: str, model: Model, layout, settings: ModelSettings) -> jax.Array:
    """``f(H)``, the scalar to maximise, pure JAX."""
    templates = histograms_to_templates(H, layout, settings)
    if kind == "discovery":
        return model.discovery_significance(templates)
    if kind == "cls":
        return 1.0 - model.expected_cls(1.0, templates)[2]
    if kind == "mu_uncertainty":
        return -_mu_uncertainty(model, templates)
    raise UserError(f"optimise.objective: '{kind}' is not one of {', '.join(OBJECTIVES)}")


@partial(jax.jit, static_argnames=("kind", "structure", "options", "layout", "settings"))
def _value_and_grad(H, kind, structure, options, layout, settings):
    """Module-level and keyed on hashable statics: one compilation per model structure and process."""
    def f(h):
        model = Model(structure, histograms_to_templates(h, layout, settings), options=options)
        return objective_value(h, kind, model, layout, settings)

    return jax.value_and_grad(f)(H)


class Objective:
    """``f(H)`` and ``∂f/∂H`` on the driver (one jitted function serves training and validation)."""

    def __init__(self, kind: str, layout, settings: ModelSettings, H_start: np.ndarray):
        if kind not in OBJECTIVES:
            raise UserError(f"optimise.objective: '{kind}' is not one of {', '.join(OBJECTIVES)}")
        self.kind, self.layout, self.settings = kind, layout, settings
        self.model = make_model(layout, settings, H_start)

    def value_and_grad(self, H: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = _value_and_grad(jnp.asarray(H, float), self.kind, self.model.structure, self.model.options,
                                      self.layout, self.settings)
        return float(value), np.asarray(grad)

    def value(self, H: np.ndarray) -> float:
        return self.value_and_grad(H)[0]


def chain_rule(dfdH: np.ndarray, jac: np.ndarray) -> np.ndarray:
    """∇θ = Jᵀ·∂f/∂H, contracting every histogram axis."""
    return np.tensordot(dfdH, jac, axes=dfdH.ndim)
