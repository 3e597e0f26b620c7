"""A parametric CMS-like detector: generator-level particles in, NanoAOD-level objects out.

Every number below is a model constant with a physics reason; they are the "MC truth" of the
detector that the shipped scale factors (correctionlib) correct, like real CMS simulation.

* Muons (|η| < 2.4, pT > 3): 97 % reconstruction efficiency; σ(pT)/pT = 1 % ⊕ 7·10⁻⁵·pT (7 % at
  1 TeV, as the CMS tracker + muon system); medium ID 99 %, tight ID 97.5 % of reconstructed
  muons. Isolation is computed from the generator particles in a cone: ``pfRelIso04_all`` (R = 0.4)
  and ``miniPFRelIso_all`` (R = 10 GeV / pT clipped to [0.05, 0.2]); ``miniIsoId`` 1–4 at
  0.4/0.2/0.1/0.05 as in NanoAOD.
* Electrons (|η| < 2.5, pT > 5): 90 % efficiency; σ(E)/E = 3 %/√E ⊕ 0.5 %; ``cutBased`` 0–4 from
  the R = 0.3 isolation and a random ID quality.
* AK4 jets: anti-kT R = 0.4 of all visible stable particles (|η| < 5, leptons included, as PF jets);
  σ(pT)/pT = 2.5/pT ⊕ 0.9/√pT ⊕ 4 % (×1.3 beyond the tracker, |η| > 2.5); stored above 15 GeV,
  |η| < 4.7. ``hadronFlavour`` 5/4/0 from a b/c hadron (pT > 5) within ΔR < 0.4.
  ``jetId`` = 6 (tight + lepton veto), 2 when one muon carries > 80 % of the jet pT.
* b tagging: discriminants drawn from per-flavour Beta distributions calibrated to the 2016
  medium working points — DeepJet (0.3093): ε_b = 77 %, ε_c = 14 %, ε_light = 1.1 %; DeepCSV
  (0.6321): 68 %, 12 %, 1.1 % — with one uniform number per jet feeding both (rank-correlated).
  b jets lose tagging power at high pT (a 25 % chance at pT ≥ 1 TeV, linearly from 200 GeV, of
  drawing from the c-jet distribution). Outside the tracker (|η| > 2.5) the score is −1.
  CSVv2 (``btagCSVV2``, the AGC's tagger) per flavour from Beta distributions through two 2015-16
  points: ε_b/ε_c/ε_light = 81/35/8 % at 0.5 (the AGC cut, close to the loose WP) and 64/13/1.2 %
  at 0.8 (medium); its uniform number is Gaussian-copula correlated (ρ = 0.9) with DeepCSV's, so
  the taggers agree jet by jet as real ones do; same high-pT degradation and |η| > 2.5 rule.
* Lepton impact parameters (``ip3d`` in cm, ``sip3d`` = ip3d/σ): σ = 20 μm ⊕ 60 μm·(10 GeV/pT).
  Prompt leptons (from W, Z, τ): a measurement error only, N(0, σ) with a 5 % tail 3σ wide (99 %
  pass sip3d < 4). Leptons with a b (c) hadron among their decay ancestors (``Truth.origin``)
  are displaced by cτ·E·s, cτ = 470 (200) μm, E ~ Exp(1), s ~ U(0, 1) the projection on the track.
* The quantities added for the AGC analysis (CSVv2, ip3d, sip3d) draw from a random stream of their
  own (``extra_rng``), so adding them left every earlier branch bit-identical.
* Fat jets: anti-kT R = 0.8 with soft drop (z = 0.1, β = 0); same pT response; mass and groomed
  mass smeared by 8 % (correlated); stored above 170 GeV. ``particleNet_TvsQCD``: a fat jet that
  contains (ΔR < 0.6) the b and both W quarks of a hadronic top and has 105 < m_SD < 210 GeV is a
  "top" (ε = 85 % / 50 % at 0.5 / 0.8); one containing the two W quarks is "W" (30 %); others are
  QCD (4 %, or 12 % inside the top mass window, since the tagger sees the mass).
* MET: minus the vector sum of the visible particles, corrected for the jet and lepton response
  (so jet smearing propagates), plus unclustered resolution σ = 0.5·√ΣET_uncl ⊕ 12 GeV per
  component (the constant stands in for pile-up, which is not simulated); PUPPI MET has
  0.45·√ΣET ⊕ 6 GeV. ``sumEt`` is the visible ΣET.
* Triggers: ``HLT_Mu50`` / ``HLT_TkMu50`` fire on a muon with plateau efficiency 93 % / 92 % and a
  2 GeV-wide turn-on at 50 GeV; ``HLT_IsoMu24`` needs pfRelIso04 < 0.15, 90 % plateau.
* Pile-up labels (``pileup.py``): ``Pileup_nTrueInt`` from a documented 2016-like MC profile,
  ``Pileup_nPU`` ~ Poisson(nTrueInt), ``PV_npvs`` and ``fixedGridRhoFastjetAll`` from nPU. They are
  labels only: no object above depends on pile-up (its effect on the MET resolution is the constant
  term above), so a pile-up weight is a pure reweighting of ``Pileup_nTrueInt``.

Pile-up particles and the underlying event are not simulated by default (see ``generate.underlying_event``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from zprime_grad.generate import matching
from zprime_grad.generate.jets import Jets, cluster
from zprime_grad.generate.truth import Particles, Truth

MUON_MASS = 0.10566
ELECTRON_MASS = 0.000511

# Beta(a, b) per flavour: (DeepJet, DeepCSV); calibration in the module docstring.
BTAG_BETA = {
    5: ((0.900, 0.6), (1.540, 0.6)),
    4: ((1.0, 5.313), (1.0, 2.120)),
    0: ((0.5, 8.974), (0.5, 3.453)),
}
# Beta(a, b) per flavour for CSVv2, solved for the two working points in the module docstring.
CSVV2_BETA = {5: (0.842, 0.244), 4: (0.618, 0.995), 0: (0.318, 1.864)}
CSVV2_DEEPCSV_RHO = 0.9
IP_RESOLUTION_CM = (0.002, 0.006)  # constant, and at 10 GeV (scales as 1/pT)
IP_PROMPT_TAIL = (0.05, 3.0)  # fraction of prompt leptons with a wider error, and its width in sigma
DECAY_CTAU_CM = {5: 0.047, 4: 0.020}
TOPTAG_BETA = {"top": (2.353, 0.8), "W": (1.5, 2.427), "qcd": (0.35, 2.737), "qcd_mass": (0.7, 2.434)}


@dataclass
class Collection:
    """Reco objects of one kind: flat float/int columns (NanoAOD field names) and per-event counts."""

    fields: dict[str, np.ndarray]
    counts: np.ndarray


def _jagged_inputs(p: Particles) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return matching.offsets(p.counts), p.eta, p.phi


def _keep(mask: np.ndarray, counts: np.ndarray) -> np.ndarray:
    event = np.repeat(np.arange(len(counts)), counts)
    return np.bincount(event[mask], minlength=len(counts))


def _turn_on(pt: np.ndarray, threshold: float, width: float, plateau: float) -> np.ndarray:
    return plateau * special.ndtr((pt - threshold) / width)


def _any_fires(eff: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An event fires if any object fires, objects independent: 1 - Π(1 - ε)."""
    event = np.repeat(np.arange(len(counts)), counts)
    log_miss = np.bincount(event, weights=np.log1p(-np.minimum(eff, 1 - 1e-12)), minlength=len(counts))
    return rng.random(len(counts)) < -np.expm1(log_miss)


def leptons(truth: Truth, flavour: int, rng: np.random.Generator) -> tuple[Collection, np.ndarray]:
    """Reconstructed muons (13) or electrons (11); also returns the index of their truth particle."""
    vis = truth.visible
    muon = flavour == 13
    eta_max, pt_min, eff = (2.4, 3.0, 0.97) if muon else (2.5, 5.0, 0.90)
    is_lep = (np.abs(vis.pdg) == flavour) & (np.abs(vis.eta) < eta_max) & (vis.pt > pt_min)
    found = is_lep & (rng.random(len(is_lep)) < eff)
    idx = np.flatnonzero(found)
    lep = vis.select(found)
    counts = lep.counts
    pt_true = lep.pt
    if muon:
        sigma = np.hypot(0.01, 7e-5 * pt_true)
    else:
        energy = lep.e
        sigma = np.hypot(0.03 / np.sqrt(energy), 0.005)
    pt = pt_true * np.clip(1 + sigma * rng.standard_normal(len(pt_true)), 0.05, None)

    off, eta, phi = _jagged_inputs(lep)
    v_off, v_eta, v_phi = _jagged_inputs(vis)
    cone = lambda r: matching.cone_sum(off, eta, phi, r, v_off, v_eta, v_phi, vis.pt) / pt  # noqa: E731
    fields = {
        "pt": pt, "eta": eta, "phi": phi,
        "mass": np.full(len(pt), MUON_MASS if muon else ELECTRON_MASS),
        "charge": -np.sign(lep.pdg).astype(np.int32),
    }
    if muon:
        iso04 = cone(np.full(len(pt), 0.4))
        mini = cone(np.clip(10.0 / np.maximum(pt, 1e-3), 0.05, 0.2))
        quality = rng.random(len(pt))
        fields |= {
            "tightId": quality < 0.975,
            "mediumId": quality < 0.99,
            "pfRelIso04_all": iso04,
            "miniPFRelIso_all": mini,
            "miniIsoId": np.select([mini < 0.05, mini < 0.1, mini < 0.2, mini < 0.4], [4, 3, 2, 1], 0).astype(np.uint8),
        }
    else:
        iso03 = cone(np.full(len(pt), 0.3))
        quality = rng.random(len(pt))
        fields |= {
            "cutBased": np.select(
                [(iso03 < 0.06) & (quality < 0.85), (iso03 < 0.10) & (quality < 0.90),
                 (iso03 < 0.15) & (quality < 0.95), iso03 < 0.30],
                [4, 3, 2, 1], 0,
            ).astype(np.int32),
            "pfRelIso03_all": iso03,
        }
    return Collection(fields, counts), idx


def _jet_resolution(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    pt = np.maximum(pt, 1.0)
    sigma = np.sqrt((2.5 / pt) ** 2 + 0.9**2 / pt + 0.04**2)
    return np.where(np.abs(eta) > 2.5, 1.3 * sigma, sigma)


def _muon_dominated(jets: Jets, truth: Truth) -> np.ndarray:
    """Jets in which one muon carries > 80 % of the pT fail the lepton veto of the tight jet ID."""
    vis = truth.visible
    muons = vis.select(np.abs(vis.pdg) == 13)
    m_off, m_eta, m_phi = _jagged_inputs(muons)
    near = matching.nearest(matching.offsets(jets.counts), jets.eta, jets.phi, m_off, m_eta, m_phi, 0.4)
    first = np.repeat(m_off[:-1], jets.counts)
    mu_pt = np.zeros(len(jets.pt))
    has = near >= 0
    mu_pt[has] = muons.pt[first[has] + near[has]]
    return mu_pt > 0.8 * jets.pt


def _flavour(jets: Jets, truth: Truth, radius: float) -> np.ndarray:
    j_off = matching.offsets(jets.counts)
    flav = np.zeros(len(jets.pt), np.int32)
    for hadrons, code in ((truth.c_hadrons, 4), (truth.b_hadrons, 5)):  # b overrides c
        h_off, h_eta, h_phi = _jagged_inputs(hadrons)
        hit = matching.nearest(j_off, jets.eta, jets.phi, h_off, h_eta, h_phi, radius) >= 0
        flav[hit] = code
    return flav


def impact_parameters(origin: np.ndarray, pt: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``ip3d`` (cm) and ``sip3d`` of leptons; ``origin`` 5/4/0 = from a b/c hadron decay, prompt."""
    n = len(pt)
    sigma = np.hypot(IP_RESOLUTION_CM[0], IP_RESOLUTION_CM[1] * 10.0 / np.maximum(pt, 1.0))
    frac, width = IP_PROMPT_TAIL
    error = np.where(rng.random(n) < frac, width, 1.0) * rng.standard_normal(n)
    decay = rng.exponential(size=n) * rng.random(n)
    displacement = np.zeros(n)
    for flav, ctau in DECAY_CTAU_CM.items():
        sel = origin == flav
        displacement[sel] = ctau * decay[sel]
    ip3d = np.abs(displacement + sigma * error)
    return {"ip3d": ip3d, "sip3d": ip3d / sigma}


def _csvv2(effective: np.ndarray, u: np.ndarray, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CSVv2 scores: the DeepCSV uniform ``u`` mixed with an independent normal (Gaussian copula)."""
    rho = CSVV2_DEEPCSV_RHO
    z = rho * special.ndtri(np.clip(u, 1e-12, 1 - 1e-12)) + np.sqrt(1 - rho**2) * rng.standard_normal(len(u))
    v = special.ndtr(z)
    score = np.empty(len(u))
    for flav, (a, b) in CSVV2_BETA.items():
        sel = effective == flav
        score[sel] = stats.beta.ppf(v[sel], a, b)
    score[np.abs(eta) > 2.5] = -1.0
    return score


def _btag(flavour: np.ndarray, pt: np.ndarray, eta: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """DeepJet and DeepCSV scores, plus the uniform numbers and effective flavours CSVv2 derives from."""
    u = rng.random(len(pt))
    degrade = rng.random(len(pt)) < 0.25 * np.clip((pt - 200.0) / 800.0, 0.0, 1.0)
    effective = np.where((flavour == 5) & degrade, 4, flavour)
    deepjet, deepcsv = np.empty(len(pt)), np.empty(len(pt))
    for flav, ((a1, b1), (a2, b2)) in BTAG_BETA.items():
        sel = effective == flav
        deepjet[sel] = stats.beta.ppf(u[sel], a1, b1)
        deepcsv[sel] = stats.beta.ppf(u[sel], a2, b2)
    outside = np.abs(eta) > 2.5
    deepjet[outside] = -1.0
    deepcsv[outside] = -1.0
    return deepjet, deepcsv, u, effective


def jets_ak4(truth: Truth, rng: np.random.Generator, extra_rng: np.random.Generator) -> tuple[Collection, Jets, Jets]:
    """Reco AK4 jets, plus the particle-level jets (all, and those matched to kept reco jets).

    ``extra_rng`` draws only CSVv2, so the other fields are what they were before it existed."""
    gen = cluster(truth.visible, 0.4, 10.0)
    scale = np.clip(1 + _jet_resolution(gen.pt, gen.eta) * rng.standard_normal(len(gen.pt)), 0.0, None)
    pt, mass = gen.pt * scale, gen.mass * scale
    keep = (pt > 15.0) & (np.abs(gen.eta) < 4.7)
    counts = _keep(keep, gen.counts)
    kept_gen = Jets(gen.pt[keep], gen.eta[keep], gen.phi[keep], gen.mass[keep], counts)
    flavour = _flavour(kept_gen, truth, 0.4)
    deepjet, deepcsv, u, effective = _btag(flavour, pt[keep], gen.eta[keep], rng)
    jet_id = np.where(_muon_dominated(kept_gen, truth), 2, 6).astype(np.int32)
    fields = {
        "pt": pt[keep], "eta": gen.eta[keep], "phi": gen.phi[keep], "mass": mass[keep],
        "btagDeepB": deepcsv, "btagDeepFlavB": deepjet, "jetId": jet_id, "hadronFlavour": flavour,
        "btagCSVV2": _csvv2(effective, u, gen.eta[keep], extra_rng),
    }
    return Collection(fields, counts), gen, kept_gen


def _top_category(fat: Jets, msd: np.ndarray, truth: Truth) -> np.ndarray:
    """0 QCD, 1 W (both W quarks inside), 2 top (b + both W quarks inside, m_SD in the top window)."""
    f_off = matching.offsets(fat.counts)
    tp = truth.top_partons
    t_off, t_eta, t_phi = _jagged_inputs(tp)
    # partons come in triplets (b, q, q') per hadronic top; count per triplet role
    role = np.tile(np.array([-1, 1, 1]), len(tp.pt) // 3) if len(tp.pt) else np.zeros(0)
    inside = matching.count_within(f_off, fat.eta, fat.phi, t_off, t_eta, t_phi, role, 0.6)
    has_w = inside[:, 1] >= 2
    has_top = has_w & (inside[:, 0] >= 1) & (msd > 105.0) & (msd < 210.0)
    return np.where(has_top, 2, np.where(has_w, 1, 0))


def fat_jets(truth: Truth, rng: np.random.Generator) -> tuple[Collection, Jets]:
    gen = cluster(truth.visible, 0.8, 120.0, groom=True)
    n = len(gen.pt)
    scale = np.clip(1 + _jet_resolution(gen.pt, gen.eta) * rng.standard_normal(n), 0.0, None)
    mass_scale = np.clip(scale * (1 + 0.08 * rng.standard_normal(n)), 0.0, None)
    pt = gen.pt * scale
    keep = (pt > 170.0) & (np.abs(gen.eta) < 4.7)
    counts = _keep(keep, gen.counts)
    kept = Jets(gen.pt[keep], gen.eta[keep], gen.phi[keep], gen.mass[keep], counts, gen.msoftdrop[keep])
    msd = gen.msoftdrop[keep] * mass_scale[keep]
    category = _top_category(kept, msd, truth)
    in_window = (msd > 105.0) & (msd < 210.0)
    label = np.where(category == 2, "top", np.where(category == 1, "W", np.where(in_window, "qcd_mass", "qcd")))
    score = np.empty(len(msd))
    u = rng.random(len(msd))
    for name, (a, b) in TOPTAG_BETA.items():
        sel = label == name
        score[sel] = stats.beta.ppf(u[sel], a, b)
    fields = {
        "pt": pt[keep], "eta": gen.eta[keep], "phi": gen.phi[keep], "mass": gen.mass[keep] * mass_scale[keep],
        "msoftdrop": msd, "particleNet_TvsQCD": score,
        "jetId": np.where(_muon_dominated(kept, truth), 2, 6).astype(np.int32),
    }
    return Collection(fields, counts), kept


def _sum_per_event(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.bincount(np.repeat(np.arange(len(counts)), counts), weights=values, minlength=len(counts))


def missing_et(
    truth: Truth, jets: Collection, gen_jets: Jets, lepton_sets: list[tuple[Collection, np.ndarray]],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """MET and PUPPI MET: visible recoil, corrected for object response, plus unclustered noise."""
    vis, n = truth.visible, truth.n_events
    mex = -_sum_per_event(vis.px, vis.counts)
    mey = -_sum_per_event(vis.py, vis.counts)
    jpt, jphi = jets.fields["pt"], jets.fields["phi"]
    # response corrections: reco minus particle level, for jets and leptons
    mex -= _sum_per_event(jpt * np.cos(jphi) - gen_jets.px, jets.counts)
    mey -= _sum_per_event(jpt * np.sin(jphi) - gen_jets.py, jets.counts)
    for lep, idx in lepton_sets:
        pt, phi = lep.fields["pt"], lep.fields["phi"]
        mex -= _sum_per_event((pt - vis.pt[idx]) * np.cos(phi), lep.counts)
        mey -= _sum_per_event((pt - vis.pt[idx]) * np.sin(phi), lep.counts)
    sum_et = _sum_per_event(vis.pt, vis.counts)
    unclustered = np.maximum(sum_et - _sum_per_event(gen_jets.pt, gen_jets.counts), 0.0)
    out = {"MET_sumEt": sum_et}
    for prefix, stochastic, constant in (("MET", 0.5, 12.0), ("PuppiMET", 0.45, 6.0)):
        sigma = np.hypot(stochastic * np.sqrt(unclustered), constant)
        x = mex + sigma * rng.standard_normal(n)
        y = mey + sigma * rng.standard_normal(n)
        out[f"{prefix}_pt"], out[f"{prefix}_phi"] = np.hypot(x, y), np.arctan2(y, x)
    return out


def triggers(muons: Collection, rng: np.random.Generator) -> dict[str, np.ndarray]:
    pt, iso = muons.fields["pt"], muons.fields["pfRelIso04_all"]
    return {
        "HLT_Mu50": _any_fires(_turn_on(pt, 50.0, 2.0, 0.93), muons.counts, rng),
        "HLT_TkMu50": _any_fires(_turn_on(pt, 50.0, 2.0, 0.92), muons.counts, rng),
        "HLT_IsoMu24": _any_fires(_turn_on(pt, 24.0, 1.0, 0.90) * (iso < 0.15), muons.counts, rng),
    }
