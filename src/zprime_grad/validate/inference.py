"""Statistics on a cabinetry-built workspace with the standard tools (cabinetry + pyhf).

* `expected_significance`: the expected discovery Z₀ — q₀ on the μ = 1 Asimov dataset of the model
  (pyhf ``hypotest(0, asimov, test_stat="q0")``, one profile fit), the same quantity the optimiser
  maximises on soft templates.
* `mle_fit`: the maximum-likelihood fit to the workspace's observations (the pseudo-data), with best-fit
  values, Hesse uncertainties and the pulls ``(θ̂ − θ₀)/σ_prefit`` of the constrained parameters.

Minuit is tried with a tight tolerance first, then with its default; then pyhf's scipy optimiser.
The attempt that succeeded is recorded (``method``); a model no optimiser can fit gives ``None``
values with the error, never an exception. An attempt whose parameters have become NaN is given up at
once: Minuit cannot leave that state, and on a hopeless model it otherwise spent its whole call budget
five times over (simplex and migrad retries: ~90k NaN evaluations, a minute per fit). pyhf's backend
and optimizer are the caller's afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math

import numpy as np

TIGHT = 1e-3  # minuit EDM target factor (default 0.1): Z to ~1e-4
ATTEMPTS = ((f"minuit tolerance {TIGHT}", TIGHT), ("minuit tolerance 0.1", None))
MAXITER = 20_000  # function calls per minuit attempt (pyhf's default 100k only prolongs a hopeless fit)


@contextlib.contextmanager
def _quiet():
    """pyhf logs a failed minimisation (with its full covariance table) at ERROR before raising; Minuit
    prints every NaN probe ("FCN result is NaN", "FunctionMinimum is invalid") from C++: captured in a
    CLI session (`terminal.chatter`). What a failure means for the numbers is said by `fit_warnings`."""
    from zprime_grad import terminal

    loggers = [logging.getLogger(n) for n in ("cabinetry", "pyhf")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with terminal.chatter():
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def fit_warnings(label: str, significance: dict | None = None, fit: dict | None = None) -> list[str]:
    """In our words, what a fit that really failed means for the numbers of ``label`` (none if Minuit
    converged, at either tolerance). ``significance``: from `expected_significance`; ``fit``: `mle_fit`."""
    found = []
    if significance is not None and significance.get("method") is None:
        found.append(f"{label}: no optimiser could fit the Asimov data (Minuit at both tolerances, scipy): "
                     "the expected Z0 is n/a")
    elif significance is not None and "scipy" in significance["method"]:
        found.append(f"{label}: Minuit failed on the Asimov fits; Z0 is pyhf's scipy result (not cross-checked)")
    if fit is not None and fit.get("method") is None and fit.get("errors"):
        found.append(f"{label}: the fit to the held-out pseudo-data failed with every optimiser: mu_hat, "
                     "sigma(mu) and the pulls are n/a (the expected Z0 does not depend on it)")
    elif fit is not None and "scipy" in (fit.get("method") or ""):
        found.append(f"{label}: Minuit failed on the fit to the held-out pseudo-data; mu_hat and the pulls come "
                     "from scipy, without uncertainties")
    return found


class NonFiniteParameters(ArithmeticError):
    """Minuit asked for the likelihood at NaN/inf parameters: the minimisation is lost."""


@functools.cache
def _minuit_class():
    """pyhf's Minuit optimizer, giving up as soon as Minuit's parameters are no longer finite (a fit
    that converges never gets there, so its result is pyhf's to the last bit)."""
    import pyhf

    class FailFastMinuit(pyhf.optimize.minuit_optimizer):
        def _get_minimizer(self, objective_and_grad, init_pars, init_bounds, fixed_vals=None, do_grad=False,
                           par_names=None):
            def guarded(pars):
                if not np.all(np.isfinite(pars)):
                    raise NonFiniteParameters("Minuit's parameters became NaN")
                return objective_and_grad(pars)

            return super()._get_minimizer(guarded, init_pars, init_bounds, fixed_vals, do_grad, par_names)

    return FailFastMinuit


def minuit(**options):
    """A pyhf Minuit optimizer (``options`` as ``pyhf.optimize.minuit_optimizer``) that fails fast."""
    return _minuit_class()(**options)


def _finite(x: float):
    x = float(x)
    return x if math.isfinite(x) else None


@contextlib.contextmanager
def _optimizer(optimizer=None):
    """pyhf's numpy backend with ``optimizer`` for the block (cabinetry's fits set their own); the caller's
    backend and optimizer after it."""
    import pyhf

    previous = pyhf.get_backend()
    if optimizer is not None:
        pyhf.set_backend("numpy", optimizer)
    try:
        yield
    finally:
        pyhf.set_backend(*previous)


def expected_significance(spec: dict) -> dict:
    """``{"Z", "p0", "method"}`` from q₀ on the μ = 1 Asimov data of the workspace ``spec``.

    q₀ = −2 ln [L(0, θ̂̂₀) / L(μ̂, θ̂)] as ``pyhf.infer.hypotest(0, asimov, test_stat="q0")``, with one fit
    instead of two: on its own Asimov data (main and auxiliary) the unconditional maximum of the
    likelihood is the generating point (μ = 1, θ₀), where every Poisson mean equals its count and every
    constraint sits at its auxiliary value; that point is exact where a fit only approaches it. Only the
    μ = 0 profile is fitted (Minuit, then pyhf's scipy optimiser), so a validation runs half the fits.
    """
    import cabinetry
    import pyhf
    from scipy.stats import norm

    errors = []
    with _quiet():
        model, asimov = cabinetry.model_utils.model_and_data(spec, asimov=True)
        init = np.asarray(model.config.suggested_init(), float)
        with _optimizer("scipy"):
            twice_nll_free = -2.0 * float(model.logpdf(init, asimov)[0])
        attempts = [(method, minuit(verbose=0, tolerance=tolerance or 0.1, maxiter=MAXITER))
                    for method, tolerance in ATTEMPTS]
        attempts.append(("pyhf scipy", pyhf.optimize.scipy_optimizer()))
        for method, optimizer in attempts:
            method = f"{method}; mu-free optimum at the Asimov point"
            try:
                with _optimizer(optimizer):
                    _, twice_nll_zero = pyhf.infer.mle.fixed_poi_fit(0.0, asimov, model, return_fitted_val=True)
            except (pyhf.exceptions.FailedMinimization, NonFiniteParameters) as err:
                errors.append(f"{method}: {err}")
                continue
            q0 = max(float(twice_nll_zero) - twice_nll_free, 0.0)
            z = math.sqrt(q0)
            return {"Z": _finite(z), "p0": float(norm.sf(z)), "method": f"pyhf.infer.mle.fixed_poi_fit ({method})"}
    return {"Z": None, "p0": None, "method": None, "errors": errors}


def mle_fit(spec: dict) -> dict:
    """Fit to the observations; best-fit values, uncertainties, pulls, −2 ln L."""
    import cabinetry
    import pyhf

    errors = []
    with _quiet(), _optimizer(minuit(verbose=0)):
        model, data = cabinetry.model_utils.model_and_data(spec)
        for method, tolerance in ATTEMPTS:
            try:
                bestfit, uncertainty, twice_nll = _cabinetry_fit(model, data, tolerance)
                break
            except (pyhf.exceptions.FailedMinimization, NonFiniteParameters) as err:
                errors.append(f"{method}: {err}")
        else:
            return _scipy_fit(model, data, errors)
        prefit = np.asarray(cabinetry.model_utils.prefit_uncertainties(model))
    init = np.asarray(model.config.suggested_init(), float)
    fixed = model.config.suggested_fixed()
    params = {}
    for i, label in enumerate(model.config.par_names):
        entry = {"bestfit": float(bestfit[i]), "uncertainty": float(uncertainty[i])}
        if prefit[i] > 0 and not fixed[i]:
            entry["pull"] = float((bestfit[i] - init[i]) / prefit[i])
            entry["constraint"] = float(uncertainty[i] / prefit[i])
        params[label] = entry
    poi = model.config.poi_name
    return {"poi": poi, "mu_hat": params[poi]["bestfit"], "mu_uncertainty": params[poi]["uncertainty"],
            "twice_nll": float(twice_nll), "parameters": params, "method": f"cabinetry.fit.fit ({method})"}


def _cabinetry_fit(model, data, tolerance: float | None):
    """``cabinetry.fit.fit(model, data, tolerance=, maxiter=MAXITER)`` (cabinetry 0.6's `_fit_model_pyhf`:
    the same pyhf call, so the same numbers) with pyhf's current optimizer (the caller sets the fail-fast
    Minuit, which cabinetry cannot be given): (best-fit values, Hesse uncertainties with 0 for fixed
    parameters, −2 ln L at the minimum)."""
    import pyhf

    result, _, twice_nll, result_obj = pyhf.infer.mle.fit(
        data, model, return_uncertainties=True, return_correlations=True, return_fitted_val=True,
        return_result_obj=True, maxiter=MAXITER, tolerance=tolerance)
    bestfit = np.asarray(result[:, 0], float)
    uncertainty = np.where(result_obj.minuit.fixed, 0.0, np.asarray(result[:, 1], float))
    return bestfit, uncertainty, float(twice_nll)


def _scipy_fit(model, data, errors: list[str]) -> dict:
    """Last resort: pyhf's scipy MLE (best-fit values and pulls, no uncertainties)."""
    import cabinetry
    import pyhf

    result = {"poi": model.config.poi_name, "mu_hat": None, "mu_uncertainty": None, "twice_nll": None,
              "parameters": {}, "method": None, "errors": errors}
    try:
        with _optimizer("scipy"):
            bestfit, twice_nll = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
    except pyhf.exceptions.FailedMinimization as err:
        errors.append(f"scipy: {err}")
        return result
    prefit = np.asarray(cabinetry.model_utils.prefit_uncertainties(model))
    init = np.asarray(model.config.suggested_init(), float)
    fixed = model.config.suggested_fixed()
    labels = model.config.par_names
    for i, label in enumerate(labels):
        entry = {"bestfit": float(bestfit[i]), "uncertainty": None}
        if prefit[i] > 0 and not fixed[i]:
            entry["pull"] = float((bestfit[i] - init[i]) / prefit[i])
        result["parameters"][label] = entry
    result.update(mu_hat=float(bestfit[model.config.poi_index]), twice_nll=float(twice_nll),
                  method="pyhf.infer.mle.fit (scipy; no uncertainties)")
    return result


def expected_mu_uncertainty(spec: dict, step: float = 1e-4) -> dict:
    """``{"sigma_mu", "method"}``: the expected uncertainty on the POI of the workspace ``spec``.

    On the μ = 1 Asimov data the maximum-likelihood point is the generating point θ₀, where the Hessian
    of −ln L is exactly the Fisher information: Σ_bins ∂λ∂λᵀ/λ (the Poisson terms, n = λ) plus the
    constraint terms (diagonal in pyhf). Both come from pyhf's own model (``expected_actualdata``,
    ``constraint_logpdf``) by central differences, so σ(μ̂) = sqrt((H⁻¹)_μμ) needs no fit: minuit's
    numerical Hessian fails when a few heavy MC events make the yields large and the per-bin MC-statistics
    parameters loose. This is what the ``mu_uncertainty`` objective optimises.
    """
    import pyhf

    previous = pyhf.get_backend()
    try:
        pyhf.set_backend("numpy")
        model = pyhf.Workspace(spec).model()
        theta0 = np.asarray(model.config.suggested_init(), float)
        free = np.flatnonzero(~np.asarray(model.config.suggested_fixed()))
        aux = np.asarray(model.config.auxdata, float)

        def shifted(i, h):
            pars = theta0.copy()
            pars[i] += h
            return pars

        lam = np.asarray(model.expected_actualdata(theta0), float)
        jac = np.array([(np.asarray(model.expected_actualdata(shifted(i, step)))
                         - np.asarray(model.expected_actualdata(shifted(i, -step)))) / (2 * step) for i in free])
        filled = lam > 0
        hess = (jac[:, filled] / lam[filled]) @ jac[:, filled].T

        def constraint(pars):
            return -float(np.sum(model.constraint_logpdf(aux, pars)))

        c0 = constraint(theta0)
        hess += np.diag([(constraint(shifted(i, step)) - 2 * c0 + constraint(shifted(i, -step))) / step**2
                         for i in free])
        poi = int(np.flatnonzero(free == model.config.poi_index)[0])
        sigma = float(np.sqrt(np.linalg.inv(hess)[poi, poi]))
    finally:
        pyhf.set_backend(*previous)
    return {"sigma_mu": _finite(sigma), "method": "pyhf: Fisher information at the Asimov optimum (no fit)"}
