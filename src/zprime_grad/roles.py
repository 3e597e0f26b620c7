"""Event roles, declared once: train (gradients), tune (every choice made by looking at results), test
(the final hard-cut validation only).

An event's role is a function of its identity (run, lumi section, event number) alone: the same on every
executor, chunking and era, in any directory. ``test`` is by default the odd event numbers (the held-out
half of the project's reference numbers); otherwise a hash fraction. Of the rest, ``tune`` is a hash
fraction and ``train`` the remainder. A role's events stand for the full luminosity: their weights are
scaled by 1 / (the role's expected fraction of all events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

TRAIN, TUNE, TEST = 0, 1, 2
NAMES = ("train", "tune", "test")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def identity_uniform(run, lumi, event, salt: int) -> np.ndarray:
    """A number in [0, 1) per event from its identity (and a salt: independent splits stay independent)."""
    with np.errstate(over="ignore"):
        key = _splitmix64(np.asarray(run).astype(np.uint64) ^ np.uint64(salt))
        key = _splitmix64(key ^ np.asarray(lumi).astype(np.uint64))
        key = _splitmix64(key ^ np.asarray(event).astype(np.uint64))
    return (key >> np.uint64(11)).astype(np.float64) / 2.0**53


@dataclass(frozen=True)
class Roles:
    """``test``: "odd" or a fraction of all events; ``tune``: the fraction of the non-test events."""

    tune: float = 0.5
    test: Literal["odd"] | float = "odd"

    def __post_init__(self):
        if not 0.0 < self.tune < 1.0:
            raise ValueError(f"roles.tune must be in (0, 1) (got {self.tune})")
        if self.test != "odd" and not (isinstance(self.test, float) and 0.0 < self.test < 1.0):
            raise ValueError(f"roles.test must be 'odd' or a fraction in (0, 1) (got {self.test!r})")

    @property
    def test_fraction(self) -> float:
        return 0.5 if self.test == "odd" else float(self.test)

    def fraction(self, role: int) -> float:
        """Expected fraction of all events in ``role``."""
        rest = 1.0 - self.test_fraction
        return (rest * (1.0 - self.tune), rest * self.tune, self.test_fraction)[role]

    def of(self, run, lumi, event) -> np.ndarray:
        """int8 role per event (padding rows with event −1 get some role; their weights are zero)."""
        event = np.asarray(event)
        if self.test == "odd":
            test = (event.astype(np.uint64) % np.uint64(2)) == 1
        else:
            test = identity_uniform(run, lumi, event, salt=0x7E57) < self.test
        tune = identity_uniform(run, lumi, event, salt=0x70E) < self.tune
        return np.where(test, TEST, np.where(tune, TUNE, TRAIN)).astype(np.int8)

    def weights(self, run, lumi, event, *roles: int) -> np.ndarray:
        """[len(roles), N] float64: 1/fraction for events of each role, else 0."""
        of = self.of(run, lumi, event)
        return np.stack([(of == r) / self.fraction(r) for r in roles]).astype(np.float64)


def _identities(chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(run, lumi, event) of a ColumnChunk's rows (chunks without ids, e.g. benchmark replicas: the parity
    column, else the row number, stands in for the event number; run and lumi section 0)."""
    ids, zero = chunk.ids, np.zeros(chunk.length, np.int64)
    if "event" in ids:
        event = ids["event"]
    elif "parity" in chunk.columns:  # hand-made chunks: their parity column stands in for the event number
        event = np.asarray(chunk.columns["parity"]).astype(np.int64)
    else:
        event = np.arange(chunk.length)
    return ids.get("run", zero), ids.get("luminosityBlock", zero), event


def chunk_roles(chunk, roles: Roles) -> np.ndarray:
    """The role of each row of a ColumnChunk."""
    return roles.of(*_identities(chunk))


def chunk_role_weights(chunk, roles: Roles, *which: int) -> np.ndarray:
    """The role weights ``[len(which), length]`` of a ColumnChunk's rows."""
    return roles.weights(*_identities(chunk), *which)
