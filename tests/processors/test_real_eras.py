"""Real CMS NanoAOD of Run 2 UL (v9) and Run 3 (v11) through the skim with their era, corrections in the
POG schemas, the certified-luminosity mask on a real data file, and the official POG files swapped in for
the shipped ones with no code change. The real files come from ../shared/data (skipped when absent)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import uproot
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

from zprime_grad import eras
from zprime_grad.config import parse_config
from zprime_grad.era_inputs import SHIPPED_CORRECTIONS, correction_keys
from zprime_grad.errors import UserError
from zprime_grad.skim.pipeline import make_processor

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
RUN2_UL = ("2016preVFP_UL", "2016postVFP_UL", "2017_UL", "2018_UL")
RUN3 = ("2022", "2022EE", "2023", "2023BPix", "2024")
RUN2_ONLY_NAMES = ("btagDeepB", "HLT_TkMu50", "fixedGridRhoFastjetAll or", "Jet_btagDeepB")
NanoAODSchema.warn_missing_crossrefs = False


def shared(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/data/{'/'.join(parts)} is not beside this checkout")
    return path


def pog_file_for(era: str, tagger: str | None, directory: Path) -> Path:
    """A correctionlib file in the POG schemas under the era's own correction names: the shipped
    corrections (same schemas as MUO, BTV, LUM, JME) renamed, as an analyst's file of that era would be."""
    shipped = json.loads(Path(SHIPPED_CORRECTIONS).read_text())
    by_name = {c["name"]: c for c in shipped["corrections"]}
    generated = correction_keys(parse_config({}).analysis)
    wanted = correction_keys(parse_config({"analysis": {"era": era, "tagger": tagger}}).analysis)
    out = []
    for kind, names in wanted.items():
        for ours, theirs in zip(generated[kind] * len(names), names):
            out.append({**by_name[ours], "name": theirs})
    path = directory / f"pog_{era}.json"
    path.write_text(json.dumps({"schema_version": 2, "corrections": out}))
    return path


def processor_for(era: str, directory: Path, *, tagger: str | None = None, golden: Path | None = None, **extra):
    pog = str(pog_file_for(era, tagger, directory))
    analysis = {"era": era, "tagger": tagger, "corrections": {k: pog for k in ("muon", "btag", "pileup", "jme")},
                "golden_json": str(golden) if golden else None, **extra}
    return make_processor(parse_config({"analysis": analysis}))


def skim_file(processor, path: Path, **metadata):
    metadata = {"dataset": "d", "filename": str(path), **metadata}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        events = NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=NanoAODSchema, mode="virtual",
                                             metadata=metadata).events()
    return processor.process(events)["chunks"][0]


@pytest.mark.parametrize("era", RUN2_UL)
@pytest.mark.parametrize("name", ["DYJetsToLL--UL17_v6-v2_109_Skim.root", "pfnano.root"])
def test_run2_ul_mc_skims_with_each_run2_era(era, name, tmp_path):
    path = shared("nanoaod", "coffea" if name == "pfnano.root" else "higgsdna", name)
    chunk = skim_file(processor_for(era, tmp_path), path, xsec=1.0)
    assert chunk.provenance["entries_read"] > 0 and chunk.n_events >= 0
    assert {"pileup_up", "pileup_down", "muon_sf_up", "btag_sf_up"} <= set(chunk.weights)


@pytest.mark.parametrize("era", RUN3)
def test_run3_v11_mc_completes_or_names_a_missing_physics_input(era, tmp_path):
    """v11 (2022 NanoAOD) has DeepJet and ParticleNet-TvsQCD, not the v12+ PNet/RobustParT AK4 taggers
    or particleNetWithMass: each era either skims it or names what is missing — never a Run 2 branch."""
    path = shared("nanoaod", "higgsdna", "GJet_v11_Skim.root")
    try:
        chunk = skim_file(processor_for(era, tmp_path), path, xsec=1.0)
    except UserError as err:
        message = str(err)
        assert "GJet_v11_Skim.root: required branch(es) missing" in message
        assert not any(name in message for name in RUN2_ONLY_NAMES), message
        assert "btagPNetB" in message or "btagUParTAK4B" in message or "particleNetWithMass" in message
    else:
        assert chunk.provenance["entries_read"] == 100
    chunk = skim_file(processor_for("2022", tmp_path, tagger="deepjet"), path, xsec=1.0)  # DeepJet is in v11
    assert chunk.provenance["entries_read"] == 100 and "pileup_up" in chunk.weights


@pytest.mark.parametrize("certified,removed", [([[1, 66]], 100), ([[60, 70]], 0), ([[67, 67]], 0)])
def test_lumi_mask_keeps_exactly_the_certified_events_of_real_run3_data(certified, removed, tmp_path):
    path = shared("nanoaod", "higgsdna", "EGamma_F_Skim.root")  # run 360393, lumi section 67
    with uproot.open(path) as f:
        ids = f["Events"].arrays(["run", "luminosityBlock"], library="np")
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps({"360393": certified}))
    expected = sum(int(((ids["run"] == 360393) & (ids["luminosityBlock"] >= a) & (ids["luminosityBlock"] <= b)).sum())
                   for a, b in certified)
    chunk = skim_file(processor_for("2022", tmp_path, tagger="deepjet", golden=golden), path, is_data=True)
    assert chunk.provenance["lumi_mask_removed"] == removed == len(ids["run"]) - expected


def test_real_run3_data_without_a_golden_json_names_the_field(tmp_path):
    path = shared("nanoaod", "higgsdna", "EGamma_F_Skim.root")
    with pytest.raises(UserError, match=r"EGamma_F_Skim\.root: data of era 2022 need a certified-luminosity JSON"):
        skim_file(processor_for("2022", tmp_path, tagger="deepjet"), path, is_data=True)
    chunk = skim_file(processor_for("2022", tmp_path, tagger="deepjet", golden_json="none"), path, is_data=True)
    assert chunk.provenance["lumi_mask_removed"] == 0  # 'none': taken knowingly, nothing removed


def test_official_pog_files_swap_in_for_the_shipped_ones_with_no_code_change(tmp_path):
    """2016postVFP_UL with the published analysis' official MUO and LUM files (and, where ../shared has no
    official file, BTV/JME in the same schemas) on a generated-format NanoAOD: the same code path."""
    from zprime_grad.skim.toy import write_toy_nanoaod

    muon, pileup = shared("opendata2016", "muon_Z.json.gz"), shared("opendata2016", "puWeights.json.gz")
    pog = pog_file_for("2016postVFP_UL", "deepcsv", tmp_path)
    config = parse_config({"analysis": {"era": "2016postVFP_UL", "tagger": "deepcsv", "corrections": {
        "muon": str(muon), "pileup": str(pileup), "btag": str(pog), "jme": str(pog)}}})
    toy = write_toy_nanoaod(tmp_path / "mc.root", 2000, seed=7)
    chunk = skim_file(make_processor(config), toy, xsec=10.0)
    n = chunk.n_events
    assert n > 50
    from zprime_grad.corrections import evaluate

    payload = (__import__("gzip").decompress(pileup.read_bytes())).decode()
    with uproot.open(toy) as f:
        events = f["Events"].arrays(["event", "Pileup_nTrueInt"], library="np")
    n_true = dict(zip(events["event"], events["Pileup_nTrueInt"]))
    w = {v: evaluate(payload, "Collisions16_UltraLegacy_goldenJSON", v,
                     ntrueint=np.array([n_true[e] for e in chunk.ids["event"][:n]])) for v in ("nominal", "up")}
    ratio = chunk.weights["pileup_up"][:n] / chunk.weights["nominal"][:n]
    assert np.allclose(ratio, w["up"] / w["nominal"], rtol=1e-5)  # the official LUM weights, event by event


def test_run3_v12_names_resolve_on_a_file_written_with_them(tmp_path):
    """No v12/v13 file is in ../shared: a NanoAOD written with the v12 names (no DeepCSV, PNet AK4 tagger,
    particleNetWithMass top tagger, Rho_ collection, Run 3 muon triggers) skims under era 2022EE."""
    from zprime_grad.skim.toy import toy_events

    branches = toy_events(1500, seed=11)
    import awkward as ak

    jets, fat = branches.pop("Jet"), branches.pop("FatJet")
    branches["Jet"] = ak.zip({**{f: jets[f] for f in ak.fields(jets) if f != "btagDeepB"},
                              "btagPNetB": jets["btagDeepFlavB"]})
    branches["FatJet"] = ak.zip({**{f: fat[f] for f in ak.fields(fat) if f != "particleNet_TvsQCD"},
                                 "particleNetWithMass_TvsQCD": fat["particleNet_TvsQCD"]})
    branches["Rho_fixedGridRhoFastjetAll"] = branches.pop("fixedGridRhoFastjetAll")
    branches["HLT_CascadeMu100"] = branches.pop("HLT_TkMu50")
    path = tmp_path / "v12.root"
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in branches.items()})
        f["Events"].extend(branches)
    chunk = skim_file(processor_for("2022EE", tmp_path), path, xsec=1.0, sumw=1000.0)
    assert chunk.n_events > 50
    era = eras.era("2022EE")
    assert processor_for("2022EE", tmp_path).channels[0].cuts[2].cuts[0].init == era.taggers["particlenet"].wp["M"]


def test_processor_options_are_typed_and_reach_the_processor(tmp_path):
    path = shared("nanoaod", "higgsdna", "DYJetsToLL--UL17_v6-v2_109_Skim.root")
    assert processor_for("2017_UL", tmp_path).inputs.era.met == ("MET",)
    chosen = processor_for("2017_UL", tmp_path, options={"met": "PuppiMET"})
    assert chosen.inputs.era.met == ("PuppiMET",) and skim_file(chosen, path, xsec=1.0).provenance["entries_read"] == 100
    with pytest.raises(UserError, match=r"analysis\.options\.met: Input should be 'PuppiMET' or 'MET' \(got 'TkMET'\)"):
        processor_for("2017_UL", tmp_path, options={"met": "TkMET"})
    with pytest.raises(UserError, match=r"analysis\.options\.btag: Extra inputs are not permitted"):
        processor_for("2017_UL", tmp_path, options={"btag": "x"})


def test_zprime_grad_skim_with_era_2022_on_run3_mc_and_data(tmp_path):
    """The command a user runs: `zprime-grad skim` with analysis.era 2022 on the Run 3 v11 MC and data
    files, the POG-format corrections and a golden JSON; skim.json counts what the mask removed."""
    import yaml

    from zprime_grad.cli import main

    mc, data = shared("nanoaod", "higgsdna", "GJet_v11_Skim.root"), shared("nanoaod", "higgsdna", "EGamma_F_Skim.root")
    pog = str(pog_file_for("2022", "deepjet", tmp_path))
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps({"360393": [[1, 66]]}))  # EGamma_F is lumi section 67: every event removed
    config = tmp_path / "era2022.yaml"
    config.write_text(yaml.safe_dump({
        "analysis": {"era": "2022", "tagger": "deepjet", "golden_json": str(golden),
                     "corrections": {k: pog for k in ("muon", "btag", "pileup", "jme")}},
        "skim": {"executor": "iterative"}}))
    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps({"gjet": {"files": {str(mc): "Events"}, "metadata": {"xsec": 1.0, "process": "gjet"}},
                                   "egamma": {"files": {str(data): "Events"}, "metadata": {"is_data": True}}}))
    out = tmp_path / "skim"
    assert main(["skim", str(config), "--fileset", str(fileset), "--out", str(out)]) == 0
    report = json.loads((out / "skim.json").read_text())
    assert report["datasets"]["gjet"]["entries_read"] == 100
    assert report["datasets"]["egamma"]["lumi_mask_removed"] == 100
    config.write_text(yaml.safe_dump({"analysis": {"era": "2022"}, "skim": {"executor": "iterative"}}))
    assert main(["skim", str(config), "--fileset", str(fileset), "--out", str(tmp_path / "again")]) == 2
