"""The AGC tt̄ analysis as a plug-in: found through the entry point, the AGC's histograms (names,
binning, contents against an independent uproot + awkward implementation), soft → hard, and the whole
``zprime-grad run configs/agc_ttbar.yaml`` chain on samples generated from that config (a few thousand
events, once per module). The checks on the real AGC-format file and the AGC's reference histograms
need ../shared/data and skip without it (``HAVE_SHARED_DATA``)."""

from __future__ import annotations

import json
import warnings
from importlib.metadata import entry_points

import awkward as ak
import numpy as np
import pytest
import uproot

from tests.conftest import REPO, SHARED_DATA
from zprime_grad.config import load_config, parse_config
from zprime_grad.errors import UserError

AGC_FILE = SHARED_DATA / "nanoaod" / "skhep" / "nanoAOD_2015_CMS_Open_Data_ttbar.root"
TTH_FILE = SHARED_DATA / "nanoaod" / "higgsdna" / "ttH_M125_2017.root"
REFERENCE = SHARED_DATA / "agc" / "reference" / "histos_1_file_per_process.json"
CONFIG = REPO / "configs" / "agc_ttbar.yaml"
LUMI = 3378.0
EDGES = np.linspace(50.0, 550.0, 26)
# the real files: the AGC-format file is W+jets; the ttH file stands in for tt̄ (README, AGC section)
SAMPLES = {"ttbar": (TTH_FILE, 729.84, 100), "wjets": (AGC_FILE, 61457 * 0.252, 200)}
HAVE_SHARED_DATA = SHARED_DATA.exists()
needs_shared_data = pytest.mark.skipif(
    not HAVE_SHARED_DATA, reason="../shared/data (the AGC-format file, AGC reference histograms) is not next to this checkout")
GENERATED_EVENTS = 600  # base per sample of configs/agc_ttbar.yaml (its events_scale apply)
# ... except these, so that a small sample has W+jets in both regions: 2.5k events, ~40 s on 2 busy cores
# (the two-point scale samples at half the config's share: their templates are checked, not their precision)
GENERATED_SCALES = {"ttbar": 1.0, "wjets_highpt": 2.0, "ttbar_scaleup": 0.5, "ttbar_scaledown": 0.5}


def fileset():
    return {f"{p}__nominal": {"files": {str(path): "Events"},
                              "metadata": {"process": p, "variation": "nominal", "xsec": xsec, "nevts": n}}
            for p, (path, xsec, n) in SAMPLES.items()}


def small_agc_config():
    data = load_config(CONFIG).model_dump(mode="json", exclude={"source"})
    data["generate"].update({"events": GENERATED_EVENTS, "batch_size": 300})
    data["skim"]["executor"] = "iterative"  # a few thousand events: a process pool costs more than it saves
    for name, scale in GENERATED_SCALES.items():
        data["generate"]["samples"][name]["events_scale"] = scale
    return parse_config(data, "tests/test_agc.py:small_agc_config")


@pytest.fixture(scope="module")
def agc_generated(tmp_path_factory):
    """``(config, fileset.json)``: the config's samples, generated small, once per module."""
    from zprime_grad.generate import generate_dataset

    config = small_agc_config()
    return config, generate_dataset(config, tmp_path_factory.mktemp("agc_generated"), progress=False)


def agc_histograms(fs: dict) -> dict:
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    from zprime_grad.skim.runner import load_processor
    from zprime_grad_processors.agc_hists import AGCHistogramProcessor

    analysis = load_processor("agc_ttbar", lumi_pb=LUMI)
    runner = processor.Runner(processor.IterativeExecutor(status=False), schema=NanoAODSchema)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runner(fs, AGCHistogramProcessor(analysis), treename="Events")


@pytest.fixture(scope="module")
def agc_output():
    if not HAVE_SHARED_DATA:
        pytest.skip("../shared/data (the AGC-format file, AGC reference histograms) is not next to this checkout")
    return agc_histograms(fileset())


def test_plugin_is_registered_through_the_entry_point():
    from zprime_grad.skim.runner import load_processor
    from zprime_grad_processors.agc_ttbar import AGCTTbarProcessor

    found = {ep.name: ep for ep in entry_points(group="zprime_grad.processors")}
    assert found["agc_ttbar"].value == "zprime_grad_processors.agc_ttbar:AGCTTbarProcessor"
    analysis = load_processor("agc_ttbar", lumi_pb=LUMI)
    assert isinstance(analysis, AGCTTbarProcessor)
    assert [(c.name, c.observable) for c in analysis.channels] == [("4j1b", "ht"), ("4j2b", "trijet_mass")]
    assert analysis.initial_params() == {"lepton_pt_threshold": 30.0, "jet_pt_threshold": 30.0,
                                         "btag_threshold": 0.5}


@needs_shared_data
def test_histogram_names_and_binning_match_the_agc_reference(agc_output):
    from zprime_grad_processors.agc_hists import reference_json

    ours = reference_json(agc_output["hist_dict"])
    reference = json.loads(REFERENCE.read_text())
    two_point = ("ME_var", "PS_var", "scaleup", "scaledown")
    expected = {n for n in reference if n.split("_")[1] in SAMPLES and not n.endswith(two_point)}
    assert set(ours) == expected  # every AGC template of the processes we have, nothing else
    for name, entry in ours.items():
        np.testing.assert_allclose(entry["edges"], reference[name]["edges"])
        assert len(entry["contents"]) == len(reference[name]["contents"]) == 27  # 25 bins + flow
    assert agc_output["nevents"] == {"ttbar__nominal": 100, "wjets__nominal": 200}


# ------------------------------------------------------------------- independent AGC implementation
def _agc_reference(paths, process, xsec, nevts=None, sumw=None) -> dict[str, np.ndarray]:
    """The AGC selection written directly on uproot/awkward arrays (nominal, b-tag, scale, pT scale).
    Weight xsec·lumi/nevts, or xsec·lumi·genWeight/sumw (generated filesets have no nevts)."""
    paths = [paths] if not isinstance(paths, (list, tuple)) else paths
    a = ak.concatenate([uproot.open(p)["Events"].arrays(library="ak", filter_name=["Electron_*", "Muon_*", "Jet_*", "genWeight"])
                        for p in paths])
    f64 = lambda x: ak.values_astype(x, np.float64)  # noqa: E731
    el = (a.Electron_pt > 30) & (abs(a.Electron_eta) < 2.1) & (a.Electron_cutBased == 4) & (a.Electron_sip3d < 4)
    mu = ((a.Muon_pt > 30) & (abs(a.Muon_eta) < 2.1) & a.Muon_tightId & (a.Muon_sip3d < 4)
          & (a.Muon_pfRelIso04_all < 0.15))
    one_lepton = (ak.sum(el, axis=1) + ak.sum(mu, axis=1)) == 1
    if nevts is not None:
        event_weight = np.full(len(a), xsec * LUMI / nevts)
    else:
        event_weight = xsec * LUMI * ak.to_numpy(a.genWeight).astype(np.float64) / sumw
    out = {}
    for variation, factor in (("nominal", 1.0), ("pt_scale_up", 1.03)):
        pt = f64(a.Jet_pt) * factor
        good = (pt > 30) & (abs(a.Jet_eta) < 2.4) & ((a.Jet_jetId & 4) > 0)
        jets = ak.zip({"pt": pt[good], "eta": f64(a.Jet_eta[good]), "phi": f64(a.Jet_phi[good]),
                       "mass": f64(a.Jet_mass[good]), "btag": a.Jet_btagCSVV2[good]})
        four = one_lepton & (ak.num(jets) >= 4)
        regions = {"4j1b": four & (ak.sum(jets.btag >= 0.5, axis=1) == 1),
                   "4j2b": four & (ak.sum(jets.btag > 0.5, axis=1) >= 2)}
        for region, sel in regions.items():
            rj = jets[sel]
            if region == "4j1b":
                x = ak.to_numpy(ak.sum(rj.pt, axis=1))
            else:
                t = ak.combinations(rj, 3, fields=["a", "b", "c"])
                px = sum(t[k].pt * np.cos(t[k].phi) for k in "abc")
                py = sum(t[k].pt * np.sin(t[k].phi) for k in "abc")
                pz = sum(t[k].pt * np.sinh(t[k].eta) for k in "abc")
                e = sum(np.sqrt((t[k].pt * np.cosh(t[k].eta)) ** 2 + t[k].mass ** 2) for k in "abc")
                tagged = np.maximum(t.a.btag, np.maximum(t.b.btag, t.c.btag)) > 0.5
                trijet_pt = ak.where(tagged, np.hypot(px, py), -1.0)
                best = ak.argmax(trijet_pt, axis=1, keepdims=True)
                m2 = (e**2 - px**2 - py**2 - pz**2)[best]
                x = ak.to_numpy(ak.flatten(np.sqrt(np.maximum(m2, 0.0))))
            weight = event_weight[ak.to_numpy(sel)]
            weights = {variation: weight}
            if variation == "nominal":
                for i in range(4):
                    shift = 0.075 * ak.to_numpy(rj.pt[:, i]) / 50.0 if len(x) else np.zeros(0)
                    weights[f"btag_var_{i}_up"], weights[f"btag_var_{i}_down"] = weight * (1 + shift), weight * (1 - shift)
                if process == "wjets":
                    weights["scale_var_up"], weights["scale_var_down"] = 1.025 * weights[variation], 0.975 * weights[variation]
            for name, w in weights.items():
                key = f"{region}_{process}" if name == "nominal" else f"{region}_{process}_{name}"
                out[key] = np.histogram(x, np.concatenate([[-np.inf], EDGES, [np.inf]]), weights=w)[0]
    return out


def _compare_with_reference(ours: dict, expected: dict) -> None:
    compared = sorted(n for n in ours if not n.endswith("pt_res_up"))  # RNG: the AGC does not compare it either
    assert set(compared) == set(expected)
    for name in compared:
        np.testing.assert_allclose(ours[name]["contents"], expected[name], rtol=1e-6, atol=1e-6, err_msg=name)  # float32 weights


@needs_shared_data
def test_hard_cut_histograms_equal_an_independent_reference(agc_output):
    from zprime_grad_processors.agc_hists import reference_json

    ours = reference_json(agc_output["hist_dict"])
    expected = {}
    for process, (path, xsec, nevts) in SAMPLES.items():
        expected.update(_agc_reference(path, process, xsec, nevts))
    _compare_with_reference(ours, expected)
    # the stand-in tt̄ fills both regions; the AGC-format W+jets file has no event in either (README)
    assert sum(expected["4j1b_ttbar"]) > 0 and sum(expected["4j2b_ttbar"]) > 0
    assert sum(expected["4j1b_wjets"]) == sum(expected["4j2b_wjets"]) == 0
    res = np.array(ours["4j2b_ttbar_pt_res_up"]["contents"])
    assert res.sum() == pytest.approx(np.sum(expected["4j2b_ttbar"]), rel=0.5)  # smeared, not lost


def test_generated_samples_fill_the_agc_regions_as_the_independent_reference(agc_generated):
    """The generated default: every process in both regions, weighted by genWeight/sumw (the biased
    W+jets slices) exactly as the independent implementation weights them."""
    from zprime_grad_processors.agc_hists import reference_json

    config, fs_path = agc_generated
    fs = json.loads(fs_path.read_text())
    ours = reference_json(agc_histograms(fs)["hist_dict"])
    expected, per_process = {}, {}
    for entry in fs.values():
        meta = entry["metadata"]
        hists = _agc_reference(list(entry["files"]), meta["process"], meta["xsec"], sumw=meta["sumw"])
        if meta["variation"] != "nominal":  # a two-point sample: its nominal only, as {region}_{process}_{variation}
            hists = {f"{r}_{meta['process']}_{meta['variation']}": hists[f"{r}_{meta['process']}"] for r in ("4j1b", "4j2b")}
        for name, values in hists.items():
            expected[name] = expected.get(name, 0) + values
        per_process.setdefault((meta["process"], meta["variation"]), []).append(meta["nevents"])
    _compare_with_reference(ours, expected)
    assert set(per_process) == {("ttbar", "nominal"), ("ttbar", "scaleup"), ("ttbar", "scaledown"),
                                ("wjets", "nominal"), ("single_top_t_chan", "nominal"), ("single_top_s_chan", "nominal")}
    for variation in ("scaleup", "scaledown"):  # the AGC's templates, filled and unlike the nominal
        for region in ("4j1b", "4j2b"):
            up, nominal = expected[f"{region}_ttbar_{variation}"], expected[f"{region}_ttbar"]
            assert sum(up) > 0 and not np.allclose(up, nominal)
    for region in ("4j1b", "4j2b"):
        assert sum(expected[f"{region}_ttbar"]) > 5 * sum(expected[f"{region}_wjets"]) > 0
    assert sum(expected["4j1b_single_top_t_chan"]) + sum(expected["4j2b_single_top_t_chan"]) > 0
    # b tagging defines the regions: tt̄ (two b quarks) is relatively richer in 4j2b than W+jets
    ratio = {p: sum(expected[f"4j2b_{p}"]) / sum(expected[f"4j1b_{p}"]) for p in ("ttbar", "wjets")}
    assert ratio["ttbar"] > ratio["wjets"]


@needs_shared_data
def test_soft_selection_tends_to_the_hard_one():
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    from zprime_grad.skim.runner import load_processor

    analysis = load_processor("agc_ttbar", lumi_pb=LUMI)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = processor.Runner(processor.IterativeExecutor(status=False), schema=NanoAODSchema)(
            {k: v for k, v in fileset().items() if k.startswith("ttbar")}, analysis, treename="Events")
    (chunk,) = out["chunks"]
    cols = {k: v[: chunk.n_events] for k, v in chunk.columns.items()}
    for params in (analysis.initial_params(), {"lepton_pt_threshold": 45.0, "jet_pt_threshold": 42.0,
                                                "btag_threshold": 0.8}):
        for ch in analysis.channels:
            hard = ch.hard_mask(cols, params)
            gaps = [np.asarray(cols["lepton_pt"]) - params["lepton_pt_threshold"],
                    np.where(cols["jet_mask"] > 0, cols["jet_pt"] - params["jet_pt_threshold"], np.inf),
                    np.where(cols["jet_mask"] > 0, (cols["jet_btag"] - params["btag_threshold"]) * 100, np.inf)]
            clear = np.all([np.abs(g).reshape(len(hard), -1).min(axis=1) > 0.5 for g in gaps], axis=0)
            soft = np.asarray(ch.soft_weight(cols, params, slope=1e4))
            assert clear.sum() >= 8
            np.testing.assert_allclose(soft[clear], hard[clear], atol=1e-6)


def test_bad_input_names_the_branch_file_and_dataset():
    from zprime_grad.skim.runner import load_processor
    from zprime_grad_processors import agc_branches

    analysis = load_processor("agc_ttbar", lumi_pb=LUMI)
    branches = set(agc_branches.required(False)) - {"Jet_btagCSVV2", "Muon_sip3d"}
    with pytest.raises(UserError, match=r"f\.root: required branch\(es\) missing: Muon_sip3d, Jet_btagCSVV2"):
        analysis.check_branches(branches, "f.root", is_data=False)
    with pytest.raises(UserError, match="dataset ttbar__nominal: fileset metadata 'nevts'"):
        analysis.weights({"dataset": "ttbar__nominal", "xsec": 1.0}, "ttbar", np.zeros((1, 12)), False)


def test_the_config_generates_its_inputs():
    config = load_config(CONFIG)
    assert config.fileset is None and config.generate is not None  # nothing beside the repository
    assert config.optimise.objective == "mu_uncertainty"
    assert {s.process for s in config.generate.samples.values()} == {
        "ttbar", "wjets", "single_top_t_chan", "single_top_s_chan"}
    varied = {s.variation: (s.process, s.scale_multiplier, s.xsec_pb) for s in config.generate.samples.values()
              if s.variation != "nominal"}
    assert varied == {"scaleup": ("ttbar", 2.0, 729.84), "scaledown": ("ttbar", 0.5, 729.84)}


def test_zprime_grad_run_on_the_agc_config(tmp_path, agc_generated):
    from zprime_grad.stages.run import run_chain

    config, fs_path = agc_generated
    outputs = run_chain(config, tmp_path, fileset=fs_path, epochs=2)
    for name in ("skim/skim.json", "optimise/params.json", "optimise/optimisation.json",
                 "validation.json", "report.html", "histograms.root", "workspace_optimised.json"):
        assert (tmp_path / name).exists(), name
    assert set(outputs) == {"fileset", "skim", "optimise", "scan", "validation", "report"}
    history = json.loads((tmp_path / "optimise" / "optimisation.json").read_text())
    assert len(history["epochs"]) == 2 and history["objective"] == "mu_uncertainty"
    assert history["channels"] == ["4j1b", "4j2b"]
    assert sorted(history["processes"]) == ["single_top_s_chan", "single_top_t_chan", "ttbar", "wjets"]
    summary = json.loads((tmp_path / "validation.json").read_text())
    assert summary["figure_of_merit"] == "mu_uncertainty"
    assert summary["observable"] == "4j1b: ht, 4j2b: trijet_mass"
    for label in ("baseline", "optimised"):
        assert 0 < summary[label]["mu_uncertainty_hard"] < 10
    for label in ("scan_sobol", "scan_tpe"):  # the black-box baseline at the same budget: 2 x (1 + params)
        assert 0 < summary["comparisons"][label]["mu_uncertainty_hard"] < 10
        assert summary["comparisons"][label]["evaluations"] == 2 * (1 + len(history["parameters"]))
    assert summary["optimised"]["mu_uncertainty_soft"] == pytest.approx(-history["epochs"][-1]["z_valid"], rel=0.5)
    with uproot.open(tmp_path / "histograms.root") as f:
        keys = [k.split(";")[0] for k in f.keys()]
        assert "baseline/4j2b_ttbar_pt_scale_up" in keys
        # the two-point scale samples: a template of tt̄ (the scaleup sample alone), nominal for the others
        up, down, nominal = (f[f"baseline/4j2b_ttbar_{v}"].values() for v in ("ttbar_scale_up", "ttbar_scale_down", "nominal"))
        assert up.sum() > 0 and down.sum() > 0 and not np.allclose(up, nominal) and not np.allclose(up, down)
        np.testing.assert_allclose(f["baseline/4j2b_wjets_ttbar_scale_up"].values(), f["baseline/4j2b_wjets_nominal"].values())
    # ... which both models take as the AGC's "ttbar scale variations": one up/down systematic on tt̄
    workspace = json.loads((tmp_path / "workspace_optimised.json").read_text())
    modifiers = {(s["name"], m["name"], m["type"]) for ch in workspace["channels"] for s in ch["samples"]
                 for m in s["modifiers"] if m["name"] == "ttbar_scale"}
    assert ("ttbar", "ttbar_scale", "histosys") in modifiers


@needs_shared_data
def test_notebook_api_skims_a_fileset():
    from zprime_grad.analysis import Analysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = Analysis.from_yaml(CONFIG).skim(fileset(), executor="iterative")
    # 16 stand-in tt̄ events with one lepton and >= 4 jets; none of the AGC-format file's W+jets events
    assert {c.dataset: c.n_events for c in result.chunks} == {"ttbar__nominal": 16, "wjets__nominal": 0}
