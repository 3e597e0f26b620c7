"""Robustness study: the analysis with the two halves' roles swapped (odd events optimise and pre-train,
even events are held out). Is a held-out gain a property of the method, or of one half of the MC?

It copies a run's skim with ``parity = 1 − parity`` into ``OUT/skim`` (the same chunks, files and
manifest; only the column that assigns the halves changes), runs ``zprime-grad run CONFIG --out OUT``
on it, and prints and writes the held-out hard-cut Z₀ of both folds (``learned.rows`` and the bootstrap
intervals when the config has networks, else baseline / optimised).

    .venv/bin/python benchmarks/swap_halves.py configs/zprime_nn.yaml --run outputs/nn --out outputs/nn_swapped

Writes ``benchmarks/results/swap_halves.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def swapped_skim(source: Path, target: Path) -> int:
    """``target`` = ``source`` with every chunk's parity flipped (real rows; padding keeps zero weight)."""
    from zprime_grad import atomic
    from zprime_grad.columns import ColumnChunk

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    n = 0
    for path in sorted((target / "columns").rglob("*.npz")):
        chunk = ColumnChunk.from_npz(path)
        parity = np.asarray(chunk.columns["parity"]).copy()
        parity[: chunk.n_events] = 1.0 - parity[: chunk.n_events]
        chunk.columns["parity"] = parity.astype(chunk.columns["parity"].dtype)
        atomic.write_bytes(path, chunk.to_npz_bytes())
        n += 1
    return n


def fold_summary(validation: dict) -> dict:
    out = {"baseline": validation["baseline"]["Z_hard"], "optimised": validation["optimised"]["Z_hard"],
           "improvement": validation.get("improvement"),
           "improvement_interval_68": ((validation.get("bootstrap") or {}).get("analyses", {})
                                       .get("optimised", {}).get("ratio_interval_68"))}
    learned = validation.get("learned")
    if learned:
        out["learned"] = {r["key"]: r["Z_hard"] for r in learned["rows"]}
        out["finetuned_over_cuts_only"] = learned.get("finetuned_over_cuts_only")
        boot = (learned.get("bootstrap") or {}).get("analyses", {})
        out["bootstrap"] = {k: {"ratio": v["ratio_to_cuts_only"], "ratio_interval_68": v["ratio_interval_68"],
                                "fraction_above_cuts_only": v["fraction_above_reference"]} for k, v in boot.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--run", required=True, help="a finished run directory (its skim/ and validation.json)")
    ap.add_argument("--out", required=True, help="where the swapped run goes")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "swap_halves.json"))
    args = ap.parse_args(argv)

    from zprime_grad.config import load_config
    from zprime_grad.stages.run import run_chain

    run, out = Path(args.run), Path(args.out)
    original = json.loads((run / "validation.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    chunks = swapped_skim(run / "skim", out / "skim")
    print(f"swapped the parity of {chunks} chunks -> {out / 'skim'}", flush=True)
    run_chain(load_config(args.config), out, fileset=json.loads((run / "run.json").read_text())["outputs"]["fileset"])
    swapped = json.loads((out / "validation.json").read_text())
    result = {"config": args.config, "folds": {"even_trains_odd_held_out": fold_summary(original),
                                               "odd_trains_even_held_out": fold_summary(swapped)},
              "wall_s": time.perf_counter() - start, "python": platform.python_version()}
    print(json.dumps(result, indent=1))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
