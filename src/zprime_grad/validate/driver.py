"""``validate``: the optimised cuts checked as ordinary hard cuts on the held-out (odd) events.

For θ* (``params.json``) and the baseline θ₀ (the reference analysis: the processor's declared initial
values): hard-cut histograms (`fill`) → ``histograms.root`` → cabinetry → ``workspace_{baseline,
optimised}.json`` → expected discovery Z (Asimov) and an MLE fit with pulls (`inference`). The soft Z₀
at θ* on the same half comes from the optimiser's own evaluation of the parity-1 templates
(``params.json: z_valid_final``, the final relaxation). Everything is summarised in ``validation.json``,
the completion marker, written last (atomically). One validation per ``OUT`` at a time
(`atomic.exclusive`); it first removes what a killed one left, then sets the earlier validation's
outputs aside (``validation.json`` first), so a run killed at any point leaves no ``validation.json``.
``validation.json: inputs_key`` hashes what the numbers depend on (cuts, chunks, settings, version);
``zprime-grad run`` reuses a finished validation with the same key, as it reuses the skim and the
optimisation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Mapping

from zprime_grad import atomic, terminal
from zprime_grad.config import Config
from zprime_grad.errors import UserError
from zprime_grad.jaxconfig import in_float64
from zprime_grad.model_table import ModelSettings
from zprime_grad.validate import fill as filling
from zprime_grad.validate.compare import optimiser_model_spec
from zprime_grad.validate.hists import DATA, HALF_SCALE, Binning, template
from zprime_grad.validate.inference import expected_mu_uncertainty, expected_significance, fit_warnings, mle_fit
from zprime_grad.validate.workspace import (asimov_observations, at_luminosity_fraction, has_data, save_json,
                                            variation_names, workspaces)

log = logging.getLogger(__name__)
LABELS = ("baseline", "optimised")
NOT_COMPUTED = {"Z": None, "p0": None, "method": "not computed (optimise.objective: mu_uncertainty)"}
ASIMOV_FIT = {"poi": "mu", "mu_hat": 1.0, "mu_uncertainty": None, "parameters": {},
              "method": "not run: on Asimov data the best fit is the generating point; σ(μ̂): mu_uncertainty_hard"}


def load_params(params, declared: Mapping) -> tuple[dict[str, float], dict]:
    """θ* from a ``params.json`` path, its payload, or a plain ``{name: value}``; checked against the
    processor's parameters. Returns (θ*, payload)."""
    source = "params"
    if isinstance(params, (str, Path)):
        source = str(params)
        try:
            params = json.loads(Path(params).read_text())
        except OSError as err:
            raise UserError(f"{source}: cannot read parameters ({err.strerror})") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{source}: not valid JSON ({err})") from None
    if not isinstance(params, dict):
        raise UserError(f"{source}: expected a JSON object")
    payload = params
    if "parameters" in params:
        entries = params["parameters"]
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e and "value" in e for e in entries):
            raise UserError(f"{source}: field 'parameters' must be a list of {{name, value}} objects")
        theta = {e["name"]: e["value"] for e in entries}
    else:
        theta, payload = dict(params), {}
    unknown, missing = sorted(set(theta) - set(declared)), sorted(set(declared) - set(theta))
    if unknown or missing:
        raise UserError(f"{source}: parameters do not match the analysis (unknown {unknown}, missing {missing})")
    checked = {}
    for name, value in theta.items():  # every θ a finite number inside the box the processor declares
        low, high = declared[name].bounds
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not low <= value <= high):
            raise UserError(f"{source}: parameter '{name}': must be a finite number within its bounds "
                            f"[{low}, {high}] (got {value!r})")
        checked[name] = float(value)
    return checked, payload


def hard_cuts(config: Config, analysis, params) -> tuple[Binning, dict[str, float], dict, dict]:
    """What ``params`` (a ``params.json`` …) selects with hard cuts: the binned channels (with the score
    cuts of ``optimise.networks``), θ, ``{network: weights}`` from the files ``params.json`` lists,
    and the payload."""
    channels, declared, networks = analysis.channels, analysis.parameters(), {}
    if config.optimise.networks:  # score cuts of learned networks: weights from the files params.json lists
        from zprime_grad.learn.attach import validation_networks
        from zprime_grad.selection import parameters

        channels, networks = validation_networks(config, analysis.channels, params)
        declared = parameters(channels)
    theta, payload = load_params(params, declared)
    return Binning.from_config(channels, config), theta, networks, payload


def check_params(config: Config, params) -> None:
    """``params`` (a params.json …) checked against the configured processor's parameters, before any work."""
    from zprime_grad.skim.pipeline import make_processor, skim_options

    hard_cuts(config, make_processor(config, skim_options(config)), params)


def mc_processes(fileset: dict | None, hists) -> list[str]:
    """The MC processes of the model: from the fileset metadata (a process with no selected event still
    belongs to the model, as in the optimiser's layout), else those in the histograms."""
    if fileset is not None:
        names = {e["metadata"].get("process", d) for d, e in fileset.items() if not e["metadata"].get("is_data")}
    else:
        names = {p for h in hists.values() for p in h.axes["process"] if p != DATA}
    return sorted(names)


def yields(h, channels, processes) -> dict:
    return {ch: {p: float(template(h, ch, p)[0].sum()) for p in processes} for ch in channels}


MODES = ("runner", "dask-awkward")
OUTPUTS = ("validation.json", "report.html", "histograms.root", "cabinetry", "plots",  # the marker first
           *(f"workspace_{label}{kind}.json" for label in LABELS for kind in ("", "_optimiser_model")))


def fill_histograms(config: Config, analysis, binning: Binning, thetas, source) -> tuple[dict, dict | None, str]:
    """(hists, checked fileset or None, how they were filled). ``source``: the run's chunks
    (`zprime_grad.chunks`), or a `FilesetInput` read here: ``mode="runner"``: coffea's Runner on its
    executor; ``"dask-awkward"``: NanoEvents in dask mode + dask-histogram, computed on its Dask client
    or the synchronous scheduler."""
    if not isinstance(source, filling.FilesetInput):
        return filling.fill_from_columns(source, binning, thetas), None, "columns"
    if source.mode not in MODES:
        raise UserError(f"validate: mode must be one of {', '.join(MODES)}, not '{source.mode}'")
    checked = filling.prepare_fileset(source.fileset, analysis)
    if source.mode == "dask-awkward":
        from zprime_grad.validate.dask_mode import fill_with_dask_awkward

        hists = fill_with_dask_awkward(checked, analysis, binning, thetas, client=source.client,
                                       treename=config.skim.treename)
    else:
        hists = filling.fill_with_runner(checked, analysis, binning, thetas, executor=source.executor,
                                         workers=source.workers, client=source.client,
                                         chunksize=source.chunksize or config.skim.chunksize,
                                         treename=config.skim.treename, checked=True)
    return hists, checked, f"{source.mode}:{source.executor}"


@in_float64
def validate(config: Config, chunks, params, out, *, plots: bool | None = None, progress: bool | None = None,
             compare: Mapping[str, object] | None = None, reuse: bool = False) -> dict:
    """Validate θ* (``params``: a ``params.json`` path or payload) against θ₀ with hard cuts on the
    held-out half of ``chunks`` (`zprime_grad.chunks`, or a `fill.FilesetInput`); writes
    ``OUT/validation.json``. ``plots``: None follows ``validation.plots``. ``compare``: other cuts
    (``{label: params}``, e.g. the black-box scan's) validated the same way, in ``comparisons``.
    ``reuse``: return a finished ``OUT/validation.json`` made from the same inputs (`inputs_key`)."""
    out = Path(out)
    compare = dict(compare or {})
    clash = sorted(set(compare) & {*LABELS, "comparisons"})
    if clash:
        raise UserError(f"validate: comparison labels {clash} are taken by the validation itself")
    plots = config.validation.plots if plots is None else plots
    key = inputs_key(config, chunks, params, compare, plots)
    with atomic.exclusive(out) as locked:
        names = tuple(dict.fromkeys((*OUTPUTS, *sorted(p.name for p in out.glob("workspace_*.json")))))
        if locked:  # ↑ any earlier comparison's workspaces too
            atomic.remove_leftovers(out, names=names)
        earlier = atomic.read_json(out / "validation.json") if reuse and key is not None else None
        if earlier is not None and earlier.get("inputs_key") == key:
            terminal.say(f"validate: reused {out / 'validation.json'} (the same cuts, chunks and settings)")
            return earlier
        atomic.set_aside(out, names)  # nothing of an earlier validation next to this one's
        return _validate(config, chunks, params, out, plots=plots, progress=progress, compare=compare, key=key)


def inputs_key(config: Config, chunks, params, compare: Mapping[str, object], plots: bool) -> str | None:
    """What a validation's numbers depend on: the cuts (``params`` and each comparison's content, not
    their paths), the chunks (content-named keys and sizes), the analysis, optimise and validation
    sections, the plots setting and the package version. None where no key is safe: a fileset input
    (no chunk keys), unreadable params, or learned observables (weights in other files)."""
    from zprime_grad import __version__

    if isinstance(chunks, filling.FilesetInput) or not hasattr(chunks, "identities"):
        return None
    contents = {}
    for label, given in {"params": params, **{f"compare:{k}": v for k, v in compare.items()}}.items():
        content = atomic.read_json(given) if isinstance(given, (str, Path)) else given
        if not isinstance(content, dict) or content.get("networks"):
            return None
        contents[label] = content
    payload = {"version": __version__, "plots": bool(plots), **contents,
               **{section: getattr(config, section).model_dump(mode="json")
                  for section in ("analysis", "optimise", "validation")},
               "chunks": chunks.identities()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _validate(config: Config, chunks, params, out: Path, *, plots: bool, progress: bool | None,
              compare: Mapping[str, object], key: str | None = None) -> dict:
    from zprime_grad.skim.pipeline import make_processor, skim_options

    start = time.perf_counter()
    from_chunks = not isinstance(chunks, filling.FilesetInput)
    analysis = make_processor(config, skim_options(config))
    binning, theta_opt, networks, payload = hard_cuts(config, analysis, params)
    thetas = {"baseline": analysis.initial_params(), "optimised": {**theta_opt, **networks}}
    if compare and networks:
        raise UserError("validate: comparisons need cuts without learned observables (optimise.networks)")
    payloads = {}
    for label, other in compare.items():
        _, thetas[label], _, payloads[label] = hard_cuts(config, analysis, other)
    labels = (*LABELS, *compare)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coffea schema / cabinetry / pyhf deprecation chatter
        hists, checked, used = fill_histograms(config, analysis, binning, thetas, chunks)
        settings = ModelSettings.from_config(config)
        channels = [c.name for c in binning.channels]
        processes = mc_processes(checked, hists)
        specs = workspaces(hists, out, channels=channels, mc_processes=processes, settings=settings,
                           lumi_uncertainty=config.analysis.lumi_uncertainty)
        pseudo_data = all(has_data(h) for h in hists.values())
        results, problems = {}, []
        measure = config.optimise.objective == "mu_uncertainty"  # a measurement: σ(μ), not a discovery Z
        boot = not measure and bool(config.validation.bootstrap) and from_chunks
        bar = terminal.bar(3 * len(labels) + boot + bool(plots), "validate", "step", progress=progress)
        for label in labels:
            # the MLE fit: held-out pseudo-data at their own luminosity (real counts, model ×½); Z_hard: full
            spec = (at_luminosity_fraction(specs[label], 1.0 / HALF_SCALE) if pseudo_data
                    else asimov_observations(specs[label]))
            bar.set_postfix_str(f"{label}: Asimov fits")
            z = NOT_COMPUTED if measure else expected_significance(specs[label])
            bar.update(1)
            variations = sorted({v for hh in hists.values() for v in variation_names(hh)})
            model_spec = optimiser_model_spec(hists[label], binning, processes, variations, settings)
            save_json(out / f"workspace_{label}_optimiser_model.json", model_spec)
            z_model = None if measure else expected_significance(model_spec)
            bar.update(1)
            bar.set_postfix_str(f"{label}: fit to the pseudo-data")
            fit = mle_fit(spec) if pseudo_data or not measure else dict(ASIMOV_FIT)
            problems += fit_warnings(label, None if measure else z, fit)
            problems += fit_warnings(f"{label} (optimiser's model)", z_model)
            results[label] = {"params": {k: v for k, v in thetas[label].items() if k not in networks},
                              **({"networks": sorted(networks)} if networks and label == "optimised" else {}),
                              "Z_hard": z["Z"], "p0_hard": z["p0"],
                              "Z_hard_optimiser_model": None if z_model is None else z_model["Z"],
                              "Z_hard_method": z["method"], **({"Z_hard_errors": z["errors"]} if "errors" in z else {}),
                              "fit": fit, "yields": yields(hists[label], channels, [*processes, DATA])}
            if config.validation.toys and not measure and label in LABELS:  # asymptotic Z0 vs pseudo-experiments
                from zprime_grad.validate.toys import toy_check

                bar.set_postfix_str(f"{label}: {config.validation.toys} toys")
                results[label]["toys"] = toy_check(specs[label], config.validation.toys, seed=config.validation.seed)
            if measure:
                sigma = expected_mu_uncertainty(specs[label])
                results[label].update(mu_uncertainty_hard=sigma["sigma_mu"], mu_uncertainty_method=sigma["method"],
                                      mu_uncertainty_hard_optimiser_model=expected_mu_uncertainty(model_spec)["sigma_mu"])
                if not pseudo_data:
                    results[label]["fit"]["mu_uncertainty"] = sigma["sigma_mu"]
            bar.update(1)
    comparisons = {label: {**results.pop(label), "source": str(compare[label]) if isinstance(compare[label], (str, Path))
                           else "payload", **{k: payloads[label][k] for k in ("method", "evaluations", "selected_on",
                                                                             "value_train") if k in payloads[label]}}
                   for label in compare}
    z_soft = payload.get("z_valid_final") if payload.get("objective", "discovery") == "discovery" else None
    results["optimised"]["Z_soft"] = z_soft
    opt_model = results["optimised"]["Z_hard_optimiser_model"]
    results["optimised"]["Z_soft_source"] = ("params.json z_valid_final: the optimiser's Z0 on the parity-1 soft "
                                             "templates at theta*, final relaxation" if z_soft is not None else None)
    base, opt = results["baseline"]["Z_hard"], results["optimised"]["Z_hard"]
    summary = {
        "heldout": "odd", "heldout_weight_scale": HALF_SCALE,
        "observable": binning.observable, "edges": list(binning.edges), "channels": channels,
        "processes": processes, "variations": variations, "fit_data": "pseudo-data" if pseudo_data else "asimov", "source": used,
        "fit_luminosity_fraction": 1.0 / HALF_SCALE if pseudo_data else 1.0,
        **results,
        "improvement": (opt / base) if base and opt is not None else None,
        **({"comparisons": {label: {**c, "improvement": c["Z_hard"] / base if base and c["Z_hard"] is not None
                                    else None} for label, c in comparisons.items()}} if comparisons else {}),
        "soft_minus_hard_relative": ((z_soft - opt) / opt) if z_soft is not None and opt else None,
        "soft_minus_hard_relative_same_model": ((z_soft - opt_model) / opt_model)
        if z_soft is not None and opt_model else None,
        "outputs": {"histograms": "histograms.root", "workspaces": {k: f"workspace_{k}.json" for k in LABELS},
                    "cabinetry": "cabinetry/"},
        "wall_time_s": time.perf_counter() - start,
        "fit_warnings": problems,  # fits that really failed, and what that means for the numbers
        "inputs_key": key,
    }
    for problem in problems:
        log.info("validate: %s", problem)
    if measure:
        summary.update(measurement_summary(results, payload))
    elif config.validation.bootstrap and from_chunks:  # the held-out MC's own noise on Z0 and the ratio
        from zprime_grad.validate.bootstrap import Analysis, bootstrap

        bar.set_postfix_str(f"bootstrap ({config.validation.bootstrap} replicas)")
        summary["bootstrap"] = bootstrap(chunks, {k: Analysis(binning, thetas[k]) for k in labels},
                                         processes=processes, variations=variations, settings=settings,
                                         reference="baseline", replicas=config.validation.bootstrap,
                                         seed=config.validation.seed, also_against="optimised" if compare else None)
    elif config.validation.bootstrap:
        log.warning("validate: validation.bootstrap needs skimmed chunks (--columns); no bootstrap from a fileset")
    bar.update(int(boot))
    from zprime_grad.validate.report import write_report

    if plots:
        bar.set_postfix_str("plots, report")
        summary["outputs"]["plots"] = write_plots(out, hists, summary, params, config)
    summary["outputs"]["report"] = write_report(out, summary)
    bar.update(int(plots))
    bar.close()
    atomic.write_json(out / "validation.json", summary)  # the completion marker, last
    return summary


def write_plots(out: Path, hists: dict, summary: dict, params, config: Config) -> list[str]:
    """mplhep plots; the optimisation history is read from ``optimisation.json`` next to ``params.json``."""
    from zprime_grad.validate.plots import write_all

    history = None
    if isinstance(params, (str, Path)):
        path = Path(params).with_name("optimisation.json")
        try:
            history = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.info("validate: no readable %s; plots without the optimisation history", path)
    return write_all(out, hists, summary, history, signal=config.optimise.signal,
                     lumi_fb=config.analysis.lumi_pb / 1000.0)


def measurement_summary(results: dict, payload: dict) -> dict:
    """For ``objective: mu_uncertainty``: σ(μ) soft (the optimiser's, on the parity-1 soft templates) vs
    hard, and the improvement σ_baseline / σ_optimised (> 1 is better)."""
    soft = payload.get("z_valid_final") if payload.get("objective") == "mu_uncertainty" else None
    soft = -soft if soft is not None else None  # the optimiser maximises -σ(μ)
    results["optimised"]["mu_uncertainty_soft"] = soft
    base, opt = results["baseline"]["mu_uncertainty_hard"], results["optimised"]["mu_uncertainty_hard"]
    opt_model = results["optimised"]["mu_uncertainty_hard_optimiser_model"]
    return {"figure_of_merit": "mu_uncertainty", "improvement": base / opt if base and opt else None,
            "soft_minus_hard_relative": (soft - opt) / opt if soft is not None and opt else None,
            "soft_minus_hard_relative_same_model": (soft - opt_model) / opt_model
            if soft is not None and opt_model else None}
