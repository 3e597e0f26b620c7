"""Fileset handling before any chunk runs: normalise, check every file on the driver, fill Σ genWeight.

Checking on the driver means a missing/corrupt file or a missing branch is reported once, naming the
file (and branch), before a cluster spends time on it; with ``skip_bad_files`` unreadable files are
dropped and listed instead (`bad_file`: dataset, the file's logical name, the reason, where it failed).
The driver only opens each file (header, tree, branch names); a file whose baskets are damaged or
truncated fails later, while its chunks are read, and the skim then drops it too (`read_failure`
tells a reading failure from a processor's; `zprime_grad.skim.runner`). ``sumw`` is filled per dataset
(all its files' Runs trees), because a per-file Σ would overweight multi-file datasets; a file whose
Runs tree cannot be read is skipped there (``skip_bad_files``) and Σ is taken over the others.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import posixpath
from pathlib import Path

import uproot
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from zprime_grad.columns import file_sumw
from zprime_grad.errors import UserError
from zprime_grad.limits import FLOAT32_MAX, XSEC_MAX_PB


LOGICAL_NAMES = "logical_names"


class DatasetMetadata(BaseModel):
    """The metadata keys the skim and the processors read, checked where a fileset enters (`load_fileset`):
    strict types (``"is_data": "false"`` is not a boolean), finite positive numbers. Other keys pass through."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    is_data: StrictBool = False
    xsec: StrictFloat | None = Field(None, gt=0, le=XSEC_MAX_PB, description="MC cross section in pb")
    sumw: StrictFloat | None = Field(None, gt=0, le=FLOAT32_MAX,
                                     description="Σ genWeight of all the dataset's files (a sum of float32 weights)")
    nevts: StrictInt | None = Field(None, gt=0, description="events of the dataset (xsec·lumi/nevts weights)")
    nevents: StrictInt | None = Field(None, ge=0)
    process: StrictStr | None = None
    variation: StrictStr | None = None


def check_metadata(dataset: str, metadata, source: str = "fileset") -> dict:
    """``metadata`` if every key the analysis reads is valid; else one line naming the dataset and key."""
    if not isinstance(metadata, dict):
        raise UserError(f"{source}: dataset {dataset!r}: metadata must be a mapping (got {_short(metadata)})")
    try:
        DatasetMetadata.model_validate(metadata)
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(map(str, e["loc"]))
        raise UserError(f"{source}: dataset {dataset!r}: metadata '{key}': {e['msg']} "
                        f"(got {_short(e.get('input'))})") from None
    return metadata


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_fileset(fileset) -> dict:
    """``{dataset: {"files": {path: tree}, "metadata": {...}}}`` from a coffea fileset (dict or JSON path).

    Relative file paths are resolved against the fileset's directory, so it runs from anywhere; the
    name each file had in the fileset is kept in ``metadata["logical_names"]`` (`logical_name`), and
    that name, never the resolved path, identifies the file in chunk keys and hashes: the same
    fileset gives the same numbers wherever it and the repository lie."""
    base, source = Path("."), "fileset"
    if isinstance(fileset, (str, os.PathLike)):
        path = source = Path(fileset)
        try:
            fileset = json.loads(path.read_text())
        except OSError as err:
            raise UserError(f"{path}: cannot read fileset ({err.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: fileset is not valid JSON ({err})") from None
        base = path.parent
    if not isinstance(fileset, dict) or not fileset:
        raise UserError(f"{source}: fileset must be a non-empty mapping {{dataset: files}}")
    out = {}
    for name, entry in fileset.items():
        files, treename, metadata = _entry(name, entry, str(source))
        known = dict(metadata.get(LOGICAL_NAMES, {}))
        resolved = {_resolve(f, base): (f, tree or treename) for f, tree in files.items()}
        metadata[LOGICAL_NAMES] = {path: known.get(path, _as_written(written))
                                   for path, (written, _) in resolved.items()}
        out[name] = {"files": {path: tree for path, (_, tree) in resolved.items()}, "metadata": metadata}
    return out


def _entry(name, entry, source: str) -> tuple[dict, str, dict]:
    """(files {path: tree}, treename, metadata) of one dataset of a coffea fileset, its shape checked."""
    where = f"{source}: dataset {name!r}"
    if isinstance(entry, (list, tuple)):
        entry = {"files": list(entry)}
    if not isinstance(entry, dict):
        raise UserError(f"{where}: must be a list of files or {{files, metadata}} (got {_short(entry)})")
    treename = entry.get("treename", "Events")
    if not isinstance(treename, str) or not treename:
        raise UserError(f"{where}: 'treename' must be a tree name (got {_short(treename)})")
    files = entry.get("files", {})
    if isinstance(files, (list, tuple)):
        files = {f: treename for f in files}
    if not isinstance(files, dict) or not files or not all(
            isinstance(f, str) and f and (t is None or isinstance(t, str)) for f, t in files.items()):
        raise UserError(f"{where}: 'files' must be a non-empty list of paths or {{path: tree}} (got {_short(files)})")
    return files, treename, dict(check_metadata(name, entry.get("metadata", {}), f"{source}"))


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


def describe(err: BaseException, filename: str, metadata: dict) -> str:
    """An exception as one line of a report, the machine's path of the file replaced by its logical name."""
    return f"{type(err).__name__}: {err}".replace("\n", " ").replace(filename, logical_name(filename, metadata))


def bad_file(dataset: str, filename: str, metadata: dict, err: BaseException, where: str) -> dict:
    """skim.json's ``bad_files`` entry of a skipped file: its logical name (no directory of this machine),
    the reason and where reading failed (``open``, ``Runs``, ``entries A-B``)."""
    return {"dataset": dataset, "file": logical_name(filename, metadata), "error": describe(err, filename, metadata),
            "where": where}


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
                bad.append(bad_file(dataset, filename, entry["metadata"], err, "open"))
                del good[dataset]["files"][filename]
                continue
            check = getattr(processor, "check_branches", None)
            if check is not None:
                check(branches, filename, is_data=is_data)
    return drop_empty(good, bad), bad


def drop_empty(fileset: dict, bad: list[dict]) -> dict:
    """``fileset`` without datasets that have no file left; an error if none is left at all."""
    good = {d: e for d, e in fileset.items() if e["files"]}
    if not good:
        raise UserError("no readable input files left: " + "; ".join(f"{b['file']} ({b['error']})" for b in bad))
    return good


def is_read_failure(err: BaseException) -> bool:
    """Whether ``err`` (anything from opening a file to decoding its baskets) means the file could not be
    read, rather than that the file lacks something the analysis needs (a UserError of its own)."""
    return not isinstance(err, UserError) or err.__context__ is not None  # a UserError raised on a read error


def fill_sumw(fileset: dict, *, skip_bad_files: bool = False, bad: list | None = None) -> dict:
    """Check each MC dataset's ``xsec`` and give it a ``sumw`` (Σ genWeight over all its files) unless
    the metadata has one: event weights are xsec·lumi·genWeight/Σ genWeight. A file whose Runs tree
    cannot be read is an error naming it, or with ``skip_bad_files`` dropped (listed in ``bad``) and
    Σ taken over the dataset's other files."""
    out = copy.deepcopy(fileset)
    for name, entry in out.items():
        meta = entry["metadata"]
        if meta.get("is_data", False):
            continue
        xsec = meta.get("xsec")
        if not isinstance(xsec, (int, float)) or isinstance(xsec, bool) or xsec <= 0:
            raise UserError(f"dataset {name}: metadata 'xsec' (pb) must be a positive number for MC "
                            f"(got {xsec!r}); mark data with is_data: true")
        if meta.get("sumw") is not None:
            continue
        total = 0.0
        for filename in list(entry["files"]):
            try:
                total += file_sumw(filename)
            except Exception as err:
                if not is_read_failure(err):
                    raise
                if not skip_bad_files:
                    if isinstance(err, UserError):
                        raise
                    raise UserError(f"{filename}: cannot read the sum of generator weights ({describe(err, filename, meta)}); "
                                    "use --skip-bad-files to skip it") from None
                if bad is not None:
                    bad.append(bad_file(name, filename, meta, err.__context__ if isinstance(err, UserError) else err,
                                        "Runs"))
                del entry["files"][filename]
        meta["sumw"] = float(total)
    return drop_empty(out, bad or [])


def read_failure(filename: str, treename: str, branches, entry_start: int, entry_stop: int) -> BaseException | None:
    """Read ``branches`` (None: all) of entries ``[entry_start, entry_stop)`` straight from the file, as the
    skim does: the exception if that fails (damaged or truncated baskets …), None if the file reads."""
    try:
        with uproot.open(filename) as f:
            tree = f[treename]
            for branch in tree.keys(filter_name=branches) if branches is not None else tree.keys():
                tree[branch].array(entry_start=entry_start, entry_stop=entry_stop, library="np")
    except Exception as err:
        return err
    return None


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
