"""The held-out fit at its own luminosity: `at_luminosity_fraction` scales a pyhf spec consistently."""

from __future__ import annotations

import numpy as np
import pyhf

from zprime_grad.validate.workspace import at_luminosity_fraction


def spec(scale: float = 1.0) -> dict:
    s = lambda v: [scale * x for x in v]  # noqa: E731
    return {
        "version": "1.0.0",
        "channels": [{"name": "sr", "samples": [
            {"name": "signal", "data": s([5.0, 10.0, 4.0]),
             "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "bkg", "data": s([50.0, 40.0, 20.0]), "modifiers": [
                {"name": "staterror_sr", "type": "staterror", "data": s([3.0, 2.0, 1.5])},
                {"name": "jes", "type": "histosys", "data": {"hi_data": s([52.0, 41.0, 21.0]),
                                                             "lo_data": s([48.0, 39.0, 19.0])}},
                {"name": "lumi", "type": "normsys", "data": {"hi": 1.025, "lo": 0.975}}]}]}],
        "observations": [{"name": "sr", "data": s([54.0, 52.0, 24.0])}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
    }


def test_scaling_by_a_half_is_the_model_at_half_the_luminosity():
    halved = at_luminosity_fraction(spec(), 0.5)
    assert halved == spec(0.5)  # every yield, template, absolute σ and observation; relative modifiers kept
    assert spec() == spec(1.0)  # the input is not modified
    full, half = pyhf.Workspace(spec()), pyhf.Workspace(halved)
    m_full, m_half = full.model(), half.model()
    init = m_full.config.suggested_init()
    np.testing.assert_allclose(m_half.expected_actualdata(init)[:3], 0.5 * m_full.expected_actualdata(init)[:3])


def test_half_the_luminosity_widens_the_fitted_mu_by_about_sqrt2():
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(verbose=0))
    try:
        sigmas = []
        for s in (spec(), at_luminosity_fraction(spec(), 0.5)):
            ws = pyhf.Workspace(s)
            model = ws.model()
            result = pyhf.infer.mle.fit(ws.data(model), model, return_uncertainties=True)
            sigmas.append(result[model.config.poi_index, 1])
    finally:
        pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())
    assert 1.2 < sigmas[1] / sigmas[0] < 1.6, sigmas
