"""Which NanoAOD branches the AGC tt̄ analysis reads; a missing one is an error naming it and the file.

The AGC inputs (2015 CMS Open Data converted to NanoAOD) and later Run 2 NanoAOD spell these the same
way. Two differences are not names and are handled where they arise: the jet ID is read from the
``Jet_jetId`` bits (coffea's ``Jet.isTightLeptonVeto`` is ``jetId & 4``; there is no such branch), and
``Jet_btagCSVV2`` does not exist in NanoAOD v12+ (an error: another tagger is another analysis).
"""

from __future__ import annotations

from zprime_grad.errors import UserError

EVENT_IDS = ("run", "luminosityBlock", "event")
ELECTRON = ("pt", "eta", "phi", "mass", "charge", "cutBased", "sip3d")
MUON = ("pt", "eta", "phi", "mass", "charge", "tightId", "sip3d", "pfRelIso04_all")
JET = ("pt", "eta", "phi", "mass", "jetId", "btagCSVV2")


def required(is_data: bool) -> list[str]:
    del is_data  # the AGC weights are xsec·lumi/N: no generator branch is read, for MC or data
    return [*EVENT_IDS, *(f"Electron_{f}" for f in ELECTRON), *(f"Muon_{f}" for f in MUON),
            *(f"Jet_{f}" for f in JET)]


def check(available: set[str], filename: str, *, is_data: bool) -> None:
    missing = [b for b in required(is_data) if b not in available]
    if missing:
        raise UserError(f"{filename}: required branch(es) missing: {', '.join(missing)}")


def candidates() -> frozenset[str]:
    """Every branch the analysis may read (with the collection counters): what coffea preloads in one
    read. ``genWeight`` is optional: read only for filesets normalised by Σ genWeight (generated ones)."""
    return frozenset({*required(False), "nElectron", "nMuon", "nJet", "genWeight"})
