"""The run's skimmed chunks, wherever they are: in this process (`LocalChunks`) or in Dask worker memory
(`DaskChunks`). Every stage takes one of these and never asks where the chunks live.

Both offer the same two reductions:

* ``map_reduce(func, **kwargs)`` — the optimiser's: ``func(chunk, **kwargs)`` runs next to every MC
  chunk and returns a dict of small numpy arrays, summed by one fixed tree (groups of ``fan_in``
  consecutive chunks, level by level), so the sum — and every later number — is bit-identical on both,
  whichever worker ran what and whether a lost worker forced a recomputation.
* ``reduce(per_chunk)`` — the validation's: Σ ``per_chunk(chunk)`` (dicts of anything that adds, e.g.
  ``hist.Hist``) over every chunk, pseudo-data included, in chunk order.

On Dask the chunks are futures (``pure=False``) that stay in worker memory; the reductions run on the
workers and only the final sum reaches the driver. Its size is fixed by the caller's layout, never by
the number of events (``bytes_received`` counts it). A chunk lost with its worker is recomputed from its
lineage (a skim task re-reads its entry range; a loaded chunk re-reads its file).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from zprime_grad.columns import ColumnChunk
from zprime_grad.errors import UserError
from zprime_grad.jaxconfig import call_in_float64, in_float64
from zprime_grad.skim.store import read_chunk


def chunk_description(chunk) -> dict:
    """The few facts about a chunk that fix a layout (computed next to the chunk on a cluster)."""
    return {"process": chunk.process, "is_data": bool(chunk.is_data), "length": int(chunk.length),
            "n_events": int(chunk.n_events), "key": [str(k) for k in chunk.key],
            "weights": sorted(chunk.weights), "variations": sorted(chunk.variations),
            "columns": sorted(chunk.columns), "shapes": {k: list(v.shape) for k, v in chunk.columns.items()},
            "sample_variation": chunk.sample_variation}


def identities(descriptions) -> list[tuple]:
    """Sorted (key, events, process, is data) of chunk descriptions: keys are content-named, so this
    names the chunks' content, and no path or order enters it."""
    return sorted((tuple(d["key"]), d["n_events"], d["process"], d["is_data"]) for d in descriptions)


# ------------------------------------------------------------------------------------ the fixed tree
def sum_parts(*parts: dict) -> dict:
    """Element-wise sum of dicts of arrays, in the order given (runs on workers)."""
    out = {k: np.array(v, dtype=float, copy=True) for k, v in parts[0].items()}
    for part in parts[1:]:
        for k, v in part.items():
            out[k] += v
    return out


def tree_groups(n: int, fan_in: int) -> list[list[range]]:
    """The fixed reduction tree: for each level, the index ranges summed together."""
    levels, size = [], n
    while size > 1:
        groups = [range(i, min(i + fan_in, size)) for i in range(0, size, fan_in)]
        levels.append(groups)
        size = len(groups)
    return levels


def tree_sum(parts: list[dict], fan_in: int) -> dict:
    """``parts`` summed by the fixed tree, level by level (one part: itself)."""
    for level in tree_groups(len(parts), fan_in):
        parts = [sum_parts(*(parts[i] for i in g)) for g in level]
    return parts[0]


def add_outputs(*parts: dict) -> dict:
    """Σ of dicts of summable values (``{label: Hist}`` as coffea's accumulate adds them, or arrays)."""
    total: dict = {}
    for filled in parts:
        total = filled if not total else {k: total[k] + filled[k] for k in total}
    return total


def payload_bytes(result: dict) -> int:
    return int(sum(np.asarray(v).nbytes for v in result.values()))


# ------------------------------------------------------------------------------------ skim directories
def chunk_files(columns_dir) -> list[tuple[str, str | None]]:
    """``(path, sha256)`` of the chunk files listed in ``DIR/skim.json`` (the skim's completion marker);
    ``sha256``: the checksum recorded when the file was written (None in a skim of an older version)."""
    directory = Path(columns_dir)
    report = directory / "skim.json"
    try:
        entries = json.loads(report.read_text())["columns"]
        files = [(str(directory / e["path"]), e.get("sha256")) for e in entries]
    except OSError:
        raise UserError(f"{report}: not found; --columns needs a finished skim directory (zprime-grad skim --out DIR)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"{report}: not a skim report ({err})") from None
    missing = [p for p, _ in files if not Path(p).exists()]
    if missing:
        raise UserError(f"{report}: lists chunk files that are missing, e.g. {missing[0]}")
    if not files:
        raise UserError(f"{report}: the skim has no chunks")
    return files


def chunk_paths(columns_dir) -> list[str]:
    """The chunk files listed in ``DIR/skim.json`` (see `chunk_files`)."""
    return [p for p, _ in chunk_files(columns_dir)]


def load_chunk(path: str, sha256: str | None = None) -> ColumnChunk:
    """Runs on a worker: one chunk file of a skim directory, its bytes checked against ``sha256`` (the
    checksum skim.json recorded) as they are read; a damaged file is a UserError naming it."""
    return read_chunk(path, sha256)


# ------------------------------------------------------------------------------------ the two sources
class _Closing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalChunks(_Closing):
    """Chunks in this process; the same reduction tree as the cluster. ``map_reduce`` runs the chunks on
    ``threads`` threads (default: the cores this process may use; XLA releases the GIL), the first chunk
    of each length alone so that each kernel is compiled once; the parts are summed in chunk order."""

    name = "local"

    def __init__(self, chunks: Sequence[ColumnChunk], fan_in: int = 8, threads: int | None = None):
        self.all = list(chunks)
        self.chunks = [c for c in self.all if not c.is_data]  # the optimiser's (the Asimov objective)
        self.fan_in = fan_in
        self.threads = threads or len(os.sched_getaffinity(0))
        self.bytes_received = 0

    @classmethod
    def from_directory(cls, directory, fan_in: int = 8) -> "LocalChunks":
        return cls([load_chunk(p, sha) for p, sha in chunk_files(directory)], fan_in)

    def __len__(self) -> int:
        return len(self.all)

    def descriptions(self) -> list[dict]:
        """The MC chunks' descriptions (what a layout is made from)."""
        return [chunk_description(c) for c in self.chunks]

    def identities(self) -> list[tuple]:
        """Every chunk's (key, events, process, is data), MC and data: what results made from them depend on."""
        return identities(chunk_description(c) for c in self.all)

    @in_float64
    def map_reduce(self, func: Callable, **kwargs) -> dict:
        parts: list = [None] * len(self.chunks)
        lengths: dict = {}
        for i, chunk in enumerate(self.chunks):  # one chunk per length first: compiles each kernel once
            if lengths.setdefault(len(chunk.weights["nominal"]), i) == i:
                parts[i] = func(chunk, **kwargs)
        rest = [i for i, part in enumerate(parts) if part is None]
        if self.threads > 1 and len(rest) > 1:
            with ThreadPoolExecutor(self.threads) as pool:
                done = pool.map(lambda i: call_in_float64(func, self.chunks[i], **kwargs), rest)
                for i, part in zip(rest, done):
                    parts[i] = part
        else:
            for i in rest:
                parts[i] = func(self.chunks[i], **kwargs)
        return tree_sum(parts, self.fan_in)

    @in_float64
    def reduce(self, per_chunk: Callable[[ColumnChunk], dict]) -> dict:
        return add_outputs(*(per_chunk(c) for c in self.all))

    def close(self) -> None:
        self.all, self.chunks = [], []


# ------------------------------------------------------------------------------------ batched tasks
def _span_sum(parts: list, fan_in: int) -> dict:
    """The fixed tree over the leaves of one span (``fan_in**depth`` consecutive chunks starting at a
    multiple of it): its nodes are exactly the global tree's, so the span's sum is the global tree's node
    at level ``depth - 1``. A lone leaf still gets its level-0 ``sum_parts`` (a float copy), as in the tree."""
    return sum_parts(parts[0]) if len(parts) == 1 else tree_sum(parts, fan_in)


@in_float64
def map_span(func: Callable, kwargs: dict, fan_in: int, *chunks) -> dict:
    """Runs on a worker holding every chunk of a span: ``func`` on each, summed by the span's tree."""
    return _span_sum([func(c, **kwargs) for c in chunks], fan_in)


@in_float64
def map_chunks(func: Callable, kwargs: dict, *chunks) -> list[dict]:
    """Runs on a worker: ``func`` on the chunks of a span that this worker holds (in order), unsummed."""
    return [func(c, **kwargs) for c in chunks]


def merge_span(fan_in: int, positions: list[list[int]], *pieces: list[dict]) -> dict:
    """The leaf parts of one span from the workers that hold its chunks, put back in chunk order and
    summed by the span's tree."""
    parts: list = [None] * sum(len(p) for p in positions)
    for where, piece in zip(positions, pieces):
        for i, part in zip(where, piece):
            parts[i] = part
    return _span_sum(parts, fan_in)


class DaskChunks(_Closing):
    """Chunk futures resident on Dask workers; map and reduce there.

    ``map_reduce`` batches the chunks (``batch_levels``): the chunks of each span of ``fan_in**batch_levels``
    consecutive chunks that one worker holds are mapped by one task, next to them (the scheduler's
    ``who_has``); a span on one worker is also summed there, a span split over workers is summed by one
    more task that puts the leaf parts back in chunk order. The spans' sums are the fixed tree's nodes
    at level ``batch_levels - 1``; the levels above are ``sum_parts`` tasks. So the scheduler sees about
    ``chunks / fan_in**batch_levels`` tasks per worker and round instead of one per chunk, and the sum
    is the same bits as `LocalChunks`. ``batch_levels = 0``: one task per chunk. A lost chunk is
    recomputed from its lineage and every task retries (``retries``).
    """

    name = "dask"
    batch_levels = 2  # benchmarks/chunks.py compares 0 (a task per chunk), 1, 2, 3

    def __init__(self, client, futures: Sequence, *, fan_in: int = 8, retries: int = 3, owns_futures: bool = True):
        self.client = client
        self.owns_futures = owns_futures  # False: another handle (a skim's) keeps them; never release them here
        self.fan_in = fan_in
        self.retries = retries
        self.bytes_received = 0
        self.all = list(futures)
        from distributed import wait

        with client.as_current():  # this client, not the process's default one (a gateway's is not)
            wait(self.all)  # then who_has knows where they are: one description task per worker, next to its chunks
        described: list = [None] * len(self.all)
        groups = [ids for span in self._groups(self.all, max(len(self.all), 1)) for ids in span]
        pieces = [client.submit(map_chunks, chunk_description, {}, *(self.all[i] for i in ids), pure=False)
                  for ids in groups]
        for ids, piece in zip(groups, client.gather(pieces)):
            for i, d in zip(ids, piece):
                described[i] = d
        mc = [i for i, d in enumerate(described) if not d["is_data"]]
        self.futures = [self.all[i] for i in mc]
        self._descriptions = [described[i] for i in mc]
        self._identities = identities(described)

    @classmethod
    def from_directory(cls, client, directory, fan_in: int = 8) -> "DaskChunks":
        """Each worker reads its chunks from ``directory`` (a filesystem the workers see), verifying them."""
        paths, sums = zip(*chunk_files(directory))
        return cls(client, client.map(load_chunk, paths, sums, pure=False), fan_in=fan_in)

    def __len__(self) -> int:
        return len(self.all)

    def descriptions(self) -> list[dict]:
        return list(self._descriptions)

    def identities(self) -> list[tuple]:
        return list(self._identities)

    def map_reduce(self, func: Callable, **kwargs) -> dict:
        client, levels = self.client, tree_groups(len(self.futures), self.fan_in)
        depth = min(self.batch_levels, len(levels))
        if depth:
            parts = self._map_spans(func, kwargs, self.fan_in ** depth)
        else:
            parts = client.map(func, self.futures, pure=False, retries=self.retries, **kwargs)
        for level in levels[depth:]:
            parts = [client.submit(sum_parts, *(parts[i] for i in g), pure=False, retries=self.retries)
                     for g in level]
        result = parts[0].result()
        self.bytes_received += payload_bytes(result)
        return result

    def _groups(self, futures: list, span: int) -> list[list[list[int]]]:
        """For each span of ``span`` consecutive ``futures``: their indices grouped by the worker that
        holds them now (the scheduler's ``who_has``; it only groups the tasks, where they run is the
        scheduler's choice). A chunk in no worker's memory (lost, being recomputed) is a group of its
        own, so no task pulls several recomputed chunks onto one worker."""
        who = self.client.who_has(futures)
        holders = [min(who.get(f.key) or [None], key=str) for f in futures]
        spans = []
        for start in range(0, len(futures), span):
            by_holder: dict = {}
            for i in range(start, min(start + span, len(futures))):
                by_holder.setdefault(holders[i] or i, []).append(i)
            spans.append(list(by_holder.values()))
        return spans

    def _map_spans(self, func: Callable, kwargs: dict, span: int) -> list:
        """One future per span: the span's sum by the fixed tree (see the class docstring)."""
        client, futures, out = self.client, self.futures, []
        for start, groups in zip(range(0, len(futures), span), self._groups(futures, span)):
            if len(groups) == 1:
                out.append(client.submit(map_span, func, kwargs, self.fan_in, *futures[start:start + span],
                                         pure=False, retries=self.retries))
                continue
            pieces = [client.submit(map_chunks, func, kwargs, *(futures[i] for i in ids), pure=False,
                                    retries=self.retries) for ids in groups]
            positions = [[i - start for i in ids] for ids in groups]
            out.append(client.submit(merge_span, self.fan_in, positions, *pieces, pure=False, retries=self.retries))
        return out

    def reduce(self, per_chunk: Callable[[ColumnChunk], dict]) -> dict:
        client = self.client
        parts = client.map(partial(call_in_float64, per_chunk), self.all, pure=False, retries=self.retries)
        return client.submit(add_outputs, *parts, pure=False, retries=self.retries).result()

    def close(self) -> None:
        if self.owns_futures:
            for f in self.all:
                f.release()
        self.all, self.futures = [], []
