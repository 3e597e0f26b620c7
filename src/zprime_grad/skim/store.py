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

Caches verify themselves: each chunk's skim.json entry has the SHA-256 of its file's bytes
(``sha256``, of the bytes only: the same chunk gives the same digest in any directory). A re-run reuses
a skim only if every listed file has its recorded size and digest (else it skims again, saying which
file was damaged), and every load (`read_chunk`, `zprime_grad.chunks.load_chunk`, `skim.persist`)
hashes the bytes it read and refuses a damaged file by name. One skim at a time per directory
(`exclusive`: a lock on the directory itself); holding it, a run removes what a killed one left
(``.columns.tmp-*``, ``.stale-*``), and a fresh run removes the earlier run's ``skim.json`` and
``columns/`` before it starts (`atomic.set_aside`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from zprime_grad import atomic, terminal
from zprime_grad.columns import ColumnChunk, channel_counts
from zprime_grad.errors import UserError

log = logging.getLogger(__name__)

REPORT = "skim.json"
COLUMNS = "columns"


def chunk_filename(chunk: ColumnChunk) -> str:
    p = chunk.provenance
    digest = hashlib.sha1(str(p.get("file", "")).encode()).hexdigest()[:8]
    return f"{chunk.dataset}/{digest}_{p.get('entrystart', 0)}-{p.get('entrystop', 0)}.npz"


def chunk_path(chunk: ColumnChunk) -> str:
    """Where a chunk lives relative to the skim's root (a directory, or a `persist` URL)."""
    return f"{COLUMNS}/{chunk_filename(chunk)}"


def checksum(data: bytes) -> str:
    """The content checksum skim.json records per chunk: SHA-256 of the file's bytes (no path in it)."""
    return hashlib.sha256(data).hexdigest()


def chunk_entry(chunk: ColumnChunk, data: bytes) -> dict:
    """skim.json's entry for one written chunk (``data``: the bytes written)."""
    return {"path": chunk_path(chunk), "bytes": len(data), "sha256": checksum(data),
            "n_events": chunk.n_events, "length": chunk.length}


def write_chunk(chunk: ColumnChunk, directory: str) -> dict:
    """Write one chunk atomically under ``directory`` (runs on a worker on Dask); returns its entry."""
    path = Path(directory) / chunk_filename(chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = chunk.to_npz_bytes()
    atomic.write_bytes(path, data)
    return chunk_entry(chunk, data)


def damage(data: bytes, sha256: str | None, nbytes: int | None = None) -> str | None:
    """What is wrong with a chunk file's bytes against its skim.json entry (None: nothing)."""
    if nbytes is not None and len(data) != nbytes:
        return f"{len(data)} bytes, skim.json recorded {nbytes}"
    if sha256 is not None and checksum(data) != sha256:
        return "its SHA-256 differs from the one skim.json recorded"
    return None


def chunk_from_bytes(data: bytes, name: str, sha256: str | None = None) -> ColumnChunk:
    """A chunk from its file's bytes, checked against the recorded checksum; a damaged or unreadable
    file is a one-line UserError naming it (``name``: its path or URL)."""
    problem = damage(data, sha256)
    if problem is not None:
        raise UserError(f"{name}: damaged chunk file ({problem}); run zprime-grad skim again to rebuild it")
    try:
        return ColumnChunk.from_npz(io.BytesIO(data))
    except Exception as err:  # zipfile.BadZipFile, a torn .npy, bad meta JSON …
        raise UserError(f"{name}: unreadable chunk file ({type(err).__name__}: {err}); "
                        "run zprime-grad skim again to rebuild it") from None


def read_chunk(path, sha256: str | None = None) -> ColumnChunk:
    """One chunk file, verified while read (the bytes read once, hashed, then parsed)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read chunk file ({err.strerror})") from None
    return chunk_from_bytes(data, str(path), sha256)


def summarise_chunk(chunk: ColumnChunk, channels, params) -> dict:
    """The few numbers the driver keeps per chunk (never event arrays)."""
    return {
        "key": list(chunk.key), "path": chunk_path(chunk), "dataset": chunk.dataset,
        "process": chunk.process, "is_data": chunk.is_data,
        "n_events": chunk.n_events, "length": chunk.length, "nbytes": chunk.nbytes,
        "entries_read": int(chunk.provenance.get("entries_read", 0)),
        "lumi_mask_removed": int(chunk.provenance.get("lumi_mask_removed", 0)),
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
        if s["is_data"]:  # events outside the certified lumi sections (analysis.golden_json)
            d["lumi_mask_removed"] = d.get("lumi_mask_removed", 0) + s.get("lumi_mask_removed", 0)
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
TEMPORARY = (".columns.tmp-", ".columns.old-")  # what a run killed before it finished can leave


@contextmanager
def exclusive(out: Path) -> Iterator[Path]:
    """Hold the skim directory ``out`` (created if needed) for one skim (`atomic.exclusive`: a second skim
    of the same directory waits, then finds the first one's result); holding it, the temporaries of
    killed runs are removed (``.columns.tmp-*``, ``.columns.old-*``, a torn ``skim.json``'s)."""
    with atomic.exclusive(out) as locked:
        if locked:
            atomic.remove_leftovers(out, names=[REPORT], prefixes=TEMPORARY)
        yield Path(out)


def damaged_chunk(out: Path, entries: list[dict]) -> str | None:
    """The first listed chunk file that is missing, unreadable or not the bytes skim.json recorded,
    with what is wrong ("path: problem"); None when every one verifies. Reads every file once."""
    for c in entries:
        path = Path(out) / c["path"]
        if c.get("sha256") is None:
            return f"{path}: no checksum recorded (a skim of an older version)"
        try:
            data = path.read_bytes()
        except OSError as err:
            return f"{path}: {err.strerror}"
        problem = damage(data, c["sha256"], c.get("bytes"))
        if problem is not None:
            return f"{path}: {problem}"
    return None


def cached_report(out: Path, cache_key: str) -> dict | None:
    """The existing skim.json if it is complete, was made from the same config and inputs, and every
    chunk file it lists is intact (size and SHA-256 as recorded); a damaged one is named and not reused."""
    try:
        report = json.loads((Path(out) / REPORT).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if report.get("cache_key") != cache_key or not report.get("columns"):  # none: resident on a cluster
        return None
    problem = damaged_chunk(out, report["columns"])
    if problem is not None:
        log.warning("skim: not reusing %s: %s", Path(out) / REPORT, problem)
        terminal.say(f"skim: {problem}; skimming again")
        return None
    return report


def fresh_columns_dir(out: Path) -> Path:
    """A new temporary columns directory; the earlier run's ``skim.json`` and ``columns/`` go first
    (`atomic.set_aside`, the marker first), so a run killed from here on leaves nothing that looks like
    a finished skim."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.set_aside(out, [REPORT, COLUMNS])
    tmp = out / f".columns.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    return tmp


def commit(out: Path, tmp_columns: Path, report: dict) -> Path:
    """Swap the finished columns in, then write skim.json (the completion marker) atomically."""
    out = Path(out)
    atomic.set_aside(out, [REPORT, COLUMNS])
    os.replace(tmp_columns, out / COLUMNS)
    atomic.write_json(out / REPORT, report, sort_keys=True)
    return out / REPORT


def read_columns(out: Path) -> list[ColumnChunk]:
    """Every chunk of a finished skim directory, in skim.json order, each verified against its checksum."""
    report = json.loads((Path(out) / REPORT).read_text())
    return [read_chunk(Path(out) / c["path"], c.get("sha256")) for c in report["columns"]]
