"""The model table and what is derived from it: the optimiser's pyhf spec and JAX templates, and the
validation's cabinetry config. The expectations below were written by the three hand-kept copies that
the table replaced (`optimise/model.py` twice, `validate/workspace.py`): every number and every
modifier's order must stay exactly as they were."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zprime_grad.errors import UserError
from zprime_grad.model_table import (Modifier, ModelSettings, ModelShape, histogram_templates, modifier_table,
                                     pyhf_spec, systematic_pairs)
from zprime_grad.optimise.layout import Layout
from zprime_grad.model import build_spec, histograms_to_templates, model_shape
from zprime_grad.selection import Channel
from zprime_grad.validate.workspace import cabinetry_config

SETTINGS = ModelSettings(signal="sig", free_backgrounds=("wjets",), lumi_uncertainty=0.25,
                         xsec_uncertainty=(("other", 0.5),), default_xsec_uncertainty=0.125, background_floor=0.5)
PROCESSES = ("other", "sig", "wjets")
# the kernel's order: weight variations (pt_up, one-sided), then kinematic ones (jes_down, jes_up)
LAYOUT = Layout(channels=(Channel("sr", (), "x"), Channel("cr", (), "x")), processes=PROCESSES,
                weight_variations=("pt_up",), kinematic_variations=("jes_down", "jes_up"),
                edges=(0.0, 1.0, 2.0), param_names=(), columns=())
# H[process, channel, template, bin], templates: nominal, sumw2, pt_up, jes_down, jes_up (exact in binary)
H = np.array([[[[2, 4], [4, 9], [3, 5], [1, 3], [3, 5]], [[6, 8], [1, 16], [7, 9], [5, 7], [7, 9]]],
              [[[5, 1], [25, 1], [6, 2], [4, 0], [6, 2]], [[0, 0], [0, 0], [0, 0], [0, 0], [0, 0]]],
              [[[10, 20], [9, 4], [11, 19], [9, 21], [12, 18]], [[40, 30], [36, 25], [42, 31], [38, 29], [41, 33]]]],
             float)


def normfactor(name):
    return {"name": name, "type": "normfactor", "data": None}


def normsys(name, hi, lo):
    return {"name": name, "type": "normsys", "data": {"hi": hi, "lo": lo}}


def histosys(name, hi, lo):
    return {"name": name, "type": "histosys", "data": {"hi_data": hi, "lo_data": lo}}


def staterror(name, data):
    return {"name": name, "type": "staterror", "data": data}


LUMI = normsys("lumi", 1.25, 0.75)
SAMPLES = {  # (channel, process): (data, modifiers in the spec's order)
    ("sr", "other"): ([2.5, 4.5], [normsys("xsec_other", 1.5, 0.5), LUMI, histosys("pt", [3.5, 5.5], [1.5, 3.5]),
                                   histosys("jes", [3.5, 5.5], [1.5, 3.5]), staterror("staterror_sr", [2.0, 3.0])]),
    ("sr", "sig"): ([5.0, 1.0], [normfactor("mu"), LUMI, histosys("pt", [6.0, 2.0], [4.0, 0.0]),
                                 histosys("jes", [6.0, 2.0], [4.0, 0.0]), staterror("staterror_sr", [5.0, 1.0])]),
    ("sr", "wjets"): ([10.5, 20.5], [normfactor("norm_wjets"), LUMI, histosys("pt", [11.5, 19.5], [9.5, 21.5]),
                                     histosys("jes", [12.5, 18.5], [9.5, 21.5]),
                                     staterror("staterror_sr", [3.0, 2.0])]),
    ("cr", "other"): ([6.5, 8.5], [normsys("xsec_other", 1.5, 0.5), LUMI, histosys("pt", [7.5, 9.5], [5.5, 7.5]),
                                   histosys("jes", [7.5, 9.5], [5.5, 7.5]), staterror("staterror_cr", [1.0, 4.0])]),
    ("cr", "sig"): ([0.0, 0.0], [normfactor("mu"), LUMI, histosys("pt", [0.0, 0.0], [0.0, 0.0]),
                                 histosys("jes", [0.0, 0.0], [0.0, 0.0]), staterror("staterror_cr", [0.0, 0.0])]),
    ("cr", "wjets"): ([40.5, 30.5], [normfactor("norm_wjets"), LUMI, histosys("pt", [42.5, 31.5], [38.5, 29.5]),
                                     histosys("jes", [41.5, 33.5], [38.5, 29.5]),
                                     staterror("staterror_cr", [6.0, 5.0])]),
}
SPEC = {
    "channels": [{"name": ch, "samples": [{"name": p, "data": SAMPLES[ch, p][0], "modifiers": SAMPLES[ch, p][1]}
                                          for p in PROCESSES]} for ch in ("sr", "cr")],
    "observations": [{"name": "sr", "data": [18.0, 26.0]}, {"name": "cr", "data": [47.0, 39.0]}],
    "version": "1.0.0",
    "measurements": [{"name": "zprime_grad", "config": {"poi": "mu", "parameters": [
        {"name": "mu", "bounds": [[0.0, 10.0]], "inits": [1.0]}]}}],
}
ALL = ["other", "sig", "wjets"]
CABINETRY = {
    "General": {"Measurement": "zprime_grad", "POI": "mu", "HistogramFolder": "hists",
                "InputPath": "in.root:optimised/{RegionPath}_{SamplePath}_{VariationPath}", "VariationPath": "nominal"},
    "Regions": [{"Name": "sr", "RegionPath": "sr"}, {"Name": "cr", "RegionPath": "cr"}],
    "Samples": [{"Name": "data", "SamplePath": "data", "Data": True}, {"Name": "other", "SamplePath": "other"},
                {"Name": "sig", "SamplePath": "sig", "Regions": ["sr"]}, {"Name": "wjets", "SamplePath": "wjets"}],
    "NormFactors": [{"Name": "mu", "Samples": "sig", "Nominal": 1.0, "Bounds": [0.0, 10.0]},
                    {"Name": "norm_wjets", "Samples": "wjets"}],
    "Systematics": [
        {"Name": "lumi", "Type": "Normalization", "Samples": ALL,
         "Up": {"Normalization": 0.25}, "Down": {"Normalization": -0.25}},
        {"Name": "xsec_other", "Type": "Normalization", "Samples": "other",
         "Up": {"Normalization": 0.5}, "Down": {"Normalization": -0.5}},
        {"Name": "jes", "Type": "NormPlusShape", "Samples": ALL,
         "Up": {"VariationPath": "jes_up"}, "Down": {"VariationPath": "jes_down"}},
        {"Name": "pt", "Type": "NormPlusShape", "Samples": ALL, "Up": {"VariationPath": "pt_up"},
         "Down": {"Symmetrize": True}},
    ],
}


def _cabinetry():
    return cabinetry_config(inputs=Path("in.root"), label="optimised", histogram_folder=Path("hists"),
                            channels=["sr", "cr"], mc_processes=list(PROCESSES),
                            variations=["nominal", "jes_down", "jes_up", "pt_up"], settings=SETTINGS,
                            lumi_uncertainty=0.25, signal_channels=["sr"])


def test_the_table_rows():
    rows = modifier_table(SETTINGS, PROCESSES, ("sr", "cr"), LAYOUT.templates[2:])
    assert rows == (
        Modifier("mu", "normfactor", "sig", bounds=(0.0, 10.0)),
        Modifier("norm_wjets", "normfactor", "wjets"),
        Modifier("lumi", "normsys", PROCESSES, kappa=0.25),
        Modifier("xsec_other", "normsys", "other", kappa=0.5),
        Modifier("pt", "histosys", PROCESSES, variations=("pt_up", None)),
        Modifier("jes", "histosys", PROCESSES, variations=("jes_up", "jes_down")),
        Modifier("staterror_sr", "staterror", PROCESSES, channel="sr"),
        Modifier("staterror_cr", "staterror", PROCESSES, channel="cr"),
    )
    assert [r.cabinetry for r in rows] == (["NormFactor"] * 2 + ["Normalization"] * 2 + ["NormPlusShape"] * 2
                                           + [None] * 2)


def test_pyhf_spec_is_the_stored_expectation():
    spec = build_spec(LAYOUT, SETTINGS, H)
    assert json.dumps(spec) == json.dumps(SPEC)  # same numbers, same key and modifier order
    shape = ModelShape(PROCESSES, ("sr", "cr"), LAYOUT.templates, 2)
    assert model_shape(LAYOUT) == shape and json.dumps(pyhf_spec(shape, SETTINGS, H)) == json.dumps(SPEC)


def test_jax_templates_carry_the_spec_numbers():
    t = histograms_to_templates(H, LAYOUT, SETTINGS)
    assert set(t) == {"sr", "cr"}
    for (ch, p), (data, mods) in SAMPLES.items():
        sample = t[ch][p]
        assert np.asarray(sample["data"]).tolist() == data
        for m in mods:
            if m["type"] == "normsys":
                got = sample["normsys"][m["name"]]
                assert (float(got["hi"]), float(got["lo"])) == (m["data"]["hi"], m["data"]["lo"])
            elif m["type"] == "histosys":
                got = sample["histosys"][m["name"]]
                assert [np.asarray(got[k]).tolist() for k in ("hi_data", "lo_data")] == list(m["data"].values())
            elif m["type"] == "staterror":
                assert np.asarray(sample["staterror"][m["name"]]).tolist() == m["data"]
        kinds = {k: sorted(v) for k, v in sample.items() if k != "data"}
        expected = {k: sorted(m["name"] for m in mods if m["type"] == k)
                    for k in ("normsys", "histosys", "staterror")}
        assert kinds == {**expected, "shapesys": []}
    shape = model_shape(LAYOUT)
    assert np.asarray(histogram_templates(H, shape, SETTINGS)["sr"]["wjets"]["data"]).tolist() == [10.5, 20.5]


def test_cabinetry_config_is_the_stored_expectation():
    assert json.dumps(_cabinetry()) == json.dumps(CABINETRY)


def test_pyhf_and_cabinetry_name_the_same_parameters():
    in_spec = {m["name"] for c in SPEC["channels"] for s in c["samples"] for m in s["modifiers"]}
    in_cabinetry = {e["Name"] for e in CABINETRY["NormFactors"] + CABINETRY["Systematics"]}
    assert in_spec - in_cabinetry == {"staterror_sr", "staterror_cr"}  # cabinetry's automatic staterror
    assert in_cabinetry <= in_spec


def test_systematic_pairs_one_rule():
    assert systematic_pairs(["jes_up", "jes_down", "pt_scale_up", "ME_var"]) == {
        "jes": ("jes_up", "jes_down"), "pt_scale": ("pt_scale_up", None)}
    assert LAYOUT.systematics() == {"pt": ("pt_up", None), "jes": ("jes_up", "jes_down")}


def test_bad_settings_and_shapes():
    with pytest.raises(UserError, match="is the signal"):
        modifier_table(ModelSettings("sig", ("sig",), 0.0, (), 0.0, 0.0), PROCESSES, ("sr",), ())
    with pytest.raises(UserError, match="optimise.free_backgrounds"):
        build_spec(LAYOUT, ModelSettings("sig", ("ttbar",), 0.0, (), 0.0, 0.0), H)
    with pytest.raises(ValueError, match="templates must start"):
        ModelShape(PROCESSES, ("sr",), ("nominal", "jes_up"), 2)
