"""Which NanoAOD branches the Z'→tt̄ skim reads, and the era differences that are only names.

Resolved once per chunk from the branch list (cheap: no data is read). A branch that is absent in
every spelling raises a `UserError` naming the branch(es) and the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak

from zprime_grad.errors import UserError

MUON = ("pt", "eta", "phi", "mass", "charge", "tightId")
JET = ("pt", "eta", "phi", "mass", "jetId")
FATJET = ("pt", "eta", "phi", "mass", "msoftdrop")
# (preferred, alternatives...): the same quantity under different NanoAOD-version names; what differs
# with the era (triggers, tagger, top tagger, MET, rho) comes from the era table (EraInputs)
MUON_ISO = ("miniIsoId", "miniPFRelIso_all")  # miniIsoId >= 2 == miniPFRelIso_all < 0.20 (MiniIsoMedium)
PILEUP = "Pileup_nTrueInt"


@dataclass(frozen=True)
class Branches:
    triggers: tuple[str, ...]
    muon_iso: str
    top_score: str
    met: str
    btag: str
    rho: str | None  # None: the JER resolution does not need it (switched off)
    pileup: bool     # MC: Pileup_nTrueInt is read for the pileup weight


def candidates(inputs) -> frozenset[str]:
    """Every branch the skim may read, in every spelling: what coffea preloads in one bulk read."""
    era = inputs.era
    return frozenset({
        "run", "luminosityBlock", "event", "genWeight", PILEUP, *era.triggers, *era.rho, "nMuon", "nJet", "nFatJet",
        *(f"Muon_{f}" for f in (*MUON, *MUON_ISO)),
        *(f"Jet_{f}" for f in (*JET, inputs.tagger.branch, "hadronFlavour")),
        *(f"FatJet_{f}" for f in (*FATJET, *era.top_tagger)), *(f"{m}_{f}" for m in era.met for f in ("pt", "phi")),
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


def resolve(available: set[str], filename: str, *, is_data: bool, inputs) -> Branches:
    """The era's branches as this file spells them; what is missing is named in one error."""
    era = inputs.era
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
    triggers = tuple(t for t in era.triggers if t in available)
    if not triggers:
        missing.append(f"a trigger of era {era.name} ({' or '.join(era.triggers)})")
    need(*(f"Muon_{f}" for f in MUON), *(f"Jet_{f}" for f in JET), *(f"FatJet_{f}" for f in FATJET))
    if f"Jet_{inputs.tagger.branch}" not in available:
        missing.append(f"Jet_{inputs.tagger.branch} (the b tagger of era {era.name}; analysis.tagger picks another)")
    muon_iso = first("Muon_", MUON_ISO)
    top_score = first("FatJet_", era.top_tagger)
    met = next((m for m in era.met if f"{m}_pt" in available and f"{m}_phi" in available), None)
    if met is None:
        missing.append(" or ".join(f"{m}_pt/_phi" for m in era.met))
    jer_on = not is_data and not ({"jer_resolution", "jer_sf"} & inputs.off)
    rho = first("", era.rho) if jer_on else None
    pileup = not is_data and "pileup" not in inputs.off
    if not is_data:
        need("genWeight", "Jet_hadronFlavour")
    if pileup:
        need(PILEUP)
    if missing:
        raise UserError(f"{filename}: required branch(es) missing: {', '.join(missing)}")
    return Branches(triggers, muon_iso, top_score, met or era.met[0], inputs.tagger.branch, rho, pileup)
