"""The statistical model of `zprime_grad.model_table` bound to `zprime_grad.stats`, for histograms shaped
by the optimiser's `Layout` or by any `ModelShape`.

The modifiers, their data rules and the background floor are the table's (`zprime_grad.model_table`,
written once for the optimiser and validation alike); this module only maps a `Layout` onto the
`ModelShape` the table reads, and binds the pyhf spec to the JAX likelihood with tight fit options.
``histograms_to_templates`` is pure JAX: the driver differentiates the objective w.r.t. the reduced
histograms through it.
"""

from __future__ import annotations

import jax
import numpy as np

from zprime_grad.model_table import POI, ModelSettings, ModelShape, histogram_templates, pyhf_spec
from zprime_grad.stats import FitOptions, Model

__all__ = ["FIT_OPTIONS", "POI", "ModelSettings", "build_spec", "histograms_to_templates", "make_model",
           "model_shape"]

# Tight profile fits: the envelope-theorem gradient is only as exact as the fitted optimum.
FIT_OPTIONS = FitOptions(tol=1e-12, max_iter=2000)


def model_shape(layout) -> ModelShape:
    """What the model reads of a `Layout`; a `ModelShape` (e.g. validation's hard templates) as is."""
    if isinstance(layout, ModelShape):
        return layout
    return ModelShape(layout.processes, layout.channel_names, layout.templates, layout.n_bins)


def build_spec(layout, settings: ModelSettings, H: np.ndarray) -> dict:
    """A complete pyhf workspace for histograms ``H`` (observations: the μ = 1 Asimov yields)."""
    return pyhf_spec(model_shape(layout), settings, H)


def make_model(layout, settings: ModelSettings, H: np.ndarray) -> Model:
    return Model.from_pyhf(build_spec(layout, settings, H), source="optimise model", options=FIT_OPTIONS)


def histograms_to_templates(H: jax.Array, layout, settings: ModelSettings) -> dict:
    """Reduced histograms ``[process, channel, template, bin]`` → the stats templates pytree."""
    return histogram_templates(H, model_shape(layout), settings)
