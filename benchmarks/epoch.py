"""Steady-state optimisation epoch: time, per-worker event throughput and driver memory vs events.

For each sample size (skimmed events, replicated from a small skim: ``tiled_chunk``) it measures, in
one run:

* ``local``      — the chunks in this process, per-chunk forward-mode contributions + tree sum;
* ``dask-1``     — a LocalCluster with 1 worker process (chunks built and kept on the worker);
* ``dask-2``     — the same with 2 workers;
* ``reference``  — "hold everything": all events in one array per process and one
                   ``jax.value_and_grad`` of the whole objective, in float64 (how the published analysis
                   works: one whole-graph autodiff, double precision throughout);
* ``reference-float32`` — the same with the float32 per-event kernel (what the kernel alone buys).

The cost model: the kernel's work per event (``work_per_event``: erfc evaluations = variations × inner
edges, sigmoid evaluations = variations × object slots of the distinct cuts, multiply-adds of the sums over
events = bins × weight vectors × (1 + tangents)) times one core's measured time per elementary operation
(``elementary``: erfc, sigmoid and GEMM on float32 vectors, one pinned core, single-threaded XLA) is the
``limit_s`` of an epoch on one core; each mode reports ``fraction_of_limit`` = limit / (epoch × cores used).

Epoch = one forward-mode evaluation (Z0 and ∇θ on the even events, Z0 on the odd); the optax step is
negligible. Setup (building the chunks, the first round, compilations: ``setup_s``) and the first epoch are
excluded; the median of ``--repeat`` epochs is reported.
Driver memory: peak RSS of this process sampled every 5 ms during the epochs, minus the RSS before.
Each Dask worker process is pinned to its own core (every thread, via sched_setaffinity), so 1 worker
= 1 core: XLA's CPU runtime runs independent ops on several threads even with the single-threaded
``XLA_FLAGS``, so without pinning a single worker already uses both cores of a 2-core machine.

    .venv/bin/python benchmarks/epoch.py [--columns SKIMDIR] [--sizes 100000 300000 1000000]

Writes ``benchmarks/results/epoch.json``. Without ``--columns`` it generates and skims the small test
dataset first (a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from zprime_grad.columns import DEFAULT_BUCKETS, bucket_length

REPO = Path(__file__).resolve().parents[1]
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
CHUNK_EVENTS = 60_000  # per chunk, padded to the skim's bucket lengths (65536 for a full chunk)


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampling thread)."""

    def __enter__(self):
        self.proc, self.base, self.peak, self._stop = psutil.Process(), 0, 0, threading.Event()
        self.base = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.base) / 1e6


def small_skim(workdir: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import small_config

    from zprime_grad.generate import generate_dataset
    from zprime_grad.skim.pipeline import skim_options, skim_to_directory

    config = small_config()
    fileset = generate_dataset(config, workdir / "generated", progress=False)
    skim_to_directory(config, fileset, workdir / "skim", skim_options(config, executor="iterative", chunksize=200))
    return workdir / "skim"


def plan(descriptions: list[dict], n_events: int) -> list[tuple]:
    """Chunks to build: each process gets n/P events (weights rescaled to its real total)."""
    real = {}
    for d in descriptions:
        if not d["is_data"]:
            real[d["process"]] = real.get(d["process"], 0) + d["n_events"]
    per_process = n_events // len(real)
    jobs, index = [], 0
    for process in sorted(real):
        left = per_process
        while left > 0:
            n = min(CHUNK_EVENTS, left)
            jobs.append((process, n, bucket_length(n, DEFAULT_BUCKETS), real[process] / per_process, index))
            index += n
            left -= n
    return jobs


def balanced_submit(client, func, paths, jobs) -> list:
    """Build each chunk on the least-loaded worker (by padded rows), so 2 workers share the work evenly;
    ``allow_other_workers`` keeps the lineage usable if that worker dies."""
    loads = {a: 0 for a in sorted(client.scheduler_info()["workers"])}
    futures = [None] * len(jobs)
    for i in sorted(range(len(jobs)), key=lambda i: -jobs[i][2]):
        address = min(loads, key=loads.get)
        loads[address] += jobs[i][2]
        futures[i] = client.submit(func, paths, *jobs[i], workers=[address], allow_other_workers=True, pure=False)
    return futures


def rows_per_worker(client, futures, jobs) -> dict:
    """Padded rows each worker holds: the balance the epoch time depends on."""
    length = {f.key: job[2] for f, job in zip(futures, jobs)}
    out: dict = {}
    for key, workers in client.who_has(futures).items():
        for w in workers:
            out[w] = out.get(w, 0) + length.get(key, 0)
    return out


def time_epochs(evaluate, theta, relax, repeat: int) -> tuple[float, float, object]:
    tic = time.perf_counter()
    first = evaluate(theta, relax)  # compiles
    compile_s = time.perf_counter() - tic
    times = []
    with PeakRSS() as mem:
        for _ in range(repeat):
            tic = time.perf_counter()
            evaluate(theta, relax)
            times.append(time.perf_counter() - tic)
    return statistics.median(times), compile_s, (mem.delta_mb, first)


def work_per_event(layout, chunk) -> dict:
    """The forward-mode kernel's elementary operations per event (see the module docstring)."""
    sets = 1 + len(layout.kinematic_variations)
    leaf_cuts = {c for ch in layout.channels for cut in ch.cuts for c in getattr(cut, "cuts", (cut,))}
    slots = sum(int(np.prod(chunk.columns[c.column].shape[1:], dtype=int)) for c in leaf_cuts if hasattr(c, "column")
                and c.column in chunk.columns)
    n_weights = 1 + len(layout.weight_variations)
    vectors = len(layout.channels) * 2 * (n_weights + 1 + len(layout.kinematic_variations))  # halves × (yields, Σw²)
    return {"erfc": sets * (layout.n_bins - 1), "sigmoid": sets * slots,
            "mac": vectors * layout.n_bins * (1 + len(layout.param_names))}


def cost_per_event(work: dict, unit: dict) -> float:
    return sum(work[k] * unit[k] for k in work)


def elementary() -> dict:
    """Seconds per float32 erfc, sigmoid and GEMM multiply-add on this (pinned, single-threaded) core."""
    import jax
    import jax.numpy as jnp

    def best(f, *args, n=7):
        jax.block_until_ready(f(*args))
        times = []
        for _ in range(n):
            tic = time.perf_counter()
            jax.block_until_ready(f(*args))
            times.append(time.perf_counter() - tic)
        return min(times)

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(65536, 16)), jnp.float32)
    a, b = jnp.asarray(rng.random((64, 65536)), jnp.float32), jnp.asarray(rng.random((65536, 10)), jnp.float32)
    return {"erfc": best(jax.jit(jax.scipy.special.erfc), x) / x.size,
            "sigmoid": best(jax.jit(jax.nn.sigmoid), x) / x.size,
            "mac": best(jax.jit(jnp.matmul), a, b) / (64 * 65536 * 10)}


def elementary_on_one_core() -> dict:
    """`elementary` in a child process pinned to one core with single-threaded XLA (as a Dask worker here)."""
    import subprocess

    env = {**os.environ, "XLA_FLAGS": SINGLE_THREAD_XLA}
    core = min(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, __file__, "--elementary"], env=env, capture_output=True, text=True,
                         check=True, preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(config, paths, n_events: int, repeat: int, modes: list[str], unit_costs: dict) -> list[dict]:
    from distributed import Client, LocalCluster

    from zprime_grad.columns import ColumnChunk
    from zprime_grad.chunks import DaskChunks, LocalChunks, chunk_description
    from zprime_grad.optimise.driver import Evaluator, build_problem
    from zprime_grad.optimise.reference import hold_everything, reference_evaluation
    from zprime_grad.scaling import tiled_chunk
    from zprime_grad.skim.resident import chunk_nbytes

    jobs = plan([chunk_description(ColumnChunk.from_npz(p)) for p in paths], n_events)
    relax, rows = (12.0, 0.25), []
    limit_s = None

    def row(mode, workers, median, compile_s, mem, extra=None):
        cores = workers if mode.startswith("dask") else len(os.sched_getaffinity(0))
        out = {"events": n_events, "mode": mode, "workers": workers, "chunks": len(jobs), "epoch_s": median,
               "first_epoch_s": compile_s, "events_per_s": n_events / median,
               "events_per_s_per_worker": n_events / median / workers, "driver_peak_rss_delta_mb": mem,
               "limit_s": limit_s, "fraction_of_limit": limit_s / (median * cores) if limit_s else None,
               **(extra or {})}
        print(json.dumps(out), flush=True)
        rows.append(out)

    if "local" in modes or "reference" in modes:
        base = psutil.Process().memory_info().rss
        chunks = [tiled_chunk(paths, *job) for job in jobs]
        held_mb = (psutil.Process().memory_info().rss - base) / 1e6
        local = LocalChunks(chunks, fan_in=config.optimise.fan_in)
        tic = time.perf_counter()
        problem = build_problem(config, local, gradient="forward")
        setup = {"setup_s": time.perf_counter() - tic, "chunks_held_in_driver_mb": held_mb}
        limit_s = n_events * cost_per_event(work_per_event(problem.layout, chunks[0]), unit_costs)
        if "local" in modes:
            median, compile_s, (mem, _) = time_epochs(Evaluator(local, problem), problem.theta0, relax, repeat)
            row("local", 1, median, compile_s, mem, setup)
        events = hold_everything(chunks, problem.layout) if any(m.startswith("reference") for m in modes) else None
        for mode, precision in (("reference", "float64"), ("reference-float32", "float32")):
            if mode not in modes:
                continue
            def reference(theta, relax, precision=precision):
                return reference_evaluation(events, theta, relax, problem.objective, precision=precision)
            median, compile_s, (mem, _) = time_epochs(reference, problem.theta0, relax, repeat)
            row(mode, 1, median, compile_s, mem, setup)
        del events
        local.close()
        del chunks, local
    for workers in (1, 2):
        if f"dask-{workers}" not in modes:
            continue
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None, env={"XLA_FLAGS": SINGLE_THREAD_XLA}) as cluster, \
                Client(cluster) as client:
            pin_workers(client)
            futures = balanced_submit(client, tiled_chunk, paths, jobs)
            tic = time.perf_counter()
            backend = DaskChunks(client, futures, fan_in=config.optimise.fan_in)
            problem = build_problem(config, backend, gradient="forward")
            setup_s = time.perf_counter() - tic
            median, compile_s, (mem, _) = time_epochs(Evaluator(backend, problem), problem.theta0, relax, repeat)
            per_epoch = backend.bytes_received / (repeat + 2)
            resident = sum(client.gather(client.map(chunk_nbytes, backend.futures, pure=False))) / 1e6
            row(f"dask-{workers}", workers, median, compile_s, mem,
                {"setup_s": setup_s, "bytes_received_per_round": per_epoch, "resident_on_workers_mb": resident,
                 "rows_per_worker": rows_per_worker(client, backend.futures, jobs)})
            backend.close()
    return rows


def pin_to_core(core: int) -> list[int]:
    """Runs on a worker: pin every thread of this process to ``core`` (threads made later inherit it)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except OSError:  # a thread that has just exited
            pass
    return sorted(os.sched_getaffinity(0))


def pin_workers(client) -> dict:
    """Worker i -> core i (mod the number of cores)."""
    cores = sorted(os.sched_getaffinity(0))
    workers = sorted(client.scheduler_info()["workers"])
    return {w: client.run(pin_to_core, cores[i % len(cores)], workers=[w])[w] for i, w in enumerate(workers)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", help="a skim directory to replicate (default: generate + skim the test dataset)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["local", "dask-1", "dask-2", "reference", "reference-float32"])
    parser.add_argument("--elementary", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="/tmp/zprime_grad_bench_epoch")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "epoch.json"))
    args = parser.parse_args()
    if args.elementary:
        print(json.dumps(elementary()))
        return 0

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import small_config

    from zprime_grad.chunks import chunk_paths

    columns = Path(args.columns) if args.columns else small_skim(Path(args.workdir))
    config = small_config()
    paths = chunk_paths(columns)
    rows, unit_costs = [], elementary_on_one_core()
    print(json.dumps({"elementary_s": unit_costs}), flush=True)
    for n in args.sizes:
        rows.extend(measure(config, paths, n, args.repeat, args.modes, unit_costs))
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_at_end": os.getloadavg()},
              "chunk_events": CHUNK_EVENTS, "repeat": args.repeat, "elementary_s": unit_costs, "rows": rows}
    at_max = {r["mode"]: r for r in rows if r["events"] == max(args.sizes)}
    if "dask-1" in at_max and "dask-2" in at_max:
        result["speedup_2_vs_1_workers_at_max"] = at_max["dask-1"]["epoch_s"] / at_max["dask-2"]["epoch_s"]
    if "local" in at_max and "reference" in at_max:
        result["local_speedup_vs_reference_at_max"] = at_max["reference"]["epoch_s"] / at_max["local"]["epoch_s"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
