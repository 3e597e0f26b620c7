"""Generation speed: events/s per core with hadronisation, clustering, detector and writing.

Part 1 generates ``--events`` events of every sample kind in this process (one core) and reports
events/s per sample, excluding one-off start-up (imports, numba compilation) by warming up first.
Part 2 (``--full``) times the default ``make run`` dataset with the configured workers, from
scratch and then again (which must reuse every file).

    python benchmarks/generate.py [--events 2000] [--full] [--out benchmarks/results/generate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from zprime_grad.config import load_config
from zprime_grad.generate import generate_dataset
from zprime_grad.generate.production import FileJob, generate_file


def _config(underlying_event: bool):
    config = load_config()
    if underlying_event:
        generate = config.generate.model_copy(update={"underlying_event": True})
        config = config.model_copy(update={"generate": generate})
    return config


def per_sample_rates(events: int, underlying_event: bool) -> dict:
    config = _config(underlying_event)
    gen = config.generate
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        warm = FileJob("warmup", gen.samples["wjets"], 0, 200, 99, gen.sqrt_s, gen.underlying_event, gen.batch_size, tmp)
        generate_file(warm)
        for name, sample in gen.samples.items():
            job = FileJob(name, sample, 0, events, 1, gen.sqrt_s, gen.underlying_event, gen.batch_size, tmp)
            summary = generate_file(job)
            rates[name] = {"events": summary["nevents"], "seconds": summary["seconds"],
                           "events_per_second": summary["nevents"] / summary["seconds"]}
            print(f"{name:14s} {rates[name]['events_per_second']:8.1f} events/s per core")
    total_events = sum(r["events"] for r in rates.values())
    total_seconds = sum(r["seconds"] for r in rates.values())
    return {"samples": rates, "events_per_second_per_core": total_events / total_seconds}


def full_dataset() -> dict:
    config = load_config()
    out = Path(tempfile.mkdtemp(prefix="zprime_grad_bench_"))
    try:
        start = time.perf_counter()
        generate_dataset(config, out, progress=False)
        first = time.perf_counter() - start
        start = time.perf_counter()
        generate_dataset(config, out, progress=False)
        second = time.perf_counter() - start
        meta = json.loads((out / "generate.json").read_text())
        n_mc = sum(v["nevents"] for k, v in meta["datasets"].items() if not v["is_data"])
        return {"workers": config.generate.workers, "mc_events": n_mc, "data_events": meta["datasets"]["data"]["nevents"],
                "first_run_seconds": first, "second_run_seconds": second}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events per sample for the per-core rate")
    parser.add_argument("--full", action="store_true", help="also time the default dataset end to end")
    parser.add_argument("--underlying-event", action="store_true", help="measure with Pythia MPI switched on")
    parser.add_argument("--out", default="benchmarks/results/generate.json")
    args = parser.parse_args()
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "underlying_event": args.underlying_event}
    result["per_core"] = per_sample_rates(args.events, args.underlying_event)
    print(f"overall: {result['per_core']['events_per_second_per_core']:.1f} events/s per core (target >= 150)")
    if args.full:
        result["default_dataset"] = full_dataset()
        d = result["default_dataset"]
        print(f"default dataset: {d['mc_events']} MC + {d['data_events']} data events in {d['first_run_seconds']:.0f} s "
              f"with {d['workers']} workers (target <= 240 s); second run {d['second_run_seconds']:.1f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
