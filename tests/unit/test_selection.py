"""The cut declaration: soft and hard selection derive from one place and agree as the slope grows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zprime_grad.selection import Channel, CountCut, Cut, columns_needed, initial_params, parameters
from zprime_grad_processors.zprime_ttbar import CHANNELS, ZprimeTTbarProcessor


def random_columns(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    jet_mask = (np.arange(8) < rng.integers(2, 9, n)[:, None]).astype(np.float32)
    fat_mask = (np.arange(4) < rng.integers(1, 5, n)[:, None]).astype(np.float32)
    return {
        "baseline": (rng.random(n) < 0.9).astype(np.float32),
        "met_pt": rng.exponential(70, n).astype(np.float32),
        "lep_ht": (55 + rng.exponential(150, n)).astype(np.float32),
        "jet_mask": jet_mask, "jet_btag": (rng.random((n, 8)) * jet_mask).astype(np.float32),
        "fatjet_mask": fat_mask, "fatjet_top_score": (rng.random((n, 4)) * fat_mask).astype(np.float32),
        "fatjet_pt": ((200 + rng.exponential(300, (n, 4))) * fat_mask).astype(np.float32),
        "mtt": rng.uniform(500, 3000, n).astype(np.float32),
    }


def test_baseline_parameters_are_the_reference_analysis():
    assert ZprimeTTbarProcessor().initial_params() == {
        "met_threshold": 50.0, "lep_ht_threshold": 150.0, "btag_threshold": 0.5,
        "toptag_threshold": 0.5, "top_pt_threshold": 500.0,
    }
    assert [c.name for c in CHANNELS] == ["signal", "ttbar_cr", "wjets_cr"]
    assert columns_needed(CHANNELS) <= set(random_columns(10))


def test_channels_are_mutually_exclusive_for_any_thresholds():
    cols = random_columns()
    rng = np.random.default_rng(1)
    trials = [initial_params(CHANNELS)]
    trials += [{name: rng.uniform(*p.bounds) for name, p in parameters(CHANNELS).items()} for _ in range(5)]
    for params in trials:
        masks = np.stack([ch.hard_mask(cols, params) for ch in CHANNELS])
        assert masks.sum(axis=0).max() <= 1
    assert np.stack([ch.hard_mask(cols, trials[0]) for ch in CHANNELS]).any(axis=1).all()


def test_hard_mask_matches_a_hand_written_reference_selection():
    cols, p = random_columns(), initial_params(CHANNELS)
    n_b = ((cols["jet_btag"] > 0.5) & (cols["jet_mask"] > 0)).sum(axis=1)
    n_t = ((cols["fatjet_top_score"] > 0.5) & (cols["fatjet_pt"] > 500) & (cols["fatjet_mask"] > 0)).sum(axis=1)
    common = (cols["baseline"] > 0) & (cols["met_pt"] > 50) & (cols["lep_ht"] > 150)
    assert np.array_equal(CHANNELS[0].hard_mask(cols, p), common & (n_b >= 1) & (n_t == 1))
    assert np.array_equal(CHANNELS[1].hard_mask(cols, p), common & (n_b >= 1) & (n_t == 0))
    assert np.array_equal(CHANNELS[2].hard_mask(cols, p), common & (n_b == 0))


def test_soft_selection_tends_to_the_hard_selection_as_the_slope_grows():
    cols, p = random_columns(), initial_params(CHANNELS)
    for ch in CHANNELS:
        hard = ch.hard_mask(cols, p).astype(float)
        gaps = [float(jnp.mean(jnp.abs(ch.soft_weight(cols, p, slope) - hard))) for slope in (1, 10, 100, 1e4)]
        assert all(a > b for a, b in zip(gaps, gaps[1:])), (ch.name, gaps)
        assert gaps[-1] < 1e-3, (ch.name, gaps)
        soft = np.asarray(ch.soft_weight(cols, p, 1e4))
        assert ((soft > 0.5) == (hard > 0)).mean() > 0.999


def test_soft_weight_has_a_finite_nonzero_gradient_in_every_parameter():
    cols, p0 = random_columns(), initial_params(CHANNELS)

    def signal_yield(params):
        return jnp.sum(CHANNELS[0].soft_weight(cols, params, 20.0))

    grad = jax.grad(signal_yield)({k: jnp.float64(v) for k, v in p0.items()})
    for name, g in grad.items():
        assert np.isfinite(g) and g != 0, name


def test_declarations_are_validated():
    with pytest.raises(ValueError, match="direction"):
        Cut("x", "met_pt", ">=", "t", 1.0, (0.0, 2.0), 1.0)
    with pytest.raises(ValueError, match="bounds"):
        Cut("x", "met_pt", ">", "t", 5.0, (0.0, 2.0), 1.0)
    with pytest.raises(ValueError, match="at_least"):
        CountCut("n", "jet_mask", ())
    a = Channel("a", (Cut("met", "met_pt", ">", "t", 50.0, (0.0, 100.0), 10.0),))
    b = Channel("b", (Cut("met", "met_pt", ">", "t", 60.0, (0.0, 100.0), 10.0),))
    with pytest.raises(ValueError, match="declared twice"):
        parameters([a, b])
