"""The optimiser in one process: statistical model, soft→hard limit, gradients vs one value_and_grad,
the loop's guard/projection/plateau, no recompilation, and --resume after a SIGKILLed driver (CLI)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from zprime_grad.optimise import contribution, loop
from zprime_grad.chunks import LocalChunks
from zprime_grad.config import override
from zprime_grad.optimise.driver import Evaluator, build_problem, optimise
from zprime_grad.model import build_spec
from zprime_grad.optimise.reference import hold_everything, reference_evaluation
from zprime_grad.stats import Model

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 4
THETA_OFF = np.array([0.05, -10.0, 5.0, 20.0, 0.05])  # away from θ₀, inside the bounds


def skim_columns(generated, tmp_path_factory) -> Path:
    """The generated dataset skimmed once per test session into small chunks (shared by the pytest
    processes; skim_to_directory reuses a finished one)."""
    from tests.conftest import shared_directory
    from zprime_grad.skim.pipeline import skim_options, skim_to_directory

    with shared_directory(tmp_path_factory, "optimise_skim") as out:
        skim_to_directory(generated.config, generated.fileset, out,
                          skim_options(generated.config, executor="iterative", chunksize=200))
    return out


@pytest.fixture(scope="module")
def columns(generated, tmp_path_factory) -> Path:
    return skim_columns(generated, tmp_path_factory)


@pytest.fixture(scope="module")
def config(generated):
    data = generated.config.model_dump(mode="json", exclude={"source"})
    data["optimise"]["relaxation"]["anneal_epochs"] = EPOCHS  # every epoch a new relaxation: traced, no recompile
    return type(generated.config).model_validate({**data, "source": "tests/test_optimise.py"})


@pytest.fixture(scope="module")
def local(config, columns):
    chunks = LocalChunks.from_directory(columns, fan_in=config.optimise.fan_in)
    yield chunks, build_problem(config, chunks)
    chunks.close()


@pytest.fixture(scope="module")
def local_run(config, columns, tmp_path_factory):
    """An undisturbed local optimisation, recording the kernel traces after every epoch."""
    out = tmp_path_factory.mktemp("local_run")
    traces = []
    result = optimise(override(config, optimise={"epochs": EPOCHS}), LocalChunks.from_directory(columns), out,
                      progress=False, on_epoch=lambda s: traces.append(dict(contribution.TRACES)))
    return out, result, traces


# ------------------------------------------------------------------------------------------- model
def test_model_is_a_valid_pyhf_workspace_with_the_declared_modifiers(local):
    backend, problem = local
    layout = problem.layout
    assert layout.processes == ("single_top", "ttbar", "wjets", "zprime")
    assert layout.channel_names == ("signal", "ttbar_cr", "wjets_cr") and layout.n_bins == 10
    assert set(layout.systematics()) == {"btag_sf", "muon_sf", "pileup", "jes", "jer"}
    H = Evaluator(backend, problem).histograms(problem.theta0, (10.0, 0.3))["train"]
    spec = build_spec(layout, problem.settings, H)
    Model.from_pyhf(spec)  # validates against pyhf's own schema
    import pyhf

    pyhf.Workspace(spec).model()  # and pyhf builds it
    signal_region = {s["name"]: s for s in spec["channels"][0]["samples"]}
    mods = {name: {(m["name"], m["type"]) for m in s["modifiers"]} for name, s in signal_region.items()}
    assert ("mu", "normfactor") in mods["zprime"] and all(("mu", "normfactor") not in mods[p] for p in ("ttbar", "wjets"))
    assert ("norm_ttbar", "normfactor") in mods["ttbar"] and ("norm_wjets", "normfactor") in mods["wjets"]
    st = {m["name"]: m for m in signal_region["single_top"]["modifiers"]}
    assert st["xsec_single_top"]["data"] == {"hi": 1.15, "lo": 0.85}
    assert st["lumi"]["data"]["hi"] == pytest.approx(1.025)
    for p in layout.processes:
        assert {("jes", "histosys"), ("jer", "histosys"), ("btag_sf", "histosys"), ("muon_sf", "histosys"),
                ("staterror_signal", "staterror")} <= mods[p]
    z = {m["name"]: m for m in signal_region["zprime"]["modifiers"]}
    sumw2 = H[layout.process_index("zprime"), 0, layout.templates.index("sumw2")]
    assert np.allclose(z["staterror_signal"]["data"], np.sqrt(sumw2))


def test_soft_templates_tend_to_the_hard_selection(local):
    """Steep sigmoids and a narrow kernel: per channel, train + validation = 2 × the hard-cut yield."""
    backend, problem = local
    layout = problem.layout
    H = Evaluator(backend, problem).histograms(problem.theta0, (1e5, 1e-4))
    theta = dict(zip(layout.param_names, problem.theta0))
    for p, process in enumerate(layout.processes):
        for c, channel in enumerate(layout.channels):
            hard = sum(float(chunk.weights["nominal"][channel.hard_mask(chunk.columns, theta)].sum())
                       for chunk in backend.chunks if chunk.process == process)
            soft = (H["train"][p, c, 0].sum() + H["valid"][p, c, 0].sum()) / 2
            assert soft == pytest.approx(hard, rel=1e-3, abs=1e-6), (process, channel.name)
    assert H["train"][:, :, 0].sum() > 0 and H["valid"][:, :, 0].sum() > 0


# --------------------------------------------------------------------------------------- gradients
@pytest.fixture(scope="module")
def local64(config, local):
    """The same chunks with the kernel in float64: the exactness claims are made there."""
    backend, _ = local
    return backend, build_problem(override(config, optimise={"precision": "float64"}), backend)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_chunked_gradient_equals_one_value_and_grad_over_all_events(local64, mode):
    """float64: the reduction of per-chunk contributions is the single-process function, to rounding."""
    import dataclasses

    backend, problem = local64
    problem = dataclasses.replace(problem, mode=mode)
    theta, relax = problem.theta0 + THETA_OFF, (12.0, 0.25)
    ev = Evaluator(backend, problem)(theta, relax)
    value, grad, valid = reference_evaluation(hold_everything(backend.chunks, problem.layout), theta, relax,
                                              problem.objective)
    assert value > 0 and np.linalg.norm(grad) > 0
    assert ev.value == pytest.approx(value, rel=1e-9) and ev.valid == pytest.approx(valid, rel=1e-9)
    assert np.allclose(ev.grad, grad, rtol=1e-6, atol=1e-6 * np.abs(grad).max())


# float32 per-event arithmetic: θ, the columns and each event's kernel mass are rounded to float32 (relative
# 6e-8) and a chunk's sums over events are float32 GEMMs (~3e-7 relative over 65536 events) before the
# float64 reduction. The objective is a smooth function of the templates, so Z moves by the same relative
# amount (bound: 1e-5); its gradient, a difference of such sums (∂soft/∂θ is large only near the
# thresholds), to 1e-4 of the largest component.
F32_VALUE_RTOL, F32_GRAD_RTOL = 1e-5, 1e-4


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_float32_kernel_gives_the_float64_reference_within_its_precision(local, local64, mode):
    import dataclasses

    backend, problem = local
    assert problem.layout.precision == "float32"  # the default
    problem = dataclasses.replace(problem, mode=mode)
    theta, relax = problem.theta0 + THETA_OFF, (12.0, 0.25)
    ev = Evaluator(backend, problem)(theta, relax)
    _, problem64 = local64
    value, grad, valid = reference_evaluation(hold_everything(backend.chunks, problem64.layout), theta, relax,
                                              problem64.objective)
    assert ev.value == pytest.approx(value, rel=F32_VALUE_RTOL) and ev.valid == pytest.approx(valid, rel=F32_VALUE_RTOL)
    assert np.allclose(ev.grad, grad, rtol=0, atol=F32_GRAD_RTOL * np.abs(grad).max())
    assert ev.value != value  # the float32 kernel really ran


def test_the_written_out_forward_kernel_is_jacfwd_of_the_templates(local, precision="float64", rtol=1e-12):
    """`forward.templates_and_jacobian` (linearity in the soft weight, per-cut derivatives) gives the
    numbers of ``jax.jacfwd`` of `contribution.histograms`, chunk by chunk."""
    import dataclasses

    import jax

    from zprime_grad.optimise.forward import templates_and_jacobian

    backend, problem = local
    layout = dataclasses.replace(problem.layout, precision=precision)
    theta, relax = contribution._args(problem.theta0 + THETA_OFF, (12.0, 0.25))
    largest = np.zeros(3)
    with jax.enable_x64(True):
        for chunk in backend.chunks[:3]:
            inputs = contribution.kernel_inputs(chunk, layout)
            want = contribution._jacfwd(inputs, theta, relax, layout)
            got = templates_and_jacobian(inputs, theta, relax, layout)
            for k, (g, w) in enumerate(zip(got, want)):
                g, w = np.asarray(g), np.asarray(w)
                assert g.shape == w.shape
                largest[k] = max(largest[k], np.abs(w).max())
                assert np.allclose(g, w, rtol=0, atol=rtol * np.abs(w).max())
    assert np.all(largest > 0)  # train, Jacobian and validation templates were compared on real yields


def test_gradient_matches_finite_differences(local64):
    backend, problem = local64
    evaluate = Evaluator(backend, problem)
    theta, relax = problem.theta0 + THETA_OFF, (12.0, 0.25)
    grad = evaluate(theta, relax).grad
    i = int(np.argmax(np.abs(grad)))
    h = 1e-4 * max(abs(theta[i]), 1.0)
    up, down = theta.copy(), theta.copy()
    up[i] += h
    down[i] -= h
    fd = (evaluate(up, relax).value - evaluate(down, relax).value) / (2 * h)
    assert fd == pytest.approx(grad[i], rel=1e-4)


# ------------------------------------------------------------------------------------------- loop
def test_local_run_outputs_and_no_recompilation_after_the_first_epoch(local_run):
    out, result, traces = local_run
    history = json.loads((out / "optimisation.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == list(range(EPOCHS))
    slopes = [e["slope"] for e in history["epochs"]]
    assert len(set(slopes)) == EPOCHS  # the relaxation changed every epoch …
    assert traces[0] and all(t == traces[0] for t in traces)  # … and nothing was traced again
    first = history["epochs"][0]
    assert {"z_train", "z_valid", "grad", "theta", "wall_s"} <= set(first) and len(first["grad"]) == 5
    assert history["epochs"][-1]["z_train"] > first["z_train"]  # it optimises
    params = json.loads((out / "params.json").read_text())
    assert [p["name"] for p in params["parameters"]] == history["parameters"]
    units = {p["name"]: p["unit"] for p in params["parameters"]}
    assert units["met_threshold"] == "GeV" and units["btag_threshold"] == ""
    for p in params["parameters"]:
        assert p["bounds"][0] <= p["value"] <= p["bounds"][1]
    assert "NaN" not in (out / "optimisation.json").read_text()
    assert json.loads((out / "workspace.json").read_text())["measurements"][0]["config"]["poi"] == "mu"


def _toy_loop(evaluate, theta0, lr, lower, upper, epochs, **settings):
    opt = loop.make_optimiser([1.0] * len(theta0), [lr] * len(theta0))
    s = loop.LoopSettings(lower=np.asarray(lower, float), upper=np.asarray(upper, float), **settings)
    sched = loop.relaxation_schedule((1.0, 1.0), (1.0, 1.0), 0)
    return loop.run(loop.init_state(np.asarray(theta0, float), opt), evaluate, opt, s, sched, epochs)


def test_nan_guard_rejects_the_step_shrinks_the_rate_and_stores_no_nan():
    def evaluate(theta, relax):  # maximise -(θ-3)², undefined beyond θ = 1.2
        if theta[0] > 1.2:
            return loop.Evaluation(math.nan, np.array([math.nan]), math.nan)
        return loop.Evaluation(-(theta[0] - 3.0) ** 2, np.array([-2 * (theta[0] - 3.0)]), 0.0)

    state = _toy_loop(evaluate, [0.0], 0.5, [-10], [10], 12)
    rejected = [e for e in state.history if e["rejected"]]
    assert rejected and all(e["z_train"] is None and e["grad"] is None for e in rejected)
    assert loop.lr_factor(state.opt_state) < 1.0
    assert all(math.isfinite(t) for e in state.history for t in e["theta"][:1])
    assert state.theta[0] <= 1.2 + 0.5  # it came back every time


def test_bounds_projection_and_plateau_stop():
    def evaluate(theta, relax):  # increasing without bound: θ must stop at the upper bound, then plateau
        return loop.Evaluation(float(min(theta[0], 2.0)), np.array([1.0]), 0.0)

    state = _toy_loop(evaluate, [0.0], 0.7, [-1.0], [2.0], 100, patience=3)
    assert state.theta[0] == 2.0 and state.stopped and "plateau" in state.stopped
    assert len(state.history) < 100


# ------------------------------------------------------------------------------------ driver kill
def test_resume_after_the_driver_is_killed_gives_the_same_final_theta(config, columns, local_run, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude={"source"})))
    out = tmp_path / "run"
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    cmd = [sys.executable, "-m", "zprime_grad.cli", "optimise", str(cfg), "--columns", str(columns),
           "--backend", "local", "--epochs", str(EPOCHS), "--out", str(out)]
    killed = subprocess.run([*cmd, "--kill-after-epoch", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "params.json").exists()
    assert len(json.loads((out / "optimisation.json").read_text())["epochs"]) == 2
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    undisturbed_out, undisturbed, _ = local_run
    params = json.loads((out / "params.json").read_text())
    assert np.allclose([p["value"] for p in params["parameters"]],
                       [p["value"] for p in undisturbed["parameters"]], rtol=1e-9, atol=0)
    got = json.loads((out / "optimisation.json").read_text())["epochs"]
    want = json.loads((undisturbed_out / "optimisation.json").read_text())["epochs"]
    assert [e["epoch"] for e in got] == list(range(EPOCHS))
    assert np.allclose([e["z_train"] for e in got], [e["z_train"] for e in want], rtol=1e-9)
    # a checkpoint from another configuration is refused, naming the file
    other = config.model_dump(mode="json", exclude={"source"})
    other["optimise"]["learning_rate"] = 0.01
    cfg.write_text(yaml.safe_dump(other))
    refused = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "checkpoint.pkl" in refused.stderr


def test_auto_resume_continues_a_matching_checkpoint_and_restarts_after_a_config_change(config, columns, local_run,
                                                                                       tmp_path):
    """``resume="auto"`` (what ``zprime-grad run`` uses): reuse a finished run, never a stale one."""
    import shutil

    undisturbed_out, undisturbed, _ = local_run
    out = tmp_path / "copy"
    shutil.copytree(undisturbed_out, out)
    chunks = LocalChunks.from_directory(columns)
    again = optimise(override(config, optimise={"epochs": EPOCHS}), chunks, out, resume="auto", progress=False)
    assert again["epochs_run"] == EPOCHS  # continued from the checkpoint: nothing left to do, same result
    assert [p["value"] for p in again["parameters"]] == [p["value"] for p in undisturbed["parameters"]]
    other = config.model_dump(mode="json", exclude={"source"})
    other["optimise"]["learning_rate"] = 0.01
    changed = type(config).model_validate({**other, "source": "changed"})
    fresh = optimise(override(changed, optimise={"epochs": 2}), chunks, out, resume="auto", progress=False)
    history = json.loads((out / "optimisation.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [0, 1]  # started afresh from θ₀, not from the stale state
    assert fresh["epochs_run"] == 2
    assert history[0]["theta"] == json.loads((undisturbed_out / "optimisation.json").read_text())["epochs"][0]["theta"]


def test_start_values_replace_the_declared_start_and_name_unknown_parameters(config, columns):
    from zprime_grad.errors import UserError

    backend = LocalChunks.from_directory(columns)
    declared = build_problem(config, backend)
    started = build_problem(config, backend, start_values={"top_pt_threshold": 800.0})
    i = declared.layout.param_names.index("top_pt_threshold")
    assert declared.theta0[i] == 500.0 and started.theta0[i] == 800.0
    assert np.array_equal(np.delete(declared.theta0, i), np.delete(started.theta0, i))
    assert started.config_hash != declared.config_hash  # a checkpoint of one never resumes the other
    with pytest.raises(UserError, match="top_pt_thresold"):
        build_problem(config, backend, start_values={"top_pt_thresold": 800.0})
