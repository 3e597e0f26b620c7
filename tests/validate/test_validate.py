"""Validation with the standard tools: validation.json vs a direct pyhf computation, the held-out split
(hard-cut histograms hold odd events only; the optimiser reads even events only), the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from zprime_grad.columns import ColumnChunk
from zprime_grad.chunks import LocalChunks, chunk_paths
from zprime_grad.config import override
from zprime_grad.validate import validate

CHUNKSIZE = 200


@pytest.fixture(scope="module")
def skim_dir(generated, tmp_path_factory) -> Path:
    """The generated dataset skimmed into small chunks (CHUNKSIZE: the directory test_optimise uses)."""
    from tests.optimise.test_optimise import skim_columns

    return skim_columns(generated, tmp_path_factory)


@pytest.fixture(scope="module")
def chunks(skim_dir) -> list[ColumnChunk]:
    return [ColumnChunk.from_npz(p) for p in chunk_paths(skim_dir)]


@pytest.fixture(scope="module")
def optimised(generated, skim_dir, tmp_path_factory) -> Path:
    """A real (short) optimisation: its params.json is what validate reads."""
    from zprime_grad.optimise.driver import optimise

    out = tmp_path_factory.mktemp("validate_optimise")
    optimise(override(generated.config, optimise={"epochs": 2}), LocalChunks.from_directory(skim_dir), out,
             progress=False)
    return out / "params.json"


@pytest.fixture(scope="module")
def validated(generated, optimised, tmp_path_factory):
    out = tmp_path_factory.mktemp("validate")
    from zprime_grad.validate.fill import FilesetInput

    config = override(generated.config, validation={"plots": True})
    result = validate(config, FilesetInput(generated.fileset, "iterative", chunksize=CHUNKSIZE), optimised, out)
    return out, result


def test_validation_json_has_the_promised_fields(validated, optimised):
    out, result = validated
    on_disk = json.loads((out / "validation.json").read_text())
    assert on_disk["heldout"] == "odd" and on_disk["fit_data"] == "pseudo-data"
    params = json.loads(optimised.read_text())
    theta_star = {p["name"]: p["value"] for p in params["parameters"]}
    theta_0 = {p["name"]: p["init"] for p in params["parameters"]}
    assert on_disk["optimised"]["params"] == pytest.approx(theta_star)
    assert on_disk["baseline"]["params"] == pytest.approx(theta_0)
    base, opt = on_disk["baseline"]["Z_hard"], on_disk["optimised"]["Z_hard"]
    assert base > 0 and opt > 0
    assert on_disk["improvement"] == pytest.approx(opt / base)
    assert on_disk["optimised"]["Z_soft"] == pytest.approx(params["z_valid_final"])
    for label in ("baseline", "optimised"):
        fit = on_disk[label]["fit"]
        assert fit["poi"] == "mu" and fit["method"] is not None and math.isfinite(fit["mu_hat"])
        assert fit["mu_uncertainty"] is None or fit["mu_uncertainty"] > 0  # scipy fallback: no uncertainties
        pulls = {k: v["pull"] for k, v in fit["parameters"].items() if "pull" in v}
        assert {"lumi", "jes", "jer", "btag_sf", "muon_sf", "xsec_single_top"} <= set(pulls)
        assert "pull" not in fit["parameters"]["mu"]  # a free parameter has no pull
        assert (out / f"workspace_{label}.json").exists()
    assert (out / "histograms.root").exists()
    # the same hard templates in the optimiser's own model: only cabinetry's NormPlusShape encoding differs
    assert on_disk["baseline"]["Z_hard_optimiser_model"] == pytest.approx(base, rel=0.05)
    assert (out / "workspace_baseline_optimiser_model.json").exists()
    plots = on_disk["outputs"]["plots"]  # optimisation.json sits next to params.json: its history is plotted
    assert {"plots/parameters.png", "plots/significance_per_epoch.png", "plots/templates_signal.png",
            "plots/pulls.png"} <= set(plots)
    assert all((out / p).stat().st_size > 1000 for p in plots)
    page = (out / "report.html").read_text()
    assert on_disk["outputs"]["report"] == "report.html" and page.count("data:image/png;base64,") == len(plots)
    assert f"{base:.4g}" in page and f"{opt:.4g}" in page


def test_baseline_hard_Z_equals_pyhf_on_the_written_workspace(validated):
    import pyhf
    from scipy.stats import norm

    out, result = validated
    spec = json.loads((out / "workspace_baseline.json").read_text())
    model = pyhf.Workspace(spec).model()
    asimov = model.expected_data(model.config.suggested_init())  # mu = 1
    # minuit at the tolerance the validation's first successful attempt used (the tight one fails on some
    # tiny samples; scipy's optimiser on more)
    tolerance = 1e-3 if "tolerance 0.001" in result["baseline"]["Z_hard_method"] else 0.1
    backend, optimizer = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(tolerance=tolerance))
    try:
        p0 = float(pyhf.infer.hypotest(0.0, asimov, model, test_stat="q0"))
    finally:
        pyhf.set_backend(backend, optimizer)
    assert result["baseline"]["Z_hard"] == pytest.approx(float(norm.isf(p0)), rel=1e-4)


def test_workspace_mirrors_the_optimiser_model(validated):
    out, _ = validated
    spec = json.loads((out / "workspace_optimised.json").read_text())
    assert [c["name"] for c in spec["channels"]] == ["signal", "ttbar_cr", "wjets_cr"]
    assert spec["measurements"][0]["config"]["poi"] == "mu"
    for channel in spec["channels"]:
        assert all(len(s["data"]) == 10 for s in channel["samples"])  # the optimiser's binning
        mods = {s["name"]: {(m["name"], m["type"]) for m in s["modifiers"]} for s in channel["samples"]}
        assert ("norm_ttbar", "normfactor") in mods["ttbar"] and ("norm_wjets", "normfactor") in mods["wjets"]
        assert ("xsec_single_top", "normsys") in mods["single_top"]
        assert ("jes", "histosys") in mods["ttbar"] and ("lumi", "normsys") in mods["ttbar"]
        assert (f"staterror_{channel['name']}", "staterror") in mods["ttbar"]
        if "zprime" in mods:
            assert ("mu", "normfactor") in mods["zprime"]


def _independent_sums(chunks, channels, theta, odd: bool) -> dict:
    """Σ 2·w per (channel, process) of nominal events with odd/even *event numbers*, in the fit range."""
    sums = {}
    for c in chunks:
        n = c.n_events
        cols = {k: v[:n] for k, v in c.columns.items()}
        is_odd = c.ids["event"][:n] % 2 == 1
        w = 2.0 * c.weights["nominal"][:n].astype(float)
        x = cols["mtt"]
        in_range = (x >= 200.0) & (x < 3000.0)
        process = "data" if c.is_data else c.process
        for ch in channels:
            keep = ch.hard_mask(cols, theta) & (is_odd if odd else ~is_odd) & in_range
            sums[(ch.name, process)] = sums.get((ch.name, process), 0.0) + float(w[keep].sum())
    return sums


def test_validation_histograms_hold_only_held_out_events(validated, chunks):
    import uproot
    from zprime_grad_processors.zprime_ttbar import CHANNELS, ZprimeTTbarProcessor

    out, result = validated
    theta = ZprimeTTbarProcessor().initial_params()
    odd = _independent_sums(chunks, CHANNELS, theta, odd=True)
    even = _independent_sums(chunks, CHANNELS, theta, odd=False)
    differs = 0
    with uproot.open(out / "histograms.root") as f:
        for (channel, process), expected in odd.items():
            got = f[f"baseline/{channel}_{process}_nominal"].values().sum()
            assert got == pytest.approx(expected, rel=1e-5, abs=1e-9), (channel, process)
            assert result["baseline"]["yields"][channel][process] == pytest.approx(expected, rel=1e-5, abs=1e-9)
            differs += not math.isclose(expected, even[(channel, process)], rel_tol=1e-3)
    assert differs >= 3  # the halves really differ, so the comparison can tell them apart


def test_optimiser_reads_only_the_even_half(generated, chunks):
    """Change every odd event (weight ×3, m_tt shifted): the training templates do not move."""
    from zprime_grad.optimise.contribution import primal_part
    from zprime_grad.optimise.driver import build_layout
    from zprime_grad.chunks import chunk_description

    layout = build_layout(generated.config, [chunk_description(c) for c in chunks])
    from zprime_grad_processors.zprime_ttbar import ZprimeTTbarProcessor

    theta0 = ZprimeTTbarProcessor().initial_params()
    theta = np.array([theta0[name] for name in layout.param_names])
    moved_valid = 0
    for chunk in [c for c in chunks if not c.is_data][:6]:
        odd = chunk.columns["parity"] == 1
        weights = {k: np.where(odd, 3 * w, w).astype(np.float32) for k, w in chunk.weights.items()}
        columns = {**chunk.columns, "mtt": np.where(odd, chunk.columns["mtt"] + 300.0, chunk.columns["mtt"]).astype(np.float32)}
        changed = ColumnChunk(columns, weights, chunk.variations, chunk.ids, chunk.n_events, chunk.dataset,
                              chunk.process, provenance=chunk.provenance)
        a = primal_part(chunk, layout, theta, (20.0, 0.1))
        b = primal_part(changed, layout, theta, (20.0, 0.1))
        np.testing.assert_array_equal(a["train"], b["train"])
        moved_valid += not np.allclose(a["valid"], b["valid"])
    assert moved_valid >= 3


def test_cli_validate(generated, optimised, skim_dir, tmp_path, capsys):
    from zprime_grad.cli import main

    import yaml

    from zprime_grad.config import as_data

    config = tmp_path / "config.yaml"  # the skim's config (validate refuses a skim made with another)
    config.write_text(yaml.safe_dump(as_data(generated.config)))
    out = tmp_path / "cli"
    assert main(["validate", str(config), "--params", str(optimised), "--columns", str(skim_dir), "--out", str(out),
                 "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "baseline  Z_hard" in printed and (out / "validation.json").exists()
    result = json.loads((out / "validation.json").read_text())
    assert result["source"] == "columns" and result["heldout"] == "odd" and "plots" not in result["outputs"]

    bad = tmp_path / "params.json"
    bad.write_text(json.dumps({"parameters": [{"name": "nonsense", "value": 1.0}]}))
    assert main(["validate", str(config), "--params", str(bad), "--columns", str(skim_dir), "--out", str(out),
                 "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "nonsense" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ executors and modes
def _same(a: dict, b: dict) -> None:
    from zprime_grad.validate.hists import as_arrays

    assert set(a) == set(b)
    for label in a:
        x, y = as_arrays(a[label]), as_arrays(b[label])
        zero = (np.zeros(10), np.zeros(10))
        for key in set(x) | set(y):
            np.testing.assert_allclose(x.get(key, zero)[0], y.get(key, zero)[0], rtol=1e-12, atol=1e-12, err_msg=str(key))
            np.testing.assert_allclose(x.get(key, zero)[1], y.get(key, zero)[1], rtol=1e-12, atol=1e-12, err_msg=str(key))


def processes_and_variations(skim_dir) -> tuple[list[str], list[str]]:
    from zprime_grad.validate.hists import NOMINAL, variations_of

    mc = [c for c in (ColumnChunk.from_npz(p) for p in chunk_paths(skim_dir)) if not c.is_data]
    return sorted({c.process for c in mc}), sorted({v for c in mc for v, _, _ in variations_of(c)} - {NOMINAL})


def test_every_executor_and_dask_awkward_give_identical_histograms(generated, skim_dir):
    from zprime_grad.chunks import DaskChunks
    from zprime_grad.cluster import connect, resolve
    from zprime_grad.skim.pipeline import make_processor, run_skim, skim_options
    from zprime_grad.validate.dask_mode import fill_with_dask_awkward
    from zprime_grad.validate.fill import fill_from_columns, fill_with_runner, prepare_fileset
    from zprime_grad.validate.hists import Binning, as_arrays

    config = generated.config
    analysis = make_processor(config, skim_options(config))
    binning = Binning.from_config(analysis.channels, config)
    thetas = {"baseline": analysis.initial_params(),
              "optimised": {**analysis.initial_params(), "met_threshold": 80.0, "top_pt_threshold": 400.0}}
    fileset = prepare_fileset(generated.fileset, analysis)
    iterative = fill_with_runner(fileset, analysis, binning, thetas, executor="iterative", chunksize=CHUNKSIZE,
                                 checked=True)
    assert iterative["baseline"].sum().value > 0
    assert iterative["baseline"].sum().value != pytest.approx(iterative["optimised"].sum().value)
    # a fileset whose metadata changed is read with the new metadata in the same process (coffea's default
    # metadata cache lives for the process and holds the metadata of the first read of each file)
    mc = {n: d for n, d in fileset.items() if not d["metadata"].get("is_data")}
    doubled = {n: {**d, "metadata": {**d["metadata"], "xsec": 2 * d["metadata"]["xsec"]}} for n, d in mc.items()}
    once, twice = (sum(values.sum() for (_, _, variation), (values, _) in as_arrays(
        fill_with_runner(f, analysis, binning, {"baseline": thetas["baseline"]}, executor="iterative",
                         chunksize=CHUNKSIZE, checked=True)["baseline"]).items() if variation == "nominal")
        for f in (mc, doubled))
    assert once > 0 and twice == pytest.approx(2 * once, rel=1e-12)
    local = LocalChunks.from_directory(skim_dir)
    _same(iterative, fill_from_columns(local, binning, thetas))
    _same(iterative, fill_with_runner(fileset, analysis, binning, thetas, executor="futures", workers=2,
                                      chunksize=CHUNKSIZE, checked=True))
    with connect(resolve(config, workers=2)) as (client, _):
        _same(iterative, fill_with_runner(fileset, analysis, binning, thetas, executor="dask", client=client,
                                          chunksize=CHUNKSIZE, checked=True))
        _same(iterative, fill_with_dask_awkward(fileset, analysis, binning, thetas, client=client))
        skimmed = run_skim(config, generated.fileset, skim_options(config, executor="dask", chunksize=CHUNKSIZE),
                           client=client)  # chunks kept on the workers: filled there, only hists come back
        skimmed.sort_like_files()
        with DaskChunks(client, skimmed.futures) as resident:
            _same(iterative, fill_from_columns(resident, binning, thetas))
            # the bootstrap replicas go through the same reduction: on the workers = from the skim directory
            from zprime_grad.validate.bootstrap import Analysis, replica_histograms
            from zprime_grad.validate.compare import hard_layout

            layout = hard_layout(binning, *processes_and_variations(skim_dir))
            analyses = {k: Analysis(binning, v) for k, v in thetas.items()}
            on_workers = replica_histograms(resident, analyses, {k: layout for k in thetas}, 5, seed=3)
            from_disk = replica_histograms(local, analyses, {k: layout for k in thetas}, 5, seed=3)
            for label in thetas:
                assert on_workers[label][:, :, :, 0].sum() > 0
                np.testing.assert_allclose(on_workers[label], from_disk[label], rtol=1e-12, atol=1e-12)


def test_inputs_key_names_the_content_not_the_paths(generated, chunks, optimised, tmp_path):
    """What ``run`` reuses a validation for: the same cuts, chunks and settings, wherever the files are."""
    from zprime_grad.validate.driver import inputs_key

    config, handle = generated.config, LocalChunks(chunks)
    key = inputs_key(config, handle, optimised, {}, plots=False)
    moved = tmp_path / "elsewhere" / "params.json"
    moved.parent.mkdir()
    moved.write_text(optimised.read_text())
    assert key == inputs_key(config, handle, moved, {}, plots=False)
    assert key == inputs_key(config, handle, json.loads(optimised.read_text()), {}, plots=False)
    payload = json.loads(optimised.read_text())
    payload["parameters"][0]["value"] += 1e-9
    others = [inputs_key(config, handle, payload, {}, plots=False),
              inputs_key(config, handle, optimised, {"scan_sobol": optimised}, plots=False),
              inputs_key(config, handle, optimised, {}, plots=True),
              inputs_key(override(config, validation={"bootstrap": 7}), handle, optimised, {}, plots=False),
              inputs_key(override(config, optimise={"bins": 9}), handle, optimised, {}, plots=False),
              inputs_key(config, LocalChunks(chunks[:-1]), optimised, {}, plots=False),
              inputs_key(config, LocalChunks([c for c in chunks if not c.is_data]), optimised, {}, plots=False)]
    assert len({key, *others}) == 1 + len(others)
    assert any(c.is_data for c in chunks)  # the last key left out the pseudo-data only
    from zprime_grad.validate.fill import FilesetInput

    assert inputs_key(config, FilesetInput(generated.fileset, "iterative"), optimised, {}, plots=False) is None
