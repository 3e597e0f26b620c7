"""``--skip-bad-files`` on the dask executor (issue #18 pt 5), on a real LocalCluster: a file whose header
opens on the driver but whose baskets fail on a worker is dropped and listed in skim.json with its reason
and where it failed; its dataset's chunks are made again from the files left, with their Σ genWeight, so
the skim equals a futures skim of the fileset without the bad files, byte for byte (the futures executor
too: a dataset skimmed again must not get coffea's cached metadata, with the old Σ genWeight). A failure
in the processor itself (the file reads fine) still stops the run with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from zprime_grad.cli import main
from zprime_grad.skim.toy import toy_events, write_toy_nanoaod

CHUNKSIZE = "1000"


def truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_mc_in_baskets(path: Path, n_events: int, seed: int, baskets: int) -> Path:
    """A toy MC NanoAOD with its Runs tree first and ``baskets`` baskets per Events branch: truncated
    towards its end, Σ genWeight and the first baskets still read, the last ones do not."""
    events = toy_events(n_events, seed, first_event=200_000 + 10_000 * seed)
    step = n_events // baskets
    with uproot.recreate(path) as f:
        f.mktree("Runs", {"run": np.uint32, "genEventCount": np.int64, "genEventSumw": np.float64})
        f["Runs"].extend({"run": np.array([1], np.uint32), "genEventCount": np.array([n_events]),
                          "genEventSumw": np.array([np.sum(events["genWeight"], dtype=np.float64)])})
        f.mktree("Events", {k: ak.Array(v).type if isinstance(v, ak.Array) else v.dtype for k, v in events.items()})
        for i in range(baskets):
            f["Events"].extend({k: v[i * step:(i + 1) * step] for k, v in events.items()})
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("skip_bad_dask")
    mc = write_toy_nanoaod(d / "mc.root", 2500, seed=41)
    mc_late = truncate(write_mc_in_baskets(d / "mc_late.root", 3000, 42, 3), 0.75)  # chunk 0-1000 reads
    st_late = truncate(write_mc_in_baskets(d / "st_late.root", 2000, 43, 2), 0.75)  # the dataset's only file
    data = write_toy_nanoaod(d / "data.root", 1500, seed=44, is_data=True)
    data_bad = truncate(write_toy_nanoaod(d / "data_truncated.root", 1500, seed=45, is_data=True,
                                          first_event=60_000), 0.5)

    def fileset(name, datasets):
        path = d / f"{name}.json"
        path.write_text(json.dumps(datasets))  # relative file names: the logical names
        return str(path)

    def mc_dataset(files, process):
        return {"files": {f.name: "Events" for f in files}, "metadata": {"xsec": 831.76, "process": process}}

    def data_dataset(files):
        return {"files": {f.name: "Events" for f in files}, "metadata": {"is_data": True}}

    return {
        "dir": d,
        "good": fileset("good", {"ttbar": mc_dataset([mc], "ttbar"), "data": data_dataset([data])}),
        "bad": fileset("bad", {"ttbar": mc_dataset([mc, mc_late], "ttbar"),
                               "single_top": mc_dataset([st_late], "single_top"),
                               "data": data_dataset([data, data_bad])}),
    }


def skim(capsys, fileset, out, *extra):
    rc = main(["skim", "--fileset", fileset, "--out", str(out), "--chunksize", CHUNKSIZE, *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("zprime-grad skim: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_late_truncated_mc_file_opens_and_sums_its_weights_but_fails_in_its_last_baskets(inputs):
    with uproot.open(inputs["dir"] / "mc_late.root") as f:  # what the driver checks passes …
        assert "Muon_pt" in f["Events"].keys() and f["Runs"]["genEventSumw"].array(library="np")[0] != 0
        assert len(f["Events"]["Muon_pt"].array(entry_stop=1000)) == 1000  # … so does its first chunk …
        with pytest.raises(OSError):
            f["Events"].arrays()  # … not its last baskets


@pytest.fixture(scope="module")
def clean(inputs, tmp_path_factory):
    """The futures executor's skim of the fileset without the bad files (``--skip-bad-files`` too: it is a
    result field, in every chunk's config hash), in a process of its own: nothing it caches (coffea keeps
    a file's fileset metadata for the life of a process) reaches the skims under test, nor theirs it."""
    out = tmp_path_factory.mktemp("clean") / "futures"
    subprocess.run([sys.executable, "-m", "zprime_grad.cli", "skim", "--fileset", inputs["good"], "--out", str(out),
                    "--chunksize", CHUNKSIZE, "--executor", "futures", "--workers", "2", "--skip-bad-files"],
                   check=True, capture_output=True, timeout=600)
    report = json.loads((out / "skim.json").read_text())
    assert report["bad_files"] == [] and report["datasets"]["ttbar"]["channels"]["skim"]["weighted"] > 0
    return report


def assert_same_skim(report: dict, clean: dict) -> None:
    """The same chunk files byte for byte, the same numbers per dataset."""
    assert sorted(report["datasets"]) == sorted(clean["datasets"]) == ["data", "ttbar"]  # single_top: no file left
    assert [(c["path"], c["sha256"]) for c in report["columns"]] == [(c["path"], c["sha256"]) for c in clean["columns"]]
    for ds in ("ttbar", "data"):
        for key in ("channels", "chunks", "entries_read", "events_skimmed", "column_bytes"):
            assert report["datasets"][ds][key] == clean["datasets"][ds][key], (ds, key)


@pytest.mark.parametrize("executor", ["dask", "futures"])
def test_skip_bad_files_drops_files_that_fail_in_their_baskets_and_reskims_their_datasets(
        inputs, clean, client, tmp_path, capsys, executor):
    run = ("--executor", "dask", "--scheduler", client.scheduler.address) if executor == "dask" else \
        ("--executor", "futures", "--workers", "2")
    if executor == "dask":  # without the flag the first failed chunk stops the run, in one line
        rc, _, err = skim(capsys, inputs["bad"], tmp_path / "refused", *run)
        line = error_line(err)
        assert rc == 2 and ".root" in line and "OSError" in line
        assert not (tmp_path / "refused" / "skim.json").exists() and not client.who_has()

    rc, said, _ = skim(capsys, inputs["bad"], tmp_path / "skipped", *run, "--skip-bad-files")
    assert rc == 0 and "wrote" in said
    report = json.loads((tmp_path / "skipped" / "skim.json").read_text())
    assert report["executor"] == executor
    bad = {b["file"]: b for b in report["bad_files"]}
    assert sorted(bad) == ["data_truncated.root", "mc_late.root", "st_late.root"]  # logical names
    for b in bad.values():
        assert "OSError" in b["error"] and str(inputs["dir"]) not in b["error"]
        assert f"skipped bad file {b['file']}" in said
    assert [bad[f]["dataset"] for f in sorted(bad)] == ["data", "ttbar", "single_top"]
    assert bad["data_truncated.root"]["where"] == "entries 0-750"
    assert bad["mc_late.root"]["where"].startswith("entries ") and bad["mc_late.root"]["where"] != "entries 0-1000"
    assert not client.who_has()  # no chunk of a dropped file (nor any other) left on the workers

    # as if the bad files had never been in the fileset: ttbar's Σ genWeight is mc.root's alone, so its
    # chunks were made again (and mc_late.root's first chunk, which did read, is not among them)
    assert_same_skim(report, clean)


def test_dask_with_skip_bad_files_still_stops_on_the_processors_own_error(inputs, client, tmp_path, capsys,
                                                                          monkeypatch):
    from zprime_grad.skim import pipeline

    def broken(config, options=None):  # fails in every MC chunk of a readable file (the processor is shipped)
        processor = make_processor(config, options)
        processor.lumi_pb = None
        return processor

    make_processor = pipeline.make_processor
    monkeypatch.setattr(pipeline, "make_processor", broken)
    rc, _, err = skim(capsys, inputs["good"], tmp_path / "broken", "--executor", "dask",
                      "--scheduler", client.scheduler.address, "--skip-bad-files")
    line = error_line(err)
    assert rc == 2 and "mc.root" in line and "TypeError" in line
    assert not (tmp_path / "broken" / "skim.json").exists() and not client.who_has()
