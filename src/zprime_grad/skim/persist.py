"""A cluster skim persisted through fsspec (``skim.persist``: ``file://``, ``s3://``, ``root://``, a facility's
XCache …), so that a later run with the same config and inputs reads it instead of skimming again.

The layout is a skim directory's (`zprime_grad.skim.store`): ``URL/columns/<dataset>/<file>_<range>.npz``
and ``URL/skim.json``, the completion marker, written last and checked (same cache key, every listed
chunk present with its recorded size) before anything is reused; every chunk is verified against the
SHA-256 skim.json records for it as a worker reads it (`load_chunk`: a damaged one is named), so the
check costs one listing, not a second read of the whole skim. Every read and write runs **on a
worker**: the driver needs no access to the URL, only the workers do (a facility's storage is often
mounted on the workers alone). A chunk read from the URL keeps its lineage (a lost worker's chunk is
read again).
"""

from __future__ import annotations

import json

from zprime_grad.columns import ColumnChunk
from zprime_grad.skim.store import COLUMNS, REPORT, chunk_entry, chunk_from_bytes, chunk_path


def join(base: str, relative: str) -> str:
    return f"{base.rstrip('/')}/{relative}"


def write_chunk(chunk: ColumnChunk, base: str) -> dict:
    """Runs on a worker: one chunk to ``base/columns/...`` (the marker, written later, makes it count)."""
    import fsspec

    data = chunk.to_npz_bytes()
    fs, path = fsspec.core.url_to_fs(join(base, chunk_path(chunk)))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)
    return chunk_entry(chunk, data)


def load_chunk(url: str, sha256: str | None = None) -> ColumnChunk:
    """Runs on a worker: one persisted chunk, its bytes checked against ``sha256`` (skim.json's record)."""
    import fsspec

    from zprime_grad.errors import UserError

    try:
        with fsspec.open(url, "rb") as f:
            data = f.read()
    except OSError as err:
        raise UserError(f"{url}: cannot read persisted chunk ({type(err).__name__}: {err})") from None
    return chunk_from_bytes(data, url, sha256)


def write_report(base: str, report: dict) -> str:
    """Runs on a worker: ``base/skim.json``, the completion marker (tmp + move where the store has it)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(join(base, REPORT))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{path}.tmp"
    with fs.open(tmp, "w") as f:
        f.write(json.dumps(report, indent=1, sort_keys=True))
    fs.mv(tmp, path)
    return join(base, REPORT)


def remove_report(base: str) -> None:
    """Runs on a worker: before new columns are written, the old marker goes (nothing half-new looks done)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(join(base, REPORT))
    if fs.exists(path):
        fs.rm(path)


def cached_report(base: str, cache_key: str) -> dict | None:
    """Runs on a worker: the persisted report if it is complete and of the same config and inputs."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(join(base, REPORT))
    try:
        with fs.open(path, "r") as f:
            report = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if report.get("cache_key") != cache_key or not report.get("columns"):
        return None
    if not all(c.get("sha256") for c in report["columns"]):  # written before chunks had checksums
        return None
    root = path.rsplit("/", 1)[0]
    sizes = {name: info.get("size") for name, info in  # one listing, not one request per chunk
             fs.find(f"{root}/{COLUMNS}", detail=True).items()}
    if not all(sizes.get(f"{root}/{c['path']}", -1) == c["bytes"] for c in report["columns"]):
        return None  # a chunk missing or truncated: skim again
    return report
