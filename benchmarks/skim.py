"""Skim speed: events/s per core, and skim time relative to a plain uproot read of the same branches.

- events/s per core = entries / CPU seconds of the whole single-process skim (IterativeExecutor:
  opening files, the bulk read of the processor's declared branches, decompression, processing);
  coffea's own ``entries / processtime`` is also written, but with preloading it leaves the read out;
- ratio = time of the Runner over the pre-computed WorkItems / time of ``uproot`` reading exactly the
  branches coffea reports as touched, over the same entry ranges; both after a warm-up (page cache),
  measured back to back ``--repeat`` times, median of the per-repeat ratios. Reported for wall time
  and for this process's CPU time; on a shared machine the CPU-time ratio is the one other
  processes' load does not distort.

    python benchmarks/skim.py [--fileset data/generated/fileset.json] [--events N] [--repeat 3]

Without a fileset the default dataset is generated first (``--events`` per MC sample).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import uproot
from coffea import processor as coffea_processor
from coffea.nanoevents import NanoAODSchema

from zprime_grad.analysis import Analysis
from zprime_grad.skim.fileset import check_files, fill_sumw, load_fileset

REPO = Path(__file__).resolve().parents[1]


def dataset(args, analysis: Analysis) -> Path:
    path = Path(args.fileset)
    if path.exists():
        return path
    from zprime_grad.generate import generate_dataset

    print(f"{path} not found: generating the default dataset ({args.events or 'configured'} events per sample)")
    return generate_dataset(analysis.config, path.parent, events=args.events, progress=False)


def branches_touched(columns: list[str]) -> list[str]:
    """coffea's touched buffers ('Muon_pt-data', 'nMuon-offsets') -> branch names."""
    return sorted({c.rsplit("-", 1)[0] for c in columns})


def plain_read(items, branches: list[str]) -> float:
    tic = time.perf_counter()
    for item in items:
        with uproot.open(item.filename) as f:
            tree = f[item.treename]
            present = [b for b in branches if b in tree]
            tree.arrays(present, entry_start=item.entrystart, entry_stop=item.entrystop, how=dict)
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fileset", default=str(REPO / "data" / "generated" / "fileset.json"))
    parser.add_argument("--events", type=int, default=None, help="MC events per sample if generating")
    parser.add_argument("--chunksize", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "skim.json"))
    args = parser.parse_args()

    analysis = Analysis.from_yaml()
    proc = analysis.processor()
    fileset, _ = check_files(load_fileset(dataset(args, analysis)), proc)
    fileset = fill_sumw(fileset)
    runner = coffea_processor.Runner(coffea_processor.IterativeExecutor(status=False), schema=NanoAODSchema,
                                     chunksize=args.chunksize, savemetrics=True)
    items = list(runner.preprocess(fileset, treename="Events"))
    warnings.simplefilter("ignore")
    runner(items[:1], proc, treename="Events")  # warm-up: imports, correction files, page cache

    def timed(func, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        out = func(*args)
        return out, time.perf_counter() - wall, time.process_time() - cpu

    branches, runs = None, []
    for _ in range(args.repeat):
        (out, metrics), skim_wall, skim_cpu = timed(lambda: runner(items, proc, treename="Events"))
        if branches is None:
            branches = branches_touched(metrics["columns"])
            plain_read(items[:1], branches)  # warm-up
        _, read_wall, read_cpu = timed(plain_read, items, branches)
        runs.append({"skim_wall_s": skim_wall, "skim_cpu_s": skim_cpu, "read_wall_s": read_wall,
                     "read_cpu_s": read_cpu, "processtime_s": metrics["processtime"]})
    median = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    ratio_wall = statistics.median(r["skim_wall_s"] / r["read_wall_s"] for r in runs)
    ratio_cpu = statistics.median(r["skim_cpu_s"] / r["read_cpu_s"] for r in runs)
    wall, read = median("skim_wall_s"), median("read_wall_s")

    entries, processtime = metrics["entries"], median("processtime_s")
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1min": os.getloadavg()[0]},  # a shared machine: wall times are rough
        "fileset": str(args.fileset), "chunksize": args.chunksize, "chunks": len(items), "entries": entries,
        "skimmed_events": sum(c.n_events for c in out["chunks"]),
        "bytes_read": metrics["bytesread"], "branches_read": len(branches),
        "processtime_s": processtime, "events_per_second_per_core": entries / median("skim_cpu_s"),
        "coffea_entries_per_processtime": entries / processtime,
        "skim_wall_s": wall, "plain_uproot_read_s": read,
        "skim_over_plain_read": ratio_wall, "skim_over_plain_read_cpu": ratio_cpu, "repeats": runs,
        "targets": {"events_per_second_per_core": 50_000, "skim_over_plain_read": 3.0},
    }
    print(f"{entries} entries in {len(items)} chunks; {len(branches)} branches, {metrics['bytesread'] / 1e6:.1f} MB")
    print(f"events/s per core (entries / skim CPU s): {result['events_per_second_per_core'] / 1e3:.1f} kHz"
          f" (coffea entries/processtime, read excluded: {result['coffea_entries_per_processtime'] / 1e3:.1f} kHz)")
    print(f"skim / plain uproot read: {ratio_wall:.2f} (wall, median of {args.repeat}), {ratio_cpu:.2f} (CPU time)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
