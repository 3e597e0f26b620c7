"""Pseudo-experiments of the JAX likelihood (``stats.toys``) against the analytic Poisson tail and pyhf's
own ``ToyCalculator``; nothing expected is hard-coded, every reference is computed here."""

from __future__ import annotations

import math

import jax
import numpy as np
import pyhf
import pytest
from scipy.stats import norm, poisson

from zprime_grad.stats import Model
from zprime_grad.stats import toys


def counting(signal: float, background: float) -> dict:
    """One bin, no systematics: the only parameter is mu."""
    return {
        "channels": [{"name": "SR", "samples": [
            {"name": "background", "data": [background], "modifiers": []},
            {"name": "signal", "data": [signal], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        ]}],
        "observations": [{"name": "SR", "data": [background]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def small(scale: float = 1.0) -> dict:
    """Two bins, a normsys and a staterror on the background; ``scale`` multiplies every yield."""
    bkg, sig, err = [50.0 * scale, 30.0 * scale], [9.0 * scale, 6.0 * scale], [3.0 * scale, 2.5 * scale]
    return {
        "channels": [{"name": "SR", "samples": [
            {"name": "background", "data": bkg, "modifiers": [
                {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.08, "lo": 0.93}},
                {"name": "staterror_SR", "type": "staterror", "data": err}]},
            {"name": "signal", "data": sig, "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        ]}],
        "observations": [{"name": "SR", "data": bkg}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def binomial_sigma(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1.0 / n) / n)


def test_counting_experiment_reproduces_the_poisson_tail():
    """Single bin without systematics: q0 grows with n above b, so P(q0 >= q0(n_obs)) = P(N >= n_obs)."""
    s, b, n_toys = 8.0, 10.0, 20_000
    model = Model.from_pyhf(counting(s, b))
    result = toys.discovery_toys(model, n_toys, seed=3)
    assert result.failed_b == result.failed_sb == 0

    for n_obs in (15, 18, 21):  # observed q0 of a count, its tail under the b-only toys vs Poisson's
        q0_obs = float(model.discovery_observed(np.array([float(n_obs)])).q0)
        k, p_toys = toys.tail_fraction(result.q0_b, q0_obs - 1e-9)
        p_exact = float(poisson.sf(n_obs - 1, b))
        assert abs(p_toys - p_exact) < 3 * binomial_sigma(p_exact, n_toys), (n_obs, p_toys, p_exact)

    # expected: the median s+b count is Poisson(s + b)'s median, p0 its tail under Poisson(b)
    median = int(poisson.median(s + b))
    p_expected = float(poisson.sf(median - 1, b))
    summary = result.summary
    assert abs(summary["p0"] - p_expected) < 3 * binomial_sigma(p_expected, n_toys)
    assert summary["n_exceed"] == int(np.count_nonzero(result.q0_b >= summary["median_q0_sb"]))
    assert summary["z"] == pytest.approx(norm.isf(summary["p0"]))


def pyhf_toy_aux(pdf, aux_row) -> dict:
    """pyhf's auxiliary-data vector split by parameter name (``auxdata_order``)."""
    out, i = {}, 0
    for name in pdf.config.auxdata_order:
        size = pdf.config.param_set(name).n_parameters
        out[name] = np.asarray(aux_row[i:i + size], float)
        i += size
    return out


def test_q0_of_each_toy_equals_pyhf():
    """The same pseudo-data (sampled by pyhf at its background-only fit) give the same q0 in both."""
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    spec = small()
    pdf = pyhf.Workspace(spec).model()
    model = Model.from_pyhf(spec)
    asimov = pdf.expected_data(pdf.config.suggested_init())
    pars = pyhf.infer.mle.fixed_poi_fit(0.0, asimov, pdf)
    np.random.seed(5)
    samples = np.asarray(pdf.make_pdf(pyhf.tensorlib.astensor(pars)).sample((40,)), float)
    n_main = pdf.config.nmaindata
    prep = model.prepare()
    aux = np.stack([np.asarray(toys.aux_from_pyhf(model.structure, prep, pyhf_toy_aux(pdf, row[n_main:])))
                    for row in samples])
    ours = toys.q0_batch(model.structure, prep, samples[:, :n_main], aux)
    assert bool(np.all(ours.ok))
    theirs = np.array([float(pyhf.infer.test_statistics.q0(0.0, row, pdf, pdf.config.suggested_init(),
                                                           pdf.config.suggested_bounds(),
                                                           pdf.config.suggested_fixed())) for row in samples])
    assert np.count_nonzero(theirs > 0.1) > 5  # the comparison sees real excesses, not only zeros
    np.testing.assert_allclose(np.asarray(ours.q0), theirs, atol=2e-5, rtol=1e-4)


def test_toy_p0_agrees_with_pyhf_toy_calculator():
    """pyhf's ToyCalculator (test_stat q0, its own toys) and the JAX toys: the same expected p0 within
    their combined statistical uncertainty, and the same b-only tail fractions."""
    pyhf.set_backend("numpy", "scipy")
    spec = small()
    pdf = pyhf.Workspace(spec).model()
    asimov = pdf.expected_data(pdf.config.suggested_init())  # mu = 1 Asimov, main and auxiliary
    n_pyhf = 150
    np.random.seed(11)
    calc = pyhf.infer.calculators.ToyCalculator(asimov, pdf, test_stat="q0", ntoys=n_pyhf, track_progress=False)
    mu0_dist, mu1_dist = calc.distributions(0.0)  # for q0 pyhf's "signal" toys are mu = 0, its "bkg" mu = 1
    # pyhf's expected p-value (ToyCalculator.expected_pvalues, whose np.percentile(interpolation=) numpy 2
    # refuses): the median over the mu = 1 toys of their tail fractions under the mu = 0 toys
    p_pyhf = float(np.percentile([float(mu0_dist.pvalue(q)) for q in mu1_dist.samples], 50.0))
    # our definition on pyhf's own samples is that number
    mine_on_pyhf = toys.significance(np.asarray(mu0_dist.samples), np.asarray(mu1_dist.samples))
    assert mine_on_pyhf["p0"] == pytest.approx(p_pyhf, abs=2.0 / n_pyhf)

    model = Model.from_pyhf(spec)
    n_jax = 10_000
    result = toys.discovery_toys(model, n_jax, seed=7)
    assert result.failed_b + result.failed_sb < 0.001 * n_jax
    ours = result.summary
    sigma = math.hypot(ours["p0_uncertainty"], mine_on_pyhf["p0_uncertainty"])
    assert abs(ours["p0"] - p_pyhf) < 3 * sigma, (ours["p0"], p_pyhf, sigma)
    for threshold in (0.5, 1.0):  # b-only tail fractions
        mine, theirs = toys.tail_fraction(result.q0_b, threshold)[1], float(mu0_dist.pvalue(threshold))
        sigma = math.hypot(binomial_sigma(mine, n_jax), binomial_sigma(theirs, n_pyhf))
        assert abs(mine - theirs) < 3 * sigma, (threshold, mine, theirs)
    lo, hi = np.quantile(np.asarray(mu1_dist.samples), [0.3, 0.7])  # the s+b median inside pyhf's 30-70 %
    assert lo <= ours["median_q0_sb"] <= hi


def test_toy_z_agrees_with_asymptotic_where_asymptotics_hold():
    """Large counts: q0 under mu = 0 is 1/2 chi2_1 and the s+b median is the Asimov q0 (Cowan et al.)."""
    model = Model.from_pyhf(small(scale=6.0))
    result = toys.discovery_toys(model, 10_000, seed=1)
    s = result.summary
    assert s["z"] is not None and s["failed"] < 10
    assert s["asymptotic_z"] == pytest.approx(float(model.discovery_significance()))
    assert abs(s["z"] - s["asymptotic_z"]) < 3 * s["z_uncertainty"], s
    assert s["agree"] == (abs(s["z"] - s["asymptotic_z"]) <= toys.AGREE_SIGMAS * s["z_uncertainty"])
    # the null distribution alone: the tail beyond q0_A is the half chi2 one
    p_half_chi2 = float(norm.sf(math.sqrt(result.summary["median_q0_sb"])))
    k, p_null = toys.tail_fraction(result.q0_b, result.summary["median_q0_sb"])
    assert abs(p_null - p_half_chi2) < 3 * binomial_sigma(p_half_chi2, result.q0_b.size)


def test_significance_with_no_toy_above_gives_a_lower_bound():
    summary = toys.significance(np.zeros(1000), np.full(1000, 25.0), q0_asimov=25.0)
    assert summary["z"] is None and summary["n_exceed"] == 0
    assert 2.0 < summary["z_lower_bound"] < 4.0
    assert toys.agreement(summary, 5.0) is True and toys.agreement(summary, 1.0) is False


def test_sampling_follows_the_constraints():
    """Auxiliary data: Gaussian pulls ~ N(x_gen, 1) for normsys and staterror, main ~ Poisson(lambda)."""
    model = Model.from_pyhf(small())
    prep = model.prepare()
    x = model.init_parameters()
    main, aux = toys.sample(model.structure, prep, x, jax.random.key(0), 20_000)
    main, aux = np.asarray(main), np.asarray(aux)
    rate = np.asarray(model.expected_data(x))
    np.testing.assert_allclose(main.mean(0), rate, rtol=0.02)
    np.testing.assert_allclose(main.var(0), rate, rtol=0.05)
    mu = model.structure.poi_index
    others = [i for i in range(aux.shape[1]) if i != mu]
    np.testing.assert_allclose(aux[:, others].mean(0), 0.0, atol=0.03)
    np.testing.assert_allclose(aux[:, others].std(0), 1.0, atol=0.03)


def test_validation_records_and_reports_the_toy_check():
    """validate/toys.py's entry (few toys: wiring) and its line in report.html."""
    from zprime_grad.validate.report import _toy
    from zprime_grad.validate.toys import toy_check

    entry = toy_check(small(scale=3.0), 300, seed=2)
    for key in ("n", "z", "z_uncertainty", "p0", "asymptotic_z", "agree"):
        assert key in entry
    assert entry["n"] == 300 and isinstance(entry["agree"], bool)
    assert entry["asymptotic_z"] == pytest.approx(float(Model.from_pyhf(small(scale=3.0)).discovery_significance()))
    line = _toy(entry)
    assert f"{entry['asymptotic_z']:.4g}" in line and ("agrees" in line or "differs" in line)
