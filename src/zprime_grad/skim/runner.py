"""Skim with coffea's Runner on the local executors (iterative, futures): chunks come back to the driver.

One Runner call per dataset, so that coffea's metrics (bytes read, process time) are per dataset.
The processor returns ``{"chunks": [ColumnChunk]}``; coffea's accumulate concatenates the lists.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import loky
from coffea import processor as coffea_processor
from coffea.nanoevents import NanoAODSchema

from zprime_grad import terminal
from zprime_grad.columns import ColumnChunk
from zprime_grad.errors import UserError
from zprime_grad.skim.fileset import name_chunk_file
from zprime_grad.skim.store import summarise_chunk

EXECUTORS = ("iterative", "futures", "dask")


def load_processor(name: str, **kwargs):
    """Instantiate a processor registered in the ``zprime_grad.processors`` entry-point group."""
    found = {ep.name: ep for ep in entry_points(group="zprime_grad.processors")}
    if name not in found:
        raise UserError(f"processor '{name}' is not registered (known: {', '.join(sorted(found)) or 'none'})")
    return found[name].load()(**kwargs)


def user_error_from(err: BaseException) -> UserError:
    """A chunk failure as one line: the UserError inside coffea's wrapping, else coffea's message."""
    seen = err
    while seen is not None:
        if isinstance(seen, UserError):
            return seen
        seen = seen.__cause__ or seen.__context__
    text = str(err)
    marker = "The error was: UserError("
    if marker in text:  # crossed a process boundary: the cause is gone, the message is kept
        return UserError(text.split(marker, 1)[1].rstrip(").").strip("'\""))
    return UserError(f"skim failed: {text}")


@dataclass
class SkimResult:
    """A skim whose chunks live in this process (local executors)."""

    chunks: list[ColumnChunk]
    summaries: list[dict]
    dataset_metrics: dict
    bad_files: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0


def _executor(name: str, workers: int):
    if name == "iterative":
        return coffea_processor.IterativeExecutor(status=False)
    if name == "futures":  # one reusable process pool for all datasets (and later calls)
        pool = loky.get_reusable_executor(max_workers=workers)
        return coffea_processor.FuturesExecutor(workers=workers, pool=pool, status=False)
    raise UserError(f"executor must be one of {', '.join(EXECUTORS)}, not '{name}'")


def declared_branches(processor) -> list[str] | None:
    """The branches a processor says it may read (``processor.branches()``, optional), sorted.

    With them coffea reads every branch of a chunk in one bulk ``TTree.arrays`` call (the fileset's
    ``preload``) and NanoEvents builds its form from those branches only, not from the thousand-odd
    of a real NanoAOD file; without them everything is read lazily, branch by branch. Names that a
    file lacks are simply not read (the processor's own check reports required ones).
    """
    branches = getattr(processor, "branches", None)
    return None if branches is None else sorted(branches())


def reader_options(names: list[str] | None) -> dict:
    """``iteritems_options`` for NanoEvents: the declared branches only (``{}`` if none declared)."""
    return {} if names is None else {"filter_name": names}


def declared_reading(fileset: dict, processor) -> tuple[dict, dict]:
    """``(fileset, iteritems_options)`` for a coffea ``Runner`` call: every dataset preloads the
    processor's declared branches and NanoEvents sees only them (unchanged if none are declared)."""
    names = declared_branches(processor)
    if names is not None:
        fileset = {dataset: {**entry, "preload": names} for dataset, entry in fileset.items()}
    return fileset, reader_options(names)


def run_local(fileset: dict, processor, *, executor: str = "iterative", workers: int = 1,
              chunksize: int = 100_000, treename: str = "Events", progress: bool | None = None) -> SkimResult:
    """Every dataset's chunks through coffea's Runner, a few chunks per call so that one bar counts the
    chunks of all datasets (coffea's own per-call bars and worker output are captured: `terminal`)."""
    start = time.perf_counter()
    chunks, metrics = [], {}
    params = processor.initial_params()
    fileset, iteritems_options = declared_reading(fileset, processor)
    batch = 2 * max(1, workers)
    with terminal.chatter():
        plans = {dataset: _guarded(lambda r=runner(executor, workers, chunksize), d=dataset, e=entry:
                                   (r, list(r.preprocess({d: e}, treename=treename))))
                 for dataset, entry in fileset.items()}
        bar = terminal.bar(sum(len(items) for _, items in plans.values()), "skim", "chunk", progress=progress)
        for dataset, (run, items) in plans.items():
            # no chunks: the whole-dataset call raises coffea's own error, as it always did
            parts = [items[i:i + batch] for i in range(0, len(items), batch)] or [{dataset: fileset[dataset]}]
            for part in parts:
                out, m = _guarded(lambda: run(part, processor, treename=treename, iteritems_options=iteritems_options))
                chunks.extend(name_chunk_file(c, fileset[dataset]["metadata"]) for c in out["chunks"])
                got = metrics.setdefault(dataset, {"bytes_read": 0, "process_time_s": 0.0, "entries": 0})
                got["bytes_read"] += int(m.get("bytesread", 0))
                got["process_time_s"] += float(m["processtime"])
                got["entries"] += int(m["entries"])
                bar.update(len(part) if isinstance(part, list) else 0)
    bar.close()
    chunks.sort(key=lambda c: c.key)
    summaries = [summarise_chunk(c, processor.channels, params) for c in chunks]
    return SkimResult(chunks, summaries, metrics, wall_time_s=time.perf_counter() - start)


def runner(executor: str, workers: int, chunksize: int):
    return coffea_processor.Runner(_executor(executor, workers), schema=NanoAODSchema, chunksize=chunksize,
                                   savemetrics=True)


def _guarded(call):
    """``call()`` with coffea's chunk failures as one-line UserErrors."""
    stderr = io.StringIO()  # FuturesExecutor prints a traceback before re-raising; keep it quiet
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(stderr):
            warnings.filterwarnings("ignore", message="Performed attempt")
            return call()
    except UserError:
        raise
    except Exception as err:  # coffea wraps every chunk failure; keep the message, drop the trace
        raise user_error_from(err) from None
