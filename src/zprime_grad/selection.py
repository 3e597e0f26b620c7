"""Cuts declared once, as data; the hard (numpy) and the soft (JAX sigmoid) selection both derive from it.

A `Cut` is one threshold on one column: ``column > param`` or ``column < param``. A `CountCut` counts
the objects of a padded collection that pass all of its `Cut`s (per object) and requires at least
and/or at most N of them. A `ScoreCut` is a threshold on a learned per-event score (a network from
``zprime_grad.learn``, whose weights travel in the parameters under its name). A `Channel` is the AND
of its cuts and of the skim baseline column. The
optimiser sees only parameter names; `parameters()` collects them, with initial values, bounds and
scales, from the channels, and refuses two declarations of one parameter that disagree.

Soft selection (``zprime_grad.soft.sigmoid_cut``): every ``>``/``<`` becomes ``sigmoid(slope * (x - t) / scale)``; a count of objects
becomes the sum of the per-object soft passes, and "at least k" becomes
``sigmoid(slope * (n - k + 1/2))``. As ``slope`` grows the soft weight tends to the hard mask (away from
the thresholds themselves), which the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

import jax.numpy as jnp

from zprime_grad.soft import sigmoid_cut

BASELINE = "baseline"  # per-event 0/1 column written by the skim: the loose skim selection passed


_KEEP = {">": "above", "<": "below"}


@dataclass(frozen=True)
class Parameter:
    """One optimisable threshold: its start value, the box it is projected into, its natural unit."""

    name: str
    init: float
    bounds: tuple[float, float]
    scale: float


@dataclass(frozen=True)
class Cut:
    """``column direction param``: e.g. ``Cut("met", "met_pt", ">", "met_threshold", 50, (20, 200), 50)``.

    ``scale`` is the cut variable's natural unit: the sigmoid is ``sigmoid(slope * (x - t) / scale)``.
    """

    name: str
    column: str
    direction: str
    param: str
    init: float
    bounds: tuple[float, float]
    scale: float

    def __post_init__(self):
        if self.direction not in (">", "<"):
            raise ValueError(f"cut {self.name}: direction must be '>' or '<', not {self.direction!r}")
        lo, hi = self.bounds
        if not (lo <= self.init <= hi) or self.scale <= 0:
            raise ValueError(f"cut {self.name}: need bounds[0] <= init <= bounds[1] and scale > 0")

    @property
    def parameter(self) -> Parameter:
        return Parameter(self.param, float(self.init), tuple(map(float, self.bounds)), float(self.scale))

    def parameters(self) -> list[Parameter]:
        return [self.parameter]

    def hard(self, columns: Mapping[str, np.ndarray], params: Mapping[str, float]) -> np.ndarray:
        x, t = np.asarray(columns[self.column]), float(params[self.param])
        return x > t if self.direction == ">" else x < t

    def soft(self, columns, params, slope: float, memo: dict | None = None):
        return _shared(memo, self, lambda: sigmoid_cut(jnp.asarray(columns[self.column]), params[self.param],
                                                        self.scale / slope, _KEEP[self.direction]))


@dataclass(frozen=True)
class CountCut:
    """At least / at most N objects of a padded collection pass all ``cuts`` (ANDed per object).

    ``mask`` names the collection's 0/1 validity column (shape [events, width]); the cut columns have
    the same shape. E.g. "≥ 1 b-tagged jet": ``CountCut("n_btag", "jet_mask", (BTAG,), at_least=1)``.
    """

    name: str
    mask: str
    cuts: tuple[Cut, ...]
    at_least: int | None = None
    at_most: int | None = None

    def __post_init__(self):
        if self.at_least is None and self.at_most is None:
            raise ValueError(f"count cut {self.name}: give at_least and/or at_most")

    def parameters(self) -> list[Parameter]:
        return [c.parameter for c in self.cuts]

    def count_hard(self, columns, params) -> np.ndarray:
        passed = np.asarray(columns[self.mask]) > 0
        for cut in self.cuts:
            passed = passed & cut.hard(columns, params)
        return passed.sum(axis=-1)

    def hard(self, columns, params) -> np.ndarray:
        n = self.count_hard(columns, params)
        ok = np.ones(n.shape, bool)
        if self.at_least is not None:
            ok &= n >= self.at_least
        if self.at_most is not None:
            ok &= n <= self.at_most
        return ok

    def soft(self, columns, params, slope: float, memo: dict | None = None):
        def count():
            per_object = jnp.asarray(columns[self.mask])
            for cut in self.cuts:
                per_object = per_object * cut.soft(columns, params, slope, memo)
            return sum_objects(per_object)

        n = _shared(memo, ("count", self.mask, self.cuts), count)
        weight = jnp.ones_like(n)
        if self.at_least is not None:
            weight = weight * sigmoid_cut(n, self.at_least - 0.5, 1.0 / slope, "above")
        if self.at_most is not None:
            weight = weight * sigmoid_cut(n, self.at_most + 0.5, 1.0 / slope, "below")
        return weight


def _shared(memo: dict | None, key, compute):
    """``compute()``, once per ``key`` in ``memo`` (no memo: every time)."""
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def sum_objects(per_object):
    """``per_object.sum(axis=-1)`` over a padded collection's few slots, as one add per slot: XLA's CPU
    reduction over a short minor axis is ~5x slower alone and ~40x slower under ``jax.jacfwd``."""
    width = per_object.shape[-1]
    if width == 0:
        return jnp.zeros(per_object.shape[:-1], per_object.dtype)
    total = per_object[..., 0]
    for j in range(1, width):
        total = total + per_object[..., j]
    return total


@dataclass(frozen=True)
class ScoreCut:
    """``score > param`` (or ``<``) on a learned per-event score: e.g. a network's signal probability.

    ``network`` is a static description (hashable; ``zprime_grad.learn.mlp.NetworkSpec``) with a ``name``,
    ``columns()`` (the skim columns it reads) and ``score(weights, columns)``; its trainable weights are
    not a `Parameter` here but travel in ``params[network.name]`` (a pytree: the optimiser's θ segment,
    or the weights loaded from disk for the hard-cut validation). A ``params`` without that entry means
    "no network attached": the cut passes every event (the cuts-only baseline θ₀).
    Soft: ``sigmoid(slope * (score - t) / scale)``; hard: ``score > t``; same score function for both.
    """

    name: str
    network: object
    direction: str
    param: str
    init: float
    bounds: tuple[float, float]
    scale: float

    def __post_init__(self):
        Cut.__post_init__(self)

    @property
    def column(self) -> str:
        """A pseudo-column name (for units and messages): the score is computed, not skimmed."""
        return f"{self.network.name}_score"

    @property
    def parameter(self) -> Parameter:
        return Parameter(self.param, float(self.init), tuple(map(float, self.bounds)), float(self.scale))

    def parameters(self) -> list[Parameter]:
        return [self.parameter]

    def score(self, columns, params):
        return self.network.score(params[self.network.name], columns)

    def hard(self, columns: Mapping[str, np.ndarray], params: Mapping) -> np.ndarray:
        n = len(np.asarray(columns[BASELINE]))
        if self.network.name not in params:
            return np.ones(n, bool)
        net = self.network
        score = net.score_hard if hasattr(net, "score_hard") else net.score
        x, t = np.asarray(score(params[net.name], columns)), float(params[self.param])
        return x > t if self.direction == ">" else x < t

    def soft(self, columns, params, slope: float, memo: dict | None = None):
        if self.network.name not in params:
            return jnp.ones(jnp.shape(columns[BASELINE])[0])
        return _shared(memo, self, lambda: sigmoid_cut(self.score(columns, params), params[self.param],
                                                        self.scale / slope, _KEEP[self.direction]))


@dataclass(frozen=True)
class Channel:
    """A region of the fit: the skim baseline AND all of ``cuts``; ``observable`` is what is binned."""

    name: str
    cuts: tuple[Cut | CountCut | ScoreCut, ...]
    observable: str = "mtt"

    def parameters(self) -> list[Parameter]:
        return [p for cut in self.cuts for p in cut.parameters()]

    def hard_mask(self, columns: Mapping[str, np.ndarray], params: Mapping[str, float]) -> np.ndarray:
        """Boolean per event: the ordinary analysis at thresholds ``params``."""
        mask = np.asarray(columns[BASELINE]) > 0
        for cut in self.cuts:
            mask = mask & cut.hard(columns, params)
        return mask

    def soft_weight(self, columns, params, slope: float = 20.0, memo: dict | None = None):
        """Per-event weight in [0, 1], differentiable in ``params``; → hard_mask as slope → ∞.
        ``memo``: a dict shared by the channels evaluated on the same columns, so a cut (or an object
        count) that several channels use is computed once."""
        weight = jnp.asarray(columns[BASELINE])
        for cut in self.cuts:
            weight = weight * cut.soft(columns, params, slope, memo)
        return weight


def parameters(channels: Sequence[Channel]) -> dict[str, Parameter]:
    """Every parameter the channels use, once; two declarations of one name must agree."""
    found: dict[str, Parameter] = {}
    for channel in channels:
        for p in channel.parameters():
            if p.name in found and found[p.name] != p:
                raise ValueError(f"parameter {p.name} declared twice differently: {found[p.name]} vs {p}")
            found[p.name] = p
    return found


def initial_params(channels: Sequence[Channel]) -> dict[str, float]:
    """θ₀: the declared initial values, i.e. the baseline (reference) analysis."""
    return {name: p.init for name, p in parameters(channels).items()}


def columns_needed(channels: Sequence[Channel]) -> set[str]:
    names = {BASELINE}
    for channel in channels:
        names.add(channel.observable)
        for cut in channel.cuts:
            if isinstance(cut, CountCut):
                names.add(cut.mask)
                names.update(c.column for c in cut.cuts)
            elif isinstance(cut, ScoreCut):
                names.update(cut.network.columns())
            else:
                names.add(cut.column)
    return names
