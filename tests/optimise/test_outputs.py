"""The optimiser's output directory (issue #18): ``params.json`` (with the run's config hash) is the completion
marker; a fresh run sets an earlier run's outputs aside before it writes anything, so a run killed midway
leaves its own history and checkpoint but no ``params.json``; leftovers of killed runs are removed; a resumed
run finishes the same directory."""

from __future__ import annotations

import json

import pytest

from zprime_grad.chunks import LocalChunks
from zprime_grad.config import override
from zprime_grad.optimise.driver import optimise


class Killed(BaseException):
    """Stands for a SIGKILL after an epoch: nothing below catches it, nothing is cleaned up on the way out
    (``tests/optimise/test_optimise.py`` kills a real driver with SIGKILL and resumes it)."""


@pytest.fixture(scope="module")
def chunks(generated, tmp_path_factory):
    from tests.optimise.test_optimise import skim_columns

    with LocalChunks.from_directory(skim_columns(generated, tmp_path_factory)) as c:
        yield c


def kill_after(epoch: int):
    def on_epoch(state):
        if state.epoch - 1 >= epoch:
            raise Killed

    return on_epoch


def test_a_killed_fresh_run_leaves_no_params_of_an_earlier_run_and_resume_completes_it(generated, chunks, tmp_path):
    out = tmp_path / "opt"
    first = optimise(override(generated.config, optimise={"epochs": 2}), chunks, out, progress=False)
    history = json.loads((out / "optimisation.json").read_text())
    assert first["config_hash"] == history["config_hash"]
    assert json.loads((out / "params.json").read_text())["config_hash"] == history["config_hash"]
    (out / ".params.json.tmp4242").write_text("{torn")  # what killed runs leave: atomic-write temporaries,
    (out / ".stale-4242-1").mkdir()  # a set-aside folder not yet deleted
    (out / ".stale-4242-1" / "params.json").write_text("{}")

    changed = override(generated.config, optimise={"epochs": 3, "learning_rate": 0.02})
    with pytest.raises(Killed):
        optimise(changed, chunks, out, progress=False, on_epoch=kill_after(0))
    left = sorted(p.name for p in out.iterdir())
    assert left == ["checkpoint.pkl", "optimisation.json"]  # no params.json, workspace.json, leftovers
    history = json.loads((out / "optimisation.json").read_text())
    assert history["config_hash"] != first["config_hash"] and len(history["epochs"]) == 1

    resumed = optimise(changed, chunks, out, progress=False, resume=True)
    params = json.loads((out / "params.json").read_text())
    history = json.loads((out / "optimisation.json").read_text())
    assert resumed["epochs_run"] == 3 and [e["epoch"] for e in history["epochs"]] == [0, 1, 2]
    assert params["config_hash"] == history["config_hash"] != first["config_hash"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pkl", "optimisation.json", "params.json",
                                                     "workspace.json"]


def test_a_killed_resumed_run_leaves_no_params_json(generated, chunks, tmp_path):
    out = tmp_path / "opt"
    config = override(generated.config, optimise={"epochs": 2})
    optimise(config, chunks, out, progress=False)
    more = override(generated.config, optimise={"epochs": 4})  # epochs do not enter the hash: it continues
    with pytest.raises(Killed):
        optimise(more, chunks, out, progress=False, resume=True, on_epoch=kill_after(2))
    assert not (out / "params.json").exists() and not (out / "workspace.json").exists()
    assert [e["epoch"] for e in json.loads((out / "optimisation.json").read_text())["epochs"]] == [0, 1, 2]
