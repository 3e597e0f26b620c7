"""A small multi-layer perceptron as pure JAX over a parameter pytree, plus its static description.

`NetworkSpec` is everything about a network that is not a trainable number: its name, the input
features (skim column names, ``column`` or ``column[i]`` for slot ``i`` of a padded collection), the
layer sizes, the activation, the output classes and which class's probability is the *score*, and
the feature standardisation ``(x - mean) / std`` fitted on the training events. It is frozen and
hashable, so it can sit inside the optimiser's static `Layout` (shapes static, values traced).

Parameters are a list of layers ``[{"w": [n_in, n_out], "b": [n_out]}, …]``. `ravel` / `unravel`
map them to and from one flat vector in a fixed order (layer by layer, ``w`` row-major then ``b``):
that vector is the network's segment of the optimiser's θ. Outputs: one logit for two classes
(score = sigmoid(logit) = P(last class)), else one logit per class (score = softmax[score class]).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zprime_grad.errors import UserError

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu, "silu": jax.nn.silu,
               "elu": jax.nn.elu}
_FEATURE = re.compile(r"^(?P<column>[A-Za-z_][A-Za-z0-9_]*)(\[(?P<slot>\d+)\])?$")


def parse_feature(feature: str) -> tuple[str, int | None]:
    """``"met_pt"`` → ``("met_pt", None)``; ``"jet_btag[1]"`` → ``("jet_btag", 1)``."""
    m = _FEATURE.match(feature)
    if m is None:
        raise UserError(f"network feature '{feature}': expected a column name, optionally with [slot]")
    return m["column"], None if m["slot"] is None else int(m["slot"])


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    features: tuple[str, ...]
    hidden: tuple[int, ...]
    activation: str = "relu"
    classes: tuple[str, ...] = ("background", "signal")
    score_class: str = "signal"
    mean: tuple[float, ...] | None = None  # standardisation, fitted on the training events
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise UserError(f"network {self.name}: activation '{self.activation}' is not one of {sorted(ACTIVATIONS)}")
        if len(self.classes) < 2 or self.score_class not in self.classes:
            raise UserError(f"network {self.name}: need >= 2 classes including the score class '{self.score_class}'")
        if not self.features:
            raise UserError(f"network {self.name}: no input features")
        for f in self.features:
            parse_feature(f)
        for scaling in (self.mean, self.std):
            if scaling is not None and len(scaling) != len(self.features):
                raise UserError(f"network {self.name}: scaling has {len(scaling)} entries for "
                                f"{len(self.features)} features")

    # ------------------------------------------------------------------------------ shapes
    @property
    def n_outputs(self) -> int:
        return 1 if len(self.classes) == 2 else len(self.classes)

    @property
    def sizes(self) -> tuple[int, ...]:
        return (len(self.features), *self.hidden, self.n_outputs)

    @property
    def shapes(self) -> list[tuple[tuple[int, int], tuple[int]]]:
        return [((a, b), (b,)) for a, b in zip(self.sizes[:-1], self.sizes[1:])]

    @property
    def n_params(self) -> int:
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    def param_names(self) -> tuple[str, ...]:
        """Names of the flat vector's entries in θ: ``<network>/<index>``."""
        return tuple(f"{self.name}/{i}" for i in range(self.n_params))

    @property
    def score_index(self) -> int:
        return self.classes.index(self.score_class)

    def columns(self) -> set[str]:
        return {parse_feature(f)[0] for f in self.features}

    def with_scaling(self, mean: Sequence[float], std: Sequence[float]) -> "NetworkSpec":
        from dataclasses import replace

        return replace(self, mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))

    # ------------------------------------------------------------------------------ params
    def unravel(self, flat) -> list[dict]:
        """Flat vector (NumPy or traced) → the layer pytree (static slices)."""
        out, i = [], 0
        for (w_shape, b_shape) in self.shapes:
            nw, nb = w_shape[0] * w_shape[1], b_shape[0]
            out.append({"w": flat[i: i + nw].reshape(w_shape), "b": flat[i + nw: i + nw + nb]})
            i += nw + nb
        return out

    def inputs(self, columns: Mapping) -> jax.Array:
        """``[N, F]`` standardised features from skim columns (float64)."""
        xs = []
        for f in self.features:
            column, slot = parse_feature(f)
            x = jnp.asarray(columns[column], float)
            xs.append(x[:, slot] if slot is not None else x)
        x = jnp.stack(xs, axis=-1)
        if self.mean is not None:
            x = (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)
        return x

    def logits(self, params, x) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for layer in params[:-1]:
            x = act(x @ layer["w"] + layer["b"])
        return x @ params[-1]["w"] + params[-1]["b"]

    def score_hard(self, params, columns: Mapping) -> np.ndarray:
        """The same score in NumPy (hard cuts: any number of events, no compilation)."""
        return score_numpy(self, params, columns)

    def score(self, params, columns: Mapping) -> jax.Array:
        """Per event, the probability of the score class: in (0, 1)."""
        z = self.logits(params, self.inputs(columns))
        if self.n_outputs == 1:
            p = jax.nn.sigmoid(z[:, 0])
            return p if self.score_index == 1 else 1.0 - p
        return jax.nn.softmax(z, axis=-1)[:, self.score_index]


_NP_ACTIVATIONS = {"relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh,
                   "silu": lambda x: x / (1.0 + np.exp(-x)),
                   "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))}


def score_numpy(spec: NetworkSpec, params, columns: Mapping) -> np.ndarray:
    """`NetworkSpec.score` in NumPy float64 (the hard-cut validation: no JAX compilation per chunk shape).
    Agrees with the JAX version to rounding (tested); gelu falls back to JAX."""
    if spec.activation not in _NP_ACTIVATIONS:
        return np.asarray(spec.score(params, columns))
    xs = []
    for f in spec.features:
        column, slot = parse_feature(f)
        x = np.asarray(columns[column], np.float64)
        xs.append(x[:, slot] if slot is not None else x)
    x = np.stack(xs, axis=-1)
    if spec.mean is not None:
        x = (x - np.asarray(spec.mean)) / np.asarray(spec.std)
    act = _NP_ACTIVATIONS[spec.activation]
    for layer in params[:-1]:
        x = act(x @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"], np.float64))
    z = x @ np.asarray(params[-1]["w"], np.float64) + np.asarray(params[-1]["b"], np.float64)
    if spec.n_outputs == 1:
        p = 0.5 * (1.0 + np.tanh(0.5 * z[:, 0]))  # sigmoid without overflow
        return p if spec.score_index == 1 else 1.0 - p
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e[:, spec.score_index] / e.sum(axis=-1)


def ravel(params: Sequence[Mapping]) -> np.ndarray:
    """The layer pytree → one flat float64 vector (inverse of `NetworkSpec.unravel`)."""
    return np.concatenate([np.concatenate([np.asarray(l["w"], float).reshape(-1), np.asarray(l["b"], float)])
                           for l in params])


def init_params(spec: NetworkSpec, seed: int = 0) -> list[dict]:
    """He (relu-like) or Glorot (tanh) normal weights, zero biases; reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    gain = 1.0 if spec.activation == "tanh" else 2.0
    out = []
    for (w_shape, b_shape) in spec.shapes:
        fan_in = w_shape[0]
        out.append({"w": rng.normal(0.0, math.sqrt(gain / fan_in), w_shape), "b": np.zeros(b_shape)})
    return out


def check_features(spec_or_features, available: set[str], shapes: Mapping[str, tuple] | None = None,
                   name: str | None = None) -> None:
    """Every feature is a skimmed column (and its slot exists); else a `UserError` naming them all."""
    features = getattr(spec_or_features, "features", spec_or_features)
    name = name or getattr(spec_or_features, "name", "network")
    missing = []
    for f in features:
        column, slot = parse_feature(f)
        if column not in available:
            missing.append(f)
        elif slot is not None and shapes is not None:
            shape = shapes.get(column)
            if shape is None or len(shape) < 2 or slot >= shape[1]:
                missing.append(f)
    if missing:
        raise UserError(f"network {name}: features {missing} are not in the skimmed columns "
                        f"(the skim produced {sorted(available)})")
