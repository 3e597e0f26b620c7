"""Soft cuts, soft multiplicity and the weighted binned KDE: definitions, hard limits, dense = local."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from zprime_grad import soft


@pytest.fixture(scope="module")
def events():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(1.0, 1.5, 3000), [-50.0, 50.0, 0.0, 4.0]])  # far under/overflow, exact edges
    w = rng.uniform(-0.2, 1.5, x.size)  # some negative weights, as from NLO generators
    return jnp.asarray(x), jnp.asarray(w)


EDGES = np.linspace(-2.0, 4.0, 21)


# -------------------------------------------------------------------------------------------- cuts


def test_sigmoid_cut_values_and_hard_limit():
    x = jnp.asarray([-1.0, 0.5, 0.9, 1.1, 3.0])
    np.testing.assert_allclose(soft.sigmoid_cut(x, 1.0, 0.5), 1 / (1 + np.exp(-(np.asarray(x) - 1.0) / 0.5)))
    np.testing.assert_allclose(soft.sigmoid_cut(x, 1.0, 0.5, keep="below"), 1 - soft.sigmoid_cut(x, 1.0, 0.5))
    np.testing.assert_array_equal(soft.sigmoid_cut(x, 1.0, 1e-6) > 0.5, np.asarray(x) > 1.0)
    np.testing.assert_array_equal(soft.hard_cut(x, 1.0), (np.asarray(x) > 1.0).astype(float))
    np.testing.assert_array_equal(soft.hard_cut(x, 1.0, "below"), (np.asarray(x) < 1.0).astype(float))
    with pytest.raises(ValueError):
        soft.sigmoid_cut(x, 1.0, 0.5, keep="sideways")


def test_sigmoid_cut_gradient_w_r_t_threshold():
    g = jax.grad(lambda t: jnp.sum(soft.sigmoid_cut(jnp.asarray([0.0, 1.0]), t, 0.5)))(0.5)
    p = 1 / (1 + np.exp(-(np.array([0.0, 1.0]) - 0.5) / 0.5))
    np.testing.assert_allclose(g, -np.sum(p * (1 - p)) / 0.5)


def test_count_distribution_equals_enumeration():
    rng = np.random.default_rng(0)
    probs = rng.uniform(size=(4, 5))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
    dist = np.asarray(soft.count_distribution(jnp.asarray(probs), 3, jnp.asarray(mask)))
    for e in range(4):
        p = probs[e][mask[e]]
        exact = np.zeros(4)
        for passed in itertools.product([0, 1], repeat=p.size):
            exact[min(sum(passed), 3)] += np.prod([pi if k else 1 - pi for pi, k in zip(p, passed)])
        np.testing.assert_allclose(dist[e], exact, atol=1e-14)
    np.testing.assert_allclose(soft.at_least(jnp.asarray(probs), 2, jnp.asarray(mask)), dist[:, 2:].sum(axis=1))


def test_at_least_is_the_hard_multiplicity_cut_for_hard_probabilities():
    passed = np.array([[1, 1, 0, 1, 0], [0, 0, 1, 0, 0], [1, 1, 1, 1, 1]], float)
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    for k in range(6):
        hard = ((passed * mask).sum(axis=1) >= k).astype(float)
        np.testing.assert_array_equal(soft.at_least(jnp.asarray(passed), k, jnp.asarray(mask)), hard)
    np.testing.assert_array_equal(soft.expected_count(jnp.asarray(passed), jnp.asarray(mask)), (passed * mask).sum(axis=1))


def test_at_least_is_smooth_and_vmap_safe():
    probs = jnp.asarray([[0.9, 0.2, 0.7, 0.4]])
    grad = jax.grad(lambda p: soft.at_least(p, 2).sum())(probs)
    eps = 1e-6
    fd = [(soft.at_least(probs.at[0, i].add(eps), 2) - soft.at_least(probs.at[0, i].add(-eps), 2))[0] / (2 * eps)
          for i in range(4)]
    np.testing.assert_allclose(grad[0], fd, rtol=1e-6)
    batched = jax.vmap(lambda p: soft.at_least(p, 2))(probs)
    np.testing.assert_allclose(batched, soft.at_least(probs, 2))


# --------------------------------------------------------------------------------------------- KDE


def kde_reference(x, w, edges, h):
    """Straight from the definition, in numpy/scipy: per-event CDF differences, outer edges at +-inf."""
    e = np.asarray(edges, float).copy()
    e[0], e[-1] = -np.inf, np.inf
    p = np.diff(norm.cdf((e[None, :] - np.asarray(x)[:, None]) / h), axis=1)
    w = np.asarray(w)
    return w @ p, (w**2) @ (p**2)


@pytest.mark.parametrize("method", ["dense", "local"])
@pytest.mark.parametrize("fraction", [0.05, 0.3, 1.0])
def test_kde_matches_the_definition(events, method, fraction):
    x, w = events
    h = fraction * (EDGES[1] - EDGES[0])
    yields, sumw2 = soft.kde_histogram(x, w, EDGES, fraction, relative=True, method=method)
    ref_yields, ref_sumw2 = kde_reference(x, w, EDGES, h)
    total = float(np.sum(np.abs(w)))
    np.testing.assert_allclose(yields, ref_yields, atol=1e-9 * total)
    np.testing.assert_allclose(sumw2, ref_sumw2, atol=1e-9 * total)
    np.testing.assert_allclose(float(jnp.sum(yields)), float(jnp.sum(w)), rtol=1e-12)  # integrates to sum w


def test_dense_and_local_agree_on_uneven_bins_and_traced_bandwidth(events):
    x, w = events
    edges = np.array([-2.0, -1.0, -0.5, 0.0, 0.2, 0.4, 0.8, 1.2, 2.0, 3.0, 4.0])
    window = soft.kde_window(edges, 0.12)
    assert window < edges.size - 1  # really local

    @jax.jit
    def both(h):
        return (soft.kde_histogram(x, w, edges, h, method="dense"),
                soft.kde_histogram(x, w, edges, h, method="local", window=window))

    for h in (0.03, 0.12):
        (yd, sd), (yl, sl) = both(h)
        np.testing.assert_allclose(yl, yd, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(sl, sd, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(float(jnp.sum(yl)), float(jnp.sum(w)), rtol=1e-12)
    with pytest.raises(ValueError, match="window"):
        jax.jit(lambda h: soft.kde_histogram(x, w, edges, h, method="local"))(0.1)


def test_sumw2_is_the_variance_of_the_kde_estimator():
    # One event split evenly across two bins has Var = (w/2)^2 + (w/2)^2 per bin, not w^2/2.
    x, w = jnp.asarray([1.0]), jnp.asarray([2.0])
    yields, sumw2 = soft.kde_histogram(x, w, np.array([0.0, 1.0, 2.0]), 0.3, method="dense")
    np.testing.assert_allclose(yields, [1.0, 1.0])
    np.testing.assert_allclose(sumw2, [1.0, 1.0])


def test_narrow_bandwidth_gives_the_hard_histogram(events):
    x, w = events
    x = x + 1e-3  # keep events off the edges
    hard_yields, hard_sumw2 = soft.hard_histogram(x, w, EDGES)
    xc = np.clip(np.asarray(x), EDGES[0], np.nextafter(EDGES[-1], -np.inf))
    np.testing.assert_allclose(hard_yields, np.histogram(xc, EDGES, weights=np.asarray(w))[0], atol=1e-12)
    np.testing.assert_allclose(hard_sumw2, np.histogram(xc, EDGES, weights=np.asarray(w) ** 2)[0], atol=1e-12)
    yields, sumw2 = soft.kde_histogram(x, w, EDGES, 1e-9, method="local")
    np.testing.assert_allclose(yields, hard_yields, atol=1e-9)
    np.testing.assert_allclose(sumw2, hard_sumw2, atol=1e-9)


def test_kde_gradient_w_r_t_a_cut_equals_finite_differences(events):
    x, w = events

    def total_in_bin(cut, method):
        weight = w * soft.sigmoid_cut(x, cut, 0.3)
        yields, sumw2 = soft.kde_histogram(x, weight, EDGES, 0.2, relative=True, method=method)
        return yields[12] + 0.1 * sumw2[5]

    for method in ("dense", "local"):
        value = jax.jit(total_in_bin, static_argnums=1)  # one compilation instead of eager op-by-op dispatch
        g = jax.jit(jax.grad(total_in_bin), static_argnums=1)(0.4, method)
        fd = (value(0.4 + 1e-5, method) - value(0.4 - 1e-5, method)) / 2e-5
        np.testing.assert_allclose(g, fd, rtol=1e-6)
        assert abs(float(g)) > 1e-3


def test_kde_window_size():
    assert soft.kde_window(np.linspace(0, 10, 11), 0.2) == math.ceil(2 * 6 * 0.2) + 1
    assert soft.kde_window(np.linspace(0, 10, 11), 0.25, relative=True) == 4


def test_float32_bin_masses_keep_relative_precision_far_from_the_event():
    """The bin masses come from each edge's Gaussian tail, not from a difference of CDFs near 1: in
    float32 a bin 4 bandwidths away keeps float32's relative precision instead of losing it all."""
    edges = np.linspace(0.0, 10.0, 11)
    x = np.array([0.5, 3.3, 9.99, -2.0, 12.0])
    z = np.concatenate([np.full((len(x), 1), -np.inf), (edges[1:-1][None, :] - x[:, None]) / 0.7,
                        np.full((len(x), 1), np.inf)], axis=1)
    lo, hi = z[:, :-1], z[:, 1:]  # scipy in float64: the CDF below the event, the survival function above
    exact = np.where(hi <= 0, norm.cdf(hi) - norm.cdf(lo), np.where(lo >= 0, norm.sf(lo) - norm.sf(hi),
                                                                    1.0 - norm.cdf(lo) - norm.sf(hi)))
    tails = np.where(exact > 1e-30, exact, np.nan)
    p32 = np.asarray(soft.bin_probabilities(jnp.asarray(x, jnp.float32), jnp.asarray(edges, jnp.float32),
                                            jnp.float32(0.7)), float)
    assert np.allclose(p32.sum(axis=1), 1.0, rtol=1e-6)
    rel = np.abs(p32 - exact) / tails
    assert np.nanmax(rel[exact > 1e-30]) < 1e-5  # float32 erfc: a few ulp, also 10 bandwidths out
    assert np.nanmin(exact[exact > 1e-30]) < 1e-20  # the check reaches far tails


def test_event_sums_accumulate_float32_slabs_in_float64():
    rng = np.random.default_rng(3)
    n = soft.EVENT_SLAB + 1000  # two slabs
    a, b = rng.random((3, n)), rng.random((n, 4))
    got = soft.event_sum(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), jnp.float64)
    assert got.dtype == jnp.float64
    exact = a.astype(np.float32).astype(float) @ b.astype(np.float32).astype(float)
    assert np.allclose(np.asarray(got), exact, rtol=1e-6)
    assert np.array_equal(np.asarray(soft.event_sum(jnp.asarray(a), jnp.asarray(b))), np.asarray(jnp.asarray(a) @ jnp.asarray(b)))


def test_float32_kde_equals_the_float64_kde_to_float32_precision(events):
    x, w = events
    edges = np.linspace(float(np.min(x)), float(np.max(x)), 8)
    y64, s64 = soft.kde_histogram(jnp.asarray(x), jnp.asarray(w), edges, 0.3, relative=True, method="dense")
    y32, s32 = soft.kde_histogram(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), edges, 0.3,
                                  relative=True, method="dense", accumulate=jnp.float64)
    assert y32.dtype == jnp.float64
    assert np.allclose(y32, y64, rtol=2e-6) and np.allclose(s32, s64, rtol=2e-6)
    assert not np.array_equal(np.asarray(y32), np.asarray(y64))  # the float32 path really ran
