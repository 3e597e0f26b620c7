"""Bootstrap replicas of the held-out hard-cut templates (zprime_grad.validate.bootstrap): replica 0 is
the validation's own histograms, replicas are reproducible and unbiased, and replica Z0 is the model's."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_validate import chunks, skim_dir  # noqa: F401  (module fixtures: the small skim)
from zprime_grad.optimise.model import ModelSettings
from zprime_grad.validate.bootstrap import (Analysis, event_counts, replica_histograms, replica_significances,
                                            summarise)
from zprime_grad.validate.compare import hard_H, hard_layout, optimiser_model_spec
from zprime_grad.validate.fill import fill_from_columns
from zprime_grad.validate.hists import NOMINAL, Binning, variations_of
from zprime_grad.validate.inference import expected_significance

REPLICAS = 60


@pytest.fixture(scope="module")
def setup(generated, chunks):  # noqa: F811
    from zprime_grad.skim.pipeline import make_processor, skim_options

    config = generated.config
    analysis = make_processor(config, skim_options(config))
    binning = Binning.from_config(analysis.channels, config)
    theta0 = analysis.initial_params()
    thetas = {"loose": theta0, "tight": {**theta0, "top_pt_threshold": 650.0, "met_threshold": 60.0}}
    analyses = {k: Analysis(binning, v) for k, v in thetas.items()}
    processes = sorted({c.process for c in chunks if not c.is_data})
    variations = sorted({v for c in chunks for v, _, _ in variations_of(c)} - {NOMINAL})
    layouts = {k: hard_layout(binning, processes, variations) for k in analyses}
    return config, binning, thetas, analyses, layouts


def test_replica_zero_is_the_validation_histograms(setup, chunks, skim_dir):  # noqa: F811
    _, binning, thetas, analyses, layouts = setup
    H = replica_histograms(chunks, analyses, layouts, REPLICAS, seed=1)
    hists = fill_from_columns(skim_dir, binning, thetas)
    for label in thetas:
        want = hard_H(hists[label], layouts[label])
        assert want[:, :, 0].sum() > 0
        np.testing.assert_allclose(H[label][0], want, rtol=1e-12, atol=1e-12)
        assert H[label].shape == (REPLICAS + 1, *layouts[label].shape)


def test_replicas_are_reproducible_per_event_and_unbiased(setup, chunks):  # noqa: F811
    _, _, _, analyses, layouts = setup
    a = replica_histograms(chunks, analyses, layouts, REPLICAS, seed=1)
    b = replica_histograms(list(reversed(chunks)), analyses, layouts, REPLICAS, seed=1)  # order does not matter
    c = replica_histograms(chunks, analyses, layouts, REPLICAS, seed=2)
    for label in analyses:
        np.testing.assert_allclose(a[label], b[label], rtol=1e-12, atol=1e-12)
        assert not np.allclose(a[label][1:], c[label][1:])
    assert np.array_equal(event_counts(chunks[0], 5, 7), event_counts(chunks[0], 5, 7))
    assert np.all(event_counts(chunks[0], 5, 7)[0] == 1.0)
    # Poisson(1) counts: the replicas' mean yield is the nominal one within its standard error
    yields = a["loose"][:, :, :, 0].sum(axis=(2, 3))  # [replica, process]
    mean, err = yields[1:].mean(axis=0), yields[1:].std(axis=0, ddof=1) / np.sqrt(REPLICAS)
    assert np.all(np.abs(mean - yields[0]) < 4 * err + 1e-12)
    selected = yields[0] > 0
    assert selected.sum() >= 2 and np.all(yields[1:, selected].std(axis=0) > 0)
    # the tight cuts select a subset of the loose ones, event by event, in every replica
    assert np.all(a["tight"][:, :, :, 0].sum(axis=(2, 3)) <= yields + 1e-9)


def test_replica_zero_significance_is_pyhf_on_the_same_templates(setup, chunks, skim_dir):  # noqa: F811
    config, binning, thetas, analyses, layouts = setup
    settings = ModelSettings.from_config(config)
    H = replica_histograms(chunks, analyses, layouts, 10, seed=1)
    hists = fill_from_columns(skim_dir, binning, thetas)
    processes, variations = layouts["loose"].processes, layouts["loose"].weight_variations
    z = {label: replica_significances(H[label], layouts[label], settings) for label in analyses}
    for label in analyses:
        spec = optimiser_model_spec(hists[label], binning, processes, variations, settings)
        assert z[label][0] == pytest.approx(expected_significance(spec)["Z"], rel=2e-3)
        assert np.all(np.isfinite(z[label])) and np.std(z[label][1:]) > 0
    summary = summarise(z, "loose")
    assert summary["loose"]["ratio_to_loose"] == 1.0 and summary["loose"]["fraction_above_reference"] == 0.0
    ratio = z["tight"][1:] / z["loose"][1:]
    assert summary["tight"]["ratio_std"] == pytest.approx(np.std(ratio, ddof=1))
    lo, hi = summary["tight"]["ratio_interval_68"]
    assert lo <= np.median(ratio) <= hi
    assert summary["tight"]["fraction_above_reference"] == pytest.approx(np.mean(ratio > 1.0))
