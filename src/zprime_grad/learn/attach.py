"""Where a network enters the analysis: a `ScoreCut` on its score in the configured channels.

``optimise.networks.<name>`` (config) attaches ``models.<name>`` as ``score > <name>_threshold`` to the
listed channels. The weights come from a network file (``zprime-grad train`` writes one, or
``models.<name>.init_from``); the static description (`NetworkSpec`: features, layers, scaling) goes
into the channels and the optimiser's layout, the weights into θ (optimiser) or into the hard-cut
parameters (validation), under the network's name.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from zprime_grad.errors import UserError
from zprime_grad.learn import io
from zprime_grad.learn.mlp import NetworkSpec, ravel
from zprime_grad.selection import Channel, ScoreCut


def threshold_name(network: str) -> str:
    return f"{network}_threshold"


def load_networks(config, networks: Mapping | None = None) -> dict[str, tuple[NetworkSpec, list]]:
    """``{name: (spec, params)}`` for every ``optimise.networks`` entry; ``networks`` maps a name to a
    file or a ``(spec, params)`` pair and overrides ``models.<name>.init_from``."""
    networks = dict(networks or {})
    out = {}
    for name in config.optimise.networks:
        source = networks.get(name) or config.models[name].init_from
        if source is None:
            raise UserError(f"optimise.networks.{name}: no weights; run zprime-grad train (or the run stage) "
                            f"first, or set models.{name}.init_from to a network file")
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_absolute() and not path.exists() and config.source and Path(config.source).exists():
                path = Path(config.source).parent / path  # init_from relative to the config file
            spec, params, _ = io.load(path)
        else:
            spec, params = source
        wanted = tuple(config.models[name].features)
        if tuple(spec.features) != wanted:
            raise UserError(f"network {name}: the weights were trained on features {list(spec.features)}, "
                            f"models.{name}.features is {list(wanted)}")
        out[name] = (replace(spec, name=name), params)
    return out


def score_cut(name: str, spec: NetworkSpec, use) -> ScoreCut:
    lo, hi = use.bounds
    if not lo <= use.threshold <= hi:
        raise UserError(f"optimise.networks.{name}: threshold {use.threshold} outside bounds {list(use.bounds)}")
    return ScoreCut(f"{name}_cut", spec, ">", threshold_name(name), float(use.threshold), (float(lo), float(hi)),
                    float(use.scale))


def attach(channels: Sequence[Channel], config, specs: Mapping[str, NetworkSpec]) -> tuple[Channel, ...]:
    """The processor's channels with each network's score cut added where ``optimise.networks`` says."""
    names = [c.name for c in channels]
    extra: dict[str, list] = {c: [] for c in names}
    for name, use in config.optimise.networks.items():
        unknown = sorted(set(use.channels) - set(names))
        if unknown:
            raise UserError(f"optimise.networks.{name}.channels: {unknown} are not channels of the analysis {names}")
        cut = score_cut(name, specs[name], use)
        for ch in use.channels:
            extra[ch].append(cut)
    return tuple(Channel(c.name, (*c.cuts, *extra[c.name]), c.observable) for c in channels)


def digest(loaded: Mapping[str, tuple[NetworkSpec, list]]) -> str:
    """What the starting weights contribute to a checkpoint's identity."""
    h = hashlib.sha256()
    for name in sorted(loaded):
        spec, params = loaded[name]
        h.update(repr(spec).encode())
        h.update(np.ascontiguousarray(ravel(params)).tobytes())
    return h.hexdigest()[:16]


def validation_networks(config, channels: Sequence[Channel], params) -> tuple[tuple[Channel, ...], dict]:
    """For the hard-cut validation of an optimisation with networks: the channels with their score cuts
    and ``{name: weights}`` from the ``networks`` files its ``params.json`` lists (relative to it)."""
    import json

    base = Path(".")
    if isinstance(params, (str, Path)):
        base = Path(params).parent
        try:
            params = json.loads(Path(params).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{params}: cannot read parameters ({err})") from None
    listed = params.get("networks") or {} if isinstance(params, dict) else {}
    missing = sorted(set(config.optimise.networks) - set(listed))
    if missing:
        raise UserError(f"validate: the parameters list no weights for the networks {missing} of optimise.networks "
                        "(validate the params.json of an optimisation with these networks)")
    loaded = {}
    for name in config.optimise.networks:
        entry = listed[name]
        path = Path(entry["file"] if isinstance(entry, dict) else entry)
        loaded[name] = io.load(path if path.is_absolute() else base / path)[:2]
    loaded = load_networks(config, loaded)
    return attach(channels, config, {k: v[0] for k, v in loaded.items()}), {k: v[1] for k, v in loaded.items()}
