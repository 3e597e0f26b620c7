"""Learned observables (zprime_grad.learn): the network file round trip, missing features, pre-training on
the chunks, the exact reverse-mode gradient with a network in θ, local == Dask, resume, and the
hard-cut validation with the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.optimise.test_optimise import skim_columns
from zprime_grad.columns import ColumnChunk, make_chunk
from zprime_grad.config import parse_config
from zprime_grad.errors import UserError
from zprime_grad.learn import io
from zprime_grad.learn.mlp import NetworkSpec, init_params, ravel, score_numpy
from zprime_grad.learn.train import loss_part, train_models
from zprime_grad.chunks import DaskChunks, LocalChunks
from zprime_grad.config import override
from zprime_grad.optimise.driver import Evaluator, Start, build_problem, optimise
from zprime_grad.optimise.reference import hold_everything, reference_evaluation
from zprime_grad.selection import Channel, ScoreCut

FEATURES = ["met_pt", "lep_ht", "st", "mtt", "n_jets", "jet_btag[0]", "jet_btag[1]", "fatjet_top_score[0]",
            "fatjet_msoftdrop[0]", "fatjet_pt[0]"]
REPO = Path(__file__).resolve().parents[2]
HIDDEN = [24, 16]  # 10 -> 24 -> 16 -> 1: 681 weights


def with_network(config, features=FEATURES, *, epochs=120, learning_rate=1e-3):
    data = config.model_dump(mode="json", exclude={"source"})
    data["models"] = {"nn": {"features": list(features), "hidden": HIDDEN,
                             "train": {"epochs": epochs, "learning_rate": 0.02, "patience": 20}}}
    data["optimise"]["networks"] = {"nn": {"channels": ["signal"], "learning_rate": learning_rate, "threshold": 0.4}}
    data["optimise"]["relaxation"]["anneal_epochs"] = 3
    return parse_config(data, "tests/test_learn.py")


@pytest.fixture(scope="module")
def columns(generated, tmp_path_factory):
    return skim_columns(generated, tmp_path_factory)


@pytest.fixture(scope="module")
def config(generated):
    return with_network(generated.config)


@pytest.fixture(scope="module")
def trained(config, columns, tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    with LocalChunks.from_directory(columns) as chunks:
        paths = train_models(config, chunks, out, progress=False)
    return paths["nn"], json.loads((out / "train.json").read_text())["models"]["nn"]


@pytest.fixture(scope="module")
def local(columns):
    with LocalChunks.from_directory(columns) as chunks:
        yield chunks


def synthetic_chunk(n=300, seed=1) -> ColumnChunk:
    rng = np.random.default_rng(seed)
    cols = {"baseline": np.ones(n), "parity": rng.integers(0, 2, n), "met_pt": rng.exponential(80, n),
            "jet_btag": rng.random((n, 8)), "mtt": rng.uniform(300, 3000, n)}
    return make_chunk(cols, {"nominal": rng.random(n)}, {}, {"event": np.arange(n)}, dataset="toy", process="toy")


# ---------------------------------------------------------------------------------- the config
def test_the_network_config_extends_the_default_and_checks_its_references(tmp_path):
    from zprime_grad.config import ConfigError, load_config
    from zprime_grad.stages.learned import cuts_only, fine_tuning, frozen

    default, nn = load_config(), load_config(REPO / "configs" / "zprime_nn.yaml")
    assert nn.generate == default.generate and nn.skim == default.skim  # same data, same skim
    assert list(nn.optimise.networks) == ["zprime_nn"] and nn.optimise.epochs == default.optimise.epochs
    spec = NetworkSpec("zprime_nn", tuple(nn.models["zprime_nn"].features), tuple(nn.models["zprime_nn"].hidden))
    assert spec.n_params >= 500
    assert cuts_only(nn).optimise == default.optimise and not default.models
    assert frozen(nn).optimise.networks["zprime_nn"].learning_rate == 0.0
    tune = fine_tuning(nn, ["top_pt_threshold"]).optimise  # the fine-tuning stage as optimise.finetune says
    assert tune.learning_rates["top_pt_threshold"] == pytest.approx(0.1 * nn.optimise.learning_rates["top_pt_threshold"])
    assert tune.learning_rates["btag_threshold"] == nn.optimise.learning_rates["btag_threshold"]  # not listed
    assert tune.networks["zprime_nn"].scale == 4.0 and tune.networks["zprime_nn"].learning_rate > 0
    assert (tune.relaxation.slope_start, tune.relaxation.bandwidth_start, tune.relaxation.anneal_epochs) == (
        nn.optimise.relaxation.slope_end, nn.optimise.relaxation.bandwidth_end, 0)
    assert tune.epochs == 60 and frozen(nn).optimise.relaxation == tune.relaxation  # both start at an optimum
    assert nn.optimise.networks["zprime_nn"].threshold <= 0.05  # the frozen stage starts with the score cut open
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {REPO / 'configs' / 'zprime_nn.yaml'}\noptimise:\n  networks:\n    other_nn: {{}}\n")
    with pytest.raises(ConfigError, match="other_nn"):
        load_config(bad)


# ------------------------------------------------------------------------------------ the file
def test_a_saved_and_reloaded_network_gives_identical_scores(tmp_path):
    spec = NetworkSpec("toy_nn", ("met_pt", "jet_btag[1]", "mtt"), (7, 5), "tanh", ("bkg", "sig"), "sig",
                       (80.0, 0.5, 1500.0), (80.0, 0.3, 700.0))
    params = init_params(spec, seed=3)
    chunk = synthetic_chunk()
    path = io.save(tmp_path / "toy.npz", spec, params, meta={"note": "test"})
    spec2, params2, header = io.load(path)
    assert spec2 == spec and header["n_params"] == spec.n_params == 3 * 7 + 7 + 7 * 5 + 5 + 5 + 1
    assert np.array_equal(ravel(params2), ravel(params))
    before, after = np.asarray(spec.score(params, chunk.columns)), np.asarray(spec2.score(params2, chunk.columns))
    assert np.array_equal(before, after) and 0 < before.min() and before.max() < 1
    assert np.array_equal(score_numpy(spec, params, chunk.columns), score_numpy(spec2, params2, chunk.columns))
    assert np.allclose(score_numpy(spec, params, chunk.columns), before, rtol=0, atol=1e-12)  # hard == soft score
    with np.load(path) as npz:  # the documented format: per-layer arrays + a JSON header, numpy alone reads it
        assert sorted(npz.files) == ["header", "layer0.b", "layer0.w", "layer1.b", "layer1.w", "layer2.b", "layer2.w"]
        assert json.loads(bytes(npz["header"]).decode())["scaling"]["mean"] == [80.0, 0.5, 1500.0]
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="bad.npz"):
        io.load(tmp_path / "bad.npz")


def test_the_score_cut_hard_mask_is_the_soft_limit():
    spec = NetworkSpec("toy_nn", ("met_pt", "jet_btag[0]"), (6,), "relu", mean=(80.0, 0.5), std=(80.0, 0.3))
    chunk = synthetic_chunk(2000)
    cols = {k: v[: chunk.n_events] for k, v in chunk.columns.items()}
    cut = ScoreCut("nn", spec, ">", "nn_threshold", 0.5, (0.0, 1.0), 0.25)
    weights = init_params(spec, 0)
    params = {"toy_nn": weights, "nn_threshold": float(np.median(score_numpy(spec, weights, cols)))}
    hard = cut.hard(cols, params)
    assert 0.4 < hard.mean() < 0.6
    soft = np.asarray(cut.soft(cols, params, 1e9))
    assert np.array_equal(soft > 0.5, hard)
    ch = Channel("signal", (cut,))  # no weights in the parameters: the cut is not applied (the baseline θ₀)
    assert np.array_equal(ch.hard_mask(cols, {"nn_threshold": 0.45}), cols["baseline"] > 0)
    assert np.array_equal(ch.hard_mask(cols, params), hard)


# ------------------------------------------------------------------------------ missing features
def test_features_the_skim_did_not_produce_are_named(generated, columns, local, tmp_path):
    bad = with_network(generated.config, ["met_pt", "no_such_column", "jet_btag[0]", "jet_btag[99]"])
    with pytest.raises(UserError, match=r"no_such_column.*jet_btag\[99\]"):
        train_models(bad, local, tmp_path, progress=False)
    spec = NetworkSpec("nn", tuple(bad.models["nn"].features), (4,))
    with pytest.raises(UserError, match=r"no_such_column.*jet_btag\[99\]"):
        build_problem(bad, local, networks={"nn": (spec, init_params(spec))})


# ------------------------------------------------------------------------------ pre-training
def test_pretraining_reduces_the_loss_on_held_out_events(trained, local):
    path, summary = trained
    first, best = summary["loss_initial"], summary["loss_best"]
    assert best["loss_heldout"] < 0.8 * first["loss_heldout"]  # odd events: never trained on
    assert best["loss_valid"] < first["loss_valid"] and summary["best_epoch"] > 0
    assert summary["events"]["heldout"] > 0 and summary["events"]["valid"] > 0
    # the held-out loss, recomputed here in NumPy from the saved file on every odd event of the chunks
    spec, params, _ = io.load(path)
    scale = summary["class_scale"]
    num = den = 0.0
    for chunk in local.chunks:
        n = chunk.n_events
        cols = {k: v[:n] for k, v in chunk.columns.items()}
        keep = (cols["parity"] == 1) & (cols["baseline"] > 0)
        label = summary["class_of"][chunk.process]
        w = np.asarray(chunk.weights["nominal"][:n], float)[keep] * scale[label]
        p = np.clip(score_numpy(spec, params, cols)[keep], 1e-300, 1.0)
        q = np.clip(1.0 - score_numpy(spec, params, cols)[keep], 1e-300, 1.0)
        num += float(np.sum(w * -np.log(p if label == 1 else q)))
        den += float(w.sum())
    assert num / den == pytest.approx(best["loss_heldout"], rel=1e-6)
    # class balancing by weights: every class carries the same training weight
    assert summary["class_of"]["zprime"] == 1 and summary["class_of"]["ttbar"] == 0


def test_multi_class_pretraining_on_synthetic_chunks():
    """Three classes (softmax, integer-label cross-entropy), unequal class weights, weights balanced."""
    from zprime_grad.learn.train import pretrain

    rng = np.random.default_rng(7)
    chunks = []
    for i, (process, centre, weight) in enumerate([("sig", 2.0, 0.01), ("bkg_a", -1.0, 5.0), ("bkg_b", 0.5, 1.0)]):
        for part in range(2):
            n = 900
            x = rng.normal(centre, 1.0, (n, 2))
            cols = {"baseline": np.ones(n), "parity": np.arange(n) % 2, "f0": x[:, 0], "f1": x[:, 1] * 10 + 50}
            chunks.append(make_chunk(cols, {"nominal": np.full(n, weight)}, {}, {"event": np.arange(n) + 10_000 * part},
                                     dataset=process, process=process, provenance={"entrystart": part}))
    from zprime_grad.config import load_config

    data = load_config().model_dump(mode="json", exclude={"source"})
    data["models"] = {"m": {"features": ["f0", "f1"], "hidden": [8], "activation": "tanh",
                            "classes": {"background_a": ["bkg_a"], "signal": ["sig"], "background_b": ["bkg_b"]},
                            "train": {"epochs": 60, "learning_rate": 0.05, "patience": 60}}}
    model = parse_config(data, "multi").models["m"]
    spec, params, summary = pretrain(LocalChunks(chunks), "m", model, signal="sig", progress=False)
    assert spec.classes == ("background_a", "signal", "background_b") and spec.score_class == "signal"
    assert spec.n_outputs == 3 and summary["class_of"] == {"bkg_a": 0, "sig": 1, "bkg_b": 2}
    scale = np.asarray(summary["class_scale"])
    assert scale[1] / scale[0] == pytest.approx(500.0)  # equal total weight per class, no event dropped
    assert summary["loss_best"]["loss_heldout"] < 0.7 * summary["loss_initial"]["loss_heldout"]
    cols = chunks[0].columns
    score = np.asarray(spec.score(params, cols))[: chunks[0].n_events]
    assert score.mean() > np.asarray(spec.score(params, chunks[2].columns))[:900].mean()  # signal scores higher
    assert np.allclose(score_numpy(spec, params, cols)[:900], score, atol=1e-12)


# -------------------------------------------------------------------------- gradient, backends
def perturbed(problem, seed=0):
    theta = problem.theta0.copy()
    k = problem.layout.n_cut_params
    offsets = {"btag_threshold": 0.05, "lep_ht_threshold": -10.0, "met_threshold": 5.0, "top_pt_threshold": 20.0,
               "toptag_threshold": 0.05, "nn_threshold": -0.05}  # away from θ₀, inside the bounds
    theta[:k] += [offsets[n] for n in problem.layout.param_names[:k]]
    theta[k:] += np.random.default_rng(seed).normal(0.0, 0.02, len(theta) - k)
    return theta


def test_reverse_mode_with_a_network_equals_one_value_and_grad_over_all_events(config, trained, local):
    config = override(config, optimise={"precision": "float64"})  # the exactness claim: float64 kernel
    problem = build_problem(config, local, networks={"nn": trained[0]})
    assert problem.mode == "reverse" and len(problem.theta0) - problem.layout.n_cut_params >= 500
    theta, relax = perturbed(problem), (12.0, 0.25)
    ev = Evaluator(local, problem)(theta, relax)
    value, grad, valid = reference_evaluation(hold_everything(local.chunks, problem.layout), theta, relax,
                                              problem.objective)
    k = problem.layout.n_cut_params
    assert np.linalg.norm(grad[k:]) > 0 and np.linalg.norm(grad[:k]) > 0
    assert ev.value == pytest.approx(value, rel=1e-9) and ev.valid == pytest.approx(valid, rel=1e-9)
    assert np.allclose(ev.grad, grad, rtol=1e-6, atol=1e-6 * np.abs(grad).max())
    # and the derivative w.r.t. the largest network weight is the finite difference
    i = k + int(np.argmax(np.abs(grad[k:])))
    h = 1e-4  # the profiled fit converges to ~1e-9 in Z: a smaller step turns that into FD noise
    up, down = theta.copy(), theta.copy()
    up[i] += h
    down[i] -= h
    evaluate = Evaluator(local, problem)  # reverse mode: the first round is the primal kernel
    fd = (evaluate.histograms(up, relax), evaluate.histograms(down, relax))
    fd = (problem.objective.value(fd[0]["train"]) - problem.objective.value(fd[1]["train"])) / (2 * h)
    assert fd == pytest.approx(grad[i], rel=2e-3)


def test_local_and_dask_give_the_same_numbers_with_a_network(config, columns, trained, local, client):
    config = override(config, optimise={"precision": "float64"})  # reverse mode: see test_optimise_dask.py
    with DaskChunks.from_directory(client, columns) as dask:
        problem = build_problem(config, dask, networks={"nn": trained[0]})
        theta, relax = perturbed(problem, 1), (12.0, 0.25)
        a, b = Evaluator(dask, problem)(theta, relax), Evaluator(local, problem)(theta, relax)
        assert a.value == b.value and a.valid == b.valid and np.array_equal(a.grad, b.grad)  # same reduction tree
        # pre-training rounds: the per-chunk loss gradients reduce to the same sums on both backends
        from zprime_grad.learn.train import TrainTask

        spec, params, _ = io.load(trained[0])
        task = TrainTask(spec, tuple(sorted(trained[1]["class_of"].items())), 4)
        kw = {"task": task, "flat": ravel(params), "class_scale": np.asarray(trained[1]["class_scale"])}
        r_dask, r_local = dask.map_reduce(loss_part, **kw), local.map_reduce(loss_part, **kw)
        assert all(np.array_equal(r_dask[key], r_local[key]) for key in r_local)


# --------------------------------------------------------------------------- run, resume, validate
def test_fine_tuning_resumes_and_validates_with_the_same_weights(config, columns, trained, local, tmp_path):
    from zprime_grad.learn.attach import validation_networks
    from zprime_grad.selection import parameters
    from zprime_grad.skim.pipeline import make_processor, skim_options
    from zprime_grad.validate.driver import load_params
    from zprime_grad.validate.fill import fill_from_columns
    from zprime_grad.validate.hists import Binning, template

    nets = {"nn": trained[0]}
    two, one = override(config, optimise={"epochs": 2}), override(config, optimise={"epochs": 1})
    straight = optimise(two, local, tmp_path / "a", progress=False, start=Start(networks=nets))
    optimise(one, local, tmp_path / "b", progress=False, start=Start(networks=nets))
    resumed = optimise(two, local, tmp_path / "b", progress=False, start=Start(networks=nets), resume=True)
    assert [p["value"] for p in resumed["parameters"]] == [p["value"] for p in straight["parameters"]]
    w_a = io.load(tmp_path / "a" / "networks" / "nn.npz")[1]
    w_b = io.load(tmp_path / "b" / "networks" / "nn.npz")[1]
    w_0 = io.load(trained[0])[1]
    assert np.array_equal(ravel(w_a), ravel(w_b)) and not np.array_equal(ravel(w_a), ravel(w_0))  # it fine-tuned
    assert straight["networks"]["nn"]["n_params"] == 681
    assert "nn_threshold" in {p["name"] for p in straight["parameters"]}
    history = json.loads((tmp_path / "a" / "optimisation.json").read_text())
    assert len(history["parameters"]) == 6 and len(history["epochs"][0]["theta"]) == 6

    # what validate() does with a params.json of a run with networks: score cuts + the saved weights …
    analysis = make_processor(config, skim_options(config))
    params_file = tmp_path / "a" / "params.json"
    channels, weights = validation_networks(config, analysis.channels, params_file)
    theta, _ = load_params(params_file, parameters(channels))
    hists = fill_from_columns(local, Binning.from_config(channels, config),
                              {"baseline": analysis.initial_params(), "optimised": {**theta, **weights}})
    # … gives the signal-region yield recomputed here with the saved weights, held-out events, ×2
    signal = next(c for c in channels if c.name == "signal")
    plain = next(c for c in analysis.channels if c.name == "signal")  # the same cuts without the score cut
    want = {"optimised": 0.0, "baseline": 0.0}
    background = {"with": 0.0, "without": 0.0}  # MC background in the signal region, score cut or not
    for chunk in local.chunks:
        if chunk.is_data:
            continue
        n = chunk.n_events
        cols = {k: v[:n] for k, v in chunk.columns.items()}
        lo, hi = config.optimise.range  # the histograms have no flow bins
        in_range = (cols[config.optimise.observable] >= lo) & (cols[config.optimise.observable] < hi)
        w = 2.0 * np.asarray(chunk.weights["nominal"][:n], float) * (cols["parity"] == 1) * in_range
        if chunk.process != "zprime":
            background["with"] += float(np.sum(w[signal.hard_mask(cols, {**theta, "nn": w_a})]))
            background["without"] += float(np.sum(w[plain.hard_mask(cols, theta)]))
            continue
        want["optimised"] += float(np.sum(w[signal.hard_mask(cols, {**theta, "nn": w_a})]))
        want["baseline"] += float(np.sum(w[signal.hard_mask(cols, analysis.initial_params())]))
    got = {label: float(template(h, "signal", "zprime")[0].sum()) for label, h in hists.items()}
    assert got["optimised"] == pytest.approx(want["optimised"], rel=1e-9)
    assert got["baseline"] == pytest.approx(want["baseline"], rel=1e-9)
    assert got["optimised"] > 0 and 0 < background["with"] < background["without"]  # the score cut removes background
