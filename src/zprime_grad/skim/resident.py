"""Skim on Dask with the columns left on the workers: one ``client.map`` future per coffea WorkItem.

coffea's DaskExecutor would tree-reduce every output back to the client; here each chunk is its own
task (``pure=False``) whose ColumnChunk result stays in the memory of the worker that made it, and the
driver keeps only the futures plus per-chunk summaries of a few numbers. A lost worker costs a
recomputation from the futures' lineage (the task re-reads its entry range), not the run.
Every function a worker runs lives here, in the installed package (never in ``__main__``).

``skip_bad_files`` as on the local executors (`zprime_grad.skim.runner`): a file that opened on the driver
can still fail while a worker reads its baskets (truncated, damaged). Every chunk future runs to its end;
the entry range of each failed one is then read again straight from its file (`fileset.read_failure`).
Files that fail there are dropped and listed (``where``: ``entries A-B``), and every chunk of their
dataset is released and submitted again from the files left, with Σ genWeight taken over those files
(every weight changes with it); datasets without a bad file keep their chunks. A failure whose file
reads fine is the processor's: the run stops with that one line.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field

import uproot
from dask.sizeof import sizeof
from distributed import wait
from coffea import processor as coffea_processor
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

from zprime_grad.columns import ColumnChunk
from zprime_grad.errors import UserError
from zprime_grad.skim.fileset import bad_file, fill_sumw, name_chunk_file
from zprime_grad.skim.runner import _unreadable, declared_branches, reader_options, user_error_from
from zprime_grad.skim.store import summarise_chunk, write_chunk


# --------------------------------------------------------------------------------- worker side
@sizeof.register(ColumnChunk)
def _sizeof_chunk(chunk: ColumnChunk) -> int:
    """Tell Dask's memory manager (spilling, reports) what a resident chunk really weighs."""
    return chunk.nbytes + 1024


def skim_work_item(item, processor) -> ColumnChunk:
    """Read one WorkItem's entry range as virtual NanoEvents and run the processor on it."""
    metadata = {"dataset": item.dataset, "filename": item.filename, "treename": item.treename,
                "entrystart": item.entrystart, "entrystop": item.entrystop,
                "fileuuid": str(uuid.UUID(bytes=item.fileuuid)) if item.fileuuid else "", **(item.usermeta or {})}
    branches = declared_branches(processor)
    try:
        with uproot.open({item.filename: None}) as file:
            events = NanoEventsFactory.from_root(
                file, treepath=item.treename, schemaclass=NanoAODSchema, metadata=metadata,
                mode="virtual", entry_start=item.entrystart, entry_stop=item.entrystop,
                preload=branches, iteritems_options=reader_options(branches),
            ).events()
            tic = time.perf_counter()
            chunk = processor.process(events)["chunks"][0]
            process_time = time.perf_counter() - tic
            bytes_read = file.file.source.num_requested_bytes
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"{item.filename} entries {item.entrystart}-{item.entrystop}: "
                        f"{type(err).__name__}: {err}") from None
    chunk.metrics = {"bytes_read": int(bytes_read), "process_time_s": process_time}
    return name_chunk_file(chunk, metadata)


def summarise(chunk: ColumnChunk, processor) -> dict:
    return summarise_chunk(chunk, processor.channels, processor.initial_params())


def chunk_nbytes(chunk: ColumnChunk) -> int:
    return chunk.nbytes


def chunk_digest(chunk: ColumnChunk) -> str:
    """A content hash of a chunk: compare resident chunks across runs without moving them."""
    return hashlib.sha256(chunk.to_npz_bytes()).hexdigest()


def _identity(x):
    return x


# --------------------------------------------------------------------------------- driver side
@dataclass
class ResidentChunks:
    """Handle to skimmed chunks held in Dask worker memory: futures and small summaries only."""

    client: object
    futures: list
    summaries: list[dict]
    bad_files: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0

    def __len__(self) -> int:
        return len(self.futures)

    @property
    def chunks(self):
        raise AttributeError("resident chunks stay on the workers; use .futures, .map() or .write()")

    def who_has(self) -> dict:
        """{future key: [worker addresses]}: where each chunk lives."""
        return {k: list(v) for k, v in self.client.who_has(self.futures).items()}

    def resident_bytes(self) -> int:
        return int(sum(self.client.nbytes([f.key for f in self.futures], summary=False).values()))

    def map(self, func, *args, **kwargs) -> list:
        """Run ``func(chunk, *args, **kwargs)`` next to every chunk; returns futures (results stay remote)."""
        return self.client.map(func, self.futures, *[[a] * len(self) for a in args], pure=False, **kwargs)

    def sort_like_files(self) -> None:
        """Chunks in the order of a skim directory (by chunk file name), so every sum over them is taken
        in the same order as from the files, and the numbers are identical."""
        order = sorted(range(len(self.futures)), key=lambda i: self.summaries[i]["path"])
        self.futures = [self.futures[i] for i in order]
        self.summaries = [self.summaries[i] for i in order]

    def write(self, directory: str) -> list[dict]:
        """Workers write their own chunks (needs a filesystem the workers and the driver share)."""
        return self.client.gather(self.map(write_chunk, directory))

    def release(self) -> None:
        """Let the workers forget the chunks (the client belongs to the caller's session)."""
        for f in self.futures:
            f.release()
        self.futures = []


def work_items(fileset: dict, chunksize: int, treename: str = "Events") -> list:
    """coffea's own chunking (the same WorkItems its Runner would process), computed on the driver. A
    metadata cache of its own: coffea's default one lives as long as the process and hands a file's
    earlier fileset metadata (a Σ genWeight before a bad file was dropped) to every later call."""
    runner = coffea_processor.Runner(coffea_processor.IterativeExecutor(status=False), schema=NanoAODSchema,
                                     chunksize=chunksize, metadata_cache={})
    return list(runner.preprocess(fileset, treename=treename))


def run_dask(fileset: dict, processor, client, *, chunksize: int = 100_000, treename: str = "Events",
             retries: int = 3, skip_bad_files: bool = False) -> ResidentChunks:
    """One resident future per WorkItem of every dataset. MC datasets without ``sumw`` get it here
    (`fileset.fill_sumw`); ``skip_bad_files``: see the module."""
    start = time.perf_counter()
    bad: list[dict] = []
    filled = fill_sumw(fileset, skip_bad_files=skip_bad_files, bad=bad)  # every xsec checked before any work
    names = declared_branches(processor)
    processor_future = client.submit(_identity, processor, pure=False)  # shipped once, not per task

    def submit(dataset: str) -> _Dataset:
        items = work_items({dataset: filled[dataset]}, chunksize, treename)
        futures = client.map(skim_work_item, items, processor=processor_future, pure=False, retries=retries)
        return _Dataset(items, futures, client.map(summarise, futures, processor=processor_future, pure=False))

    plans = {dataset: submit(dataset) for dataset in filled}
    try:
        while failed := _settle(client, plans, keep_going=skip_bad_files):
            for dataset, failures in failed.items():
                unreadable = _unreadable([([item for item, _ in failures], None)], treename, names)
                if not unreadable:  # the files read fine: the processor failed, not the input
                    raise user_error_from(failures[0][1])
                bad += [bad_file(dataset, f, filled[dataset]["metadata"], err, where)
                        for f, (err, where) in sorted(unreadable.items())]
                plans[dataset].release()
                remaining = {f: t for f, t in filled[dataset]["files"].items() if f not in unreadable}
                if not remaining:
                    del plans[dataset]
                    continue
                # the input's metadata: Σ genWeight again over the files left, unless the fileset gave it
                filled[dataset] = fill_sumw({dataset: {**fileset[dataset], "files": remaining}},
                                            skip_bad_files=True, bad=bad)[dataset]
                plans[dataset] = submit(dataset)  # the same place in the order: chunks in fileset order
        if not plans:
            raise UserError("no readable input files left: " + "; ".join(f"{b['file']} ({b['error']})" for b in bad))
        futures = [f for plan in plans.values() for f in plan.futures]
        summaries = client.gather([s for plan in plans.values() for s in plan.summaries])
    except BaseException:
        for plan in plans.values():
            plan.release()
        raise
    return ResidentChunks(client, futures, summaries, bad_files=bad, wall_time_s=time.perf_counter() - start)


@dataclass
class _Dataset:
    """One dataset's submitted chunks: its WorkItems, their chunk futures and their summaries' futures."""

    items: list
    futures: list
    summaries: list

    def release(self) -> None:
        for f in (*self.summaries, *self.futures):
            f.release()


def _settle(client, plans: dict, *, keep_going: bool) -> dict:
    """Wait for every chunk of ``plans``: ``{dataset: [(WorkItem, exception)]}`` of the chunks that failed.
    Without ``keep_going`` the first failure is raised as one line, as soon as it happens."""
    everything = [s for plan in plans.values() for s in plan.summaries]
    if not keep_going:
        try:
            client.gather(everything)
        except UserError:
            raise
        except Exception as err:
            raise user_error_from(err) from None
        return {}
    wait(everything)
    failed: dict = {}
    for dataset, plan in plans.items():
        for item, summary in zip(plan.items, plan.summaries):
            if summary.status != "finished":  # a failed chunk fails its summary with the chunk's exception
                failed.setdefault(dataset, []).append((item, _exception(summary)))
    return failed


def _exception(future) -> BaseException:
    try:
        return future.exception()
    except BaseException as err:  # cancelled (its worker lost for good …)
        return err
