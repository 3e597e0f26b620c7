"""The IRIS-HEP Analysis Grand Challenge tt̄ analysis (CMS 2015 Open Data) as a zprime_grad plug-in.

Physics as in the AGC reference implementation (``analyses/cms-open-data-ttbar``, see
``../shared/notes/coffea_dask.md`` §3):

- electrons: pT > 30 GeV, |η| < 2.1, ``cutBased == 4`` (tight), ``sip3d < 4``;
- muons: pT > 30 GeV, |η| < 2.1, ``tightId``, ``sip3d < 4``, ``pfRelIso04_all < 0.15``;
- jets: pT > 30 GeV, |η| < 2.4, tight-lepton-veto ID (``jetId & 4``); b tag ``btagCSVV2 > 0.5``;
- exactly one lepton (e or μ), at least four jets;
- region ``4j1b``: exactly one b tag, observable H_T = Σ jet pT;
- region ``4j2b``: at least two b tags, observable the mass of the highest-pT trijet that holds a
  b-tagged jet (the hadronic top candidate);
- weight xsec · lumi / N (fileset metadata ``xsec`` in pb and ``nevts``, as the AGC; no genWeight).
  A fileset without ``nevts`` but with ``sumw`` (the generated default: ``zprime-grad generate``
  writes Σ genWeight) is weighted xsec · lumi · genWeight / sumw, which is the same for unweighted
  samples and also right for pT-hat-biased ones.

Systematics, as the AGC: ``pt_scale_up`` (jet pT × 1.03) and ``pt_res_up`` (jet pT × N(1, 0.05)) as
kinematic variations; ``btag_var_{0..3}_{up,down}`` = 1 ± 0.075 · pT(jet i) / 50 GeV and, for W+jets,
``scale_var_{up,down}`` = 1 ± 0.025 as weights (a weight equal to nominal for the other processes:
every chunk carries the same weights); the two-point tt̄ samples (``ME_var``, ``PS_var``, ``scaleup``,
``scaledown``) are datasets with that ``variation`` in their metadata. Unlike the AGC, the resolution
smearing is reproducible: its Gaussian numbers are a hash of (event number, jet index).

Two-point samples in the statistical model. A fileset that lists its two-point samples in every
dataset's metadata ``two_point_variations`` (``{process: [variation, ...]}``, as ``zprime-grad
generate`` writes it) gets them as weight templates over the union of the samples' events, which the
optimiser and the validation model both take as a NormPlusShape systematic, as the AGC's cabinetry
config: ``scaleup``/``scaledown`` → ``ttbar_scale_up``/``_down`` ("ttbar scale variations"),
``ME_var``/``PS_var`` → ``ttbar_me_var_up``/``ttbar_ps_var_up`` (one-sided, symmetrised). In such a
template an event of the two-point sample has its xsec·lumi weight, an event of its process's nominal
samples weight 0 (the template is the two-point sample alone), any other process's event its nominal
weight; in every other template the two-point sample's events weigh 0. Its chunks are then ordinary
(``sample_variation`` nominal) chunks of the process. Without that metadata (e.g. the real AGC
fileset) a two-point sample stays a chunk with its ``sample_variation`` (the AGC histograms use it;
the optimiser refuses it).

Optimisable cuts (declared once; soft and hard derive from them), θ₀ = the AGC: the lepton pT
threshold, the pT every one of the four jets must pass, the b-tag threshold that defines the regions.
The jet and lepton definitions above (30 GeV) are the skim's, so the thresholds can only tighten; the
observables are defined at the AGC working points (jets > 30 GeV, trijet b tag > 0.5) and do not move
with θ. Columns hold the first ``JET_SLOTS`` selected jets in NanoAOD order (pT-ordered). B tags are
counted with ``>`` in both regions (the AGC's 4j1b uses ``>=``: different only for a score of exactly 0.5).
"""

from __future__ import annotations

from itertools import combinations

import awkward as ak
import numpy as np
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from zprime_grad.columns import DEFAULT_BUCKETS, make_chunk, parity
from zprime_grad.errors import UserError
from zprime_grad.selection import Channel, CountCut, Cut, initial_params, parameters
from zprime_grad_processors import agc_branches
from zprime_grad_processors.nanoaod_branches import branch_names
from zprime_grad_processors.padded import Objects
from zprime_grad_processors.zprime_systematics import event_gaussian

LEPTON_PT, LEPTON_ETA, ELECTRON_TIGHT, SIP3D, MUON_ISO = 30.0, 2.1, 4, 4.0, 0.15
JET_PT, JET_ETA, JET_ID_TIGHT_LEPTON_VETO = 30.0, 2.4, 4
BTAG_WP = 0.5  # btagCSVV2 working point of the AGC (also the trijet's b-tag requirement)
MIN_JETS = 4
JET_SLOTS = 12  # b tags are counted over these (an event with > 12 jets above 30 GeV is very rare)
PT_SCALE, PT_RESOLUTION = 1.03, 0.05
BTAG_VAR_PER_50GEV, WJETS_SCALE_VAR = 0.075, 0.025
KINEMATIC_VARIATIONS = ("pt_scale_up", "pt_res_up")
TWO_POINT_VARIATIONS = ("ME_var", "PS_var", "scaleup", "scaledown")  # separate datasets, AGC tt̄ only
# the weight template a two-point sample becomes (``{process}_{suffix}``), paired by the _up/_down suffix
TWO_POINT_WEIGHTS = {"scaleup": "scale_up", "scaledown": "scale_down", "ME_var": "me_var_up", "PS_var": "ps_var_up"}
NO_TRIJET = -1.0  # trijet mass of an event without a b-tagged trijet: below every histogram
NanoAODSchema.warn_missing_crossrefs = False  # reduced files; set where workers unpickle the processor

# ------------------------------------------------------------- optimisable cuts, declared once
LEPTON_PT_CUT = Cut("lepton_pt", "lepton_pt", ">", "lepton_pt_threshold", LEPTON_PT, (LEPTON_PT, 150.0), 10.0)
JET_PT_CUT = Cut("jet_pt", "jet_pt", ">", "jet_pt_threshold", JET_PT, (JET_PT, 150.0), 10.0)
BTAG = Cut("btag", "jet_btag", ">", "btag_threshold", BTAG_WP, (0.1, 0.95), 1.0)
FOUR_JETS = CountCut("n_jets", "jet_mask", (JET_PT_CUT,), at_least=MIN_JETS)


def b_tags(**n) -> CountCut:
    return CountCut("n_btag", "jet_mask", (BTAG,), **n)


CHANNELS = (
    Channel("4j1b", (LEPTON_PT_CUT, FOUR_JETS, b_tags(at_least=1, at_most=1)), observable="ht"),
    Channel("4j2b", (LEPTON_PT_CUT, FOUR_JETS, b_tags(at_least=2)), observable="trijet_mass"),
)


# ------------------------------------------------------------------------------- physics objects
def good_electrons(el):
    return (el.pt > LEPTON_PT) & (abs(el.eta) < LEPTON_ETA) & (el.cutBased == ELECTRON_TIGHT) & (el.sip3d < SIP3D)


def good_muons(mu):
    return ((mu.pt > LEPTON_PT) & (abs(mu.eta) < LEPTON_ETA) & mu.tightId & (mu.sip3d < SIP3D)
            & (mu.pfRelIso04_all < MUON_ISO))


def jet_quality(jets: Objects) -> np.ndarray:
    """What the pT variations cannot change: |η| and the tight-lepton-veto ID bit."""
    return (np.abs(jets.eta) < JET_ETA) & ((jets.jetId.astype(np.int64) & JET_ID_TIGHT_LEPTON_VETO) > 0)


def first_selected(jets: Objects, selected: np.ndarray, width: int) -> Objects:
    """The first ``width`` selected jets in NanoAOD order, packed to the left (invalid slots zero)."""
    order = np.argsort(~selected, axis=1, kind="stable")[:, :width]
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    packed = Objects({k: take(v) for k, v in jets.fields.items()}, take(selected))
    if packed.valid.shape[1] < width:
        pad = ((0, 0), (0, width - packed.valid.shape[1]))
        packed = Objects({k: np.pad(v, pad) for k, v in packed.fields.items()}, np.pad(packed.valid, pad))
    return Objects({k: np.where(packed.valid, v, 0.0) for k, v in packed.fields.items()}, packed.valid)


def trijet_mass(jets: Objects) -> np.ndarray:
    """Mass of the highest-pT three-jet system holding a jet with b tag > ``BTAG_WP`` (AGC's top candidate)."""
    n_events, width = jets.valid.shape
    out = np.full(n_events, NO_TRIJET)
    if width < 3 or n_events == 0:
        return out
    triplets = np.array(list(combinations(range(width), 3)))  # [T, 3]
    pt, eta, phi, mass = (jets.fields[k][:, triplets] for k in ("pt", "eta", "phi", "mass"))  # [N, T, 3]
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
    sx, sy, sz, se = (a.sum(axis=2) for a in (px, py, pz, energy))
    ok = jets.valid[:, triplets].all(axis=2) & (jets.fields["btag"][:, triplets] > BTAG_WP).any(axis=2)
    trijet_pt = np.where(ok, np.hypot(sx, sy), -np.inf)
    best = trijet_pt.argmax(axis=1)[:, None]
    m2 = (np.take_along_axis(se, best, 1) ** 2 - np.take_along_axis(sx, best, 1) ** 2
          - np.take_along_axis(sy, best, 1) ** 2 - np.take_along_axis(sz, best, 1) ** 2)[:, 0]
    return np.where(ok.any(axis=1), np.sqrt(np.maximum(m2, 0.0)), NO_TRIJET)


def jet_columns(jets: Objects, quality: np.ndarray, pt_factor) -> dict[str, np.ndarray]:
    """Everything a jet-pT variation changes: the selected jets, their count, H_T, the trijet mass."""
    jets = jets.with_fields(pt=jets.pt * pt_factor)
    selected = quality & jets.valid & (jets.pt > JET_PT)
    n_jets = selected.sum(axis=1)
    slots = first_selected(jets, selected, JET_SLOTS)
    mass = np.full(len(n_jets), NO_TRIJET)
    enough = n_jets >= MIN_JETS  # the trijet is only needed (and only computed) where a region can pass
    if enough.any():
        mass[enough] = trijet_mass(slots.take(enough))
    return {"jet_pt": slots.slots("pt"), "jet_eta": slots.slots("eta"), "jet_btag": slots.slots("btag"),
            "jet_mask": slots.mask(), "n_jets": n_jets, "ht": np.where(selected, jets.pt, 0.0).sum(axis=1),
            "trijet_mass": mass, "baseline": enough}


def two_point_weights(meta) -> dict[str, tuple[str, str]]:
    """``{weight name: (process, variation)}`` of the two-point samples the fileset declares in its
    metadata ``two_point_variations`` (only those with a template name, ``TWO_POINT_WEIGHTS``)."""
    declared = meta.get("two_point_variations") or {}
    return {f"{process}_{TWO_POINT_WEIGHTS[v]}": (process, v)
            for process, variations in sorted(declared.items()) for v in variations if v in TWO_POINT_WEIGHTS}


def with_two_point_templates(weights: dict[str, np.ndarray], templates: dict[str, tuple[str, str]],
                             process: str, variation: str) -> dict[str, np.ndarray]:
    """Add the two-point templates (`two_point_weights`) to one chunk's weights (module docstring)."""
    nominal = weights["nominal"]
    zero = np.zeros_like(nominal)
    if (process, variation) in templates.values():  # the two-point sample: only in its own template
        out = {k: zero for k in weights}
        out.update({name: nominal if pv == (process, variation) else zero for name, pv in templates.items()})
        return out
    return {**weights, **{name: zero if pv[0] == process else nominal for name, pv in templates.items()}}


def btag_weight_variations(jet_pt: np.ndarray) -> dict[str, np.ndarray]:
    """AGC's b-tag weight variations: 1 ± 0.075 · pT(jet i) / 50 GeV for the first four jets."""
    out = {}
    for i in range(MIN_JETS):
        shift = BTAG_VAR_PER_50GEV * jet_pt[:, i] / 50.0
        out[f"btag_var_{i}_up"], out[f"btag_var_{i}_down"] = 1.0 + shift, 1.0 - shift
    return out


class AGCTTbarProcessor(processor.ProcessorABC):
    """Returns ``{"chunks": [ColumnChunk]}`` per coffea chunk (lists add up under coffea's accumulate)."""

    channels = CHANNELS

    def __init__(self, lumi_pb: float | None = 3378.0, *, buckets=DEFAULT_BUCKETS, config_hash: str = "",
                 inputs=None, options: dict | None = None):
        """``inputs`` (the era's) are not used: the AGC analysis fixes its 2015 Open Data conventions."""
        if options:
            raise UserError(f"analysis.options: the agc_ttbar processor takes none (got {sorted(options)})")
        self.lumi_pb = float(lumi_pb if lumi_pb is not None else 3378.0)
        self.buckets = tuple(buckets)
        self.config_hash = config_hash

    def parameters(self):
        return parameters(self.channels)

    def initial_params(self) -> dict[str, float]:
        return initial_params(self.channels)

    def branches(self) -> frozenset[str]:
        """What the skim reads (coffea preloads these in one bulk read, NanoEvents sees only them)."""
        return agc_branches.candidates()

    def check_branches(self, branches: set[str], filename: str, *, is_data: bool) -> None:
        """Driver-side check of a file's branch list; raises UserError naming what is missing."""
        agc_branches.check(branches, filename, is_data=is_data)

    def process(self, events):
        meta = events.metadata
        filename, dataset = meta.get("filename", "<unknown file>"), meta.get("dataset", "unknown")
        is_data = bool(meta.get("is_data", False))
        agc_branches.check(branch_names(events), filename, is_data=is_data)
        n_read = len(events)
        process, variation = meta.get("process", dataset), meta.get("variation", "nominal")

        electrons, muons = good_electrons(events.Electron), good_muons(events.Muon)
        one_lepton = (ak.sum(electrons, axis=1) + ak.sum(muons, axis=1)) == 1
        rows = np.flatnonzero(np.asarray(one_lepton & (ak.num(events.Jet) >= MIN_JETS)))
        lepton_pt = np.asarray(ak.sum(events.Electron.pt[electrons], axis=1)
                               + ak.sum(events.Muon.pt[muons], axis=1), np.float64)[rows]
        jets = Objects.from_collection(events.Jet, {"pt": "pt", "eta": "eta", "phi": "phi", "mass": "mass",
                                                    "jetId": "jetId", "btag": "btagCSVV2"}, rows)
        event_number = np.asarray(events.event)[rows]
        quality = jet_quality(jets)

        factors = {"nominal": 1.0}
        if not is_data and variation == "nominal":  # as the AGC: no pT variations of two-point samples
            slot = np.broadcast_to(np.arange(jets.valid.shape[1]), jets.valid.shape)
            factors["pt_scale_up"] = PT_SCALE
            factors["pt_res_up"] = 1.0 + PT_RESOLUTION * event_gaussian(event_number[:, None], slot, salt=3)
        per_variation = {v: jet_columns(jets, quality, f) for v, f in factors.items()}
        keep = np.logical_or.reduce([cols["baseline"] for cols in per_variation.values()])

        nominal = per_variation.pop("nominal")
        columns = {"lepton_pt": lepton_pt[keep], **{k: np.asarray(v)[keep] for k, v in nominal.items()},
                   "parity": parity(event_number[keep])}
        variations = {v: {k: np.asarray(a)[keep] for k, a in cols.items()} for v, cols in per_variation.items()}
        if not is_data and variation != "nominal":  # same layout as nominal chunks: variations = nominal
            variations = {v: {k: columns[k] for k in nominal} for v in KINEMATIC_VARIATIONS}
        kept = rows[keep]
        ids = {k: np.asarray(events[k])[kept].astype(np.int64) for k in ("run", "luminosityBlock", "event")}
        gen_weight = None
        if not is_data and "nevts" not in meta and "genWeight" in events.fields:
            gen_weight = np.asarray(events.genWeight, np.float64)[kept]
        weights = self.weights(meta, process, columns["jet_pt"], is_data, gen_weight=gen_weight)
        templates = {} if is_data else two_point_weights(meta)
        if templates:
            weights = with_two_point_templates(weights, templates, process, variation)
            if (process, variation) in templates.values():
                variation = "nominal"  # now an ordinary chunk of its process, in its own templates only

        chunk = make_chunk(
            columns, weights, variations, ids, buckets=self.buckets, dataset=dataset, process=process,
            sample_variation=variation, is_data=is_data,
            provenance={"file": filename, "treename": meta.get("treename", "Events"),
                        "entrystart": int(meta.get("entrystart", 0)),
                        "entrystop": int(meta.get("entrystop", n_read)), "fileuuid": meta.get("fileuuid", ""),
                        "entries_read": n_read, "config_hash": self.config_hash},
        )
        return {"chunks": [chunk]}

    def weights(self, meta, process: str, jet_pt: np.ndarray, is_data: bool,
                gen_weight: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """nominal = xsec · lumi / nevts (AGC), or xsec · lumi · genWeight / sumw where the fileset has
        no ``nevts`` (generated samples); each variation is nominal × its factor."""
        n = len(jet_pt)
        if is_data:
            return {"nominal": np.ones(n)}
        by_sumw = "nevts" not in meta and gen_weight is not None and "sumw" in meta
        for key in ("xsec", "sumw" if by_sumw else "nevts"):
            value = meta.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise UserError(f"dataset {meta.get('dataset')}: fileset metadata '{key}' must be a positive "
                                f"number for the AGC weight xsec·lumi/nevts (or xsec·lumi·genWeight/sumw) "
                                f"(got {value!r})")
        if by_sumw:
            nominal = float(meta["xsec"]) * self.lumi_pb * np.asarray(gen_weight, np.float64) / float(meta["sumw"])
        else:
            nominal = np.full(n, float(meta["xsec"]) * self.lumi_pb / float(meta["nevts"]))
        weights = {"nominal": nominal}
        weights.update({k: nominal * f for k, f in btag_weight_variations(jet_pt).items()})
        scale = WJETS_SCALE_VAR if process == "wjets" else 0.0
        weights["scale_var_up"], weights["scale_var_down"] = nominal * (1 + scale), nominal * (1 - scale)
        return weights
