"""Where the optimiser's chunks come from: a skim directory (``--columns``) or a fresh skim (``--fileset``).

On the ``dask`` backend the chunks are made *on the workers* and stay there: ``load_chunk`` futures
read one ``.npz`` each, or the skim's own resident futures; both carry their lineage, so a killed
worker's chunks are re-read / re-skimmed elsewhere. On ``local`` they are read into this process.
"""

from __future__ import annotations

import json
from pathlib import Path

from zprime_grad.columns import ColumnChunk
from zprime_grad.errors import UserError
from zprime_grad.optimise.backends import DaskBackend, LocalBackend


def load_chunk(path: str) -> ColumnChunk:
    """Runs on a worker: one chunk file of a skim directory."""
    return ColumnChunk.from_npz(path)


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


def local_backend(config, *, columns=None, fileset=None, fan_in: int = 8) -> LocalBackend:
    if columns is not None:
        chunks = [ColumnChunk.from_npz(p) for p in chunk_paths(columns)]
    else:
        from zprime_grad.skim.pipeline import run_skim, skim_options

        executor = config.skim.executor if config.skim.executor != "dask" else "futures"
        chunks = run_skim(config, fileset, skim_options(config, executor=executor)).chunks
    return LocalBackend(chunks, fan_in=fan_in)


def dask_backend(config, *, columns=None, fileset=None, client=None, workers: int = 2,
                 scheduler: str | None = None, fan_in: int = 8) -> DaskBackend:
    owned = None
    if client is None:
        from zprime_grad.cluster import open_cluster, resolve

        client, owned = open_cluster(resolve(config, scheduler=scheduler, workers=workers))
    try:
        if columns is not None:
            futures = client.map(load_chunk, chunk_paths(columns), pure=False)
        else:
            from zprime_grad.skim.pipeline import run_skim, skim_options

            futures = run_skim(config, fileset, skim_options(config, executor="dask"), client=client).futures
        return DaskBackend(client, futures, fan_in=fan_in, owned_cluster=owned)
    except BaseException:
        if owned is not None:
            client.close()
            owned.close()
        raise


def open_backend(config, *, backend: str, columns=None, fileset=None, client=None, workers: int = 2,
                 scheduler: str | None = None):
    """``columns``: a skim directory, or the result of ``Analysis.skim`` (chunks here, or resident)."""
    fan_in = config.optimise.fan_in
    if hasattr(columns, "futures") and hasattr(columns, "client"):  # skim.resident.ResidentChunks
        return DaskBackend(columns.client, list(columns.futures), fan_in=fan_in, owns_futures=False)
    if hasattr(columns, "chunks") and not isinstance(columns, (str, Path)):  # skim.runner.SkimResult
        return LocalBackend(columns.chunks, fan_in=fan_in)
    if (columns is None) == (fileset is None):
        raise UserError("optimise: give exactly one of --columns DIR and --fileset F")
    if backend == "local":
        return local_backend(config, columns=columns, fileset=fileset, fan_in=fan_in)
    if backend == "dask":
        return dask_backend(config, columns=columns, fileset=fileset, client=client, workers=workers,
                            scheduler=scheduler, fan_in=fan_in)
    raise UserError(f"optimise: backend must be 'local' or 'dask', not '{backend}'")


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
