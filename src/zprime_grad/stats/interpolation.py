"""pyhf's interpolation codes for constrained systematics, as elementwise JAX functions.

These are the reference forms; ``stats.likelihood`` evaluates the same formulas with the template-only
parts (coefficients, logarithms, differences) precomputed once per fit.

Only the two codes cabinetry writes are implemented: code 4 for normsys (polynomial inside |alpha| < 1,
exponential outside, continuous up to the second derivative) and code 4p for histosys (polynomial
inside, linear outside). Both are traced in their templates, so gradients reach hi/lo and the nominal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# The inverse of the 6x6 system that fixes a_1..a_6 of 1 + sum a_i alpha^i by matching value, first and
# second derivative of hi^alpha at alpha = +1 and lo^-alpha at alpha = -1 (pyhf's A_inverse, alpha0 = 1).
CODE4_A_INVERSE = np.array(
    [
        [15 / 16, -15 / 16, -7 / 16, -7 / 16, 1 / 16, -1 / 16],
        [3 / 2, 3 / 2, -9 / 16, 9 / 16, 1 / 16, 1 / 16],
        [-5 / 8, 5 / 8, 5 / 8, 5 / 8, -1 / 8, 1 / 8],
        [-3 / 2, -3 / 2, 7 / 8, -7 / 8, -1 / 8, -1 / 8],
        [3 / 16, -3 / 16, -3 / 16, -3 / 16, 1 / 16, -1 / 16],
        [1 / 2, 1 / 2, -5 / 16, 5 / 16, 1 / 16, 1 / 16],
    ]
)


def code4(alpha: Array, hi: Array, lo: Array) -> Array:
    """Multiplicative normsys factor for pull ``alpha`` and relative variations ``hi``/``lo`` (> 0).

    Broadcasts over all arguments. ``hi = lo = 1`` gives exactly 1, so absent modifiers can be padded.
    """
    log_hi, log_lo = jnp.log(hi), jnp.log(lo)
    b = jnp.stack([hi - 1.0, lo - 1.0, log_hi * hi, -log_lo * lo, log_hi**2 * hi, log_lo**2 * lo])
    coeffs = jnp.tensordot(jnp.asarray(CODE4_A_INVERSE), b, axes=1)  # a_1..a_6
    inside = jnp.clip(alpha, -1.0, 1.0)  # keep the unused branch finite for gradients
    powers = jnp.stack([inside**i for i in range(1, 7)])
    polynomial = 1.0 + jnp.sum(coeffs * powers, axis=0)
    outside = jnp.where(alpha >= 1.0, hi ** jnp.abs(alpha), lo ** jnp.abs(alpha))
    return jnp.where(jnp.abs(alpha) >= 1.0, outside, polynomial)


def code4p(alpha: Array, nominal: Array, hi: Array, lo: Array) -> Array:
    """Additive histosys shift for pull ``alpha`` (pyhf code 4p): zero when ``hi = lo = nominal``."""
    delta_up = hi - nominal
    delta_dn = nominal - lo
    s = 0.5 * (delta_up + delta_dn)
    a = 0.0625 * (delta_up - delta_dn)
    a2 = alpha * alpha
    polynomial = alpha * s + a2 * a * (15.0 + a2 * (3.0 * a2 - 10.0))
    return jnp.where(alpha > 1.0, alpha * delta_up, jnp.where(alpha < -1.0, alpha * delta_dn, polynomial))
