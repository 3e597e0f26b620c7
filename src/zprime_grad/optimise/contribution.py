"""``contribution(chunk, θ, relaxation)``: one chunk's KDE templates, and their derivatives w.r.t. θ.

This is the one function the cluster runs every epoch, next to the chunk it reads. Per channel the
soft event weight is ``channel.soft_weight(columns, θ, slope)`` × the event weight × 2·[parity = half]
(×2: each half stands for the full luminosity); the weighted binned KDE of the fit observable gives the
templates of ``zprime_grad.optimise.layout`` for the training half (parity 0) and the validation half
(parity 1). θ and the relaxation (slope, bandwidth as a fraction of the bin width) are traced, so an
annealing schedule never recompiles; the `Layout` is static. One compilation per chunk bucket length
and kernel (``TRACES`` counts them, per process).

Worker entry points (they return small numpy arrays shaped by the layout, never event arrays):
* `forward_part` — ``{"train": H, "jac": ∂H/∂θ, "valid": H}`` in one pass (`forward.templates_and_jacobian`);
* `primal_part` — ``{"train": H, "valid": H}``;
* `vjp_part` — ``{"grad": (∂H_train/∂θ)ᵀ · cotangent}`` (reverse mode, second round).
"""

from __future__ import annotations

import collections
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zprime_grad.optimise.forward import templates_and_jacobian
from zprime_grad.optimise.layout import NOMINAL, PARITY, Layout
from zprime_grad.soft import bin_probabilities, event_sum, kde_histogram

Array = jax.Array
TRACES: collections.Counter = collections.Counter()  # (kernel, chunk length) -> times traced here


class Relaxation(NamedTuple):
    """How soft the analysis is: sigmoid slope (per cut scale) and KDE bandwidth / bin width."""

    slope: float
    bandwidth: float


def kernel_inputs(chunk, layout: Layout) -> dict:
    """The arrays the kernel reads: needed columns, all weights, and the kinematic overlays."""
    columns = {name: chunk.columns[name] for name in layout.columns}
    overlays = {var: {name: chunk.variations[var].get(name, chunk.columns[name]) for name in layout.columns
                      if name != PARITY}
                for var in layout.kinematic_variations}
    weights = {name: chunk.weights[name] for name in (NOMINAL, *layout.weight_variations)}
    return {"columns": columns, "variations": overlays, "weights": weights}


def _kde(x: Array, weights: Array, layout: Layout, bandwidth, sumw2_rows: tuple[int, ...] = ()) -> tuple[Array, Array]:
    """KDE of one observable column for a stack of weight vectors ``[K, N]``: ``(yields [K, B], Σ(w·p)² [R, B])``
    for the ``R`` rows ``sumw2_rows``. The kernel mass of each event in each bin is computed once (``x``
    is shared) for all ``K`` weight vectors; the sums over events are accumulated in float64."""
    edges = jnp.asarray(layout.edges)
    rows = jnp.asarray(sumw2_rows, int)
    if layout.kde_method == "dense":
        h = (bandwidth * layout.bin_width).astype(x.dtype)
        p = bin_probabilities(x, edges.astype(x.dtype), h)
        w2 = weights[rows] * weights[rows]
        return event_sum(weights, p, jnp.float64), event_sum(w2, p * p, jnp.float64)

    def one(w):
        return kde_histogram(x, w, edges, bandwidth, relative=True, method=layout.kde_method, window=layout.kde_window,
                             accumulate=jnp.float64)

    yields, sumw2 = jax.vmap(one)(weights)
    return yields, sumw2[rows]


def histograms(inputs: dict, theta: Array, relax: Relaxation, layout: Layout) -> tuple[Array, Array]:
    """Pure JAX: ``(train, valid)`` histograms ``[channel, template, bin]`` of one chunk, float64.

    Per-event arithmetic (soft cuts, kernel, weight products) runs in ``layout.precision``; θ and the
    relaxation enter it in that precision too, the sums over events are float64."""
    dtype = jnp.dtype(layout.precision)
    cols = {k: jnp.asarray(v, dtype) for k, v in inputs["columns"].items()}
    theta_e = jnp.asarray(theta).astype(dtype)
    slope, bandwidth = jnp.asarray(relax.slope).astype(dtype), jnp.asarray(relax.bandwidth).astype(dtype)
    parity = cols[PARITY]
    halves = jnp.stack([2.0 * (1.0 - parity), 2.0 * parity])  # [2, N]: train, valid
    weight_names = (NOMINAL, *layout.weight_variations)
    n_w = len(weight_names)
    w = jnp.stack([jnp.asarray(inputs["weights"][k], dtype) for k in weight_names])  # [W, N]
    train, valid = [], []
    params = layout.params(theta_e)
    memo: dict = {}  # cut factors shared by the channels
    soft = jnp.stack([ch.soft_weight(cols, params, slope, memo) for ch in layout.channels])  # [C, N]
    varied_memo: dict = {var: {} for var in layout.kinematic_variations}
    for c, channel in enumerate(layout.channels):
        x = cols[channel.observable]
        stacked = (halves[:, None, :] * w[None, :, :] * soft[c][None, None, :]).reshape(-1, x.shape[0])
        yields, sumw2 = _kde(x, stacked, layout, bandwidth, sumw2_rows=(0, n_w))  # [2W, B], [2, B]
        yields = yields.reshape(2, n_w, -1)
        rows = [[yields[h, 0], sumw2[h], *[yields[h, i] for i in range(1, n_w)]] for h in (0, 1)]
        for var in layout.kinematic_variations:
            vcols = {**cols, **{k: jnp.asarray(v, dtype) for k, v in inputs["variations"][var].items()}}
            vsoft = channel.soft_weight(vcols, params, slope, varied_memo[var])
            vy, _ = _kde(vcols[channel.observable], halves * (w[0] * vsoft)[None, :], layout, bandwidth)  # [2, B]
            rows[0].append(vy[0])
            rows[1].append(vy[1])
        train.append(jnp.stack(rows[0]))
        valid.append(jnp.stack(rows[1]))
    return jnp.stack(train), jnp.stack(valid)


def _count(kernel: str, inputs) -> None:
    """Python side effect inside a jitted body: runs once per trace (= compilation), never per call."""
    TRACES[(kernel, int(inputs["weights"][NOMINAL].shape[0]))] += 1


@partial(jax.jit, static_argnames=("layout",))
def _primal(inputs, theta, relax, layout):
    _count("primal", inputs)
    return histograms(inputs, theta, relax, layout)


@partial(jax.jit, static_argnames=("layout",))
def _forward(inputs, theta, relax, layout):
    _count("forward", inputs)
    if layout.kde_method == "dense":
        return templates_and_jacobian(inputs, theta, relax, layout)
    return _jacfwd(inputs, theta, relax, layout)


def _jacfwd(inputs, theta, relax, layout):
    """The forward kernel by ``jax.jacfwd`` of `histograms` (the local KDE; and what tests compare with)."""
    def train_with_valid(t):
        train, valid = histograms(inputs, t, relax, layout)
        return train, (train, valid)

    jac, (train, valid) = jax.jacfwd(train_with_valid, has_aux=True)(theta)
    return train, jac, valid


@partial(jax.jit, static_argnames=("layout",))
def _vjp(inputs, theta, relax, cotangent, layout):
    _count("vjp", inputs)
    _, pullback = jax.vjp(lambda t: histograms(inputs, t, relax, layout)[0], theta)
    return pullback(cotangent)[0]


# ----------------------------------------------------------------------------------- worker side
def _embed(layout: Layout, process: str, values: np.ndarray) -> np.ndarray:
    """Place one process's ``[C, T, B, …]`` block into the full ``[P, C, T, B, …]`` array."""
    out = np.zeros((len(layout.processes), *values.shape))
    out[layout.process_index(process)] = values
    return out


def _args(theta, relax):
    return jnp.asarray(theta, float), Relaxation(*(jnp.asarray(v, float) for v in relax))


def forward_part(chunk, layout: Layout, theta, relax) -> dict:
    train, jac, valid = _forward(kernel_inputs(chunk, layout), *_args(theta, relax), layout)
    return {"train": _embed(layout, chunk.process, np.asarray(train)),
            "jac": _embed(layout, chunk.process, np.asarray(jac)),
            "valid": _embed(layout, chunk.process, np.asarray(valid))}


def primal_part(chunk, layout: Layout, theta, relax) -> dict:
    train, valid = _primal(kernel_inputs(chunk, layout), *_args(theta, relax), layout)
    return {"train": _embed(layout, chunk.process, np.asarray(train)),
            "valid": _embed(layout, chunk.process, np.asarray(valid))}


def vjp_part(chunk, layout: Layout, theta, relax, cotangent) -> dict:
    cot = jnp.asarray(np.asarray(cotangent)[layout.process_index(chunk.process)], float)
    return {"grad": np.asarray(_vjp(kernel_inputs(chunk, layout), *_args(theta, relax), cot, layout))}


def trace_counts() -> dict:
    """``{"kernel@length": n}`` traced in this process (a worker: fetch with ``client.run``)."""
    return {f"{k}@{n}": v for (k, n), v in sorted(TRACES.items())}


def compiled_counts() -> dict:
    """Executables in the jit caches of the three kernels in this process."""
    return {"primal": _primal._cache_size(), "forward": _forward._cache_size(), "vjp": _vjp._cache_size()}
