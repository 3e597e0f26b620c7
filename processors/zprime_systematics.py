"""Skim-time systematics: JES/JER-varied jets (propagated to MET) and correctionlib scale factors.

The corrections are the era's (``EraInputs``: names from the era table, values cut out of the POG files
or the shipped ``zprime_grad/data/corrections.json``), evaluated by input name (``zprime_grad.corrections``).
JER smearing is deterministic: its Gaussian numbers are a hash of (event number, jet index, collection),
never global random state, so every executor and every re-run gives the same columns.
"""

from __future__ import annotations

import numpy as np

from zprime_grad.corrections import evaluate
from zprime_grad.era_inputs import EraInputs
from zprime_grad_processors.padded import Objects

KINEMATIC_VARIATIONS = ("jes_up", "jes_down", "jer_up", "jer_down")
MET_JET_PT_MIN = 15.0  # AK4 jets whose change is propagated to MET (type-1 style)
VARIATIONS = ("nominal", "up", "down")


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


def smearing_factors(sigma, sf: dict[str, np.ndarray], g) -> dict[str, np.ndarray]:
    """Stochastic JER smearing 1 + σ·g·√(sf² − 1) per variation (sf < 1 cannot un-smear: that variation
    mirrors up around nominal, as the generated detector's sf_down = 0.9 asks)."""
    factor = {v: 1.0 + sigma * np.sqrt(np.maximum(sf[v] ** 2 - 1.0, 0.0)) * g for v in VARIATIONS}
    factor["down"] = np.where(sf["down"] < 1.0, 2.0 * factor["nominal"] - factor["up"], factor["down"])
    return {v: np.maximum(f, 0.0) for v, f in factor.items()}


def jet_variations(jets: Objects, event: np.ndarray, salt: int, inputs: EraInputs, rho: np.ndarray,
                   jes_kind: str = "jes_jet") -> tuple[Objects, dict]:
    """(nominal jets — JER-smeared when the era's nominal SF is above 1 —, {jes_up, jes_down, jer_up,
    jer_down} → jets with pt and mass scaled per jet; η, φ, tags kept)."""
    valid = jets.valid
    rows, cols = np.nonzero(valid)  # cols: the jet's index in its NanoAOD collection
    pt, eta = jets.pt[valid], jets.eta[valid]
    payload, keys = inputs.corrections_json, inputs.keys
    off = inputs.off
    jes = (np.zeros_like(pt) if jes_kind in off else
           evaluate(payload, keys[jes_kind][0], eta=eta, pt=pt))
    if "jer_resolution" in off or "jer_sf" in off:
        smear = {v: np.ones_like(pt) for v in VARIATIONS}
    else:
        sigma = evaluate(payload, keys["jer_resolution"][0], eta=eta, pt=pt, rho=np.asarray(rho)[rows])
        sf = {v: evaluate(payload, keys["jer_sf"][0], v, eta=eta, pt=pt) for v in VARIATIONS}
        smear = smearing_factors(sigma, sf, event_gaussian(np.asarray(event)[rows], cols, salt))

    def scaled(factor):
        scale = np.ones(valid.shape)
        scale[valid] = factor
        return jets.with_fields(pt=jets.pt * scale, mass=jets.mass * scale)

    nominal = smear["nominal"]
    out = {"jes_up": scaled(nominal * (1.0 + jes)), "jes_down": scaled(nominal * (1.0 - jes)),
           "jer_up": scaled(smear["up"]), "jer_down": scaled(smear["down"])}
    return (jets if np.all(nominal == 1.0) else scaled(nominal)), out


def propagate_to_met(met_pt, met_phi, jets: Objects, varied: Objects):
    """MET after the AK4 jets (pT > 15 GeV before or after the variation) moved from jets to varied."""
    use = jets.valid & ((jets.pt > MET_JET_PT_MIN) | (varied.pt > MET_JET_PT_MIN))
    dpt = np.where(use, varied.pt - jets.pt, 0.0)
    dpx, dpy = (dpt * np.cos(jets.phi)).sum(axis=1), (dpt * np.sin(jets.phi)).sum(axis=1)
    met_pt, met_phi = np.asarray(met_pt, np.float64), np.asarray(met_phi, np.float64)
    px, py = met_pt * np.cos(met_phi) - dpx, met_pt * np.sin(met_phi) - dpy
    return np.hypot(px, py), np.arctan2(py, px)


def muon_sf(pt, eta, inputs: EraInputs) -> dict[str, np.ndarray]:
    """The product of the era's muon SFs (e.g. ID × isolation), each at nominal / up / down together."""
    pt, eta = np.asarray(pt, np.float64), np.asarray(eta, np.float64)
    out = {v: np.ones_like(pt) for v in VARIATIONS}
    if "muon" in inputs.off:
        return out
    for name in inputs.keys["muon"]:
        for v in VARIATIONS:
            out[v] = out[v] * evaluate(inputs.corrections_json, name, v, eta=eta, pt=pt)
    return out


def btag_sf(jets: Objects, tagged: np.ndarray, inputs: EraInputs) -> dict[str, np.ndarray]:
    """Per event, the product of the per-jet fixed-WP (medium) SFs of the tagged selected jets (1 without
    tags): b and c jets from the tagger's heavy-flavour correction, light jets from its light one."""
    use = jets.valid & tagged
    out = {v: np.ones(use.shape[0]) for v in VARIATIONS}
    if "btag" in inputs.off or not use.any():
        return out
    heavy_name, light_name = inputs.keys["btag"]
    flavour = jets.hadronFlavour[use].astype(np.int64)
    flavour = np.where(np.isin(flavour, (4, 5)), flavour, 0)
    eta, pt = jets.eta[use], jets.pt[use]
    heavy = flavour > 0
    for v in VARIATIONS:
        per_jet = np.ones(flavour.shape)
        for name, which in ((heavy_name, heavy), (light_name, ~heavy)):
            if which.any():
                per_jet[which] = evaluate(inputs.corrections_json, name, v, working_point="M",
                                          flavour=flavour[which], eta=eta[which], pt=pt[which])
        per_event = np.ones(use.shape)
        per_event[use] = per_jet
        out[v] = per_event.prod(axis=1)
    return out


def pileup_weight(n_true_int, inputs: EraInputs) -> dict[str, np.ndarray]:
    """LUM's weight of the number of true interactions, nominal / up / down (the min-bias σ varied)."""
    n = np.asarray(n_true_int, np.float64)
    if "pileup" in inputs.off:
        return {v: np.ones_like(n) for v in VARIATIONS}
    return {v: evaluate(inputs.corrections_json, inputs.keys["pileup"][0], v, ntrueint=n) for v in VARIATIONS}
