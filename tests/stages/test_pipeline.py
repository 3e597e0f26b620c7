"""``zprime-grad run`` end to end on the small generated dataset: every stage's output is written,
and a second run reuses the cached skim and the finished optimisation."""

from __future__ import annotations

import json

import pytest

from zprime_grad.pipeline import run_chain


def test_run_writes_every_output_and_reuses_cached_stages(generated, tmp_path):
    config = generated.config
    data = config.model_dump(mode="json", exclude={"source"})
    data["optimise"]["epochs"] = 2
    config = type(config).model_validate({**data, "source": "tests/test_pipeline.py"})
    out = tmp_path / "outputs"
    outputs = run_chain(config, out, fileset=generated.fileset)

    for name in ("validation.json", "report.html", "histograms.root", "workspace_baseline.json",
                 "workspace_optimised.json", "run.json", "skim/skim.json", "optimise/params.json",
                 "optimise/optimisation.json"):
        assert (out / name).is_file(), name
    assert outputs["validation"] == str(out / "validation.json")
    validation = json.loads((out / "validation.json").read_text())
    assert validation["heldout"] == "odd"
    assert validation["improvement"] == validation["optimised"]["Z_hard"] / validation["baseline"]["Z_hard"]
    boot = validation["bootstrap"]  # validation.bootstrap replicas of the held-out MC, both cut sets on each
    assert boot["replicas"] == config.validation.bootstrap > 0 and boot["reference"] == "baseline"
    for label in ("baseline", "optimised"):
        assert boot["analyses"][label]["Z"] == pytest.approx(validation[label]["Z_hard_optimiser_model"], rel=2e-3)
        assert boot["analyses"][label]["Z_std"] > 0
    params = json.loads((out / "optimise/params.json").read_text())
    assert [p["value"] for p in params["parameters"]] == [
        validation["optimised"]["params"][p["name"]] for p in params["parameters"]
    ]
    assert "<img" in (out / "report.html").read_text()

    skim_report = (out / "skim/skim.json").stat().st_mtime_ns
    history = (out / "optimise/optimisation.json").read_text()
    run_chain(config, out, fileset=generated.fileset)
    assert (out / "skim/skim.json").stat().st_mtime_ns == skim_report  # skim reused
    assert json.loads((out / "optimise/optimisation.json").read_text())["epochs"] == json.loads(history)["epochs"]
