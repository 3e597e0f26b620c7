"""`DaskChunks.map_reduce` on a real 2-worker LocalCluster gives the same bits as `LocalChunks.map_reduce`
(the fixed tree: groups of ``fan_in`` consecutive chunks, level by level), whatever the chunk count,
the batching (``batch_levels``: one task per chunk, or spans of ``fan_in**k`` chunks) and where the
chunks sit (interleaved over the workers, in blocks, at random, all on one worker)."""

from __future__ import annotations

import numpy as np
import pytest

from zprime_grad.chunks import DaskChunks, LocalChunks
from zprime_grad.columns import make_chunk


def synthetic_chunk(n: int, seed: int):
    rng = np.random.default_rng(seed)
    cols = {"baseline": np.ones(n), "parity": rng.integers(0, 2, n), "mtt": rng.uniform(300, 3000, n)}
    weights = {"nominal": rng.random(n) * 10.0 ** rng.integers(-6, 7, n)}  # sums that depend on their order
    return make_chunk(cols, weights, {}, {"event": np.arange(n)}, dataset="toy", process="toy")


def per_chunk():
    """Defined here, so cloudpickle ships it by value (the workers need not import tests/)."""
    def histograms(chunk, *, scale: float) -> dict:
        w = chunk.weights["nominal"].astype(np.float64) * scale
        x = chunk.columns["mtt"]
        return {"h": np.histogram(x, bins=16, range=(300, 3000), weights=w)[0],
                "s": np.array([np.sum(w * x)]),
                "f32": np.array([np.float32(w.sum())], dtype=np.float32)}  # the float copy of the tree
    return histograms


@pytest.fixture(scope="module")
def chunks():
    rng = np.random.default_rng(7)
    return [synthetic_chunk(int(rng.integers(1, 40)), seed) for seed in range(150)]


def placed(client, chunks, how: str) -> list:
    workers = sorted(client.scheduler_info()["workers"])
    rng = np.random.default_rng(3)
    where = {"interleaved": [i % 2 for i in range(len(chunks))],
             "blocks of 40": [(i // 40) % 2 for i in range(len(chunks))],
             "blocks of 64": [(i // 64) % 2 for i in range(len(chunks))],
             "random": list(rng.integers(0, 2, len(chunks))),
             "one worker": [0] * len(chunks)}[how]
    futures = [None] * len(chunks)
    for w, address in enumerate(workers):
        mine = [i for i, k in enumerate(where) if k == w]
        if mine:
            for i, f in zip(mine, client.scatter([chunks[i] for i in mine], workers=[address], hash=False)):
                futures[i] = f
    return futures


def same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


# (chunks, fan_in, batch_levels): the batchings of 150 chunks (0, a task per chunk: in
# test_batching_sends_few_tasks); a lone chunk (no tree at all); a last span of one chunk (9, 65)
CASES = ([(150, 8, k) for k in (1, 2, 3)] + [(150, 3, k) for k in (2, 3)]
         + [(n, 8, k) for n in (1, 9, 65) for k in (1, 2)])


@pytest.mark.parametrize("how", ["interleaved", "blocks of 40", "random", "one worker"])
def test_dask_reduction_is_bit_identical_to_local(client, chunks, how):
    func = per_chunk()
    futures = placed(client, chunks, how)
    for n, fan_in, batch_levels in CASES:
        local = LocalChunks(chunks[:n], fan_in=fan_in).map_reduce(func, scale=1.5)
        dask = DaskChunks(client, futures[:n], fan_in=fan_in, owns_futures=False)
        dask.batch_levels = batch_levels
        assert same_bits(dask.map_reduce(func, scale=1.5), local), (how, n, fan_in, batch_levels)
        assert dask.bytes_received == sum(v.nbytes for v in local.values())
    # the check has teeth: summed in another order, the bits differ
    parts = [func(c, scale=1.5) for c in chunks]
    assert sum(p["s"] for p in parts).tobytes() != sum(p["s"] for p in parts[::-1]).tobytes()
    for f in futures:
        f.release()


class Counting:
    """The client, counting the tasks submitted through it."""

    def __init__(self, client):
        self.client, self.tasks = client, 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def submit(self, *args, **kwargs):
        self.tasks += 1
        return self.client.submit(*args, **kwargs)

    def map(self, func, *iterables, **kwargs):
        self.tasks += len(iterables[0])
        return self.client.map(func, *iterables, **kwargs)


@pytest.mark.parametrize("how, batch_levels, tasks", [
    ("interleaved", 0, 150 + 19 + 3 + 1),  # a task per chunk, then the tree
    ("interleaved", 2, 3 * 3 + 1),  # 3 spans of 64: one task per worker + one merge each; the tree above
    ("blocks of 64", 2, 3 + 1),  # every span on one worker: one task each
])
def test_batching_sends_few_tasks(client, chunks, how, batch_levels, tasks):
    futures = placed(client, chunks, how)
    dask = DaskChunks(client, futures, fan_in=8, owns_futures=False)
    dask.batch_levels, dask.client = batch_levels, Counting(client)
    result = dask.map_reduce(per_chunk(), scale=1.0)
    assert dask.client.tasks == tasks
    assert same_bits(result, LocalChunks(chunks, fan_in=8).map_reduce(per_chunk(), scale=1.0))
    for f in futures:
        f.release()
