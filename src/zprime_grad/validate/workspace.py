"""From hard-cut histograms to a pyhf workspace with the standard tools: uproot → cabinetry → pyhf.

* ``histograms.root``: every template as filled, ``{label}/{channel}_{process}_{variation}`` (TH1D with
  Σw², held-out events scaled ×2 to the full luminosity; ``label`` = baseline / optimised).
* The fit inputs ``cabinetry/inputs.root`` hold the same templates as the optimiser's model sees them:
  every background template (nominal and variations) gets ``optimise.background_floor`` events per bin
  (`zprime_grad.model_table.floor`, as the optimiser's model does to the soft templates), so an empty
  background bin never carries a signal-only bin, and a normalisation ratio is never 0/0.
  A process with no event in a channel keeps its variations empty there too
  (`zprime_grad.validate.compare.without_variations_of_empty`): no ratio to the floor.
* The cabinetry config (`cabinetry_config`) is derived from the same table of modifiers as the
  optimiser's pyhf spec (`zprime_grad.model_table`): each NormFactor row becomes a NormFactor (the POI
  with Bounds [0, 10]), each normsys an Up/Down ``Normalization`` ±κ, each histosys a ``NormPlusShape``
  from the ``<syst>_up/_down`` templates (only ``_up``: ``Down: Symmetrize``, as the optimiser's
  2·nominal − up); the staterror rows are cabinetry's automatic ``staterror_<channel>``.

  The one difference is cabinetry's encoding of a variation: NormPlusShape splits it into a normsys
  (the yield ratio, code4) and a yield-preserving histosys (code4p), where the optimiser has one
  histosys of the full template. Both reproduce the up/down templates exactly at ±1σ.
  A signal with no events in a channel is left out of that channel (cabinetry cannot normalise a
  variation of an empty template); the optimiser's zero template contributes nothing there either.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import hist
import numpy as np
import uproot

from zprime_grad.errors import UserError
from zprime_grad.model_table import (NORMFACTOR_NOMINAL, POI, Modifier, ModelSettings, floor, modifier_table,
                                     systematic_pairs)
from zprime_grad.validate.hists import DATA, NOMINAL, template

MEASUREMENT = "zprime_grad"


def variation_names(h: hist.Hist) -> list[str]:
    return [NOMINAL] + sorted(v for v in h.axes["variation"] if v != NOMINAL)


def systematics(variations: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """Up/down pairs by name, the model table's rule (down ``None``: symmetrised)."""
    return systematic_pairs(variations)


def _th1(values, variances, edges, name: str) -> hist.Hist:
    h = hist.Hist(hist.axis.Variable(edges, name="observable", underflow=False, overflow=False),
                  storage=hist.storage.Weight(), name=name)
    h.view().value = values
    h.view().variance = variances
    return h


def _templates(h: hist.Hist, channels, processes, variations, *, floor: Mapping[str, float] | None = None,
               fit_inputs: bool = False):
    """``{"{channel}_{process}_{variation}": (values, variances)}``; data: nominal only. ``fit_inputs``:
    an empty nominal keeps its variations empty too (`compare.without_variations_of_empty`)."""
    floor = floor or {}
    out = {}
    for ch in channels:
        for p in processes:
            nominal = template(h, ch, p, NOMINAL)
            empty = fit_inputs and nominal[0].sum() == 0.0
            for v in ([NOMINAL] if p == DATA else variations):
                values, variances = nominal if empty or v == NOMINAL else template(h, ch, p, v)
                out[f"{ch}_{p}_{v}"] = (values + floor.get(p, 0.0), variances)
    return out


def write_root(path: Path, hists: Mapping[str, hist.Hist], channels, processes, variations, *,
               floor: Mapping[str, float] | None = None, fit_inputs: bool = False) -> list[str]:
    """One TH1D per template under ``{label}/``; returns the object paths written."""
    written = []
    with uproot.recreate(path) as f:
        for label, h in hists.items():
            edges = h.axes["observable"].edges
            for name, (values, variances) in _templates(h, channels, processes, variations, floor=floor,
                                                        fit_inputs=fit_inputs).items():
                f[f"{label}/{name}"] = _th1(values, variances, edges, name)
                written.append(f"{label}/{name}")
    return written


def background_floor(settings: ModelSettings, processes: Sequence[str]) -> dict[str, float]:
    return {p: floor(settings, p) for p in processes if p not in (settings.signal, DATA)}


def cabinetry_config(*, inputs: Path, label: str, histogram_folder: Path, channels: Sequence[str],
                     mc_processes: Sequence[str], variations: Sequence[str], settings: ModelSettings,
                     lumi_uncertainty: float, signal_channels: Sequence[str]) -> dict:
    """The cabinetry configuration of the analysis' model for the ``label`` templates in ``inputs``."""
    if settings.signal not in mc_processes:
        raise UserError(f"optimise.signal: process '{settings.signal}' is not among the MC processes {list(mc_processes)}")
    if not signal_channels:
        raise UserError(f"validate ({label}): no signal ('{settings.signal}') event passes the cuts in any channel "
                        "of the held-out half; no significance can be computed")
    samples = [{"Name": DATA, "SamplePath": DATA, "Data": True}]
    for p in mc_processes:
        sample = {"Name": p, "SamplePath": p}
        if p == settings.signal and len(signal_channels) < len(channels):
            sample["Regions"] = list(signal_channels)
        samples.append(sample)
    settings = replace(settings, lumi_uncertainty=lumi_uncertainty)
    rows = modifier_table(settings, mc_processes, channels, variations)
    norm_factors = [_cabinetry_entry(r) for r in rows if r.cabinetry == "NormFactor"]
    systs = [_cabinetry_entry(r) for r in rows if r.cabinetry not in (None, "NormFactor")]
    return {
        "General": {"Measurement": MEASUREMENT, "POI": POI, "HistogramFolder": str(histogram_folder),
                    "InputPath": f"{inputs}:{label}/{{RegionPath}}_{{SamplePath}}_{{VariationPath}}",
                    "VariationPath": NOMINAL},
        "Regions": [{"Name": ch, "RegionPath": ch} for ch in channels],
        "Samples": samples,
        "NormFactors": norm_factors,
        "Systematics": systs,
    }


def _cabinetry_entry(row: Modifier) -> dict:
    """One row of the model table in cabinetry's vocabulary: a NormFactor or a Systematic."""
    samples = row.samples if row.own else list(row.samples)
    if row.cabinetry == "NormFactor":
        bounds = {"Nominal": NORMFACTOR_NOMINAL, "Bounds": list(row.bounds)} if row.bounds else {}
        return {"Name": row.name, "Samples": samples, **bounds}
    entry = {"Name": row.name, "Type": row.cabinetry, "Samples": samples}
    if row.cabinetry == "Normalization":
        return {**entry, "Up": {"Normalization": row.kappa}, "Down": {"Normalization": -row.kappa}}
    up, down = row.variations  # NormPlusShape
    return {**entry, "Up": {"VariationPath": up}, "Down": {"VariationPath": down} if down else {"Symmetrize": True}}


def build_workspace(config: dict) -> dict:
    """cabinetry: read the templates, build and validate the pyhf workspace."""
    import cabinetry

    logging.getLogger("cabinetry").setLevel(logging.ERROR)  # "empty bins" warnings: the floor handles them
    logging.getLogger("pyhf").setLevel(logging.WARNING)
    cabinetry.configuration.validate(config)
    cabinetry.templates.collect(config, method="uproot")
    return cabinetry.workspace.build(config)


def signal_channels(h: hist.Hist, channels, signal: str) -> list[str]:
    return [ch for ch in channels if template(h, ch, signal)[0].sum() > 0]


def save_json(path: Path, payload) -> None:
    path.write_text(json.dumps(payload, indent=1) + "\n")


def workspaces(hists: Mapping[str, hist.Hist], out: Path, *, channels: Sequence[str], mc_processes: Sequence[str],
               settings: ModelSettings, lumi_uncertainty: float) -> dict[str, dict]:
    """Write ``histograms.root``, the fit inputs, the cabinetry configs and ``workspace_{label}.json``."""
    variations = sorted({v for h in hists.values() for v in variation_names(h)} - {NOMINAL})
    variations = [NOMINAL, *variations]
    processes = [*mc_processes, DATA]
    write_root(out / "histograms.root", hists, channels, processes, variations)
    folder = out / "cabinetry"
    folder.mkdir(parents=True, exist_ok=True)
    inputs = folder / "inputs.root"
    write_root(inputs, hists, channels, processes, variations, floor=background_floor(settings, processes),
               fit_inputs=True)
    specs = {}
    for label, h in hists.items():
        cfg = cabinetry_config(inputs=inputs, label=label, histogram_folder=folder / f"histograms_{label}",
                               channels=channels, mc_processes=mc_processes, variations=variations,
                               settings=settings, lumi_uncertainty=lumi_uncertainty,
                               signal_channels=signal_channels(h, channels, settings.signal))
        save_json(folder / f"config_{label}.json", cfg)
        specs[label] = build_workspace(cfg)
        save_json(out / f"workspace_{label}.json", specs[label])
    return specs


def has_data(h: hist.Hist) -> bool:
    return DATA in list(h.axes["process"])


def asimov_observations(spec: dict) -> dict:
    """``spec`` with its observations replaced by the μ = 1 expectation (no pseudo-data in the inputs)."""
    import pyhf

    model = pyhf.Workspace(spec).model()
    expected = np.asarray(model.expected_actualdata(model.config.suggested_init()))
    out, start = dict(spec), 0
    observations = []
    for ch in model.config.channels:
        n = model.config.channel_nbins[ch]
        observations.append({"name": ch, "data": [float(x) for x in expected[start:start + n]]})
        start += n
    out["observations"] = observations
    return out


def at_luminosity_fraction(spec: dict, fraction: float) -> dict:
    """``spec`` with every yield, template and absolute uncertainty scaled by ``fraction`` (and the data).

    The held-out templates carry weight ×2 so that one half stands for the full luminosity, which is
    right for the expected significance but not for a fit to the held-out pseudo-data: their counts
    ×2 are not Poisson, and the fit would claim √2 too small uncertainties. Scaled by ½, the model
    is the odd half at its own luminosity and the data are its real (integer) counts. Relative
    modifiers (normsys, normfactor, lumi) are unchanged; staterror and shapesys carry absolute σ.
    """
    import copy

    out = copy.deepcopy(spec)
    scale = lambda values: [fraction * float(v) for v in values]  # noqa: E731
    for channel in out["channels"]:
        for sample in channel["samples"]:
            sample["data"] = scale(sample["data"])
            for modifier in sample.get("modifiers", []):
                if modifier["type"] == "histosys":
                    modifier["data"] = {k: scale(v) for k, v in modifier["data"].items()}
                elif modifier["type"] in ("staterror", "shapesys"):
                    modifier["data"] = scale(modifier["data"])
    for observation in out.get("observations", []):
        observation["data"] = scale(observation["data"])
    return out
