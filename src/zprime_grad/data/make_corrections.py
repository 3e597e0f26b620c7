"""Write ``corrections.json``: the correctionlib file the Z'→tt̄ skim evaluates its systematics from.

Run ``python -m zprime_grad.data.make_corrections`` to regenerate it (the output is committed).

The generated samples come from a parametric detector model in which the simulation *is* the
detector, so every scale factor is centred near 1; what matters for the fit is the size of the
up/down variations, which are set to typical CMS 2016-legacy magnitudes:

- ``muon_id_iso_sf`` (abseta, pt, systematic): tight ID + mini-isolation SF, 0.97–0.99 ± 0.5–2 %.
- ``btag_sf`` (systematic, flavour, abseta, pt): per-jet SF for jets above the DeepCSV medium working
  point (``btagDeepB`` > 0.6321); b 0.97 ± 2–4 %, c 0.97 ± 5–8 %, light 1.05 ± 10 %. The event weight
  is the product over tagged selected jets (a deliberately simple fixed-working-point scheme).
- ``jes_uncertainty`` (abseta, pt): relative jet energy scale uncertainty, 1–4 %; jets and fat jets
  are scaled by (1 ± u) and the change of the AK4 jets is propagated to MET.
- ``jer_resolution`` (abseta, pt): relative pT resolution of the generator's detector model; ``jer_sf``
  (systematic): the data/MC resolution ratio, 1.0 nominal (pseudo-data come from the same model) and
  1.1 up. The down variation mirrors the up one event by event (see processors/zprime_systematics.py).

Working points of the generator (2016 legacy): DeepCSV 0.2217/0.6321/0.8953, DeepJet
0.0614/0.3093/0.7221, top tag ``FatJet_particleNet_TvsQCD`` > 0.5 (loose) / 0.8 (tight).
"""

from __future__ import annotations

from pathlib import Path

import correctionlib.schemav2 as cs

OUT = Path(__file__).with_name("corrections.json")
PT_MAX = 1.0e5  # last bin edge; values above it are clamped into the last bin
SYSTEMATICS = ("nominal", "up", "down")


def _binning2d(abseta_edges, pt_edges, table) -> cs.MultiBinning:
    """table[i_eta][i_pt] -> value (a number or a nested correction)."""
    return cs.MultiBinning(
        nodetype="multibinning",
        inputs=["abseta", "pt"],
        edges=[list(abseta_edges), list(pt_edges)],
        content=[v for row in table for v in row],
        flow="clamp",
    )


def _by_systematic(nominal: float, unc: float) -> cs.Category:
    values = {"nominal": nominal, "up": nominal + unc, "down": nominal - unc}
    return cs.Category(
        nodetype="category",
        input="systematic",
        content=[cs.CategoryItem(key=k, value=round(v, 5)) for k, v in values.items()],
    )


def muon_sf() -> cs.Correction:
    eta = [0.0, 0.9, 1.2, 2.1, 2.4]
    pt = [0.0, 100.0, 200.0, 500.0, PT_MAX]
    nominal = [[0.985, 0.985, 0.98, 0.98], [0.98, 0.98, 0.975, 0.975], [0.985, 0.985, 0.98, 0.97],
               [0.975, 0.975, 0.97, 0.96]]
    unc = [[0.005, 0.007, 0.01, 0.02], [0.006, 0.008, 0.012, 0.02], [0.006, 0.008, 0.012, 0.02],
           [0.01, 0.012, 0.015, 0.025]]
    # systematic is the first lookup so that one Category node dispatches to three binnings
    content = [
        cs.CategoryItem(
            key=syst,
            value=_binning2d(
                eta, pt,
                [[round(n + s * u, 5) for n, u in zip(nr, ur)] for nr, ur in zip(nominal, unc)],
            ),
        )
        for syst, s in (("nominal", 0.0), ("up", 1.0), ("down", -1.0))
    ]
    return cs.Correction(
        name="muon_id_iso_sf",
        description="Tight ID + mini-isolation scale factor of the selected muon",
        version=1,
        inputs=[
            cs.Variable(name="systematic", type="string", description="nominal, up, down"),
            cs.Variable(name="abseta", type="real", description="|eta| of the muon"),
            cs.Variable(name="pt", type="real", description="muon pT in GeV"),
        ],
        output=cs.Variable(name="weight", type="real"),
        data=cs.Category(nodetype="category", input="systematic", content=content),
    )


def btag_sf() -> cs.Correction:
    eta = [0.0, 1.2, 2.5]
    pt = [0.0, 100.0, 300.0, 600.0, PT_MAX]
    flavours = {  # hadronFlavour: (nominal, [uncertainty per pT bin])
        5: (0.97, [0.02, 0.025, 0.03, 0.04]),
        4: (0.97, [0.05, 0.06, 0.07, 0.08]),
        0: (1.05, [0.08, 0.1, 0.1, 0.12]),
    }
    per_syst = []
    for syst, s in (("nominal", 0.0), ("up", 1.0), ("down", -1.0)):
        by_flavour = cs.Category(
            nodetype="category",
            input="flavour",
            content=[
                cs.CategoryItem(
                    key=flav,
                    value=_binning2d(eta, pt, [[round(n + s * u, 5) for u in unc]] * 2),
                )
                for flav, (n, unc) in flavours.items()
            ],
        )
        per_syst.append(cs.CategoryItem(key=syst, value=by_flavour))
    return cs.Correction(
        name="btag_sf",
        description="Per-jet SF of jets tagged at DeepCSV medium (btagDeepB > 0.6321)",
        version=1,
        inputs=[
            cs.Variable(name="systematic", type="string", description="nominal, up, down"),
            cs.Variable(name="flavour", type="int", description="Jet_hadronFlavour: 0, 4 or 5"),
            cs.Variable(name="abseta", type="real"),
            cs.Variable(name="pt", type="real", description="jet pT in GeV"),
        ],
        output=cs.Variable(name="weight", type="real"),
        data=cs.Category(nodetype="category", input="systematic", content=per_syst),
    )


def _pt_eta_table(name: str, description: str, eta, pt, table) -> cs.Correction:
    return cs.Correction(
        name=name,
        description=description,
        version=1,
        inputs=[cs.Variable(name="abseta", type="real"), cs.Variable(name="pt", type="real")],
        output=cs.Variable(name="value", type="real"),
        data=_binning2d(eta, pt, table),
    )


def jes_uncertainty() -> cs.Correction:
    eta, pt = [0.0, 1.3, 2.5, 5.0], [0.0, 50.0, 100.0, 300.0, 1000.0, PT_MAX]
    table = [[0.035, 0.025, 0.018, 0.013, 0.012], [0.045, 0.032, 0.024, 0.018, 0.016],
             [0.06, 0.045, 0.035, 0.03, 0.03]]
    return _pt_eta_table("jes_uncertainty", "Relative jet energy scale uncertainty (AK4 and AK8)",
                         eta, pt, table)


def jer_resolution() -> cs.Correction:
    """The generator's resolution model (generate/detector.py): σ/pT = 2.5/pT ⊕ 0.9/√pT ⊕ 4 %, ×1.3 at
    |η| > 2.5, evaluated at each pT bin's geometric centre."""
    eta, pt = [0.0, 2.5, 5.0], [15.0, 30.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, PT_MAX]
    centres = [(lo * hi) ** 0.5 for lo, hi in zip(pt[:-1], pt[1:-1] + [3200.0])]
    sigma = [((2.5 / c) ** 2 + 0.9**2 / c + 0.04**2) ** 0.5 for c in centres]
    table = [[round(s, 5) for s in sigma], [round(1.3 * s, 5) for s in sigma]]
    return _pt_eta_table("jer_resolution", "Relative jet pT resolution of the detector model",
                         eta, pt, table)


def jer_sf() -> cs.Correction:
    return cs.Correction(
        name="jer_sf",
        description="Data/MC jet resolution ratio; up widens by 10 %, down mirrors up",
        version=1,
        inputs=[cs.Variable(name="systematic", type="string")],
        output=cs.Variable(name="value", type="real"),
        data=_by_systematic(1.0, 0.1),
    )


def build() -> cs.CorrectionSet:
    return cs.CorrectionSet(
        schema_version=2,
        description="zprime_grad skim corrections for the generated 2016-like samples (make_corrections.py)",
        corrections=[muon_sf(), btag_sf(), jes_uncertainty(), jer_resolution(), jer_sf()],
    )


def main() -> None:
    OUT.write_text(build().model_dump_json(exclude_unset=True, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
