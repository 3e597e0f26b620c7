"""Two black-box searches over the box of the cut thresholds, each a function
``(space, budget, batch, evaluate, seed) -> trials`` that spends exactly ``budget`` evaluations, the
first at the reference cuts θ₀ (so neither can end below the reference on the training events).

* `sobol` — a scrambled Sobol sequence (`scipy.stats.qmc`): space-filling, no feedback;
* `tpe` — Optuna's tree-structured Parzen estimator, asked ``batch`` candidates at a time (constant liar).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

Evaluate = Callable[[list[dict[str, float]]], list[float]]


@dataclass(frozen=True)
class Dimension:
    name: str
    low: float
    high: float
    init: float


def _in_batches(thetas: list[dict], batch: int, evaluate: Evaluate) -> list[dict]:
    trials = []
    for start in range(0, len(thetas), batch):
        part = thetas[start:start + batch]
        trials += [{"theta": t, "value": v} for t, v in zip(part, evaluate(part))]
    return trials


def sobol(space: Sequence[Dimension], budget: int, batch: int, evaluate: Evaluate, seed: int) -> list[dict]:
    from scipy.stats import qmc

    start = {d.name: d.init for d in space}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the balance properties of Sobol' points require n = 2^m"
        points = qmc.Sobol(len(space), scramble=True, seed=seed).random(budget - 1) if budget > 1 else []
    scaled = qmc.scale(points, [d.low for d in space], [d.high for d in space]) if len(points) else []
    thetas = [start] + [{d.name: float(x) for d, x in zip(space, row)} for row in scaled]
    return _in_batches(thetas, batch, evaluate)


def tpe(space: Sequence[Dimension], budget: int, batch: int, evaluate: Evaluate, seed: int) -> list[dict]:
    import optuna

    logger = logging.getLogger("optuna")
    level, logger_level = optuna.logging.get_verbosity(), logger.level
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial otherwise; restored below
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            distributions = {d.name: optuna.distributions.FloatDistribution(d.low, d.high) for d in space}
            study.enqueue_trial({d.name: d.init for d in space})
            trials: list[dict] = []
            while len(trials) < budget:
                asked = [study.ask(distributions) for _ in range(min(batch, budget - len(trials)))]
                thetas = [{d.name: float(t.params[d.name]) for d in space} for t in asked]
                for trial, theta, value in zip(asked, thetas, evaluate(thetas)):
                    if math.isfinite(value):
                        study.tell(trial, value)
                    else:
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    trials.append({"theta": theta, "value": value})
            return trials
    finally:
        optuna.logging.set_verbosity(level)
        logger.setLevel(logger_level)


SEARCHES = {"sobol": sobol, "tpe": tpe}
