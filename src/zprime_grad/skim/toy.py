"""A tiny NanoAOD-like TTree with every branch the Z'→tt̄ skim reads, for tests and benchmarks.

Not physics: object kinematics are drawn so that a good fraction of events pass the skim baseline,
which real files of unrelated processes (Drell-Yan, γ+jets …) rarely do. ``drop`` leaves branches out
to provoke the missing-branch error; ``is_data`` writes a data-like file (no genWeight, no flavour).
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import uproot


def _jagged(rng, counts, **fields):
    n = int(counts.sum())
    return ak.unflatten(ak.zip({k: f(rng, n) for k, f in fields.items()}), counts)


def toy_events(n_events: int, seed: int = 0, *, is_data: bool = False, first_event: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    exp = lambda scale, lo: (lambda r, n: (lo + r.exponential(scale, n)).astype(np.float32))  # noqa: E731
    uni = lambda lo, hi: (lambda r, n: r.uniform(lo, hi, n).astype(np.float32))  # noqa: E731
    n_mu = rng.choice([0, 1, 1, 1, 2], n_events)
    n_jet = rng.integers(1, 7, n_events)
    n_fat = rng.integers(0, 3, n_events)
    muon = _jagged(rng, n_mu, pt=exp(60.0, 30.0), eta=uni(-2.6, 2.6), phi=uni(-np.pi, np.pi),
                   mass=lambda r, n: np.full(n, 0.106, np.float32),
                   charge=lambda r, n: r.choice([-1, 1], n).astype(np.int32),
                   tightId=lambda r, n: r.random(n) < 0.9, mediumId=lambda r, n: r.random(n) < 0.95,
                   pfRelIso04_all=exp(0.05, 0.0), miniPFRelIso_all=exp(0.05, 0.0),
                   miniIsoId=lambda r, n: r.choice([1, 2, 3, 4], n).astype(np.uint8))
    jet_fields = dict(pt=exp(80.0, 20.0), eta=uni(-2.7, 2.7), phi=uni(-np.pi, np.pi), mass=exp(10.0, 2.0),
                      btagDeepB=uni(0.0, 1.0), btagDeepFlavB=uni(0.0, 1.0),
                      jetId=lambda r, n: r.choice([0, 2, 6], n, p=[0.05, 0.15, 0.8]).astype(np.int32))
    if not is_data:
        jet_fields["hadronFlavour"] = lambda r, n: r.choice([0, 4, 5], n, p=[0.6, 0.1, 0.3]).astype(np.int32)
    jets = _jagged(rng, n_jet, **jet_fields)
    fatjets = _jagged(rng, n_fat, pt=exp(200.0, 150.0), eta=uni(-2.6, 2.6), phi=uni(-np.pi, np.pi),
                      mass=exp(60.0, 30.0), msoftdrop=exp(50.0, 10.0), particleNet_TvsQCD=uni(0.0, 1.0),
                      jetId=lambda r, n: np.full(n, 6, np.int32))
    out = {
        "run": np.full(n_events, 1001 if is_data else 1, np.uint32),  # a run the generated golden JSON certifies
        "luminosityBlock": (np.arange(n_events) // 100 + 1).astype(np.uint32),
        "event": np.arange(first_event, first_event + n_events, dtype=np.uint64),
        "HLT_TkMu50": rng.random(n_events) < 0.8, "HLT_Mu50": rng.random(n_events) < 0.85,
        "PV_npvs": rng.integers(5, 40, n_events).astype(np.int32),
        "Muon": muon, "Jet": jets, "FatJet": fatjets,
        "MET_pt": exp(60.0, 0.0)(rng, n_events), "MET_phi": uni(-np.pi, np.pi)(rng, n_events),
        "MET_sumEt": exp(500.0, 100.0)(rng, n_events),
        "PuppiMET_pt": exp(60.0, 0.0)(rng, n_events), "PuppiMET_phi": uni(-np.pi, np.pi)(rng, n_events),
    }
    if not is_data:
        out["genWeight"] = rng.choice([1.0, 1.0, 1.0, -1.0], n_events).astype(np.float32) * 1.5
    pileup = np.random.default_rng([seed, 0x9D])  # its own stream: the branches above stay as they were
    n_true = pileup.gamma(6.0, 4.0, n_events).astype(np.float32)
    out["fixedGridRhoFastjetAll"] = (0.5 * n_true + pileup.normal(2.0, 1.0, n_events)).astype(np.float32)
    if not is_data:
        out["Pileup_nTrueInt"] = n_true
        out["Pileup_nPU"] = pileup.poisson(n_true).astype(np.int32)
    return out


def _drop(branches: dict, drop) -> dict:
    out = dict(branches)
    for name in drop:
        coll, _, field = name.partition("_")
        if name in out:
            del out[name]
        elif coll in out and field in ak.fields(out[coll]):
            out[coll] = ak.zip({f: out[coll][f] for f in ak.fields(out[coll]) if f != field})
    return out


def write_toy_nanoaod(path, n_events: int = 2000, seed: int = 0, *, is_data: bool = False,
                      drop=(), runs_tree: bool = True, first_event: int = 1) -> Path:
    """Write ``Events`` (and, for MC, ``Runs`` with ``genEventSumw``) as TTrees; returns the path."""
    path = Path(path)
    branches = _drop(toy_events(n_events, seed, is_data=is_data, first_event=first_event), drop)
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: ak.Array(v).type if isinstance(v, ak.Array) else v.dtype
                            for k, v in branches.items()})
        f["Events"].extend(branches)
        if runs_tree and not is_data:
            sumw = float(np.sum(branches["genWeight"], dtype=np.float64))
            f.mktree("Runs", {"run": np.uint32, "genEventCount": np.int64, "genEventSumw": np.float64})
            f["Runs"].extend({"run": np.array([1], np.uint32), "genEventCount": np.array([n_events]),
                              "genEventSumw": np.array([sumw])})
    return path
