"""Pile-up labels and lumi sections of the generated dataset (generate/pileup.py, generate/lumi.py):
the documented distributions, their own random streams, and a golden JSON + brilcalc CSV that coffea's
lumi tools turn into exactly the configured (certified) luminosity."""

from __future__ import annotations

import json
from importlib.resources import files

import awkward as ak
import numpy as np
import pytest
import uproot
from coffea.lumi_tools import LumiData, LumiList, LumiMask

from zprime_grad.generate import lumi, pileup

PILEUP_BRANCHES = {"Pileup_nTrueInt": "float32", "Pileup_nPU": "int32", "PV_npvs": "int32",
                   "fixedGridRhoFastjetAll": "float32"}
GOLDEN = files("zprime_grad.data") / "golden_generated.json"


def _fileset(generated) -> dict:
    return json.loads(generated.fileset.read_text())


def _branches(entry: dict, names) -> dict[str, np.ndarray]:
    arrays = [uproot.open(f)["Events"].arrays(list(names), library="np") for f in entry["files"]]
    return {k: np.concatenate([a[k] for a in arrays]) for k in names}


def _mc(generated) -> dict[str, np.ndarray]:
    parts = [_branches(e, PILEUP_BRANCHES) for e in _fileset(generated).values() if not e["metadata"]["is_data"]]
    return {k: np.concatenate([p[k] for p in parts]) for k in PILEUP_BRANCHES}


def test_pileup_labels_come_from_their_own_random_stream():
    """Another pile-up stream changes the four pile-up labels and nothing else, and the detector
    stream still draws (and discards) the old PV_npvs: every other branch is what version 3 wrote."""
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
    batches = [truth.from_batch(pythia.nextBatch(80), pythia.particleData.charge) for _ in range(2)]

    def run(pileup_seed):
        rng, extra, pu = (np.random.default_rng(s) for s in (1, 2, pileup_seed))
        return [nanoaod.reconstruct(t, rng, 80 * i, extra_rng=extra, pileup_rng=pu) for i, t in enumerate(batches)]

    changed = set()
    for a, b in zip(run(3), run(4)):  # the second batch: the detector stream continued across batches
        assert set(PILEUP_BRANCHES) <= set(a)
        for name, value in a.items():
            if isinstance(value, ak.Array):
                for field in value.fields:
                    assert ak.all(ak.flatten(value[field]) == ak.flatten(b[name][field])), (name, field)
            elif not np.array_equal(value, b[name]):
                changed.add(name)
    assert changed == set(PILEUP_BRANCHES)


def test_mc_pileup_labels_follow_the_documented_profile(generated):
    for entry in _fileset(generated).values():
        if entry["metadata"]["is_data"]:
            continue
        with uproot.open(next(iter(entry["files"]))) as f:
            types = {k: str(f["Events"][k].interpretation.numpy_dtype) for k in PILEUP_BRANCHES}
        assert {k: np.dtype(v) for k, v in types.items()} == {k: np.dtype(v) for k, v in PILEUP_BRANCHES.items()}
    mc = _mc(generated)
    true, n_pu = mc["Pileup_nTrueInt"].astype(np.float64), mc["Pileup_nPU"].astype(np.float64)
    n = len(true)
    assert n > 1000 and np.all((true >= 0) & (true < 99))
    centres = np.arange(99) + 0.5
    mean = float(np.sum(pileup.mc_profile() * centres))
    sd = float(np.sqrt(np.sum(pileup.mc_profile() * (centres - mean) ** 2)))
    assert abs(true.mean() - mean) < 4 * sd / np.sqrt(n)
    counts = np.histogram(true, bins=[0, 10, 20, 30, 40, 60, 99])[0]
    expected = n * np.add.reduceat(pileup.mc_profile(), [0, 10, 20, 30, 40, 60])
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected) + 2), (counts, expected)
    # nPU ~ Poisson(nTrueInt): mean nTrueInt, variance nTrueInt around it
    assert abs(np.mean(n_pu - true)) < 4 * np.sqrt(true.mean() / n)
    assert np.mean((n_pu - true) ** 2) == pytest.approx(true.mean(), rel=0.1)
    npvs, rho = mc["PV_npvs"].astype(np.float64), mc["fixedGridRhoFastjetAll"].astype(np.float64)
    assert np.all((npvs >= 1) & (npvs <= 1 + n_pu)) and np.all(rho >= 0)
    assert np.mean(npvs - 1 - pileup.VERTEX_EFFICIENCY * n_pu) == pytest.approx(0.0, abs=0.1)
    busy = n_pu >= 8  # where the clip at rho = 0 never bites
    residual = rho[busy] - pileup.RHO_OFFSET - pileup.RHO_PER_PU * n_pu[busy]
    assert residual.mean() == pytest.approx(0.0, abs=0.1) and residual.std() == pytest.approx(pileup.RHO_NOISE, rel=0.1)


def test_data_have_detector_labels_from_the_data_profile_and_no_pileup_truth(generated):
    entry = _fileset(generated)["data"]
    for path in entry["files"]:
        with uproot.open(path) as f:
            names = set(f["Events"].keys())
        assert not {k for k in names if k.startswith("Pileup_")} and {"PV_npvs", "fixedGridRhoFastjetAll"} <= names
    data = _branches(entry, ["PV_npvs", "fixedGridRhoFastjetAll", "run"])
    n = len(data["run"])
    assert n > 50 and set(np.unique(data["run"])) <= set(lumi.RUNS)
    # E[npvs] = 1 + 0.7 E[mu]; the data profile's mean is 24 (its variance plus the Poisson's in the error)
    expected = 1 + pileup.VERTEX_EFFICIENCY * pileup.DATA_MEAN
    assert abs(data["PV_npvs"].mean() - expected) < 5 * 6.0 / np.sqrt(n)
    rho = pileup.RHO_OFFSET + pileup.RHO_PER_PU * pileup.DATA_MEAN
    assert abs(data["fixedGridRhoFastjetAll"].mean() - rho) < 5 * 4.0 / np.sqrt(n)


def test_golden_json_and_lumi_csv_give_the_certified_luminosity(generated):
    """coffea's LumiMask with the shipped golden JSON and LumiData with the generated brilcalc CSV give
    analysis.lumi_pb; the CSV lists every lumi section (delivered = lumi_pb × 2000/1920)."""
    meta = _fileset(generated)["data"]["metadata"]
    lumi_pb = generated.config.analysis.lumi_pb
    csv = generated.fileset.parent / meta["lumi_csv"]
    assert csv.is_file() and not meta["lumi_csv"].startswith("/")
    rows = [line.split(",") for line in csv.read_text().splitlines() if not line.startswith("#")]
    runs = np.array([int(row[0].split(":")[0]) for row in rows], np.uint32)
    sections = np.array([int(row[1].split(":")[0]) for row in rows], np.uint32)
    assert len(runs) == 2000 and len(set(zip(runs.tolist(), sections.tolist()))) == 2000
    lumi_data = LumiData(str(csv))
    mask = LumiMask(str(GOLDEN))(runs, sections)
    assert mask.sum() == 1920
    assert lumi_data.get_lumi(LumiList(runs[mask], sections[mask])) == pytest.approx(lumi_pb, rel=1e-7)
    assert lumi_data.get_lumi(LumiList(runs, sections)) == pytest.approx(lumi_pb * 2000 / 1920, rel=1e-7)
    assert meta["lumi_pb"] == lumi_pb and meta["delivered_lumi_pb"] == pytest.approx(lumi_pb * 2000 / 1920)


def test_certified_events_come_first_and_the_mask_keeps_exactly_them(generated):
    entry = _fileset(generated)["data"]
    meta = entry["metadata"]
    ids = _branches(entry, ["run", "luminosityBlock", "event"])
    n, n_certified = meta["nevents"], meta["nevents_certified"]
    assert len(ids["event"]) == n and n_certified <= n
    np.testing.assert_array_equal(ids["event"], np.arange(n))
    passed = LumiMask(str(GOLDEN))(ids["run"], ids["luminosityBlock"])
    np.testing.assert_array_equal(passed, np.arange(n) < n_certified)
    # the uncertified sections hold 80/1920 of the certified data, in expectation
    assert abs((n - n_certified) - n_certified * 80 / 1920) < 5 * np.sqrt(n_certified * 80 / 1920) + 2


def test_lumi_sections_layout():
    runs, sections = lumi.sections()
    good = lumi.certified()
    assert len(runs) == 2000 and good.sum() == 1920 and lumi.delivered_fraction() == pytest.approx(2000 / 1920)
    assert json.loads(GOLDEN.read_text()) == lumi.golden_json()
    mu = pileup.data_mu_quantiles(2000)
    assert mu.mean() == pytest.approx(pileup.DATA_MEAN, abs=0.05)
    assert mu.std() == pytest.approx(pileup.DATA_SD, rel=0.02)
