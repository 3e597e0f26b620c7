"""Where the chunks live and how per-chunk results are summed: in this process, or on a Dask cluster.

Both backends offer ``map_reduce(func, **kwargs)``: ``func(chunk, **kwargs)`` runs next to every MC
chunk and returns a dict of small numpy arrays; the results are summed by one fixed tree (groups of
``fan_in`` consecutive chunks, level by level), so the sum — and every later number — is bit-identical
on both backends, whichever worker ran what and whether a lost worker forced a recomputation.

On Dask the chunks are futures (``client.map(..., pure=False)``) that stay in worker memory; the
reduction runs on the workers (``client.submit(sum_parts, …)``) and only the final sum reaches the
driver. Its size is fixed by the layout, never by the number of events (``bytes_received`` counts it).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

from zprime_grad.optimise.layout import chunk_description

log = logging.getLogger(__name__)


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


def payload_bytes(result: dict) -> int:
    return int(sum(np.asarray(v).nbytes for v in result.values()))


class LocalBackend:
    """Chunks in this process; the same reduction tree as the cluster."""

    name = "local"

    def __init__(self, chunks: Sequence, fan_in: int = 8):
        self.chunks = [c for c in chunks if not c.is_data]
        self.fan_in = fan_in
        self.bytes_received = 0

    def descriptions(self) -> list[dict]:
        return [chunk_description(c) for c in self.chunks]

    def map_reduce(self, func: Callable, **kwargs) -> dict:
        parts = [func(c, **kwargs) for c in self.chunks]
        for level in tree_groups(len(parts), self.fan_in):
            parts = [sum_parts(*(parts[i] for i in g)) for g in level]
        return parts[0]

    def worker_trace_counts(self) -> dict:
        from zprime_grad.optimise.contribution import trace_counts

        return {"local": trace_counts()}

    def close(self) -> None:
        self.chunks = []


class DaskBackend:
    """Chunk futures resident on Dask workers; map and tree-reduce there."""

    name = "dask"

    def __init__(self, client, futures: Sequence, *, fan_in: int = 8, owned_cluster=None, retries: int = 3,
                 owns_futures: bool = True):
        self.client = client
        self.owns_futures = owns_futures  # False: a skim handle keeps them; never release them here
        self.fan_in = fan_in
        self.retries = retries
        self.owned_cluster = owned_cluster
        self.bytes_received = 0
        descriptions = client.gather(client.map(chunk_description, list(futures), pure=False))
        keep = [i for i, d in enumerate(descriptions) if not d["is_data"]]
        self.futures = [futures[i] for i in keep]
        self._descriptions = [descriptions[i] for i in keep]
        kept = set(keep)
        for i, f in enumerate(futures):  # data chunks are not needed for the Asimov objective
            if i not in kept and owns_futures:
                f.release()

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

    def worker_trace_counts(self) -> dict:
        from zprime_grad.optimise.contribution import trace_counts

        return self.client.run(trace_counts)

    def close(self) -> None:
        if self.owns_futures:
            for f in self.futures:
                f.release()
        self.futures = []
        if self.owned_cluster is not None:
            self.client.close()
            self.owned_cluster.close()
            self.owned_cluster = None

