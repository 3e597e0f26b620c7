"""Profile-likelihood test statistics, asymptotic significances and CLs, as in pyhf.

All functions take the static ``Structure`` first and the ``Prepared`` (traced) templates, and are
differentiable w.r.t. the templates: fitted parameters enter through ``stop_gradient`` and the NLL is
re-evaluated (envelope theorem), or through ``argmin_implicit`` with ``gradient="implicit"``.

Conventions follow pyhf (arXiv:1007.1727): q0 = 2 [NLL(0, theta_hat_hat) - NLL(mu_hat, theta_hat)],
0 if mu_hat < 0; qmu_tilde uses the mu = 0 fit in place of the free fit when mu_hat < 0, and is 0 when
mu_hat > mu. The expected CLs band is pyhf's: the test statistic at n_sigma = 2, 1, 0, -1, -2 (so the
CLs values increase along the band; index 2 is the median). Square roots are NaN-safe at 0.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from zprime_grad.stats import likelihood as lh
from zprime_grad.stats.fit import FitOptions, argmin_implicit, minimize
from zprime_grad.stats.spec import Structure

Array = jax.Array
Gradient = Literal["envelope", "implicit"]
N_SIGMA = (2.0, 1.0, 0.0, -1.0, -2.0)


def safe_sqrt(x: Array) -> Array:
    """sqrt(max(x, 0)) with a finite (zero) gradient at and below 0: the double-where trick."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


class Profile(NamedTuple):
    x: Array  # fitted parameters (fit parametrisation), fixed coordinates included
    nll: Array  # NLL at x, differentiable w.r.t. the templates and the data


def _objective(structure: Structure, free: np.ndarray):
    def objective(x, args):
        prep, main, aux, x_fixed = args
        return lh.nll_unnormalised(jnp.where(free, x, x_fixed), structure, prep, main, aux)

    return objective


def start_parameters(structure: Structure, prep: lh.Prepared, poi_value=None) -> Array:
    """Suggested init (pyhf's), optionally with the POI set: the fit's start and fixed values."""
    x = jax.lax.stop_gradient(lh.init_parameters(structure, prep))
    if poi_value is not None:
        x = x.at[structure.poi_index].set(poi_value)
    return x


def profile(
    structure: Structure,
    prep: lh.Prepared,
    main: Array,
    aux: Array,
    poi_value: Array | float | None = None,
    *,
    fix_poi: Array | bool = True,
    options: FitOptions = FitOptions(),
    gradient: Gradient = "envelope",
) -> Profile:
    """Minimise the NLL over the free parameters (all but the POI if ``poi_value`` is given and ``fix_poi``).

    ``fix_poi`` may be traced (envelope gradients only), which lets ``profiles`` batch fits with and
    without a fixed POI into one vmapped loop.
    """
    free = lh.layout(structure).free_mask
    x_fixed = start_parameters(structure, prep)
    if poi_value is not None and fix_poi is not False:
        is_poi = np.arange(free.shape[0]) == structure.poi_index
        if fix_poi is True:
            free = free & ~is_poi
            x_fixed = x_fixed.at[structure.poi_index].set(poi_value)
        else:  # traced: fixed or free per batch element
            free = jnp.asarray(free) & ~(is_poi & fix_poi)
            x_fixed = x_fixed.at[structure.poi_index].set(jnp.where(fix_poi, poi_value, x_fixed[structure.poi_index]))
    objective = _objective(structure, free)
    args = (prep, main, aux, x_fixed)
    if gradient == "envelope":
        start, args0 = jax.lax.stop_gradient(x_fixed), jax.lax.stop_gradient(args)
        inverse_hessian = fisher_inverse(structure, args0[0], start, free) if options.method == "bfgs" else None
        fitted = minimize(objective, start, args0, free=free, options=options, inverse_hessian=inverse_hessian)
        x = jax.lax.stop_gradient(fitted.x)
    elif gradient == "implicit":
        if not isinstance(free, np.ndarray):
            raise ValueError("gradient='implicit' needs a static fix_poi")
        x = argmin_implicit(objective, jax.lax.stop_gradient(x_fixed), args, tuple(bool(f) for f in free), options)
    else:
        raise ValueError(f"gradient must be 'envelope' or 'implicit', got {gradient!r}")
    x = jnp.where(free, x, x_fixed)
    return Profile(x, lh.nll(x, structure, prep, main, aux))


def profiles(
    structure: Structure, prep: lh.Prepared, main: Array, aux: Array, poi_values, fix_poi, *,
    options: FitOptions = FitOptions(),
) -> Profile:
    """Several envelope-differentiable fits to the same data in one vmapped loop (compiled once).

    ``poi_values[i]`` is used when ``fix_poi[i]``; otherwise fit ``i`` is the unconditional fit.
    """
    def one(poi_value, fix):
        return profile(structure, prep, main, aux, poi_value, fix_poi=fix, options=options)

    return jax.vmap(one)(jnp.asarray(poi_values, float), jnp.asarray(fix_poi, bool))


def fisher_inverse(structure: Structure, prep: lh.Prepared, x: Array, free) -> Array:
    """Inverse expected Fisher information at ``x`` over the free parameters (identity elsewhere).

    sum_b (d lambda_b / dx_i)(d lambda_b / dx_j) / lambda_b plus the constraints' curvature, which is 1
    for every constrained parameter in this parametrisation. A good start for BFGS: it is the exact
    Hessian of the Asimov NLL at the generating point.
    """
    jacobian = jax.jacfwd(lambda v: lh.expected_main(structure, prep, v))(x)  # [B, P]
    rate = lh.floor_rate(lh.expected_main(structure, prep, x))
    information = (jacobian / rate[:, None]).T @ jacobian
    constrained = ~np.isin([k for p in structure.parameters for k in [p.kind] * p.size], ["normfactor", "shapefactor"])
    information = information + jnp.diag(jnp.asarray(constrained, information.dtype))
    free = jnp.asarray(free, bool)
    both = free[:, None] & free[None, :]
    n = x.shape[0]
    information = jnp.where(both, information, jnp.eye(n)) + 1e-9 * jnp.eye(n)
    return jnp.linalg.inv(information)


def nominal_aux(structure: Structure) -> Array:
    """Auxiliary data of the spec (every constraint centred on its nominal value)."""
    return jnp.zeros(structure.n_parameters)


def asimov_data(structure: Structure, prep: lh.Prepared, poi_value: float = 1.0) -> tuple[Array, Array, Array]:
    """``(x, main, aux)``: Asimov data at the suggested init with the POI set, and those parameters."""
    x = start_parameters(structure, prep, poi_value)
    main, aux = lh.asimov(structure, prep, x)
    return x, main, aux


# ------------------------------------------------------------------------------------------ discovery


def discovery_q0_asimov(
    structure: Structure, prep: lh.Prepared, *, options: FitOptions = FitOptions(), gradient: Gradient = "envelope"
) -> Array:
    """Expected discovery q0 on the Asimov dataset with mu = 1 (clipped at 0).

    The unconditional fit is not run: on Asimov data the generating point is the exact optimum.
    """
    x_gen, main, aux = asimov_data(structure, prep, 1.0)
    nll_free = lh.nll(x_gen, structure, prep, main, aux)
    nll_bkg = profile(structure, prep, main, aux, 0.0, options=options, gradient=gradient).nll
    return jnp.maximum(2.0 * (nll_bkg - nll_free), 0.0)


def discovery_significance_asimov(structure: Structure, prep: lh.Prepared, **kwargs) -> Array:
    """Expected discovery significance Z0 = sqrt(q0) on the mu = 1 Asimov dataset."""
    return safe_sqrt(discovery_q0_asimov(structure, prep, **kwargs))


class Discovery(NamedTuple):
    Z: Array
    q0: Array
    mu_hat: Array
    x_hat: Array


def discovery_observed(
    structure: Structure, prep: lh.Prepared, main: Array, aux: Array, *, options: FitOptions = FitOptions()
) -> Discovery:
    """Discovery test on given data: free fit, background-only fit, q0 (0 if mu_hat < 0) and Z."""
    fits = profiles(structure, prep, main, aux, [0.0, 0.0], [False, True], options=options)
    mu_hat = fits.x[0, structure.poi_index]
    q0 = jnp.where(mu_hat < 0, 0.0, jnp.maximum(2.0 * (fits.nll[1] - fits.nll[0]), 0.0))
    return Discovery(safe_sqrt(q0), q0, mu_hat, fits.x[0])


# ------------------------------------------------------------------------------------------- limits


def qmu_tilde(
    structure: Structure, prep: lh.Prepared, mu: Array, main: Array, aux: Array, *, options: FitOptions = FitOptions()
) -> Array:
    """pyhf's qmu_tilde (POI lower bound 0) on the given data."""
    return _qmu_tilde_and_background(structure, prep, mu, main, aux, options)[0]


def _qmu_tilde_and_background(structure, prep, mu, main, aux, options) -> tuple[Array, Array]:
    """qmu_tilde, and the background-only fitted parameters from the same batch of fits."""
    free, at_mu, at_zero = 0, 1, 2
    fits = profiles(structure, prep, main, aux, jnp.stack([jnp.zeros_like(mu), mu, jnp.zeros_like(mu)]),
                    [False, True, True], options=options)
    mu_hat = fits.x[free, structure.poi_index]
    reference = jnp.where(mu_hat < 0, fits.nll[at_zero], fits.nll[free])
    t = jnp.maximum(2.0 * (fits.nll[at_mu] - reference), 0.0)
    return jnp.where(mu_hat > mu, 0.0, t), fits.x[at_zero]


def _qmu_asimov_background(structure, prep, mu, x_bkg, options) -> Array:
    """qmu_tilde on the background-only Asimov data generated at ``x_bkg`` (whose free optimum it is)."""
    main, aux = lh.asimov(structure, prep, x_bkg)
    at_mu = profile(structure, prep, main, aux, mu, options=options)
    return jnp.maximum(2.0 * (at_mu.nll - lh.nll(x_bkg, structure, prep, main, aux)), 0.0)


def _cls(sqrt_q: Array, sqrt_qa: Array) -> Array:
    q, qa = sqrt_q**2, sqrt_qa**2
    teststat = jnp.where(sqrt_q <= sqrt_qa, sqrt_q - sqrt_qa, (q - qa) / (2.0 * jnp.where(sqrt_qa > 0, sqrt_qa, 1.0)))
    return ndtr(-(teststat + sqrt_qa)) / ndtr(-teststat)


def expected_cls_band(sqrt_qa: Array) -> Array:
    """Expected CLs at the pyhf band points n_sigma = 2, 1, 0, -1, -2 of the test statistic."""
    n = jnp.asarray(N_SIGMA)
    return ndtr(-(n + sqrt_qa)) / ndtr(-n)


def expected_cls(structure: Structure, prep: lh.Prepared, mu: Array, *, options: FitOptions = FitOptions()) -> Array:
    """Expected CLs band for signal strength ``mu`` from the nominal background-only Asimov data."""
    x_bkg = start_parameters(structure, prep, 0.0)
    return expected_cls_band(safe_sqrt(_qmu_asimov_background(structure, prep, mu, x_bkg, options)))


class CLs(NamedTuple):
    observed: Array
    expected: Array  # [5], pyhf order


def cls_observed(
    structure: Structure, prep: lh.Prepared, mu: Array, main: Array, aux: Array, *, options: FitOptions = FitOptions()
) -> CLs:
    """Observed CLs and the expected band, with the Asimov data from the background-only fit to data (pyhf)."""
    q, x_bkg = _qmu_tilde_and_background(structure, prep, mu, main, aux, options)
    sqrt_qa = safe_sqrt(_qmu_asimov_background(structure, prep, mu, x_bkg, options))
    sqrt_q = safe_sqrt(q)
    return CLs(_cls(sqrt_q, sqrt_qa), expected_cls_band(sqrt_qa))
