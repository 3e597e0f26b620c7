"""The Z'→tt̄ processor on real coffea executors, real ROOT files (toy and CMS NanoAOD)."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

from zprime_grad.era_inputs import SHIPPED_CORRECTIONS, default_inputs
from zprime_grad.errors import UserError
from zprime_grad.skim.toy import write_toy_nanoaod
from zprime_grad_processors import zprime_reco as reco
from zprime_grad_processors import zprime_systematics as syst
from zprime_grad_processors.padded import Objects
from zprime_grad_processors.zprime_ttbar import ZprimeTTbarProcessor

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "nanoaod"
NanoAODSchema.warn_missing_crossrefs = False


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    return {"mc": str(write_toy_nanoaod(d / "mc.root", 3000, seed=3)),
            "data": str(write_toy_nanoaod(d / "data.root", 1500, seed=4, is_data=True)),
            "no_tight_id": str(write_toy_nanoaod(d / "bad.root", 50, seed=5, drop=["Muon_tightId"]))}


def events_of(path, **metadata):
    metadata = {"dataset": "d", "filename": str(path), **metadata}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=NanoAODSchema,
                                           mode="virtual", metadata=metadata).events()


def skim(path, **metadata):
    return ZprimeTTbarProcessor().process(events_of(path, **metadata))["chunks"][0]


@pytest.fixture(scope="module")
def mc_chunk(toy):
    return skim(toy["mc"], xsec=5.0)


def test_columns_are_float32_bucketed_and_padding_has_no_weight(mc_chunk):
    c = mc_chunk
    assert 0 < c.n_events < c.length and c.length in (256, 1024, 4096)
    for arrays in (c.columns, c.weights, *c.variations.values()):
        for name, a in arrays.items():
            assert a.dtype == np.float32 and a.shape[0] == c.length, name
    assert c.columns["jet_pt"].shape == (c.length, 8) and c.columns["fatjet_pt"].shape == (c.length, 4)
    pad = slice(c.n_events, None)
    assert not c.weights["nominal"][pad].any() and not c.columns["baseline"][pad].any()
    assert (c.ids["event"][pad] == -1).all()
    assert np.array_equal(c.columns["parity"][: c.n_events], c.ids["event"][: c.n_events] % 2)
    # padded object slots are masked and zero; real slots are ordered by pT
    jets, mask = c.columns["jet_pt"], c.columns["jet_mask"]
    assert not jets[mask == 0].any()
    assert (np.diff(jets[: c.n_events], axis=1)[mask[: c.n_events, 1:] > 0] <= 0).all()
    assert sorted(c.variations) == ["jer_down", "jer_up", "jes_down", "jes_up"]


def test_skim_baseline_holds_per_variation(mc_chunk):
    c, n = mc_chunk, mc_chunk.n_events
    for var in ("nominal", "jes_up", "jes_down", "jer_up", "jer_down"):
        cols = c.view(var)
        passed = cols["baseline"][:n] > 0
        assert ((cols["n_jets"][:n] >= 2) & (cols["n_fatjets"][:n] >= 1) == passed).all()
        assert (cols["jet_pt"][:n][cols["jet_mask"][:n] > 0] > 30).all()
        assert (cols["fatjet_pt"][:n][cols["fatjet_mask"][:n] > 0] > 200).all()
    assert (c.columns["muon_pt"][:n] > 55).all()
    # each kept event passes in at least one variation
    any_pass = np.logical_or.reduce([c.view(v)["baseline"][:n] > 0 for v in ["nominal", *c.variations]])
    assert any_pass.all()
    # JES up moves jets up, so the summed jet pT of nominal-passing events grows
    assert c.view("jes_up")["st"][:n].sum() > c.columns["st"][:n].sum()


def test_event_weights_follow_xsec_lumi_genweight_and_runs_sumw(toy, mc_chunk):
    import uproot

    with uproot.open(toy["mc"]) as f:
        sumw = f["Runs"]["genEventSumw"].array(library="np").sum()
        events = f["Events"].arrays(["event", "genWeight", "Pileup_nTrueInt"], library="np")
    gen = dict(zip(events["event"], events["genWeight"]))
    n_true = dict(zip(events["event"], events["Pileup_nTrueInt"]))
    c, n = mc_chunk, mc_chunk.n_events
    sf = syst.muon_sf(c.columns["muon_pt"][:n], c.columns["muon_eta"][:n], default_inputs())
    pileup = syst.pileup_weight(np.array([n_true[e] for e in c.ids["event"][:n]]), default_inputs())
    assert np.ptp(pileup["nominal"]) > 0.1  # the weight is not a constant
    expected = (np.array([gen[e] for e in c.ids["event"][:n]]) * 5.0 * 16400.0 / sumw * sf["nominal"]
                * pileup["nominal"])
    # events without a medium b tag carry no b-tag SF: nominal = xsec·lumi·genWeight/Σw × muon SF exactly
    untagged = ((c.columns["jet_btag"][:n] * c.columns["jet_mask"][:n]) < 0.6321).all(axis=1)
    untagged &= c.columns["n_jets"][:n] <= 8
    assert untagged.sum() > 10
    assert np.allclose(c.weights["nominal"][:n][untagged], expected[untagged], rtol=1e-5)
    btag_sf = c.weights["nominal"][:n] / expected
    assert np.allclose(btag_sf[untagged], 1.0) and ((btag_sf > 0.8) & (btag_sf < 1.3)).all()
    assert (btag_sf[~untagged] != 1.0).any()


def _bin_lookup(node, values):
    """Walk a correctionlib JSON node by hand (no correctionlib): category by key, (multi)binning by edges."""
    while isinstance(node, dict):
        if node["nodetype"] == "binning":
            edges = [float(e) for e in node["edges"]]
            i = int(np.clip(np.searchsorted(edges, values[node["input"]], side="right") - 1, 0, len(edges) - 2))
            node = node["content"][i]
        elif node["nodetype"] == "category":
            node = next(i["value"] for i in node["content"] if i["key"] == values[node["input"]])
        elif node["nodetype"] == "multibinning":
            idx = 0
            for name, edges in zip(node["inputs"], node["edges"]):
                i = int(np.clip(np.searchsorted(edges, values[name], side="right") - 1, 0, len(edges) - 2))
                idx = idx * (len(edges) - 1) + i
            node = node["content"][idx]
    return node


def test_scale_factor_weights_match_the_correction_file(mc_chunk):
    """By hand from the shipped file in the POG schemas: MUO NUM_TightID_DEN_TrackerMuons (abseta, pt,
    scale_factors), BTV deepCSV_mujets / deepCSV_incl (systematic, working_point, flavor, abseta, pt)."""
    doc = json.loads(Path(SHIPPED_CORRECTIONS).read_text())
    muon = next(c for c in doc["corrections"] if c["name"] == "NUM_TightID_DEN_TrackerMuons")["data"]
    c = mc_chunk
    for i in range(min(c.n_events, 50)):
        pt, abseta = float(c.columns["muon_pt"][i]), abs(float(c.columns["muon_eta"][i]))
        nominal, up = (_bin_lookup(muon, {"scale_factors": s, "abseta": abseta, "pt": pt}) for s in ("nominal", "systup"))
        assert c.weights["muon_sf_up"][i] / c.weights["nominal"][i] == pytest.approx(up / nominal, rel=1e-5)
    btag = {name: next(c for c in doc["corrections"] if c["name"] == name)["data"]
            for name in ("deepCSV_mujets", "deepCSV_incl")}
    jets = Objects.from_collection(ak.Array([
        [{"pt": 120.0, "eta": 0.3, "hadronFlavour": 5}, {"pt": 40.0, "eta": -2.0, "hadronFlavour": 0}],
        [{"pt": 700.0, "eta": 1.0, "hadronFlavour": 4}], []]), {"pt": "pt", "eta": "eta", "hadronFlavour": "hadronFlavour"})
    tagged = np.array([[True, True], [False, True], [True, True]])  # padding slots must not count
    got = syst.btag_sf(jets, tagged, default_inputs())
    for s, label in (("nominal", "central"), ("up", "up"), ("down", "down")):
        first = [_bin_lookup(btag["deepCSV_mujets" if f else "deepCSV_incl"],
                             {"systematic": label, "working_point": "M", "flavor": f, "abseta": abs(eta), "pt": pt})
                 for pt, eta, f in ((120.0, 0.3, 5), (40.0, -2.0, 0))]
        assert got[s] == pytest.approx([first[0] * first[1], 1.0, 1.0])


def test_jer_is_deterministic_and_down_mirrors_up():
    jets = Objects.from_collection(ak.Array([[{"pt": 100.0, "eta": 0.1, "phi": 0.0, "mass": 10.0}] * 3,
                                             [{"pt": 50.0, "eta": 2.0, "phi": 1.0, "mass": 5.0}]]),
                                   {f: f for f in ("pt", "eta", "phi", "mass")})
    event = np.array([11, 12])
    vary = lambda e: syst.jet_variations(jets, e, salt=1, inputs=default_inputs(), rho=np.full(2, 20.0))[1]  # noqa: E731
    a, b = vary(event), vary(event)
    assert np.array_equal(a["jer_up"].pt, b["jer_up"].pt)
    up, down = (a[v].pt[jets.valid] - jets.pt[jets.valid] for v in ("jer_up", "jer_down"))
    assert np.allclose(up, -down) and np.ptp(up[:3]) > 0  # different jets, different numbers
    assert np.allclose(a["jes_up"].pt[jets.valid] / jets.pt[jets.valid], 1 + np.array([0.018] * 3 + [0.032]))
    assert (a["jes_up"].pt[~jets.valid] == 0).all()
    c = vary(event + 2)
    assert not np.allclose(c["jer_up"].pt, a["jer_up"].pt)  # seeded by the event number


def test_neutrino_pz_satisfies_the_w_mass_constraint():
    rng = np.random.default_rng(0)
    n = 2000
    lep = dict(pt=rng.uniform(30, 300, n), eta=rng.uniform(-2.4, 2.4, n), phi=rng.uniform(-3, 3, n))
    met = dict(pt=rng.uniform(10, 300, n), phi=rng.uniform(-3, 3, n))
    pz = reco.neutrino_pz(lep["pt"], lep["eta"], lep["phi"], met["pt"], met["phi"])
    nu = (met["pt"] * np.cos(met["phi"]), met["pt"] * np.sin(met["phi"]), pz, np.sqrt(met["pt"] ** 2 + pz**2))
    mass = reco.invariant_mass(reco.p4(lep["pt"], lep["eta"], lep["phi"], 0.0 * lep["pt"]), nu)
    mt = np.sqrt(2 * lep["pt"] * met["pt"] * (1 - np.cos(lep["phi"] - met["phi"])))
    solvable = mt < reco.W_MASS  # real solutions exist iff m_T(μ, MET) <= m_W
    assert solvable.sum() > 100 and (~solvable).sum() > 100
    assert np.allclose(mass[solvable], reco.W_MASS, rtol=1e-6)
    assert (mass[~solvable] >= reco.W_MASS * (1 - 1e-9)).all()  # real part: the closest mass reachable
    # of the two solutions, the smaller |pz| was taken
    other = 2 * (lep["pt"] * np.sinh(lep["eta"])) * (reco.W_MASS**2 / 2 + lep["pt"] * met["pt"] * np.cos(lep["phi"] - met["phi"])) / lep["pt"] ** 2 - pz
    assert (np.abs(pz[solvable]) <= np.abs(other[solvable]) + 1e-6).all()


def test_missing_required_branch_names_the_branch_and_the_file(toy):
    with pytest.raises(UserError, match=r"bad\.root.*Muon_tightId"):
        skim(toy["no_tight_id"], xsec=1.0)


def test_data_has_unit_weights_and_no_variations(toy):
    c = skim(toy["data"], is_data=True)
    assert c.is_data and c.n_events > 0 and not c.variations
    assert (c.weights["nominal"][: c.n_events] == 1).all() and sorted(c.weights) == ["nominal"]


def test_data_pass_the_certified_luminosity_mask_and_the_removed_events_are_counted(toy, tmp_path):
    from zprime_grad.lumi import lumi_mask

    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps({"1001": [[1, 4], [8, 15]]}))  # toy data: 100 events per lumi section
    inputs = dataclasses.replace(default_inputs(), mask=lumi_mask(str(golden)), golden_json=str(golden))
    everything = skim(toy["data"], is_data=True)
    masked = ZprimeTTbarProcessor(inputs=inputs).process(events_of(toy["data"], is_data=True))["chunks"][0]
    assert everything.provenance["lumi_mask_removed"] == 0 and masked.provenance["lumi_mask_removed"] == 300
    lumi = everything.ids["luminosityBlock"][: everything.n_events]
    assert masked.n_events == int(((lumi < 5) | (lumi > 7)).sum()) < everything.n_events
    assert set(masked.ids["luminosityBlock"][: masked.n_events]).isdisjoint({5, 6, 7})


def test_real_era_data_without_a_golden_json_is_refused(toy):
    from zprime_grad import eras

    inputs = dataclasses.replace(default_inputs(), era=eras.era("2016postVFP_UL"), mask=None, golden_json=None)
    with pytest.raises(UserError, match=r"data\.root: data of era 2016postVFP_UL need a certified-luminosity JSON"):
        ZprimeTTbarProcessor(inputs=inputs).process(events_of(toy["data"], is_data=True))


REAL_FILES = {  # (path, metadata): files that carry every collection the skim needs
    "pfnano": ("coffea/pfnano.root", {"xsec": 1.0}),
    "dy_ul17": ("higgsdna/DYJetsToLL--UL17_v6-v2_109_Skim.root", {"xsec": 1.0}),
    "gjet_v11": ("higgsdna/GJet_v11_Skim.root", {"xsec": 1.0}),
    "egamma_data": ("higgsdna/EGamma_F_Skim.root", {"is_data": True}),
}


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_nanoaod_files_skim_cleanly(name):
    rel, meta = REAL_FILES[name]
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"{path} not present (shared/ is not beside the repo)")
    c = skim(path, **meta)  # zero selected events is fine; the point is that every branch resolves
    assert c.n_events >= 0 and c.provenance["entries_read"] > 0 and c.length == 256


def test_real_file_without_a_top_tagger_names_the_branch():
    path = SHARED / "coffea" / "nano_dy.root"
    if not path.exists():
        pytest.skip("shared data not present")
    with pytest.raises(UserError, match=r"nano_dy\.root.*FatJet_particleNet_TvsQCD or FatJet_particleNetWithMass"):
        skim(path, xsec=1.0)


def test_processor_runs_under_the_coffea_runner(toy):
    fileset = {"mc": {"files": {toy["mc"]: "Events"}, "metadata": {"xsec": 5.0}}}
    runner = processor.Runner(processor.IterativeExecutor(), schema=NanoAODSchema, chunksize=1000)
    out = runner(fileset, ZprimeTTbarProcessor(), treename="Events")
    chunks = sorted(out["chunks"], key=lambda c: c.key)
    assert [c.provenance["entrystart"] for c in chunks] == [0, 1000, 2000]
    assert sum(c.n_events for c in chunks) > 0
