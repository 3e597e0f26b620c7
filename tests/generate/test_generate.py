"""The generated default dataset: readable as NanoAOD, physically sane, normalised, reproducible."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import awkward as ak
import numpy as np
import pytest
import uproot
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

from tests.conftest import small_config
from zprime_grad.generate import generate_dataset
from zprime_grad.generate.samples import BR_TT_SEMILEPTONIC_MU_TAU

NanoAODSchema.warn_missing_crossrefs = False

REQUIRED = {
    "run": "uint32", "luminosityBlock": "uint32", "event": "uint64", "genWeight": "float32",
    "HLT_TkMu50": "bool", "HLT_Mu50": "bool", "HLT_IsoMu24": "bool", "PV_npvs": "int32",
    "Muon_pt": "float32", "Muon_charge": "int32", "Muon_tightId": "bool", "Muon_mediumId": "bool",
    "Muon_pfRelIso04_all": "float32", "Muon_miniPFRelIso_all": "float32", "Muon_miniIsoId": "uint8",
    "Electron_cutBased": "int32", "Electron_pfRelIso03_all": "float32",
    "Jet_btagDeepB": "float32", "Jet_btagDeepFlavB": "float32", "Jet_jetId": "int32", "Jet_hadronFlavour": "int32",
    "FatJet_msoftdrop": "float32", "FatJet_particleNet_TvsQCD": "float32", "FatJet_jetId": "int32",
    "MET_pt": "float32", "MET_phi": "float32", "MET_sumEt": "float32", "PuppiMET_pt": "float32", "PuppiMET_phi": "float32",
    # read by the AGC analysis (processors/agc_branches.py)
    "Jet_btagCSVV2": "float32", "Muon_sip3d": "float32", "Muon_ip3d": "float32",
    "Electron_sip3d": "float32", "Electron_ip3d": "float32",
    # pile-up labels (generate/pileup.py); real data have no Pileup_* branches
    "fixedGridRhoFastjetAll": "float32", "Pileup_nTrueInt": "float32", "Pileup_nPU": "int32",
}
MC_ONLY = ("genWeight", "Pileup_nTrueInt", "Pileup_nPU")


def fileset(generated) -> dict:
    return json.loads(generated.fileset.read_text())


def events(generated, dataset: str):
    files = fileset(generated)[dataset]["files"]
    arrays = [NanoEventsFactory.from_root({f: "Events"}, schemaclass=NanoAODSchema, mode="eager").events() for f in files]
    return ak.concatenate(arrays)


def test_fileset_lists_every_sample_and_data(generated):
    fs = fileset(generated)
    assert set(fs) == set(generated.config.generate.samples) | {"data"}
    for name, entry in fs.items():
        meta = entry["metadata"]
        assert meta["process"] and meta["variation"] == "nominal"
        assert meta["is_data"] == (name == "data")
        for path, tree in entry["files"].items():
            assert tree == "Events" and path.endswith(".root")


def test_files_are_nanoaod_ttrees_with_v9_types(generated):
    for name, entry in fileset(generated).items():
        for path in entry["files"]:
            with uproot.open(path) as f:
                tree = f["Events"]
                assert isinstance(tree, uproot.TTree)
                types = {k: str(b.interpretation.numpy_dtype if not hasattr(b.interpretation, "content") else b.interpretation.content.numpy_dtype) for k, b in tree.items()}
                for branch, dtype in REQUIRED.items():
                    if name == "data" and branch in MC_ONLY:
                        assert branch not in types
                        continue
                    assert branch in types, f"{branch} missing in {path}"
                    assert np.dtype(types[branch]) == np.dtype(dtype), (branch, types[branch])
                runs = f["Runs"].arrays(library="np")
                if name != "data":
                    assert runs["genEventSumw"][0] == pytest.approx(float(tree["genWeight"].array(library="np").astype(np.float64).sum()))


def test_every_file_opens_with_coffea(generated):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for name, entry in fileset(generated).items():
            for f in entry["files"]:  # file by file: cross-references do not survive ak.concatenate
                ev = NanoEventsFactory.from_root({f: "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
                assert len(ev) > 0
                # touch the collections the analysis uses, including cross-references
                assert ak.all(ak.num(ev.Jet.pt) >= 0) and ak.all(ev.FatJet.msoftdrop >= 0)
                _ = ev.Muon.matched_jet.pt, ev.Jet.matched_muons.pt, ev.MET.pt, ev.PuppiMET.phi


def test_zprime_ttbar_system_peaks_at_the_configured_mass(generated):
    mass = generated.config.generate.samples["zprime"].mass
    masses = []
    for f in fileset(generated)["zprime"]["files"]:  # per file: GenPart.parent indexes within its own file
        gen = NanoEventsFactory.from_root({f: "Events"}, schemaclass=NanoAODSchema, mode="eager").events().GenPart
        tops = gen[(abs(gen.pdgId) == 6) & ak.fill_none(gen.parent.pdgId == 32, False)]
        assert ak.all(ak.num(tops) == 2), f
        masses.append((tops[:, 0] + tops[:, 1]).mass)
    mtt = ak.concatenate(masses)
    counts, edges = np.histogram(ak.to_numpy(mtt), bins=np.linspace(0.5 * mass, 1.5 * mass, 41))
    peak = 0.5 * (edges[counts.argmax()] + edges[counts.argmax() + 1])
    assert abs(peak - mass) < 0.03 * mass
    # last-copy tops have radiated (FSR), so the tail is low-side only; most events sit near the pole
    assert np.mean(np.abs(ak.to_numpy(mtt) - mass) < 0.1 * mass) > 0.5


def _weighted_mean(values, weights):
    return float(np.sum(values * weights) / np.sum(weights))


def test_signal_fat_jets_are_harder_than_wjets(generated):
    lead = {}
    for name in ("zprime", "wjets"):
        ev = events(generated, name)
        has = ak.num(ev.FatJet) > 0
        lead[name] = _weighted_mean(ak.to_numpy(ev.FatJet.pt[has][:, 0]), ak.to_numpy(ev.genWeight[has]))
    assert lead["zprime"] > 1.5 * lead["wjets"]


def test_ttbar_has_more_b_tagged_jets_than_wjets(generated):
    nb = {}
    for name in ("ttbar_highpt", "wjets"):
        jets = events(generated, name).Jet
        tagged = (jets.pt > 30) & (abs(jets.eta) < 2.4) & (jets.btagDeepFlavB > 0.3093)
        nb[name] = float(ak.mean(ak.sum(tagged, axis=1)))
    assert nb["ttbar_highpt"] > 1.0 > 2 * nb["wjets"]


def test_b_tag_efficiency_matches_the_calibrated_working_point(generated):
    jets = ak.flatten(events(generated, "ttbar_lowpt").Jet)
    central = (jets.pt > 30) & (jets.pt < 200) & (abs(jets.eta) < 2.4)
    b, light = central & (jets.hadronFlavour == 5), central & (jets.hadronFlavour == 0)
    eff_b = float(ak.mean(jets.btagDeepFlavB[b] > 0.3093))
    eff_light = float(ak.mean(jets.btagDeepFlavB[light] > 0.3093))
    n_b = int(ak.sum(b))
    assert abs(eff_b - 0.77) < 4 * np.sqrt(0.77 * 0.23 / n_b) + 0.01
    assert eff_light < 0.03


def test_csvv2_separates_flavours_at_the_agc_working_point(generated):
    jets = ak.flatten(ak.concatenate([events(generated, n).Jet for n in ("ttbar_lowpt", "ttbar_midpt")]))
    central = (jets.pt > 30) & (jets.pt < 200) & (abs(jets.eta) < 2.4)
    eff, n = {}, {}
    for flavour in (5, 4, 0):
        sel = central & (jets.hadronFlavour == flavour)
        n[flavour] = int(ak.sum(sel))
        eff[flavour] = float(ak.mean(jets.btagCSVV2[sel] > 0.5))
    assert min(n.values()) > 50, n
    assert abs(eff[5] - 0.81) < 4 * np.sqrt(0.81 * 0.19 / n[5]) + 0.01  # the calibration (detector.py)
    assert eff[5] > 2 * eff[4] and eff[4] > 2 * eff[0] and eff[0] < 0.15, eff
    scores = ak.to_numpy(jets.btagCSVV2[central])
    assert np.all((scores >= 0) & (scores <= 1))
    assert ak.all(jets.btagCSVV2[abs(jets.eta) > 2.5] == -1)  # no tracks, no score
    # one tagger family: CSVv2 follows DeepCSV jet by jet
    assert np.corrcoef(scores, ak.to_numpy(jets.btagDeepB[central]))[0, 1] > 0.7


def test_sip3d_separates_prompt_from_heavy_flavour_leptons(generated):
    """Isolated muons of tt̄ are mostly from the W (prompt), non-isolated ones from b/c decays:
    the AGC's sip3d < 4 keeps nearly all of the first and visibly fewer of the second."""
    muons = ak.flatten(ak.concatenate([events(generated, n).Muon for n in ("ttbar_lowpt", "ttbar_midpt", "ttbar_highpt")]))
    assert ak.all(muons.sip3d >= 0) and ak.all(muons.ip3d >= 0)
    prompt = muons[(muons.pt > 30) & (muons.pfRelIso04_all < 0.15)]
    non_isolated = muons[muons.pfRelIso04_all > 0.5]
    assert len(prompt) > 100 and len(non_isolated) > 100
    passing = {k: float(ak.mean(m.sip3d < 4)) for k, m in (("prompt", prompt), ("non_isolated", non_isolated))}
    assert passing["prompt"] > 0.95 and passing["non_isolated"] < passing["prompt"] - 0.1, passing


def test_agc_branches_come_from_their_own_random_stream():
    """The AGC quantities draw from ``extra_rng`` only: another extra stream changes them and nothing
    else, so adding them kept every earlier branch of the default dataset bit-identical."""
    import pythia8mc

    from zprime_grad.config import SampleConfig
    from zprime_grad.generate import nanoaod, truth
    from zprime_grad.generate.samples import pythia_setup

    setup = pythia_setup(SampleConfig(kind="ttbar", xsec_pb=831.76), sqrt_s=13000.0, underlying_event=False,
                         seed=5, file_index=0)
    pythia = pythia8mc.Pythia("", False)
    for line in setup.settings:
        assert pythia.readString(line)
    assert pythia.init()
    t = truth.from_batch(pythia.nextBatch(150), pythia.particleData.charge)
    agc = {("Jet", "btagCSVV2"), ("Muon", "sip3d"), ("Muon", "ip3d"), ("Electron", "sip3d"), ("Electron", "ip3d")}
    runs = [nanoaod.reconstruct(t, np.random.default_rng(1), 0, extra_rng=np.random.default_rng(extra)) for extra in (2, 3)]
    changed = set()
    for name, value in runs[0].items():
        other = runs[1][name]
        if isinstance(value, ak.Array):
            for field in value.fields:
                a, b = ak.flatten(value[field]), ak.flatten(other[field])
                if (name, field) in agc:
                    changed |= {(name, field)} if not ak.all(a == b) else set()
                else:
                    assert ak.all(a == b), (name, field)
        else:
            np.testing.assert_array_equal(value, other, err_msg=name)
    assert changed == agc


def test_weights_reproduce_the_expected_yield(generated):
    fs = fileset(generated)
    lumi = generated.config.analysis.lumi_pb
    tt = [m["metadata"] for k, m in fs.items() if m["metadata"]["process"] == "ttbar"]
    # the pT-hat slices of ttbar share its inclusive cross section
    assert sum(m["xsec"] for m in tt) == pytest.approx(831.76 * BR_TT_SEMILEPTONIC_MU_TAU, rel=1e-9)
    for name, entry in fs.items():
        meta = entry["metadata"]
        if meta["is_data"]:
            continue
        w = np.concatenate([uproot.open(f)["Events"]["genWeight"].array(library="np").astype(np.float64) for f in entry["files"]])
        sumw_runs = sum(float(uproot.open(f)["Runs"]["genEventSumw"].array(library="np").sum()) for f in entry["files"])
        assert sumw_runs == pytest.approx(meta["sumw"], rel=1e-9)
        assert len(w) == meta["nevents"]
        yield_ = np.sum(meta["xsec"] * lumi * w / sumw_runs)
        assert yield_ == pytest.approx(meta["xsec"] * lumi, rel=1e-6)


def test_pseudo_data_is_a_poisson_draw_of_the_prediction(generated):
    """Data of the certified lumi sections in the stream-filtered region agree with the MC prediction
    (at analysis.lumi_pb, the certified luminosity) within Poisson errors."""
    fs, lumi, cfg = fileset(generated), generated.config.analysis.lumi_pb, generated.config.generate.data
    predicted = 0.0
    for name, entry in fs.items():
        meta = entry["metadata"]
        if meta["is_data"] or generated.config.generate.samples[name].kind == "zprime":
            continue
        ev = events(generated, name)
        trig = ev.HLT.Mu50 | ev.HLT.TkMu50 | ev.HLT.IsoMu24
        sel = trig & ak.any(ev.Muon.pt > cfg.muon_pt_min, axis=1) & ak.any(ev.FatJet.pt > cfg.fatjet_pt_min, axis=1)
        predicted += float(np.sum(ak.to_numpy(ev.genWeight[sel]))) * meta["xsec"] * lumi / meta["sumw"]
    observed = fs["data"]["metadata"]["nevents_certified"]
    assert predicted > 20
    assert abs(observed - predicted) < 5 * np.sqrt(predicted)


def _content(fs_path) -> dict:
    fs = json.loads(fs_path.read_text())
    out = {}
    for name, entry in fs.items():
        for path in entry["files"]:
            arrays = uproot.open(path)["Events"].arrays(library="np")
            for branch, values in arrays.items():
                out[(name, branch)] = values
    return out


def test_same_seed_same_events_and_cache_reuse(tmp_path):
    config = small_config(
        events=120, samples={"zprime": small_config().generate.samples["zprime"].model_dump()}, data={"enabled": False}
    )
    first = generate_dataset(config, tmp_path / "a", seed=11, progress=False)
    again = generate_dataset(config, tmp_path / "b", seed=11, progress=False)
    other = generate_dataset(config, tmp_path / "c", seed=12, progress=False)
    a, b, c = _content(first), _content(again), _content(other)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.concatenate(list(a[key])) if a[key].dtype == object else a[key],
                                      np.concatenate(list(b[key])) if b[key].dtype == object else b[key], err_msg=str(key))
    assert not np.array_equal(a[("zprime", "MET_pt")], c[("zprime", "MET_pt")])
    # a second call with the same settings regenerates nothing
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.root")}
    generate_dataset(config, tmp_path / "a", seed=11, progress=False)
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.root")}


def test_bad_config_field_names_the_field_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generate:\n  events: many\n  samples:\n    zprime: {kind: zprime, mass: 2000, colour: red}\n")
    result = subprocess.run(
        [sys.executable, "-m", "zprime_grad.cli", "generate", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(bad) in result.stderr
    assert "generate.events" in result.stderr
    assert "generate.samples.zprime.colour" in result.stderr


def test_slices_must_tile_the_phase_space():
    from zprime_grad.config import ConfigError

    with pytest.raises(ConfigError, match="must meet"):
        small_config(samples={
            "lo": {"kind": "ttbar", "process": "ttbar", "xsec_pb": 831.76, "pthat_max": 100.0},
            "hi": {"kind": "ttbar", "process": "ttbar", "xsec_pb": 831.76, "pthat_min": 150.0},
        })


# ------------------------------------------------------------------ two-point scale variations
TT = {"kind": "ttbar", "process": "ttbar", "xsec_pb": 729.84}
SCALE_EVENTS = 500


def _scale_config(samples: dict, events: int = SCALE_EVENTS):
    return small_config(events=events, events_per_file=events, samples=samples, data={"enabled": False})


def _jets_above_30(path) -> np.ndarray:
    pt = uproot.open(path)["Events"]["Jet_pt"].array(library="ak")
    return ak.to_numpy(ak.sum(pt > 30.0, axis=1))


@pytest.mark.parametrize("bad", [0.0, -2.0, float("nan"), float("inf"), 20.0])
def test_bad_scale_multiplier_is_refused_naming_the_field(bad):
    from zprime_grad.config import ConfigError

    with pytest.raises(ConfigError, match=r"field 'generate\.samples\.ttbar_scaleup\.scale_multiplier'"):
        _scale_config({"ttbar": TT, "ttbar_scaleup": {**TT, "variation": "scaleup", "scale_multiplier": bad}})


def test_varied_scales_need_a_variation_and_variations_tile_on_their_own():
    from zprime_grad.config import ConfigError

    with pytest.raises(ConfigError, match="scale_multiplier != 1 is a systematic variation"):
        _scale_config({"ttbar": {**TT, "scale_multiplier": 2.0}})
    # nominal slices [0, 100) + [100, inf) and one unsliced scaleup sample: each (process, variation) tiles
    config = _scale_config({"lo": {**TT, "pthat_max": 100.0}, "hi": {**TT, "pthat_min": 100.0},
                            "up": {**TT, "variation": "scaleup", "scale_multiplier": 2.0}})
    assert config.generate.samples["up"].variation == "scaleup"
    with pytest.raises(ConfigError, match=r"of process 'ttbar \(scaleup\)' must meet"):
        _scale_config({"ttbar": TT, "up_lo": {**TT, "variation": "scaleup", "scale_multiplier": 2.0, "pthat_max": 100.0},
                       "up_hi": {**TT, "variation": "scaleup", "scale_multiplier": 2.0, "pthat_min": 150.0}})


def test_new_sample_fields_at_their_defaults_keep_every_file_name():
    """variation / scale_multiplier at their defaults are left out of the dump that names the files."""
    from zprime_grad.config import SampleConfig
    from zprime_grad.generate.production import FileJob

    def key(**fields):
        return FileJob("ttbar", SampleConfig(**TT, **fields), 0, 100, 42, 13000.0, False, 500, "out").key

    assert key() == key(variation="nominal", scale_multiplier=1.0)
    assert "variation" not in SampleConfig(**TT).model_dump() and "scale_multiplier" not in SampleConfig(**TT).model_dump()
    assert len({key(), key(variation="scaleup", scale_multiplier=2.0), key(variation="scaledown", scale_multiplier=0.5),
                key(variation="scaleup")}) == 4


def test_scale_variations_are_real_pythia_variations(tmp_path):
    """Same sample name, same seed: nominal, x2 and x0.5 scales are different events (Pythia's random
    numbers are the same), the fileset carries the variation at the nominal cross section, and the
    jet multiplicity moves by more than 3 standard errors between x2 and x0.5 (measured with this seed:
    <N jets > 30 GeV> 4.41 for x2, 4.39 nominal, 4.08 for x0.5: the larger alpha_s of x0.5 radiates more,
    and final-state radiation out of the R = 0.4 cones drops jets below 30 GeV)."""
    nominal = _scale_config({"ttbar": TT})
    first = generate_dataset(nominal, tmp_path / "nominal", seed=5, progress=False)
    again = generate_dataset(nominal, tmp_path / "again", seed=5, progress=False)
    n_jets, sets = {}, {}
    for variation, m in (("scaleup", 2.0), ("scaledown", 0.5)):
        config = _scale_config({"ttbar": {**TT, "variation": variation, "scale_multiplier": m}})
        sets[variation] = json.loads(generate_dataset(config, tmp_path / variation, seed=5, progress=False).read_text())
    sets["nominal"], sets["again"] = json.loads(first.read_text()), json.loads(again.read_text())
    for name, fs in sets.items():
        (path,) = fs["ttbar"]["files"]
        n_jets[name] = _jets_above_30(path)
    np.testing.assert_array_equal(n_jets["nominal"], n_jets["again"])  # the seed alone fixes the events
    assert not np.array_equal(n_jets["nominal"], n_jets["scaleup"])
    assert not np.array_equal(n_jets["nominal"], n_jets["scaledown"])
    meta = {name: fs["ttbar"]["metadata"] for name, fs in sets.items()}
    assert [meta[v]["variation"] for v in ("nominal", "scaleup", "scaledown")] == ["nominal", "scaleup", "scaledown"]
    assert meta["scaleup"]["xsec"] == meta["scaledown"]["xsec"] == meta["nominal"]["xsec"]
    assert meta["scaleup"]["two_point_variations"] == {"ttbar": ["scaleup"]}
    assert "two_point_variations" not in meta["nominal"]
    mean = {k: v.mean() for k, v in n_jets.items()}
    err = {k: v.std() / np.sqrt(len(v)) for k, v in n_jets.items()}
    assert abs(mean["scaledown"] - mean["scaleup"]) > 3 * np.hypot(err["scaledown"], err["scaleup"]), (mean, err)
