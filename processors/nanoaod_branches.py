"""Which NanoAOD branches the Z'→tt̄ skim reads, and the era differences that are only names.

Resolved once per chunk from the branch list (cheap: no data is read). A branch that is absent in
every spelling raises a `UserError` naming the branch(es) and the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak

from zprime_grad.errors import UserError

TRIGGERS = ("HLT_TkMu50", "HLT_Mu50")  # 2016 single-muon paths; whichever exist are OR-ed
MUON = ("pt", "eta", "phi", "mass", "charge", "tightId")
JET = ("pt", "eta", "phi", "mass", "jetId")
FATJET = ("pt", "eta", "phi", "mass", "msoftdrop")
# (preferred, alternatives...): the same quantity under different era names
MUON_ISO = ("miniIsoId", "miniPFRelIso_all")  # miniIsoId >= 2 == miniPFRelIso_all < 0.20 (MiniIsoMedium)
TOP_SCORE = ("particleNet_TvsQCD", "particleNetWithMass_TvsQCD")  # NanoAOD v9-v11 vs v12+
MET = ("PuppiMET", "MET")


@dataclass(frozen=True)
class Branches:
    triggers: tuple[str, ...]
    muon_iso: str
    top_score: str
    met: str
    btag: str


def candidates(btag: str = "btagDeepB") -> frozenset[str]:
    """Every branch the skim may read, in every spelling: what coffea preloads in one bulk read."""
    return frozenset({
        "run", "luminosityBlock", "event", "genWeight", *TRIGGERS, "nMuon", "nJet", "nFatJet",
        *(f"Muon_{f}" for f in (*MUON, *MUON_ISO)), *(f"Jet_{f}" for f in (*JET, btag, "hadronFlavour")),
        *(f"FatJet_{f}" for f in (*FATJET, *TOP_SCORE)), *(f"{m}_{f}" for m in MET for f in ("pt", "phi")),
    })


def branch_names(events) -> set[str]:
    """Flat NanoAOD branch names behind a NanoEvents array (``Muon_pt``, ``HLT_Mu50``, ``event`` …)."""
    names = set()
    form = events.layout.form
    for name in form.fields:
        sub = form.content(name)
        while not isinstance(sub, ak.forms.RecordForm) and hasattr(sub, "content"):
            sub = sub.content  # through list/option/indexed layers to the record, if any
        if isinstance(sub, ak.forms.RecordForm):
            names.update(f"{name}_{f}" for f in sub.fields)
        else:
            names.add(name)
    return names


def resolve(available: set[str], filename: str, *, is_data: bool, btag: str = "btagDeepB") -> Branches:
    missing: list[str] = []

    def need(*names: str) -> None:
        missing.extend(n for n in names if n not in available)

    def first(prefix: str, options: tuple[str, ...]) -> str:
        for opt in options:
            if f"{prefix}{opt}" in available:
                return opt
        missing.append(" or ".join(f"{prefix}{o}" for o in options))
        return options[0]

    need("run", "luminosityBlock", "event")
    triggers = tuple(t for t in TRIGGERS if t in available)
    if not triggers:
        missing.append(" or ".join(TRIGGERS))
    need(*(f"Muon_{f}" for f in MUON), *(f"Jet_{f}" for f in JET), f"Jet_{btag}",
         *(f"FatJet_{f}" for f in FATJET))
    muon_iso = first("Muon_", MUON_ISO)
    top_score = first("FatJet_", TOP_SCORE)
    met = next((m for m in MET if f"{m}_pt" in available and f"{m}_phi" in available), None)
    if met is None:
        missing.append("PuppiMET_pt/_phi or MET_pt/_phi")
    if not is_data:
        need("genWeight", "Jet_hadronFlavour")
    if missing:
        raise UserError(f"{filename}: required branch(es) missing: {', '.join(missing)}")
    return Branches(triggers, muon_iso, top_score, met or "MET", btag)
