"""The AGC tt̄ analysis as the standard hard-cut analysis: the AGC's histograms, names and files.

`AGCHistogramProcessor` wraps the skim processor (same objects, observables and variations as the
optimiser sees) and fills, with the hard cuts at θ (default θ₀ = the AGC), the AGC's histograms: per
region a ``hist.Hist`` of Reg(25, 50, 550) × process × variation with Weight storage, on **all** events
(the AGC has no train/validation split). Its output is the AGC's ``{"nevents": {...}, "hist_dict": {...}}``.

Names are the AGC's ``{region}_{process}`` (nominal) and ``{region}_{process}_{variation}``, written as
TH1s to ``histograms.root`` and as the AGC reference JSON ``{name: {"edges": 26, "contents": 27 with
flow}}`` (``../shared/data/agc/reference/``). Which templates exist follows the AGC's
``save_histograms``: b-tag and pT variations for every nominal sample, ``scale_var`` for W+jets, the
two-point samples for tt̄ (separate chunks, or weight templates where the fileset declares them, see
``agc_ttbar``: the same histograms either way), and ``pseudodata`` = (tt̄ ME_var + PS_var)/2 + W+jets
when those exist.

Command line (the plain AGC analysis, no optimisation)::

    python -m zprime_grad_processors.agc_hists configs/agc_ttbar.yaml --out DIR [--params params.json]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Mapping

import hist
import numpy as np
from coffea import processor

from zprime_grad_processors.agc_ttbar import KINEMATIC_VARIATIONS, TWO_POINT_VARIATIONS, TWO_POINT_WEIGHTS

REGIONS = ("4j1b", "4j2b")
BINS, LOW, HIGH = 25, 50.0, 550.0
NOMINAL = "nominal"


def agc_hist(processes=(), variations=()) -> hist.Hist:
    """The AGC's histogram; the given categories exist even when no event fills them."""
    return (hist.Hist.new.Reg(BINS, LOW, HIGH, name="observable", label="observable [GeV]")
            .StrCat(list(processes), name="process", label="Process", growth=True)
            .StrCat(list(variations), name="variation", label="Systematic variation", growth=True)
            .Weight())


def variations_to_fill(chunk) -> list[tuple[str, str, str]]:
    """``(histogram variation, column view, weight)``: what the AGC fills for this sample."""
    if chunk.is_data:
        return [(NOMINAL, NOMINAL, NOMINAL)]
    if chunk.sample_variation != NOMINAL:  # a two-point sample: its nominal, under its own name
        return [(chunk.sample_variation, NOMINAL, NOMINAL)]
    out = [(NOMINAL, NOMINAL, NOMINAL)]
    out += [(w, NOMINAL, w) for w in sorted(chunk.weights)
            if w.startswith("btag_var_") or (w.startswith("scale_var_") and chunk.process == "wjets")]
    out += [(v, v, NOMINAL) for v in sorted(chunk.variations)]
    # two-point samples carried as weight templates (agc_ttbar: fileset metadata two_point_variations):
    # the template of this chunk's process, under the AGC's variation name
    own = {f"{chunk.process}_{suffix}": v for v, suffix in TWO_POINT_WEIGHTS.items()}
    out += [(own[w], NOMINAL, w) for w in sorted(chunk.weights) if w in own]
    return out


def fill_chunk(chunk, channels, params: Mapping[str, float]) -> dict[str, hist.Hist]:
    """``{region: Hist}`` of one ColumnChunk with hard cuts at ``params``, every event."""
    n = chunk.n_events
    process = "data" if chunk.is_data else chunk.process
    fills = variations_to_fill(chunk)
    out = {ch.name: agc_hist([process], [v for v, _, _ in fills]) for ch in channels}
    for variation, view, weight in fills:
        columns = {k: v[:n] for k, v in chunk.view(view).items()}
        w = np.asarray(chunk.weights[weight][:n], np.float64)
        for ch in channels:
            keep = ch.hard_mask(columns, params)
            out[ch.name].fill(observable=np.asarray(columns[ch.observable], np.float64)[keep],
                              process=process, variation=variation, weight=w[keep])
    return out


class AGCHistogramProcessor(processor.ProcessorABC):
    """The AGC's processor output from the skim processor's chunks: ``{"nevents", "hist_dict"}``."""

    def __init__(self, analysis, params: Mapping[str, float] | None = None):
        self.analysis = analysis
        self.params = {k: float(v) for k, v in (params or analysis.initial_params()).items()}

    def check_branches(self, branches, filename, *, is_data):
        self.analysis.check_branches(branches, filename, is_data=is_data)

    def process(self, events):
        hist_dict = {}
        for chunk in self.analysis.process(events)["chunks"]:
            filled = fill_chunk(chunk, self.analysis.channels, self.params)
            hist_dict = filled if not hist_dict else {k: hist_dict[k] + filled[k] for k in hist_dict}
        return {"nevents": {events.metadata["dataset"]: len(events)}, "hist_dict": hist_dict}

    def postprocess(self, accumulator):
        return accumulator


def histogram_name(region: str, process: str, variation: str) -> str:
    return f"{region}_{process}" if variation == NOMINAL else f"{region}_{process}_{variation}"


def template_variations(process: str, available) -> list[str]:
    """The variations the AGC's ``save_histograms`` writes for a process (of those filled)."""
    if process == "data":
        return [NOMINAL]
    wanted = [v for v in available if v.startswith("btag_var_") or v in KINEMATIC_VARIATIONS]
    if process == "wjets":
        wanted += [v for v in available if v.startswith("scale_var_")]
    if process == "ttbar":
        wanted += [v for v in available if v in TWO_POINT_VARIATIONS]
    return [NOMINAL, *sorted(wanted)]


def agc_templates(hist_dict: Mapping[str, hist.Hist]) -> dict[str, hist.Hist]:
    """``{AGC name: 1D Hist}`` for each process's templates, plus ``pseudodata`` where defined."""
    out = {}
    for region, h in hist_dict.items():
        available = list(h.axes["variation"])
        filled = set()
        for process in h.axes["process"]:
            for variation in template_variations(process, available):
                out[histogram_name(region, process, variation)] = h[:, process, variation]
                filled.add((process, variation))
        if {("ttbar", "ME_var"), ("ttbar", "PS_var"), ("wjets", NOMINAL)} <= filled:
            out[f"{region}_pseudodata"] = ((h[:, "ttbar", "ME_var"] + h[:, "ttbar", "PS_var"]) * 0.5
                                           + h[:, "wjets", NOMINAL])
    return out


def reference_json(hist_dict: Mapping[str, hist.Hist]) -> dict:
    """The AGC reference format: ``{name: {"edges": [...], "contents": [... with flow]}}``."""
    return {name: {"edges": h.axes[0].edges.tolist(), "contents": h.values(flow=True).tolist()}
            for name, h in agc_templates(hist_dict).items()}


def save_histograms(hist_dict: Mapping[str, hist.Hist], path) -> list[str]:
    import uproot

    templates = agc_templates(hist_dict)
    with uproot.recreate(path) as f:
        for name, h in templates.items():
            f[name] = h
    return sorted(templates)


def run(config, out, *, fileset=None, params=None, executor: str = "iterative", workers: int = 2) -> dict:
    """The whole hard-cut analysis on a fileset: ``OUT/histograms.root`` + ``OUT/histograms.json``."""
    from coffea.nanoevents import NanoAODSchema

    from zprime_grad.skim.pipeline import make_processor, skim_options
    from zprime_grad.validate.driver import load_params
    from zprime_grad.validate.fill import coffea_executor, prepare_fileset

    analysis = make_processor(config, skim_options(config))
    theta = load_params(params, analysis.parameters())[0] if params is not None else None
    if fileset is None:
        from zprime_grad.stages.run import configured_fileset

        fileset = configured_fileset(config)
    from zprime_grad.skim.runner import declared_reading

    checked, iteritems_options = declared_reading(prepare_fileset(fileset, analysis), analysis)  # one bulk read
    runner = processor.Runner(coffea_executor(executor, workers=workers), schema=NanoAODSchema,
                              chunksize=config.skim.chunksize)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Performed attempt")
        result = runner(checked, AGCHistogramProcessor(analysis, theta), treename=config.skim.treename,
                        iteritems_options=iteritems_options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = save_histograms(result["hist_dict"], out / "histograms.root")
    (out / "histograms.json").write_text(json.dumps(reference_json(result["hist_dict"]), indent=1))
    return {"nevents": result["nevents"], "histograms": names}


def main(argv=None) -> int:
    from zprime_grad.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--fileset", help="coffea fileset JSON (default: the config's fileset)")
    parser.add_argument("--params", help="params.json of an optimisation (default: θ₀, the AGC cuts)")
    parser.add_argument("--executor", default="iterative", choices=("iterative", "futures"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    summary = run(load_config(args.config), args.out, fileset=args.fileset, params=args.params,
                  executor=args.executor)
    print(json.dumps(summary["nevents"]), f"{len(summary['histograms'])} histograms in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
