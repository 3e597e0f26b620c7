"""Profile fits: L-BFGS minimisation inside JAX, and its two ways of being differentiated.

``minimize`` runs a dense BFGS (inverse-Hessian update, backtracking Armijo line search; the default:
few operations per step, so it is fast and compiles quickly for the <~ 200 parameters of a binned fit)
or ``optax.lbfgs`` (zoom line search) in a ``lax.while_loop``; it is not differentiated itself. Callers that only need the *value* of the minimised objective differentiate by the envelope
theorem: at an unconstrained optimum the gradient of ``f(x_hat(t), t)`` w.r.t. ``t`` is the partial
derivative at fixed ``x_hat``, so they evaluate ``f(stop_gradient(x_hat), t)``. Quantities that depend on
``x_hat`` itself (pulls, Fisher information) use ``argmin_implicit``, whose VJP solves the implicit
function theorem ``dx_hat/dt = -H^-1 d(grad_x f)/dt`` with the exact Hessian. The tests check that both
give the same gradient of q0, and that it equals finite differences.

Fixed parameters: ``free`` is a boolean mask (static, or traced in ``minimize`` so that fits with
different masks can be batched with ``vmap``); fixed coordinates keep their ``x0`` values in
``minimize``. For ``argmin_implicit`` the objective must take fixed values from ``args`` if gradients
w.r.t. them are wanted (``x0`` is treated as a mere starting point).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

Array = jax.Array
Objective = Callable[[Array, Any], Array]


@dataclass(frozen=True)
class FitOptions:
    """Minimiser and stopping rule: gradient norm below ``tol``, no further decrease, or ``max_iter`` steps."""

    method: str = "bfgs"  # or "lbfgs" (optax)
    max_iter: int = 500
    tol: float = 1e-9
    memory_size: int = 10  # lbfgs only


_ROUNDING = 8 * float(np.finfo(np.float64).eps)


class FitResult(NamedTuple):
    x: Array
    value: Array
    grad_norm: Array
    n_iter: Array


def _free_array(free, n: int):
    if free is None:
        return np.ones(n, bool)
    return free if isinstance(free, jax.Array) else np.asarray(free, bool)


def minimize(
    objective: Objective, x0: Array, args: Any = (), *, free=None, options: FitOptions = FitOptions(),
    inverse_hessian: Array | None = None,
) -> FitResult:
    """Minimise ``objective(x, args)`` over the free coordinates of ``x``, starting at ``x0``.

    ``inverse_hessian`` (BFGS only): a starting approximation, e.g. the inverse Fisher information at
    ``x0``; it replaces the scaled identity and typically cuts the number of steps by 3-4x.
    """
    free_mask = _free_array(free, x0.shape[0])
    x0 = jnp.asarray(x0, float)

    def fun(x):
        return objective(jnp.where(free_mask, x, x0), args)

    if options.method == "bfgs":
        return _bfgs(fun, x0, free_mask, options, inverse_hessian)
    if options.method != "lbfgs":
        raise ValueError(f"FitOptions.method must be 'bfgs' or 'lbfgs', got {options.method!r}")

    solver = optax.lbfgs(memory_size=options.memory_size)
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        x, state, _ = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = solver.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(x, updates), state, value

    def keep_going(carry):
        _, state, previous = carry
        count = otu.tree_get(state, "count")
        grad_norm = otu.tree_l2_norm(otu.tree_get(state, "grad"))
        improving = otu.tree_get(state, "value") < previous
        return (count == 0) | ((count < options.max_iter) & (grad_norm >= options.tol) & improving)

    carry = (x0, solver.init(x0), jnp.asarray(jnp.inf, x0.dtype))
    x, state, _ = jax.lax.while_loop(keep_going, step, carry)
    value, grad = jax.value_and_grad(fun)(x)
    x = jnp.where(free_mask, x, x0)
    return FitResult(x, value, jnp.linalg.norm(grad), otu.tree_get(state, "count"))


def _bfgs(fun, x0: Array, free_mask, options: FitOptions, inverse_hessian: Array | None) -> FitResult:
    free = jnp.asarray(free_mask, x0.dtype)
    value_and_grad = jax.value_and_grad(fun)
    f0, g0 = value_and_grad(x0)
    both_free = free[:, None] * free[None, :]
    # Zero rows/columns for fixed coordinates: steps never move them.
    h0 = jnp.diag(free) if inverse_hessian is None else inverse_hessian * both_free
    rescale_first = inverse_hessian is None

    def line_search(x, f, g, direction, slope):
        def too_high(c):
            step, f_new, _, i = c
            return ((f_new > f + 1e-4 * step * slope) | ~jnp.isfinite(f_new)) & (i < 30)

        def shrink(c):
            step, _, _, i = c
            step = 0.5 * step
            f_new, g_new = value_and_grad(x + step * direction)
            return step, f_new, g_new, i + 1

        f1, g1 = value_and_grad(x + direction)
        return jax.lax.while_loop(too_high, shrink, (jnp.ones((), x.dtype), f1, g1, 0))

    def step(carry):
        k, x, f, g, h, _ = carry
        direction = -h @ g
        slope = g @ direction
        descent = slope < 0
        direction = jnp.where(descent, direction, -g)
        slope = jnp.where(descent, slope, -(g @ g))
        t, f_new, g_new, _ = line_search(x, f, g, direction, slope)
        g_new = g_new * free
        s, y = t * direction, g_new - g
        sy = s @ y
        # Scale the initial inverse Hessian by s.y / y.y (Nocedal & Wright 6.20) before the first update.
        if rescale_first:
            h = jnp.where((k == 0) & (sy > 0), (sy / jnp.maximum(y @ y, 1e-300)) * h, h)
        hy = h @ y
        rho = 1.0 / jnp.where(sy > 0, sy, 1.0)
        updated = h - rho * (jnp.outer(s, hy) + jnp.outer(hy, s)) + (rho * rho * (y @ hy) + rho) * jnp.outer(s, s)
        h = jnp.where(sy > 1e-12 * jnp.sqrt((s @ s) * (y @ y)), updated, h)
        improved = f_new < f
        # Stop once a step gains nothing above rounding: a tighter gradient tolerance is not reachable.
        stalled = f - f_new <= _ROUNDING * jnp.maximum(jnp.abs(f), 1.0)
        x, f, g = jnp.where(improved, x + s, x), jnp.where(improved, f_new, f), jnp.where(improved, g_new, g)
        return k + 1, x, f, g, h, stalled

    def keep_going(carry):
        k, _, _, g, _, stalled = carry
        return (k < options.max_iter) & (jnp.max(jnp.abs(g)) >= options.tol) & ~stalled

    carry = (jnp.zeros((), int), x0, f0, g0 * free, h0, jnp.zeros((), bool))
    k, x, f, g, _, _ = jax.lax.while_loop(keep_going, step, carry)
    return FitResult(jnp.where(free_mask, x, x0), f, jnp.linalg.norm(g), k)


@partial(jax.custom_vjp, nondiff_argnums=(0, 3, 4))
def argmin_implicit(objective: Objective, x0: Array, args: Any, free: tuple | None, options: FitOptions) -> Array:
    """``argmin_x objective(x, args)``, differentiable w.r.t. ``args`` by implicit differentiation."""
    return minimize(objective, x0, args, free=free, options=options).x


def _argmin_fwd(objective, x0, args, free, options):
    x_hat = minimize(objective, x0, args, free=free, options=options).x
    return x_hat, (x_hat, x0, args)


def _argmin_bwd(objective, free, options, residuals, x_bar):
    x_hat, x0, args = residuals
    free_mask = jnp.asarray(_free_array(free, x_hat.shape[0]))
    hessian = jax.hessian(objective)(x_hat, args)
    both_free = free_mask[:, None] & free_mask[None, :]
    hessian = jnp.where(both_free, hessian, jnp.eye(x_hat.shape[0]))
    v = jnp.linalg.solve(hessian, jnp.where(free_mask, x_bar, 0.0))
    _, vjp_args = jax.vjp(lambda a: jnp.where(free_mask, jax.grad(objective)(x_hat, a), 0.0), args)
    (args_bar,) = vjp_args(-v)
    return jnp.zeros_like(x0), args_bar


argmin_implicit.defvjp(_argmin_fwd, _argmin_bwd)
