"""The shipped corrections are in the CMS POG schemas: names, inputs, category keys and layouts of the
official MUO, BTV, JME and LUM files, with the numbers the analysis used before (make_corrections.py).

Where ../shared/data is beside the checkout, the official files there are read and compared: the same
evaluation code (inputs passed by name, the same category keys) works on theirs and ours."""

from __future__ import annotations

import gzip
import json
from importlib.resources import files

import correctionlib
import correctionlib.schemav2 as cs
import numpy as np
import pytest

from zprime_grad.generate import lumi, pileup

SHIPPED = files("zprime_grad.data") / "corrections.json"
GOLDEN = files("zprime_grad.data") / "golden_generated.json"

R, S, I = "real", "string", "int"
BTV_INPUTS = [("systematic", S), ("working_point", S), ("flavor", I), ("abseta", R), ("pt", R)]
INPUTS = {
    "NUM_TightID_DEN_TrackerMuons": [("abseta", R), ("pt", R), ("scale_factors", S)],
    **{f"{tagger}_{method}": BTV_INPUTS for tagger in ("deepCSV", "deepJet") for method in ("mujets", "comb", "incl")},
    "deepCSV_wp_values": [("working_point", S)],
    "deepJet_wp_values": [("working_point", S)],
    "Generated_V1_MC_Total_AK4PFchs": [("JetEta", R), ("JetPt", R)],
    "Generated_JRV1_MC_PtResolution_AK4PFchs": [("JetEta", R), ("JetPt", R), ("Rho", R)],
    "Generated_JRV1_MC_ScaleFactor_AK4PFchs": [("JetEta", R), ("systematic", S)],
    "Generated_goldenJSON": [("NumTrueInteractions", R), ("weights", S)],
}
CATEGORIES = {  # input -> keys, per correction (int keys for flavor)
    "NUM_TightID_DEN_TrackerMuons": {"scale_factors": {"nominal", "systup", "systdown", "syst"}},
    **{f"{t}_{m}": {"systematic": {"central", "up", "down"}, "working_point": {"L", "M", "T"}, "flavor": {4, 5}}
       for t in ("deepCSV", "deepJet") for m in ("mujets", "comb")},
    **{f"{t}_incl": {"systematic": {"central", "up", "down"}, "working_point": {"L", "M", "T"}, "flavor": {0}}
       for t in ("deepCSV", "deepJet")},
    "deepCSV_wp_values": {"working_point": {"L", "M", "T"}},
    "deepJet_wp_values": {"working_point": {"L", "M", "T"}},
    "Generated_V1_MC_Total_AK4PFchs": {},
    "Generated_JRV1_MC_PtResolution_AK4PFchs": {},
    "Generated_JRV1_MC_ScaleFactor_AK4PFchs": {"systematic": {"nom", "up", "down"}},
    "Generated_goldenJSON": {"weights": {"nominal", "up", "down"}},
}


def _load(path) -> dict:
    path = str(path)
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
        return json.load(f)


def _corrections(path) -> dict[str, dict]:
    return {c["name"]: c for c in _load(path)["corrections"]}


def _walk(node, categories: dict, binnings: dict) -> None:
    """Collect the keys of every category node and the edges/flow of every binning node, by input."""
    if not isinstance(node, dict):
        return
    kind = node.get("nodetype")
    if kind == "category":
        categories.setdefault(node["input"], set()).update(item["key"] for item in node["content"])
        for item in node["content"]:
            _walk(item["value"], categories, binnings)
        _walk(node.get("default"), categories, binnings)
    elif kind == "binning":
        binnings.setdefault(node["input"], []).append((node["edges"], node["flow"]))
        for child in node["content"]:
            _walk(child, categories, binnings)
    elif kind == "transform":
        _walk(node["content"], categories, binnings)


def _structure(correction: dict) -> tuple[list[tuple[str, str]], dict, dict]:
    categories, binnings = {}, {}
    _walk(correction["data"], categories, binnings)
    return [(i["name"], i["type"]) for i in correction["inputs"]], categories, binnings


def _by_name(correction: correctionlib.highlevel.Correction, **values):
    """Evaluate with the inputs given by name: the code path that works with our file and the POGs'."""
    return correction.evaluate(*[values[i.name] for i in correction.inputs])


@pytest.fixture(scope="module")
def ours() -> dict[str, dict]:
    return _corrections(SHIPPED)


@pytest.fixture(scope="module")
def cset() -> correctionlib.CorrectionSet:
    return correctionlib.CorrectionSet.from_file(str(SHIPPED))


def test_shipped_file_is_a_valid_schema_v2_set_with_exactly_the_pog_names(ours):
    data = _load(SHIPPED)
    assert data["schema_version"] == 2
    cs.CorrectionSet.model_validate(data)
    assert set(ours) == set(INPUTS)  # and none of the pre-POG keys (btag_sf, muon_id_iso_sf, ...)


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_inputs_and_category_keys(ours, name):
    inputs, categories, _ = _structure(ours[name])
    assert inputs == INPUTS[name]
    assert categories == CATEGORIES[name]


def test_numbers_are_the_pre_pog_ones(cset):
    """Spot values of the pre-POG file (muon_id_iso_sf, btag_sf, jes_uncertainty, jer_resolution, jer_sf)."""
    mu = cset["NUM_TightID_DEN_TrackerMuons"]
    assert [mu.evaluate(0.5, 60.0, s) for s in ("nominal", "systup", "systdown", "syst")] == \
        pytest.approx([0.985, 0.99, 0.98, 0.005])
    assert mu.evaluate(2.2, 700.0, "systdown") == pytest.approx(0.935)
    b = cset["deepCSV_mujets"]
    assert b.evaluate("central", "M", 5, 0.3, 150.0) == pytest.approx(0.97)
    assert b.evaluate("up", "M", 5, 0.3, 150.0) == pytest.approx(0.995)
    assert b.evaluate("down", "M", 4, 2.0, 800.0) == pytest.approx(0.89)
    assert cset["deepJet_incl"].evaluate("up", "M", 0, 1.0, 50.0) == pytest.approx(1.13)
    assert cset["deepCSV_mujets"].evaluate("up", "T", 5, 0.3, 150.0) == pytest.approx(0.97 + 1.5 * 0.025)
    assert cset["deepCSV_mujets"].evaluate("up", "L", 5, 0.3, 150.0) == pytest.approx(0.97 + 0.75 * 0.025)
    assert [cset["deepCSV_wp_values"].evaluate(w) for w in "LMT"] == [0.2217, 0.6321, 0.8953]
    assert [cset["deepJet_wp_values"].evaluate(w) for w in "LMT"] == [0.0614, 0.3093, 0.7221]
    jes = cset["Generated_V1_MC_Total_AK4PFchs"]
    assert jes.evaluate(-2.0, 120.0) == jes.evaluate(2.0, 120.0) == pytest.approx(0.024)
    assert jes.evaluate(4.9, 20.0) == pytest.approx(0.06)
    jer = cset["Generated_JRV1_MC_PtResolution_AK4PFchs"]
    c = (200.0 * 400.0) ** 0.5  # the pT bin 200-400 GeV at its geometric centre
    sigma = ((2.5 / c) ** 2 + 0.9**2 / c + 0.04**2) ** 0.5
    assert jer.evaluate(1.0, 300.0, 5.0) == jer.evaluate(-1.0, 300.0, 40.0) == pytest.approx(sigma, abs=1e-5)
    assert jer.evaluate(-3.0, 300.0, 20.0) == pytest.approx(1.3 * sigma, abs=1e-5)
    assert [cset["Generated_JRV1_MC_ScaleFactor_AK4PFchs"].evaluate(0.5, s) for s in ("nom", "up", "down")] == \
        pytest.approx([1.0, 1.1, 0.9])


def test_pileup_weights_are_the_profiles_ratio_bounded_and_mean_one(ours, cset):
    _, _, binnings = _structure(ours["Generated_goldenJSON"])
    assert binnings["NumTrueInteractions"] == [(list(range(100)), "clamp")] * 3
    corr = cset["Generated_goldenJSON"]
    centres = np.arange(99) + 0.5
    for variation in ("nominal", "up", "down"):
        w = corr.evaluate(centres, variation)
        np.testing.assert_allclose(w, pileup.weights(variation), rtol=1e-12)
        assert np.all((w >= 0) & (w < 2.0))
        assert float(np.sum(pileup.mc_profile() * w)) == pytest.approx(1.0, abs=1e-9)
    assert corr.evaluate(150.0, "nominal") == corr.evaluate(98.5, "nominal")  # clamp
    means = {v: float(np.sum(pileup.data_profile(v) * centres)) for v in ("down", "nominal", "up")}
    assert means["nominal"] == pytest.approx(24.0, abs=0.05)
    assert means["up"] / means["nominal"] == pytest.approx(1.046, abs=1e-3)
    assert means["down"] / means["nominal"] == pytest.approx(0.954, abs=1e-3)


def test_shipped_golden_json_is_the_generators_layout():
    golden = json.loads(GOLDEN.read_text())
    assert golden == lumi.golden_json()
    n_certified = sum(last - first + 1 for ranges in golden.values() for first, last in ranges)
    assert len(lumi.certified()) == 2000 and n_certified == int(lumi.certified().sum()) == 1920


def test_make_corrections_reproduces_the_shipped_file():
    from zprime_grad.data import make_corrections

    assert json.loads(make_corrections.build().model_dump_json(exclude_unset=True)) == _load(SHIPPED)


# ------------------------------------------------------------------- against the official POG files
def _official(shared_data, relative: str) -> dict[str, dict]:
    path = shared_data / relative
    if not path.exists():
        pytest.skip(f"{relative} is not in ../shared/data")
    return _corrections(path)


@pytest.mark.parametrize("relative", ["pog/LUM/2016postVFP_UL/puWeights.json", "pog/LUM/2018_UL/puWeights.json",
                                      "opendata2016/puWeights.json.gz"])
def test_lum_pileup_weights_have_our_schema(shared_data, ours, cset, relative):
    (theirs,) = _official(shared_data, relative).values()
    inputs, categories, binnings = _structure(theirs)
    our_inputs, our_categories, our_binnings = _structure(ours["Generated_goldenJSON"])
    assert inputs == our_inputs and categories == our_categories and binnings == our_binnings
    official = correctionlib.CorrectionSet.from_file(str(shared_data / relative))[theirs["name"]]
    n_true = np.array([0.5, 24.3, 60.0, 120.0])
    for corr in (official, cset["Generated_goldenJSON"]):
        for variation in ("nominal", "up", "down"):
            assert np.all(np.isfinite(_by_name(corr, NumTrueInteractions=n_true, weights=variation)))


def test_muo_high_pt_2016_has_our_schema(shared_data, ours, cset):
    relative = "pog/MUO/2016postVFP_UL/ScaleFactors_Muon_highPt_IDISO_2016_schemaV2.json"
    theirs = _official(shared_data, relative)
    our_inputs, our_categories, _ = _structure(ours["NUM_TightID_DEN_TrackerMuons"])
    official = correctionlib.CorrectionSet.from_file(str(shared_data / relative))
    abseta, pt = np.array([0.3, 1.0, 1.5, 2.3]), np.array([60.0, 150.0, 300.0, 800.0])
    for name, correction in theirs.items():
        inputs, categories, _ = _structure(correction)
        assert inputs == our_inputs, name
        assert our_categories["scale_factors"] <= categories["scale_factors"], name
        for corr in (official[name], cset["NUM_TightID_DEN_TrackerMuons"]):
            for key in sorted(our_categories["scale_factors"]):
                assert np.all(np.isfinite(_by_name(corr, abseta=abseta, eta=-abseta, pt=pt, scale_factors=key)))


def test_muo_z_2016_tight_id_differs_only_by_signed_eta(shared_data, ours, cset):
    """MUO's muon_Z files take the signed ``eta`` (an abs() transform inside); ours, as the high-pT file,
    ``abseta``: passing the inputs by name (both spellings given) evaluates either file."""
    relative = "opendata2016/muon_Z.json.gz"
    theirs = _official(shared_data, relative)["NUM_TightID_DEN_TrackerMuons"]
    inputs, categories, _ = _structure(theirs)
    our_inputs, our_categories, _ = _structure(ours["NUM_TightID_DEN_TrackerMuons"])
    assert inputs == [("eta", R)] + our_inputs[1:]
    assert our_categories["scale_factors"] <= categories["scale_factors"]
    official = correctionlib.CorrectionSet.from_file(str(shared_data / relative))["NUM_TightID_DEN_TrackerMuons"]
    eta, pt = np.array([-2.3, -0.5, 1.0, 2.2]), np.array([30.0, 60.0, 150.0, 800.0])
    for corr in (official, cset["NUM_TightID_DEN_TrackerMuons"]):
        up = _by_name(corr, eta=eta, abseta=np.abs(eta), pt=pt, scale_factors="systup")
        nominal = _by_name(corr, eta=eta, abseta=np.abs(eta), pt=pt, scale_factors="nominal")
        assert np.all(up > nominal)


@pytest.mark.parametrize("relative", ["pog/BTV/2022_Summer22/btagging.json", "pog/BTV/2022_Summer22EE/btagging.json"])
def test_btv_wp_values_have_our_schema(shared_data, ours, cset, relative):
    theirs = _official(shared_data, relative)["deepJet_wp_values"]
    inputs, categories, _ = _structure(theirs)
    our_inputs, our_categories, _ = _structure(ours["deepJet_wp_values"])
    assert inputs == our_inputs and theirs["output"]["name"] == ours["deepJet_wp_values"]["output"]["name"] == "wp"
    assert our_categories["working_point"] <= categories["working_point"]
    official = correctionlib.CorrectionSet.from_file(str(shared_data / relative))["deepJet_wp_values"]
    for corr in (official, cset["deepJet_wp_values"]):
        wps = [_by_name(corr, working_point=w) for w in "LMT"]
        assert 0 < wps[0] < wps[1] < wps[2] < 1
