"""CLs and upper limits of the JAX model against pyhf's hypotest and its limit scan: a scan of many fits,
so it lives outside the fast unit layer (tests/unit/test_stats_pyhf.py holds the other pyhf checks)."""

from __future__ import annotations

import numpy as np
import pyhf

from tests.unit.test_stats_pyhf import RTOL_Z, models, precise_pyhf, pyhf_asimov, specs  # noqa: F401 (fixtures)


def test_cls_and_limits_equal_pyhf(models):
    model, pdf, workspace = models["shapesys"]
    data = workspace.data(pdf)
    observed, expected = pyhf.infer.hypotest(1.5, data, pdf, test_stat="qtilde", return_expected_set=True)
    ours = model.cls(1.5)
    np.testing.assert_allclose(float(ours.observed), float(observed), rtol=RTOL_Z)
    np.testing.assert_allclose(np.asarray(ours.expected), np.asarray(expected, float), rtol=RTOL_Z)

    background_asimov = pyhf_asimov(pdf, 0.0)
    _, expected_nominal = pyhf.infer.hypotest(1.5, background_asimov, pdf, test_stat="qtilde", return_expected_set=True)
    np.testing.assert_allclose(np.asarray(model.expected_cls(1.5)), np.asarray(expected_nominal, float), rtol=RTOL_Z)

    pyhf.set_backend("numpy", "scipy")  # pyhf's default fit tolerance: the limit scan's many fits stay fast
    try:
        obs_limit, exp_limits = pyhf.infer.intervals.upper_limits.upper_limit(data, pdf, rtol=1e-6)
    finally:
        pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    limits = model.upper_limit()
    np.testing.assert_allclose(limits["observed"], float(obs_limit), rtol=RTOL_Z)
    np.testing.assert_allclose(limits["expected"], np.asarray(exp_limits, float), rtol=RTOL_Z)
