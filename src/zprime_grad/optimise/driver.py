"""The optimisation driver: backend + layout + model + loop, checkpoints and output files.

One epoch in ``forward`` mode is one round on the cluster (Σ h_c, Σ ∂h_c/∂θ, Σ h_c of the validation
half); in ``reverse`` mode two (Σ h_c; then Σ VJP_c with the cotangent ∂f/∂H the driver computed).
``auto`` picks forward for up to ``optimise.forward_max_params`` parameters. The driver only ever holds θ,
the optimiser state, and arrays shaped by the layout (checked on every reduction).

Outputs in ``OUT/``: ``optimisation.json`` (per epoch: Z train/validation, gradient, θ, relaxation, wall
time; rewritten each epoch), ``params.json`` (final θ with names, units, bounds, the run's config hash),
``workspace.json`` (the pyhf workspace of the final soft templates), ``checkpoint.pkl`` (see
``checkpoint``). ``params.json`` is the completion marker, written last. One run per ``OUT`` at a time
(`atomic.exclusive`); a run first removes what a killed one left there, a fresh run sets the earlier
run's outputs aside before it writes anything, and a resumed one its final outputs (``params.json``
first): a run killed at any point leaves no ``params.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from zprime_grad import atomic, terminal
from zprime_grad.config import Config
from zprime_grad.errors import UserError
from zprime_grad.jaxconfig import in_float64
from zprime_grad.optimise import checkpoint
from zprime_grad.optimise.contribution import Relaxation, forward_part, primal_part, vjp_part
from zprime_grad.optimise.layout import Layout, make_layout, parameter_table, parameter_units
from zprime_grad.optimise.loop import (Evaluation, LoopSettings, LoopState, init_state, make_optimiser,
                                       relaxation_schedule, run)
from zprime_grad.model import ModelSettings, build_spec
from zprime_grad.objective import Objective, chain_rule
from zprime_grad.soft import kde_window

log = logging.getLogger(__name__)
RUN_FIELDS_EXCLUDED = {"epochs", "backend", "fan_in"}  # do not change results


def _processor_channels(config: Config):
    from zprime_grad.skim.pipeline import make_processor

    return make_processor(config).channels


@dataclass
class Problem:
    """Everything fixed for one optimisation run."""

    layout: Layout
    settings: ModelSettings
    objective: Objective
    mode: str
    schedule: Callable[[int], Relaxation]
    loop: LoopSettings
    optimiser: object
    theta0: np.ndarray
    config_hash: str
    networks: dict | None = None  # {name: (NetworkSpec, starting weights)} of the attached networks


def build_layout(config: Config, descriptions: list[dict], specs: dict | None = None) -> Layout:
    """``specs``: ``{name: NetworkSpec}`` of the ``optimise.networks`` to attach as score cuts."""
    opt = config.optimise
    window = None
    if opt.kde_method == "local":
        width = (opt.range[1] - opt.range[0]) / opt.bins
        window = kde_window(np.linspace(*opt.range, opt.bins + 1),
                            max(opt.relaxation.bandwidth_start, opt.relaxation.bandwidth_end) * width)
    channels = _processor_channels(config)
    if opt.networks:
        from zprime_grad.learn.attach import attach

        channels = attach(channels, config, specs or {})
    return make_layout(descriptions, channels, observable=opt.observable, bins=opt.bins,
                       value_range=tuple(opt.range), kde_method=opt.kde_method, kde_window=window,
                       precision=opt.precision)


def gradient_mode(requested: str, n_params: int, forward_max: int) -> str:
    if requested == "auto":
        return "forward" if n_params <= forward_max else "reverse"
    if requested not in ("forward", "reverse"):
        raise UserError(f"optimise.gradient: '{requested}' is not auto, forward or reverse")
    return requested


def run_hash(config: Config, descriptions: list[dict], networks: str | None = None) -> str:
    """What a checkpoint is valid for: the analysis, the result-relevant optimise fields, the chunks
    (and the starting weights of attached networks)."""
    chunks = sorted((tuple(d["key"]), d["n_events"], d["process"]) for d in descriptions)
    excluded = RUN_FIELDS_EXCLUDED | ({"networks"} if not config.optimise.networks else set())
    payload = {"analysis": config.analysis.model_dump(mode="json"),
               "optimise": config.optimise.model_dump(mode="json", exclude=excluded),
               "chunks": chunks}
    if networks is not None:
        payload["networks"] = networks
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@in_float64
def build_problem(config: Config, backend, gradient: str | None = None, networks=None,
                  start_values: dict[str, float] | None = None) -> Problem:
    """``networks``: ``{name: file or (spec, params)}`` for ``optimise.networks`` (default: ``init_from``);
    ``start_values``: starting values by parameter name instead of the declared ones (e.g. another run's θ*)."""
    opt = config.optimise
    descriptions = backend.descriptions()
    loaded = None
    if opt.networks:
        from zprime_grad.learn.attach import load_networks

        loaded = load_networks(config, networks)
    layout = build_layout(config, descriptions, {k: v[0] for k, v in (loaded or {}).items()})
    settings = ModelSettings.from_config(config)
    params = parameter_table(layout)
    unknown = sorted(set(opt.learning_rates) - set(layout.param_names))
    if unknown:
        raise UserError(f"optimise.learning_rates: unknown parameters {unknown} (have {list(layout.param_names)})")
    rel = opt.relaxation
    schedule = relaxation_schedule((rel.slope_start, rel.slope_end), (rel.bandwidth_start, rel.bandwidth_end),
                                   rel.anneal_epochs)
    unknown = sorted(set(start_values or {}) - set(layout.param_names))
    if unknown:
        raise UserError(f"optimise: start values for unknown parameters {unknown} (have {list(layout.param_names)})")
    theta0 = np.array([(start_values or {}).get(p.name, p.init) for p in params], float)
    rates = [opt.learning_rates.get(p.name, opt.learning_rate) for p in params]
    for name, where in layout.network_slices().items():
        from zprime_grad.learn.mlp import ravel

        theta0[where] = ravel(loaded[name][1])
        rates[where] = [opt.networks[name].learning_rate] * (where.stop - where.start)
    mode = gradient_mode(gradient or opt.gradient, len(params), opt.forward_max_params)
    start = backend.map_reduce(first_round(mode), layout=layout, theta=theta0, relax=tuple(schedule(0)))
    check_reduced(start, layout)
    objective = Objective(opt.objective, layout, settings, start["train"])
    optimiser = make_optimiser([p.scale for p in params], rates)
    loop = LoopSettings(lower=np.array([p.bounds[0] for p in params], float),
                        upper=np.array([p.bounds[1] for p in params], float), patience=opt.patience,
                        min_delta=opt.min_delta, lr_shrink=opt.lr_shrink, max_rejections=opt.max_rejections,
                        anneal_epochs=rel.anneal_epochs)
    digest = None
    if loaded:
        from zprime_grad.learn.attach import digest as network_digest

        digest = network_digest(loaded)
    if start_values:
        digest = json.dumps([digest, sorted(start_values.items())])  # another start is another run
    return Problem(layout, settings, objective, mode, schedule, loop, optimiser, theta0,
                   run_hash(config, descriptions, digest), loaded)


def first_round(mode: str):
    """The kernel of an epoch's first round: forward mode's also serves primal-only evaluations
    (one compilation per bucket instead of two)."""
    return forward_part if mode == "forward" else primal_part


def check_reduced(result: dict, layout: Layout) -> None:
    """The invariant: what reaches the driver is shaped by the layout, never by the events."""
    base = layout.shape
    allowed = {"train": base, "valid": base, "jac": (*base, len(layout.param_names)), "grad": (len(layout.param_names),)}
    for key, value in result.items():
        if not isinstance(value, np.ndarray) or value.shape != allowed.get(key):
            raise RuntimeError(f"reduction returned {key} of type {type(value).__name__} "
                               f"shape {getattr(value, 'shape', None)}; expected {allowed.get(key)}")


class Evaluator:
    """θ, relaxation → `Evaluation` (objective and exact gradient on the even events, objective on the odd)."""

    def __init__(self, backend, problem: Problem):
        self.backend, self.problem = backend, problem

    def reduce(self, func, **kwargs) -> dict:
        result = self.backend.map_reduce(func, layout=self.problem.layout, **kwargs)
        check_reduced(result, self.problem.layout)
        return result

    @in_float64
    def __call__(self, theta: np.ndarray, relax: Relaxation) -> Evaluation:
        objective, relax = self.problem.objective, tuple(float(v) for v in relax)
        if self.problem.mode == "forward":
            r = self.reduce(forward_part, theta=theta, relax=relax)
            value, dfdH = objective.value_and_grad(r["train"])
            grad = chain_rule(dfdH, r["jac"])
        else:
            r = self.reduce(primal_part, theta=theta, relax=relax)
            value, dfdH = objective.value_and_grad(r["train"])
            grad = self.reduce(vjp_part, theta=theta, relax=relax, cotangent=dfdH)["grad"]
        return Evaluation(value, grad, objective.value(r["valid"]))

    @in_float64
    def histograms(self, theta: np.ndarray, relax: Relaxation) -> dict:
        """Reduced histograms (train, valid) at θ, with the first-round kernel of the mode."""
        return self.reduce(first_round(self.problem.mode), theta=theta, relax=tuple(float(v) for v in relax))


# -------------------------------------------------------------------------------------------- outputs
def _cut_entries(problem: Problem, history: list[dict]) -> list[dict]:
    """Per-epoch entries with θ and ∇ of the cut thresholds only; the networks' part as a gradient norm."""
    layout = problem.layout
    k = layout.n_cut_params
    if not layout.networks:
        return history
    out = []
    for e in history:
        e = dict(e)
        grad = e.get("grad")
        e["theta"] = e["theta"][:k]
        if grad is not None:
            e["grad"] = grad[:k]
            e["grad_norm_networks"] = {n: float(np.linalg.norm(grad[s])) for n, s in layout.network_slices().items()}
        out.append(e)
    return out


def history_payload(problem: Problem, state: LoopState, backend) -> dict:
    k = problem.layout.n_cut_params
    return {"objective": problem.objective.kind, "gradient_mode": problem.mode, "backend": backend.name,
            "config_hash": problem.config_hash, "parameters": list(problem.layout.param_names[:k]),
            "networks": {net.name: net.n_params for net in problem.layout.networks},
            "processes": list(problem.layout.processes), "channels": list(problem.layout.channel_names),
            "templates": list(problem.layout.templates), "edges": list(problem.layout.edges),
            "stopped": state.stopped, "best_epoch": state.best_epoch, "epochs": _cut_entries(problem, state.history)}


FINAL_OUTPUTS = ("params.json", "workspace.json", "networks")  # written when a run ends; the marker first
RUN_OUTPUTS = (*FINAL_OUTPUTS, "optimisation.json", checkpoint.FILENAME)


def start_outputs(out: Path, *, resumed: bool) -> list[str]:
    """Before a run writes anything: a fresh one sets every output of an earlier run aside (so its
    history never sits beside another run's ``params.json``), a resumed one the final outputs (its
    history and checkpoint continue). Returns what was set aside."""
    return atomic.set_aside(out, FINAL_OUTPUTS if resumed else RUN_OUTPUTS)


def params_payload(problem: Problem, state: LoopState, final: dict) -> dict:
    units = parameter_units(problem.layout)
    k = problem.layout.n_cut_params
    table = parameter_table(problem.layout)[:k]
    payload = {"objective": problem.objective.kind, "config_hash": problem.config_hash,
               "epochs_run": state.epoch, "stopped": state.stopped,
               **final,
               "parameters": [{"name": p.name, "value": float(v), "init": p.init, "unit": units.get(p.name, ""),
                               "bounds": list(p.bounds), "scale": p.scale} for p, v in zip(table, state.theta)],
               "best": {"epoch": state.best_epoch, "z_train": state.best_value,
                        "theta": None if state.best_theta is None else dict(zip(problem.layout.param_names[:k],
                                                                                map(float, state.best_theta)))}}
    if problem.layout.networks:
        payload["networks"] = {net.name: {"file": f"networks/{net.name}.npz", "n_params": net.n_params}
                               for net in problem.layout.networks}
    return payload


def save_networks(out: Path, problem: Problem, theta: np.ndarray) -> None:
    """``OUT/networks/<name>.npz``: the weights at θ (the format of ``zprime_grad.learn.io``)."""
    from zprime_grad.learn import io

    for net in problem.layout.networks:
        where = problem.layout.network_slices()[net.name]
        io.save(out / "networks" / f"{net.name}.npz", net, net.unravel(np.asarray(theta, float)[where]),
                meta={"source": "zprime-grad optimise", "config_hash": problem.config_hash})


@dataclass(frozen=True)
class Start:
    """Where a run starts when not from the config's declared values (the learned-observable stages)."""

    values: dict[str, float] | None = None  # by parameter name, e.g. another run's θ*
    networks: dict | None = None  # {name: network file or (spec, params)}; default: each model's init_from
    label: str = ""  # names the run on its progress bar (``zprime-grad run`` has several)


@in_float64
def optimise(config: Config, chunks, out, *, start: Start | None = None, resume: bool | str = False,
             progress: bool | None = None, on_epoch: Callable[[LoopState], None] | None = None) -> dict:
    """Run (or resume) the optimisation on ``chunks`` (`zprime_grad.chunks`); returns the ``params.json``
    payload. Epochs, gradient mode and every setting come from ``config.optimise``.

    ``resume``: True continues from ``out``'s checkpoint (an error if there is none or it belongs to
    another config); ``"auto"`` continues from it only if it matches this config and these chunks,
    and otherwise starts afresh (what ``zprime-grad run`` does after a config change).
    ``on_epoch``: called after every epoch (after ``optimisation.json`` is rewritten) with the loop state.
    The optimised network weights (``optimise.networks``) are written to ``OUT/networks/<name>.npz``.
    """
    out = Path(out)
    with atomic.exclusive(out) as locked:
        if locked:
            atomic.remove_leftovers(out, names=RUN_OUTPUTS)
        return _optimise(config, chunks, out, start=start or Start(), resume=resume, progress=progress,
                         on_epoch=on_epoch)


def _optimise(config: Config, chunks, out: Path, *, start: Start, resume: bool | str, progress: bool | None,
              on_epoch: Callable[[LoopState], None] | None) -> dict:
    epochs = config.optimise.epochs
    problem = build_problem(config, chunks, networks=start.networks, start_values=start.values)
    if resume == "auto":
        resume = checkpoint.compatible(out, problem.config_hash)
    state = checkpoint.load(out, problem.config_hash) if resume else init_state(problem.theta0, problem.optimiser)
    start_outputs(out, resumed=bool(resume))
    evaluator = Evaluator(chunks, problem)
    bar = terminal.bar(epochs, f"optimise{' ' + start.label if start.label else ''}", "epoch", progress=progress,
                       initial=state.epoch)

    def after_epoch(s: LoopState) -> None:
        checkpoint.save(out, s, problem.config_hash)
        atomic.write_json(out / "optimisation.json", history_payload(problem, s, chunks))
        last = s.history[-1]
        bar.update(1)
        bar.set_postfix_str("rejected" if last["rejected"] else f"Z0={last['z_train']:.4f} "
                            f"val={last['z_valid']:.4f} |grad|={last['grad_norm']:.3g}")
        if on_epoch is not None:
            on_epoch(s)

    log.info("optimise: %d parameters, %s mode, %s backend, layout %s, from epoch %d", len(problem.theta0),
             problem.mode, chunks.name, problem.layout.shape, state.epoch)
    state = run(state, evaluator, problem.optimiser, problem.loop, problem.schedule, epochs, after_epoch)
    bar.close()
    if state.stopped:
        log.info("optimise: stopped early: %s", state.stopped)
    final_relax = problem.schedule(max(state.epoch - 1, 0))
    H = evaluator.histograms(state.theta, final_relax)
    final = {"z_train_final": problem.objective.value(H["train"]), "z_valid_final": problem.objective.value(H["valid"]),
             "relaxation_final": dict(final_relax._asdict())}
    atomic.write_json(out / "workspace.json", build_spec(problem.layout, problem.settings, H["train"]))
    save_networks(out, problem, state.theta)
    atomic.write_json(out / "optimisation.json", history_payload(problem, state, chunks))
    payload = params_payload(problem, state, final)
    atomic.write_json(out / "params.json", payload)
    return payload
