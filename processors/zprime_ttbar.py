"""Z'→tt̄ in the muon + jets channel with a boosted hadronic top: the skim into JAX-ready columns.

Objects (CMS 2016-legacy style, as the reference analysis; what changes with the era — trigger paths,
tagger branch and working points, top-tagger branch, MET flavour, jet-ID bit, correction names — comes
from the era table, ``zprime_grad/data/eras.yaml``, through ``EraInputs``):
- muon: pT > 55 GeV, |η| < 2.4, tight ID, mini-isolation medium (``miniIsoId >= 2``; where only
  ``miniPFRelIso_all`` exists, its definition ``< 0.20``). Mini-isolation rather than a fixed cone,
  because the muon of a boosted top sits close to its b jet.
- AK4 jets: tight jet ID, pT > 30 GeV, |η| < 2.4, ΔR(jet, muon) > 0.4.
- AK8 jets: pT > 200 GeV, |η| < 2.4 (the top-tag and top-pT cuts are optimisable, so they stay soft).
- MET: the era's (PuppiMET for the generated default and Run 3, PF MET for Run 2 UL).
- Data: only lumi sections the certified-luminosity JSON lists (``analysis.golden_json``); the events the
  mask removed are counted in the chunk's provenance (``lumi_mask_removed``).

Skim baseline (loose, fixed): a muon trigger of the era, exactly one muon, ≥ 2 jets, ≥ 1 fat jet. An event is
kept if it passes in the nominal or in any JES/JER variation; ``baseline`` records the nominal pass.

Columns (ColumnChunk, float32): ``muon_pt/eta/phi``; ``met_pt/phi``; ``lep_ht`` = muon pT + MET;
``st`` = muon pT + MET + Σ jet pT; ``n_jets``, ``n_fatjets`` (all selected); the 8 leading jets
``jet_pt/eta/phi/mass/btag`` (the era's tagger) + ``jet_mask``; the 4 leading fat jets
``fatjet_pt/eta/phi/mass/msoftdrop/top_score`` + ``fatjet_mask``; ``mtt`` (μ + ν(W-mass pz) + the jet
closest to the muon, b-tagged if any + the leading loose-top-tagged fat jet, else the leading one);
``mtt_simple`` (the reference: μ + leading fat jet + leading jet + MET at η = 0); ``baseline``,
``parity``, ``valid``. JES/JER variations replace every column except the muon and parity ones;
weights ``nominal``, ``muon_sf_up/down``, ``btag_sf_up/down``, ``pileup_up/down``.

Channels (mutually exclusive), all at θ₀ = the reference analysis:
- ``signal``: MET, muon pT + MET, ≥ 1 b tag, exactly 1 top-tagged fat jet (score and pT cut);
- ``ttbar_cr``: the same but no top-tagged fat jet;
- ``wjets_cr``: MET, muon pT + MET, no b tag.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from coffea import processor
from coffea.nanoevents import NanoAODSchema
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zprime_grad.columns import DEFAULT_BUCKETS, file_sumw, make_chunk, mc_weight, parity
from zprime_grad.era_inputs import EraInputs, default_inputs
from zprime_grad.errors import UserError
from zprime_grad.selection import Channel, CountCut, Cut, initial_params, parameters
from zprime_grad_processors import zprime_reco as reco
from zprime_grad_processors import zprime_systematics as syst
from zprime_grad_processors.nanoaod_branches import branch_names, candidates, resolve
from zprime_grad_processors.padded import Objects, counts, flat, per_event_sum

MUON_PT, MUON_ETA, MUON_MINI_ISO_ID, MUON_MINI_ISO = 55.0, 2.4, 2, 0.20
JET_PT, JET_ETA, JET_MUON_DR = 30.0, 2.4, 0.4
FATJET_PT, FATJET_ETA = 200.0, 2.4
TOPTAG_LOOSE = 0.5  # top-tag score preferred for the hadronic top in m_tt (an analysis choice, not a POG WP)
JET_SLOTS, FATJET_SLOTS = 8, 4
# reduced files lack cross-reference indices; silence the 16 warnings per chunk (in every worker,
# since workers import this module to unpickle the processor before building NanoEvents)
NanoAODSchema.warn_missing_crossrefs = False

# ------------------------------------------------------------- optimisable cuts, declared once
MET_CUT = Cut("met", "met_pt", ">", "met_threshold", 50.0, (20.0, 250.0), 50.0)
LEP_HT_CUT = Cut("lep_ht", "lep_ht", ">", "lep_ht_threshold", 150.0, (60.0, 500.0), 100.0)
BTAG = Cut("btag", "jet_btag", ">", "btag_threshold", 0.5, (0.05, 0.95), 1.0)
TOPTAG = Cut("toptag", "fatjet_top_score", ">", "toptag_threshold", 0.5, (0.05, 0.95), 1.0)
TOP_PT = Cut("top_pt", "fatjet_pt", ">", "top_pt_threshold", 500.0, (200.0, 1200.0), 100.0)


def b_tagged_jets(**n) -> CountCut:
    return CountCut("n_btag", "jet_mask", (BTAG,), **n)


def top_tagged_fatjets(**n) -> CountCut:
    return CountCut("n_toptag", "fatjet_mask", (TOPTAG, TOP_PT), **n)


CHANNELS = (
    Channel("signal", (MET_CUT, LEP_HT_CUT, b_tagged_jets(at_least=1), top_tagged_fatjets(at_least=1, at_most=1))),
    Channel("ttbar_cr", (MET_CUT, LEP_HT_CUT, b_tagged_jets(at_least=1), top_tagged_fatjets(at_most=0))),
    Channel("wjets_cr", (MET_CUT, LEP_HT_CUT, b_tagged_jets(at_most=0))),
)


class Options(BaseModel):
    """``analysis.options`` of this processor (validated like every config field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    met: Literal["PuppiMET", "MET"] | None = Field(None, description="MET collection; None: the era's")


def _options(given: dict | None) -> Options:
    try:
        return Options.model_validate(given or {})
    except ValidationError as err:
        e = err.errors()[0]
        field = ".".join(str(p) for p in e["loc"])
        raise UserError(f"analysis.options.{field}: {e['msg']} (got {e.get('input')!r})") from None


def channels_at(initial: dict[str, float], channels=CHANNELS) -> tuple[Channel, ...]:
    """The channels with the era's initial thresholds (θ₀) put into the cut declarations."""
    def cut(c):
        if isinstance(c, CountCut):
            return dataclasses.replace(c, cuts=tuple(cut(x) for x in c.cuts))
        if isinstance(c, Cut) and c.param in initial:
            return dataclasses.replace(c, init=float(initial[c.param]))
        return c
    return tuple(dataclasses.replace(ch, cuts=tuple(cut(c) for c in ch.cuts)) for ch in channels)


class ZprimeTTbarProcessor(processor.ProcessorABC):
    """Returns ``{"chunks": [ColumnChunk]}`` per coffea chunk (lists add up under coffea's accumulate)."""

    def __init__(self, lumi_pb: float | None = None, *, buckets=DEFAULT_BUCKETS, config_hash: str = "",
                 inputs: EraInputs | None = None, options: dict | None = None):
        self.options = _options(options)
        self.inputs = inputs if inputs is not None else default_inputs()
        if self.options.met is not None:  # the analysis' MET choice over the era's
            self.inputs = dataclasses.replace(self.inputs, era=self.inputs.era.model_copy(update={"met": (self.options.met,)}))
        self.lumi_pb = float(lumi_pb) if lumi_pb is not None else self.inputs.lumi_pb
        self.buckets = tuple(buckets)
        self.config_hash = config_hash
        era = self.inputs.era
        self.btag_medium = self.inputs.tagger.wp["M"]  # b-tag SFs and the leptonic b-jet choice
        self.channels = channels_at(era.initial_thresholds(self.inputs.tagger_name))

    def parameters(self):
        return parameters(self.channels)

    def initial_params(self) -> dict[str, float]:
        return initial_params(self.channels)

    def branches(self) -> frozenset[str]:
        """The branches this processor may read (the framework preloads them in one bulk read)."""
        return candidates(self.inputs)

    def check_branches(self, branches: set[str], filename: str, *, is_data: bool) -> None:
        """Driver-side check of a file's branch list; raises UserError naming what is missing."""
        self._resolve(branches, filename, is_data)

    def _resolve(self, branches, filename: str, is_data: bool):
        if is_data and self.inputs.mask is None and not self.inputs.mask_off:
            raise UserError(f"{filename}: data of era {self.inputs.era.name} need a certified-luminosity JSON: set "
                            "analysis.golden_json (or 'none' to take uncertified lumi sections knowingly)")
        return resolve(branches, filename, is_data=is_data, inputs=self.inputs)

    # ------------------------------------------------------------------------------------ objects
    def good_muons(self, muons, iso_branch: str) -> np.ndarray:
        """Per muon (flat over the chunk): pT, |η|, tight ID, mini-isolation."""
        iso = flat(muons[iso_branch])
        isolated = iso >= MUON_MINI_ISO_ID if iso_branch == "miniIsoId" else iso < MUON_MINI_ISO
        return (flat(muons.pt) > MUON_PT) & (np.abs(flat(muons.eta)) < MUON_ETA) & flat(muons.tightId, bool) & isolated

    def jet_quality(self, jets: Objects, muon) -> np.ndarray:
        """The jet cuts JES/JER cannot change: tight ID, |η|, no overlap with the muon."""
        clean = reco.delta_r(jets.eta, jets.phi, muon["eta"][:, None], muon["phi"][:, None]) > JET_MUON_DR
        tight = (jets.jetId.astype(np.int64) & self.inputs.era.jet_id_tight_bit) > 0
        return tight & (np.abs(jets.eta) < JET_ETA) & clean

    def select_jets(self, jets: Objects, quality: np.ndarray) -> Objects:
        return jets.where(quality & (jets.pt > JET_PT))

    def select_fatjets(self, fatjets: Objects) -> Objects:
        return fatjets.where((fatjets.pt > FATJET_PT) & (np.abs(fatjets.eta) < FATJET_ETA))

    # -------------------------------------------------------------------------------- observables
    def kinematics(self, muon, jet_quality, jets: Objects, fatjets: Objects, met_pt, met_phi):
        """Everything JES/JER can change, for one variation: padded objects, baseline, observables."""
        jets, fatjets = self.select_jets(jets, jet_quality), self.select_fatjets(fatjets)
        n_jets, n_fat = jets.count(), fatjets.count()
        lead_jets = jets.leading(JET_SLOTS, fields=("pt", "eta", "phi", "mass", "btag"))
        lead_fatjets = fatjets.leading(FATJET_SLOTS)
        cols = {f"jet_{f}": lead_jets.slots(f) for f in ("pt", "eta", "phi", "mass", "btag")}
        cols.update({f"fatjet_{f}": lead_fatjets.slots(f)
                     for f in ("pt", "eta", "phi", "mass", "msoftdrop", "top_score")})
        cols["jet_mask"], cols["fatjet_mask"] = lead_jets.mask(), lead_fatjets.mask()
        cols["n_jets"], cols["n_fatjets"] = n_jets, n_fat
        cols["baseline"] = (n_jets >= 2) & (n_fat >= 1)
        cols["met_pt"], cols["met_phi"] = met_pt, met_phi
        cols["lep_ht"] = muon["pt"] + met_pt
        cols["st"] = muon["pt"] + met_pt + jets.sum("pt")
        met = {"pt": met_pt, "phi": met_phi}
        events = np.arange(len(met_pt))
        lead = lambda prefix, i: {f: cols[f"{prefix}_{f}"][events, i] for f in ("pt", "eta", "phi", "mass")}  # noqa: E731
        first = np.zeros(len(met_pt), dtype=np.int64)
        cols["mtt_simple"] = reco.mtt_reference(muon, met, lead("jet", first), lead("fatjet", first))
        cols["mtt"] = reco.mtt_full(muon, met, lead("jet", self.leptonic_bjet(cols, muon)),
                                    lead("fatjet", self.hadronic_top(cols)))
        return cols, jets

    def leptonic_bjet(self, cols, muon):
        """Index of the jet closest to the muon, among medium b-tagged jets if there are any."""
        dr = reco.delta_r(cols["jet_eta"], cols["jet_phi"], muon["eta"][:, None], muon["phi"][:, None])
        dr = np.where(cols["jet_mask"] > 0, dr, np.inf)
        tagged = cols["jet_btag"] > self.btag_medium
        dr_tagged = np.where(tagged, dr, np.inf)
        return np.where(tagged.any(axis=1), dr_tagged.argmin(axis=1), dr.argmin(axis=1))

    def hadronic_top(self, cols):
        """Index of the leading loose-top-tagged fat jet, else the leading fat jet."""
        tagged = (cols["fatjet_top_score"] > TOPTAG_LOOSE) & (cols["fatjet_mask"] > 0)
        return np.where(tagged.any(axis=1), tagged.argmax(axis=1), 0)

    # ------------------------------------------------------------------------------------ process
    def process(self, events):
        meta = events.metadata
        filename, dataset = meta.get("filename", "<unknown file>"), meta.get("dataset", "unknown")
        is_data = bool(meta.get("is_data", False))
        names = self._resolve(branch_names(events), filename, is_data)
        n_read = len(events)
        certified = np.ones(n_read, dtype=bool)
        if is_data and self.inputs.mask is not None:
            certified = np.asarray(self.inputs.mask(np.asarray(events.run), np.asarray(events.luminosityBlock)))

        trigger = np.zeros(n_read, dtype=bool)
        for path in names.triggers:
            trigger |= np.asarray(events.HLT[path.removeprefix("HLT_")], dtype=bool)
        good_mu = self.good_muons(events.Muon, names.muon_iso)
        pre = (certified & trigger & (per_event_sum(good_mu, counts(events.Muon)) == 1)
               & (counts(events.Jet) >= 2) & (counts(events.FatJet) >= 1))
        rows = np.flatnonzero(pre)  # objects are padded straight from the unfiltered branches (numpy only)

        muons = Objects.from_collection(events.Muon, {f: f for f in ("pt", "eta", "phi", "mass")}, rows,
                                        flat_fields={"good": good_mu})
        the_muon = muons.good.argmax(axis=1)[:, None]
        muon = {f: np.take_along_axis(muons.fields[f], the_muon, 1)[:, 0] for f in ("pt", "eta", "phi", "mass")}
        jet_fields = {"pt": "pt", "eta": "eta", "phi": "phi", "mass": "mass", "jetId": "jetId", "btag": names.btag}
        if not is_data:
            jet_fields["hadronFlavour"] = "hadronFlavour"
        jets = Objects.from_collection(events.Jet, jet_fields, rows)
        fatjets = Objects.from_collection(events.FatJet, {
            "pt": "pt", "eta": "eta", "phi": "phi", "mass": "mass", "msoftdrop": "msoftdrop",
            "top_score": names.top_score}, rows)
        met = events[names.met]
        met_pt, met_phi = np.asarray(met.pt, np.float64)[rows], np.asarray(met.phi, np.float64)[rows]
        rho = np.asarray(_branch(events, names.rho), np.float64)[rows] if names.rho else np.zeros(len(rows))
        ids = {k: np.asarray(events[k])[rows].astype(np.int64) for k in ("run", "luminosityBlock", "event")}
        gen_weight = None if is_data else np.asarray(events.genWeight, np.float64)[rows]
        n_true_int = None if is_data or not names.pileup else np.asarray(events.Pileup.nTrueInt, np.float64)[rows]

        inputs = {"nominal": (jets, fatjets, met_pt, met_phi)}
        if not is_data:
            event_number = ids["event"]
            jets, jet_var = syst.jet_variations(jets, event_number, salt=1, inputs=self.inputs, rho=rho)
            fatjets, fat_var = syst.jet_variations(fatjets, event_number, salt=2, inputs=self.inputs, rho=rho,
                                                   jes_kind="jes_fatjet")
            inputs["nominal"] = (jets, fatjets, met_pt, met_phi)
            for v in syst.KINEMATIC_VARIATIONS:
                inputs[v] = (jet_var[v], fat_var[v], *syst.propagate_to_met(met_pt, met_phi, jets, jet_var[v]))
        quality = self.jet_quality(jets, muon)
        per_variation = {v: self.kinematics(muon, quality, *args) for v, args in inputs.items()}
        keep = np.logical_or.reduce([cols["baseline"] for cols, _ in per_variation.values()])

        nominal_cols, nominal_jets = per_variation.pop("nominal")
        select = (lambda a: np.asarray(a)) if keep.all() else (lambda a: np.asarray(a)[keep])  # noqa: E731
        columns = {f"muon_{f}": select(muon[f]) for f in ("pt", "eta", "phi")}
        columns.update({k: select(v) for k, v in nominal_cols.items()})
        ids = {k: select(v) for k, v in ids.items()}
        columns["parity"] = parity(ids["event"])
        variations = {v: {k: select(a) for k, a in cols.items()} for v, (cols, _) in per_variation.items()}
        weights = self.weights(None if is_data else gen_weight[keep], meta, muon, nominal_jets, keep,
                               None if n_true_int is None else n_true_int[keep])

        chunk = make_chunk(
            columns, weights, variations, ids, buckets=self.buckets,
            dataset=dataset, process=meta.get("process", dataset),
            sample_variation=meta.get("variation", "nominal"), is_data=is_data,
            provenance={"file": filename, "treename": meta.get("treename", "Events"),
                        "entrystart": int(meta.get("entrystart", 0)),
                        "entrystop": int(meta.get("entrystop", n_read)), "fileuuid": meta.get("fileuuid", ""),
                        "entries_read": n_read, "config_hash": self.config_hash,
                        "lumi_mask_removed": int(n_read - certified.sum())},
        )
        return {"chunks": [chunk]}

    # ------------------------------------------------------------------------------------ weights
    def weights(self, gen_weight, meta, muon, jets, keep, n_true_int) -> dict[str, np.ndarray]:
        """nominal = xsec·lumi·genWeight/Σ genWeight × pileup × muon SF × b-tag SF; one factor varied per
        key. ``gen_weight`` is None for data (unit weights)."""
        if gen_weight is None:
            return {"nominal": np.ones(int(keep.sum()))}
        if "xsec" not in meta:
            raise UserError(f"dataset {meta.get('dataset')}: fileset metadata has no 'xsec' (pb) for this MC")
        sumw = meta.get("sumw")
        if sumw is None:
            sumw = file_sumw(meta["filename"], meta.get("treename", "Events"))
        base = mc_weight(gen_weight, float(meta["xsec"]), self.lumi_pb, float(sumw))
        kept = jets.take(keep)
        factors = {
            "muon_sf": syst.muon_sf(muon["pt"][keep], muon["eta"][keep], self.inputs),
            "btag_sf": syst.btag_sf(kept, kept.btag > self.btag_medium, self.inputs),
            "pileup": (syst.pileup_weight(n_true_int, self.inputs) if n_true_int is not None
                       else {v: np.ones_like(base) for v in syst.VARIATIONS}),
        }
        weights = {"nominal": base * _product(f["nominal"] for f in factors.values())}
        for name in factors:
            for s in ("up", "down"):
                weights[f"{name}_{s}"] = base * _product(f["nominal"] if other != name else f[s]
                                                         for other, f in factors.items())
        return weights


def _branch(events, name: str):
    """A flat branch by its NanoAOD name, also when NanoEvents groups it (``Rho_fixedGridRhoFastjetAll``)."""
    if name in events.fields:
        return events[name]
    collection, _, field = name.partition("_")
    return events[collection][field]


def _product(arrays) -> np.ndarray:
    out = None
    for a in arrays:
        out = a if out is None else out * a
    return out
