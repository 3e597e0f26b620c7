"""Per-epoch checkpoints: the complete loop state, written atomically, refused if the setup changed.

``OUT/checkpoint.pkl`` holds ``{"format", "config_hash", "state": LoopState}`` (θ, optimiser state,
epoch, best point, NaN-guard state, history — all numpy/Python, so a resumed run continues
bit-identically). It is written to a temporary file in the same directory, flushed and fsynced, then
renamed over the old one: a driver killed at any moment leaves either the previous or the new
checkpoint, never a torn one.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from zprime_grad import atomic
from zprime_grad.errors import UserError
from zprime_grad.optimise.loop import LoopState

FILENAME = "checkpoint.pkl"
FORMAT = 1


def save(out: Path, state: LoopState, config_hash: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILENAME
    payload = {"format": FORMAT, "config_hash": config_hash, "state": state}
    atomic.write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL), fsync=True)
    return path


def load(out: Path, config_hash: str) -> LoopState:
    path = Path(out) / FILENAME
    if not path.exists():
        raise UserError(f"{path}: no checkpoint to resume from (run without --resume first)")
    try:
        with open(path, "rb") as f:
            payload = pickle.load(f)
    except Exception as err:  # a foreign or damaged file
        raise UserError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    if payload.get("format") != FORMAT:
        raise UserError(f"{path}: checkpoint format {payload.get('format')} is not {FORMAT}")
    if payload["config_hash"] != config_hash:
        raise UserError(f"{path}: checkpoint was made with another config or other columns "
                        f"(hash {payload['config_hash']} != {config_hash}); remove it or drop --resume")
    return payload["state"]


def compatible(out: Path, config_hash: str) -> bool:
    """True if ``out`` holds a readable checkpoint of this exact config and columns."""
    try:
        load(out, config_hash)
    except UserError:
        return False
    return True
