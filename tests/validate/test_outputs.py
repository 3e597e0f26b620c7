"""The validation's outputs (issue #18): ``validation.json`` is the completion marker, written last; a new
validation first removes what killed ones left and sets the earlier validation's outputs aside (only its
own: other stages' files in the same directory stay), so a run killed midway leaves no validation.json."""

from __future__ import annotations

import json

import pytest

from zprime_grad.chunks import LocalChunks
from zprime_grad.config import override
from zprime_grad.validate import driver


class Killed(BaseException):
    """Stands for a SIGKILL in the middle of the fits: nothing catches it, nothing is cleaned up."""


@pytest.fixture(scope="module")
def setup(generated, tmp_path_factory):
    from tests.optimise.test_optimise import skim_columns
    from zprime_grad.optimise.driver import optimise

    chunks = LocalChunks.from_directory(skim_columns(generated, tmp_path_factory))
    opt = tmp_path_factory.mktemp("validate_outputs_optimise")
    optimise(override(generated.config, optimise={"epochs": 1}), chunks, opt, progress=False)
    yield chunks, opt / "params.json"
    chunks.close()


def test_a_killed_validation_leaves_no_validation_json_and_nothing_of_the_earlier_one(generated, setup, tmp_path,
                                                                                      monkeypatch):
    chunks, params = setup
    out = tmp_path / "run"
    (out / "optimise").mkdir(parents=True)  # another stage's outputs next to the validation's
    (out / "optimise" / "params.json").write_text("{}")
    (out / "run.json").write_text("{}")
    earlier = ["validation.json", "report.html", "histograms.root", "workspace_baseline.json",
               "workspace_optimised_optimiser_model.json"]
    for name in earlier:
        (out / name).write_text("an earlier validation's")
    (out / "plots").mkdir()
    (out / "plots" / "mtt.png").write_bytes(b"old")
    (out / ".validation.json.tmp4242").write_text("{torn")  # left by killed runs
    (out / ".stale-4242-1").mkdir()

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(driver, "expected_significance", killed)
    with pytest.raises(Killed):
        driver.validate(generated.config, chunks, params, out, plots=False, progress=False)
    left = {p.name for p in out.iterdir()}
    assert "validation.json" not in left and "report.html" not in left and "plots" not in left
    assert not [name for name in left if name.startswith(".")]
    assert {"optimise", "run.json"} <= left and (out / "optimise" / "params.json").read_text() == "{}"
    for name in ("histograms.root", "workspace_baseline.json"):  # this run's, written before the fits
        assert (out / name).read_bytes() != b"an earlier validation's"
    assert not (out / "workspace_optimised_optimiser_model.json").exists()  # the earlier one's is gone
    json.loads((out / "workspace_baseline.json").read_text())
