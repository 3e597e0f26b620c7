"""Pile-up: the MC and data profiles of the true interaction count, and what the detector reads from it.

The generator simulates no pile-up particles (see ``detector.py``): nothing a physics object is made of
depends on pile-up. What it writes are the pile-up *labels* of NanoAOD, drawn from the profiles below,
so that a pile-up weight from a LUM-style correctionlib file (``make_corrections.py``) is a pure
reweighting of ``Pileup_nTrueInt``: it changes no shape, and its mean over the MC is 1 (exactly, bin by
bin: the weights are data/MC ratios of unit-normalised histograms over the same bins).

* **MC profile** (``mc_profile``): a fixed histogram over ``Pileup_nTrueInt`` in 99 unit bins on
  [0, 99), like the CMS mixing modules' ``probValue`` tables: 98 % a Gamma distribution of mean 24 and
  standard deviation 7.5 (a 2016-like profile, broader than the data it anticipates) plus 2 % flat over
  the whole range, so every bin is populated and every data/MC weight is bounded (max 1.8).
  ``Pileup_nTrueInt`` (float32) is a bin drawn from it, uniform within the bin; ``Pileup_nPU`` (int32,
  the in-time interactions) is Poisson(nTrueInt).
* **Data profile** (``data_profile``): the mean interaction count per bunch crossing μ = L_bunch·σ_mb/f_rev
  is distributed as Normal(24, 6) at the minimum-bias cross section σ_mb = 69.2 mb (2016-like), in the
  same 99 bins (the tails outside [0, 99) dropped, then normalised). μ is proportional to σ_mb, so the
  LUM ``up``/``down`` profiles (σ_mb ± 4.6 %, as CMS does) are Normal(24, 6) scaled by 1 ± 0.046.
  The pseudo-data (``pseudodata.py``) give each lumi section one μ from this profile and each event
  nPU ~ Poisson(μ); data files carry no ``Pileup_*`` branches (real data have none).
* **What the detector sees**: ``PV_npvs`` = 1 (the hard-scatter vertex) + Binomial(nPU, 0.7), a 70 %
  reconstruction efficiency of pile-up vertices; ``fixedGridRhoFastjetAll`` (float32, GeV) =
  max(0, 1.0 + 0.5·nPU + 1.5·z), z ~ N(0, 1): ρ ≈ 13 GeV at 24 interactions, as in 2016.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

N_BINS = 99  # unit bins on [0, 99), the LUM puWeights.json binning
EDGES = np.arange(N_BINS + 1, dtype=np.float64)

MC_GAMMA_MEAN, MC_GAMMA_SD, MC_FLAT_FRACTION = 24.0, 7.5, 0.02
DATA_MEAN, DATA_SD = 24.0, 6.0  # at the nominal minimum-bias cross section
MINBIAS_XSEC_MB = 69.2
MINBIAS_XSEC_UNCERTAINTY = 0.046  # relative; the LUM up/down profiles
VERTEX_EFFICIENCY = 0.7
RHO_OFFSET, RHO_PER_PU, RHO_NOISE = 1.0, 0.5, 1.5  # GeV


def _normalised(p: np.ndarray) -> np.ndarray:
    return p / p.sum()


def mc_profile() -> np.ndarray:
    """P(bin k) of ``Pileup_nTrueInt`` in the generated MC, k = 0..98 (unit bins)."""
    shape = (MC_GAMMA_MEAN / MC_GAMMA_SD) ** 2
    gamma = np.diff(stats.gamma.cdf(EDGES, a=shape, scale=MC_GAMMA_SD**2 / MC_GAMMA_MEAN))
    return _normalised((1 - MC_FLAT_FRACTION) * _normalised(gamma) + MC_FLAT_FRACTION / N_BINS)


def data_profile(variation: str = "nominal") -> np.ndarray:
    """P(bin k) of μ in the pseudo-data at σ_mb (nominal) or σ_mb·(1 ± 4.6 %) (up / down)."""
    scale = {"nominal": 1.0, "up": 1 + MINBIAS_XSEC_UNCERTAINTY, "down": 1 - MINBIAS_XSEC_UNCERTAINTY}[variation]
    return _normalised(np.diff(stats.norm.cdf(EDGES, DATA_MEAN * scale, DATA_SD * scale)))


def weights(variation: str = "nominal") -> np.ndarray:
    """Data/MC ratio per bin: the content of the LUM-style correction."""
    return data_profile(variation) / mc_profile()


def _from_histogram(p: np.ndarray, u_bin: np.ndarray, u_within: np.ndarray) -> np.ndarray:
    """Inverse CDF of the piecewise-uniform density of histogram ``p`` at (bin, within-bin) uniforms."""
    cdf = np.cumsum(p)
    k = np.minimum(np.searchsorted(cdf, u_bin, side="right"), N_BINS - 1)
    return EDGES[k] + u_within


def draw_mc(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``Pileup_nTrueInt``, ``Pileup_nPU``, ``PV_npvs``, ``fixedGridRhoFastjetAll`` of ``n`` MC events."""
    true = _from_histogram(mc_profile(), rng.random(n), rng.random(n))
    n_pu = rng.poisson(true)
    return {"Pileup_nTrueInt": true.astype(np.float32), "Pileup_nPU": n_pu.astype(np.int32),
            **detector_labels(n_pu, rng)}


def data_mu_quantiles(n: int) -> np.ndarray:
    """``n`` values of μ spread evenly over the nominal data profile (its (i + ½)/n quantiles):
    lumi sections of equal luminosity with these μ reproduce the profile without sampling noise."""
    p = data_profile()
    cdf = np.concatenate([[0.0], np.cumsum(p)])
    q = (np.arange(n) + 0.5) / n
    k = np.minimum(np.searchsorted(cdf, q, side="right") - 1, N_BINS - 1)
    return EDGES[k] + (q - cdf[k]) / p[k]


def detector_labels(n_pu: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``PV_npvs`` and ``fixedGridRhoFastjetAll`` for events with ``n_pu`` in-time pile-up interactions."""
    n_pu = np.asarray(n_pu, np.int64)
    npvs = 1 + rng.binomial(n_pu, VERTEX_EFFICIENCY)
    rho = np.maximum(RHO_OFFSET + RHO_PER_PU * n_pu + RHO_NOISE * rng.standard_normal(len(n_pu)), 0.0)
    return {"PV_npvs": npvs.astype(np.int32), "fixedGridRhoFastjetAll": rho.astype(np.float32)}
