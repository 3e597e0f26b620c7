"""Scale of the reduction: per-epoch overhead over the compute vs the number of chunks (issue #15, 3).

A LocalCluster of 2 worker processes (1 thread each, 127.0.0.1, no dashboard, each pinned to its own
core as in ``benchmarks/epoch.py``) holds N tiny MC chunks (``--chunk-events`` events each, default
256 = the smallest bucket, cut from tiles of the real small skim so the real kernel ``forward_part``
runs; weights rescaled so each process keeps its real total). Chunks are placed interleaved (chunk i
on worker i mod 2, as ``balanced_submit`` places equal chunks): every span of consecutive chunks is
split over both workers, the worst case for batching. For each N and each ``DaskChunks.batch_levels``
(0: one task per chunk, the reduction before this benchmark; k: one task per worker per span of
``fan_in**k`` chunks) it measures:

* ``epoch_s``   — one forward-mode epoch through `Evaluator` (Σ h, Σ ∂h/∂θ on the even events, Σ h on
  the odd; the driver's objective and chain rule included): median of ``--repeat`` epochs after one
  untimed epoch (``build_problem``'s first round compiles the kernel on both workers before that).
* ``compute_s`` — the kernel alone: right after each timed epoch, on each worker, inside the worker
  process and without Dask tasks (``client.run``), ``forward_part`` over the chunks that worker holds
  then (a chunk held by both counts once), both workers at once; the slower worker's time. That is
  the epoch a perfect scheduler with no per-task cost would reach with this placement. Median.
* ``overhead_s`` = median over the repeats of (epoch − the compute measured right after it; paired,
  so that the machine's drift, e.g. others' tests, cancels): everything the distribution adds per
  epoch — the driver
  submitting tasks, the scheduler, task dispatch on the workers, (de)serialising the arguments and
  the per-chunk parts, the tree sums and their transfers, the driver's objective (``driver_s``, also
  reported alone) and, on this 2-core machine, the CPU the driver and the scheduler take from the two
  pinned workers.

Also: tasks per epoch (counted at the client), bytes received by the driver per epoch
(``DaskChunks.bytes_received``), the driver's peak RSS increase during the timed epochs, the 1/5/15-min
load averages before and after every row (the chunk count is measured only once the 1-min load is
below ``--max-load``, or after ``--settle-s``; the load during a row is mostly the benchmark itself).

    .venv/bin/python benchmarks/chunks.py [--columns SKIMDIR] [--chunks 100 500 1000 2000 5000]

Writes ``benchmarks/results/chunks.json``. Without ``--columns`` it generates and skims the small test
dataset into ``--workdir`` first (a minute, reused when there).

The measured rows are in ``results/chunks.json``, with the design chosen from them (``decision``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
from tests.optimise.test_reduction import Counting  # noqa: E402  (the client, counting its tasks)

TEMPLATE_EVENTS = 4096  # per process and worker: chunks are cut from it at different offsets
DECISION = (
    "DaskChunks.batch_levels = 2: one task per worker per span of fan_in**2 = 64 consecutive chunks (a span "
    "split over workers: plus one merge task), the fixed tree above. Against a task per chunk (0) it sends "
    "~20x fewer tasks and removes most of the overhead at every chunk count; spans of fan_in**3 = 512 (3) "
    "send fewer tasks again, but their overhead is not lower beyond the run-to-run noise (see exploratory), "
    "and each task is 8x bigger: a merge holds 512 leaf parts, work stealing moves 256 chunks at once. The "
    "rest grows with the chunks: with chunks interleaved over the workers every span is split, so about "
    "half the leaf parts (layout-sized) cross to the span's merge each epoch, and the workers' event loops "
    "share their core with the kernel. The tree's fan-in is no knob here (it changes the bits; its sum "
    "tasks are 1/7 of the per-chunk tasks) and one graph instead of client.submit per task would save at "
    "most the submission: ~0.1 s of a 2000-chunk epoch (who_has ~20 ms, ~100 submits 40-70 ms).")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def settle(max_load: float, timeout_s: float) -> list[float]:
    """Wait until the 1-min load average is below ``max_load`` (others' tests, the previous row)."""
    end = time.monotonic() + timeout_s
    while os.getloadavg()[0] > max_load and time.monotonic() < end:
        time.sleep(5)
    return load()


def plan(descriptions: list[dict], n_chunks: int, chunk_events: int) -> list[tuple[str, float]]:
    """(process, weight scale) per chunk: the MC processes in sorted blocks, as a skim sorts them."""
    real: dict = {}
    for d in descriptions:
        if not d["is_data"]:
            real[d["process"]] = real.get(d["process"], 0) + d["n_events"]
    processes = sorted(real)
    counts = [n_chunks // len(processes) + (i < n_chunks % len(processes)) for i in range(len(processes))]
    return [(p, real[p] / (c * chunk_events)) for p, c in zip(processes, counts) for _ in range(c)]


def cut_chunk(template, offset: int, n_events: int, index: int):
    """Runs on a worker: rows [offset, offset + n_events) of a tiled template, copied (its own memory)."""
    def cut(a):
        return np.array(a[offset:offset + n_events], copy=True)

    return dataclasses.replace(
        template, columns={k: cut(v) for k, v in template.columns.items()},
        weights={k: cut(v) for k, v in template.weights.items()},
        variations={v: {k: cut(a) for k, a in cols.items()} for v, cols in template.variations.items()},
        ids={k: cut(v) for k, v in template.ids.items()}, n_events=n_events,
        provenance={"file": f"tiled:{template.process}", "entrystart": index, "entrystop": index + n_events})


def build_chunks(client, paths, jobs, chunk_events: int, placement: str = "interleaved") -> list:
    """Chunk i on worker i mod W (``interleaved``) or on worker i * W // N (``blocks``), cut from a
    per-(process, worker) template built on that worker."""
    from zprime_grad.columns import DEFAULT_BUCKETS, bucket_length
    from zprime_grad.scaling import tiled_chunk

    assert bucket_length(chunk_events, DEFAULT_BUCKETS) == chunk_events, "--chunk-events: use a bucket length"
    workers = sorted(client.scheduler_info()["workers"])
    templates, futures = {}, []
    for i, (process, scale) in enumerate(jobs):
        w = workers[i % len(workers) if placement == "interleaved" else i * len(workers) // len(jobs)]
        if (process, w) not in templates:
            templates[process, w] = client.submit(tiled_chunk, paths, process, TEMPLATE_EVENTS, TEMPLATE_EVENTS,
                                                  scale, 0, workers=[w], pure=False)
        offset = (i * chunk_events) % TEMPLATE_EVENTS
        futures.append(client.submit(cut_chunk, templates[process, w], offset, chunk_events, i * chunk_events,
                                     workers=[w], allow_other_workers=True, pure=False))
    from distributed import wait

    wait(futures)
    for t in templates.values():
        t.release()
    return futures


def held(client, futures) -> tuple[dict, dict]:
    """The chunk keys by the worker holding them (a chunk held twice, a stolen task's copy, once)."""
    who = client.who_has(futures)
    keys: dict = {}
    for f in futures:
        keys.setdefault(min(who[f.key]), []).append(f.key)
    return keys, who


def kernel_seconds(keys_by_worker, layout, theta, relax, dask_worker=None) -> tuple[float, int]:
    """Runs in each worker process (client.run): ``forward_part`` over the chunks it holds, no tasks."""
    from zprime_grad.optimise.contribution import forward_part

    data = dask_worker.data  # a copy dropped since who_has (the active memory manager): skipped
    chunks = [data[k] for k in keys_by_worker.get(dask_worker.address, []) if k in data]
    tic = time.perf_counter()
    for c in chunks:
        forward_part(c, layout, theta, relax)
    return time.perf_counter() - tic, len(chunks)


def measure(config, paths, n_chunks: int, args) -> list[dict]:
    from distributed import Client, LocalCluster
    from epoch import SINGLE_THREAD_XLA, PeakRSS, pin_workers

    from zprime_grad.chunks import DaskChunks, chunk_description
    from zprime_grad.columns import ColumnChunk
    from zprime_grad.optimise.contribution import forward_part
    from zprime_grad.optimise.driver import Evaluator, build_problem
    from zprime_grad.objective import chain_rule
    from zprime_grad.skim.resident import chunk_nbytes

    jobs = plan([chunk_description(ColumnChunk.from_npz(p)) for p in paths], n_chunks, args.chunk_events)
    relax, rows = (12.0, 0.25), []
    load_before = settle(args.max_load, args.settle_s)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      env={"XLA_FLAGS": SINGLE_THREAD_XLA}) as cluster, Client(cluster) as client:
        pin_workers(client)
        tic = time.perf_counter()
        futures = build_chunks(client, paths, jobs, args.chunk_events, args.placement)
        build_s = time.perf_counter() - tic
        resident = sum(client.gather(client.map(chunk_nbytes, futures, pure=False))) / 1e6
        for batch_levels in args.batch_levels:
            backend = DaskChunks(client, futures, fan_in=config.optimise.fan_in, owns_futures=False)
            backend.batch_levels = batch_levels
            tic = time.perf_counter()
            problem = build_problem(config, backend, gradient="forward")  # its first round compiles
            setup_s = time.perf_counter() - tic
            evaluate = Evaluator(backend, problem)
            theta = problem.theta0
            evaluate(theta, relax)  # untimed
            before = load()
            counting = backend.client = Counting(client)
            received, times, computes = backend.bytes_received, [], []
            with PeakRSS() as mem:
                for _ in range(args.repeat):  # an epoch, then the kernel alone on the same chunks: paired
                    tic = time.perf_counter()
                    evaluate(theta, relax)
                    times.append(time.perf_counter() - tic)
                    keys, who = held(client, futures)
                    per_worker = client.run(kernel_seconds, keys, problem.layout, theta, relax)
                    computes.append(max(s for s, _ in per_worker.values()))
            backend.client = client
            r = backend.map_reduce(forward_part, layout=problem.layout, theta=theta, relax=relax)
            tic = time.perf_counter()
            _, dfdH = problem.objective.value_and_grad(r["train"])
            chain_rule(dfdH, r["jac"]), problem.objective.value(r["valid"])
            driver_s = time.perf_counter() - tic
            rows.append({"chunks": n_chunks, "chunk_events": args.chunk_events, "placement": args.placement,
                         "batch_levels": batch_levels,
                         "fan_in": backend.fan_in, "epoch_s": statistics.median(times),
                         "compute_s": statistics.median(computes),
                         "overhead_s": statistics.median(e - c for e, c in zip(times, computes)),
                         "epoch_times_s": times, "compute_times_s": computes,
                         "compute_all_workers_s": sum(s for s, _ in per_worker.values()),
                         "chunks_per_worker": sorted(n for _, n in per_worker.values()),
                         "chunks_held_twice": sum(len(who[f.key]) > 1 for f in futures),
                         "tasks_per_epoch": counting.tasks / args.repeat, "setup_s": setup_s, "driver_s": driver_s,
                         "bytes_received_per_epoch": (backend.bytes_received - received) / args.repeat,
                         "driver_peak_rss_delta_mb": mem.delta_mb,
                         "driver_rss_mb": psutil.Process().memory_info().rss / 1e6,
                         "load_before": before, "load_after": load()})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "epoch_times_s"}), flush=True)
        for row in rows:
            row.update({"build_chunks_s": build_s, "resident_on_workers_mb": resident,
                        "load_before_cluster": load_before})
        for f in futures:
            f.release()
    return rows


def table(rows: list[dict]) -> str:
    """Per chunk count and ``batch_levels``: epoch, compute, overhead (s) and tasks per epoch; the
    load averages before the chunk count's cluster started."""
    levels = sorted({r["batch_levels"] for r in rows})
    head = "".join(f"  {f'batch_levels={k}':<30}" for k in levels)
    lines = [f"chunks{head}  load before", "      " + "  epoch compute overhead tasks " * len(levels)]
    for n in sorted({r["chunks"] for r in rows}):
        line = f"{n:6d}"
        for k in levels:
            r = next((r for r in rows if r["chunks"] == n and r["batch_levels"] == k), None)
            line += (f"  {r['epoch_s']:5.2f} {r['compute_s']:7.2f} {r['overhead_s']:8.2f} {r['tasks_per_epoch']:5.0f} "
                     if r else f"  {'-':<30}")
        before = next(r["load_before_cluster"] for r in rows if r["chunks"] == n)
        lines.append(f"{line}  {before}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", help="a skim directory to tile (default: generate + skim the test dataset)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[100, 500, 1000, 2000, 5000])
    parser.add_argument("--chunk-events", type=int, default=256, help="events per chunk (a bucket length)")
    parser.add_argument("--batch-levels", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--placement", choices=["interleaved", "blocks"], default="interleaved",
                        help="chunk i on worker i mod 2, or the first half on one worker")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--settle-s", type=float, default=180.0)
    parser.add_argument("--workdir", default="/tmp/zprime_grad_bench_chunks")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "chunks.json"))
    args = parser.parse_args()

    from conftest import small_config
    from epoch import small_skim

    from zprime_grad.chunks import chunk_paths

    skim = Path(args.workdir) / "skim"
    columns = Path(args.columns) if args.columns else (skim if (skim / "skim.json").exists()
                                                        else small_skim(Path(args.workdir)))
    config = small_config()
    paths = chunk_paths(columns)
    rows = []
    for n in args.chunks:
        rows.extend(measure(config, paths, n, args))
    from zprime_grad.chunks import DaskChunks

    at = {(r["chunks"], r["batch_levels"]): r for r in rows}
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "memory_gb": psutil.virtual_memory().total / 1e9, "load_average_at_end": load()},
              "command": ".venv/bin/python benchmarks/chunks.py " + " ".join(sys.argv[1:]),
              "workers": 2, "overhead": "median over the repeats of epoch - compute (module docstring)",
              "library_batch_levels": DaskChunks.batch_levels, "decision": DECISION,
              "table": table(rows).splitlines(),
              "overhead_at_2000_chunks_s": {k: at[2000, k]["overhead_s"] for k in args.batch_levels
                                            if (2000, k) in at},
              "rows": rows}
    print(table(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
