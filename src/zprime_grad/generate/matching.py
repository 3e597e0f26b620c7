"""Angular matching between two per-event collections stored flat with per-event counts.

Isolation cones, jet flavour, top-parton containment and NanoAOD cross-reference indices are all
"for each object, look at the other collection's members within ΔR". These numba loops do that in
O(n·m) per event without building the pair arrays.
"""

from __future__ import annotations

import numba
import numpy as np


def offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@numba.njit(cache=True)
def _delta_r2(eta1, phi1, eta2, phi2):  # pragma: no cover - numba
    dphi = (phi1 - phi2 + np.pi) % (2.0 * np.pi) - np.pi
    return (eta1 - eta2) ** 2 + dphi**2


@numba.njit(cache=True)
def cone_sum(a_off, a_eta, a_phi, a_radius, b_off, b_eta, b_phi, b_pt):  # pragma: no cover - numba
    """Σ pT of b within ``a_radius`` of each a, skipping b at ΔR < 1e-5 (the object itself)."""
    out = np.zeros(len(a_eta))
    for ev in range(len(a_off) - 1):
        for i in range(a_off[ev], a_off[ev + 1]):
            r2 = a_radius[i] ** 2
            for j in range(b_off[ev], b_off[ev + 1]):
                d2 = _delta_r2(a_eta[i], a_phi[i], b_eta[j], b_phi[j])
                if 1e-10 < d2 < r2:
                    out[i] += b_pt[j]
    return out


@numba.njit(cache=True)
def nearest(a_off, a_eta, a_phi, b_off, b_eta, b_phi, radius):  # pragma: no cover - numba
    """Local index (within the event) of the nearest b within ``radius`` of each a, else -1."""
    out = -np.ones(len(a_eta), np.int64)
    r2 = radius**2
    for ev in range(len(a_off) - 1):
        for i in range(a_off[ev], a_off[ev + 1]):
            best = r2
            for j in range(b_off[ev], b_off[ev + 1]):
                d2 = _delta_r2(a_eta[i], a_phi[i], b_eta[j], b_phi[j])
                if d2 < best:
                    best = d2
                    out[i] = j - b_off[ev]
    return out


@numba.njit(cache=True)
def count_within(a_off, a_eta, a_phi, b_off, b_eta, b_phi, b_tag, radius):  # pragma: no cover
    """For each a: how many b within ``radius``, per value of b_tag in {-1, +1} (columns 0, 1)."""
    out = np.zeros((len(a_eta), 2), np.int64)
    r2 = radius**2
    for ev in range(len(a_off) - 1):
        for i in range(a_off[ev], a_off[ev + 1]):
            for j in range(b_off[ev], b_off[ev + 1]):
                if _delta_r2(a_eta[i], a_phi[i], b_eta[j], b_phi[j]) < r2:
                    out[i, 0 if b_tag[j] < 0 else 1] += 1
    return out


@numba.njit(cache=True)
def first_two_referrers(ref, a_off, b_off):  # pragma: no cover - numba
    """Inverse cross-reference: for each b, the first two a whose ``ref`` points at it (else -1)."""
    out = -np.ones((b_off[-1], 2), np.int64)
    for ev in range(len(a_off) - 1):
        for i in range(a_off[ev], a_off[ev + 1]):
            k = ref[i]
            if k < 0:
                continue
            slot = b_off[ev] + k
            if out[slot, 0] < 0:
                out[slot, 0] = i - a_off[ev]
            elif out[slot, 1] < 0:
                out[slot, 1] = i - a_off[ev]
    return out
