"""Write ``corrections.json`` (and ``golden_generated.json``): the generated detector's corrections in
the schemas of the CMS POG correctionlib files, so that pointing the analysis at the official file is
the whole change.

Run ``python -m zprime_grad.data.make_corrections`` to regenerate both (the output is committed).

The generated samples come from a parametric detector model in which the simulation *is* the
detector, so every scale factor is centred near 1; what matters for the fit is the size of the
up/down variations, which are set to typical CMS 2016-legacy magnitudes. Every correction has the
name, inputs (names, types, order), category keys and node layout of its POG's files
(tests/unit/test_pog_corrections.py compares them with the official files when ../shared/data is there):

- **MUO** ``NUM_TightID_DEN_TrackerMuons`` (abseta, pt, scale_factors): the tight-ID scale factor of
  the selected muon, with the mini-isolation SF folded in (the generator has one muon efficiency
  model; the official files split ID and isolation), 0.96–0.985 ± 0.5–2.5 %. ``scale_factors``:
  ``nominal``, ``systup``, ``systdown`` (nominal ± the uncertainty) and ``syst`` (the absolute
  uncertainty), as MUO's files. Layout abseta → pt → category, as the MUO 2016 high-pT file. Note:
  MUO's newer ``muon_Z.json.gz`` files take the *signed* ``eta`` (with an abs() transform inside),
  the high-pT file ``abseta``; this file takes ``abseta``.
- **BTV** fixed working points, for DeepCSV (``Jet_btagDeepB``) and DeepJet (``Jet_btagDeepFlavB``):
  ``<tagger>_mujets`` and ``<tagger>_comb`` (flavor 4, 5) and ``<tagger>_incl`` (flavor 0), inputs
  (systematic ∈ central/up/down, working_point ∈ L/M/T, flavor, abseta, pt), layout systematic →
  working_point → flavor → abseta → pt as BTV's. Per-jet SFs at M: b 0.97 ± 2–4 %, c 0.97 ± 5–8 %,
  light 1.05 ± 8–12 % (by pT), both taggers and both b/c methods alike (one generated truth, no
  measurement behind either). L and T have no measurement either: they reuse M's central values with
  M's uncertainties × 0.75 (L) and × 1.5 (T), the usual ordering of CMS 2016 fixed-WP uncertainties;
  the default analysis evaluates only M. ``<tagger>_wp_values`` (working_point) → the discriminant
  thresholds the generator is calibrated to (2016 legacy): DeepCSV 0.2217/0.6321/0.8953, DeepJet
  0.0614/0.3093/0.7221, as BTV's Run 3 ``btagging.json``. The event weight is the product over tagged
  selected jets (a deliberately simple fixed-WP scheme).
- **JME** (names as ``jet_jerc.json``'s, tag ``Generated_V1`` / ``Generated_JRV1``):
  ``Generated_V1_MC_Total_AK4PFchs`` (JetEta signed, JetPt) → the relative JES uncertainty, 1–6 %,
  symmetric in η (jets and fat jets alike); ``Generated_JRV1_MC_PtResolution_AK4PFchs`` (JetEta, JetPt,
  Rho) → the relative pT resolution of the generator's detector model (σ/pT = 2.5/pT ⊕ 0.9/√pT ⊕ 4 %,
  × 1.3 at |η| > 2.5, at each pT bin's geometric centre), layout JetEta → Rho → JetPt as JER's, with one
  Rho bin: the model has no pile-up term, Rho is accepted and does not change the value;
  ``Generated_JRV1_MC_ScaleFactor_AK4PFchs`` (JetEta, systematic ∈ nom/up/down) → 1.0 / 1.1 / 0.9,
  the data/MC resolution ratio (the pseudo-data come from the same model, so nominal is 1).
- **LUM** ``Generated_goldenJSON`` (NumTrueInteractions, weights ∈ nominal/up/down) → the pile-up
  weight, data/MC ratio of the profiles of ``zprime_grad/generate/pileup.py`` in 99 unit bins on
  [0, 99), flow clamp, as LUM's ``puWeights.json``. MC: 98 % Gamma(mean 24, sd 7.5) + 2 % flat; data:
  Normal(24, 6) at σ_mb = 69.2 mb, and scaled by 1 ± 4.6 % for up/down (σ_mb ± 4.6 %, as CMS does).
  The weights lie in [0, 1.83] and average exactly 1 over the MC profile.

``golden_generated.json`` is the golden JSON of the pseudo-data (``zprime_grad/generate/lumi.py``):
runs 1001–1010 of 200 lumi sections, 1,920 of 2,000 certified.

Pre-POG-schema key names (``muon_id_iso_sf``, ``btag_sf``, ``jes_uncertainty``, ``jer_resolution``,
``jer_sf``) are gone; their numbers are the ones above.
"""

from __future__ import annotations

import json
from pathlib import Path

import correctionlib.schemav2 as cs

from zprime_grad.generate import lumi, pileup

OUT = Path(__file__).with_name("corrections.json")
GOLDEN = Path(__file__).with_name("golden_generated.json")
PT_MAX = 1.0e5  # last bin edge; values above it are clamped into the last bin
ETA_MAX = 5.0
WORKING_POINTS = {"deepCSV": {"L": 0.2217, "M": 0.6321, "T": 0.8953},
                  "deepJet": {"L": 0.0614, "M": 0.3093, "T": 0.7221}}
WP_UNCERTAINTY_SCALE = {"L": 0.75, "M": 1.0, "T": 1.5}  # L and T: M's central value, scaled uncertainty


def _binning(name: str, edges, content, flow="clamp") -> cs.Binning:
    return cs.Binning(nodetype="binning", input=name, edges=[float(e) for e in edges], content=list(content), flow=flow)


def _category(name: str, items: dict) -> cs.Category:
    return cs.Category(nodetype="category", input=name,
                       content=[cs.CategoryItem(key=k, value=v) for k, v in items.items()])


def _signed(edges_abs: list[float], values: list) -> tuple[list[float], list]:
    """|η| edges from 0 and their values → signed-η edges and values, mirrored."""
    return [-e for e in reversed(edges_abs[1:])] + edges_abs, list(reversed(values)) + list(values)


def _real(name: str, description: str | None = None) -> cs.Variable:
    return cs.Variable(name=name, type="real", description=description)


def _string(name: str, description: str) -> cs.Variable:
    return cs.Variable(name=name, type="string", description=description)


# ----------------------------------------------------------------------------------------------- MUO
def muon_sf() -> cs.Correction:
    eta = [0.0, 0.9, 1.2, 2.1, 2.4]
    pt = [0.0, 100.0, 200.0, 500.0, PT_MAX]
    nominal = [[0.985, 0.985, 0.98, 0.98], [0.98, 0.98, 0.975, 0.975], [0.985, 0.985, 0.98, 0.97],
               [0.975, 0.975, 0.97, 0.96]]
    unc = [[0.005, 0.007, 0.01, 0.02], [0.006, 0.008, 0.012, 0.02], [0.006, 0.008, 0.012, 0.02],
           [0.01, 0.012, 0.015, 0.025]]

    def values(n: float, u: float) -> cs.Category:
        return _category("scale_factors", {"nominal": round(n, 5), "systup": round(n + u, 5),
                                           "systdown": round(n - u, 5), "syst": round(u, 5)})

    data = _binning("abseta", eta, [_binning("pt", pt, [values(n, u) for n, u in zip(nr, ur)])
                                    for nr, ur in zip(nominal, unc)])
    return cs.Correction(
        name="NUM_TightID_DEN_TrackerMuons",
        description="Generated detector: tight ID (mini-isolation SF folded in) scale factor of the selected muon. "
                    "'nominal': central value; 'systup'/'systdown': nominal +/- the uncertainty; "
                    "'syst': the uncertainty",
        version=1,
        inputs=[_real("abseta", "Probe abseta"), _real("pt", "Probe pt"),
                _string("scale_factors", "Choose nominal scale factor or one of the uncertainties")],
        output=cs.Variable(name="weight", type="real", description="Output scale factor (nominal) or uncertainty"),
        data=data,
    )


# ----------------------------------------------------------------------------------------------- BTV
BTAG_ETA = [0.0, 1.2, 2.5]
BTAG_PT = [0.0, 100.0, 300.0, 600.0, PT_MAX]
BTAG_SF = {  # hadronFlavour: (nominal at M, [uncertainty at M per pT bin])
    5: (0.97, [0.02, 0.025, 0.03, 0.04]),
    4: (0.97, [0.05, 0.06, 0.07, 0.08]),
    0: (1.05, [0.08, 0.1, 0.1, 0.12]),
}


def btag_sf(tagger: str, method: str) -> cs.Correction:
    flavours = (4, 5) if method in ("mujets", "comb") else (0,)

    def per_flavour(shift: float, wp: str, flav: int) -> cs.Binning:
        n, unc = BTAG_SF[flav]
        row = [round(n + shift * WP_UNCERTAINTY_SCALE[wp] * u, 5) for u in unc]
        return _binning("abseta", BTAG_ETA, [_binning("pt", BTAG_PT, row) for _ in BTAG_ETA[1:]])

    data = _category("systematic", {
        syst: _category("working_point", {
            wp: _category("flavor", {flav: per_flavour(shift, wp, flav) for flav in flavours})
            for wp in WORKING_POINTS[tagger]})
        for syst, shift in (("central", 0.0), ("up", 1.0), ("down", -1.0))})
    jets = "b/c" if method != "incl" else "light"
    return cs.Correction(
        name=f"{tagger}_{method}",
        description=f"Generated detector: {tagger} {method} fixed working point scale factors for {jets} jets "
                    "(make_corrections.py: M as the pre-POG btag_sf; L, T: M's central value, uncertainty x0.75, x1.5)",
        version=1,
        inputs=[_string("systematic", "central, up, down"), _string("working_point", "L/M/T"),
                cs.Variable(name="flavor", type="int", description="hadron flavor definition: 5=b, 4=c, 0=udsg"),
                _real("abseta"), _real("pt")],
        output=cs.Variable(name="weight", type="real"),
        data=data,
    )


def btag_wp_values(tagger: str) -> cs.Correction:
    return cs.Correction(
        name=f"{tagger}_wp_values",
        description=f"Working points values of the b-jet discrimination for {tagger} in the generated detector, "
                    "calibrated to the 2016 legacy working points",
        version=1,
        inputs=[_string("working_point", "L/M/T")],
        output=cs.Variable(name="wp", type="real", description="Working point value of the b-jet discriminator"),
        data=_category("working_point", dict(WORKING_POINTS[tagger])),
    )


# ----------------------------------------------------------------------------------------------- JME
def jes_uncertainty() -> cs.Correction:
    eta_abs, pt = [0.0, 1.3, 2.5, ETA_MAX], [0.0, 50.0, 100.0, 300.0, 1000.0, PT_MAX]
    table = [[0.035, 0.025, 0.018, 0.013, 0.012], [0.045, 0.032, 0.024, 0.018, 0.016],
             [0.06, 0.045, 0.035, 0.03, 0.03]]
    eta, rows = _signed(eta_abs, [_binning("JetPt", pt, row) for row in table])
    return cs.Correction(
        name="Generated_V1_MC_Total_AK4PFchs",
        description="Generated detector: total relative jet energy scale uncertainty (AK4 and AK8 jets)",
        version=1,
        inputs=[_real("JetEta", "pseudorapidity of the jet"),
                _real("JetPt", "pT of the jet (after all corrections applied)")],
        output=cs.Variable(name="correction", type="real", description="relative uncertainty"),
        data=_binning("JetEta", eta, rows),
    )


def jer_resolution() -> cs.Correction:
    eta_abs, pt = [0.0, 2.5, ETA_MAX], [15.0, 30.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, PT_MAX]
    centres = [(lo * hi) ** 0.5 for lo, hi in zip(pt[:-1], pt[1:-1] + [3200.0])]
    sigma = [((2.5 / c) ** 2 + 0.9**2 / c + 0.04**2) ** 0.5 for c in centres]
    table = [[round(s, 5) for s in sigma], [round(1.3 * s, 5) for s in sigma]]
    rho = [0.0, 100.0]  # one bin: the model's resolution has no pile-up term
    eta, rows = _signed(eta_abs, [_binning("Rho", rho, [_binning("JetPt", pt, row)]) for row in table])
    return cs.Correction(
        name="Generated_JRV1_MC_PtResolution_AK4PFchs",
        description="Generated detector: relative jet pT resolution (Rho accepted; one Rho bin, no pile-up term)",
        version=1,
        inputs=[_real("JetEta", "pseudorapidity of the jet"), _real("JetPt", "pT of the jet"),
                _real("Rho", "energy density rho (as measure of PU)")],
        output=cs.Variable(name="correction", type="real", description="relative pT resolution"),
        data=_binning("JetEta", eta, rows),
    )


def jer_sf() -> cs.Correction:
    values = _category("systematic", {"nom": 1.0, "up": 1.1, "down": 0.9})
    return cs.Correction(
        name="Generated_JRV1_MC_ScaleFactor_AK4PFchs",
        description="Generated detector: data/MC jet resolution ratio (pseudo-data share the MC's model: nom 1.0)",
        version=1,
        inputs=[_real("JetEta", "pseudorapidity of the jet"),
                _string("systematic", "JER scale factor systematic direction: nom, up, down")],
        output=cs.Variable(name="correction", type="real"),
        data=_binning("JetEta", [-ETA_MAX, ETA_MAX], [values]),
    )


# ----------------------------------------------------------------------------------------------- LUM
def pileup_weights() -> cs.Correction:
    data = _category("weights", {
        v: _binning("NumTrueInteractions", pileup.EDGES.tolist(), [float(w) for w in pileup.weights(v)])
        for v in ("nominal", "up", "down")})
    return cs.Correction(
        name="Generated_goldenJSON",
        description="Generated pseudo-data: pile-up weight, data/MC ratio of the NumTrueInteractions profiles "
                    "(zprime_grad/generate/pileup.py); up/down: minimum-bias cross section 69.2 mb +/- 4.6 %",
        version=1,
        inputs=[_real("NumTrueInteractions", "Number of true interactions"),
                _string("weights", "nominal, up, or down")],
        output=cs.Variable(name="weight", type="real", description="Event weight for pileup reweighting"),
        data=data,
    )


def build() -> cs.CorrectionSet:
    corrections = [muon_sf()]
    for tagger in WORKING_POINTS:
        corrections += [btag_wp_values(tagger), btag_sf(tagger, "incl"), btag_sf(tagger, "mujets"),
                        btag_sf(tagger, "comb")]
    corrections += [jes_uncertainty(), jer_resolution(), jer_sf(), pileup_weights()]
    return cs.CorrectionSet(
        schema_version=2,
        description="zprime_grad: corrections of the generated 2016-like detector in the CMS POG schemas "
                    "(MUO, BTV, JME, LUM); written by zprime_grad/data/make_corrections.py",
        corrections=corrections,
    )


def main() -> None:
    OUT.write_text(build().model_dump_json(exclude_unset=True, indent=1) + "\n")
    GOLDEN.write_text(json.dumps(lumi.golden_json()) + "\n")
    print(f"wrote {OUT} and {GOLDEN}")


if __name__ == "__main__":
    main()
