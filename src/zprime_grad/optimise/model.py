"""The statistical model of the analysis as data: a pyhf spec built from the layout, filled from ``H``.

Per channel (signal region and the two control regions, all binned in the fit observable) and per
process, the modifiers are:

==================  =========================================================================
signal (``mu``)     normfactor ``mu`` (the POI, bounds [0, 10])
free backgrounds    normfactor ``norm_<process>`` (ttbar, W+jets: fixed by the control regions)
minor backgrounds   normsys ``xsec_<process>`` (κ = 1 ± ``xsec_uncertainty``, e.g. single top 15 %)
every MC process    normsys ``lumi`` (κ = 1 ± ``analysis.lumi_uncertainty``)
every MC process    histosys ``<syst>`` per up/down pair of variations in the chunks (JES, JER:
                    kinematic; b-tag SF, muon SF: weights), the varied templates as hi/lo data;
                    a one-sided ``<syst>_up`` is symmetrised: lo = 2·nominal − up
every MC process    staterror ``staterror_<channel>`` with σ = sqrt(Σw²) of its KDE template
==================  =========================================================================

Every background template (nominal, hi, lo) gets ``background_floor`` events per bin added, so an
empty KDE tail bin never carries a signal-only bin into the significance. ``histograms_to_templates``
is pure JAX: the driver differentiates the objective w.r.t. the reduced histograms through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import zprime_grad.jaxconfig  # noqa: F401

import jax
import jax.numpy as jnp
import numpy as np

from zprime_grad.errors import UserError
from zprime_grad.optimise.layout import NOMINAL, SUMW2, Layout
from zprime_grad.stats import FitOptions, Model
from zprime_grad.stats.infer import safe_sqrt

POI = "mu"
# Tight profile fits: the envelope-theorem gradient is only as exact as the fitted optimum.
FIT_OPTIONS = FitOptions(tol=1e-12, max_iter=2000)


@dataclass(frozen=True)
class ModelSettings:
    """The physics choices of the model that are not in the layout (from the config)."""

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


def check_processes(layout: Layout, settings: ModelSettings) -> None:
    if settings.signal not in layout.processes:
        raise UserError(f"optimise.signal: process '{settings.signal}' is not among the skimmed MC processes "
                        f"{list(layout.processes)}")
    unknown = [p for p in settings.free_backgrounds if p not in layout.processes]
    if unknown:
        raise UserError(f"optimise.free_backgrounds: {unknown} not among the skimmed processes {list(layout.processes)}")
    if len(layout.processes) < 2:
        raise UserError("optimise: need at least one background process besides the signal")


def sample_modifiers(layout: Layout, settings: ModelSettings, process: str, channel: str) -> list[dict]:
    """The pyhf modifiers of one sample (data left empty: `fill_spec` writes the numbers)."""
    mods = []
    if process == settings.signal:
        mods.append({"name": POI, "type": "normfactor", "data": None})
    elif process in settings.free_backgrounds:
        mods.append({"name": f"norm_{process}", "type": "normfactor", "data": None})
    else:
        k = settings.xsec(process)
        mods.append({"name": f"xsec_{process}", "type": "normsys", "data": {"hi": 1.0 + k, "lo": 1.0 - k}})
    u = settings.lumi_uncertainty
    mods.append({"name": "lumi", "type": "normsys", "data": {"hi": 1.0 + u, "lo": 1.0 - u}})
    for syst in layout.systematics():
        mods.append({"name": syst, "type": "histosys", "data": None})
    mods.append({"name": f"staterror_{channel}", "type": "staterror", "data": None})
    return mods


def build_spec(layout: Layout, settings: ModelSettings, H: np.ndarray) -> dict:
    """A complete pyhf workspace for histograms ``H`` (observations: the μ = 1 Asimov yields)."""
    check_processes(layout, settings)
    templates = jax.device_get(histograms_to_templates(jnp.asarray(H), layout, settings))
    channels, observations = [], []
    for ch in layout.channel_names:
        samples = []
        for process in layout.processes:
            t = templates[ch][process]
            mods = sample_modifiers(layout, settings, process, ch)
            for m in mods:
                if m["type"] == "histosys":
                    h = t["histosys"][m["name"]]
                    m["data"] = {"hi_data": _floats(h["hi_data"]), "lo_data": _floats(h["lo_data"])}
                elif m["type"] == "staterror":
                    m["data"] = _floats(t["staterror"][m["name"]])
            samples.append({"name": process, "data": _floats(t["data"]), "modifiers": mods})
        channels.append({"name": ch, "samples": samples})
        observations.append({"name": ch, "data": _floats(sum(np.asarray(templates[ch][p]["data"]) for p in layout.processes))})
    parameters = [{"name": POI, "bounds": [[0.0, 10.0]], "inits": [1.0]}]
    return {"channels": channels, "observations": observations, "version": "1.0.0",
            "measurements": [{"name": "zprime_grad", "config": {"poi": POI, "parameters": parameters}}]}


def make_model(layout: Layout, settings: ModelSettings, H: np.ndarray) -> Model:
    return Model.from_pyhf(build_spec(layout, settings, H), source="optimise model", options=FIT_OPTIONS)


def histograms_to_templates(H: jax.Array, layout: Layout, settings: ModelSettings) -> dict:
    """Reduced histograms ``[process, channel, template, bin]`` → the stats templates pytree."""
    t_index = {t: i for i, t in enumerate(layout.templates)}
    systematics = layout.systematics()
    out: dict = {}
    for c, ch in enumerate(layout.channel_names):
        out[ch] = {}
        for p, process in enumerate(layout.processes):
            floor = 0.0 if process == settings.signal else settings.background_floor
            row = H[p, c]
            normsys = {}
            if process != settings.signal and process not in settings.free_backgrounds:
                k = settings.xsec(process)
                normsys[f"xsec_{process}"] = {"hi": jnp.asarray(1.0 + k), "lo": jnp.asarray(1.0 - k)}
            u = settings.lumi_uncertainty
            normsys["lumi"] = {"hi": jnp.asarray(1.0 + u), "lo": jnp.asarray(1.0 - u)}
            out[ch][process] = {
                "data": row[t_index[NOMINAL]] + floor,
                "normsys": normsys,
                "histosys": {name: {"hi_data": row[t_index[up]] + floor,
                                    "lo_data": _down_template(row, t_index, up, down) + floor}
                             for name, (up, down) in systematics.items()},
                "staterror": {f"staterror_{ch}": safe_sqrt(row[t_index[SUMW2]])},
                "shapesys": {},
            }
    return out


def _down_template(row, t_index: dict, up: str, down: str | None):
    """The down template; a one-sided variation is symmetrised around the nominal: 2·nominal − up."""
    return row[t_index[down]] if down else 2 * row[t_index[NOMINAL]] - row[t_index[up]]


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values, float).reshape(-1)]
