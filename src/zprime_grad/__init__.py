"""zprime_grad: a differentiable Z'->tt analysis that runs where the data is.

Numerical policy: every JAX computation in the package runs in float64 (columns are stored as float32,
templates, fits and gradients are float64), so that gradients reduced over a cluster agree with the
single-process gradient to ~1e-9 and the profile fit matches pyhf. ``zprime_grad.jaxconfig`` applies it.
"""

__version__ = "0.1.0"
