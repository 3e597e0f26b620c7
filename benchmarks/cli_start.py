"""How fast the command line answers: ``zprime-grad --help``, an argument error, and ``zprime-grad
significance`` on a small workspace (pyhf, and ``--jax``), each a fresh process as a user starts it.

The parser is built from the subcommands' small ``cli`` modules without importing jax, coffea, pyhf or
pydantic; ``significance`` imports pyhf (numpy backend) only. Each command runs ``--repeat`` times;
the minimum and median wall clock are reported, with the load average (this machine's 2 cores are
shared). Writes ``benchmarks/results/cli_start.json`` (``--out`` to change).

    .venv/bin/python benchmarks/cli_start.py [--repeat 5] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKSPACE = {
    "channels": [{"name": "SR", "samples": [
        {"name": "signal", "data": [5.0, 3.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "background", "data": [20.0, 12.0], "modifiers": [
            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
            {"name": "staterror_SR", "type": "staterror", "data": [1.0, 0.8]}]}]}],
    "observations": [{"name": "SR", "data": [29.0, 14.0]}],
    "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
    "version": "1.0.0",
}


def timed(args: list[str], repeat: int, expect: int) -> dict:
    walls = []
    for _ in range(repeat):
        tic = time.perf_counter()
        result = subprocess.run(args, capture_output=True, text=True)
        walls.append(time.perf_counter() - tic)
        if result.returncode != expect:
            raise SystemExit(f"{' '.join(args)}: exit {result.returncode}\n{result.stderr[-2000:]}")
    return {"command": " ".join(Path(a).name if a.endswith(".json") else a for a in args[1:]),
            "wall_s_min": min(walls), "wall_s_median": statistics.median(walls), "runs": repeat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cli_start.json"))
    opts = parser.parse_args()
    exe = str(Path(sys.executable).with_name("zprime-grad"))
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "workspace.json"
        ws.write_text(json.dumps(WORKSPACE))
        load = os.getloadavg()
        results = {
            "help": timed([exe, "--help"], opts.repeat, 0),
            "argument_error": timed([exe, "skim"], opts.repeat, 2),
            "significance": timed([exe, "significance", str(ws)], opts.repeat, 0),
            "significance_jax": timed([exe, "significance", "--jax", str(ws)], max(1, opts.repeat // 2), 0),
        }
    payload = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                           "loadavg_start": list(load), "loadavg_end": list(os.getloadavg())},
               "targets_s": {"help": 1.0, "argument_error": 1.0, "significance": 4.0}, **results}
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(payload, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name:18s} min {r['wall_s_min']:.2f} s  median {r['wall_s_median']:.2f} s  ({r['command']})")


if __name__ == "__main__":
    main()
