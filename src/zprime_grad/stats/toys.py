"""Pseudo-experiments for the discovery test: q0 distributions from toys, with vectorised JAX fits.

What is computed (the procedure of pyhf's ``ToyCalculator`` with ``test_stat="q0"``, here vmapped):

* **Generating points.** On the data ``D`` (for the expected Z0: the mu = 1 Asimov data of the model,
  main and auxiliary, the data of the asymptotic Z0 this checks) the POI-fixed profile fits give
  ``theta_b = (mu=0, theta_hat_hat_0(D))`` and ``theta_sb = (mu=1, theta_hat_hat_1(D))``; on the Asimov
  data theta_hat_hat_1 is the nominal point.
* **A toy** at ``theta_gen``: main counts ~ Poisson(lambda(theta_gen)); auxiliary data as pyhf's
  ``make_pdf(theta_gen).sample``: every Gaussian constraint (normsys, histosys, lumi, staterror) draws
  its datum ~ Normal(theta_gen, sigma) (a ~ N(x_gen, 1) in the pull units of ``stats.likelihood``), a
  shapesys draws n_aux ~ Poisson(tau gamma_gen).
* **q0 per toy**: the unconditional and the mu = 0 profile fits (``infer.profile``, the package's own
  fits, dense BFGS from pyhf's init with the inverse Fisher information as first Hessian, vmapped over a
  batch of toys), q0 = 2 (NLL_0 - NLL_free), 0 when mu_hat < 0. A fit counts as failed when its value or
  parameters are not finite, or its Newton decrement g^T F^-1 g / 2 (the distance of its NLL from the
  minimum, to second order; F the Fisher information at the start) exceeds ``DECREMENT_TOL``, or when
  the free fit ends above the mu = 0 one by more than ``Q0_TOL`` (a toy with mu_hat < 0 has q0 = 0
  and never fails); failed toys are counted and left out of the distributions.
* **Expected Z0 from toys**: p0 = the fraction of background-only toys whose q0 is at least the median q0
  of the signal+background toys, Z = Phi^-1(1 - p0). This is pyhf's expected toy p-value for q0 (the
  median over s+b toys of the b-only tail fraction: the same number, the tail fraction being monotone).
  Asymptotically (Cowan, Cranmer, Gross, Vitells, arXiv:1007.1727) q0 under mu = 0 is 1/2 delta + 1/2
  chi2_1 and the median q0 under mu = 1 is the Asimov q0_A, so Z -> sqrt(q0_A), the asymptotic Z0.
* **Its uncertainty**: binomial on p0 (sqrt(p0 (1 - p0) / n_b)) and the median's own (the order
  statistics at ranks n_sb/2 -+ sqrt(n_sb)/2, a 68 % interval of the median, evaluated as p0), added in
  quadrature and propagated to Z (dZ = dp / phi(Z)). With no b-only toy above the median only a lower
  bound on Z is given (Clopper-Pearson 68 % upper bound on p0).

Also reported: the tail fraction of the Asimov q0_A itself under the b-only toys (``p0_at_asimov_q0``),
which tests the null distribution alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import beta, norm

from zprime_grad.jaxconfig import in_float64
from zprime_grad.stats import infer
from zprime_grad.stats import likelihood as lh
from zprime_grad.stats.fit import FitOptions
from zprime_grad.stats.spec import Structure

Array = jax.Array
DECREMENT_TOL = 1e-6  # g^T F^-1 g / 2 at a converged fit (F: Fisher information): its NLL error, ~ q0's
Q0_TOL = 1e-6  # the free fit may end above the mu = 0 fit by rounding only
AGREE_SIGMAS = 2.0  # toy and asymptotic Z agree when within this many toy standard deviations
DEFINITION = ("p0 = fraction of background-only toys (mu = 0, nuisances at their mu = 0 fit to the mu = 1 "
              "Asimov data) with q0 >= the median q0 of the signal+background toys (mu = 1, nominal); "
              "Z = Phi^-1(1 - p0), as pyhf's ToyCalculator (test_stat='q0') expected p-value; the "
              "asymptotic Z0 = sqrt(q0_Asimov) (Cowan et al. 2011)")


# ------------------------------------------------------------------------------------------ sampling


def sample(structure: Structure, prep: lh.Prepared, x_gen: Array, key: Array, n: int) -> tuple[Array, Array]:
    """``n`` toys at the fit-parametrised point ``x_gen``: ``(main [n, B], aux [n, P])`` (aux in pull units)."""
    lay = lh.layout(structure)
    k_main, k_gauss, k_shape = jax.random.split(key, 3)
    rate = lh.floor_rate(lh.expected_main(structure, prep, x_gen))
    main = jax.random.poisson(k_main, rate, (n, rate.shape[0])).astype(rate.dtype)
    gauss = x_gen + jax.random.normal(k_gauss, (n, x_gen.shape[0]), x_gen.dtype)
    aux = jnp.where(jnp.asarray(lay.gauss_mask), gauss, x_gen)
    if lay.shapesys_param.size:
        i, tau, step = lay.shapesys_param, prep.shapesys_tau, prep.shapesys_step
        counts = jax.random.poisson(k_shape, tau * (1.0 + step * x_gen[i]), (n, i.size)).astype(x_gen.dtype)
        pulls = jnp.where(step > 0, (counts / tau - 1.0) / jnp.where(step > 0, step, 1.0), x_gen[i])
        aux = aux.at[:, i].set(pulls)
    return main, aux


def aux_from_pyhf(structure: Structure, prep: lh.Prepared, values: dict[str, Any]) -> Array:
    """Auxiliary data in pyhf's units (by parameter name: alpha, the gamma centre of a staterror, a lumi
    value, shapesys counts tau gamma) -> the pull units of ``stats.likelihood``. Missing names: nominal."""
    a, b = np.asarray(prep.affine_a[:-1]), np.asarray(prep.affine_b[:-1])
    aux = np.zeros(structure.n_parameters)
    lay = lh.layout(structure)
    tau = dict(zip(lay.shapesys_param.tolist(), np.asarray(prep.shapesys_tau).tolist()))
    for p in structure.parameters:
        if p.name not in values:
            continue
        v = np.asarray(values[p.name], float).reshape(p.size)
        for j, k in enumerate(range(p.offset, p.offset + p.size)):
            value = v[j] / tau[k] if p.kind == "shapesys" else v[j]
            aux[k] = (value - a[k]) / b[k] if b[k] != 0 else 0.0
    return jnp.asarray(aux)


# -------------------------------------------------------------------------------------------- fitting


class ToyFits(NamedTuple):
    q0: Array  # [n], clipped at 0, 0 where mu_hat < 0
    mu_hat: Array  # [n]
    ok: Array  # [n] both fits converged


def _converged(structure, prep, x, main, aux, free) -> Array:
    """Finite, and within ``DECREMENT_TOL`` of the minimum (Newton decrement with the Fisher information
    at pyhf's init: the same for every toy, so computed once per batch)."""
    grad = jnp.where(free, jax.grad(lh.nll_unnormalised)(x, structure, prep, main, aux), 0.0)
    inverse = infer.fisher_inverse(structure, prep, infer.start_parameters(structure, prep), free)
    decrement = 0.5 * grad @ inverse @ grad
    return jnp.isfinite(decrement) & (decrement < DECREMENT_TOL) & jnp.all(jnp.isfinite(x))


def q0_one(structure: Structure, prep: lh.Prepared, main: Array, aux: Array,
           options: FitOptions = FitOptions()) -> ToyFits:
    """q0 of one dataset ``(main, aux)`` from the two profile fits, and whether both converged."""
    free = lh.layout(structure).free_mask
    poi = structure.poi_index
    unconditional = infer.profile(structure, prep, main, aux, options=options)
    background = infer.profile(structure, prep, main, aux, 0.0, options=options)
    difference = 2.0 * (background.nll - unconditional.nll)
    mu_hat = unconditional.x[poi]
    q0 = jnp.where(mu_hat < 0, 0.0, jnp.maximum(difference, 0.0))
    converged = (_converged(structure, prep, unconditional.x, main, aux, free)
                 & _converged(structure, prep, background.x, main, aux, free & (np.arange(free.size) != poi))
                 & (difference > -Q0_TOL))
    # a deficit (mu_hat < 0) has q0 = 0 whatever the fits' last digits: e.g. an empty bin whose free fit
    # runs into the rate floor (the minimum is at lambda = 0)
    ok = converged | ((mu_hat < 0) & jnp.isfinite(mu_hat))
    return ToyFits(q0, mu_hat, ok)


@partial(jax.jit, static_argnames=("structure", "options"))
def q0_batch(structure: Structure, prep: lh.Prepared, main: Array, aux: Array,
             options: FitOptions = FitOptions()) -> ToyFits:
    """q0 for a batch of datasets ``main [n, B]``, ``aux [n, P]`` (pull units): the fits vmapped."""
    return jax.vmap(lambda m, a: q0_one(structure, prep, m, a, options))(main, aux)


@partial(jax.jit, static_argnames=("structure", "n", "options"))
def _toy_batch(structure, prep, x_gen, key, n, options):
    main, aux = sample(structure, prep, x_gen, key, n)
    return jax.vmap(lambda m, a: q0_one(structure, prep, m, a, options))(main, aux)


@partial(jax.jit, static_argnames=("structure", "options"))
def _generating_points(structure, prep, main, aux, options):
    """The POI-fixed fits to the data at mu = 0 and mu = 1 (pyhf's ToyCalculator), and the data's q0."""
    fits = infer.profiles(structure, prep, main, aux, jnp.array([0.0, 1.0]), [True, True], options=options)
    return fits.x[0], fits.x[1]


def toy_q0(structure: Structure, prep: lh.Prepared, x_gen: Array, n: int, *, seed: int = 0,
           batch_size: int = 1000, options: FitOptions = FitOptions()) -> ToyFits:
    """q0 of ``n`` toys generated at ``x_gen``, in batches of ``batch_size`` (bounded memory, one compile)."""
    batch = max(1, min(batch_size, n))
    key = jax.random.key(seed)
    parts = []
    for i in range(math.ceil(n / batch)):
        parts.append(jax.device_get(_toy_batch(structure, prep, x_gen, jax.random.fold_in(key, i), batch, options)))
    joined = ToyFits(*(np.concatenate(column)[:n] for column in zip(*parts)))
    return joined


# ------------------------------------------------------------------------------------------ p-values


def tail_fraction(samples: np.ndarray, value: float) -> tuple[int, float]:
    """``(k, k / n)``: how many ``samples`` are >= ``value`` (pyhf's ``EmpiricalDistribution.pvalue``)."""
    samples = np.asarray(samples, float)
    k = int(np.count_nonzero(samples >= value))
    return k, k / max(samples.size, 1)


def z_of_p(p: float) -> float:
    return float(norm.isf(p)) if p > 0 else math.inf


def _dz(p: float, dp: float) -> float:
    return float(dp / norm.pdf(norm.isf(p))) if 0 < p < 1 else math.inf


def significance(q0_b: np.ndarray, q0_sb: np.ndarray, q0_asimov: float | None = None) -> dict[str, Any]:
    """Expected Z0 from toys (module docstring): p0 of the median s+b q0 under the b-only toys, with its
    uncertainty (binomial and the median's), and, given ``q0_asimov``, the tail fraction at it."""
    q0_b, q0_sb = np.sort(np.asarray(q0_b, float)), np.sort(np.asarray(q0_sb, float))
    n_b, n_sb = q0_b.size, q0_sb.size
    median = float(np.median(q0_sb))
    k, p0 = tail_fraction(q0_b, median)
    half = 0.5 * math.sqrt(n_sb)  # 68 % interval of the median: order statistics at n/2 -+ sqrt(n)/2
    lo = q0_sb[max(int(math.floor(0.5 * n_sb - half)), 0)]
    hi = q0_sb[min(int(math.ceil(0.5 * n_sb + half)), n_sb - 1)]
    p_at_lo, p_at_hi = tail_fraction(q0_b, lo)[1], tail_fraction(q0_b, hi)[1]
    dp_binomial = math.sqrt(p0 * (1.0 - p0) / n_b)
    dp_median = 0.5 * (p_at_lo - p_at_hi)
    dp = math.hypot(dp_binomial, dp_median)
    out: dict[str, Any] = {
        "n_b": n_b, "n_sb": n_sb, "median_q0_sb": median, "n_exceed": k, "p0": p0,
        "p0_uncertainty": dp, "p0_uncertainty_binomial": dp_binomial, "p0_uncertainty_median": dp_median,
    }
    if k > 0:
        z = z_of_p(p0)
        # central difference where the interval stays inside (0, 1); else the binomial slope alone
        out.update(z=z, z_uncertainty=_dz(p0, dp), z_lower_bound=None)
    else:  # nothing above the median: Clopper-Pearson 68 % upper bound on p0
        p_upper = float(beta.ppf(0.68, 1, n_b))
        out.update(z=None, z_uncertainty=None, z_lower_bound=z_of_p(p_upper), p0_upper_bound=p_upper)
    if q0_asimov is not None:
        k_a, p_a = tail_fraction(q0_b, q0_asimov)
        out.update(n_exceed_asimov_q0=k_a, p0_at_asimov_q0=p_a,
                   p0_at_asimov_q0_uncertainty=math.sqrt(p_a * (1.0 - p_a) / n_b))
    return out


def agreement(toys: dict[str, Any], asymptotic_z: float | None, sigmas: float = AGREE_SIGMAS) -> bool | None:
    """Toy Z within ``sigmas`` toy standard deviations of the asymptotic Z (a lower bound: not above it)."""
    if asymptotic_z is None:
        return None
    if toys.get("z") is None:
        return bool(toys.get("z_lower_bound") is not None and asymptotic_z >= toys["z_lower_bound"])
    return bool(abs(toys["z"] - asymptotic_z) <= sigmas * toys["z_uncertainty"])


# --------------------------------------------------------------------------------------------- model


@dataclass
class DiscoveryToys:
    """Both toy ensembles of an expected-Z0 check, and the numbers derived from them."""

    q0_b: np.ndarray
    q0_sb: np.ndarray
    failed_b: int
    failed_sb: int
    asymptotic_z: float
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)


@in_float64
def discovery_toys(model, n: int, *, seed: int = 0, templates=None, data=None, batch_size: int = 1000,
                   options: FitOptions | None = None) -> DiscoveryToys:
    """Expected discovery Z0 of a ``stats.Model`` from ``n`` b-only and ``n`` s+b toys (module docstring).

    ``data``: the main data the generating points are fitted to (default: the mu = 1 Asimov data, with
    nominal auxiliary data), as pyhf's ``ToyCalculator(data, ...)``.
    """
    if n < 1:
        raise ValueError(f"discovery_toys: need at least one toy, got {n}")
    start = time.perf_counter()
    options = options or model.options
    structure, prep = model.structure, model.prepare(templates)
    aux = infer.nominal_aux(structure)
    main = model.asimov_data(1.0, templates)[1] if data is None else model.main_data(data)
    x_b, x_sb = _generating_points(structure, prep, main, aux, options)
    q0_asimov = float(model.discovery_q0(templates))
    b = toy_q0(structure, prep, x_b, n, seed=2 * seed, batch_size=batch_size, options=options)
    sb = toy_q0(structure, prep, x_sb, n, seed=2 * seed + 1, batch_size=batch_size, options=options)
    q0_b, q0_sb = b.q0[b.ok], sb.q0[sb.ok]
    summary = significance(q0_b, q0_sb, q0_asimov)
    asymptotic = math.sqrt(max(q0_asimov, 0.0))
    seconds = time.perf_counter() - start
    summary.update(n=n, asymptotic_z=asymptotic, agree=agreement(summary, asymptotic),
                   failed=int((~b.ok).sum() + (~sb.ok).sum()), seconds=seconds, seed=seed,
                   definition=DEFINITION)
    return DiscoveryToys(q0_b, q0_sb, int((~b.ok).sum()), int((~sb.ok).sum()), asymptotic, seconds, summary)
