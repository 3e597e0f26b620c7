"""Fileset handling before any chunk runs: normalise, check every file on the driver, fill Σ genWeight.

Checking on the driver means a missing/corrupt file or a missing branch is reported once, naming the
file (and branch), before a cluster spends time on it; with ``skip_bad_files`` unreadable files are
dropped and listed instead. ``sumw`` is filled per dataset (all its files' Runs trees), because a
per-file Σ would overweight multi-file datasets.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import posixpath
from pathlib import Path

import uproot

from zprime_grad.columns import dataset_sumw
from zprime_grad.errors import UserError


LOGICAL_NAMES = "logical_names"


def load_fileset(fileset) -> dict:
    """``{dataset: {"files": {path: tree}, "metadata": {...}}}`` from a coffea fileset (dict or JSON path).

    Relative file paths are resolved against the fileset's directory, so it runs from anywhere; the
    name each file had in the fileset is kept in ``metadata["logical_names"]`` (`logical_name`), and
    that name, never the resolved path, identifies the file in chunk keys and hashes: the same
    fileset gives the same numbers wherever it and the repository lie."""
    base = Path(".")
    if isinstance(fileset, (str, os.PathLike)):
        path = Path(fileset)
        try:
            fileset = json.loads(path.read_text())
        except OSError as err:
            raise UserError(f"{path}: cannot read fileset ({err.strerror})") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: fileset is not valid JSON ({err})") from None
        base = path.parent
    if not isinstance(fileset, dict) or not fileset:
        raise UserError("fileset must be a non-empty mapping {dataset: files}")
    out = {}
    for name, entry in fileset.items():
        if isinstance(entry, (list, tuple)):
            entry = {"files": list(entry)}
        files = entry.get("files", {})
        treename = entry.get("treename", "Events")
        if isinstance(files, (list, tuple)):
            files = {f: treename for f in files}
        metadata = dict(entry.get("metadata", {}))
        known = dict(metadata.get(LOGICAL_NAMES, {}))
        resolved = {_resolve(f, base): (f, tree or treename) for f, tree in files.items()}
        metadata[LOGICAL_NAMES] = {path: known.get(path, _as_written(written))
                                   for path, (written, _) in resolved.items()}
        out[name] = {"files": {path: tree for path, (_, tree) in resolved.items()}, "metadata": metadata}
    return out


def logical_name(filename: str, metadata: dict) -> str:
    """The file's name as its fileset wrote it (relative paths stay relative): what chunk keys,
    chunk file names and content hashes use, so no directory of this machine enters them."""
    return metadata.get(LOGICAL_NAMES, {}).get(filename, filename)


def name_chunk_file(chunk, metadata: dict):
    """Give a processor's chunk its file's logical name (processors report the path coffea opened)."""
    chunk.provenance["file"] = logical_name(chunk.provenance.get("file", ""), metadata)
    return chunk


def _as_written(path: str) -> str:
    return path if "://" in path or Path(path).is_absolute() else posixpath.normpath(Path(path).as_posix())


def _resolve(path: str, base: Path) -> str:
    if "://" in path or Path(path).is_absolute():
        return path
    return str((base / path).resolve())


def check_files(fileset: dict, processor, *, skip_bad_files: bool = False) -> tuple[dict, list[dict]]:
    """Open every file and check its branches; returns (usable fileset, list of skipped bad files)."""
    good, bad = copy.deepcopy(fileset), []
    for dataset, entry in fileset.items():
        is_data = bool(entry["metadata"].get("is_data", False))
        for filename, tree in entry["files"].items():
            try:
                with uproot.open(filename) as f:
                    if tree not in f:
                        raise UserError(f"{filename}: no tree '{tree}' (keys: {', '.join(f.keys()[:8])})")
                    branches = set(f[tree].keys())
            except UserError:
                raise
            except Exception as err:  # uproot raises many types for unreadable files
                reason = f"{type(err).__name__}: {err}".replace("\n", " ")
                if not skip_bad_files:
                    raise UserError(f"{filename}: cannot read input file ({reason}); "
                                    "use --skip-bad-files to skip it") from None
                bad.append({"dataset": dataset, "file": filename, "error": reason})
                del good[dataset]["files"][filename]
                continue
            check = getattr(processor, "check_branches", None)
            if check is not None:
                check(branches, filename, is_data=is_data)
    empty = [d for d, e in good.items() if not e["files"]]
    for d in empty:
        del good[d]
    if not good:
        raise UserError("no readable input files left: " + "; ".join(b["file"] for b in bad))
    return good, bad


def fill_sumw(fileset: dict) -> dict:
    """Check each MC dataset's ``xsec`` and give it a ``sumw`` (Σ genWeight over all its files) unless
    the metadata has one: event weights are xsec·lumi·genWeight/Σ genWeight."""
    out = copy.deepcopy(fileset)
    for name, entry in out.items():
        meta = entry["metadata"]
        if meta.get("is_data", False):
            continue
        xsec = meta.get("xsec")
        if not isinstance(xsec, (int, float)) or isinstance(xsec, bool) or xsec <= 0:
            raise UserError(f"dataset {name}: metadata 'xsec' (pb) must be a positive number for MC "
                            f"(got {xsec!r}); mark data with is_data: true")
        if meta.get("sumw") is None:
            meta["sumw"] = dataset_sumw(list(entry["files"]))
    return out


def fileset_fingerprint(fileset: dict) -> str:
    """Hash of files (logical name, size and mtime) and metadata: what a cached skim is valid for."""
    items = []
    for dataset in sorted(fileset):
        entry = fileset[dataset]
        files = []
        for f, tree in sorted(entry["files"].items(), key=lambda item: logical_name(item[0], entry["metadata"])):
            name = logical_name(f, entry["metadata"])
            try:
                st = os.stat(f)
                files.append([name, tree, st.st_size, st.st_mtime_ns])
            except OSError:
                files.append([name, tree, None, None])
        meta = {k: v for k, v in entry["metadata"].items() if k != LOGICAL_NAMES}  # keyed by machine paths
        items.append([dataset, files, meta])
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]
