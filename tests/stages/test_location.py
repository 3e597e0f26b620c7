"""Same config and seed, same numbers, wherever the repository, the data and the outputs lie.

The small generated dataset is laid out in two directories of different depth and name (the MC files
copied, the pseudo-data made anew in one of them), and the chain runs from each into a third and a
fourth place: every number in ``validation.json``, ``params.json`` and the per-epoch history must be
bit-identical. Paths, timings and cache keys of stat() data are the only fields allowed to differ."""

from __future__ import annotations

import json
import shutil

import awkward as ak
import numpy as np
import uproot

from zprime_grad.generate import generate_dataset
from zprime_grad.pipeline import run_chain

# Fields that name where a file is or how long something took: not results.
LOCATION_OR_TIME = {"fileset", "columns", "out", "path", "source", "wall_time_s", "seconds", "elapsed_s",
                    "wall_seconds", "wall_s", "throughput_hz", "epoch_time_s", "time_s", "process_time_s", "cache_key", "report",
                    "created", "timestamp", "started", "finished"}


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


def _lay_out(generated, place):
    """The generated MC files in ``place`` (pseudo-data made again there), with its own fileset.json."""
    shutil.copytree(generated.out, place, ignore=shutil.ignore_patterns("data", "fileset.json", "generate.json"))
    return generate_dataset(generated.config, place, progress=False)


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


def test_same_numbers_in_any_directory(generated, tmp_path):
    config = generated.config
    data = config.model_dump(mode="json", exclude={"source"})
    data["optimise"]["epochs"] = 3
    data["validation"]["bootstrap"] = 20
    config = type(config).model_validate({**data, "source": "tests/test_location.py"})

    here = _lay_out(generated, tmp_path / "a" / "gen")
    there = _lay_out(generated, tmp_path / "somewhere" / "much" / "deeper" / "copy_of_data")
    names_here, events_here = _data_events(here)
    names_there, events_there = _data_events(there)
    assert names_here == names_there  # the pseudo-data's file names (its content key) ignore the directory
    for a, b in zip(events_here, events_there, strict=True):
        for branch in a:
            np.testing.assert_array_equal(a[branch], b[branch])

    out_here, out_there = tmp_path / "a" / "outputs", tmp_path / "elsewhere" / "out"
    run_chain(config, out_here, fileset=here)
    run_chain(config, out_there, fileset=there)
    for name in ("validation.json", "optimise/params.json", "optimise/optimisation.json", "skim/skim.json"):
        ours = _numbers(json.loads((out_here / name).read_text()))
        theirs = _numbers(json.loads((out_there / name).read_text()))
        assert ours, name
        assert ours == theirs, f"{name}: {[k for k in ours if ours[k] != theirs.get(k)][:5]}"
    chunks = sorted(p.relative_to(out_here).as_posix() for p in (out_here / "skim/columns").rglob("*.npz"))
    assert chunks == sorted(p.relative_to(out_there).as_posix() for p in (out_there / "skim/columns").rglob("*.npz"))
