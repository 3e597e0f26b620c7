"""Bad input at every subcommand (#18): a bad argument, a bad config, a bad fileset and an unusable --out
are each one line naming what is wrong, exit status 2, no traceback (``main`` re-raises anything that is not
the user's to fix, which fails these tests); a skim made with another luminosity, processor or era is
refused by the stages that read it; Ctrl-C stops the run and its workers without a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from zprime_grad.cli import main
from zprime_grad.skim.toy import write_toy_nanoaod

REPO = Path(__file__).resolve().parents[2]
NN = str(REPO / "configs" / "zprime_nn.yaml")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_input")
    files = {name: str(write_toy_nanoaod(d / f"{name}.root", n, seed=seed, is_data=name == "data"))
             for name, n, seed in (("ttbar", 1500, 41), ("zprime", 800, 42), ("wjets", 800, 43), ("data", 800, 44))}
    fileset = {name: {"files": [path], "metadata": {"is_data": True} if name == "data" else
                      {"xsec": {"ttbar": 831.76, "zprime": 1.0, "wjets": 100.0}[name], "process": name}}
               for name, path in files.items()}
    good = d / "fileset.json"
    good.write_text(json.dumps(fileset))
    bad = d / "bad_fileset.json"
    bad.write_text(json.dumps({**fileset, "ttbar": {**fileset["ttbar"], "metadata": {"xsec": float("nan")}}}))
    config = d / "bad.yaml"
    config.write_text("optimise:\n  learning_rates: {btag_threshold: .nan}\n")
    skim = d / "skim"
    assert main(["-q", "skim", "--fileset", str(good), "--out", str(skim), "--executor", "iterative",
                 "--chunksize", "1000"]) == 0
    from zprime_grad.config import load_config
    from zprime_grad.skim.pipeline import make_processor

    params = d / "params.json"
    params.write_text(json.dumps({"parameters": [{"name": k, "value": v} for k, v in
                                                 make_processor(load_config()).initial_params().items()]}))
    a_file = d / "a_file"
    a_file.write_text("not a directory")
    return {"dir": d, "fileset": str(good), "bad_fileset": str(bad), "bad_config": str(config), "skim": str(skim),
            "params": str(params), "file": str(a_file)}


def run(capsys, *args) -> tuple[int, str]:
    rc = main(list(args))
    err = capsys.readouterr().err.strip()
    return rc, err


def commands(i, out):
    """Every subcommand with good inputs and ``out`` as its output."""
    return {
        "generate": ["generate", "--events", "10", "--out", out],
        "skim": ["skim", "--fileset", i["fileset"], "--out", out],
        "optimise": ["optimise", "--columns", i["skim"], "--epochs", "1", "--out", out],
        "train": ["train", NN, "--columns", i["skim"], "--out", out],
        "validate": ["validate", "--params", i["params"], "--columns", i["skim"], "--out", out],
        "scan": ["scan", "--columns", i["skim"], "--budget", "2", "--out", out],
        "run": ["run", "--fileset", i["fileset"], "--epochs", "1", "--out", out],
        "fileset": ["fileset", i["fileset"], "--samples", str(REPO / "configs/opendata2016/samples.yaml"), "--out", out],
    }


BAD_ARGUMENT = {"generate": ("--seed", "-1"), "skim": ("--chunksize", "0"), "optimise": ("--epochs", "nan"),
                "train": ("--workers", "0"), "validate": ("--chunksize", "-5"), "run": ("--events", "inf"),
                "fileset": ("--max-files", "0"), "significance": ("--measurement",), "scan": ("--budget", "0")}


@pytest.mark.parametrize("command", sorted(BAD_ARGUMENT))
def test_a_bad_argument_is_one_line_naming_the_option(command, inputs, capsys):
    option, *value = BAD_ARGUMENT[command]
    argv = commands(inputs, str(inputs["dir"] / "unused")).get(command, ["significance", "w.json"]) + [option, *value]
    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit.value.code == 2 and f"argument {option}" in err and "Traceback" not in err, err


@pytest.mark.parametrize("command", ["generate", "skim", "optimise", "train", "validate", "scan", "run"])
def test_a_bad_config_is_one_line_naming_the_field(command, inputs, capsys):
    argv = commands(inputs, str(inputs["dir"] / "out_config" / command))[command]
    argv = [argv[0], inputs["bad_config"], *[a for a in argv[1:] if a != NN]]
    rc, err = run(capsys, *argv)
    assert rc == 2 and "field 'optimise.learning_rates.btag_threshold': Input should be a finite number" in err, err
    assert not (inputs["dir"] / "out_config" / command).exists() or command == "run", "nothing done before the check"


@pytest.mark.parametrize("command", ["skim", "optimise", "train", "validate", "scan", "run"])
def test_a_bad_fileset_is_one_line_naming_dataset_and_key(command, inputs, capsys):
    argv = commands(inputs, str(inputs["dir"] / "out_fileset" / command))[command]
    if "--columns" in argv:
        argv = [a if a != "--columns" else "--fileset" for a in argv]
    argv = [a if a not in (inputs["fileset"], inputs["skim"]) else inputs["bad_fileset"] for a in argv]
    rc, err = run(capsys, *argv)
    assert rc == 2 and "dataset 'ttbar': metadata 'xsec': Input should be a finite number (got nan)" in err, err


def test_bad_inputs_of_the_commands_without_a_fileset(inputs, capsys, tmp_path):
    samples = tmp_path / "samples.yaml"
    samples.write_text("ttbar: {process: ttbar, xsec_pb: .nan}\n")
    rc, err = run(capsys, "fileset", inputs["fileset"], "--samples", str(samples), "--out", str(tmp_path / "f.json"))
    assert rc == 2 and "xsec_pb" in err and "\n" not in err, err
    workspace = tmp_path / "w.json"
    workspace.write_text('{"channels": 3}')
    rc, err = run(capsys, "significance", str(workspace))
    assert rc == 2 and str(workspace) in err and "\n" not in err, err


@pytest.mark.parametrize("command", ["generate", "skim", "optimise", "train", "validate", "scan", "run", "fileset"])
def test_an_existing_file_as_out_is_named_before_any_work(command, inputs, capsys):
    out = inputs["file"] if command != "fileset" else str(inputs["dir"])  # fileset --out is a file: a directory
    rc, err = run(capsys, *commands(inputs, out)[command])
    assert rc == 2 and err.startswith(f"zprime-grad {command}: error: {out}: ") and "\n" not in err, err
    assert ("is an existing file" if command != "fileset" else "is an existing directory") in err


def _in_a_mount_namespace(mount: str, target: Path, argv: list[str], prepare: str = "") -> subprocess.CompletedProcess:
    """``argv`` with ``target`` a fresh tmpfs mounted with ``mount`` options, in a private user + mount
    namespace (nothing of this machine's mounts changes); skips where namespaces are not allowed."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no user/mount namespaces here (unshare -rm) to make a read-only or full file system")
    target.mkdir(parents=True, exist_ok=True)
    script = f'mount -t tmpfs -o {mount} tmpfs "$1" && {prepare} shift && exec "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(target), sys.executable, "-m",
                           "zprime_grad.cli", *argv], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", ["generate", "skim", "optimise", "train", "validate", "scan", "run", "fileset"])
def test_a_read_only_out_is_named_before_any_work(command, inputs):
    target = inputs["dir"] / "ro" / command
    out = target / "sub"
    result = _in_a_mount_namespace("ro,size=1m", target, commands(inputs, str(out))[command])
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "Read-only file system" in line and str(out) in line and "Traceback" not in result.stderr, result.stderr


def test_a_full_disk_is_named_before_the_optimisation_starts(inputs):
    target = inputs["dir"] / "full"
    fill = f'head -c 2000000 /dev/zero > "$1/fill" 2>/dev/null;'
    result = _in_a_mount_namespace("size=1m", target, commands(inputs, str(target / "opt"))["optimise"], fill)
    assert result.returncode == 2 and "No space left on device" in result.stderr, result.stderr
    assert "optimise:" not in result.stderr.replace("zprime-grad optimise:", ""), "no epoch before the check"


# ------------------------------------------------------------------------------------ config vs skim
def test_a_skim_of_another_luminosity_processor_or_era_is_refused_naming_both_values(inputs, capsys, tmp_path):
    skim_json = f"{inputs['skim']}/skim.json"
    cases = {"analysis: {lumi_pb: 3000}": "analysis.lumi_pb = 16400.0, {} has 3000.0",
             "analysis: {processor: agc_ttbar}": "analysis.processor = 'zprime_ttbar', {} has 'agc_ttbar'",
             "analysis: {era: 2016postVFP_UL, tagger: deepcsv}": "analysis.era = 'generated', {} has '2016postVFP_UL'",
             "analysis: {options: {met: PuppiMET}}": "analysis.options.met = None, {} has 'PuppiMET'"}
    for i, (text, expected) in enumerate(cases.items()):
        config = tmp_path / f"c{i}.yaml"
        config.write_text(text + "\n")
        for argv in (["optimise", str(config), "--columns", inputs["skim"], "--out", str(tmp_path / "o")],
                     ["validate", str(config), "--params", inputs["params"], "--columns", inputs["skim"],
                      "--out", str(tmp_path / "v")],
                     ["scan", str(config), "--columns", inputs["skim"], "--budget", "2", "--out", str(tmp_path / "s")]):
            if ("agc_ttbar" in text or "era" in text) and argv[0] == "validate":
                continue  # refused before the skim is read: other parameters / the era's POG files not given
            rc, err = run(capsys, *argv)
            assert rc == 2 and f"{skim_json}: the skim was made with {expected.format(config)}" in err, err
    assert not (tmp_path / "o" / "params.json").exists() and not (tmp_path / "v" / "validation.json").exists()
    assert not (tmp_path / "s" / "scan.json").exists()


def test_the_skims_config_is_accepted_with_its_own_skim_settings(inputs):
    from zprime_grad.config import load_config
    from zprime_grad.skim.pipeline import check_skim_matches

    check_skim_matches(load_config(), inputs["skim"])  # skimmed with --chunksize 1000, the config says 100000
    report = json.loads(Path(inputs["skim"], "skim.json").read_text())
    assert report["era"] == "generated" and report["lumi_pb"] == 16400.0 and report["chunksize"] == 1000


# ------------------------------------------------------------------------------------ Ctrl-C
def as_in_a_terminal() -> None:
    """The command starts as a terminal starts it, with Ctrl-C at its default, whatever this test process
    (a pytest-xdist worker that other tests ran in) has made of SIGINT: an ignored SIGINT is inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_driver_and_its_dask_workers_without_a_traceback(inputs, tmp_path):
    import psutil

    big = {f"tt{i}": {"files": [str(write_toy_nanoaod(tmp_path / f"tt{i}.root", 20000, seed=60 + i))],
                      "metadata": {"xsec": 10.0, "process": "ttbar"}} for i in range(4)}
    (tmp_path / "big.json").write_text(json.dumps(big))
    proc = subprocess.Popen([sys.executable, "-m", "zprime_grad.cli", "skim", "--fileset", str(tmp_path / "big.json"),
                             "--executor", "dask", "--workers", "2", "--chunksize", "200", "--out",
                             str(tmp_path / "skim")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=as_in_a_terminal)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not any(line.startswith("cluster:") for line in lines):
            time.sleep(0.2)  # the LocalCluster is up and its workers connected
        time.sleep(2)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert proc.poll() is None and workers, "the skim ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack, for the failure below
            proc.wait(timeout=30)
            reader.join(timeout=30)
            pytest.fail("the skim did not stop within 120 s of the Ctrl-C:\n" + "".join(lines)[-20000:])
        reader.join(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = "".join(lines)
    assert proc.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "zprime-grad skim: interrupted; completed outputs are kept"
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers left running: {alive}"
    assert not (tmp_path / "skim" / "skim.json").exists()


def test_ctrl_c_stops_generate_and_its_pythia_workers_at_once(tmp_path):
    """The workers are inside Pythia's C++ loop, which never sees a signal: the driver must stop them
    itself, not wait for the files being generated (a minute each on a busy machine)."""
    import psutil

    out = tmp_path / "generated"
    proc = subprocess.Popen([sys.executable, "-m", "zprime_grad.cli", "generate", "--events", "4000", "--workers", "2",
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=as_in_a_terminal)
    try:
        deadline = time.time() + 180
        workers: list = []
        while time.time() < deadline and len(workers) < 3:  # the queue's manager and two generating workers
            time.sleep(0.5)
            workers = psutil.Process(proc.pid).children(recursive=True)
        time.sleep(5)  # inside Pythia
        assert proc.poll() is None and len(workers) >= 3, "generate ended before it could be interrupted"
        files_before = sorted(out.rglob("*.root"))
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "zprime-grad generate: interrupted; completed outputs are kept"
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers left running: {alive}"
    assert sorted(out.rglob("*.root")) == files_before, "a file was finished after the Ctrl-C"
