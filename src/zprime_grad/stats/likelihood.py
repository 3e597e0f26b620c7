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

import zprime_grad.jaxconfig  # noqa: F401

import jax
import jax.numpy as jnp
import numpy as np

from zprime_grad.stats.interpolation import code4, code4p
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
    row_mask: np.ndarray  # [R, B] bins belonging to each row's channel
    scalar_slots: np.ndarray  # [S1, R] index into factors for normfactor/lumi (P = 1.0 sentinel)
    bin_slots: np.ndarray  # [S2, R, B] index into factors for per-bin modifiers (P = sentinel)
    normsys: tuple[str, ...]
    normsys_index: np.ndarray
    histosys: tuple[str, ...]
    histosys_index: np.ndarray
    staterror: tuple[str, ...]
    staterror_rows: np.ndarray  # [M, R] which rows share each staterror
    staterror_param: np.ndarray  # [Ps] flat index of each staterror bin parameter
    staterror_mod: np.ndarray  # [Ps] which staterror modifier
    staterror_bin: np.ndarray  # [Ps] global bin
    shapesys: tuple[str, ...]
    shapesys_row: np.ndarray  # [Q] row carrying each shapesys
    shapesys_param: np.ndarray
    shapesys_mod: np.ndarray
    shapesys_bin: np.ndarray
    lumi_index: np.ndarray
    lumi_aux: np.ndarray
    lumi_sigma: np.ndarray
    gauss_index: np.ndarray  # all normal-constrained parameters
    free_mask: np.ndarray  # [P] False for measurement-fixed parameters


@functools.lru_cache(maxsize=64)
def layout(structure: Structure) -> Layout:
    rows, n_par, n_bins = structure.rows, structure.n_parameters, structure.n_bins
    row_mask = np.zeros((len(rows), n_bins), bool)
    scalar, per_bin = [[] for _ in rows], [[] for _ in rows]
    for r, row in enumerate(rows):
        row_mask[r, row.start : row.stop] = True
        for name, kind in row.modifiers:
            p = structure.parameter(name)
            if kind in ("normfactor", "lumi"):
                scalar[r].append(p.offset)
            elif kind in ("staterror", "shapesys", "shapefactor"):
                idx = np.full(n_bins, n_par)
                idx[list(p.bins)] = np.arange(p.offset, p.offset + p.size)
                per_bin[r].append(idx)
    s1 = max([len(s) for s in scalar] + [1])
    scalar_slots = np.full((s1, len(rows)), n_par)
    for r, s in enumerate(scalar):
        scalar_slots[: len(s), r] = s
    s2 = max([len(s) for s in per_bin] + [1])
    bin_slots = np.full((s2, len(rows), n_bins), n_par)
    for r, s in enumerate(per_bin):
        for k, idx in enumerate(s):
            bin_slots[k, r] = idx

    def of_kind(kind):
        return tuple(p for p in structure.parameters if p.kind == kind)

    stat, shape = of_kind("staterror"), of_kind("shapesys")
    stat_rows = np.array([[(p.name, "staterror") in row.modifiers for row in rows] for p in stat], bool).reshape(len(stat), len(rows))
    shape_row = np.array([next(r for r, row in enumerate(rows) if (p.name, "shapesys") in row.modifiers) for p in shape], int)

    def per_bin_arrays(params):
        param = np.array([p.offset + i for p in params for i in range(p.size)], int)
        mod = np.array([m for m, p in enumerate(params) for _ in range(p.size)], int)
        bins = np.array([b for p in params for b in p.bins], int)
        return param, mod, bins

    lumi = of_kind("lumi")
    gauss = [p for p in structure.parameters if p.kind in ("normsys", "histosys", "lumi", "staterror")]
    free = np.ones(n_par, bool)
    for p in structure.parameters:
        free[p.slice] = not p.fixed
    return Layout(
        len(rows),
        row_mask,
        scalar_slots,
        bin_slots,
        tuple(p.name for p in of_kind("normsys")),
        np.array([p.offset for p in of_kind("normsys")], int),
        tuple(p.name for p in of_kind("histosys")),
        np.array([p.offset for p in of_kind("histosys")], int),
        tuple(p.name for p in stat),
        stat_rows,
        *per_bin_arrays(stat),
        tuple(p.name for p in shape),
        shape_row,
        *per_bin_arrays(shape),
        np.array([p.offset for p in lumi], int),
        np.array([p.aux for p in lumi], float),
        np.array([p.sigma for p in lumi], float),
        np.array([i for p in gauss for i in range(p.offset, p.offset + p.size)], int),
        free,
    )


class Prepared(NamedTuple):
    """Templates stacked into dense arrays (one row per channel x sample, one column per global bin)."""

    nominal: Array  # [R, B]
    normsys_hi: Array  # [R, K]
    normsys_lo: Array
    histosys_hi: Array  # [R, H, B]
    histosys_lo: Array
    staterror_sigma: Array  # [Ps] relative uncertainty per staterror bin parameter
    shapesys_tau: Array  # [Q] Poisson constraint scale per shapesys bin parameter
    shapesys_valid: Array  # [Q] bool


def _row_vector(values: Array, row, n_bins: int) -> Array:
    values = jnp.asarray(values, dtype=float)
    return jnp.zeros(n_bins, values.dtype).at[row.start : row.stop].set(values)


def _safe_sqrt(x: Array) -> Array:
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def prepare(structure: Structure, templates) -> Prepared:
    """Stack the templates pytree into the dense arrays the likelihood uses (traced in the templates)."""
    lay, n_bins = layout(structure), structure.n_bins
    t = [templates[row.channel][row.sample] for row in structure.rows]
    nominal = jnp.stack([_row_vector(ti["data"], row, n_bins) for ti, row in zip(t, structure.rows)])

    def scalar_table(name, key):
        return jnp.stack([jnp.asarray(ti["normsys"][name][key], float) if name in ti["normsys"] else jnp.ones(()) for ti in t])

    if lay.normsys:
        normsys_hi = jnp.stack([scalar_table(n, "hi") for n in lay.normsys], axis=1)
        normsys_lo = jnp.stack([scalar_table(n, "lo") for n in lay.normsys], axis=1)
    else:
        normsys_hi = normsys_lo = jnp.ones((lay.n_rows, 0))

    def shape_table(key):
        per_row = [
            jnp.stack(
                [
                    _row_vector(ti["histosys"][n][key], row, n_bins) if n in ti["histosys"] else nominal[r]
                    for n in lay.histosys
                ]
            )
            for r, (ti, row) in enumerate(zip(t, structure.rows))
        ]
        return jnp.stack(per_row)

    if lay.histosys:
        histosys_hi, histosys_lo = shape_table("hi_data"), shape_table("lo_data")
    else:
        histosys_hi = histosys_lo = jnp.zeros((lay.n_rows, 0, n_bins))

    sigma = jnp.zeros(0)
    if lay.staterror:
        uncert = jnp.stack(
            [
                jnp.stack([_row_vector(ti["staterror"][n], row, n_bins) if n in ti["staterror"] else jnp.zeros(n_bins) for ti, row in zip(t, structure.rows)])
                for n in lay.staterror
            ]
        )  # [M, R, B]
        mask = jnp.asarray(lay.staterror_rows, float)[:, :, None]
        total = jnp.sum(mask * nominal[None], axis=1)  # [M, B]
        err2 = jnp.sum(mask * uncert**2, axis=1)
        ok = (total > 0) & (err2 > 0)
        sigma_mb = jnp.where(ok, _safe_sqrt(err2) / jnp.where(ok, total, 1.0), 0.0)
        sigma = sigma_mb[lay.staterror_mod, lay.staterror_bin]

    tau, valid = jnp.zeros(0), jnp.zeros(0, bool)
    if lay.shapesys:
        rows = [structure.rows[r] for r in lay.shapesys_row]
        uncert = jnp.stack([_row_vector(t[r]["shapesys"][n], rows[m], n_bins) for m, (n, r) in enumerate(zip(lay.shapesys, lay.shapesys_row))])
        nom = nominal[lay.shapesys_row][lay.shapesys_mod, lay.shapesys_bin]
        unc = uncert[lay.shapesys_mod, lay.shapesys_bin]
        valid = (nom > 0) & (unc > 0)
        tau = jnp.where(valid, (nom / jnp.where(valid, unc, 1.0)) ** 2, 1.0)
    return Prepared(nominal, normsys_hi, normsys_lo, histosys_hi, histosys_lo, sigma, tau, valid)


def factors(structure: Structure, prep: Prepared, x: Array) -> Array:
    """pyhf-valued multiplicative factors for every parameter slot, with a trailing 1.0 sentinel."""
    lay = layout(structure)
    values = jnp.concatenate([x, jnp.ones(1, x.dtype)])
    if lay.lumi_index.size:
        values = values.at[lay.lumi_index].set(lay.lumi_aux + lay.lumi_sigma * x[lay.lumi_index])
    if lay.staterror_param.size:
        values = values.at[lay.staterror_param].set(1.0 + prep.staterror_sigma * x[lay.staterror_param])
    if lay.shapesys_param.size:
        step = jnp.where(prep.shapesys_valid, 1.0 / jnp.sqrt(prep.shapesys_tau), 0.0)
        values = values.at[lay.shapesys_param].set(1.0 + step * x[lay.shapesys_param])
    return values


def expected_main(structure: Structure, prep: Prepared, x: Array) -> Array:
    """Expected main-measurement yields for all global bins (pyhf bin order)."""
    lay = layout(structure)
    shape = prep.nominal
    if lay.histosys:
        alpha = x[lay.histosys_index][None, :, None]
        shape = shape + jnp.sum(code4p(alpha, prep.nominal[:, None, :], prep.histosys_hi, prep.histosys_lo), axis=1)
    scale = jnp.ones(lay.n_rows, x.dtype)
    if lay.normsys:
        scale = jnp.prod(code4(x[lay.normsys_index][None, :], prep.normsys_hi, prep.normsys_lo), axis=1)
    values = factors(structure, prep, x)
    scale = scale * jnp.prod(values[lay.scalar_slots], axis=0)
    per_bin = jnp.prod(values[lay.bin_slots], axis=0)  # [R, B]
    return jnp.sum(shape * scale[:, None] * per_bin * lay.row_mask, axis=0)


def constraint_logpdf(structure: Structure, prep: Prepared, x: Array, aux: Array) -> Array:
    """Sum of the auxiliary-measurement log-probabilities (pyhf normalisation)."""
    lay = layout(structure)
    total = jnp.zeros((), x.dtype)
    if lay.gauss_index.size:
        g = lay.gauss_index
        pull = x[g] - aux[g]
        total = total - 0.5 * jnp.sum(pull**2) - 0.5 * _LOG_2PI * g.size
        if lay.lumi_sigma.size:
            total = total - np.sum(np.log(lay.lumi_sigma))
        if lay.staterror_param.size:
            s = prep.staterror_sigma
            total = total - jnp.sum(jnp.log(jnp.where(s > 0, s, 1.0)))
    if lay.shapesys_param.size:
        i, tau, valid = lay.shapesys_param, prep.shapesys_tau, prep.shapesys_valid
        step = jnp.where(valid, 1.0 / jnp.sqrt(tau), 0.0)
        n_aux = tau * (1.0 + step * aux[i])
        total = total + jnp.sum(poisson_logpdf(n_aux, tau * (1.0 + step * x[i])))
        # A fixed (invalid) bin's pull does not enter the model: tie it to its datum so the fit stays regular.
        total = total - 0.5 * jnp.sum(jnp.where(valid, 0.0, (x[i] - aux[i]) ** 2))
    return total


def logpdf(structure: Structure, prep: Prepared, x: Array, main: Array, aux: Array) -> Array:
    """Full log-likelihood: Poisson terms of the main measurement plus the constraint terms."""
    rate = expected_main(structure, prep, x)
    return jnp.sum(poisson_logpdf(main, rate)) + constraint_logpdf(structure, prep, x, aux)


def nll(x: Array, structure: Structure, prep: Prepared, main: Array, aux: Array) -> Array:
    return -logpdf(structure, prep, x, main, aux)


def init_parameters(structure: Structure, prep: Prepared) -> Array:
    """The measurement config's inits (pyhf's suggested init) mapped into the fit parametrisation."""
    lay = layout(structure)
    x = jnp.concatenate([jnp.asarray(p.inits, float) for p in structure.parameters])
    for p in structure.parameters:
        if p.kind == "lumi":
            x = x.at[p.slice].set((x[p.slice] - p.aux) / p.sigma)
    if lay.staterror_param.size:
        s = prep.staterror_sigma
        x = x.at[lay.staterror_param].set(jnp.where(s > 0, (x[lay.staterror_param] - 1.0) / jnp.where(s > 0, s, 1.0), 0.0))
    if lay.shapesys_param.size:
        root_tau = jnp.sqrt(prep.shapesys_tau)
        x = x.at[lay.shapesys_param].set(jnp.where(prep.shapesys_valid, (x[lay.shapesys_param] - 1.0) * root_tau, 0.0))
    return x


def to_pyhf_values(structure: Structure, prep: Prepared, x: Array) -> dict[str, Array]:
    """Parameter values in pyhf's units, by name (for comparison with pyhf or for reporting)."""
    values = factors(structure, prep, x)
    return {p.name: values[p.slice] for p in structure.parameters}


def asimov(structure: Structure, prep: Prepared, x: Array) -> tuple[Array, Array]:
    """Asimov data ``(main, aux)`` at parameters ``x``: floored expected yields, and ``x`` as aux data."""
    return floor_rate(expected_main(structure, prep, x)), x
