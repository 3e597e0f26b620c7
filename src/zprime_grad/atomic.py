"""Files that are complete or absent: write a hidden sibling, then rename it into place.

Every stage's outputs double as cache markers (a generated file, a skim chunk, a checkpoint, a
summary JSON), so a crash must never leave something half-written under the final name. The rename
is atomic on POSIX file systems; the temporary name carries the pid so concurrent writers (Dask
workers, generator processes) never share one.

A stage's output directory: `exclusive` holds it for one run (a lock on the directory itself, gone
with the process), and holding it the run removes what a killed one left (`remove_leftovers`: hidden
temporaries of `replacing`, folders of `set_aside`); a fresh run `set_aside` the earlier run's outputs,
its completion marker first, before it writes anything.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

log = logging.getLogger(__name__)
STALE = ".stale-"


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> None:
    """``fsync``: also force the bytes to disk before the rename (checkpoints survive a power cut)."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | Path, payload, **dumps) -> None:
    write_bytes(path, (json.dumps(payload, indent=1, **dumps) + "\n").encode())


def read_json(path: str | Path):
    """A JSON file as written by `write_json` (a completion marker, a params.json), or None when it is
    missing or unreadable: a killed writer leaves no file, so None means "not finished"."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ------------------------------------------------------------------------------------ output directories
def writable_directory(directory: str | Path, what: str = "output directory") -> Path:
    """``directory``, created if needed, once a file could be written in it: else one line naming it and
    why (a file in its place, read-only file system, no permission, disk full), before any work starts."""
    from zprime_grad.errors import UserError

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory}: the {what} is an existing file, not a directory")
    probe = directory / f".write-test-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:  # a block, flushed to the file system: a full disk fails here
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        where = directory if err.filename in (None, str(probe)) else err.filename  # the probe's name says nothing
        raise UserError(f"{where}: cannot create or write the {what} ({err.strerror})") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    return directory


def writable_file(path: str | Path, what: str = "output file") -> Path:
    """An output file's path: not a directory, its directory writable (`writable_directory`)."""
    from zprime_grad.errors import UserError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: the {what} is an existing directory")
    writable_directory(path.parent, f"directory of the {what} {path}")
    return path


@contextmanager
def exclusive(directory: str | Path) -> Iterator[bool]:
    """Hold ``directory`` (created if needed) for one run: an exclusive ``flock`` on the directory itself
    (no lock file; released when the block ends or the process dies), so a second run of the same
    directory waits for the first. Yields False where the file system has no such locks (some network
    mounts): the run goes on unlocked, and nothing may then be removed as left over."""
    directory = writable_directory(directory)
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError as err:
            if err.errno not in (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            log.info("%s: no directory locks on this file system (%s); not cleaning leftovers", directory, err)
            locked = False
        yield locked
    finally:
        os.close(fd)


def remove_leftovers(directory: str | Path, names: Sequence[str] = (), prefixes: Sequence[str] = ()) -> list[str]:
    """Remove what runs killed before they finished left in ``directory``: `set_aside` folders, the
    hidden temporaries of `replacing` for ``names`` (``.NAME.tmp<pid>``) and entries starting with one
    of ``prefixes``. Only call it holding `exclusive` (nothing else is writing there). Returns their names."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    temporaries = tuple(f".{n}.tmp" for n in names)
    gone = []
    for p in sorted(directory.iterdir()):
        if not (p.name.startswith(STALE) or p.name.startswith(temporaries) or p.name.startswith(tuple(prefixes))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        gone.append(p.name)
    if gone:
        log.info("removed %s left in %s by a run that did not finish", ", ".join(gone), directory)
    return gone


def set_aside(directory: str | Path, names: Sequence[str]) -> list[str]:
    """Remove the entries ``names`` of ``directory`` (files or folders; absent ones are skipped) as one
    step a reader cannot see half done: each is renamed, in the order given (the completion marker
    first), into one fresh hidden folder, which is then deleted. A run killed meanwhile leaves only that
    folder, which the next run's `remove_leftovers` deletes. Returns the names set aside."""
    directory = Path(directory)
    present = [n for n in dict.fromkeys(names) if os.path.lexists(directory / n)]  # a name given twice: once
    if present:
        trash = directory / f"{STALE}{os.getpid()}-{time.time_ns()}"
        trash.mkdir()
        for n in present:
            os.replace(directory / n, trash / n)
        shutil.rmtree(trash, ignore_errors=True)
    return present
