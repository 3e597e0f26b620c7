"""``zprime-grad skim`` as a user runs it: outputs, cache reuse, bad inputs reported without tracebacks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from zprime_grad.cli import main
from zprime_grad.skim.store import read_columns
from zprime_grad.skim.toy import write_toy_nanoaod


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    mc = str(write_toy_nanoaod(d / "mc.root", 2500, seed=21))
    data = str(write_toy_nanoaod(d / "data.root", 1500, seed=22, is_data=True))
    (d / "corrupt.root").write_bytes(b"this is not a ROOT file" * 50)
    no_tag = str(write_toy_nanoaod(d / "no_tag.root", 100, seed=23, drop=["FatJet_particleNet_TvsQCD"]))

    def fileset(name, extra=None, mc_files=(mc,)):
        fs = {"ttbar": {"files": {f: "Events" for f in mc_files}, "metadata": {"xsec": 831.76, "process": "ttbar"}},
              "data": {"files": {data: "Events", **(extra or {})}, "metadata": {"is_data": True}}}
        path = d / f"{name}.json"
        path.write_text(json.dumps(fs))
        return str(path)

    no_xsec = json.loads(Path(fileset("tmp")).read_text())
    del no_xsec["ttbar"]["metadata"]["xsec"]
    (d / "no_xsec.json").write_text(json.dumps(no_xsec))

    return {
        "no_xsec": str(d / "no_xsec.json"),
        "good": fileset("good"),
        "missing": fileset("missing", {str(d / "nowhere.root"): "Events"}),
        "corrupt": fileset("corrupt", {str(d / "corrupt.root"): "Events"}),
        "no_branch": fileset("no_branch", mc_files=(mc, no_tag)),
    }


def skim(capsys, fileset, out, *extra):
    rc = main(["skim", "--fileset", fileset, "--out", str(out), "--chunksize", "1000", *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_futures_and_dask_cli_give_identical_counts_and_column_files(inputs, tmp_path, capsys):
    rc_a, out_a, _ = skim(capsys, inputs["good"], tmp_path / "A", "--executor", "futures")
    rc_b, out_b, _ = skim(capsys, inputs["good"], tmp_path / "B", "--executor", "dask", "--workers", "2")
    assert rc_a == rc_b == 0 and "wrote" in out_a
    a, b = (json.loads((tmp_path / x / "skim.json").read_text()) for x in "AB")
    for ds in ("ttbar", "data"):
        for key in ("channels", "chunks", "entries_read", "events_skimmed", "column_bytes"):
            assert a["datasets"][ds][key] == b["datasets"][ds][key], (ds, key)
        assert a["datasets"][ds]["bytes_read"] > 0 and a["datasets"][ds]["throughput_hz"] > 0
        assert set(a["datasets"][ds]["channels"]) == {"skim", "signal", "ttbar_cr", "wjets_cr"}
    assert a["datasets"]["ttbar"]["channels"]["signal"]["raw"] > 0
    assert [c["path"] for c in a["columns"]] == [c["path"] for c in b["columns"]]
    for c in a["columns"]:  # byte-identical chunk files
        assert (tmp_path / "A" / c["path"]).read_bytes() == (tmp_path / "B" / c["path"]).read_bytes()
    chunks = read_columns(tmp_path / "A")
    assert sum(c.n_events for c in chunks) == sum(d["events_skimmed"] for d in a["datasets"].values())
    assert not [p for p in (tmp_path / "A").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_rerun_with_same_config_and_inputs_reuses_the_cache(inputs, tmp_path, capsys):
    rc, out, _ = skim(capsys, inputs["good"], tmp_path / "C", "--executor", "iterative")
    stamp = os.stat(tmp_path / "C" / "skim.json").st_mtime_ns
    rc2, out2, _ = skim(capsys, inputs["good"], tmp_path / "C", "--executor", "futures")
    assert rc == rc2 == 0 and "reused" in out2
    assert os.stat(tmp_path / "C" / "skim.json").st_mtime_ns == stamp
    rc3, out3, _ = skim(capsys, inputs["good"], tmp_path / "C", "--executor", "iterative", "--chunksize", "700")
    assert rc3 == 0 and "wrote" in out3  # a different chunking is a different skim


def test_missing_file_is_named_without_a_traceback(inputs, tmp_path, capsys):
    rc, _, err = skim(capsys, inputs["missing"], tmp_path / "D", "--executor", "iterative")
    assert rc == 2 and "nowhere.root" in err and "--skip-bad-files" in err
    assert "Traceback" not in err
    assert not (tmp_path / "D" / "skim.json").exists()


def test_corrupt_file_is_named_and_with_skip_bad_files_listed(inputs, tmp_path, capsys):
    rc, _, err = skim(capsys, inputs["corrupt"], tmp_path / "E", "--executor", "iterative")
    assert rc == 2 and "corrupt.root" in err and "Traceback" not in err
    rc, out, _ = skim(capsys, inputs["corrupt"], tmp_path / "E", "--executor", "iterative", "--skip-bad-files")
    assert rc == 0 and "skipped bad file" in out
    report = json.loads((tmp_path / "E" / "skim.json").read_text())
    assert [Path(b["file"]).name for b in report["bad_files"]] == ["corrupt.root"]
    assert report["datasets"]["data"]["chunks"] > 0


def test_missing_branch_names_branch_and_file(inputs, tmp_path, capsys):
    rc, _, err = skim(capsys, inputs["no_branch"], tmp_path / "F", "--executor", "futures")
    assert rc == 2 and "no_tag.root" in err and "FatJet_particleNet_TvsQCD" in err
    assert "Traceback" not in err


def test_mc_without_a_cross_section_is_refused_before_any_work(inputs, tmp_path, capsys):
    rc, _, err = skim(capsys, inputs["no_xsec"], tmp_path / "G", "--executor", "dask")
    assert rc == 2 and "dataset ttbar" in err and "xsec" in err and "Traceback" not in err
