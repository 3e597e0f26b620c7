"""The validation's fits (``zprime_grad.validate.inference``): cabinetry's numbers, and a hopeless model
given up at once instead of after Minuit's whole call budget."""

from __future__ import annotations

import cabinetry
import numpy as np
import pyhf
import pyhf.pdf
import pytest

from zprime_grad.validate.inference import MAXITER, NonFiniteParameters, expected_significance, minuit, mle_fit


def spec(signal, background, observed, mc_error) -> dict:
    return {"channels": [{"name": "sr", "samples": [
        {"name": "signal", "data": signal, "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "background", "data": background, "modifiers": [
            {"name": "staterror_sr", "type": "staterror", "data": mc_error},
            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}]}]}],
        "observations": [{"name": "sr", "data": observed}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}], "version": "1.0.0"}


FITTABLE = spec([2.0, 5.0, 1.0], [20.0, 10.0, 4.0], [23.0, 16.0, 4.0], [2.0, 1.5, 1.0])
HOPELESS = spec([0.0, 0.0], [0.0, 5.0], [9.0, 1.0], [0.0, 3.0])  # 9 events where nothing is predicted


@pytest.fixture
def likelihood_calls(monkeypatch):
    calls = [0]
    logpdf = pyhf.pdf.Model.logpdf

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return logpdf(self, *args, **kwargs)

    monkeypatch.setattr(pyhf.pdf.Model, "logpdf", counted)
    return calls


def test_mle_fit_gives_cabinetry_fit_numbers_to_the_last_bit():
    fit = mle_fit(FITTABLE)
    assert fit["method"] == "cabinetry.fit.fit (minuit tolerance 0.001)"
    model, data = cabinetry.model_utils.model_and_data(FITTABLE)
    reference = cabinetry.fit.fit(model, data, tolerance=1e-3, maxiter=MAXITER)
    for i, name in enumerate(reference.labels):
        assert fit["parameters"][name]["bestfit"] == float(reference.bestfit[i]), name
        assert fit["parameters"][name]["uncertainty"] == float(reference.uncertainty[i]), name
    assert fit["twice_nll"] == reference.best_twice_nll
    assert fit["mu_hat"] == pytest.approx(1.0, abs=0.6)


def test_a_hopeless_model_is_given_up_at_once(likelihood_calls):
    model, data = cabinetry.model_utils.model_and_data(HOPELESS)
    with pytest.raises(pyhf.exceptions.FailedMinimization):
        cabinetry.fit.fit(model, data, tolerance=1e-3, maxiter=MAXITER)
    plain = likelihood_calls[0]
    likelihood_calls[0] = 0
    fit = mle_fit(HOPELESS)
    assert fit["method"] is None and fit["mu_hat"] is None  # no optimiser fits it: n/a, never an exception
    assert fit["errors"][:2] == ["minuit tolerance 0.001: Minuit's parameters became NaN",
                                 "minuit tolerance 0.1: Minuit's parameters became NaN"]
    assert likelihood_calls[0] < plain / 10, (likelihood_calls[0], plain)


def test_the_guard_raises_only_on_non_finite_parameters():
    optimizer = minuit(verbose=0)
    seen = []
    fit = optimizer._get_minimizer(lambda p: seen.append(np.copy(p)) or float(np.sum(np.square(p))),
                                   [1.0, 2.0], [(-5, 5), (-5, 5)])
    fit.migrad()
    assert fit.valid and np.allclose(fit.values, 0.0, atol=1e-2) and seen
    with pytest.raises(NonFiniteParameters):
        fit.fcn(np.array([np.nan, 1.0]))


def test_expected_significance_is_unchanged_by_the_guard():
    z = expected_significance(FITTABLE)
    model, asimov = cabinetry.model_utils.model_and_data(FITTABLE, asimov=True)
    backend = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(verbose=0, tolerance=1e-3, maxiter=MAXITER))
    try:
        _, twice_nll_zero = pyhf.infer.mle.fixed_poi_fit(0.0, asimov, model, return_fitted_val=True)
        free = -2.0 * float(model.logpdf(np.asarray(model.config.suggested_init(), float), asimov)[0])
    finally:
        pyhf.set_backend(*backend)
    assert z["method"].startswith("pyhf.infer.mle.fixed_poi_fit (minuit tolerance 0.001")
    assert z["Z"] == np.sqrt(max(float(twice_nll_zero) - free, 0.0))
