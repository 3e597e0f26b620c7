"""Skim-time systematics: JES/JER-varied jets (propagated to MET) and correctionlib scale factors.

All numbers come from the shipped ``zprime_grad/data/corrections.json`` (see ``make_corrections.py``).
JER smearing is deterministic: its Gaussian numbers are a hash of (event number, jet index, collection),
never global random state, so every executor and every re-run gives the same columns.
"""

from __future__ import annotations

import functools
from importlib.resources import files

import correctionlib
import numpy as np

from zprime_grad_processors.padded import Objects

DEFAULT_CORRECTIONS = str(files("zprime_grad.data") / "corrections.json")
KINEMATIC_VARIATIONS = ("jes_up", "jes_down", "jer_up", "jer_down")
MET_JET_PT_MIN = 15.0  # AK4 jets whose change is propagated to MET (type-1 style)


@functools.lru_cache(maxsize=8)
def corrections(path: str = DEFAULT_CORRECTIONS) -> correctionlib.CorrectionSet:
    """Loaded once per process (correction sets are not shipped with the processor)."""
    return correctionlib.CorrectionSet.from_file(path)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def event_gaussian(event: np.ndarray, index: np.ndarray, salt: int) -> np.ndarray:
    """Standard normal numbers keyed by (event number, object index, salt): reproducible anywhere."""
    with np.errstate(over="ignore"):
        key = (np.asarray(event).astype(np.uint64) * np.uint64(1_000_003)
               + np.asarray(index).astype(np.uint64) * np.uint64(7919) + np.uint64(salt))
        a, b = _splitmix64(key), _splitmix64(key ^ np.uint64(0x5851F42D4C957F2D))
    u1 = ((a >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    u2 = (b >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def jet_variations(jets: Objects, event: np.ndarray, salt: int, path: str = DEFAULT_CORRECTIONS) -> dict:
    """{jes_up, jes_down, jer_up, jer_down} → jets with pt and mass scaled per jet (η, φ, tags kept)."""
    cset = corrections(path)
    valid = jets.valid
    pt, abseta = jets.pt[valid], np.abs(jets.eta[valid])
    jes = cset["jes_uncertainty"].evaluate(abseta, pt)
    sigma = cset["jer_resolution"].evaluate(abseta, pt)
    sf_up = cset["jer_sf"].evaluate("up")
    rows, cols = np.nonzero(valid)  # cols: the jet's index in its NanoAOD collection
    g = event_gaussian(np.asarray(event)[rows], cols, salt)
    extra = sigma * np.sqrt(max(sf_up**2 - 1.0, 0.0)) * g  # nominal sf = 1: MC resolution = "data"
    factors = {
        "jes_up": 1.0 + jes,
        "jes_down": 1.0 - jes,
        "jer_up": np.maximum(1.0 + extra, 0.0),
        "jer_down": np.maximum(1.0 - extra, 0.0),  # mirror of up, jet by jet
    }
    out = {}
    for name, factor in factors.items():
        scale = np.ones(valid.shape)
        scale[valid] = factor
        out[name] = jets.with_fields(pt=jets.pt * scale, mass=jets.mass * scale)
    return out


def propagate_to_met(met_pt, met_phi, jets: Objects, varied: Objects):
    """MET after the AK4 jets (pT > 15 GeV before or after the variation) moved from jets to varied."""
    use = jets.valid & ((jets.pt > MET_JET_PT_MIN) | (varied.pt > MET_JET_PT_MIN))
    dpt = np.where(use, varied.pt - jets.pt, 0.0)
    dpx, dpy = (dpt * np.cos(jets.phi)).sum(axis=1), (dpt * np.sin(jets.phi)).sum(axis=1)
    met_pt, met_phi = np.asarray(met_pt, np.float64), np.asarray(met_phi, np.float64)
    px, py = met_pt * np.cos(met_phi) - dpx, met_pt * np.sin(met_phi) - dpy
    return np.hypot(px, py), np.arctan2(py, px)


def muon_sf(pt, eta, path: str = DEFAULT_CORRECTIONS) -> dict[str, np.ndarray]:
    sf = corrections(path)["muon_id_iso_sf"]
    pt, abseta = np.asarray(pt, np.float64), np.abs(np.asarray(eta, np.float64))
    return {s: sf.evaluate(s, abseta, pt) for s in ("nominal", "up", "down")}


def btag_sf(jets: Objects, tagged: np.ndarray, path: str = DEFAULT_CORRECTIONS) -> dict[str, np.ndarray]:
    """Per event, the product of the per-jet SFs of the selected tagged jets (1 without tags)."""
    sf = corrections(path)["btag_sf"]
    use = jets.valid & tagged
    flavour = jets.hadronFlavour[use].astype(np.int64)
    flavour = np.where(np.isin(flavour, (4, 5)), flavour, 0)
    abseta, pt = np.abs(jets.eta[use]), jets.pt[use]
    out = {}
    for s in ("nominal", "up", "down"):
        per_jet = np.ones(use.shape)
        per_jet[use] = sf.evaluate(s, flavour, abseta, pt)
        out[s] = per_jet.prod(axis=1)
    return out
