"""The era table, the analysis section that picks an era, the certified luminosity, and evaluation of
corrections by input name on the official CMS POG files (when ../shared/data is beside the repo)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from zprime_grad import eras
from zprime_grad.config import ConfigError, load_config, override, parse_config
from zprime_grad.corrections import evaluate
from zprime_grad.errors import UserError
from zprime_grad.lumi import certified_lumi_pb

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
ISSUE_ERAS = ("2016preVFP_UL", "2016postVFP_UL", "2017_UL", "2018_UL", "2022", "2022EE", "2023", "2023BPix", "2024")


def shared(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/data/{'/'.join(parts)} is not beside this checkout")
    return path


def test_every_era_of_run2_ul_and_run3_is_in_the_table():
    table = eras.table()
    assert set(ISSUE_ERAS) <= set(table) and "generated" in table
    for name in ISSUE_ERAS:
        era = table[name]
        assert era.run == (2 if name.endswith("_UL") else 3)
        assert "btagDeepB" not in [t.branch for t in era.taggers.values()] or era.run == 2  # no DeepCSV in Run 3
        assert 0 < era.initial_thresholds()["btag_threshold"] < 1


def test_btag_threshold_starts_at_the_taggers_medium_working_point():
    era = eras.era("2018_UL")
    assert era.initial_thresholds("deepcsv")["btag_threshold"] == era.taggers["deepcsv"].wp["M"] == 0.4168
    assert eras.era("generated").initial_thresholds()["btag_threshold"] == 0.5  # the reference analysis' θ0


@pytest.mark.parametrize("era,campaign", [("2022", "2022_Summer22"), ("2022EE", "2022_Summer22EE")])
def test_run3_working_points_equal_btvs_file(era, campaign):
    import correctionlib

    path = shared("pog", "BTV", campaign, "btagging.json")
    official = correctionlib.CorrectionSet.from_file(str(path))
    names = {"deepjet": "deepJet", "particlenet": "particleNet", "robustpart": "robustParticleTransformer"}
    for tagger, wp in eras.era(era).taggers.items():
        for point, value in wp.wp.items():
            assert official[f"{names[tagger]}_wp_values"].evaluate(point) == pytest.approx(value, abs=1e-6)


@pytest.mark.parametrize("era,folder", [("2016postVFP_UL", "2016postVFP_UL"), ("2018_UL", "2018_UL")])
def test_pileup_key_of_the_era_is_lums(era, folder):
    content = json.loads(shared("pog", "LUM", folder, "puWeights.json").read_text())
    assert eras.era(era).corrections.pileup in [c["name"] for c in content["corrections"]]


def test_analysis_section_takes_the_eras_luminosity_and_checks_the_tagger():
    analysis = parse_config({"analysis": {"era": "2018_UL"}}).analysis
    assert (analysis.lumi_pb, analysis.lumi_uncertainty) == (59830.0, 0.025)
    assert parse_config({"analysis": {"era": "2018_UL", "lumi_pb": 1000.0}}).analysis.lumi_pb == 1000.0
    with pytest.raises(ConfigError, match=r"field 'analysis': tagger 'deepcsv' is not one of era 2022's"):
        parse_config({"analysis": {"era": "2022", "tagger": "deepcsv"}})
    with pytest.raises(ConfigError, match=r"unknown era '2019'"):
        parse_config({"analysis": {"era": "2019"}})
    with pytest.raises(ConfigError, match=r"analysis\.lumi_pb.*finite"):
        parse_config({"analysis": {"lumi_pb": float("inf")}})


def test_the_default_config_declares_the_generated_era_and_keeps_its_luminosity():
    config = load_config()
    assert config.analysis.era == "generated" and config.analysis.lumi_pb == 16400.0
    assert override(config, optimise={"epochs": 2}).analysis == config.analysis


def _brilcalc_csv(path: Path, lumi_per_ls_pb: float, run: int, sections: range, unit: str = "/pb") -> Path:
    scale = {"/pb": 1.0, "/ub": 1e6}[unit]
    lines = ["#Data tag : 24v1 , Norm tag: None",
             f"#run:fill,ls,time,beamstatus,E(GeV),delivered({unit}),recorded({unit}),avgpu,source"]
    lines += [f"{run}:7000,{ls}:{ls},06/01/16 00:00:00,STABLE BEAMS,6500,{lumi_per_ls_pb * scale * 1.02:.6f},"
              f"{lumi_per_ls_pb * scale:.6f},25.0,HFOC" for ls in sections]
    lines.append("#Summary:")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("unit", ["/pb", "/ub"])
def test_certified_luminosity_counts_only_the_lumi_sections_of_the_golden_json(tmp_path, unit):
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps({"278000": [[1, 10], [21, 30]]}))
    csv = _brilcalc_csv(tmp_path / "lumi.csv", 0.5, 278000, range(1, 41), unit)
    assert certified_lumi_pb(str(csv), str(golden)) == pytest.approx(20 * 0.5)
    config = parse_config({"analysis": {"era": "2016postVFP_UL", "lumi_csv": str(csv), "golden_json": str(golden)}})
    assert config.analysis.lumi_pb == pytest.approx(10.0)
    assert override(config, optimise={"epochs": 2}).analysis.lumi_pb == pytest.approx(10.0)


def test_a_lumi_csv_without_certified_sections_or_golden_json_is_refused(tmp_path):
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps({"1": [[1, 5]]}))
    csv = _brilcalc_csv(tmp_path / "lumi.csv", 1.0, 278000, range(1, 5))
    with pytest.raises(UserError, match=r"analysis\.lumi_csv: .*lumi\.csv: no lumi section is certified"):
        certified_lumi_pb(str(csv), str(golden))
    bad = tmp_path / "bad.json"
    bad.write_text('{"1": "all"}')
    with pytest.raises(UserError, match=r"analysis\.golden_json: .*bad\.json: not a readable certified-luminosity JSON"):
        certified_lumi_pb(str(csv), str(bad))


def _payload(path: Path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()


def test_official_muon_and_pileup_files_evaluate_by_input_name():
    """MUO (inputs eta/abseta, pt, scale_factors: nominal/systup/systdown) and LUM (NumTrueInteractions,
    weights: nominal/up/down) through the same call the processor makes."""
    muon = _payload(shared("opendata2016", "muon_Z.json.gz"))
    pt, eta = np.array([60.0, 120.0, 400.0]), np.array([0.3, -1.4, 2.2])
    sf = {v: evaluate(muon, "NUM_TightID_DEN_TrackerMuons", v, pt=pt, eta=eta) for v in ("nominal", "up", "down")}
    assert np.all(sf["down"] < sf["nominal"]) and np.all(sf["nominal"] < sf["up"])
    assert np.all(np.abs(sf["nominal"] - 1) < 0.1)
    high_pt = _payload(shared("pog", "MUO", "2016postVFP_UL", "ScaleFactors_Muon_highPt_IDISO_2016_schemaV2.json"))
    assert np.all(evaluate(high_pt, "NUM_TightID_DEN_GlobalMuonProbes", pt=pt, eta=eta) > 0.9)
    pileup = _payload(shared("opendata2016", "puWeights.json.gz"))
    n = np.array([5.0, 25.0, 45.0])
    w = {v: evaluate(pileup, "Collisions16_UltraLegacy_goldenJSON", v, ntrueint=n) for v in ("nominal", "up", "down")}
    assert np.all(w["nominal"] > 0) and not np.allclose(w["up"], w["down"])
