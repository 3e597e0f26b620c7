"""Pseudo-data: one Poisson realisation of the MC prediction at the configured luminosity.

Every MC event i stands for λ_i = xsec·lumi·genWeight_i/Σ genWeight expected data events (×μ for
signal). It enters the pseudo-data k_i ~ Poisson(λ_i) times. A sum of independent Poisson counts is
Poisson, so the count in any bin of any observable is exactly Poisson with mean equal to the MC
prediction, whatever the binning. Where the MC has fewer events than the data would (λ_i > 1) an
event can appear more than once; each copy gets its own event number. As in a real primary dataset,
only events a muon trigger fired are kept, and (``stream_filter``, a data skim) only those with a muon
above ``muon_pt_min`` and a fat jet above ``fatjet_pt_min``. Both thresholds must stay looser than the
processor's baseline (a 55 GeV muon, a 200 GeV fat jet), so nothing the analysis selects is lost.
Data files carry no ``genWeight``, no ``GenPart`` and no ``Pileup_*`` branches.

Luminosity (``lumi.py``): the configured ``analysis.lumi_pb`` is the luminosity the golden JSON
certifies; the data are a realisation at the delivered luminosity (lumi_pb × 2000 / 1920 lumi
sections), each event in one lumi section of runs 1001–1010, uniformly (the sections record equal
luminosity). It is made as two independent Poisson realisations, which is the same in distribution:
the certified sections' events are drawn, filtered, ordered and numbered exactly as before the
sections existed (λ_i at lumi_pb, the same random stream), so the data an analysis keeps after the
mask are event for event those of generator version 3; the uncertified sections' events (λ_i at
lumi_pb × 80/1920, their own stream) follow them, numbered after them. ``lumi_<key>.csv`` beside the
files is the brilcalc ``--byls`` CSV of all 2000 sections (its path, relative to the fileset's
directory, is the metadata's ``lumi_csv``). Pile-up: each lumi section has one μ from the data profile
of ``pileup.py`` (the profile's quantiles, shuffled over the sections and falling within each run as
in a fill); each event nPU ~ Poisson(μ), and ``PV_npvs``, ``fixedGridRhoFastjetAll`` from nPU.
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
from zprime_grad.generate import lumi as lumi_sections
from zprime_grad.generate import nanoaod, pileup
from zprime_grad.generate.production import GENERATOR_VERSION
from zprime_grad.skim.fileset import LOGICAL_NAMES, logical_name

MC_ONLY = ("genWeight", "GenPart", "Pileup_nTrueInt", "Pileup_nPU")
DATA_ENTROPY = 0xDA7A
UNCERTIFIED_STREAM, LUMI_STREAM = 1, 2  # spawn keys beside the original stream (the certified events)
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


def _merge(parts: list[dict]) -> dict:
    return {k: (ak.concatenate if isinstance(v, ak.Array) else np.concatenate)([p[k] for p in parts])
            for k, v in parts[0].items()}


def make_pseudodata(config: Config, mc: dict, out: Path, seed: int) -> dict:
    """Write the pseudo-data files for the MC datasets in ``mc``; return its fileset entry."""
    cfg = config.generate.data
    lumi = config.analysis.lumi_pb
    if lumi is None:
        raise UserError("pseudo-data need analysis.lumi_pb (the certified luminosity they are generated for)")
    key_payload = {  # the MC files by their names under `out`: the same key wherever `out` lies
        "mc": {k: sorted(logical_name(f, v["metadata"]) for f in v["files"]) for k, v in mc.items()},
        "data": cfg.model_dump(mode="json"), "lumi": lumi, "seed": seed, "version": GENERATOR_VERSION,
    }
    key = hashlib.sha256(json.dumps(key_payload, sort_keys=True).encode()).hexdigest()[:10]
    directory = out / "data"
    summary_path = directory / f"data_{key}.json"
    if summary_path.exists():
        return _located(json.loads(summary_path.read_text()), out)

    rng = np.random.default_rng(np.random.SeedSequence([seed, DATA_ENTROPY]))  # the certified sections' events
    uncertified_rng, lumi_rng = (np.random.default_rng(np.random.SeedSequence([seed, DATA_ENTROPY], spawn_key=(k,)))
                                 for k in (UNCERTIFIED_STREAM, LUMI_STREAM))
    good = lumi_sections.certified()
    uncertified_share = (len(good) - good.sum()) / good.sum()
    picked, picked_uncertified = [], []
    for name in sorted(mc):
        meta = mc[name]["metadata"]
        is_signal = config.generate.samples[name].kind in SIGNAL_KINDS
        mu = cfg.signal_strength if is_signal else 1.0
        if mu == 0 or meta.get("variation", "nominal") != "nominal":  # a systematic sample is no extra data
            continue
        events = _read(mc[name]["files"])
        lam = np.clip(mu * meta["xsec"] * lumi * np.asarray(events["genWeight"], np.float64) / meta["sumw"], 0.0, None)
        kept = _stream_filter(events, cfg)
        for draws, generator, scale in ((picked, rng, 1.0), (picked_uncertified, uncertified_rng, uncertified_share)):
            rows = np.repeat(np.arange(len(lam)), generator.poisson(lam * scale) * kept)
            draws.append({k: v[rows] for k, v in events.items() if k not in MC_ONLY})
    if not picked:
        raise UserError("pseudo-data needs at least one background sample (or generate.data.signal_strength > 0)")
    merged, extra = _merge(picked), _merge(picked_uncertified)
    n, m = len(merged["event"]), len(extra["event"])
    merged = _permuted(merged, rng.permutation(n))  # processes interleaved, as in a real run
    extra = _permuted(extra, uncertified_rng.permutation(m))
    merged["event"] = np.arange(n, dtype=np.uint64)
    extra["event"] = np.arange(n, n + m, dtype=np.uint64)

    # lumi sections: uniform over the certified ones (and the uncertified ones for the extra events)
    runs, sections = lumi_sections.sections()
    mu_section = _section_pileup(lumi_rng)
    index = np.concatenate([lumi_rng.choice(np.flatnonzero(good), n), lumi_rng.choice(np.flatnonzero(~good), m)])
    merged = _merge([merged, extra])
    merged["run"], merged["luminosityBlock"] = runs[index], sections[index]
    merged |= pileup.detector_labels(lumi_rng.poisson(mu_section[index]), lumi_rng)

    directory.mkdir(parents=True, exist_ok=True)
    csv = directory / f"lumi_{key}.csv"
    with atomic.replacing(csv) as tmp:
        lumi_sections.brilcalc_csv(tmp, lumi / good.sum(), mu_section)
    per_file = config.generate.events_per_file * 4
    files = {}
    for index, lo in enumerate(range(0, max(n + m, 1), per_file)):
        chunk = {k: v[lo:lo + per_file] for k, v in merged.items()}
        path = directory / f"data_{index:03d}_{key}.root"
        with atomic.replacing(path) as tmp:
            nanoaod.write(tmp, chunk, {"run": np.unique(chunk["run"]) if len(chunk["run"]) else np.ones(1, np.uint32)})
        files[path.relative_to(out).as_posix()] = "Events"
    entry = {"files": files, "metadata": {
        "sample": "data", "process": "data", "variation": "nominal", "is_data": True,
        "lumi_pb": lumi, "delivered_lumi_pb": lumi * len(good) / good.sum(),
        "lumi_csv": csv.relative_to(out).as_posix(),
        "lumi_sections": {"total": int(len(good)), "certified": int(good.sum())},
        "nevents": int(n + m), "nevents_certified": int(n), "signal_strength": cfg.signal_strength,
    }}
    atomic.write_json(summary_path, entry)  # names relative to `out`: still valid if the directory moves
    return _located(entry, out)


def _permuted(events: dict, order: np.ndarray) -> dict:
    return {k: v[order] for k, v in events.items()}


def _section_pileup(rng: np.random.Generator) -> np.ndarray:
    """μ of every lumi section (``lumi.sections()`` order): the data profile's quantiles shuffled over
    the sections, then sorted to fall within each run (the luminosity of a fill decays)."""
    mu = rng.permutation(pileup.data_mu_quantiles(len(lumi_sections.certified())))
    return -np.sort(-mu.reshape(lumi_sections.N_RUNS, lumi_sections.LS_PER_RUN), axis=1).ravel()


def _located(entry: dict, out: Path) -> dict:
    """The cached entry with absolute paths (a fileset coffea reads from any directory) and their names."""
    files = {str((out / name).resolve()): tree for name, tree in entry["files"].items()}
    names = dict(zip(files, entry["files"]))
    return {"files": files, "metadata": {**entry["metadata"], LOGICAL_NAMES: names}}
