"""The forward-mode kernel written out: one chunk's templates and their Jacobian w.r.t. θ in one pass.

A template is linear in the soft event weight: ``H[k, b] = Σ_n a_k[n] s[n] p[n, b]`` with ``a_k`` the
θ-independent part (event weight × 2·[parity = half]), ``s`` the channel's soft weight and ``p`` the
kernel mass of event ``n`` in bin ``b``. So ``∂H[k, b]/∂θ_j = Σ_n a_k[n] ∂_j s[n] p[n, b]``: automatic
differentiation is needed only for the per-event ``∂s/∂θ`` (``jax.jacfwd`` of the soft weights, a
handful of elementwise operations), and every template with its Jacobian is one GEMM of the rows
``a_k · [s, ∂_1 s, …, ∂_P s]`` against ``p``, whose kernel mass is computed once per event and edge.
``jax.jacfwd`` of the whole kernel computes the same numbers (`tests/optimise`) but lets XLA rebuild
the soft-weight tangents inside every row of that product: ~3x slower on one core (benchmarks/epoch.py).

The Jacobian is of the training half only (the validation half is never differentiated); the sums over
events run in float64 (`zprime_grad.soft.event_sum`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zprime_grad.optimise.layout import NOMINAL, PARITY, Layout
from zprime_grad.selection import BASELINE
from zprime_grad.soft import bin_probabilities, event_sum

Array = jax.Array


def _soft_with_tangents(columns: dict, theta: Array, slope, layout: Layout) -> Array:
    """``[C, 1 + P, N]``: each channel's soft weight, then its derivative w.r.t. each θ_j.

    A channel's weight is a product of cut factors, each of which reads one or two thresholds: each
    factor is differentiated w.r.t. its own thresholds only (``jax.jacfwd`` of the factor) and the
    product rule assembles ``∂s/∂θ_j``, so a factor costs one tangent per threshold it reads instead of
    one per parameter. Channels that cut on a network score are differentiated as a whole."""
    if layout.networks:
        return _soft_with_tangents_dense(columns, theta, slope, layout)
    index = {name: i for i, name in enumerate(layout.param_names)}
    n_params = len(layout.param_names)
    factors: dict = {}  # cut -> (value [N], {θ index: ∂value [N]}), shared by the channels

    def factor(cut):
        if cut not in factors:
            names = sorted({c.param for c in getattr(cut, "cuts", (cut,))})

            def value(sub):
                v = cut.soft(columns, dict(zip(names, sub)), slope)
                return v, v

            jac, val = jax.jacfwd(value, has_aux=True)(jnp.stack([theta[index[n]] for n in names]))
            factors[cut] = (val, {index[n]: jac[..., k] for k, n in enumerate(names)})
        return factors[cut]

    out = []
    for channel in layout.channels:
        parts = [factor(cut) for cut in channel.cuts]
        base = jnp.asarray(columns[BASELINE])
        values = [v for v, _ in parts]
        s = base
        for v in values:
            s = s * v
        grads = [jnp.zeros_like(s) for _ in range(n_params)]
        for i, (_, derivatives) in enumerate(parts):
            others = base
            for k, v in enumerate(values):
                if k != i:
                    others = others * v
            for j, d in derivatives.items():
                grads[j] = grads[j] + others * d
        out.append(jnp.stack([s, *grads]))
    return jnp.stack(out)


def _soft_with_tangents_dense(columns: dict, theta: Array, slope, layout: Layout) -> Array:
    def soft(t):
        params, memo = layout.params(t), {}
        s = jnp.stack([ch.soft_weight(columns, params, slope, memo) for ch in layout.channels])  # [C, N]
        return s, s

    jac, value = jax.jacfwd(soft, has_aux=True)(theta)  # [C, N, P], [C, N]
    return jnp.concatenate([value[:, None, :], jnp.moveaxis(jac, -1, 1)], axis=1)


class _Sums:
    """Rows to be summed against one kernel-mass matrix, collected so that every row that shares it
    (all channels with that observable, train and validation halves) goes through one GEMM."""

    def __init__(self):
        self.rows: dict = {}  # mass key -> (mass matrix, [row blocks])

    def add(self, key, mass: Array, rows: Array) -> tuple:
        _, blocks = self.rows.setdefault(key, (mass, []))
        blocks.append(rows)
        return key, len(blocks) - 1

    def compute(self) -> dict:
        out = {}
        for key, (mass, blocks) in self.rows.items():
            sums = event_sum(jnp.concatenate(blocks), mass, jnp.float64)
            start = 0
            for i, block in enumerate(blocks):
                out[key, i] = sums[start:start + block.shape[0]]
                start += block.shape[0]
        return out


def templates_and_jacobian(inputs: dict, theta: Array, relax, layout: Layout) -> tuple[Array, Array, Array]:
    """``(train [C, T, B], ∂train/∂θ [C, T, B, P], valid [C, T, B])`` of one chunk: the values of
    `zprime_grad.optimise.contribution.histograms` and the Jacobian ``jax.jacfwd`` of it gives."""
    if layout.kde_method != "dense":
        raise ValueError("templates_and_jacobian: the dense KDE only (use jax.jacfwd for kde_method='local')")
    dtype = jnp.dtype(layout.precision)
    cols = {k: jnp.asarray(v, dtype) for k, v in inputs["columns"].items()}
    theta_e = jnp.asarray(theta).astype(dtype)
    slope = jnp.asarray(relax.slope).astype(dtype)
    h = (jnp.asarray(relax.bandwidth) * layout.bin_width).astype(dtype)
    edges = jnp.asarray(layout.edges, dtype)
    parity = cols[PARITY]
    train_half, valid_half = 2.0 * (1.0 - parity), 2.0 * parity
    w = jnp.stack([jnp.asarray(inputs["weights"][k], dtype) for k in (NOMINAL, *layout.weight_variations)])
    n_w, n_p, n_bins = w.shape[0], len(layout.param_names), layout.n_bins
    sets = {None: (cols, _soft_with_tangents(cols, theta_e, slope, layout))}  # [C, 1+P, N] per column set
    for var in layout.kinematic_variations:
        vcols = {**cols, **{k: jnp.asarray(v, dtype) for k, v in inputs["variations"][var].items()}}
        sets[var] = (vcols, _soft_with_tangents(vcols, theta_e, slope, layout))
    masses: dict = {}
    sums, where = _Sums(), {}
    a_train, a_valid = train_half * w, valid_half * w  # [W, N]
    w2_train, w2_valid = (train_half * w[0]) ** 2, (valid_half * w[0]) ** 2
    for var, (columns, soft) in sets.items():
        for c, channel in enumerate(layout.channels):
            key = (var, channel.observable)
            if key not in masses:
                masses[key] = bin_probabilities(columns[channel.observable], edges, h)
            p, f = masses[key], soft[c]  # f: [1+P, N]
            if var is None:
                rows = (a_train[:, None, :] * f[None, :, :]).reshape(-1, f.shape[1])  # [W (1+P), N]
                where[c, "w_train"] = sums.add(key, p, rows)
                where[c, "w_valid"] = sums.add(key, p, a_valid * f[0][None, :])
                s2 = jnp.concatenate([(f[0] * f[0])[None], 2.0 * f[0][None] * f[1:]])  # Σ(w s p)² and its ∂
                where[c, "q_train"] = sums.add(("sq", key), p * p, w2_train[None] * s2)
                where[c, "q_valid"] = sums.add(("sq", key), p * p, (w2_valid * s2[0])[None])
            else:
                where[c, var, "train"] = sums.add(key, p, train_half * w[0] * f)  # [1+P, N]
                where[c, var, "valid"] = sums.add(key, p, (valid_half * w[0] * f[0])[None])
    got = sums.compute()
    train, jac, valid = [], [], []
    for c in range(len(layout.channels)):
        y = got[where[c, "w_train"]].reshape(n_w, 1 + n_p, n_bins)
        q = got[where[c, "q_train"]]
        t_rows = [y[0, 0], q[0], *y[1:, 0]]
        d_rows = [y[0, 1:].T, q[1:].T, *(y[k, 1:].T for k in range(1, n_w))]
        yv, qv = got[where[c, "w_valid"]], got[where[c, "q_valid"]]
        v_rows = [yv[0], qv[0], *yv[1:]]
        for var in layout.kinematic_variations:
            vt = got[where[c, var, "train"]]
            t_rows.append(vt[0])
            d_rows.append(vt[1:].T)
            v_rows.append(got[where[c, var, "valid"]][0])
        train.append(jnp.stack(t_rows))
        jac.append(jnp.stack(d_rows))
        valid.append(jnp.stack(v_rows))
    return jnp.stack(train), jnp.stack(jac), jnp.stack(valid)
