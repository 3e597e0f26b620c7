"""The default dataset: plan the files, generate them in worker processes, write ``fileset.json``.

``fileset.json`` is coffea's fileset format. Each dataset's metadata carries what the skim needs to
normalise it: ``xsec`` (pb, forced-decay branching fractions and k-factor included), ``sumw``
(Σ genWeight over all its files), ``nevents``, ``process``, ``variation``, ``is_data``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import closing
from pathlib import Path

from zprime_grad import atomic, terminal
from zprime_grad.config import Config
from zprime_grad.errors import UserError
from zprime_grad.generate.production import FileJob, cached_summary, generate_file
from zprime_grad.skim.fileset import LOGICAL_NAMES

log = logging.getLogger(__name__)


def plan(config: Config, out: Path, events: int, seed: int) -> list[FileJob]:
    gen = config.generate
    jobs = []
    for name, sample in gen.samples.items():
        total = max(1, round(events * sample.events_scale))
        n_files = math.ceil(total / gen.events_per_file)
        for index in range(n_files):
            n = min(gen.events_per_file, total - index * gen.events_per_file)
            jobs.append(FileJob(name, sample, index, n, seed, gen.sqrt_s, gen.underlying_event, gen.batch_size, str(out)))
    return jobs


def _run_jobs(jobs: list[FileJob], workers: int, progress: bool) -> list[dict]:
    cached = {j: cached_summary(j) for j in jobs}
    done = {j: s for j, s in cached.items() if s is not None}
    todo = [j for j in jobs if j not in done]
    if done:
        log.info("generate: %d of %d files already exist for these settings", len(done), len(jobs))
    if not todo:
        terminal.say(f"generate: reused {len(jobs)} files generated earlier with these settings")
        return [done[j] for j in jobs]
    total = sum(j.n_events for j in todo)
    log.info("generate: %d events in %d files on %d worker(s)", total, len(todo), workers)
    # spawn: the parent may have started threads (jax, dask) that a fork would copy half-initialised;
    # the workers start inside `chatter`, so the FastJet banner each prints to fd 1 is captured
    context = multiprocessing.get_context("spawn")
    bar = terminal.bar(total, "generate", "ev", progress=progress)
    with closing(bar), terminal.chatter(), context.Manager() as manager, \
            ProcessPoolExecutor(workers, mp_context=context, initializer=_leave_ctrl_c_to_the_parent) as pool:
        queue = manager.Queue()
        pending = {pool.submit(generate_file, job, queue): job for job in sorted(todo, key=lambda j: -j.n_events)}
        try:
            while pending:
                finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                while not queue.empty():
                    bar.update(queue.get()[1])
                for future in finished:
                    job = pending.pop(future)
                    done[job] = future.result()  # a worker error propagates here, naming nothing half-written
                    log.info("generate: wrote %s (%d events, %.1f s)", job.path.name, job.n_events, done[job]["seconds"])
                    bar.set_postfix_str(f"files {len(todo) - len(pending)}/{len(todo)}")
        except BaseException:
            _stop_now(pool)
            raise
    return [done[j] for j in jobs]


def _leave_ctrl_c_to_the_parent() -> None:
    """A terminal's Ctrl-C reaches every process of the group; a worker inside Pythia's C++ loop would
    only notice it after its batch. The parent decides and stops the workers (`_stop_now`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """Stop at once, not after the files being generated are done: a file is written atomically, so a
    killed worker leaves no partial file (its temporary is cleaned by the next run)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    workers = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        process.terminate()
    for process in workers:
        process.join(timeout=10)


def effective_xsec(config: Config, summaries: list[dict]) -> dict[str, float]:
    """Cross section (pb) per sample. Slices of one process split its xsec by Pythia's σ ratio."""
    sigma: dict[str, list[tuple[float, int]]] = {}
    for s in summaries:
        sigma.setdefault(s["sample"], []).append((s["sigma_gen_pb"], s["nevents"]))
    # Pythia's σ estimate per sample, combining files by their event counts
    sigma_gen = {k: sum(x * n for x, n in v) / sum(n for _, n in v) for k, v in sigma.items()}
    fixed = {s["sample"]: s["xsec_pb"] for s in summaries}
    groups: dict[str, list[str]] = {}
    for name, sample in config.generate.samples.items():
        groups.setdefault(sample.process or name, []).append(name)
    xsec = {}
    for members in groups.values():
        total_gen = sum(sigma_gen[m] for m in members)
        for m in members:
            k = config.generate.samples[m].k_factor
            share = sigma_gen[m] / total_gen
            xsec[m] = k * (fixed[m] * share if fixed[m] is not None else sigma_gen[m])
    return xsec


def mc_fileset(config: Config, jobs: list[FileJob], summaries: list[dict]) -> dict:
    # slices share their process's cross section within one variation: a two-point sample (scaleup …)
    # is normalised on its own, never split with the nominal samples of its process
    samples = config.generate.samples
    xsec = {}
    for variation in sorted({s.variation for s in samples.values()}):
        members = {n: s for n, s in samples.items() if s.variation == variation}
        only = config.model_copy(update={"generate": config.generate.model_copy(update={"samples": members})})
        xsec.update(effective_xsec(only, [s for s in summaries if s["sample"] in members]))
    alternatives: dict[str, list[str]] = {}  # process -> its two-point variations in this fileset
    for name, s in samples.items():
        if s.variation != "nominal":
            alternatives.setdefault(s.process or name, []).append(s.variation)
    fileset: dict = {}
    for job, summary in zip(jobs, summaries):
        entry = fileset.setdefault(job.sample, {"files": {}, "metadata": {
            "sample": job.sample,
            "process": job.config.process or job.sample,
            "variation": job.config.variation,
            "is_data": False,
            "xsec": xsec[job.sample],
            "sumw": 0.0,
            "sumw2": 0.0,
            "nevents": 0,
            **({"two_point_variations": {p: sorted(set(v)) for p, v in sorted(alternatives.items())}}
               if alternatives else {}),
        }})
        path = str(job.path.resolve())
        entry["files"][path] = "Events"
        meta = entry["metadata"]
        meta.setdefault(LOGICAL_NAMES, {})[path] = job.path.relative_to(job.out_dir).as_posix()
        meta["sumw"] += summary["sumw"]
        meta["sumw2"] += summary["sumw2"]
        meta["nevents"] += summary["nevents"]
    return fileset


def generate_dataset(
    config: Config,
    out: str | Path | None = None,
    *,
    events: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Generate (or reuse) every sample and the pseudo-data; return the path of ``fileset.json``."""
    from zprime_grad.generate.pseudodata import make_pseudodata

    gen = config.generate
    if gen is None:
        raise UserError(f"{config.source or 'config'}: no 'generate' section: give a fileset (--fileset or 'fileset:')")
    out = Path(out if out is not None else gen.out)
    out.mkdir(parents=True, exist_ok=True)
    events = events if events is not None else gen.events
    seed = seed if seed is not None else gen.seed
    jobs = plan(config, out, events, seed)
    for stale in out.glob("*/.*.tmp*"):  # left by an interrupted run; never mistaken for output
        stale.unlink(missing_ok=True)
    start = time.perf_counter()
    summaries = _run_jobs(jobs, workers or gen.workers, progress)
    fileset = mc_fileset(config, jobs, summaries)
    if gen.data.enabled:
        fileset["data"] = make_pseudodata(config, fileset, out, seed)
    path = out / "fileset.json"
    atomic.write_json(path, fileset)
    atomic.write_json(out / "generate.json", {
        "events": events,
        "seed": seed,
        "wall_seconds": time.perf_counter() - start,
        "files": summaries,
        "datasets": {k: v["metadata"] for k, v in fileset.items()},
    })
    log.info("generate: %s (%d datasets, %d files)", path, len(fileset), sum(len(v["files"]) for v in fileset.values()))
    return path
