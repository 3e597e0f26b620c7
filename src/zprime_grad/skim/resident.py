"""Skim on Dask with the columns left on the workers: one ``client.map`` future per coffea WorkItem.

coffea's DaskExecutor would tree-reduce every output back to the client; here each chunk is its own
task (``pure=False``) whose ColumnChunk result stays in the memory of the worker that made it, and the
driver keeps only the futures plus per-chunk summaries of a few numbers. A lost worker costs a
recomputation from the futures' lineage (the task re-reads its entry range), not the run.
Every function a worker runs lives here, in the installed package (never in ``__main__``).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field

import uproot
from dask.sizeof import sizeof
from coffea import processor as coffea_processor
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

from zprime_grad.columns import ColumnChunk
from zprime_grad.errors import UserError
from zprime_grad.skim.fileset import name_chunk_file
from zprime_grad.skim.runner import declared_branches, reader_options, user_error_from
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
    """coffea's own chunking (the same WorkItems its Runner would process), computed on the driver."""
    runner = coffea_processor.Runner(coffea_processor.IterativeExecutor(status=False), schema=NanoAODSchema,
                                     chunksize=chunksize)
    return list(runner.preprocess(fileset, treename=treename))


def run_dask(fileset: dict, processor, client, *, chunksize: int = 100_000, treename: str = "Events",
             retries: int = 3) -> ResidentChunks:
    start = time.perf_counter()
    items = work_items(fileset, chunksize, treename)
    processor_future = client.submit(_identity, processor, pure=False)  # shipped once, not per task
    futures = client.map(skim_work_item, items, processor=processor_future, pure=False, retries=retries)
    try:
        summaries = client.gather(client.map(summarise, futures, processor=processor_future, pure=False))
    except UserError:
        raise
    except Exception as err:
        raise user_error_from(err) from None
    return ResidentChunks(client, futures, summaries, wall_time_s=time.perf_counter() - start)
