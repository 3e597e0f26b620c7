"""configs/zprime_opendata2016.yaml and ``zprime-grad fileset``: the published analysis' real 2016 inputs
(../shared/data/opendata2016, skipped when absent) give a valid config, a fileset, and corrections that
evaluate through the same code path as the shipped ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zprime_grad.cli import main
from zprime_grad.config import load_config, override
from zprime_grad.era_inputs import era_inputs
from zprime_grad.skim.filelist import fileset_from_list, load_samples

REPO = Path(__file__).resolve().parents[2]
OPENDATA = REPO / ".." / "shared" / "data" / "opendata2016"
CONFIG = REPO / "configs" / "zprime_opendata2016.yaml"
SAMPLES = REPO / "configs" / "opendata2016" / "samples.yaml"


def opendata(name: str) -> Path:
    path = OPENDATA / name
    if not path.exists():
        pytest.skip(f"../shared/data/opendata2016/{name} is not beside this checkout")
    return path


def test_the_opendata_config_validates_with_its_era_and_official_locations():
    config = load_config(CONFIG)
    a = config.analysis
    assert (a.era, a.tagger, a.lumi_pb, a.lumi_uncertainty) == ("2016postVFP_UL", "deepcsv", 16400.0, 0.012)
    assert config.generate is None and config.fileset == "opendata2016/fileset.json"
    assert all(v.startswith("/cvmfs/cms.cern.ch/") for v in a.corrections.model_dump().values())
    assert a.golden_json.startswith("https://opendata.cern.ch/")


def test_fileset_command_builds_the_published_file_list(tmp_path):
    listing = opendata("nanoaods.json")
    out = tmp_path / "fileset.json"
    assert main(["fileset", str(listing), "--samples", str(SAMPLES), "--out", str(out), "--max-files", "2"]) == 0
    fileset = json.loads(out.read_text())
    assert set(fileset) == {"signal", "ttbar_semilep", "ttbar_had", "ttbar_lep", "wjets", "data"}
    for name, entry in fileset.items():
        assert 1 <= len(entry["files"]) <= 2 and all(f.startswith("root://eospublic.cern.ch//eos/opendata/cms/")
                                                     for f in entry["files"])
        assert entry["metadata"]["nevts"] > 0
    assert fileset["data"]["metadata"]["is_data"] is True and "xsec" not in fileset["data"]["metadata"]
    assert fileset["ttbar_had"]["metadata"] == {**fileset["ttbar_had"]["metadata"], "process": "ttbar",
                                                "xsec": 380.11, "is_data": False}
    full = fileset_from_list(listing, load_samples(SAMPLES))
    assert sum(len(e["files"]) for e in full.values()) == 2 + 138 + 146 + 49 + 68 + 152


def test_fileset_command_names_an_undescribed_sample(tmp_path):
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"zjets": {"nominal": {"files": [{"path": "root://x//a.root", "nevts": 3}]}}}))
    assert main(["fileset", str(listing), "--samples", str(SAMPLES), "--out", str(tmp_path / "f.json")]) == 2
    samples = tmp_path / "samples.yaml"
    samples.write_text("zjets: {process: zjets}\n")
    assert main(["fileset", str(listing), "--samples", str(samples), "--out", str(tmp_path / "f.json")]) == 2


def test_published_inputs_evaluate_through_the_shipped_code_path(tmp_path):
    """The published analysis' golden JSON, MUO and LUM files in place of the cvmfs/URL locations: the
    same config, only paths changed (BTV/JME: the shipped file under the era's names)."""
    golden, muon, pileup = (opendata(n) for n in ("Cert_271036-284044_13TeV_Legacy2016_Collisions16_JSON.txt",
                                                   "muon_Z.json.gz", "puWeights.json.gz"))
    from tests.processors.test_real_eras import pog_file_for

    pog = str(pog_file_for("2016postVFP_UL", "deepcsv", tmp_path))
    config = override(load_config(CONFIG), analysis={"golden_json": str(golden), "corrections": {
        "muon": str(muon), "pileup": str(pileup), "btag": pog, "jme": pog}})
    inputs = era_inputs(config)
    assert inputs.keys["pileup"] == ("Collisions16_UltraLegacy_goldenJSON",)
    assert inputs.keys["muon"] == ("NUM_TightID_DEN_TrackerMuons",)
    import numpy as np

    runs = np.array([278820, 278820, 283885, 1], np.uint32)
    lumis = np.array([17, 1541, 20, 1], np.uint32)  # 278820: [[17, 1540]]; 283885: [[1, 1723]]
    assert list(inputs.mask(runs, lumis)) == [True, False, True, False]
    from zprime_grad_processors import zprime_systematics as syst

    sf = syst.muon_sf(np.array([60.0, 300.0]), np.array([0.5, -2.0]), inputs)
    assert np.all(sf["down"] < sf["nominal"]) and np.all(sf["nominal"] < sf["up"])
    w = syst.pileup_weight(np.array([10.0, 25.0, 50.0]), inputs)
    assert np.all(w["nominal"] > 0) and not np.allclose(w["up"], w["nominal"])
