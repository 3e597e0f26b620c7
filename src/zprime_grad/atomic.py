"""Files that are complete or absent: write a hidden sibling, then rename it into place.

Every stage's outputs double as cache markers (a generated file, a skim chunk, a checkpoint, a
summary JSON), so a crash must never leave something half-written under the final name. The rename
is atomic on POSIX file systems; the temporary name carries the pid so concurrent writers (Dask
workers, generator processes) never share one.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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
