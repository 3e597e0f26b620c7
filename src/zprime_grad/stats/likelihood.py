"""The HistFactory likelihood with pyhf semantics, vectorised over all channels and samples at once.

Parametrisation (the flat vector ``x``, ``Parameter.offset`` gives each name's slot). Every constrained
parameter is a unit-normal pull, which keeps the fit Hessian well conditioned (staterror gammas fitted
directly need ~25x more BFGS steps, see ``shared/notes/differentiable_stats.md``):

=============  ================================  =========================================
kind           pyhf value                        constraint term (-log L)
=============  ================================  =========================================
normfactor     x                                 none
shapefactor    x (per bin)                       none
normsys        alpha = x                         Normal(a | x, 1)
histosys       alpha = x                         Normal(a | x, 1)
lumi           lambda = aux + sigma x            Normal(a | x, 1), as pyhf's N(aux | lambda, sigma)
staterror      gamma = 1 + sigma_b x             Normal(a | x, 1), as N(1 | gamma, sigma_b)
shapesys       gamma = 1 + x / sqrt(tau_b)       Poisson(tau_b gamma(a) | tau_b gamma(x))
=============  ================================  =========================================

``a`` is the auxiliary datum in the same units (0 nominally; the fitted value for post-fit Asimov
data). The normalisation terms (log sigma, log 2 pi, lgamma) are those of pyhf, so ``logpdf`` equals
``pyhf.Model.logpdf`` at the corresponding parameters. sigma_b follows pyhf: sqrt(sum of squared sample
uncertainties) / (sum of nominal yields) over the samples sharing the staterror; bins where that is 0
(and shapesys bins with zero yield or uncertainty) have gamma = 1, as pyhf fixes them. The expected
yield of a sample is (nominal + sum of histosys shifts) x (product of all multiplicative factors).

Guard against empty or negative bins: inside every Poisson term the rate lambda is replaced by
``ε exp(λ/ε - 1)`` below ``ε = 1e-10`` (continuous with its first derivative, always positive), so a
nearly empty KDE tail bin or a negative yield never gives NaN or -inf, and gradients stay finite.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zprime_grad.stats.interpolation import CODE4_A_INVERSE
from zprime_grad.stats.spec import Structure

Array = jax.Array
RATE_FLOOR = 1e-10
_LOG_2PI = math.log(2.0 * math.pi)


def floor_rate(rate: Array, eps: float = RATE_FLOOR) -> Array:
    """Positive, C1-continuous stand-in for a Poisson rate: ``rate`` above ``eps``, ``eps*exp(rate/eps-1)`` below."""
    small = jnp.minimum(rate, eps)  # double-where: keep the unused branch finite
    return jnp.where(rate > eps, rate, eps * jnp.exp(small / eps - 1.0))


def poisson_logpdf(n: Array, rate: Array) -> Array:
    """Continuous Poisson log-probability (pyhf's), with the rate floored by :func:`floor_rate`."""
    rate = floor_rate(rate)
    return jax.scipy.special.xlogy(n, rate) - rate - jax.scipy.special.gammaln(n + 1.0)


class Layout(NamedTuple):
    """Static index arrays (numpy) derived once per Structure."""

    n_rows: int
    scalar_slots: np.ndarray  # [S1, R] parameter index of normfactor/lumi factors (P: sentinel = 1)
    bin_slot_index: np.ndarray  # [S2, B] parameter index of a per-bin factor (P: sentinel = 1)
    bin_slot_rows: np.ndarray  # [S2, R, B] whether that factor acts on row r
    normsys: tuple[str, ...]
    normsys_index: np.ndarray
    histosys: tuple[str, ...]
    histosys_index: np.ndarray
    staterror: tuple[str, ...]
    staterror_param: np.ndarray  # [Ps] flat index of each staterror bin parameter
    shapesys: tuple[str, ...]
    shapesys_row: np.ndarray  # [Q] row carrying each shapesys
    shapesys_param: np.ndarray  # [Qs] flat index of each shapesys bin parameter
    affine_a: np.ndarray  # [P + 1] pyhf value = a + b x (b static except staterror/shapesys; sentinel = 1)
    affine_b: np.ndarray
    gauss_mask: np.ndarray  # [P] normal-constrained parameters
    log_norm: float  # x- and template-independent normalisation of the normal constraints
    free_mask: np.ndarray  # [P] False for measurement-fixed parameters


@functools.lru_cache(maxsize=64)
def layout(structure: Structure) -> Layout:
    rows, n_par, n_bins = structure.rows, structure.n_parameters, structure.n_bins
    scalar = [[] for _ in rows]
    for r, row in enumerate(rows):
        scalar[r] = [structure.parameter(name).offset for name, kind in row.modifiers if kind in ("normfactor", "lumi")]
    s1 = max([len(s) for s in scalar] + [0])
    scalar_slots = np.full((s1, len(rows)), n_par)
    for r, s in enumerate(scalar):
        scalar_slots[: len(s), r] = s

    # Per-bin factors share a slot when they cover disjoint bins (e.g. one staterror per channel).
    slot_index, slot_rows = [], []
    for p in structure.parameters:
        if p.kind not in ("staterror", "shapesys", "shapefactor"):
            continue
        bins = list(p.bins)
        slot = next((i for i, idx in enumerate(slot_index) if np.all(idx[bins] == n_par)), None)
        if slot is None:
            slot_index.append(np.full(n_bins, n_par))
            slot_rows.append(np.zeros((len(rows), n_bins), bool))
            slot = len(slot_index) - 1
        slot_index[slot][bins] = np.arange(p.offset, p.offset + p.size)
        for r, row in enumerate(rows):
            if (p.name, p.kind) in row.modifiers:
                slot_rows[slot][r, bins] = True
    bin_slot_index = np.array(slot_index, int).reshape(len(slot_index), n_bins)
    bin_slot_rows = np.array(slot_rows, bool).reshape(len(slot_rows), len(rows), n_bins)

    def of_kind(kind):
        return tuple(p for p in structure.parameters if kind in p.types)

    stat, shape = of_kind("staterror"), of_kind("shapesys")
    shape_row = np.array([next(r for r, row in enumerate(rows) if (p.name, "shapesys") in row.modifiers) for p in shape], int)

    def flat_index(params):
        return np.array([p.offset + i for p in params for i in range(p.size)], int)

    affine_a, affine_b = np.zeros(n_par + 1), np.ones(n_par + 1)
    affine_a[n_par], affine_b[n_par] = 1.0, 0.0
    gauss_mask, free, log_norm = np.zeros(n_par, bool), np.ones(n_par, bool), 0.0
    for p in structure.parameters:
        free[p.slice] = not p.fixed
        if p.kind in ("normsys", "histosys", "lumi", "staterror"):
            gauss_mask[p.slice] = True
            log_norm -= 0.5 * _LOG_2PI * p.size
        if p.kind == "lumi":
            affine_a[p.slice], affine_b[p.slice] = p.aux, p.sigma
            log_norm -= math.log(p.sigma)
        if p.kind in ("staterror", "shapesys"):
            affine_a[p.slice] = 1.0  # slopes come from the templates (prepare)
    return Layout(
        len(rows),
        scalar_slots,
        bin_slot_index,
        bin_slot_rows,
        tuple(p.name for p in of_kind("normsys")),
        np.array([p.offset for p in of_kind("normsys")], int),
        tuple(p.name for p in of_kind("histosys")),
        np.array([p.offset for p in of_kind("histosys")], int),
        tuple(p.name for p in stat),
        flat_index(stat),
        tuple(p.name for p in shape),
        shape_row,
        flat_index(shape),
        affine_a,
        affine_b,
        gauss_mask,
        log_norm,
        free,
    )


class Prepared(NamedTuple):
    """Templates turned into the dense arrays the likelihood uses; computed once per fit, not per step."""

    nominal: Array  # [R, B] (zero outside the row's channel)
    normsys_log_hi: Array  # [R, K]
    normsys_log_lo: Array
    normsys_coeffs: Array  # [6, R, K] code-4 polynomial coefficients a_1..a_6
    histosys_terms: Array  # [4, H, R, B]: code-4p S, A, (hi - nominal), (nominal - lo)
    affine_a: Array  # [P + 1] pyhf value = a + b x; sentinel entry = 1
    affine_b: Array
    staterror_sigma: Array  # [Ps] relative uncertainty per staterror bin parameter
    shapesys_tau: Array  # [Q] Poisson constraint scale per shapesys bin parameter
    shapesys_step: Array  # [Q] 1/sqrt(tau), 0 for bins pyhf fixes


def _safe_sqrt(x: Array) -> Array:
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _global_rows(structure: Structure, leaf) -> Array:
    """Stack ``leaf(row) -> [..., n_channel_bins]`` into ``[R, ..., B]``, zero outside each row's channel.

    Built per channel (one stack and one pad each) rather than per row: fewer operations to trace,
    compile and differentiate.
    """
    blocks, n_bins = [], structure.n_bins
    for channel in structure.channels:
        rows = [row for row in structure.rows if row.channel == channel]
        block = jnp.stack([jnp.asarray(leaf(row), float) for row in rows])
        pad = [(0, 0)] * (block.ndim - 1) + [(rows[0].start, n_bins - rows[0].stop)]
        blocks.append(jnp.pad(block, pad))
    return jnp.concatenate(blocks)


def prepare(structure: Structure, templates) -> Prepared:
    """Turn the templates pytree into the likelihood's dense arrays (traced in the templates)."""
    lay, n_bins, n_rows = layout(structure), structure.n_bins, len(structure.rows)

    def sample(row):
        return templates[row.channel][row.sample]

    nominal = _global_rows(structure, lambda row: sample(row)["data"])

    if lay.normsys:
        def normsys_table(key):
            return jnp.stack([
                jnp.stack([jnp.asarray(sample(row)["normsys"][n][key], float) if n in sample(row)["normsys"] else jnp.ones(()) for n in lay.normsys])
                for row in structure.rows
            ])

        hi, lo = normsys_table("hi"), normsys_table("lo")
    else:
        hi = lo = jnp.ones((n_rows, 0))
    log_hi, log_lo = jnp.log(hi), jnp.log(lo)
    b = jnp.stack([hi - 1.0, lo - 1.0, log_hi * hi, -log_lo * lo, log_hi**2 * hi, log_lo**2 * lo])
    coeffs = jnp.tensordot(jnp.asarray(CODE4_A_INVERSE), b, axes=1)

    if lay.histosys:
        def histosys_table(key):
            def leaf(row):
                t = sample(row)
                return jnp.stack([jnp.asarray(t["histosys"][n][key], float) if n in t["histosys"] else jnp.asarray(t["data"], float) for n in lay.histosys])
            return _global_rows(structure, leaf)

        up = histosys_table("hi_data") - nominal[:, None, :]
        down = nominal[:, None, :] - histosys_table("lo_data")
    else:
        up = down = jnp.zeros((n_rows, 0, n_bins))
    terms = jnp.stack([0.5 * (up + down), 0.0625 * (up - down), up, down]).transpose(0, 2, 1, 3)

    # pyhf value = a + b x: the template-dependent slopes of staterror and shapesys parameters.
    slopes, sigmas, taus, steps = {}, [], [], []
    for name in lay.staterror:
        rows = [row for row in structure.rows if (name, "staterror") in row.modifiers]
        total = sum(jnp.asarray(sample(row)["data"], float) for row in rows)
        err2 = sum(jnp.asarray(sample(row)["staterror"][name], float) ** 2 for row in rows)
        ok = (total > 0) & (err2 > 0)
        slopes[name] = jnp.where(ok, _safe_sqrt(err2) / jnp.where(ok, total, 1.0), 0.0)
        sigmas.append(slopes[name])
    for name, r in zip(lay.shapesys, lay.shapesys_row):
        row = structure.rows[r]
        nom, unc = jnp.asarray(sample(row)["data"], float), jnp.asarray(sample(row)["shapesys"][name], float)
        valid = (nom > 0) & (unc > 0)
        taus.append(jnp.where(valid, (nom / jnp.where(valid, unc, 1.0)) ** 2, 1.0))
        slopes[name] = jnp.where(valid, unc / jnp.where(valid, nom, 1.0), 0.0)  # = 1/sqrt(tau)
        steps.append(slopes[name])
    affine_a, affine_b = jnp.asarray(lay.affine_a), jnp.asarray(lay.affine_b)
    if slopes:
        affine_b = jnp.concatenate(
            [slopes[p.name] if p.name in slopes else jnp.asarray(lay.affine_b[p.slice]) for p in structure.parameters]
            + [jnp.zeros(1)]
        )

    def joined(parts):
        return jnp.concatenate(parts) if parts else jnp.zeros(0)

    return Prepared(nominal, log_hi, log_lo, coeffs, terms, affine_a, affine_b, joined(sigmas), joined(taus), joined(steps))


def pyhf_values(prep: Prepared, x: Array) -> Array:
    """pyhf-valued parameters (gamma, lambda, alpha, mu, ...) with a trailing 1.0 sentinel."""
    return prep.affine_a + prep.affine_b * jnp.concatenate([x, jnp.zeros(1, x.dtype)])


def expected_main(structure: Structure, prep: Prepared, x: Array) -> Array:
    """Expected main-measurement yields for all global bins (pyhf bin order)."""
    lay = layout(structure)
    shape = prep.nominal
    if lay.histosys:
        # code 4p is linear in the four template terms, with scalar coefficients per parameter.
        alpha = x[lay.histosys_index]
        a2 = alpha * alpha
        inside = jnp.abs(alpha) <= 1.0
        coefficients = jnp.stack([
            jnp.where(inside, alpha, 0.0),
            jnp.where(inside, a2 * (15.0 + a2 * (3.0 * a2 - 10.0)), 0.0),
            jnp.where(alpha > 1.0, alpha, 0.0),
            jnp.where(alpha < -1.0, alpha, 0.0),
        ])
        shape = shape + jnp.einsum("kh,khrb->rb", coefficients, prep.histosys_terms)
    values = pyhf_values(prep, x)
    scale = jnp.ones(lay.n_rows, x.dtype)
    for slot in lay.scalar_slots:  # products as explicit loops: jnp.prod's gradient is costly
        scale = scale * values[slot]
    if lay.normsys:
        alpha = x[lay.normsys_index][None, :]
        inside = jnp.clip(alpha, -1.0, 1.0)
        c = prep.normsys_coeffs
        polynomial = 1.0 + inside * (c[0] + inside * (c[1] + inside * (c[2] + inside * (c[3] + inside * (c[4] + inside * c[5])))))
        outside = jnp.exp(jnp.abs(alpha) * jnp.where(alpha >= 1.0, prep.normsys_log_hi, prep.normsys_log_lo))
        factor = jnp.where(jnp.abs(alpha) >= 1.0, outside, polynomial)
        for k in range(factor.shape[1]):
            scale = scale * factor[:, k]
    for index, rows in zip(lay.bin_slot_index, lay.bin_slot_rows):
        shape = shape * jnp.where(rows, values[index][None, :], 1.0)
    return jnp.sum(shape * scale[:, None], axis=0)


def _poisson_kernel(n: Array, rate: Array) -> Array:
    rate = floor_rate(rate)
    return jax.scipy.special.xlogy(n, rate) - rate


def _constraint_kernel(structure: Structure, prep: Prepared, x: Array, aux: Array) -> Array:
    lay = layout(structure)
    total = -0.5 * jnp.sum(jnp.where(lay.gauss_mask, (x - aux) ** 2, 0.0))
    if lay.shapesys_param.size:
        i, tau, step = lay.shapesys_param, prep.shapesys_tau, prep.shapesys_step
        total = total + jnp.sum(_poisson_kernel(tau * (1.0 + step * aux[i]), tau * (1.0 + step * x[i])))
        # A bin pyhf fixes does not enter the model: tie its pull to the datum so the fit stays regular.
        total = total - 0.5 * jnp.sum(jnp.where(step > 0, 0.0, (x[i] - aux[i]) ** 2))
    return total


def normalisation(structure: Structure, prep: Prepared, main: Array, aux: Array) -> Array:
    """The parameter-independent part of log L (lgamma and Gaussian normalisations, as pyhf)."""
    lay = layout(structure)
    total = lay.log_norm - jnp.sum(jax.scipy.special.gammaln(main + 1.0))
    if lay.staterror_param.size:
        s = prep.staterror_sigma
        total = total - jnp.sum(jnp.log(jnp.where(s > 0, s, 1.0)))
    if lay.shapesys_param.size:
        n_aux = prep.shapesys_tau * (1.0 + prep.shapesys_step * aux[lay.shapesys_param])
        total = total - jnp.sum(jax.scipy.special.gammaln(n_aux + 1.0))
    return total


def nll_unnormalised(x: Array, structure: Structure, prep: Prepared, main: Array, aux: Array) -> Array:
    """-log L up to :func:`normalisation`: what the fits minimise (fewer operations per step)."""
    rate = expected_main(structure, prep, x)
    return -(jnp.sum(_poisson_kernel(main, rate)) + _constraint_kernel(structure, prep, x, aux))


def logpdf(structure: Structure, prep: Prepared, x: Array, main: Array, aux: Array) -> Array:
    """Full log-likelihood with pyhf's normalisation: equals ``pyhf.Model.logpdf``."""
    return normalisation(structure, prep, main, aux) - nll_unnormalised(x, structure, prep, main, aux)


def nll(x: Array, structure: Structure, prep: Prepared, main: Array, aux: Array) -> Array:
    return -logpdf(structure, prep, x, main, aux)


def init_parameters(structure: Structure, prep: Prepared) -> Array:
    """The measurement config's inits (pyhf's suggested init) mapped into the fit parametrisation."""
    inits = jnp.concatenate([jnp.asarray(p.inits, float) for p in structure.parameters])
    a, b = prep.affine_a[:-1], prep.affine_b[:-1]
    return jnp.where(b != 0, (inits - a) / jnp.where(b != 0, b, 1.0), 0.0)


def to_pyhf_values(structure: Structure, prep: Prepared, x: Array) -> dict[str, Array]:
    """Parameter values in pyhf's units, by name (for comparison with pyhf or for reporting)."""
    values = pyhf_values(prep, x)
    return {p.name: values[p.slice] for p in structure.parameters}


def asimov(structure: Structure, prep: Prepared, x: Array) -> tuple[Array, Array]:
    """Asimov data ``(main, aux)`` at parameters ``x``: floored expected yields, and ``x`` as aux data."""
    return floor_rate(expected_main(structure, prep, x)), x
