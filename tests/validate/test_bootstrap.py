"""Bootstrap replicas of the held-out hard-cut templates (zprime_grad.validate.bootstrap): replica 0 is
the validation's own histograms, replicas are reproducible and unbiased, and replica Z0 is the model's."""

from __future__ import annotations

import numpy as np
import pytest

from tests.validate.test_validate import chunks, skim_dir  # noqa: F401  (module fixtures: the small skim)
from zprime_grad.chunks import LocalChunks
from zprime_grad.model import ModelSettings
from zprime_grad.validate.bootstrap import (Analysis, event_counts, replica_histograms, replica_significances,
                                            summarise)
from zprime_grad.validate.compare import hard_H, hard_layout, optimiser_model_spec, without_variations_of_empty
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
    H = replica_histograms(LocalChunks(chunks), analyses, layouts, REPLICAS, seed=1)
    hists = fill_from_columns(LocalChunks.from_directory(skim_dir), binning, thetas)
    for label in thetas:
        want = hard_H(hists[label], layouts[label])
        assert want[:, :, 0].sum() > 0
        np.testing.assert_allclose(without_variations_of_empty(H[label][0]), want, rtol=1e-12, atol=1e-12)
        assert H[label].shape == (REPLICAS + 1, *layouts[label].shape)


def test_replicas_are_reproducible_per_event_and_unbiased(setup, chunks):  # noqa: F811
    _, _, _, analyses, layouts = setup
    a = replica_histograms(LocalChunks(chunks), analyses, layouts, REPLICAS, seed=1)
    b = replica_histograms(LocalChunks(list(reversed(chunks))), analyses, layouts, REPLICAS, seed=1)  # order does not matter
    c = replica_histograms(LocalChunks(chunks), analyses, layouts, REPLICAS, seed=2)
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
    # both cut sets see the same replica of each event: their signal-region tt yields move together
    signal, ttbar = layouts["loose"].channel_names.index("signal"), layouts["loose"].processes.index("ttbar")
    tight, loose = (a[k][1:, ttbar, signal, 0].sum(axis=-1) for k in ("tight", "loose"))
    assert np.corrcoef(tight, loose)[0, 1] > 0.3


def test_replica_zero_significance_is_pyhf_on_the_same_templates(setup, chunks, skim_dir):  # noqa: F811
    config, binning, thetas, analyses, layouts = setup
    settings = ModelSettings.from_config(config)
    H = replica_histograms(LocalChunks(chunks), analyses, layouts, 10, seed=1)
    hists = fill_from_columns(LocalChunks.from_directory(skim_dir), binning, thetas)
    processes, variations = layouts["loose"].processes, layouts["loose"].variations
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


def test_an_empty_nominal_keeps_its_variations_empty_in_every_hard_model(tmp_path):
    """One W+jets event that only JES-up moves into the signal region: no yield to vary, so no systematic
    (as a yield ratio to the floor, cabinetry's NormPlusShape would make it a ×10⁴ normsys)."""
    from zprime_grad.selection import Channel
    from zprime_grad.validate.hists import empty_hist
    from zprime_grad.validate.workspace import workspaces

    edges = (0.0, 1.0, 2.0, 3.0)
    binning = Binning((Channel("signal", (), "x"), Channel("control", (), "x")), "x", edges)
    h = empty_hist(binning)
    fills = [("signal", "sig", "nominal", [0.5, 1.5, 1.5], 1.0), ("signal", "bkg", "nominal", [0.5, 2.5], 5.0),
             ("signal", "other", "jes_up", [1.5], 10.0),
             ("control", "bkg", "nominal", [0.5, 1.5, 2.5] * 20, 5.0), ("control", "other", "nominal", [1.5] * 30, 2.0),
             ("control", "other", "jes_up", [1.5] * 33, 2.0), ("control", "bkg", "jes_up", [0.5, 1.5, 2.5] * 21, 5.0),
             ("signal", "bkg", "jes_up", [0.5, 2.5, 2.5], 5.0), ("control", "sig", "nominal", [2.5], 0.1)]
    for channel, process, variation, x, w in fills:
        h.fill(channel=channel, process=process, variation=variation, observable=x, weight=np.full(len(x), w))
    for channel in ("signal", "control"):  # every template exists
        for process in ("sig", "bkg", "other"):
            for variation in ("nominal", "jes_up"):
                h.fill(channel=channel, process=process, variation=variation, observable=[], weight=[])
    settings = ModelSettings(signal="sig", free_backgrounds=("bkg",), xsec_uncertainty=(("other", 0.1),),
                             default_xsec_uncertainty=0.1, lumi_uncertainty=0.02, background_floor=1e-3)
    spec = workspaces({"optimised": h}, tmp_path, channels=["signal", "control"], mc_processes=["bkg", "other", "sig"],
                      settings=settings, lumi_uncertainty=0.02)["optimised"]
    mods = {(c["name"], s["name"]): {(m["name"], m["type"]): m for m in s["modifiers"]} for c in spec["channels"] for s in c["samples"]}
    empty, filled = mods[("signal", "other")], mods[("control", "other")]
    assert empty[("jes", "normsys")]["data"] == {"hi": 1.0, "lo": 1.0}  # empty nominal: no variation
    assert empty[("jes", "histosys")]["data"]["hi_data"] == empty[("jes", "histosys")]["data"]["lo_data"]
    assert filled[("jes", "normsys")]["data"]["hi"] == pytest.approx(1.1, rel=1e-4)  # filled: the variation stays
    layout = hard_layout(binning, ["bkg", "other", "sig"], ["jes_up"])
    H = hard_H(h, layout)
    assert np.all(H[1, 0, 2] == 0.0) and H[1, 1, 2].sum() == pytest.approx(66.0)
    raw = H.copy()
    raw[1, 0, 2, 1] = 10.0
    assert np.array_equal(without_variations_of_empty(raw), H)
    assert np.array_equal(without_variations_of_empty(np.stack([raw, raw]))[1], H)  # replica axes broadcast
