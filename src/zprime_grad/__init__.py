"""zprime_grad: a differentiable Z'->tt analysis that runs where the data is.

Numerical policy: the epoch kernel's per-event arithmetic is float32 (``optimise.precision``); its sums
over events, the templates, fits and gradients are float64, so the profile fit matches pyhf and reduced
gradients agree with the single-process one. Importing the package sets no JAX option: the entry points
ask for float64 per call (``zprime_grad.jaxconfig``)."""

__version__ = "0.1.0"
