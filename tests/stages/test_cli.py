"""The command line as a user meets it: help without heavy imports, quiet and piped output without bars or
third-party chatter, fits that failed said in our words, and no global state left behind."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings

import pytest

from zprime_grad.cli import main
from zprime_grad.skim.toy import write_toy_nanoaod

HEAVY = ("jax", "coffea", "pyhf", "dask", "distributed", "pydantic", "numpy", "zprime_grad.config")
CHATTER = ("Preprocessing", "Processing", "Merging", "FastJet", "FCN result", "Unable to initialize backend")


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zprime_grad.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def workspace(tmp_path) -> str:
    spec = {"channels": [{"name": "SR", "samples": [
                {"name": "signal", "data": [5.0, 3.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
                {"name": "background", "data": [20.0, 12.0], "modifiers": [
                    {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}]}]}],
            "observations": [{"name": "SR", "data": [29.0, 14.0]}],
            "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}], "version": "1.0.0"}
    path = tmp_path / "workspace.json"
    path.write_text(json.dumps(spec))
    return str(path)


@pytest.mark.parametrize("args, status", [(["--help"], 0), (["run", "--help"], 0), (["skim"], 2),
                                          (["validate", "--bogus"], 2), (["significance"], 2)])
def test_help_and_argument_errors_import_no_heavy_library(args, status):
    code = ("import sys\nfrom zprime_grad.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    print('exit', e.code)\n"
            f"print('heavy', sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert f"exit {status}" in result.stdout and "heavy []" in result.stdout, result.stdout + result.stderr
    if args == ["--help"]:
        for command in ("generate", "run", "significance", "optimise", "skim", "validate", "train", "--quiet"):
            assert command in result.stdout


def test_quiet_significance_prints_the_json_and_nothing_else(tmp_path):
    result = cli("--quiet", "significance", workspace(tmp_path))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    numbers = json.loads(result.stdout)
    assert numbers["data"] == "observed" and numbers["Z"] > 0 and numbers["expected"]["Z"] > 0


@pytest.fixture(scope="module")
def fileset(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_toy")
    mc = str(write_toy_nanoaod(d / "mc.root", 3000, seed=31))
    data = str(write_toy_nanoaod(d / "data.root", 1500, seed=32, is_data=True))
    fs = {"ttbar": {"files": {mc: "Events"}, "metadata": {"xsec": 831.76, "process": "ttbar"}},
          "data": {"files": {data: "Events"}, "metadata": {"is_data": True}}}
    path = d / "fileset.json"
    path.write_text(json.dumps(fs))
    return str(path)


def skim(fileset, out, *flags):
    return cli("skim", "--fileset", fileset, "--executor", "futures", "--workers", "2", "--chunksize", "1000",
               "--out", str(out), *flags)


def test_piped_skim_says_one_line_per_stage_without_bars_or_chatter(fileset, tmp_path):
    result = skim(fileset, tmp_path / "normal")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and not any(c in result.stderr for c in CHATTER), result.stderr
    stage = [line for line in result.stderr.splitlines() if line.startswith("skim:")]
    assert len(stage) == 1 and "5/5 chunk" in stage[0], result.stderr  # 3000 + 1500 entries in chunks of 1000
    assert "zprime-grad skim: wrote" in result.stdout

    # what the default hides is there: coffea's own per-dataset bars, shown with --verbose
    verbose = skim(fileset, tmp_path / "verbose", "--verbose")
    assert verbose.returncode == 0 and "Processing" in verbose.stdout + verbose.stderr


def test_quiet_skim_prints_only_the_summary(fileset, tmp_path):
    result = skim(fileset, tmp_path / "quiet", "-q")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("zprime-grad skim: wrote") and "Processing" not in result.stdout


def test_a_command_run_in_process_leaves_logging_warnings_and_jax_as_they_were(tmp_path, capsys):
    root, jax_logger = logging.getLogger(), logging.getLogger("jax")
    before = (list(root.handlers), root.level, jax_logger.level, list(warnings.filters))
    assert main(["significance", workspace(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["Z"] > 0
    assert (list(root.handlers), root.level, jax_logger.level, list(warnings.filters)) == before


def test_importing_the_package_changes_no_global_state():
    code = ("import logging, warnings\nbefore = (list(logging.getLogger().handlers), list(warnings.filters))\n"
            "import zprime_grad, zprime_grad.cli, zprime_grad.terminal, zprime_grad.stages.run\n"
            "print(before == (list(logging.getLogger().handlers), list(warnings.filters)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stdout + result.stderr


def test_fit_warnings_say_what_a_failed_fit_means():
    from zprime_grad.validate.inference import fit_warnings

    converged = {"Z": 2.0, "p0": 0.02,
                 "method": "pyhf.infer.mle.fixed_poi_fit (minuit tolerance 0.1; mu-free optimum at the Asimov point)"}
    fallback = {"Z": 2.0, "p0": 0.02,
                "method": "pyhf.infer.mle.fixed_poi_fit (pyhf scipy; mu-free optimum at the Asimov point)"}
    failed = {"Z": None, "p0": None, "method": None, "errors": ["minuit: FunctionMinimum is invalid"]}
    fit_failed = {"mu_hat": None, "method": None, "errors": ["scipy: failed"]}
    assert fit_warnings("baseline", converged, {"method": "cabinetry.fit.fit (minuit tolerance 0.001)"}) == []
    assert "scipy" in fit_warnings("baseline", fallback)[0]
    assert "n/a" in fit_warnings("optimised", failed)[0] and fit_warnings("optimised", failed)[0].startswith("optimised")
    assert "pulls are n/a" in fit_warnings("baseline", None, fit_failed)[0]


def test_a_dask_client_closed_mid_gather_is_not_reported_as_an_error(capsys):
    """Ctrl-C during a Dask gather: asyncio reports each gather the closing client cancelled ("Task
    exception was never retrieved", distributed's AllExit) — the stop itself; any other asyncio error shows."""
    import io

    from distributed.client import AllExit

    from zprime_grad import terminal

    def record(exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "Task exception was never retrieved",
                                 None, (type(exc), exc, None))

    with terminal.session("normal"):
        handler = logging.getLogger().handlers[-1]
        stream = handler.stream
        handler.stream = io.StringIO()
        try:
            handler.handle(record(AllExit()))
            handler.handle(record(RuntimeError("a real asyncio failure")))
            shown = handler.stream.getvalue()
        finally:
            handler.stream = stream
    assert "a real asyncio failure" in shown and "AllExit" not in shown
