"""``scan``: each method's search, its best candidate on the training events as ``OUT/<method>/params.json``
(the optimiser's format: ``validate`` reads it like θ*), every trial in ``OUT/<method>/trials.json``, and
``OUT/scan.json`` last (the completion marker). The budget is the gradient run's: a forward-mode epoch
costs 1 + n_params evaluations of the objective (the value and one tangent per parameter)."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Mapping, Sequence

from zprime_grad import atomic, terminal
from zprime_grad.config import Config
from zprime_grad.errors import UserError
from zprime_grad.jaxconfig import in_float64
from zprime_grad.scan.objective import HardObjective
from zprime_grad.scan.search import SEARCHES, Dimension

METHODS = tuple(SEARCHES)
OUTPUTS = ("scan.json", *METHODS)  # the marker first
SELECTION = "the best hard-cut objective on the training half (even events); the held-out half is not read"


def gradient_budget(params) -> int:
    """Objective evaluations a gradient run used: epochs × (1 + parameters), from its ``params.json``."""
    payload = json.loads(Path(params).read_text()) if isinstance(params, (str, Path)) else params
    try:
        epochs, n = int(payload["epochs_run"]), len(payload["parameters"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{params}: not an optimiser params.json (needs epochs_run and parameters)") from None
    return max(1, epochs * (1 + n))


@in_float64
def scan(config: Config, chunks, out, *, budget: int, methods: Sequence[str] | None = None,
         progress: bool | None = None, reuse_for=None) -> dict:
    """Run each of ``methods`` (default ``scan.methods``) with ``budget`` evaluations on ``chunks``.
    ``reuse_for``: the optimiser's ``params.json`` this scan stands beside; a finished scan made for the
    same optimiser run (its config hash) with the same settings and budget is reused."""
    methods = list(config.scan.methods if methods is None else methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise UserError(f"scan.methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if budget < 1:
        raise UserError(f"scan: the budget must be at least 1 evaluation (got {budget})")
    out = Path(out)
    key = _key(config, methods, budget, reuse_for)
    with atomic.exclusive(out) as locked:
        if locked:
            atomic.remove_leftovers(out, names=OUTPUTS)
        earlier = atomic.read_json(out / "scan.json")
        if key is not None and earlier is not None and earlier.get("key") == key:
            terminal.say(f"scan: reused {out / 'scan.json'} (the same optimiser run, settings and budget)")
            return earlier
        atomic.set_aside(out, OUTPUTS)
        return _scan(config, chunks, out, budget=budget, methods=methods, progress=progress, key=key)


def _key(config: Config, methods: list[str], budget: int, params) -> str | None:
    if params is None:
        return None
    try:
        optimiser = json.loads(Path(params).read_text())["config_hash"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return None
    settings = {"optimiser": optimiser, "methods": methods, "budget": budget,
                "scan": config.scan.model_dump(mode="json", exclude={"methods", "budget"})}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _scan(config: Config, chunks, out: Path, *, budget: int, methods: list[str], progress: bool | None,
          key: str | None) -> dict:
    objective = HardObjective(config, chunks)
    space = [Dimension(p.name, float(p.bounds[0]), float(p.bounds[1]), float(p.init))
             for p in objective.parameters.values()]
    bar = terminal.bar(budget * len(methods), "scan", "eval", progress=progress)
    summary: dict = {"objective": objective.kind, "budget": budget, "selected_on": SELECTION, "key": key,
                     "parameters": [d.name for d in space], "methods": {}}
    for method in methods:
        start = time.perf_counter()

        def evaluate(thetas: list[dict]) -> list[float]:
            values = objective(thetas)
            bar.update(len(values))
            finite = [v for v in values if math.isfinite(v)]
            if finite:
                bar.set_postfix_str(f"{method} best so far {max(best_so_far + finite):.3f}")
                best_so_far.extend(finite)
            return values

        best_so_far: list[float] = []
        trials = SEARCHES[method](space, budget, config.scan.batch, evaluate, config.scan.seed)
        best = max(range(len(trials)), key=lambda i: (trials[i]["value"], -i))  # ties: the earliest
        params = params_payload(method, objective.kind, space, trials, best)
        (out / method).mkdir(parents=True, exist_ok=True)
        atomic.write_json(out / method / "trials.json", {"method": method, "trials": trials})
        atomic.write_json(out / method / "params.json", params)
        summary["methods"][method] = {"evaluations": len(trials), "best_trial": best,
                                      "value_train": trials[best]["value"], "value_reference": trials[0]["value"],
                                      "theta": trials[best]["theta"], "params": f"{method}/params.json",
                                      "wall_time_s": time.perf_counter() - start}
    bar.close()
    atomic.write_json(out / "scan.json", summary)  # the completion marker, last
    return summary


def params_payload(method: str, kind: str, space: Sequence[Dimension], trials: list[dict], best: int) -> dict:
    theta: Mapping[str, float] = trials[best]["theta"]
    return {"method": f"scan:{method}", "objective": kind, "evaluations": len(trials), "selected_on": SELECTION,
            "value_train": trials[best]["value"],
            "parameters": [{"name": d.name, "value": float(theta[d.name]), "init": d.init,
                            "bounds": [d.low, d.high]} for d in space]}
