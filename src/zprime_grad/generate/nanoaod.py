"""Detector-level events as CMS NanoAOD v9: branch names, types, cross-references, the Runs tree.

Files are TTrees written with uproot's ``mktree``/``extend`` (``file[name] = dict`` would write an
RNTuple), so coffea's ``NanoAODSchema`` reads them exactly like production NanoAOD.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from zprime_grad.generate import detector, matching, pileup
from zprime_grad.generate.truth import Truth

FLOAT = np.float32

# NanoAOD v9 storage types of the non-float fields (floats are float32).
INT_FIELDS = {
    "charge": np.int32, "cutBased": np.int32, "jetId": np.int32, "hadronFlavour": np.int32,
    "miniIsoId": np.uint8, "tightId": np.bool_, "mediumId": np.bool_,
    "jetIdx": np.int32, "muonIdx1": np.int32, "muonIdx2": np.int32,
    "electronIdx1": np.int32, "electronIdx2": np.int32,
    "pdgId": np.int32, "status": np.int32, "statusFlags": np.int32, "genPartIdxMother": np.int32,
}

# statusFlags bits of GenPart: isPrompt (0), isHardProcess (7), fromHardProcess (8), isLastCopy (13)
HARD_PROCESS_FLAGS = (1 << 0) | (1 << 7) | (1 << 8) | (1 << 13)


def _typed(name: str, values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=INT_FIELDS.get(name, FLOAT))


def _collection(fields: dict[str, np.ndarray], counts: np.ndarray) -> ak.Array:
    return ak.unflatten(ak.zip({k: _typed(k, v) for k, v in fields.items()}, depth_limit=1), counts)


def _cross_reference(
    objs: detector.Collection, jets: detector.Collection, prefix: str
) -> None:
    """``<obj>_jetIdx`` (nearest jet within 0.4) and the inverse ``Jet_<prefix>Idx1/2``."""
    o_off, j_off = matching.offsets(objs.counts), matching.offsets(jets.counts)
    ref = matching.nearest(
        o_off, objs.fields["eta"], objs.fields["phi"], j_off, jets.fields["eta"], jets.fields["phi"], 0.4
    )
    objs.fields["jetIdx"] = ref
    inverse = matching.first_two_referrers(ref, o_off, j_off)
    jets.fields[f"{prefix}Idx1"] = inverse[:, 0]
    jets.fields[f"{prefix}Idx2"] = inverse[:, 1]


def _gen_part(truth: Truth) -> ak.Array:
    g = truth.gen
    pt = np.hypot(g.px, g.py)
    eta = np.arcsinh(g.pz / np.maximum(pt, 1e-12))
    mass = np.sqrt(np.maximum(g.e**2 - g.px**2 - g.py**2 - g.pz**2, 0.0))
    fields = {
        "pt": pt, "eta": eta, "phi": np.arctan2(g.py, g.px), "mass": mass, "pdgId": g.pdg,
        "status": g.status, "statusFlags": np.full(len(pt), HARD_PROCESS_FLAGS), "genPartIdxMother": g.mother,
    }
    return _collection(fields, g.counts)


def reconstruct(
    truth: Truth, rng: np.random.Generator, first_event: int, *, is_data: bool = False,
    extra_rng: np.random.Generator | None = None, pileup_rng: np.random.Generator | None = None,
) -> dict:
    """All Events branches of one batch: ``{name: flat array}`` and ``{Collection: jagged records}``.

    ``rng`` draws every branch that existed before the AGC's; ``extra_rng`` (default: a child spawned
    from ``rng``'s seed sequence, which leaves ``rng``'s stream untouched) draws CSVv2, ip3d, sip3d;
    ``pileup_rng`` (default: another such child) the pile-up labels (``pileup.py``): ``Pileup_nTrueInt``,
    ``Pileup_nPU``, ``PV_npvs``, ``fixedGridRhoFastjetAll``."""
    n = truth.n_events
    if extra_rng is None:
        extra_rng = rng.spawn(1)[0]
    if pileup_rng is None:
        pileup_rng = rng.spawn(1)[0]
    muons, muon_idx = detector.leptons(truth, 13, rng)
    electrons, electron_idx = detector.leptons(truth, 11, rng)
    jets, _, kept_gen_jets = detector.jets_ak4(truth, rng, extra_rng)
    for leptons, idx in ((muons, muon_idx), (electrons, electron_idx)):
        leptons.fields |= detector.impact_parameters(truth.origin[idx], leptons.fields["pt"], extra_rng)
    fat, _ = detector.fat_jets(truth, rng)
    met = detector.missing_et(truth, jets, kept_gen_jets, [(muons, muon_idx), (electrons, electron_idx)], rng)
    _cross_reference(muons, jets, "muon")
    _cross_reference(electrons, jets, "electron")
    # Until version 3, PV_npvs was 1 + Poisson(24) drawn here from `rng`: the draw is kept (and discarded)
    # so that `rng`'s stream, and every branch drawn from it after this point, stays what it was.
    rng.poisson(24.0, n)
    labels = pileup.draw_mc(n, pileup_rng)
    branches: dict = {
        "run": np.ones(n, np.uint32),
        "luminosityBlock": (1 + (first_event + np.arange(n)) // 1000).astype(np.uint32),
        "event": (first_event + np.arange(n)).astype(np.uint64),
        "PV_npvs": labels["PV_npvs"],
        "fixedGridRhoFastjetAll": labels["fixedGridRhoFastjetAll"],
        **{k: np.asarray(v, np.bool_) for k, v in detector.triggers(muons, rng).items()},
        **{k: np.asarray(v, FLOAT) for k, v in met.items()},
        "Muon": _collection(muons.fields, muons.counts),
        "Electron": _collection(electrons.fields, electrons.counts),
        "Jet": _collection(jets.fields, jets.counts),
        "FatJet": _collection(fat.fields, fat.counts),
    }
    if not is_data:
        branches["genWeight"] = truth.weight.astype(FLOAT)
        branches["Pileup_nTrueInt"] = labels["Pileup_nTrueInt"]
        branches["Pileup_nPU"] = labels["Pileup_nPU"]
        branches["GenPart"] = _gen_part(truth)
    return branches


def concatenate(batches: list[dict]) -> dict:
    return {k: (ak.concatenate if isinstance(v, ak.Array) else np.concatenate)([b[k] for b in batches])
            for k, v in batches[0].items()}


def _branch_types(branches: dict) -> dict:
    return {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in branches.items()}


def write(path: Path, events: dict, runs: dict) -> None:
    """Write ``Events`` and ``Runs`` TTrees to ``path`` (the caller renames it into place)."""
    with uproot.recreate(path, compression=uproot.ZLIB(4)) as f:
        f.mktree("Events", _branch_types(events), title="Events")
        f["Events"].extend(events)
        f.mktree("Runs", _branch_types(runs), title="Runs")
        f["Runs"].extend(runs)
