"""The optimisation loop as small pieces with explicit state: optimiser, schedule, guard, stopping.

* `make_optimiser`: Adam whose step is ``learning_rate × scale`` per parameter (per-parameter
  overrides), with a global ``lr_factor`` hyperparameter in the optimiser state that the NaN guard
  shrinks; θ is projected onto each parameter's bounds after every update.
* `relaxation_schedule`: the soft cuts sharpen geometrically over ``anneal_epochs`` (slope up, KDE
  bandwidth down), then stay; a function of the epoch only, so a resumed run sees the same values.
* `epoch_step`: one accepted or rejected step. A non-finite objective or gradient rejects the point:
  θ returns to the last good point and its step is redone with the learning rate × ``lr_shrink``;
  the history records ``rejected`` and never a NaN.
* early stopping once the annealing is over and the training objective has not improved by
  ``min_delta`` (relative) for ``patience`` epochs.

Everything in `LoopState` is plain numpy / Python, so a checkpoint pickles it exactly and a resumed
run continues bit-identically.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np
import optax
from optax import projections

from zprime_grad.errors import UserError
from zprime_grad.optimise.contribution import Relaxation

log = logging.getLogger(__name__)


class Evaluation(NamedTuple):
    """What one epoch's round(s) on the cluster give the loop."""

    value: float  # training objective at θ
    grad: np.ndarray  # ∇θ of the training objective
    valid: float  # validation objective at θ (primal only)


@dataclass(frozen=True)
class LoopSettings:
    lower: np.ndarray
    upper: np.ndarray
    patience: int = 10
    min_delta: float = 1e-4
    lr_shrink: float = 0.5
    max_rejections: int = 8
    anneal_epochs: int = 0


# ------------------------------------------------------------------------------------------ optimiser
def per_parameter_scale(factors: np.ndarray) -> optax.GradientTransformation:
    """Multiply the updates element-wise by fixed factors (stateless)."""
    factors = np.asarray(factors, float)

    def update(updates, state, params=None):
        return updates * factors, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimiser(scales: Sequence[float], learning_rates: Sequence[float]) -> optax.GradientTransformation:
    """Adam steps of ``learning_rates[i] × scales[i] × lr_factor`` for the *loss* −objective."""
    step = np.asarray(learning_rates, float) * np.asarray(scales, float)

    def factory(lr_factor):
        return optax.chain(optax.scale_by_adam(), per_parameter_scale(-step), optax.scale(lr_factor))

    return optax.inject_hyperparams(factory)(lr_factor=1.0)


def lr_factor(opt_state) -> float:
    return float(opt_state.hyperparams["lr_factor"])


def with_lr_factor(opt_state, value: float):
    hyper = dict(opt_state.hyperparams)
    hyper["lr_factor"] = np.asarray(value, dtype=np.asarray(opt_state.hyperparams["lr_factor"]).dtype)
    return opt_state._replace(hyperparams=hyper)


def apply_step(optimiser, theta: np.ndarray, grad: np.ndarray, opt_state, settings: LoopSettings):
    """Ascend the objective: update with the loss gradient −∇, then project onto the bounds."""
    updates, opt_state = optimiser.update(-np.asarray(grad, float), opt_state, theta)
    new = projections.projection_box(optax.apply_updates(theta, updates), settings.lower, settings.upper)
    return np.asarray(new, float), to_numpy(opt_state)


def to_numpy(tree):
    return jax.tree.map(lambda a: np.asarray(a), jax.device_get(tree))


# ------------------------------------------------------------------------------------------- schedule
def relaxation_schedule(slope: tuple[float, float], bandwidth: tuple[float, float],
                        anneal_epochs: int) -> Callable[[int], Relaxation]:
    """Geometric interpolation from start to end over ``anneal_epochs``, then constant."""

    def at(epoch: int) -> Relaxation:
        f = 1.0 if anneal_epochs <= 0 else min(epoch / anneal_epochs, 1.0)
        return Relaxation(slope[0] * (slope[1] / slope[0]) ** f, bandwidth[0] * (bandwidth[1] / bandwidth[0]) ** f)

    return at


# ---------------------------------------------------------------------------------------------- state
@dataclass
class LoopState:
    epoch: int  # the next epoch to evaluate
    theta: np.ndarray
    opt_state: Any
    best_value: float = -math.inf
    best_epoch: int = -1
    best_theta: np.ndarray | None = None
    last_good: tuple | None = None  # (θ, ∇, optimiser state) of the last accepted point, before its step
    rejections: int = 0
    stopped: str | None = None  # why the loop ended early
    history: list[dict] = field(default_factory=list)


def init_state(theta0: np.ndarray, optimiser) -> LoopState:
    theta0 = np.asarray(theta0, float)
    return LoopState(0, theta0, to_numpy(optimiser.init(theta0)))


def _finite(ev: Evaluation) -> bool:
    return math.isfinite(ev.value) and math.isfinite(ev.valid) and bool(np.all(np.isfinite(ev.grad)))


def epoch_step(state: LoopState, ev: Evaluation, optimiser, settings: LoopSettings, record: dict) -> LoopState:
    """Accept (record, step) or reject (return to the last good point, smaller step) one evaluation."""
    entry = {"epoch": state.epoch, "theta": state.theta.tolist(), "lr_factor": lr_factor(state.opt_state), **record}
    if _finite(ev):
        entry.update(z_train=ev.value, z_valid=ev.valid, grad=np.asarray(ev.grad).tolist(),
                     grad_norm=float(np.linalg.norm(ev.grad)), rejected=False)
        best = ev.value > state.best_value + settings.min_delta * abs(state.best_value) or state.best_epoch < 0
        last_good = (state.theta, np.asarray(ev.grad, float), state.opt_state)
        theta, opt_state = apply_step(optimiser, state.theta, ev.grad, state.opt_state, settings)
        new = replace(state, theta=theta, opt_state=opt_state, last_good=last_good, rejections=0)
        if best:
            new = replace(new, best_value=ev.value, best_epoch=state.epoch, best_theta=state.theta)
    else:
        rejections = state.rejections + 1
        entry.update(z_train=None, z_valid=None, grad=None, grad_norm=None, rejected=True)
        if state.last_good is None:
            raise UserError(f"optimise: the objective is not finite at the starting point θ = {state.theta.tolist()}")
        if rejections > settings.max_rejections:
            raise UserError(f"optimise: {rejections} non-finite steps in a row at epoch {state.epoch}; "
                            "lower optimise.learning_rate or raise optimise.background_floor")
        theta0, grad0, opt0 = state.last_good
        opt0 = with_lr_factor(opt0, lr_factor(opt0) * settings.lr_shrink)
        log.warning("optimise: epoch %d: non-finite objective or gradient at θ = %s; step rejected, "
                    "learning-rate factor -> %.3g", state.epoch, state.theta.tolist(), lr_factor(opt0))
        theta, opt_state = apply_step(optimiser, theta0, grad0, opt0, settings)
        new = replace(state, theta=theta, opt_state=opt_state, last_good=(theta0, grad0, opt0), rejections=rejections)
    new.history = [*state.history, entry]
    new.epoch = state.epoch + 1
    if (not entry["rejected"] and new.epoch > settings.anneal_epochs
            and new.epoch - 1 - new.best_epoch >= settings.patience):
        new.stopped = f"plateau: no improvement for {settings.patience} epochs (best at epoch {new.best_epoch})"
    return new


def run(state: LoopState, evaluate: Callable[[np.ndarray, Relaxation], Evaluation], optimiser,
        settings: LoopSettings, schedule: Callable[[int], Relaxation], epochs: int,
        on_epoch: Callable[[LoopState], None] = lambda s: None, clock=None) -> LoopState:
    """Run epochs ``state.epoch … epochs-1`` (or until a plateau); ``on_epoch`` after each (checkpoint)."""
    import time

    clock = clock or time.perf_counter
    while state.epoch < epochs and state.stopped is None:
        relax = schedule(state.epoch)
        tic = clock()
        ev = evaluate(state.theta, relax)
        record = {"slope": float(relax.slope), "bandwidth": float(relax.bandwidth), "wall_s": clock() - tic}
        state = epoch_step(state, ev, optimiser, settings, record)
        on_epoch(state)
    return state
