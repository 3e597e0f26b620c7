"""The framework carries no analysis of its own: a config without generation that names its fileset,
channels that bin their own observables, and a measurement (σ(μ)) figure of merit in validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zprime_grad.config import load_config, parse_config
from zprime_grad.errors import UserError
from zprime_grad.optimise.layout import make_layout
from zprime_grad.selection import Channel, Cut
from zprime_grad.validate.hists import Binning, fill_chunk
from zprime_grad.validate.inference import expected_mu_uncertainty

CUT = Cut("x", "x", ">", "x_threshold", 1.0, (0.0, 5.0), 1.0)
CHANNELS = (Channel("a", (CUT,), observable="obs_a"), Channel("b", (CUT,), observable="obs_b"))


def _config(tmp_path: Path, **extra):
    data = {"analysis": {"name": "toy", "processor": "zprime_ttbar"}, **extra}
    path = tmp_path / "toy.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def test_config_without_generate_and_with_a_fileset(tmp_path):
    from zprime_grad.stages.run import configured_fileset

    config = _config(tmp_path, fileset={"ds": {"files": {"../data/f.root": "Events"}, "metadata": {"xsec": 1.0}}})
    assert config.generate is None
    resolved = configured_fileset(config)
    assert resolved["ds"]["files"] == {str(tmp_path / "../data/f.root"): "Events"}
    assert resolved["ds"]["metadata"] == {"xsec": 1.0, "logical_names": {str(tmp_path / "../data/f.root"): "../data/f.root"}}
    assert configured_fileset(_config(tmp_path, fileset="sets/fs.json")) == str(tmp_path / "sets/fs.json")
    assert load_config().generate is not None  # the default config still generates its samples


def test_run_without_fileset_or_generate_names_the_config(tmp_path):
    from zprime_grad.generate import generate_dataset

    config = _config(tmp_path)
    with pytest.raises(UserError, match="toy.yaml.*no 'generate' section"):
        generate_dataset(config, tmp_path / "gen", progress=False)


def _description(columns):
    return {"process": "sig", "is_data": False, "length": 4, "n_events": 4, "key": ["d", "f", "0"],
            "weights": ["nominal"], "variations": [], "columns": sorted(columns)}


def test_layout_keeps_each_channels_observable_when_none_is_configured():
    desc = [_description({"x", "obs_a", "obs_b", "baseline", "parity", "valid"})]
    own = make_layout(desc, CHANNELS, observable=None, bins=5, value_range=(0.0, 5.0))
    assert [c.observable for c in own.channels] == ["obs_a", "obs_b"]
    assert {"obs_a", "obs_b"} <= set(own.columns)
    common = make_layout(desc, CHANNELS, observable="obs_b", bins=5, value_range=(0.0, 5.0))
    assert [c.observable for c in common.channels] == ["obs_b", "obs_b"]


def test_validation_histograms_bin_each_channels_observable():
    from zprime_grad.columns import make_chunk

    cols = {"x": [2.0, 2.0, 0.5, 3.0], "obs_a": [0.5, 1.5, 2.5, 3.5], "obs_b": [4.5, 4.5, 4.5, 0.5],
            "baseline": [1, 1, 1, 1], "parity": [1, 1, 1, 1]}
    chunk = make_chunk(cols, {"nominal": np.ones(4)}, {}, {}, buckets=(8,), dataset="d", process="sig")
    config = parse_config({"analysis": {"processor": "zprime_ttbar"},
                           "optimise": {"observable": None, "bins": 5, "range": [0.0, 5.0]}})
    binning = Binning.from_config(CHANNELS, config)
    assert binning.observable == "a: obs_a, b: obs_b"
    h = fill_chunk(chunk, binning, {"t": {"x_threshold": 1.0}})["t"]
    a = h[{"channel": "a", "process": "sig", "variation": "nominal"}].values()
    b = h[{"channel": "b", "process": "sig", "variation": "nominal"}].values()
    np.testing.assert_allclose(a, [2, 2, 0, 2, 0])  # events 0, 1, 3 pass x > 1 (weight x2: held-out half)
    np.testing.assert_allclose(b, [2, 0, 0, 0, 4])


def _spec(signal, background, lumi=0.02, stat=None):
    samples = [{"name": "sig", "data": signal, "modifiers": [
        {"name": "mu", "type": "normfactor", "data": None},
        {"name": "lumi", "type": "normsys", "data": {"hi": 1 + lumi, "lo": 1 - lumi}}]}]
    if stat is not None:
        samples[0]["modifiers"].append({"name": "stat", "type": "staterror", "data": stat})
    if background is not None:
        samples.append({"name": "bkg", "data": background, "modifiers": [
            {"name": "lumi", "type": "normsys", "data": {"hi": 1 + lumi, "lo": 1 - lumi}}]})
    total = [s + (background[i] if background else 0.0) for i, s in enumerate(signal)]
    return {"channels": [{"name": "c", "samples": samples}], "observations": [{"name": "c", "data": total}],
            "version": "1.0.0",
            "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": [
                {"name": "mu", "bounds": [[0.0, 10.0]], "inits": [1.0]}]}}]}


def test_expected_mu_uncertainty_is_the_asimov_hessian():
    """Signal only, one bin of s events, lumi κ: σ(μ)² ≈ 1/s + κ² (code4 is linear in α at first order)."""
    s, k = 400.0, 0.02
    sigma = expected_mu_uncertainty(_spec([s], None, lumi=k))["sigma_mu"]
    assert sigma == pytest.approx(np.sqrt(1 / s + k**2), rel=1e-4)
    # against the full Hessian of pyhf's −ln L (Poisson + constraints) by second differences, with a background
    import pyhf

    spec = _spec([30.0, 50.0], [100.0, 20.0], stat=[3.0, 4.0])
    pyhf.set_backend("numpy")
    model = pyhf.Workspace(spec).model()
    init = np.asarray(model.config.suggested_init(), float)
    data = np.asarray(model.expected_data(init))
    nll = lambda p: -float(model.logpdf(p, data)[0])  # noqa: E731
    h, n = 1e-3, len(init)
    unit = np.eye(n) * h
    hess = np.array([[(nll(init + unit[i] + unit[j]) - nll(init + unit[i] - unit[j]) - nll(init - unit[i] + unit[j])
                       + nll(init - unit[i] - unit[j])) / (4 * h * h) for j in range(n)] for i in range(n)])
    poi = model.config.poi_index
    exact = float(np.sqrt(np.linalg.inv(hess)[poi, poi]))
    assert expected_mu_uncertainty(spec)["sigma_mu"] == pytest.approx(exact, rel=1e-4)
    assert json.dumps(expected_mu_uncertainty(spec))  # plain JSON for validation.json


def test_one_sided_variations_are_symmetrised_in_both_models():
    from zprime_grad.optimise.layout import Layout, systematic_pairs
    from zprime_grad.model import ModelSettings, histograms_to_templates
    from zprime_grad.validate.workspace import cabinetry_config

    assert systematic_pairs(["jes_up", "jes_down", "pt_scale_up", "ME_var"]) == {
        "jes": ("jes_up", "jes_down"), "pt_scale": ("pt_scale_up", None)}
    layout = Layout(channels=(CHANNELS[0],), processes=("sig",), weight_variations=("pt_scale_up",),
                    kinematic_variations=(), edges=(0.0, 1.0, 2.0), param_names=("x_threshold",), columns=())
    settings = ModelSettings("sig", (), 0.0, (), 0.0, 0.0)
    H = np.array([[[[10.0, 20.0], [1.0, 2.0], [12.0, 19.0]]]])  # nominal, sumw2, pt_scale_up
    t = histograms_to_templates(H, layout, settings)["a"]["sig"]["histosys"]["pt_scale"]
    np.testing.assert_allclose(t["hi_data"], [12.0, 19.0])
    np.testing.assert_allclose(t["lo_data"], [8.0, 21.0])
    cfg = cabinetry_config(inputs=Path("in.root"), label="l", histogram_folder=Path("h"), channels=["a"],
                           mc_processes=["sig"], variations=["nominal", "pt_scale_up"], settings=settings,
                           lumi_uncertainty=0.0, signal_channels=["a"])
    (syst,) = [s for s in cfg["Systematics"] if s["Name"] == "pt_scale"]
    assert syst["Down"] == {"Symmetrize": True} and syst["Up"] == {"VariationPath": "pt_scale_up"}


def test_two_point_samples_are_never_added_to_the_nominal():
    from zprime_grad.columns import make_chunk
    from zprime_grad.validate.hists import variations_of

    cols = {"x": [2.0], "obs_a": [0.5], "obs_b": [0.5], "baseline": [1], "parity": [1]}
    chunk = make_chunk(cols, {"nominal": np.ones(1), "w_up": np.ones(1)}, {}, {}, buckets=(4,), dataset="d",
                       process="sig", sample_variation="ME_var")
    assert variations_of(chunk) == [("ME_var", "nominal", "nominal")]
    desc = [_description({"x", "obs_a", "obs_b", "baseline", "parity", "valid"}),
            {**_description({"x", "obs_a", "obs_b", "baseline", "parity", "valid"}), "sample_variation": "ME_var"}]
    with pytest.raises(UserError, match="two-point systematic samples \\(sig ME_var"):
        make_layout(desc, CHANNELS, observable=None, bins=5, value_range=(0.0, 5.0))
