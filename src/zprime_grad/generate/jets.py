"""Particle-level jets with FastJet: anti-kT R=0.4 and R=0.8, soft-drop groomed fat-jet mass.

All events of a batch are clustered in one call through FastJet's awkward multi-event interface.
Soft drop (z_cut = 0.1, β = 0, R0 = 0.8, as CMS' ``msoftdrop``) reclusters each fat jet's
constituents with Cambridge/Aachen and grooms them, again for all fat jets of the batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import fastjet
import numpy as np
import vector

from zprime_grad.generate.truth import Particles

vector.register_awkward()

AK4_PT_MIN = 10.0  # particle level, below the 15 GeV NanoAOD threshold so smearing can migrate up
AK8_PT_MIN = 120.0  # particle level, below the 170 GeV NanoAOD threshold


@dataclass
class Jets:
    """Flat jet four-momenta with per-event counts (+ groomed mass for fat jets)."""

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    counts: np.ndarray
    msoftdrop: np.ndarray | None = None

    @property
    def px(self) -> np.ndarray:
        return self.pt * np.cos(self.phi)

    @property
    def py(self) -> np.ndarray:
        return self.pt * np.sin(self.phi)


def _flat_kinematics(jets: ak.Array) -> tuple[np.ndarray, ...]:
    flat = ak.flatten(jets)
    vec = ak.zip({"px": flat.px, "py": flat.py, "pz": flat.pz, "E": flat.E}, with_name="Momentum4D")
    mass2 = ak.to_numpy(vec.E) ** 2 - ak.to_numpy(vec.px) ** 2 - ak.to_numpy(vec.py) ** 2 - ak.to_numpy(vec.pz) ** 2
    return (
        ak.to_numpy(vec.pt),
        ak.to_numpy(vec.eta),
        ak.to_numpy(vec.phi),
        np.sqrt(np.maximum(mass2, 0.0)),
        ak.to_numpy(ak.num(jets)),
    )


def _sorted_by_pt(jets: Jets) -> Jets:
    """pT-descending within each event, as in NanoAOD."""
    event = np.repeat(np.arange(len(jets.counts)), jets.counts)
    order = np.lexsort((-jets.pt, event))
    pick = lambda a: None if a is None else a[order]  # noqa: E731
    return Jets(pick(jets.pt), pick(jets.eta), pick(jets.phi), pick(jets.mass), jets.counts, pick(jets.msoftdrop))


def cluster(particles: Particles, radius: float, pt_min: float, *, groom: bool = False) -> Jets:
    """Anti-kT jets of ``radius`` from the given particles of every event."""
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, radius)
    sequence = fastjet.ClusterSequence(particles.jagged(), definition)
    jets = sequence.inclusive_jets(min_pt=pt_min)
    pt, eta, phi, mass, counts = _flat_kinematics(jets)
    msd = None
    if groom:
        msd = np.zeros_like(pt)
        constituents = ak.flatten(sequence.constituents(min_pt=pt_min), axis=1)
        if len(constituents):
            ca = fastjet.JetDefinition(fastjet.cambridge_algorithm, radius)
            groomed = fastjet.ClusterSequence(constituents, ca).exclusive_jets_softdrop_grooming(
                njets=1, beta=0.0, symmetry_cut=0.1, R0=radius
            )
            msd = np.maximum(np.nan_to_num(ak.to_numpy(groomed.msoftdrop), nan=0.0), 0.0)  # FastJet: -sqrt(-m2)
    return _sorted_by_pt(Jets(pt, eta, phi, mass, counts, msd))
