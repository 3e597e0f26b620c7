"""Chunks for scaling studies (``benchmarks/``): a large sample tiled from a few real chunks, built on
the worker that keeps it, never on the driver."""

from __future__ import annotations

from zprime_grad.columns import ColumnChunk
from zprime_grad.errors import UserError


def tiled_chunk(paths: list[str], process: str, n_events: int, length: int, weight_scale: float,
                index: int) -> ColumnChunk:
    """Scaling studies (benchmarks/epoch.py): ``n_events`` events of ``process`` repeating the real events of
    the given chunk files, weights × ``weight_scale``, padded to ``length``. Runs on a worker, so a
    large replicated sample is built where it stays, never on the driver."""
    import numpy as np

    from zprime_grad.columns import pad_rows

    chunks = [c for c in (ColumnChunk.from_npz(p) for p in paths) if c.process == process and not c.is_data]
    if not chunks:
        raise UserError(f"tiled_chunk: no MC chunk of process '{process}'")

    def tile(get):
        real = np.concatenate([get(c)[: c.n_events] for c in chunks])
        reps = -(-n_events // len(real))
        return pad_rows(np.tile(real, (reps,) + (1,) * (real.ndim - 1))[:n_events], length)

    first = chunks[0]
    columns = {k: tile(lambda c, k=k: c.columns[k]) for k in first.columns}
    weights = {k: tile(lambda c, k=k: c.weights[k]) * np.float32(weight_scale) for k in first.weights}
    variations = {v: {k: tile(lambda c, v=v, k=k: c.variations[v][k]) for k in cols}
                  for v, cols in first.variations.items()}
    return ColumnChunk(columns, weights, variations, {}, n_events, f"{process}_tiled", process,
                       provenance={"file": f"tiled:{process}", "entrystart": index, "entrystop": index + n_events})
