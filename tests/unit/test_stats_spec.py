"""Reading pyhf specs: user errors name the file and field; the significance CLI prints the numbers pyhf gets."""

from __future__ import annotations

import copy
import json

import numpy as np
import pyhf
import pytest

from zprime_grad import cli
from zprime_grad.errors import UserError
from zprime_grad.stats import Model


def spec() -> dict:
    return {
        "channels": [{"name": "SR", "samples": [
            {"name": "signal", "data": [5.0, 3.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": [20.0, 12.0], "modifiers": [
                {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                {"name": "staterror_SR", "type": "staterror", "data": [1.0, 0.8]}]},
        ]}],
        "observations": [{"name": "SR", "data": [29.0, 14.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def broken(edit) -> dict:
    s = copy.deepcopy(spec())
    edit(s)
    return s


@pytest.mark.parametrize(
    "bad, message",
    [
        (broken(lambda s: s["channels"][0]["samples"][0].update(data=[5.0])), "signal': data has 1 bins"),
        (broken(lambda s: s["channels"][0]["samples"][0]["modifiers"].append(
            {"name": "mu", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}})), "incompatible types"),
        (broken(lambda s: s["channels"][0]["samples"][1]["modifiers"][0]["data"].update(lo=-0.1)), "positive"),
        (broken(lambda s: s["measurements"][0]["config"].update(poi="bkg_norm")), "not a normfactor"),
        (broken(lambda s: s["channels"][0]["samples"][0]["modifiers"].append(
            {"name": "lumi", "type": "lumi", "data": None})), "lumi needs 'auxdata'"),
        (broken(lambda s: s["channels"][0]["samples"][1]["modifiers"][1].update(data=[1.0])), "staterror_SR"),
        (broken(lambda s: s["channels"][0]["samples"][1]["modifiers"].append({"name": "x", "type": "bogus"})),
         "channels\\[0\\].samples\\[1\\].modifiers"),
        (broken(lambda s: s["channels"][0]["samples"][1]["modifiers"][1].update(data=[1.0, float("nan")])), "non-finite"),
    ],
)
def test_invalid_specs_raise_user_errors_naming_the_field(bad, message):
    with pytest.raises(UserError, match=message):
        Model.from_pyhf(bad, source="ws.json")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="nope.json: workspace file not found"):
        Model.from_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="bad.json: not valid JSON"):
        Model.from_file(bad)


def test_nominal_templates_layout_and_packing():
    model = Model.from_pyhf(spec())
    t = model.nominal_templates()
    assert set(t["SR"]["background"]) == {"data", "normsys", "histosys", "staterror", "shapesys"}
    np.testing.assert_array_equal(t["SR"]["background"]["staterror"]["staterror_SR"], [1.0, 0.8])
    assert float(t["SR"]["background"]["normsys"]["bkg_norm"]["hi"]) == 1.1
    packed = model.pack(t)
    assert packed.shape == (model.packing.size,)
    np.testing.assert_array_equal(model.pack(model.unpack(packed)), packed)
    with pytest.raises(UserError, match="packed templates"):
        model.discovery_significance(packed[:-1])


def test_significance_cli_prints_pyhf_numbers(tmp_path, capsys):
    path = tmp_path / "workspace.json"
    path.write_text(json.dumps(spec()))
    assert cli.main(["significance", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"Z", "q0", "mu_hat", "expected"} <= set(result)

    workspace = pyhf.Workspace(spec())
    pdf = workspace.model()
    init, bounds, fixed = pdf.config.suggested_init(), pdf.config.suggested_bounds(), pdf.config.suggested_fixed()
    q0, (_, free) = pyhf.infer.test_statistics.q0(0.0, workspace.data(pdf), pdf, init, bounds, fixed, return_fitted_pars=True)
    np.testing.assert_allclose(result["q0"], float(q0), rtol=1e-3)
    np.testing.assert_allclose(result["Z"], np.sqrt(float(q0)), rtol=1e-3)
    np.testing.assert_allclose(result["mu_hat"], float(free[pdf.config.poi_index]), rtol=1e-3)
    q0_expected = pyhf.infer.test_statistics.q0(0.0, pdf.expected_data(init), pdf, init, bounds, fixed)
    np.testing.assert_allclose(result["expected"]["Z"], np.sqrt(float(q0_expected)), rtol=1e-3)


def test_significance_cli_reports_user_errors(tmp_path, capsys):
    assert cli.main(["significance", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: workspace file not found" in capsys.readouterr().err
