"""The asymptotic expected Z₀ of a validation workspace checked with pseudo-experiments (``validation.toys``).

The toys run in the package's own JAX likelihood (``zprime_grad.stats.toys``: pyhf's ToyCalculator
procedure for q0, vmapped fits), on the same workspace cabinetry/pyhf gave ``Z_hard``. Recorded per
analysis in ``validation.json: <label>.toys``.
"""

from __future__ import annotations

import math


def toy_check(spec: dict, n: int, *, seed: int = 0, batch_size: int = 500) -> dict:
    """``{n, z, z_uncertainty, p0, asymptotic_z, agree, ...}`` for the pyhf workspace ``spec``.

    ``asymptotic_z``: sqrt(q0) on the mu = 1 Asimov data in the JAX likelihood (equal to pyhf's Z_hard to
    ~1e-3); ``agree``: the toy Z within ``stats.toys.AGREE_SIGMAS`` toy standard deviations of it (with
    no toy above the median only a lower bound on Z exists: agree if the asymptotic Z is above it).
    """
    from zprime_grad.stats import Model
    from zprime_grad.stats.toys import AGREE_SIGMAS, discovery_toys

    model = Model.from_pyhf(spec, source="validation workspace")
    result = discovery_toys(model, n, seed=seed, batch_size=batch_size)
    s = result.summary
    keep = ("n", "z", "z_uncertainty", "p0", "p0_uncertainty", "asymptotic_z", "agree", "z_lower_bound",
            "n_exceed", "median_q0_sb", "p0_at_asimov_q0", "n_exceed_asimov_q0", "failed", "seconds", "seed",
            "definition")
    out = {k: s.get(k) for k in keep}
    out["failed_b"], out["failed_sb"] = result.failed_b, result.failed_sb
    out["agree_within_sigmas"] = AGREE_SIGMAS
    out["toys_per_second"] = 2 * n / s["seconds"] if s["seconds"] > 0 else None
    for key in ("z", "z_uncertainty", "z_lower_bound", "asymptotic_z"):
        if isinstance(out[key], float) and not math.isfinite(out[key]):
            out[key] = None
    return out
