"""The single-process "hold everything" reference: one ``jax.value_and_grad`` over all events.

This is how the published analysis computes its gradient: every event of every process in one array,
one differentiable function from θ to the objective. The tests compare the distributed gradient
(chunk contributions reduced on a cluster + chain rule on the driver) with it, and the epoch
benchmark uses it as the baseline. Same kernel (`contribution.histograms`), same model, same
objective; only the summation and the differentiation strategy differ.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zprime_grad.jaxconfig import in_float64
from zprime_grad.optimise.contribution import Relaxation, histograms, kernel_inputs
from zprime_grad.optimise.layout import Layout
from zprime_grad.model import histograms_to_templates
from zprime_grad.objective import objective_value
from zprime_grad.stats import Model


def hold_everything(chunks: Sequence, layout: Layout) -> dict[str, dict]:
    """All MC events of each process concatenated into one set of arrays (padding rows dropped)."""
    by_process: dict[str, list[dict]] = {}
    for chunk in sorted((c for c in chunks if not c.is_data), key=lambda c: c.key):
        inputs = kernel_inputs(chunk, layout)
        by_process.setdefault(chunk.process, []).append(jax.tree.map(lambda a, n=chunk.n_events: a[:n], inputs))
    return {p: jax.tree.map(lambda *a: np.concatenate(a), *parts) for p, parts in by_process.items()}


def full_histograms(events: dict[str, dict], theta, relax: Relaxation, layout: Layout):
    """``(train, valid)`` histograms ``[process, channel, template, bin]`` from all events at once."""
    train = [jnp.zeros(layout.shape[1:])] * len(layout.processes)
    valid = list(train)
    for process, inputs in events.items():
        i = layout.process_index(process)
        train[i], valid[i] = histograms(inputs, theta, relax, layout)
    return jnp.stack(train), jnp.stack(valid)


@partial(jax.jit, static_argnames=("kind", "structure", "options", "layout", "settings"))
def value_and_grad(events, theta, relax, kind, structure, options, layout, settings):
    """(f_train(θ), ∇θ f_train, f_valid(θ)) over all events, by reverse-mode autodiff end to end."""
    def f(t):
        train, valid = full_histograms(events, t, relax, layout)
        model = Model(structure, histograms_to_templates(train, layout, settings), options=options)
        return objective_value(train, kind, model, layout, settings), valid

    (value, valid), grad = jax.value_and_grad(f, has_aux=True)(theta)
    model = Model(structure, histograms_to_templates(valid, layout, settings), options=options)
    return value, grad, objective_value(valid, kind, model, layout, settings)


@in_float64
def reference_evaluation(events, theta, relax, objective, precision: str | None = None
                         ) -> tuple[float, np.ndarray, float]:
    """Convenience wrapper taking an `objective.Objective` for the statics; ``precision``: the kernel's
    per-event arithmetic if not the objective layout's (the epoch benchmark's float64 baseline)."""
    layout = objective.layout if precision is None else dataclasses.replace(objective.layout, precision=precision)
    relax = Relaxation(*(jnp.asarray(v, float) for v in relax))
    value, grad, valid = value_and_grad(events, jnp.asarray(theta, float), relax, objective.kind,
                                        objective.model.structure, objective.model.options, layout,
                                        objective.settings)
    return float(value), np.asarray(grad), float(valid)

