"""The JAX HistFactory against pyhf (and cabinetry) on the same specs: likelihood, q0/Z0, CLs, limits.

pyhf is the reference and runs in the tests; nothing expected is hard-coded.
"""

from __future__ import annotations

import pathlib

import cabinetry
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

from zprime_grad.stats import Model

RTOL_Z = 1e-3


# ---------------------------------------------------------------------------------------------- specs


def counting_spec() -> dict:
    """1 bin, signal with mu, background with a normsys."""
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {"name": "signal", "data": [6.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
                    {
                        "name": "background",
                        "data": [20.0],
                        "modifiers": [{"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.15, "lo": 0.9}}],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [29.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def cabinetry_spec(folder: pathlib.Path) -> dict:
    """2 channels x 3 bins: normfactor + normsys + histosys (NormPlusShape) + staterror, built by cabinetry."""
    rng = np.random.default_rng(3)
    bins = [0.0, 1.0, 2.0, 3.0]
    regions = ["SR", "CR"]
    histograms = folder / "histograms"
    histograms.mkdir(parents=True, exist_ok=True)
    config = {
        "General": {"Measurement": "meas", "POI": "mu", "InputPath": str(folder / "{SamplePath}"),
                    "HistogramFolder": str(histograms)},
        "Regions": [{"Name": r, "Variable": "x", "Binning": bins} for r in regions],
        "Samples": [
            {"Name": "data", "Tree": "t", "SamplePath": "data.root", "Data": True},
            {"Name": "signal", "Tree": "t", "SamplePath": "signal.root"},
            {"Name": "ttbar", "Tree": "t", "SamplePath": "ttbar.root"},
            {"Name": "wjets", "Tree": "t", "SamplePath": "wjets.root"},
        ],
        "NormFactors": [{"Name": "mu", "Samples": "signal", "Nominal": 1, "Bounds": [0, 10]}],
        "Systematics": [
            {"Name": "xsec_ttbar", "Type": "Normalization", "Samples": "ttbar",
             "Up": {"Normalization": 0.08}, "Down": {"Normalization": -0.06}},
            {"Name": "jes", "Type": "NormPlusShape", "Samples": ["ttbar", "signal"],
             "Up": {"SamplePath": "up.root"}, "Down": {"SamplePath": "down.root"}},
        ],
    }

    def save(region, sample, yields, stdev, suffix=""):
        cabinetry.histo.Histogram.from_arrays(bins, yields, stdev).save(histograms / f"{region}_{sample}{suffix}")

    for region in regions:
        nominal = {"signal": rng.uniform(3, 9, 3), "ttbar": rng.uniform(40, 80, 3), "wjets": rng.uniform(20, 40, 3)}
        for sample, yields in nominal.items():
            save(region, sample, yields, 0.3 * np.sqrt(yields))
        for sample in ("ttbar", "signal"):
            save(region, sample, nominal[sample] * rng.uniform(1.02, 1.12, 3), 0.3 * np.sqrt(nominal[sample]), "_jes_Up")
            save(region, sample, nominal[sample] * rng.uniform(0.88, 0.99, 3), 0.3 * np.sqrt(nominal[sample]), "_jes_Down")
        observed = np.round(sum(nominal.values()) * rng.uniform(0.95, 1.15, 3))
        save(region, "data", observed, np.sqrt(observed))
    cabinetry.configuration.validate(config)
    return cabinetry.workspace.build(config)


def shapesys_spec() -> dict:
    """shapesys (Poisson-constrained) on two backgrounds, lumi, and a measurement-fixed normsys."""
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {"name": "signal", "data": [4.0, 7.0, 3.0], "modifiers": [
                        {"name": "mu", "type": "normfactor", "data": None},
                        {"name": "lumi", "type": "lumi", "data": None},
                        {"name": "sig_theory", "type": "normsys", "data": {"hi": 1.1, "lo": 0.92}},
                    ]},
                    {"name": "background", "data": [30.0, 25.0, 12.0], "modifiers": [
                        {"name": "lumi", "type": "lumi", "data": None},
                        {"name": "bkg_shape_SR", "type": "shapesys", "data": [3.0, 4.0, 2.5]},
                        {"name": "fixed_sys", "type": "normsys", "data": {"hi": 1.2, "lo": 0.85}},
                    ]},
                ],
            },
            {
                "name": "CR",
                "samples": [
                    {"name": "background", "data": [80.0, 60.0], "modifiers": [
                        {"name": "lumi", "type": "lumi", "data": None},
                        {"name": "bkg_shape_CR", "type": "shapesys", "data": [6.0, 0.0]},
                    ]},
                ],
            },
        ],
        "observations": [{"name": "SR", "data": [38.0, 35.0, 13.0]}, {"name": "CR", "data": [77.0, 64.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.03], "bounds": [[0.5, 1.5]], "inits": [1.0]},
            {"name": "fixed_sys", "fixed": True, "inits": [0.4]},
        ]}}],
        "version": "1.0.0",
    }


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def precise_pyhf():
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    yield
    pyhf.set_backend("numpy", "scipy")


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, dict]:
    return {
        "counting": counting_spec(),
        "cabinetry": cabinetry_spec(tmp_path_factory.mktemp("cabinetry")),
        "shapesys": shapesys_spec(),
    }


@pytest.fixture(scope="module")
def models(specs) -> dict[str, tuple[Model, pyhf.pdf.Model, pyhf.Workspace]]:
    out = {}
    for name, spec in specs.items():
        workspace = pyhf.Workspace(spec)
        out[name] = (Model.from_pyhf(spec), workspace.model(), workspace)
    return out


def pyhf_asimov(pdf: pyhf.pdf.Model, mu: float) -> np.ndarray:
    pars = np.asarray(pdf.config.suggested_init(), float)
    pars[pdf.config.poi_index] = mu
    return np.asarray(pdf.expected_data(pars))


def pyhf_q0(pdf: pyhf.pdf.Model, data) -> float:
    return float(pyhf.infer.test_statistics.q0(
        0.0, data, pdf, pdf.config.suggested_init(), pdf.config.suggested_bounds(), pdf.config.suggested_fixed()
    ))


def to_pyhf_vector(model: Model, pdf: pyhf.pdf.Model, x) -> np.ndarray:
    values = model.pyhf_parameters(x)
    out = np.zeros(pdf.config.npars)
    for name, v in values.items():
        out[pdf.config.par_slice(name)] = np.asarray(v)
    return out


NAMES = ["counting", "cabinetry", "shapesys"]


# ------------------------------------------------------------------------------------------- tests


def test_cabinetry_spec_has_the_promised_modifiers(specs):
    types = {m["type"] for ch in specs["cabinetry"]["channels"] for s in ch["samples"] for m in s["modifiers"]}
    assert {"normfactor", "normsys", "histosys", "staterror"} <= types
    assert len(specs["cabinetry"]["channels"]) == 2


@pytest.mark.parametrize("name", NAMES)
def test_logpdf_equals_pyhf_at_random_parameters(models, name):
    model, pdf, workspace = models[name]
    rng = np.random.default_rng(11)
    data = workspace.data(pdf)
    main = np.asarray(data[: pdf.config.nmaindata])
    x0 = np.asarray(model.init_parameters())
    fixed = np.zeros(x0.shape, bool)  # pyhf-fixed parameters (incl. shapesys bins without uncertainty) stay put
    pyhf_fixed = np.asarray(pdf.config.suggested_fixed())
    for name in model.parameter_names:
        fixed[model.parameter_slice(name)] = pyhf_fixed[pdf.config.par_slice(name)]
    for _ in range(4):
        x = x0 + rng.normal(0.0, 0.6, x0.shape)  # pulls beyond +-1 exercise the extrapolation branches
        x[fixed] = x0[fixed]
        x[model.structure.poi_index] = rng.uniform(0.0, 2.0)
        pars = to_pyhf_vector(model, pdf, x)
        np.testing.assert_allclose(model.expected_data(x), pdf.expected_actualdata(pars), rtol=1e-10)
        np.testing.assert_allclose(float(model.logpdf(x, main)), float(pdf.logpdf(pars, data)[0]), rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_asimov_discovery_q0_equals_pyhf(models, name):
    model, pdf, _ = models[name]
    reference = pyhf_q0(pdf, pyhf_asimov(pdf, 1.0))
    q0 = float(model.discovery_q0())
    z = float(model.discovery_significance())
    assert reference > 0.5  # a non-trivial test
    np.testing.assert_allclose(q0, reference, rtol=RTOL_Z)
    np.testing.assert_allclose(z, np.sqrt(reference), rtol=RTOL_Z)


def test_cabinetry_significance_agrees(models):
    model, pdf, _ = models["cabinetry"]
    spec_model, asimov = cabinetry.model_utils.model_and_data(model.to_pyhf(), asimov=True)
    result = cabinetry.fit.significance(spec_model, asimov)
    np.testing.assert_allclose(float(model.discovery_significance()), result.expected_significance, rtol=RTOL_Z)


@pytest.mark.parametrize("name", NAMES)
def test_observed_discovery_equals_pyhf(models, name):
    model, pdf, workspace = models[name]
    data = workspace.data(pdf)
    q0_ref, (_, free_fit) = pyhf.infer.test_statistics.q0(
        0.0, data, pdf, pdf.config.suggested_init(), pdf.config.suggested_bounds(), pdf.config.suggested_fixed(),
        return_fitted_pars=True,
    )
    result = model.discovery_observed()
    np.testing.assert_allclose(float(result.q0), float(q0_ref), rtol=RTOL_Z, atol=1e-6)
    np.testing.assert_allclose(float(result.mu_hat), float(free_fit[pdf.config.poi_index]), rtol=1e-4, atol=1e-5)


def test_round_trip_through_pyhf_spec(models, specs):
    model, _, _ = models["cabinetry"]
    templates = model.nominal_templates()
    scaled = {
        ch: {s: dict(t, data=t["data"] * 1.5, staterror={k: 1.2 * v for k, v in t["staterror"].items()})
             for s, t in samples.items()}
        for ch, samples in templates.items()
    }
    spec = model.to_pyhf(scaled)
    rebuilt = Model.from_pyhf(spec)
    assert rebuilt.structure == model.structure
    np.testing.assert_allclose(
        np.asarray(rebuilt.nominal_templates()["SR"]["ttbar"]["data"]), 1.5 * np.asarray(templates["SR"]["ttbar"]["data"])
    )
    pdf = pyhf.Workspace(spec).model()
    np.testing.assert_allclose(float(rebuilt.discovery_q0()), pyhf_q0(pdf, pyhf_asimov(pdf, 1.0)), rtol=RTOL_Z)
    assert abs(float(rebuilt.discovery_q0()) / float(model.discovery_q0()) - 1) > 0.05  # the change matters
    np.testing.assert_allclose(jnp.asarray(model.discovery_q0(scaled)), rebuilt.discovery_q0(), rtol=1e-10)
