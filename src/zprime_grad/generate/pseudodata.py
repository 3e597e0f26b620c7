"""Pseudo-data: one Poisson realisation of the MC prediction at the configured luminosity.

Every MC event i stands for λ_i = xsec·lumi·genWeight_i/Σ genWeight expected data events (×μ for
signal). It enters the pseudo-data k_i ~ Poisson(λ_i) times. A sum of independent Poisson counts is
Poisson, so the count in any bin of any observable is exactly Poisson with mean equal to the MC
prediction, whatever the binning. Where the MC has fewer events than the data would (λ_i > 1) an
event can appear more than once; each copy gets its own event number. As in a real primary dataset,
only events a muon trigger fired are kept, and (``stream_filter``, a data skim) only those with a muon
above ``muon_pt_min`` and a fat jet above ``fatjet_pt_min``. Both thresholds must stay looser than the
processor's baseline (a 55 GeV muon, a 200 GeV fat jet), so nothing the analysis selects is lost.
Data files carry no ``genWeight`` and no ``GenPart``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from zprime_grad import atomic
from zprime_grad.config import Config
from zprime_grad.errors import UserError
from zprime_grad.generate import nanoaod
from zprime_grad.generate.production import GENERATOR_VERSION
from zprime_grad.skim.fileset import LOGICAL_NAMES, logical_name

MC_ONLY = ("genWeight", "GenPart")
SIGNAL_KINDS = ("zprime",)


def _read(files: dict[str, str]) -> dict:
    """Events branches: numpy for flat ones, awkward records for collections (as nanoaod.write takes)."""
    arrays = []
    for path, tree in files.items():
        with uproot.open(path) as f:
            arrays.append(f[tree].arrays(how="zip"))
    events = ak.concatenate(arrays)
    return {name: (ak.to_numpy(events[name]) if events[name].ndim == 1 and not events[name].fields else events[name])
            for name in events.fields}


def _stream_filter(events: dict, cfg) -> np.ndarray:
    fired = np.asarray(events["HLT_Mu50"] | events["HLT_TkMu50"] | events["HLT_IsoMu24"])
    if not cfg.stream_filter:
        return fired
    muon = ak.any(events["Muon"].pt > cfg.muon_pt_min, axis=1)
    fat_jet = ak.any(events["FatJet"].pt > cfg.fatjet_pt_min, axis=1)
    return fired & np.asarray(muon & fat_jet)


def make_pseudodata(config: Config, mc: dict, out: Path, seed: int) -> dict:
    """Write the pseudo-data files for the MC datasets in ``mc``; return its fileset entry."""
    cfg = config.generate.data
    lumi = config.analysis.lumi_pb
    key_payload = {  # the MC files by their names under `out`: the same key wherever `out` lies
        "mc": {k: sorted(logical_name(f, v["metadata"]) for f in v["files"]) for k, v in mc.items()},
        "data": cfg.model_dump(mode="json"), "lumi": lumi, "seed": seed, "version": GENERATOR_VERSION,
    }
    key = hashlib.sha256(json.dumps(key_payload, sort_keys=True).encode()).hexdigest()[:10]
    directory = out / "data"
    summary_path = directory / f"data_{key}.json"
    if summary_path.exists():
        return _located(json.loads(summary_path.read_text()), out)

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7A]))
    picked = []
    for name in sorted(mc):
        meta = mc[name]["metadata"]
        is_signal = config.generate.samples[name].kind in SIGNAL_KINDS
        mu = cfg.signal_strength if is_signal else 1.0
        if mu == 0 or meta.get("variation", "nominal") != "nominal":  # a systematic sample is no extra data
            continue
        events = _read(mc[name]["files"])
        lam = mu * meta["xsec"] * lumi * np.asarray(events["genWeight"], np.float64) / meta["sumw"]
        copies = rng.poisson(np.clip(lam, 0.0, None)) * _stream_filter(events, cfg)
        rows = np.repeat(np.arange(len(lam)), copies)
        picked.append({k: v[rows] for k, v in events.items() if k not in MC_ONLY})
    if not picked:
        raise UserError("pseudo-data needs at least one background sample (or generate.data.signal_strength > 0)")
    merged = {k: (ak.concatenate if isinstance(v, ak.Array) else np.concatenate)([p[k] for p in picked])
              for k, v in picked[0].items()}
    n = len(merged["event"])
    order = rng.permutation(n)  # processes interleaved, as in a real run
    merged = {k: v[order] for k, v in merged.items()}
    merged["event"] = np.arange(n, dtype=np.uint64)
    merged["luminosityBlock"] = (1 + np.arange(n) // 1000).astype(np.uint32)
    merged["run"] = np.ones(n, np.uint32)

    directory.mkdir(parents=True, exist_ok=True)
    per_file = config.generate.events_per_file * 4
    files = {}
    for index, lo in enumerate(range(0, max(n, 1), per_file)):
        chunk = {k: v[lo:lo + per_file] for k, v in merged.items()}
        path = directory / f"data_{index:03d}_{key}.root"
        with atomic.replacing(path) as tmp:
            nanoaod.write(tmp, chunk, {"run": np.ones(1, np.uint32)})
        files[path.relative_to(out).as_posix()] = "Events"
    entry = {"files": files, "metadata": {
        "sample": "data", "process": "data", "variation": "nominal", "is_data": True,
        "lumi_pb": lumi, "nevents": int(n), "signal_strength": cfg.signal_strength,
    }}
    atomic.write_json(summary_path, entry)  # names relative to `out`: still valid if the directory moves
    return _located(entry, out)


def _located(entry: dict, out: Path) -> dict:
    """The cached entry with absolute paths (a fileset coffea reads from any directory) and their names."""
    files = {str((out / name).resolve()): tree for name, tree in entry["files"].items()}
    names = dict(zip(files, entry["files"]))
    return {"files": files, "metadata": {**entry["metadata"], LOGICAL_NAMES: names}}
