"""What each sample is, in Pythia 8 settings, and what cross section it is normalised to.

Choices (documented here because they set the physics of the default dataset):

* **Forced decays.** The analysis wants one muon and a hadronic top. For the tt̄-like samples
  (``zprime``, ``ttbar``) one W is forced to hadrons and the other to μν or τν (τ → μ included by
  Pythia's τ decays), alternating which charge decays leptonically from file to file so the sample is
  charge-symmetric. The cross section is multiplied by ``2·BR(W→had)·BR(W→μν+τν)``. Dileptonic and
  all-hadronic tt̄ are not generated: after exactly one isolated muon, ≥ 2 jets and a 200 GeV fat jet
  they are a few-percent background, below the tt̄ normalisation uncertainty. Single top forces its
  top's W to μν/τν; W+jets forces W → μν/τν.
* **Slices and biasing.** The boosted region (m_tt̄ ≳ 1 TeV, a top with pT ≳ 300 GeV) is a few
  percent of tt̄. tt̄ is therefore generated in two pT-hat slices that share the inclusive cross
  section (each slice gets xsec·σ_slice/Σσ_slices from Pythia's own σ estimates, see
  ``fileset.py``), with more events in the high slice. Within a slice,
  ``PhaseSpace:bias2Selection`` with ``bias_ref = pthat_min`` oversamples high pT-hat as
  (pT-hat/ref)^pow; Pythia's compensating weight, ≤ 1 there, is written as ``genWeight``. Biasing a
  sample that starts at pT-hat = 0 is avoided: its weights have a heavy tail (an effective sample
  size of ~10 % was measured for tt̄ with pow = 3), which makes Σ genWeight noisy.
* **Cross sections.** ttbar: 831.76 pb (NNLO+NNLL). Single top: t-channel 217.0 pb + s-channel
  10.3 pb (NLO, t + t̄), split between the two channels by Pythia's LO ratio. W+jets: Pythia's LO
  σ(W+jet, pT-hat > pthat_min) × BR (Pythia includes the open-channel fraction) × k_factor.
  Z': σ(pp → Z' → tt̄) from the config, chosen so that the baseline analysis has an expected
  significance of about 2 at 16.4 fb⁻¹ (README, "The default dataset").
* **Single-top channels.** ``kind: single_top`` makes Pythia's t- and s-channel together, unless its
  ``process`` is one of the AGC's channel names (``SINGLE_TOP_CHANNELS``: ``single_top_t_chan``,
  ``single_top_s_chan``), which selects that channel alone (configs/agc_ttbar.yaml). Pythia 8 has
  no tW process, so the AGC's ``single_top_tW`` cannot be generated.
* **Scale variations.** ``scale_multiplier`` = m ≠ 1 multiplies every renormalisation and
  factorisation scale Pythia has: the hard process' (``SigmaProcess:renormMultFac``,
  ``factorMultFac``) and the shower's (``TimeShower:``/``SpaceShower:renormMultFac``,
  ``factorMultFac``), m = 2 and 0.5 for the AGC's ``scaleup``/``scaledown`` tt̄ samples. Pythia's
  factors multiply the squared scales, so they are set to m² (4 and 0.25). The shower
  is varied too, not only the hard process: in this LO tt̄ with a fixed ``xsec_pb`` the hard-process
  scales only move the PDFs' scale (μR of a 2 → 2 process changes its normalisation, which the fixed
  cross section undoes), while the shower's μR sets how much radiation, hence how many jets, an event
  has; the AGC's two-point samples are full Powheg + Pythia 8 samples with their scales varied, whose
  selection acceptance moves through exactly that extra radiation. With a fixed ``xsec_pb`` the
  variation changes shapes and acceptance, not the normalisation (as the AGC's xsec · lumi / N for
  every tt̄ variation).
"""

from __future__ import annotations

from dataclasses import dataclass

from zprime_grad.config import SampleConfig

# PDG 2024 W branching fractions.
BR_W_HADRONS = 0.6741
BR_W_MUNU = 0.1063
BR_W_TAUNU = 0.1138
BR_W_MU_OR_TAU = BR_W_MUNU + BR_W_TAUNU
BR_TT_SEMILEPTONIC_MU_TAU = 2.0 * BR_W_HADRONS * BR_W_MU_OR_TAU

W_HADRONIC = "1 2 3 4 5"  # W -> q q' (any channel containing a quark)
W_MU_TAU = "13 15"  # W -> mu nu, tau nu

SINGLE_TOP_T = "Top:qq2tq(t:W) = on"
SINGLE_TOP_S = "Top:ffbar2tqbar(s:W) = on"
# AGC process names of the single-top channels Pythia has (no tW); any other process name: both
SINGLE_TOP_CHANNELS = {"single_top_t_chan": (SINGLE_TOP_T,), "single_top_s_chan": (SINGLE_TOP_S,)}

COMMON_SETTINGS = (
    "Next:numberCount = 0",
    "Next:numberShowEvent = 0",
    "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0",
    "Print:quiet = on",
    "Check:event = off",
    # Generator-level stable particles as in CMS: c*tau > 10 mm (K0S, Lambda stay stable). pi0 are
    # kept undecayed: the parametric calorimeter treats them like their two photons, and they halve
    # the number of particles to cluster.
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10",
    "111:mayDecay = off",
)


@dataclass(frozen=True)
class PythiaSetup:
    """Everything needed to start one Pythia instance for one output file."""

    settings: tuple[str, ...]
    xsec_pb: float | None  # effective (forced BRs folded in, k_factor not); None: Pythia's sigmaGen
    k_factor: float


def _forced_w(leptonic_charge: int) -> tuple[str, ...]:
    """One W to hadrons, the other to mu/tau nu; ``leptonic_charge`` picks which one is leptonic."""
    lep, had = ("onPosIfAny", "onNegIfAny") if leptonic_charge > 0 else ("onNegIfAny", "onPosIfAny")
    return ("24:onMode = off", f"24:{lep} = {W_MU_TAU}", f"24:{had} = {W_HADRONIC}")


def _bias(cfg: SampleConfig) -> tuple[str, ...]:
    if cfg.bias_pow <= 0:
        return ("PhaseSpace:bias2Selection = off",)
    return (
        "PhaseSpace:bias2Selection = on",
        f"PhaseSpace:bias2SelectionPow = {cfg.bias_pow}",
        f"PhaseSpace:bias2SelectionRef = {cfg.bias_ref}",
    )


SCALE_SETTINGS = (
    "SigmaProcess:renormMultFac",
    "SigmaProcess:factorMultFac",
    "TimeShower:renormMultFac",
    "TimeShower:factorMultFac",
    "SpaceShower:renormMultFac",
    "SpaceShower:factorMultFac",
)


def _scales(cfg: SampleConfig) -> tuple[str, ...]:
    """Every μR/μF of the hard process and the shower × ``scale_multiplier``. Pythia's ``*MultFac``
    multiply the scales squared (μ², the shower's pT²), so μ × m is ``MultFac = m²`` (4 and 0.25 for the
    usual × 2, × 0.5). Nothing at m = 1: a nominal sample's settings, hence events, are what they were
    before scale variations existed."""
    if cfg.scale_multiplier == 1.0:
        return ()
    return tuple(f"{name} = {cfg.scale_multiplier ** 2!r}" for name in SCALE_SETTINGS)


def pythia_setup(
    cfg: SampleConfig, *, sqrt_s: float, underlying_event: bool, seed: int, file_index: int
) -> PythiaSetup:
    """Pythia settings for file ``file_index`` of a sample (the seed is already per file)."""
    base = (
        *COMMON_SETTINGS,
        f"Beams:eCM = {sqrt_s}",
        f"PartonLevel:MPI = {'on' if underlying_event else 'off'}",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        f"PhaseSpace:pTHatMin = {cfg.pthat_min}",
        f"PhaseSpace:pTHatMax = {cfg.pthat_max if cfg.pthat_max is not None else -1.0}",
        *_bias(cfg),
        *_scales(cfg),
    )
    leptonic_charge = 1 if file_index % 2 == 0 else -1
    if cfg.kind == "ttbar":
        process = ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", *_forced_w(leptonic_charge))
        br = BR_TT_SEMILEPTONIC_MU_TAU
    elif cfg.kind == "zprime":
        lo, hi = max(cfg.mass - 25 * cfg.width, 400.0), cfg.mass + 25 * cfg.width
        process = (
            "NewGaugeBoson:ffbar2gmZZprime = on",
            "Zprime:gmZmode = 3",  # pure Z', no gamma*/Z interference
            f"32:m0 = {cfg.mass}",
            f"32:mWidth = {cfg.width}",
            "32:doForceWidth = on",
            f"32:mMin = {lo}",
            f"32:mMax = {hi}",
            "32:onMode = off",
            "32:onIfAny = 6",
            *_forced_w(leptonic_charge),
        )
        br = BR_TT_SEMILEPTONIC_MU_TAU
    elif cfg.kind == "single_top":
        process = (
            *SINGLE_TOP_CHANNELS.get(cfg.process or "", (SINGLE_TOP_T, SINGLE_TOP_S)),
            "24:onMode = off",
            f"24:onIfAny = {W_MU_TAU}",
        )
        br = BR_W_MU_OR_TAU
    elif cfg.kind == "wjets":
        process = (
            "WeakBosonAndParton:qqbar2Wg = on",
            "WeakBosonAndParton:qg2Wq = on",
            "24:onMode = off",
            f"24:onIfAny = {W_MU_TAU}",
        )
        br = BR_W_MU_OR_TAU
    else:  # pragma: no cover - the config model restricts kind
        raise ValueError(f"unknown sample kind {cfg.kind!r}")
    # xsec_pb is before the forced decays; None means Pythia's own sigma, which already includes the
    # open-channel fraction of the forced resonance decays.
    xsec = cfg.xsec_pb * br if cfg.xsec_pb is not None else None
    return PythiaSetup(settings=base + process, xsec_pb=xsec, k_factor=cfg.k_factor)
