"""A jagged NanoAOD collection as fixed-width numpy arrays plus a validity mask.

Object selection, pT ordering and JES/JER variations then are plain vectorised numpy (masks, sorts,
``take_along_axis``), several times faster than awkward broadcasting for the five kinematic
variations the skim evaluates per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np


def counts(values) -> np.ndarray:
    """Objects per event of a jagged NanoAOD collection or branch (reads only the offsets)."""
    return np.asarray(ak.num(values), dtype=np.int64)


def flat(values, dtype=None) -> np.ndarray:
    """The flattened values of an unfiltered jagged branch (a slice of its content, not a copy)."""
    out = np.asarray(ak.to_numpy(ak.flatten(values)))
    return out if dtype is None else out.astype(dtype, copy=False)


def per_event_sum(flags: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Σ of a flat per-object array within each event (``n`` objects per event), without awkward."""
    running = np.concatenate(([0], np.cumsum(flags, dtype=np.int64)))
    stops = np.cumsum(n)
    return running[stops] - running[stops - n]


def _gather_index(n: np.ndarray, rows: np.ndarray, width: int | None = None):
    """Where each (row, slot) of the padded array comes from in the flattened branch, and validity."""
    starts = (np.cumsum(n) - n)[rows]
    n = n[rows]
    if width is None:
        width = max(int(n.max()) if len(n) else 0, 1)
    valid = np.arange(width)[None, :] < n[:, None]
    return np.where(valid, starts[:, None] + np.arange(width)[None, :], 0), valid


def _gather(values: np.ndarray, index: np.ndarray, valid: np.ndarray, dtype) -> np.ndarray:
    values = np.asarray(values, dtype=dtype)
    if len(values) == 0:
        return np.zeros(index.shape, dtype)
    out = values[index]
    out[~valid] = 0
    return out


@dataclass(frozen=True)
class Objects:
    """``fields[name]`` has shape (events, width); ``valid`` marks real (and still selected) objects."""

    fields: dict
    valid: np.ndarray

    @classmethod
    def from_collection(cls, collection, names: dict[str, str], rows=None, *, flat_fields=None) -> "Objects":
        """``names``: output field -> branch field of an (unfiltered) NanoEvents collection, e.g.
        btag -> btagDeepB (unfiltered, so flattening is a slice, not a copy through an index: filtering
        the jagged array first makes awkward carry every column, 3x slower); ``rows``: the events to keep (boolean mask or indices; default all);
        ``flat_fields``: output field -> per-object numpy array already flattened (e.g. an ID mask)."""
        n = counts(collection)
        rows = np.arange(len(n)) if rows is None else np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        index, valid = _gather_index(n, rows)  # offsets are shared by every field
        fields = {out: _gather(flat(collection[branch]), index, valid, np.float64) for out, branch in names.items()}
        fields.update({out: _gather(v, index, valid, np.asarray(v).dtype) for out, v in (flat_fields or {}).items()})
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

    def leading(self, width: int, fields=None) -> "Objects":
        """The ``width`` highest-pT selected objects, in decreasing pT; empty slots invalid and zero.
        ``fields``: the fields to keep (default all); sorting only what is used saves most of the time."""
        key = np.where(self.valid, -self.fields["pt"], np.inf)
        order = np.argsort(key, axis=1, kind="stable")[:, :width]
        flat_order = (order + key.shape[1] * np.arange(len(order))[:, None]).ravel()  # one gather per field
        take = lambda a: a.reshape(-1)[flat_order].reshape(order.shape)  # noqa: E731
        names = self.fields if fields is None else fields
        fields, valid = {k: take(self.fields[k]) for k in names}, take(self.valid)
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
