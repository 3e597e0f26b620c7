"""Reading and writing pyhf JSON specs: the static structure of a model and its templates pytree.

A spec splits into two parts here:

* ``Structure`` — everything that fixes the shape of the computation (channels, samples, modifiers,
  parameters, measurement config). Frozen and hashable, so it is a static argument of jitted functions.
* the **templates pytree** — every number in the spec that a differentiable analysis may want to trace::

    templates[channel][sample] = {
        "data":      Array[n_bins],                                   # nominal yields
        "normsys":   {modifier: {"hi": Array[], "lo": Array[]}},      # scale factors (0-d)
        "histosys":  {modifier: {"hi_data": Array[n_bins], "lo_data": Array[n_bins]}},
        "staterror": {modifier: Array[n_bins]},                       # absolute MC stat. uncertainty
        "shapesys":  {modifier: Array[n_bins]},                       # absolute uncertainty
    }

  All five keys are always present (possibly empty dicts), so a driver that fills the leaves from KDE
  outputs (one per channel x process x variation; ``staterror`` = sqrt(sumw2)) produces exactly the
  structure ``Model.nominal_templates()`` returns. normfactor, shapefactor and lumi carry no data.
  ``Packing`` flattens this pytree into one vector (leaves in ``jax.tree`` order, i.e. sorted keys),
  which every ``Model`` method also accepts: the cheap form for a driver's hot loop.

Channels and samples are ordered by name, as in pyhf, so a concatenated main-data vector has pyhf's
bin order. Parameters are ordered by name; ``Parameter.offset`` locates each in the flat parameter
vector; as in pyhf, a normsys and a histosys with the same name share one parameter. Restrictions beyond pyhf (each raises ``UserError``): a sample may carry at most one modifier
of each per-bin type, per-bin modifiers (staterror, shapesys, shapefactor) may not span channels, and a
shapesys modifier belongs to a single sample.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from zprime_grad.errors import UserError

MODIFIER_KINDS = ("normfactor", "shapefactor", "normsys", "histosys", "lumi", "staterror", "shapesys")
PER_BIN_KINDS = ("staterror", "shapesys", "shapefactor")
TEMPLATE_KEYS = ("data", "normsys", "histosys", "staterror", "shapesys")

# pyhf's suggested inits and bounds per modifier type (lumi takes them from the measurement config).
_DEFAULT_INIT = {"normfactor": 1.0, "shapefactor": 1.0, "normsys": 0.0, "histosys": 0.0, "staterror": 1.0, "shapesys": 1.0}
_DEFAULT_BOUNDS = {
    "normfactor": (0.0, 10.0),
    "shapefactor": (0.0, 10.0),
    "normsys": (-5.0, 5.0),
    "histosys": (-5.0, 5.0),
    "staterror": (1e-10, 10.0),
    "shapesys": (1e-10, 10.0),
}


@dataclass(frozen=True)
class Parameter:
    """One named parameter set (pyhf's paramset) and where it sits in the flat parameter vector."""

    name: str
    kind: str
    offset: int
    size: int
    inits: tuple[float, ...]  # pyhf units
    bounds: tuple[tuple[float, float], ...]
    fixed: bool = False
    bins: tuple[int, ...] = ()  # global bins of a per-bin parameter
    aux: float = 0.0  # lumi: constraint centre
    sigma: float = 1.0  # lumi: constraint width
    types: tuple[str, ...] = ()  # modifier types using it (a normsys and a histosys may share a name)

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.size)


@dataclass(frozen=True)
class Row:
    """One sample in one channel: a row of the stacked template matrices."""

    channel: str
    sample: str
    start: int  # first global bin of the channel
    stop: int
    modifiers: tuple[tuple[str, str], ...]  # (name, type), in spec order


@dataclass(frozen=True)
class Structure:
    """The static part of a HistFactory model (hashable: a jit static argument)."""

    channels: tuple[str, ...]
    channel_bins: tuple[int, ...]
    rows: tuple[Row, ...]
    parameters: tuple[Parameter, ...]
    poi: str
    measurement: str = ""
    _by_name: dict = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_name", {p.name: p for p in self.parameters})

    @property
    def n_bins(self) -> int:
        return sum(self.channel_bins)

    @property
    def n_parameters(self) -> int:
        return sum(p.size for p in self.parameters)

    @property
    def poi_index(self) -> int:
        return self._by_name[self.poi].offset

    def parameter(self, name: str) -> Parameter:
        return self._by_name[name]

    def channel_slice(self, channel: str) -> slice:
        i = self.channels.index(channel)
        start = sum(self.channel_bins[:i])
        return slice(start, start + self.channel_bins[i])


# ------------------------------------------------------------------------------------------- reading


def load_spec(path: str | Path) -> dict:
    """Read a pyhf workspace JSON file; a missing or malformed file is a ``UserError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: workspace file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from err


def validate_spec(spec: Mapping, source: str = "spec") -> None:
    """Check ``spec`` against pyhf's own JSON schema (workspace or model), naming the failing field."""
    import pyhf

    if not isinstance(spec, Mapping) or "channels" not in spec:
        raise UserError(f"{source}: not a pyhf spec (no 'channels')")
    schema = "workspace.json" if "measurements" in spec or "observations" in spec else "model.json"
    try:
        pyhf.schema.validate(dict(spec), schema)
    except pyhf.exceptions.InvalidSpecification as err:
        raise UserError(f"{source}: invalid pyhf {schema.split('.')[0]} spec: {err}") from err


def parse_spec(
    spec: Mapping, *, measurement: str | None = None, poi: str | None = None, source: str = "spec"
) -> tuple[Structure, dict, dict[str, np.ndarray] | None]:
    """Validate ``spec`` and split it into ``(structure, nominal templates, observations or None)``."""
    validate_spec(spec, source)
    config, meas_name = _measurement_config(spec, measurement, source)
    poi = poi or config.get("poi")
    if not poi:
        raise UserError(f"{source}: no parameter of interest (give poi=, or measurements[].config.poi)")
    par_config = {p["name"]: p for p in config.get("parameters", [])}

    channels = sorted(spec["channels"], key=lambda c: c["name"])
    channel_bins, rows, templates, usage = [], [], {}, {}
    start = 0
    for ch in channels:
        samples = sorted(ch["samples"], key=lambda s: s["name"])
        n = len(samples[0]["data"])
        templates[ch["name"]] = {}
        for s in samples:
            where = f"{source}: channel '{ch['name']}', sample '{s['name']}'"
            if len(s["data"]) != n:
                raise UserError(f"{where}: data has {len(s['data'])} bins, the channel has {n}")
            templates[ch["name"]][s["name"]] = _sample_templates(s, n, where)
            mods = tuple((m["name"], m["type"]) for m in s["modifiers"])
            for mname, mtype in mods:
                usage.setdefault(mname, []).append((mtype, ch["name"], s["name"], start, n))
            rows.append(Row(ch["name"], s["name"], start, start + n, mods))
        channel_bins.append(n)
        start += n

    parameters = _parameters(usage, par_config, source)
    structure = Structure(tuple(c["name"] for c in channels), tuple(channel_bins), tuple(rows), parameters, poi, meas_name)
    if poi not in structure._by_name or structure.parameter(poi).kind != "normfactor":
        raise UserError(f"{source}: parameter of interest '{poi}' is not a normfactor modifier in the spec")
    return structure, templates, _observations(spec, structure, source)


def _measurement_config(spec: Mapping, name: str | None, source: str) -> tuple[dict, str]:
    measurements = spec.get("measurements")
    if not measurements:
        return {"parameters": spec.get("parameters", [])}, ""
    if name is None:
        return measurements[0]["config"], measurements[0]["name"]
    for m in measurements:
        if m["name"] == name:
            return m["config"], name
    raise UserError(f"{source}: no measurement named '{name}' (have {[m['name'] for m in measurements]})")


def _array(values, n: int | None, where: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if n is not None and arr.shape != (n,):
        raise UserError(f"{where}: expected {n} values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{where}: contains non-finite values")
    return arr


def _sample_templates(sample: Mapping, n: int, where: str) -> dict:
    out: dict[str, Any] = {key: {} for key in TEMPLATE_KEYS}
    out["data"] = _array(sample["data"], n, f"{where}: data")
    for m in sample["modifiers"]:
        kind, name, here = m["type"], m["name"], f"{where}: modifier '{m['name']}'"
        if kind in ("staterror", "shapesys", "shapefactor") and any(
            other["type"] == kind and other["name"] != name for other in sample["modifiers"]
        ):
            raise UserError(f"{here}: more than one {kind} modifier on one sample is not supported")
        if kind == "normsys":
            hi, lo = float(m["data"]["hi"]), float(m["data"]["lo"])
            if not (hi > 0 and lo > 0):
                raise UserError(f"{here}: normsys hi/lo must be positive (code 4 takes their logarithm)")
            out["normsys"][name] = {"hi": np.asarray(hi), "lo": np.asarray(lo)}
        elif kind == "histosys":
            out["histosys"][name] = {
                "hi_data": _array(m["data"]["hi_data"], n, f"{here}: hi_data"),
                "lo_data": _array(m["data"]["lo_data"], n, f"{here}: lo_data"),
            }
        elif kind in ("staterror", "shapesys"):
            out[kind][name] = _array(m["data"], n, f"{here}: data")
    return out


def _parameters(usage: dict, par_config: dict, source: str) -> tuple[Parameter, ...]:
    parameters, offset = [], 0
    for name in sorted(usage):
        uses = usage[name]
        types = tuple(sorted({u[0] for u in uses}))
        where = f"{source}: modifier '{name}'"
        if len(types) > 1 and set(types) != {"normsys", "histosys"}:
            raise UserError(f"{where}: used with incompatible types {list(types)}")
        kind = types[0]  # normsys+histosys share one unit-normal pull: "histosys"
        channels = {u[1] for u in uses}
        bins: tuple[int, ...] = ()
        if kind in PER_BIN_KINDS:
            if len(channels) > 1:
                raise UserError(f"{where}: a {kind} modifier spanning channels {sorted(channels)} is not supported")
            if kind == "shapesys" and len(uses) > 1:
                raise UserError(f"{where}: a shapesys modifier shared by several samples is not supported")
            _, _, _, start, n = uses[0]
            bins = tuple(range(start, start + n))
        size = max(len(bins), 1)
        cfg = par_config.get(name, {})
        aux, sigma = 0.0, 1.0
        if kind == "lumi":
            if "auxdata" not in cfg or "sigmas" not in cfg:
                raise UserError(f"{where}: lumi needs 'auxdata' and 'sigmas' in measurements[].config.parameters")
            aux, sigma = float(cfg["auxdata"][0]), float(cfg["sigmas"][0])
            if not sigma > 0:
                raise UserError(f"{where}: lumi sigma must be positive")
            default_init, default_bounds = aux, (0.0, 10.0 * aux)
        else:
            default_init, default_bounds = _DEFAULT_INIT[kind], _DEFAULT_BOUNDS[kind]
        inits = tuple(float(v) for v in cfg.get("inits", [default_init] * size))
        bounds = tuple(tuple(map(float, b)) for b in cfg.get("bounds", [default_bounds] * size))
        if len(inits) != size or len(bounds) != size:
            raise UserError(f"{where}: measurement config gives inits/bounds of the wrong length (need {size})")
        if any(not math.isfinite(v) for v in inits):
            raise UserError(f"{where}: non-finite init")
        parameters.append(
            Parameter(name, kind, offset, size, inits, bounds, bool(cfg.get("fixed", False)), bins, aux, sigma, types)
        )
        offset += size
    return tuple(parameters)


def _observations(spec: Mapping, structure: Structure, source: str) -> dict[str, np.ndarray] | None:
    if "observations" not in spec:
        return None
    obs = {o["name"]: o["data"] for o in spec["observations"]}
    out = {}
    for ch, n in zip(structure.channels, structure.channel_bins):
        if ch not in obs:
            raise UserError(f"{source}: observations: no data for channel '{ch}'")
        out[ch] = _array(obs[ch], n, f"{source}: observations '{ch}'")
    return out


# ------------------------------------------------------------------------------------------- writing


def write_spec(spec: Mapping, structure: Structure, templates: Mapping, observations: Mapping | None) -> dict:
    """Return a copy of ``spec`` with every template leaf (and, if given, the observations) replaced."""
    out = copy.deepcopy(dict(spec))
    for ch in out["channels"]:
        for s in ch["samples"]:
            t = templates[ch["name"]][s["name"]]
            s["data"] = _tolist(t["data"])
            for m in s["modifiers"]:
                kind, name = m["type"], m["name"]
                if kind == "normsys":
                    m["data"] = {"hi": float(t["normsys"][name]["hi"]), "lo": float(t["normsys"][name]["lo"])}
                elif kind == "histosys":
                    h = t["histosys"][name]
                    m["data"] = {"hi_data": _tolist(h["hi_data"]), "lo_data": _tolist(h["lo_data"])}
                elif kind in ("staterror", "shapesys"):
                    m["data"] = _tolist(t[kind][name])
    if observations is not None:
        out["observations"] = [{"name": ch, "data": _tolist(observations[ch])} for ch in structure.channels]
    if "measurements" not in out:
        out["measurements"] = [
            {"name": structure.measurement or "measurement", "config": {"poi": structure.poi, "parameters": out.pop("parameters", [])}}
        ]
    return out


def _tolist(values) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=float).reshape(-1)]


# ------------------------------------------------------------------------------------------- packing


@dataclass(frozen=True)
class Packing:
    """The templates pytree as one flat vector: its leaves raveled and concatenated in ``jax.tree`` order.

    Passing one array instead of ~10 leaves per sample makes a jitted call (and its gradient) much
    cheaper to dispatch; ``unpack`` inside ``jit`` is a set of static slices.
    """

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, templates) -> "Packing":
        import jax

        leaves, treedef = jax.tree.flatten(templates)
        return cls(treedef, tuple(tuple(np.shape(leaf)) for leaf in leaves))

    @property
    def size(self) -> int:
        return int(sum(math.prod(shape) for shape in self.shapes))

    def pack(self, templates):
        import jax
        import jax.numpy as jnp

        leaves = jax.tree.leaves(templates)
        return jnp.concatenate([jnp.ravel(jnp.asarray(leaf, float)) for leaf in leaves])

    def unpack(self, vector):
        import jax

        leaves, offset = [], 0
        for shape in self.shapes:
            n = math.prod(shape)
            leaves.append(vector[offset : offset + n].reshape(shape))
            offset += n
        return jax.tree.unflatten(self.treedef, leaves)
