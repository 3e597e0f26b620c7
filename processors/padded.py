"""A jagged NanoAOD collection as fixed-width numpy arrays plus a validity mask.

Object selection, pT ordering and JES/JER variations then are plain vectorised numpy (masks, sorts,
``take_along_axis``), several times faster than awkward broadcasting for the five kinematic
variations the skim evaluates per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np


def _gather_index(values, rows: np.ndarray, width: int | None = None):
    """Where each (row, slot) of the padded array comes from in the flattened branch, and validity."""
    counts = np.asarray(ak.num(values), dtype=np.int64)
    starts = (np.cumsum(counts) - counts)[rows]
    counts = counts[rows]
    if width is None:
        width = max(int(counts.max()) if len(counts) else 0, 1)
    valid = np.arange(width)[None, :] < counts[:, None]
    return np.where(valid, starts[:, None] + np.arange(width)[None, :], 0), valid


def _gather(values, index: np.ndarray, valid: np.ndarray, dtype) -> np.ndarray:
    flat = np.asarray(ak.to_numpy(ak.flatten(values)), dtype=dtype)
    if len(flat) == 0:
        return np.zeros(index.shape, dtype)
    out = flat[index]
    out[~valid] = 0
    return out


def pad_jagged(values, rows: np.ndarray, width: int, dtype=np.float64) -> np.ndarray:
    """(len(rows), width) array of a jagged array's values in the selected rows; zero beyond each count.

    ``values`` is the unfiltered NanoAOD branch, so flattening it is a slice, not a copy through an
    index (filtering the jagged array first makes awkward carry every column: 3x slower).
    """
    index, valid = _gather_index(values, rows, width)
    return _gather(values, index, valid, dtype)


@dataclass(frozen=True)
class Objects:
    """``fields[name]`` has shape (events, width); ``valid`` marks real (and still selected) objects."""

    fields: dict
    valid: np.ndarray

    @classmethod
    def from_collection(cls, collection, names: dict[str, str], rows=None) -> "Objects":
        """``names``: output field -> branch field of an (unfiltered) NanoEvents collection, e.g.
        btag -> btagDeepB; ``rows``: the events to keep (boolean mask or indices; default all)."""
        n = len(collection)
        rows = np.arange(n) if rows is None else np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        index, valid = _gather_index(collection, rows)  # offsets are shared by every field
        fields = {out: _gather(collection[branch], index, valid, np.float64) for out, branch in names.items()}
        return cls(fields, valid)

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def where(self, keep: np.ndarray) -> "Objects":
        return Objects(self.fields, self.valid & keep)

    def with_fields(self, **changes) -> "Objects":
        return Objects({**self.fields, **changes}, self.valid)

    def leading(self, width: int) -> "Objects":
        """The ``width`` highest-pT selected objects, in decreasing pT; empty slots invalid and zero."""
        key = np.where(self.valid, -self.fields["pt"], np.inf)
        order = np.argsort(key, axis=1, kind="stable")[:, :width]
        take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
        fields, valid = {k: take(v) for k, v in self.fields.items()}, take(self.valid)
        if valid.shape[1] < width:  # a collection narrower than the slots: pad with empty slots
            pad = ((0, 0), (0, width - valid.shape[1]))
            fields, valid = {k: np.pad(v, pad) for k, v in fields.items()}, np.pad(valid, pad)
        return Objects(fields, valid)

    def count(self) -> np.ndarray:
        return self.valid.sum(axis=1)

    def sum(self, name: str) -> np.ndarray:
        return np.where(self.valid, self.fields[name], 0.0).sum(axis=1)

    def slots(self, name: str) -> np.ndarray:
        """float32 values, zero where no object (use on `leading` objects for fixed-width columns)."""
        return np.where(self.valid, self.fields[name], 0.0).astype(np.float32)

    def mask(self) -> np.ndarray:
        return self.valid.astype(np.float32)

    def take(self, rows) -> "Objects":
        return Objects({k: v[rows] for k, v in self.fields.items()}, self.valid[rows])
