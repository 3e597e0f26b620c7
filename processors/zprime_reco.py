"""tt̄ kinematics on flat per-event numpy arrays: four-vectors, the neutrino pz, the tt̄ mass.

The skim keeps exactly one muon, so every quantity here is one number per event; the numpy form keeps
the reconstruction readable and fast (no per-event Python).
"""

from __future__ import annotations

import numpy as np

W_MASS = 80.4  # GeV


def p4(pt, eta, phi, mass):
    """(px, py, pz, E) from (pt, eta, phi, mass)."""
    pt, eta, phi, mass = (np.asarray(x, dtype=np.float64) for x in (pt, eta, phi, mass))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + mass**2)


def invariant_mass(*vectors) -> np.ndarray:
    px, py, pz, e = (sum(v[i] for v in vectors) for i in range(4))
    return np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))


def delta_phi(a, b):
    """a - b wrapped into [-π, π] (rounding is ~3x faster than ``%`` on large arrays)."""
    d = np.asarray(a) - np.asarray(b)
    return d - (2 * np.pi) * np.round(d / (2 * np.pi))


def delta_r(eta1, phi1, eta2, phi2):
    return np.hypot(np.asarray(eta1) - np.asarray(eta2), delta_phi(phi1, phi2))


def neutrino_pz(lep_pt, lep_eta, lep_phi, met_pt, met_phi, w_mass: float = W_MASS) -> np.ndarray:
    """pz of the neutrino from m(μν) = m_W with a massless muon and pT(ν) = MET.

    Of the two solutions the one with the smaller |pz| is taken; when the discriminant is negative
    (MET mismeasured) the real part of the complex pair is used.
    """
    lep_pt, met_pt = np.asarray(lep_pt, np.float64), np.asarray(met_pt, np.float64)
    lep_pz = lep_pt * np.sinh(np.asarray(lep_eta, np.float64))
    lep_e2 = lep_pt**2 + lep_pz**2
    mu = 0.5 * w_mass**2 + lep_pt * met_pt * np.cos(delta_phi(lep_phi, met_phi))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = mu * lep_pz / lep_pt**2
        disc = a**2 - (lep_e2 * met_pt**2 - mu**2) / lep_pt**2
    root = np.sqrt(np.maximum(disc, 0.0))
    smaller = np.where(np.abs(a - root) < np.abs(a + root), a - root, a + root)
    return np.nan_to_num(np.where(disc < 0, a, smaller))


def neutrino_p4(lep_pt, lep_eta, lep_phi, met_pt, met_phi):
    pz = neutrino_pz(lep_pt, lep_eta, lep_phi, met_pt, met_phi)
    met_pt, met_phi = np.asarray(met_pt, np.float64), np.asarray(met_phi, np.float64)
    px, py = met_pt * np.cos(met_phi), met_pt * np.sin(met_phi)
    return px, py, pz, np.sqrt(px**2 + py**2 + pz**2)


def mtt_full(muon, met, bjet, top):
    """m(μ + ν + leptonic b jet + hadronic top jet); each argument a dict of pt/eta/phi(/mass) arrays."""
    nu = neutrino_p4(muon["pt"], muon["eta"], muon["phi"], met["pt"], met["phi"])
    return invariant_mass(
        p4(muon["pt"], muon["eta"], muon["phi"], muon["mass"]), nu,
        p4(bjet["pt"], bjet["eta"], bjet["phi"], bjet["mass"]),
        p4(top["pt"], top["eta"], top["phi"], top["mass"]),
    )


def mtt_reference(muon, met, jet, fatjet):
    """The reference analysis' m_tt̄: muon + leading fat jet + leading jet + MET as (pt, η=0, φ, m=0)."""
    zeros = np.zeros_like(np.asarray(met["pt"], np.float64))
    return invariant_mass(
        p4(muon["pt"], muon["eta"], muon["phi"], muon["mass"]),
        p4(fatjet["pt"], fatjet["eta"], fatjet["phi"], fatjet["mass"]),
        p4(jet["pt"], jet["eta"], jet["phi"], jet["mass"]),
        p4(met["pt"], zeros, met["phi"], zeros),
    )
