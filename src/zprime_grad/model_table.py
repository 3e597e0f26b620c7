"""The analysis' statistical model written once, as data: one table of modifiers from which the
optimiser's JAX templates, its pyhf spec and the validation's cabinetry config are all derived.

`modifier_table` lists one `Modifier` per parameter (same name in pyhf and cabinetry), in this order:

==================  ==========  ================  ==================================================
row                 pyhf        cabinetry         acts on, data
==================  ==========  ================  ==================================================
``mu`` (the POI)    normfactor  NormFactor        the signal; bounds [0, 10]
``norm_<p>``        normfactor  NormFactor        each free background (ttbar, W+jets: fixed by the CRs)
``lumi``            normsys     Normalization     every MC process; κ = ``lumi_uncertainty``
``xsec_<p>``        normsys     Normalization     each minor background; κ = its ``xsec_uncertainty``
``<syst>``          histosys    NormPlusShape     every MC process; the ``<syst>_up/_down`` templates
                                                  (only ``_up``: lo = 2·nominal − up, cabinetry's
                                                  ``Symmetrize``)
``staterror_<ch>``  staterror   (automatic)       every MC process in channel ``ch``; σ = sqrt(Σw²)
==================  ==========  ================  ==================================================

A normsys is hi/lo = 1 ± κ in pyhf and Up/Down Normalization ±κ in cabinetry. On a pyhf sample the
process's own parameter (``mu``, ``norm_<p>`` or ``xsec_<p>``) comes first, then the shared rows in
table order. Every background template (nominal, hi, lo) gets ``background_floor`` events per bin
(`floor`), so an empty KDE tail bin never carries a signal-only bin into the significance.

The model reads histograms ``H[process, channel, template, bin]`` (template = nominal, Σw², then the
variations) through a `ModelShape`: the names and order of those axes, whether ``H`` comes from the
optimiser's kernel (its `Layout`) or from the hard-cut templates of validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zprime_grad.errors import UserError
from zprime_grad.jaxconfig import in_float64
from zprime_grad.stats.infer import safe_sqrt

NOMINAL, SUMW2 = "nominal", "sumw2"
POI = "mu"
POI_BOUNDS = (0.0, 10.0)
NORMFACTOR_NOMINAL = 1.0
CABINETRY_TYPE = {"normfactor": "NormFactor", "normsys": "Normalization", "histosys": "NormPlusShape",
                  "staterror": None}  # None: cabinetry adds its own staterror_<channel>


@dataclass(frozen=True)
class ModelSettings:
    """The physics choices of the model that are not in the histograms' shape (from the config)."""

    signal: str
    free_backgrounds: tuple[str, ...]
    lumi_uncertainty: float
    xsec_uncertainty: tuple[tuple[str, float], ...]  # (process, relative), minor backgrounds
    default_xsec_uncertainty: float
    background_floor: float

    @classmethod
    def from_config(cls, config) -> "ModelSettings":
        opt = config.optimise
        return cls(opt.signal, tuple(opt.free_backgrounds), config.analysis.lumi_uncertainty,
                   tuple(sorted(opt.xsec_uncertainty.items())), opt.default_xsec_uncertainty,
                   opt.background_floor)

    def xsec(self, process: str) -> float:
        return dict(self.xsec_uncertainty).get(process, self.default_xsec_uncertainty)


@dataclass(frozen=True)
class ModelShape:
    """The axes of ``H[process, channel, template, bin]`` by name: all the model needs to read ``H``.
    Frozen and hashable, so it can be a static argument of a jitted function (as the `Layout` is)."""

    processes: tuple[str, ...]
    channel_names: tuple[str, ...]
    templates: tuple[str, ...]  # NOMINAL, SUMW2, then the variations
    n_bins: int

    def __post_init__(self):
        if self.templates[:2] != (NOMINAL, SUMW2):
            raise ValueError(f"ModelShape: templates must start with {NOMINAL!r}, {SUMW2!r}: {self.templates}")

    @property
    def variations(self) -> tuple[str, ...]:
        return self.templates[2:]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.processes), len(self.channel_names), len(self.templates), self.n_bins)

    def systematics(self) -> dict[str, tuple[str, str | None]]:
        return systematic_pairs(self.variations)


def systematic_pairs(names: Iterable[str]) -> dict[str, tuple[str, str | None]]:
    """``{name: (name_up, name_down)}`` for every ``_up`` variation; ``(name_up, None)`` where there is no
    ``_down``: the model symmetrises it (down = 2·nominal − up), as cabinetry's ``Symmetrize``."""
    names = tuple(names)
    return {up[: -len("_up")]: (up, up[:-3] + "_down" if up[:-3] + "_down" in names else None)
            for up in names if up.endswith("_up")}


@dataclass(frozen=True)
class Modifier:
    """One row of the table: a parameter, what it acts on, and the rule that gives its data."""

    name: str  # the parameter's name in pyhf and in cabinetry
    pyhf: str  # normfactor, normsys, histosys, staterror
    samples: str | tuple[str, ...]  # one process (its own parameter), or the MC processes it is shared by
    kappa: float | None = None  # normsys: hi/lo = 1 ± κ
    variations: tuple[str, str | None] | None = None  # histosys: (up, down); down None: 2·nominal − up
    channel: str | None = None  # staterror: the one channel it belongs to
    bounds: tuple[float, float] | None = None  # normfactor: bounds other than pyhf's default (the POI's)

    @property
    def own(self) -> bool:
        return isinstance(self.samples, str)

    @property
    def processes(self) -> tuple[str, ...]:
        return (self.samples,) if self.own else self.samples

    @property
    def cabinetry(self) -> str | None:
        return CABINETRY_TYPE[self.pyhf]

    def acts_on(self, process: str, channel: str) -> bool:
        return process in self.processes and self.channel in (None, channel)


def modifier_table(settings: ModelSettings, processes: Sequence[str], channels: Sequence[str],
                   variations: Iterable[str]) -> tuple[Modifier, ...]:
    """The model's modifiers for MC ``processes`` in ``channels`` with the variations named ``variations``."""
    processes = tuple(processes)
    if settings.signal in settings.free_backgrounds:
        raise UserError(f"optimise.free_backgrounds: '{settings.signal}' is the signal (scaled by '{POI}')")
    minor = [p for p in processes if p != settings.signal and p not in settings.free_backgrounds]
    rows = [Modifier(POI, "normfactor", settings.signal, bounds=POI_BOUNDS)]
    rows += [Modifier(f"norm_{p}", "normfactor", p) for p in settings.free_backgrounds]
    rows.append(Modifier("lumi", "normsys", processes, kappa=settings.lumi_uncertainty))
    rows += [Modifier(f"xsec_{p}", "normsys", p, kappa=settings.xsec(p)) for p in minor]
    rows += [Modifier(name, "histosys", processes, variations=pair)
             for name, pair in systematic_pairs(variations).items()]
    rows += [Modifier(f"staterror_{ch}", "staterror", processes, channel=ch) for ch in channels]
    return tuple(rows)


def shape_table(shape: ModelShape, settings: ModelSettings) -> tuple[Modifier, ...]:
    return modifier_table(settings, shape.processes, shape.channel_names, shape.variations)


def sample_rows(rows: Sequence[Modifier], process: str, channel: str) -> list[Modifier]:
    """The rows on one sample: its own parameter first, then the shared ones in table order."""
    mine = [r for r in rows if r.acts_on(process, channel)]
    return [r for r in mine if r.own] + [r for r in mine if not r.own]


def floor(settings: ModelSettings, process: str) -> float:
    """Events per bin added to every template of ``process``: ``background_floor``, none for the signal."""
    return 0.0 if process == settings.signal else settings.background_floor


def check_processes(processes: Sequence[str], settings: ModelSettings) -> None:
    if settings.signal not in processes:
        raise UserError(f"optimise.signal: process '{settings.signal}' is not among the skimmed MC processes "
                        f"{list(processes)}")
    unknown = [p for p in settings.free_backgrounds if p not in processes]
    if unknown:
        raise UserError(f"optimise.free_backgrounds: {unknown} not among the skimmed processes {list(processes)}")
    if len(processes) < 2:
        raise UserError("optimise: need at least one background process besides the signal")


# ------------------------------------------------------------------------------------- derived: JAX, pyhf
def histogram_templates(H: jax.Array, shape: ModelShape, settings: ModelSettings) -> dict:
    """Histograms ``H[process, channel, template, bin]`` → the `zprime_grad.stats` templates pytree.
    Pure JAX: the optimiser differentiates its objective w.r.t. ``H`` through it."""
    t_index = {t: i for i, t in enumerate(shape.templates)}
    rows = shape_table(shape, settings)
    out: dict = {}
    for c, ch in enumerate(shape.channel_names):
        out[ch] = {}
        for p, process in enumerate(shape.processes):
            added, h = floor(settings, process), H[p, c]
            mods = sample_rows(rows, process, ch)
            out[ch][process] = {
                "data": h[t_index[NOMINAL]] + added,
                "normsys": {m.name: {"hi": jnp.asarray(1.0 + m.kappa), "lo": jnp.asarray(1.0 - m.kappa)}
                            for m in mods if m.pyhf == "normsys"},
                "histosys": {m.name: {"hi_data": h[t_index[m.variations[0]]] + added,
                                      "lo_data": _down_template(h, t_index, *m.variations) + added}
                             for m in mods if m.pyhf == "histosys"},
                "staterror": {m.name: safe_sqrt(h[t_index[SUMW2]]) for m in mods if m.pyhf == "staterror"},
                "shapesys": {},
            }
    return out


def _down_template(h, t_index: dict, up: str, down: str | None):
    """The down template; a one-sided variation is symmetrised around the nominal: 2·nominal − up."""
    return h[t_index[down]] if down else 2 * h[t_index[NOMINAL]] - h[t_index[up]]


def pyhf_modifier(row: Modifier) -> dict:
    """A row as a pyhf modifier; histosys and staterror data are left ``None`` for the templates."""
    data = {"hi": 1.0 + row.kappa, "lo": 1.0 - row.kappa} if row.pyhf == "normsys" else None
    return {"name": row.name, "type": row.pyhf, "data": data}


@in_float64
def pyhf_spec(shape: ModelShape, settings: ModelSettings, H: np.ndarray) -> dict:
    """A complete pyhf workspace for histograms ``H`` (observations: the μ = 1 Asimov yields)."""
    check_processes(shape.processes, settings)
    templates = jax.device_get(histogram_templates(jnp.asarray(H), shape, settings))
    rows = shape_table(shape, settings)
    channels, observations = [], []
    for ch in shape.channel_names:
        samples = []
        for process in shape.processes:
            t = templates[ch][process]
            mods = [pyhf_modifier(r) for r in sample_rows(rows, process, ch)]
            for m in mods:
                if m["type"] == "histosys":
                    h = t["histosys"][m["name"]]
                    m["data"] = {"hi_data": _floats(h["hi_data"]), "lo_data": _floats(h["lo_data"])}
                elif m["type"] == "staterror":
                    m["data"] = _floats(t["staterror"][m["name"]])
            samples.append({"name": process, "data": _floats(t["data"]), "modifiers": mods})
        channels.append({"name": ch, "samples": samples})
        observations.append({"name": ch, "data": _floats(sum(np.asarray(templates[ch][p]["data"])
                                                             for p in shape.processes))})
    parameters = [{"name": r.name, "bounds": [list(r.bounds)], "inits": [NORMFACTOR_NOMINAL]}
                  for r in rows if r.bounds is not None]
    return {"channels": channels, "observations": observations, "version": "1.0.0",
            "measurements": [{"name": "zprime_grad", "config": {"poi": POI, "parameters": parameters}}]}


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values, float).reshape(-1)]
