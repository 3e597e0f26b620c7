"""The generator-level view of a Pythia batch: stable particles, heavy-flavour hadrons, the hard process.

``pythia.nextBatch`` hands over the full event record as an awkward array (built in C++, so no
per-particle Python). This module reduces it to what the detector model needs, as flat numpy arrays
with per-event counts: visible stable particles with their charges, neutrinos, b/c hadrons for jet
flavour, the hadronic-top partons for fat-jet tagging, the heavy-flavour origin of each visible lepton
(for its impact parameter), and a small NanoAOD-like ``GenPart`` record. The record walking (copies,
mothers, ancestry) is a numba loop: it is sequential by nature.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numba
import numpy as np

NEUTRINOS = (12, 14, 16)
ETA_MAX_VISIBLE = 5.0  # beyond the forward calorimeters particles are invisible


@dataclass
class Particles:
    """Flat arrays of one kind of particle in a batch, with ``counts`` per event."""

    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    pdg: np.ndarray
    counts: np.ndarray

    @property
    def pt(self) -> np.ndarray:
        return np.hypot(self.px, self.py)

    @property
    def eta(self) -> np.ndarray:
        return np.arcsinh(self.pz / np.maximum(self.pt, 1e-12))

    @property
    def phi(self) -> np.ndarray:
        return np.arctan2(self.py, self.px)

    def select(self, mask: np.ndarray) -> "Particles":
        event = np.repeat(np.arange(len(self.counts)), self.counts)
        return Particles(
            self.px[mask], self.py[mask], self.pz[mask], self.e[mask], self.pdg[mask],
            np.bincount(event[mask], minlength=len(self.counts)),
        )

    def jagged(self) -> ak.Array:
        """Momentum4D records per event, the input FastJet's multi-event interface takes."""
        flat = ak.zip({"px": self.px, "py": self.py, "pz": self.pz, "E": self.e}, with_name="Momentum4D")
        return ak.unflatten(flat, self.counts)


@dataclass
class GenRecord:
    """NanoAOD-like GenPart: hard-process Z'/t/W, the W decay products and the b from each top."""

    pdg: np.ndarray
    status: np.ndarray
    mother: np.ndarray  # index within the event's GenPart list, -1 if none
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    counts: np.ndarray


@dataclass
class Truth:
    visible: Particles  # stable, not a neutrino, |eta| < 5
    charge: np.ndarray  # of each visible particle
    neutrinos: Particles
    b_hadrons: Particles
    c_hadrons: Particles
    top_partons: Particles  # b, q, q' of each hadronically decaying top; pdg = +-1 tags the top
    gen: GenRecord
    weight: np.ndarray
    n_events: int
    origin: np.ndarray | None = None  # per visible particle: 5/4 a lepton from a b/c hadron decay, else 0


def heaviest_quark(pdg: np.ndarray) -> np.ndarray:
    """The heaviest quark flavour in a hadron's PDG code (0 for non-hadrons)."""
    a = np.abs(pdg)
    n1, n2 = (a // 1000) % 10, (a // 100) % 10
    return np.where(a >= 100, np.where(n1 > 0, n1, n2), 0)


def _charges(pdg: np.ndarray, charge_of) -> np.ndarray:
    ids, inverse = np.unique(pdg, return_inverse=True)
    return np.array([charge_of(int(i)) for i in ids], dtype=np.float64)[inverse]


@numba.njit(cache=True)
def _walk(offsets, pid, status, mother1, daughter1, daughter2):  # pragma: no cover - numba
    """Per event: pick the GenPart record and the hadronic-top partons (local indices)."""
    n_ev = len(offsets) - 1
    gen_idx = []
    gen_mother = []
    gen_counts = np.zeros(n_ev, np.int64)
    top_idx = []
    top_tag = []
    top_counts = np.zeros(n_ev, np.int64)
    for ev in range(n_ev):
        lo, hi = offsets[ev], offsets[ev + 1]
        n = hi - lo
        local_gen = -np.ones(n, np.int64)  # position in GenPart for each record entry
        count = 0
        for i in range(n):
            a = abs(pid[lo + i])
            if a != 6 and a != 24 and a != 32:
                continue
            d1 = daughter1[lo + i]
            if d1 <= 0 or abs(pid[lo + d1]) == a:  # not the last copy: it only recoils
                continue
            local_gen[i] = count
            count += 1
        # decay products of the last copies: W -> f f', t -> b W
        for i in range(n):
            m = mother1[lo + i]
            if m <= 0 or local_gen[m] < 0 or local_gen[i] >= 0:
                continue
            a, am = abs(pid[lo + i]), abs(pid[lo + m])
            if (am == 24 and a <= 16) or (am == 6 and a == 5):
                local_gen[i] = count
                count += 1
        # mothers: follow copies upwards to the previous selected particle
        order = np.empty(count, np.int64)
        for i in range(n):
            if local_gen[i] >= 0:
                order[local_gen[i]] = i
        for k in range(count):
            i = order[k]
            gen_idx.append(i)
            j = mother1[lo + i]
            mother = -1
            while j > 0:
                if local_gen[j] >= 0:
                    mother = local_gen[j]
                    break
                j = mother1[lo + j]
            gen_mother.append(mother)
        gen_counts[ev] = count
        # hadronic tops: the two quarks of a hadronic W and the b of the same-sign top
        nt = 0
        for k in range(count):
            i = order[k]
            if abs(pid[lo + i]) != 24:
                continue
            d1, d2 = daughter1[lo + i], daughter2[lo + i]
            if d1 <= 0 or abs(pid[lo + d1]) > 5:
                continue
            sign = 1 if pid[lo + i] > 0 else -1
            for kb in range(count):
                ib = order[kb]
                if pid[lo + ib] == 5 * sign and abs(pid[lo + mother1[lo + ib]]) == 6:
                    for j in (np.int64(ib), np.int64(d1), np.int64(d2)):
                        top_idx.append(j)
                        top_tag.append(sign)
                        nt += 1
                    break
        top_counts[ev] = nt
    return (
        np.array(gen_idx, np.int64), np.array(gen_mother, np.int64), gen_counts,
        np.array(top_idx, np.int64), np.array(top_tag, np.int64), top_counts,
    )


@numba.njit(cache=True)
def _heavy_origin(offsets, pid, mother1, particles):  # pragma: no cover - numba
    """For each given particle (global index): 5 if a b hadron is among its decay ancestors, 4 if a c
    hadron is (and no b), else 0. The walk climbs hadrons, leptons and photons and stops at the first
    parton or string: above that, ancestry is the hard process, not a decay chain."""
    event = np.searchsorted(offsets, particles, side="right") - 1
    out = np.zeros(len(particles), np.int64)
    for k in range(len(particles)):
        lo = offsets[event[k]]
        j = mother1[particles[k]]
        flavour = 0
        for _ in range(100):
            if j <= 0:
                break
            a = abs(pid[lo + j])
            if a < 100 and a != 11 and a != 13 and a != 15 and a != 22:
                break
            n1, n2 = (a // 1000) % 10, (a // 100) % 10
            q = (n1 if n1 > 0 else n2) if a >= 100 else 0
            if q == 5:
                flavour = 5
                break
            if q == 4:
                flavour = 4
            j = mother1[lo + j]
        out[k] = flavour
    return out


def _flat(x: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x))


def from_batch(batch: ak.Array, charge_of) -> Truth:
    """Reduce a ``nextBatch`` array to the generator-level inputs of the detector model."""
    prt = batch.prt
    counts = ak.to_numpy(ak.num(prt))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    pid = _flat(prt.id)
    status = _flat(prt.status)
    mom = prt.p
    px, py, pz, e = _flat(mom.px), _flat(mom.py), _flat(mom.pz), _flat(mom.e)
    everything = Particles(px, py, pz, e, pid, counts)

    final = status > 0
    neutrino = np.isin(np.abs(pid), NEUTRINOS)
    with np.errstate(invalid="ignore", divide="ignore"):
        eta = everything.eta
    visible_mask = final & ~neutrino & (np.abs(eta) < ETA_MAX_VISIBLE)
    visible = everything.select(visible_mask)

    flavour = heaviest_quark(pid)
    hadron_pt_ok = everything.pt > 5.0
    b_hadrons = everything.select((flavour == 5) & hadron_pt_ok)
    c_hadrons = everything.select((flavour == 4) & hadron_pt_ok)

    mother1 = _flat(prt.mother1)
    origin = np.zeros(len(pid), np.int64)
    lepton = visible_mask & np.isin(np.abs(pid), (11, 13))
    origin[lepton] = _heavy_origin(offsets, pid, mother1, np.flatnonzero(lepton))

    gen_idx, gen_mother, gen_counts, top_idx, top_tag, top_counts = _walk(
        offsets, pid, status, mother1, _flat(prt.daughter1), _flat(prt.daughter2)
    )
    gen_global = np.repeat(offsets[:-1], gen_counts) + gen_idx
    top_global = np.repeat(offsets[:-1], top_counts) + top_idx
    gen = GenRecord(
        pid[gen_global], np.abs(status[gen_global]), gen_mother,
        px[gen_global], py[gen_global], pz[gen_global], e[gen_global], gen_counts,
    )
    top_partons = Particles(px[top_global], py[top_global], pz[top_global], e[top_global], top_tag, top_counts)
    return Truth(
        visible=visible,
        charge=_charges(visible.pdg, charge_of),
        neutrinos=everything.select(final & neutrino),
        b_hadrons=b_hadrons,
        c_hadrons=c_hadrons,
        top_partons=top_partons,
        gen=gen,
        weight=ak.to_numpy(batch.info.weights[:, 0]).astype(np.float64),
        n_events=len(counts),
        origin=origin[visible_mask],
    )
