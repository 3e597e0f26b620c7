"""Import this before using jax in the package: it switches on float64 (see the package docstring)."""

import jax

jax.config.update("jax_enable_x64", True)
