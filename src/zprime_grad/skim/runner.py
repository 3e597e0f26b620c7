"""Skim with coffea's Runner on the local executors (iterative, futures): chunks come back to the driver.

Runner calls per dataset, so that coffea's metrics (bytes read, process time) are per dataset.
The processor returns ``{"chunks": [ColumnChunk]}``; coffea's accumulate concatenates the lists.

``skip_bad_files``: a file can open fine on the driver (`fileset.check_files`) and still fail while its
baskets are read (truncated, damaged). When a batch of chunks fails, the dataset's other batches still
run; then each chunk of the failed batches is read again straight from its file (`fileset.read_failure`).
Files that fail there are dropped and listed, and the dataset is skimmed again without them (its Σ
genWeight changes with its files, and every weight with it); a failure that is not in reading (the
files read fine) is an error as before.
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
from zprime_grad.skim.fileset import bad_file, fill_sumw, name_chunk_file, read_failure
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
              chunksize: int = 100_000, treename: str = "Events", progress: bool | None = None,
              skip_bad_files: bool = False) -> SkimResult:
    """Every dataset's chunks through coffea's Runner, a few chunks per call so that one bar counts the
    chunks of all datasets (coffea's own per-call bars and worker output are captured: `terminal`).
    MC datasets without ``sumw`` get it here (`fileset.fill_sumw`); ``skip_bad_files``: see the module."""
    start = time.perf_counter()
    chunks, metrics, bad = [], {}, []
    params = processor.initial_params()
    names = declared_branches(processor)
    with terminal.chatter():
        filled = fill_sumw(fileset, skip_bad_files=skip_bad_files, bad=bad)  # every xsec checked before any work
        plans = {dataset: _plan(executor, workers, chunksize, treename, dataset, entry, names)
                 for dataset, entry in filled.items()}
        bar = terminal.bar(sum(len(plan[2]) for plan in plans.values()), "skim", "chunk", progress=progress)
        for dataset in list(plans):
            while True:
                got, got_metrics, failed = _run_dataset(dataset, *plans[dataset], processor, treename, names, bar,
                                                        2 * max(1, workers), skip_bad_files)
                if not failed:
                    break
                unreadable = _unreadable(failed, treename, names)
                if not unreadable:  # the files read fine: the processor failed, not the input
                    raise failed[0][1]
                bad += [bad_file(dataset, f, filled[dataset]["metadata"], err, where) for f, (err, where)
                        in sorted(unreadable.items())]
                remaining = {f: t for f, t in filled[dataset]["files"].items() if f not in unreadable}
                if not remaining:
                    got, got_metrics = [], None
                    break
                # the input's metadata: Σ genWeight again over the files left, unless the fileset gave it
                filled[dataset] = fill_sumw({dataset: {**fileset[dataset], "files": remaining}},
                                            skip_bad_files=True, bad=bad)[dataset]
                plans[dataset] = _plan(executor, workers, chunksize, treename, dataset, filled[dataset], names)
                bar.total += len(plans[dataset][2])
            chunks.extend(got)
            if got_metrics is not None:
                metrics[dataset] = got_metrics
    bar.close()
    if not metrics and bad:
        raise UserError("no readable input files left: " + "; ".join(f"{b['file']} ({b['error']})" for b in bad))
    chunks.sort(key=lambda c: c.key)
    summaries = [summarise_chunk(c, processor.channels, params) for c in chunks]
    return SkimResult(chunks, summaries, metrics, bad_files=bad, wall_time_s=time.perf_counter() - start)


def _plan(executor: str, workers: int, chunksize: int, treename: str, dataset: str, entry: dict, names):
    """(the dataset's fileset entry with the processor's declared branches preloaded, a runner, its WorkItems)."""
    if names is not None:
        entry = {**entry, "preload": names}
    run = runner(executor, workers, chunksize)
    return entry, run, _guarded(lambda: list(run.preprocess({dataset: entry}, treename=treename)))


def _run_dataset(dataset: str, entry: dict, run, items: list, processor, treename: str, names, bar, batch: int,
                 keep_going: bool) -> tuple[list, dict, list]:
    """One dataset's chunks, ``batch`` WorkItems per Runner call: (chunks, metrics, failed batches as
    ``(items, UserError)``). ``keep_going``: a failed batch does not stop the others."""
    chunks, failed = [], []
    got = {"bytes_read": 0, "process_time_s": 0.0, "entries": 0}
    iteritems_options = reader_options(names)
    # no chunks: the whole-dataset call raises coffea's own error, as it always did
    parts = [items[i:i + batch] for i in range(0, len(items), batch)] or [{dataset: entry}]
    for part in parts:
        try:
            out, m = _guarded(lambda: run(part, processor, treename=treename, iteritems_options=iteritems_options))
        except UserError as err:
            if not keep_going or not isinstance(part, list):
                raise
            failed.append((part, err))
            continue
        finally:
            bar.update(len(part) if isinstance(part, list) else 0)
        chunks.extend(name_chunk_file(c, entry["metadata"]) for c in out["chunks"])
        got["bytes_read"] += int(m.get("bytesread", 0))
        got["process_time_s"] += float(m["processtime"])
        got["entries"] += int(m["entries"])
    return chunks, got, failed


def _unreadable(failed: list, treename: str, names) -> dict:
    """``{file: (exception, where)}`` of the files whose chunks in ``failed`` cannot be read straight
    from the file (the first failing entry range of each)."""
    out: dict = {}
    for items, _ in failed:
        for item in items:
            if item.filename in out:
                continue
            err = read_failure(item.filename, treename, names, item.entrystart, item.entrystop)
            if err is not None:
                out[item.filename] = (err, f"entries {item.entrystart}-{item.entrystop}")
    return out


def runner(executor: str, workers: int, chunksize: int):
    """A Runner with a metadata cache of its own: coffea's default one, shared by the whole process and keyed
    by (dataset, file, tree), would give a dataset skimmed again its earlier fileset metadata (the Σ
    genWeight from before a bad file was dropped, an xsec since changed)."""
    return coffea_processor.Runner(_executor(executor, workers), schema=NanoAODSchema, chunksize=chunksize,
                                   savemetrics=True, metadata_cache={})


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
