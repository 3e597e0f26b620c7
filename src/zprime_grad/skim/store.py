"""The skim on disk, and the small per-chunk summaries that ``skim.json`` is built from.

On-disk format (``OUT/``)::

    skim.json                                   what was skimmed (see `build_report`), written last
    columns/<dataset>/<hash8(file)>_<start>-<stop>.npz   one ColumnChunk per coffea chunk

Each ``.npz`` (uncompressed numpy archive) holds the arrays ``col.<name>`` (event / padded object
columns), ``w.<name>`` (weights), ``var.<variation>.<name>`` (JES/JER columns), ``id.<name>``
(run/luminosityBlock/event, int64) and ``meta`` (UTF-8 JSON: n_events, length, dataset, process,
is_data, provenance). ``ColumnChunk.from_npz(path)`` reads one back.

Nothing half-written looks complete: chunk files are written as ``*.tmp`` and renamed, into a fresh
``.columns.tmp-*`` directory that replaces ``columns/`` only when every chunk is there; ``skim.json``
(removed first, written last, tmp + rename) is the completion marker that a cached re-run checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from zprime_grad import atomic
from zprime_grad.columns import ColumnChunk, channel_counts

REPORT = "skim.json"
COLUMNS = "columns"


def chunk_filename(chunk: ColumnChunk) -> str:
    p = chunk.provenance
    digest = hashlib.sha1(str(p.get("file", "")).encode()).hexdigest()[:8]
    return f"{chunk.dataset}/{digest}_{p.get('entrystart', 0)}-{p.get('entrystop', 0)}.npz"


def chunk_path(chunk: ColumnChunk) -> str:
    """Where a chunk lives relative to the skim's root (a directory, or a `persist` URL)."""
    return f"{COLUMNS}/{chunk_filename(chunk)}"


def chunk_entry(chunk: ColumnChunk, nbytes: int) -> dict:
    """skim.json's entry for one written chunk."""
    return {"path": chunk_path(chunk), "bytes": nbytes, "n_events": chunk.n_events, "length": chunk.length}


def write_chunk(chunk: ColumnChunk, directory: str) -> dict:
    """Write one chunk atomically under ``directory`` (runs on a worker on Dask); returns its entry."""
    path = Path(directory) / chunk_filename(chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = chunk.to_npz_bytes()
    atomic.write_bytes(path, data)
    return chunk_entry(chunk, len(data))


def summarise_chunk(chunk: ColumnChunk, channels, params) -> dict:
    """The few numbers the driver keeps per chunk (never event arrays)."""
    return {
        "key": list(chunk.key), "path": chunk_path(chunk), "dataset": chunk.dataset,
        "process": chunk.process, "is_data": chunk.is_data,
        "n_events": chunk.n_events, "length": chunk.length, "nbytes": chunk.nbytes,
        "entries_read": int(chunk.provenance.get("entries_read", 0)),
        "counts": channel_counts(chunk, channels, params), "metrics": dict(chunk.metrics),
    }


def build_report(summaries: list[dict], dataset_metrics: dict, *, bad_files: list, info: dict) -> dict:
    """skim.json: per dataset and channel raw/weighted counts, chunks, bytes read, throughput."""
    datasets: dict = {}
    for s in sorted(summaries, key=lambda s: s["key"]):  # fixed order: sums identical on every executor
        d = datasets.setdefault(s["dataset"], {
            "process": s["process"], "is_data": s["is_data"], "chunks": 0, "entries_read": 0,
            "events_skimmed": 0, "column_bytes": 0, "channels": {},
        })
        d["chunks"] += 1
        d["entries_read"] += s["entries_read"]
        d["events_skimmed"] += s["n_events"]
        d["column_bytes"] += s["nbytes"]
        for channel, c in s["counts"].items():
            acc = d["channels"].setdefault(channel, {"raw": 0, "weighted": 0.0})
            acc["raw"] += c["raw"]
            acc["weighted"] += c["weighted"]
    for name, d in datasets.items():
        m = dataset_metrics.get(name, {})
        t = m.get("process_time_s")
        d["bytes_read"] = m.get("bytes_read")
        d["process_time_s"] = t
        d["throughput_hz"] = (d["entries_read"] / t) if t else None
    return {**info, "datasets": datasets, "bad_files": list(bad_files)}


def metrics_from_chunks(summaries: list[dict]) -> dict:
    """Per-dataset bytes read and process time, summed from per-chunk metrics (Dask path)."""
    out: dict = {}
    for s in summaries:
        m = out.setdefault(s["dataset"], {"bytes_read": 0, "process_time_s": 0.0})
        m["bytes_read"] += int(s["metrics"].get("bytes_read", 0))
        m["process_time_s"] += float(s["metrics"].get("process_time_s", 0.0))
    return out


# ----------------------------------------------------------------------------------- output directory
def cached_report(out: Path, cache_key: str) -> dict | None:
    """The existing skim.json if it is complete and was made from the same config and inputs."""
    try:
        report = json.loads((Path(out) / REPORT).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if report.get("cache_key") != cache_key or not report.get("columns"):  # none: resident on a cluster
        return None
    if not all((Path(out) / c["path"]).exists() for c in report.get("columns", [])):
        return None
    return report


def fresh_columns_dir(out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".columns.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    return tmp


def commit(out: Path, tmp_columns: Path, report: dict) -> Path:
    """Swap the finished columns in, then write skim.json (the completion marker) atomically."""
    out = Path(out)
    (out / REPORT).unlink(missing_ok=True)
    final = out / COLUMNS
    if final.exists():
        trash = out / f".columns.old-{os.getpid()}-{time.time_ns()}"
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp_columns, final)
    atomic.write_json(out / REPORT, report, sort_keys=True)
    return out / REPORT


def read_columns(out: Path) -> list[ColumnChunk]:
    """Every chunk of a finished skim directory, in skim.json order."""
    report = json.loads((Path(out) / REPORT).read_text())
    return [ColumnChunk.from_npz(Path(out) / c["path"]) for c in report["columns"]]
