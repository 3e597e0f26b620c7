"""``zprime-grad run`` end to end on the small generated dataset, run once here and shared by the tests:

* every stage's output is written, and a second run reuses the cached skim and the finished optimisation;
* same config and seed, same numbers, wherever the repository, the data and the outputs lie. The
  generated dataset is laid out in two directories of different depth and name (the MC files copied,
  the pseudo-data made anew in each), and the chain runs from each into a third and a fourth place:
  every number in ``validation.json``, ``params.json``, the per-epoch history and ``skim.json`` must be
  bit-identical. Paths, timings and cache keys of stat() data are the only fields allowed to differ.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from zprime_grad.config import Config
from zprime_grad.generate import generate_dataset
from zprime_grad.stages.run import run_chain

# Fields that name where a file is or how long something took: not results.
LOCATION_OR_TIME = {"fileset", "columns", "out", "path", "source", "wall_time_s", "seconds", "elapsed_s",
                    "wall_seconds", "wall_s", "throughput_hz", "epoch_time_s", "time_s", "process_time_s", "cache_key",
                    "report", "created", "timestamp", "started", "finished"}


@dataclass(frozen=True)
class Chain:
    config: Config
    fileset: Path  # the dataset laid out in its first place
    out: Path
    outputs: dict


def _lay_out(generated, place: Path) -> Path:
    """The generated MC files in ``place`` (pseudo-data made again there), with its own fileset.json."""
    shutil.copytree(generated.out, place, ignore=shutil.ignore_patterns("data", "fileset.json", "generate.json"))
    return generate_dataset(generated.config, place, progress=False)


@pytest.fixture(scope="module")
def chain(generated, tmp_path_factory) -> Chain:
    data = generated.config.model_dump(mode="json", exclude={"source"})
    data["optimise"]["epochs"] = 2
    data["scan"]["methods"] = ["sobol", "tpe"]  # run's default: the scan too is the same in any directory
    data["validation"]["plots"] = True
    config = type(generated.config).model_validate({**data, "source": "tests/stages/test_pipeline.py"})
    tmp = tmp_path_factory.mktemp("chain")
    fileset = _lay_out(generated, tmp / "a" / "gen")
    out = tmp / "a" / "outputs"
    return Chain(config, fileset, out, run_chain(config, out, fileset=fileset))


def test_run_writes_every_output(chain):
    config, out = chain.config, chain.out
    for name in ("validation.json", "report.html", "histograms.root", "workspace_baseline.json",
                 "workspace_optimised.json", "run.json", "skim/skim.json", "optimise/params.json",
                 "optimise/optimisation.json", "scan/scan.json", "workspace_scan_sobol.json"):
        assert (out / name).is_file(), name
    assert chain.outputs["validation"] == str(out / "validation.json")
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


def _numbers(obj, where=""):
    """Every number and non-path string of a JSON document, keyed by its location in the document."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k not in LOCATION_OR_TIME:
                out.update(_numbers(v, f"{where}/{k}"))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_numbers(v, f"{where}[{i}]"))
        return out
    if isinstance(obj, str) and "/" in obj:
        return {}
    return {where: obj}


def _data_events(fileset_path):
    entry = json.loads(fileset_path.read_text())["data"]
    names = sorted(entry["metadata"]["logical_names"].values())
    arrays = []
    for path in sorted(entry["files"], key=lambda p: entry["metadata"]["logical_names"][p]):
        with uproot.open(path) as f:
            events = f["Events"].arrays(["event", "Muon_pt", "FatJet_pt"])
            arrays.append({"event": events.event.to_numpy(), "n_muon": ak.num(events.Muon_pt).to_numpy(),
                           "muon_pt": ak.flatten(events.Muon_pt).to_numpy(),
                           "fatjet_pt": ak.flatten(events.FatJet_pt).to_numpy()})
    return names, arrays


def test_same_numbers_in_any_directory(generated, chain, tmp_path):
    there = _lay_out(generated, tmp_path / "somewhere" / "much" / "deeper" / "copy_of_data")
    names_here, events_here = _data_events(chain.fileset)
    names_there, events_there = _data_events(there)
    assert names_here == names_there  # the pseudo-data's file names (its content key) ignore the directory
    for a, b in zip(events_here, events_there, strict=True):
        for branch in a:
            np.testing.assert_array_equal(a[branch], b[branch])

    out_there = tmp_path / "elsewhere" / "out"
    run_chain(chain.config, out_there, fileset=there)
    for name in ("validation.json", "optimise/params.json", "optimise/optimisation.json", "skim/skim.json",
                 "scan/scan.json", "scan/tpe/trials.json"):
        ours = _numbers(json.loads((chain.out / name).read_text()))
        theirs = _numbers(json.loads((out_there / name).read_text()))
        assert ours, name
        assert ours == theirs, f"{name}: {[k for k in ours if ours[k] != theirs.get(k)][:5]}"
    chunks = sorted(p.relative_to(chain.out).as_posix() for p in (chain.out / "skim/columns").rglob("*.npz"))
    assert chunks == sorted(p.relative_to(out_there).as_posix() for p in (out_there / "skim/columns").rglob("*.npz"))


def test_second_run_reuses_every_finished_stage(chain):
    out = chain.out
    written = {name: (out / name).stat().st_mtime_ns for name in ("skim/skim.json", "scan/scan.json",
                                                                  "validation.json", "report.html")}
    history = (out / "optimise/optimisation.json").read_text()
    validation = _numbers(json.loads((out / "validation.json").read_text()))
    assert validation["/inputs_key"]
    run_chain(chain.config, out, fileset=chain.fileset)
    assert {name: (out / name).stat().st_mtime_ns for name in written} == written  # reused, not rewritten
    assert json.loads((out / "optimise/optimisation.json").read_text())["epochs"] == json.loads(history)["epochs"]
    assert _numbers(json.loads((out / "validation.json").read_text())) == validation
