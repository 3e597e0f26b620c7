"""Caches that verify themselves (issue #18): every chunk's checksum in skim.json, checked before reuse and on
every load (naming the file); a SIGKILLed skim leaves nothing that looks complete and its temporaries are
removed by the next run; ``--skip-bad-files`` skips a truncated ROOT file whose header opens but whose
baskets (or Runs tree) cannot be read, lists it with its reason, and the skim goes on without it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import awkward as ak
import pytest
import uproot

from zprime_grad.chunks import LocalChunks
from zprime_grad.cli import main
from zprime_grad.errors import UserError
from zprime_grad.skim import persist, store
from zprime_grad.skim.toy import toy_events, write_toy_nanoaod

CHUNKSIZE = "1000"


def truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_in_baskets(path: Path, n_events: int, seed: int, baskets: int, *, is_data: bool) -> Path:
    """A toy NanoAOD whose Events branches have ``baskets`` baskets each (one ``extend`` per basket)."""
    events = toy_events(n_events, seed, is_data=is_data, first_event=100_000)
    step = n_events // baskets
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: ak.Array(v).type if isinstance(v, ak.Array) else v.dtype for k, v in events.items()})
        for i in range(baskets):
            f["Events"].extend({k: v[i * step:(i + 1) * step] for k, v in events.items()})
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("integrity")
    mc = write_toy_nanoaod(d / "mc.root", 2500, seed=31)
    mc_bad = truncate(write_toy_nanoaod(d / "mc_truncated.root", 1500, seed=32, first_event=50_000), 0.6)
    data = write_toy_nanoaod(d / "data.root", 1500, seed=33, is_data=True)
    data_bad = truncate(write_toy_nanoaod(d / "data_truncated.root", 1500, seed=34, is_data=True,
                                          first_event=60_000), 0.5)
    data_late = truncate(write_in_baskets(d / "data_late.root", 3000, 35, 3, is_data=True), 0.75)

    def fileset(name, mc_files, data_files):
        fs = {"ttbar": {"files": {f.name: "Events" for f in mc_files}, "metadata": {"xsec": 831.76, "process": "ttbar"}},
              "data": {"files": {f.name: "Events" for f in data_files}, "metadata": {"is_data": True}}}
        path = d / f"{name}.json"
        path.write_text(json.dumps(fs))  # relative file names: the logical names
        return str(path)

    return {"dir": d, "good": fileset("good", [mc], [data]),
            "bad": fileset("bad", [mc, mc_bad], [data, data_bad, data_late])}


def skim(capsys, fileset, out, *extra):
    rc = main(["skim", "--fileset", fileset, "--out", str(out), "--chunksize", CHUNKSIZE, *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------- checksums
def test_skim_json_records_the_checksum_of_each_chunk_file_without_paths(inputs, tmp_path, capsys):
    rc, out, _ = skim(capsys, inputs["good"], tmp_path / "A", "--executor", "iterative")
    assert rc == 0 and "wrote" in out
    report = json.loads((tmp_path / "A" / "skim.json").read_text())
    assert report["columns"]
    for c in report["columns"]:
        data = (tmp_path / "A" / c["path"]).read_bytes()
        assert c["sha256"] == hashlib.sha256(data).hexdigest() and c["bytes"] == len(data)
        assert not Path(c["path"]).is_absolute()
    assert str(inputs["dir"]) not in json.dumps(report["columns"])  # nothing of this machine's directories
    # a skim of the same inputs elsewhere records the same checksums
    rc, _, _ = skim(capsys, inputs["good"], tmp_path / "B", "--executor", "futures")
    again = json.loads((tmp_path / "B" / "skim.json").read_text())
    assert rc == 0 and [(c["path"], c["sha256"]) for c in again["columns"]] == \
        [(c["path"], c["sha256"]) for c in report["columns"]]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_chunk_is_named_on_load_and_rebuilt_by_skim(inputs, tmp_path, capsys, damage):
    out = tmp_path / "skim"
    rc, _, _ = skim(capsys, inputs["good"], out, "--executor", "iterative")
    assert rc == 0
    report = json.loads((out / "skim.json").read_text())
    victim = out / report["columns"][1]["path"]
    original = victim.read_bytes()
    flip_a_byte(victim) if damage == "flip" else truncate(victim, 0.9)

    with pytest.raises(UserError, match=victim.name) as err:  # every load path verifies
        LocalChunks.from_directory(out)
    assert "damaged chunk file" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match=victim.name):
        store.read_columns(out)
    # the optimiser reading this skim stops with one line naming the file, exit status 2
    rc = main(["optimise", "--columns", str(out), "--out", str(tmp_path / "opt"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and victim.name in err and "Traceback" not in err and "BadZipFile" not in err
    assert not (tmp_path / "opt" / "params.json").exists()

    # skim does not reuse it: it names the damaged file and skims again, to the same bytes
    rc, said, noted = skim(capsys, inputs["good"], out, "--executor", "iterative")
    assert rc == 0 and f"zprime-grad skim: wrote {out}" in said
    assert f"{victim.name}: its SHA-256 differs" in noted if damage == "flip" else "bytes, skim.json recorded" in noted
    assert victim.read_bytes() == original
    assert len(LocalChunks.from_directory(out)) == len(report["columns"])
    rc, said, _ = skim(capsys, inputs["good"], out, "--executor", "iterative")
    assert rc == 0 and f"zprime-grad skim: reused {out}" in said  # intact now: reused


def test_persisted_chunks_carry_and_verify_the_same_checksums(inputs, tmp_path, capsys):
    rc, _, _ = skim(capsys, inputs["good"], tmp_path / "A", "--executor", "iterative")
    assert rc == 0
    local = json.loads((tmp_path / "A" / "skim.json").read_text())
    base = f"file://{tmp_path / 'persisted'}"
    entries = [persist.write_chunk(c, base) for c in store.read_columns(tmp_path / "A")]
    assert [(e["path"], e["sha256"], e["bytes"]) for e in entries] == \
        [(c["path"], c["sha256"], c["bytes"]) for c in local["columns"]]
    report = {**local, "columns": entries}
    persist.write_report(base, report)
    assert persist.cached_report(base, local["cache_key"]) is not None
    urls = [persist.join(base, e["path"]) for e in entries]
    assert persist.load_chunk(urls[0], entries[0]["sha256"]).n_events == entries[0]["n_events"]

    victim = tmp_path / "persisted" / entries[0]["path"]
    flip_a_byte(victim)  # same size: found when a worker reads it, naming the URL
    assert persist.cached_report(base, local["cache_key"]) is not None
    with pytest.raises(UserError, match="damaged chunk file") as err:
        persist.load_chunk(urls[0], entries[0]["sha256"])
    assert urls[0] in str(err.value)
    truncate(victim, 0.5)  # a truncated chunk: the persisted skim is not reused
    assert persist.cached_report(base, local["cache_key"]) is None


# ------------------------------------------------------------------------------------------ killed runs
def test_a_sigkilled_skim_leaves_nothing_complete_and_the_next_run_cleans_up(inputs, tmp_path, capsys):
    out = tmp_path / "skim"
    rc, _, _ = skim(capsys, inputs["good"], out, "--executor", "iterative")  # an earlier, finished skim
    assert rc == 0 and (out / "skim.json").exists()
    cmd = [sys.executable, "-m", "zprime_grad.cli", "skim", "--fileset", inputs["good"], "--out", str(out),
           "--chunksize", "700", "--executor", "iterative"]  # another chunking: a fresh skim
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".columns.tmp-") for p in out.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, "the skim ended before it was killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    left = sorted(p.name for p in out.iterdir())
    assert "skim.json" not in left and "columns" not in left  # the earlier skim went before any work
    assert any(name.startswith(".columns.tmp-") for name in left)
    with pytest.raises(UserError, match="skim.json"):
        LocalChunks.from_directory(out)

    rc, said, _ = skim(capsys, inputs["good"], out, "--executor", "iterative", "--chunksize", "700")
    assert rc == 0 and "wrote" in said
    assert sorted(p.name for p in out.iterdir()) == ["columns", "skim.json"]  # the leftovers are gone


# ------------------------------------------------------------------------------------------ bad input files
def test_the_truncated_files_open_on_the_driver_and_fail_only_in_their_baskets(inputs):
    d = inputs["dir"]
    for name in ("mc_truncated.root", "data_truncated.root", "data_late.root"):
        with uproot.open(d / name) as f:  # the header-only check the driver does passes …
            assert "Events" in f and "Muon_pt" in f["Events"].keys()
            with pytest.raises(OSError):  # … reading the baskets does not
                f["Events"].arrays()
    with uproot.open(d / "mc_truncated.root") as f, pytest.raises(OSError):
        f["Runs"]["genEventSumw"].array()  # nor Σ genWeight
    with uproot.open(d / "data_late.root") as f:  # its first baskets are intact: some chunks would read
        assert len(f["Events"]["Muon_pt"].array(entry_stop=1000)) == 1000


@pytest.mark.parametrize("executor", ["iterative", "futures"])
def test_skip_bad_files_skips_files_that_fail_in_their_baskets_and_goes_on(inputs, tmp_path, capsys, executor):
    rc, _, err = skim(capsys, inputs["bad"], tmp_path / "refused", "--executor", executor)
    assert rc == 2 and "Traceback" not in err and "truncated.root" in err
    assert not (tmp_path / "refused" / "skim.json").exists()

    rc, said, _ = skim(capsys, inputs["bad"], tmp_path / "skipped", "--executor", executor, "--skip-bad-files")
    assert rc == 0 and "wrote" in said
    report = json.loads((tmp_path / "skipped" / "skim.json").read_text())
    bad = {b["file"]: b for b in report["bad_files"]}
    assert sorted(bad) == ["data_late.root", "data_truncated.root", "mc_truncated.root"]  # logical names
    for b in bad.values():
        assert "OSError" in b["error"] and str(inputs["dir"]) not in b["error"]
        assert "skipped bad file" in said and b["file"] in said
    assert bad["mc_truncated.root"]["dataset"] == "ttbar" and bad["mc_truncated.root"]["where"] == "Runs"
    assert bad["data_truncated.root"]["where"] == "entries 0-750"
    assert bad["data_late.root"]["where"].startswith("entries ") and bad["data_late.root"]["where"] != "entries 0-1000"
    assert report["datasets"]["data"]["chunks"] > 0 and report["datasets"]["ttbar"]["chunks"] > 0

    # the run went on as if the bad files were not in the fileset: the same chunk files, byte for byte
    # (Σ genWeight without the skipped MC file; no chunk of the half-readable file)
    rc, _, _ = skim(capsys, inputs["good"], tmp_path / "clean", "--executor", executor, "--skip-bad-files")
    clean = json.loads((tmp_path / "clean" / "skim.json").read_text())
    assert rc == 0 and clean["bad_files"] == []
    assert [c["path"] for c in report["columns"]] == [c["path"] for c in clean["columns"]]
    assert [c["sha256"] for c in report["columns"]] == [c["sha256"] for c in clean["columns"]]
    assert report["datasets"]["ttbar"]["channels"] == clean["datasets"]["ttbar"]["channels"]
    assert report["datasets"]["data"]["events_skimmed"] == clean["datasets"]["data"]["events_skimmed"]
