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
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from zprime_grad.columns import ColumnChunk
from zprime_grad.errors import UserError


def chunk_description(chunk) -> dict:
    """The few facts about a chunk that fix a layout (computed next to the chunk on a cluster)."""
    return {"process": chunk.process, "is_data": bool(chunk.is_data), "length": int(chunk.length),
            "n_events": int(chunk.n_events), "key": [str(k) for k in chunk.key],
            "weights": sorted(chunk.weights), "variations": sorted(chunk.variations),
            "columns": sorted(chunk.columns), "shapes": {k: list(v.shape) for k, v in chunk.columns.items()},
            "sample_variation": chunk.sample_variation}


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


def add_outputs(*parts: dict) -> dict:
    """Σ of dicts of summable values (``{label: Hist}`` as coffea's accumulate adds them, or arrays)."""
    total: dict = {}
    for filled in parts:
        total = filled if not total else {k: total[k] + filled[k] for k in total}
    return total


def payload_bytes(result: dict) -> int:
    return int(sum(np.asarray(v).nbytes for v in result.values()))


# ------------------------------------------------------------------------------------ skim directories
def chunk_paths(columns_dir) -> list[str]:
    """The chunk files listed in ``DIR/skim.json`` (the skim's completion marker)."""
    directory = Path(columns_dir)
    report = directory / "skim.json"
    try:
        entries = json.loads(report.read_text())["columns"]
    except OSError:
        raise UserError(f"{report}: not found; --columns needs a finished skim directory (zprime-grad skim --out DIR)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"{report}: not a skim report ({err})") from None
    paths = [str(directory / e["path"]) for e in entries]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise UserError(f"{report}: lists chunk files that are missing, e.g. {missing[0]}")
    if not paths:
        raise UserError(f"{report}: the skim has no chunks")
    return paths


def load_chunk(path: str) -> ColumnChunk:
    """Runs on a worker: one chunk file of a skim directory."""
    return ColumnChunk.from_npz(path)


# ------------------------------------------------------------------------------------ the two sources
class _Closing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalChunks(_Closing):
    """Chunks in this process; the same reduction tree as the cluster."""

    name = "local"

    def __init__(self, chunks: Sequence[ColumnChunk], fan_in: int = 8):
        self.all = list(chunks)
        self.chunks = [c for c in self.all if not c.is_data]  # the optimiser's (the Asimov objective)
        self.fan_in = fan_in
        self.bytes_received = 0

    @classmethod
    def from_directory(cls, directory, fan_in: int = 8) -> "LocalChunks":
        return cls([load_chunk(p) for p in chunk_paths(directory)], fan_in)

    def __len__(self) -> int:
        return len(self.all)

    def descriptions(self) -> list[dict]:
        """The MC chunks' descriptions (what a layout is made from)."""
        return [chunk_description(c) for c in self.chunks]

    def map_reduce(self, func: Callable, **kwargs) -> dict:
        parts = [func(c, **kwargs) for c in self.chunks]
        for level in tree_groups(len(parts), self.fan_in):
            parts = [sum_parts(*(parts[i] for i in g)) for g in level]
        return parts[0]

    def reduce(self, per_chunk: Callable[[ColumnChunk], dict]) -> dict:
        return add_outputs(*(per_chunk(c) for c in self.all))

    def close(self) -> None:
        self.all, self.chunks = [], []


# ------------------------------------------------------------------------------------ batched tasks
class DaskChunks(_Closing):
    """Chunk futures resident on Dask workers; map and reduce there."""

    name = "dask"

    def __init__(self, client, futures: Sequence, *, fan_in: int = 8, retries: int = 3, owns_futures: bool = True):
        self.client = client
        self.owns_futures = owns_futures  # False: another handle (a skim's) keeps them; never release them here
        self.fan_in = fan_in
        self.retries = retries
        self.bytes_received = 0
        self.all = list(futures)
        described = client.gather(client.map(chunk_description, self.all, pure=False))
        mc = [i for i, d in enumerate(described) if not d["is_data"]]
        self.futures = [self.all[i] for i in mc]
        self._descriptions = [described[i] for i in mc]

    @classmethod
    def from_directory(cls, client, directory, fan_in: int = 8) -> "DaskChunks":
        """Each worker reads its chunks from ``directory`` (a filesystem the workers see)."""
        return cls(client, client.map(load_chunk, chunk_paths(directory), pure=False), fan_in=fan_in)

    def __len__(self) -> int:
        return len(self.all)

    def descriptions(self) -> list[dict]:
        return list(self._descriptions)

    def map_reduce(self, func: Callable, **kwargs) -> dict:
        client = self.client
        parts = client.map(func, self.futures, pure=False, retries=self.retries, **kwargs)
        for level in tree_groups(len(parts), self.fan_in):
            parts = [client.submit(sum_parts, *(parts[i] for i in g), pure=False, retries=self.retries)
                     for g in level]
        result = parts[0].result()
        self.bytes_received += payload_bytes(result)
        return result

    def reduce(self, per_chunk: Callable[[ColumnChunk], dict]) -> dict:
        client = self.client
        parts = client.map(per_chunk, self.all, pure=False, retries=self.retries)
        return client.submit(add_outputs, *parts, pure=False, retries=self.retries).result()

    def close(self) -> None:
        if self.owns_futures:
            for f in self.all:
                f.release()
        self.all, self.futures = [], []
