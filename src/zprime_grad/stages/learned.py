"""The ``zprime-grad run`` stages of a config with ``optimise.networks``: train → optimise ×2 → validate ×2.

`zprime_grad.stages.run.run_chain` runs the cuts-only analysis (`cuts_only`: the same config without
networks) exactly as for the default config — ``OUT/optimise``, ``OUT/validation.json`` — and then
`run_learned`:

1. ``OUT/train``: pre-train every model (`learn.train.train_models`; reused when unchanged);
2. ``OUT/optimise_pretrained``: the cuts + the score threshold optimised with the network's weights
   frozen (learning rate 0), starting from the cuts-only optimum θ* with the score cut open and the
   relaxation held at its end values (`frozen`), so it starts at the cuts' Z₀ (a network added to an
   optimised analysis, as a physicist would do it): what the pre-trained network brings. Started at
   score > 0.5 and re-annealed instead, one pre-training seed led the cuts off to top pT > 560 GeV
   (held-out Z₀ 2.29 vs the cuts' 2.99);
3. ``OUT/optimise_finetuned``: the weights fine-tuned together with the thresholds (reverse mode),
   starting from stage 2's optimum, as ``optimise.finetune`` says (`fine_tuning`): relaxation held at
   its end values, cut thresholds at a tenth of their step, a softer score cut. Measured on the default
   dataset (held-out Z₀, pre-trained 3.08): full threshold steps let the weights' noisy gradient drag
   the thresholds off their optimum (2.97); at a tenth but with the sharp score cut (scale 0.25) the
   weights memorise the few MC events at the threshold (3.08, train Z₀ up, held-out flat); with scale 4
   the gradient comes from many events and the gain generalises (3.31);
4. ``OUT/validate_{pretrained,finetuned}``: each validated like the cuts with hard cuts (score > t with
   the same weights) on the held-out (odd) events in cabinetry/pyhf;
5. ``OUT/validation.json`` gains ``"learned"``: one row per analysis (baseline θ₀, cuts only,
   pre-trained network + cuts, fine-tuned network + cuts) with the held-out hard-cut Z₀, the training
   summary, and (``validation.bootstrap``) the three analyses on the same bootstrap replicas of the
   held-out MC; ``OUT/report.html`` shows the tables and the loss curves.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from zprime_grad import atomic
from zprime_grad.config import Config, as_data, parse_config

log = logging.getLogger(__name__)
VARIANTS = {"pretrained": "pre-trained network + cuts (weights frozen)",
            "finetuned": "fine-tuned network + cuts"}


def _with_optimise(config: Config, label: str, **changes) -> Config:
    data = as_data(config)
    data["optimise"].update(changes)
    return parse_config(data, f"{config.source} ({label})")


def cuts_only(config: Config) -> Config:
    """The same analysis without networks (the comparison every learned result is measured against)."""
    return _with_optimise(config, "cuts only", networks={}, finetune={})


def held_relaxation(config: Config) -> dict:
    """The relaxation held at its end values: for a stage that starts at an optimum found with them."""
    relax = config.optimise.relaxation.model_dump(mode="json")
    return {**relax, "slope_start": relax["slope_end"], "bandwidth_start": relax["bandwidth_end"], "anneal_epochs": 0}


def frozen(config: Config) -> Config:
    """The networks attached with learning rate 0 (the pre-trained weights stay as they are), the
    relaxation held at its end values: the stage starts at the cuts-only optimum."""
    nets = {k: {**v.model_dump(mode="json"), "learning_rate": 0.0} for k, v in config.optimise.networks.items()}
    return _with_optimise(config, "network frozen", networks=nets, relaxation=held_relaxation(config))


def fine_tuning(config: Config, thresholds) -> Config:
    """The fine-tuning stage's config (``optimise.finetune``): the cut ``thresholds`` at a fraction of
    their step, the score cuts at ``score_scale``, the relaxation held at its end values, its epochs."""
    opt, tune = config.optimise, config.optimise.finetune
    rates = {**opt.learning_rates,
             **{n: tune.threshold_step * opt.learning_rates.get(n, opt.learning_rate) for n in thresholds}}
    nets = {k: {**v.model_dump(mode="json"), **({"scale": tune.score_scale} if tune.score_scale else {})}
            for k, v in opt.networks.items()}
    relax = held_relaxation(config) if tune.relaxation == "end" else opt.relaxation.model_dump(mode="json")
    return _with_optimise(config, "fine-tuning", learning_rates=rates, networks=nets, relaxation=relax,
                          epochs=opt.epochs if tune.epochs is None else tune.epochs)


def theta_star(opt_dir: Path) -> dict[str, float]:
    """The thresholds an optimisation ended at (``params.json``), by name."""
    return {p["name"]: p["value"] for p in json.loads((Path(opt_dir) / "params.json").read_text())["parameters"]}


def _row(label: str, key: str, result: dict, *, network_params: int, trainable: int, params_file=None) -> dict:
    return {"key": key, "label": label, "Z_hard": result.get("Z_hard"), "Z_soft": result.get("Z_soft"),
            "Z_hard_optimiser_model": result.get("Z_hard_optimiser_model"), "params": result.get("params"),
            "mu_hat": (result.get("fit") or {}).get("mu_hat"), "network_parameters": network_params,
            "trainable_network_parameters": trainable, "params_file": params_file}


def bootstrap_analyses(config: Config, out: Path, chunks, summary: dict) -> dict | None:
    """Cuts only, pre-trained and fine-tuned on the same bootstrap replicas of the held-out MC
    (``validation.bootstrap``): is the ratio between them more than the held-out MC's own noise?"""
    if not config.validation.bootstrap:
        return None
    from zprime_grad.model_table import ModelSettings
    from zprime_grad.skim.pipeline import make_processor, skim_options
    from zprime_grad.validate.bootstrap import Analysis, bootstrap
    from zprime_grad.validate.driver import hard_cuts

    analysis = make_processor(config, skim_options(config))
    analyses = {}
    for key, variant, opt_dir in (("cuts_only", cuts_only(config), "optimise"),
                                  *((key, config, f"optimise_{key}") for key in VARIANTS)):
        binning, theta, weights, _ = hard_cuts(variant, analysis, out / opt_dir / "params.json")
        analyses[key] = Analysis(binning, {**theta, **weights})
    return bootstrap(chunks, analyses, processes=summary["processes"], variations=summary["variations"],
                     settings=ModelSettings.from_config(config), reference="cuts_only",
                     replicas=config.validation.bootstrap, seed=config.validation.seed)


def run_learned(config: Config, out: Path, chunks, *, progress: bool | None = False) -> dict:
    """Stages 1–5 above (the cuts-only validation must already be in ``OUT/validation.json``)."""
    from zprime_grad.learn.train import train_models
    from zprime_grad.optimise.driver import Start, optimise
    from zprime_grad.validate.driver import validate
    from zprime_grad.validate.report import write_report

    out = Path(out)
    outputs = {}
    paths = train_models(config, chunks, out / "train", names=sorted(config.optimise.networks), progress=progress)
    outputs["train"] = str(out / "train")
    summary = json.loads((out / "validation.json").read_text())
    n_params = {}
    rows = [_row("reference cuts θ₀", "baseline", summary["baseline"], network_params=0, trainable=0),
            _row("cuts only (optimised)", "cuts_only", summary["optimised"], network_params=0, trainable=0,
                 params_file="optimise/params.json")]
    cut_thresholds = list(theta_star(out / "optimise"))
    # each stage starts where the previous one ended: the cuts-only θ*, then the frozen network's thresholds
    stages = (("pretrained", frozen(config), "optimise"),
              ("finetuned", fine_tuning(config, cut_thresholds), "optimise_pretrained"))
    for key, variant, start in stages:
        opt_dir = out / f"optimise_{key}"
        result = optimise(variant, chunks, opt_dir, resume="auto", progress=progress,
                          start=Start(values=theta_star(out / start), networks=paths, label=key))
        n_params = {k: v["n_params"] for k, v in result.get("networks", {}).items()}
        log.info("run: optimise (%s) -> %s", key, opt_dir)
        checked = validate(variant, chunks, opt_dir / "params.json", out / f"validate_{key}", plots=False,
                           progress=progress)
        trainable = sum(n_params.values()) if key == "finetuned" else 0
        rows.append(_row(VARIANTS[key], key, checked["optimised"], network_params=sum(n_params.values()),
                         trainable=trainable, params_file=f"optimise_{key}/params.json"))
        outputs[f"optimise_{key}"] = str(opt_dir)
        outputs[f"validate_{key}"] = str(out / f"validate_{key}")
    training = json.loads((out / "train" / "train.json").read_text())["models"]
    by_key = {r["key"]: r for r in rows}
    cuts, tuned = by_key["cuts_only"]["Z_hard"], by_key["finetuned"]["Z_hard"]
    summary["learned"] = {
        "rows": rows, "heldout": "odd events, hard cuts, cabinetry/pyhf expected discovery Z0 (Asimov)",
        "networks": {name: {"n_params": n_params.get(name), "file": f"train/{name}.npz",
                            "use": config.optimise.networks[name].model_dump(mode="json"),
                            "training": {k: training[name][k] for k in ("events", "best_epoch", "epochs_run", "stopped",
                                                                        "loss_initial", "loss_best", "class_scale")}}
                     for name in config.optimise.networks},
        "finetuned_over_cuts_only": (tuned / cuts) if cuts and tuned is not None else None,
        "bootstrap": bootstrap_analyses(config, out, chunks, summary),
    }
    plots = summary.setdefault("outputs", {}).setdefault("plots", [])
    for name in config.optimise.networks:
        rel = f"train/plots/training_{name}.png"
        if (out / rel).exists() and rel not in plots:
            plots.append(rel)
    if "report" in summary["outputs"]:
        summary["outputs"]["report"] = write_report(out, summary)
    atomic.write_json(out / "validation.json", summary)
    log.info("run: held-out hard-cut Z0: %s", ", ".join(f"{r['key']} {r['Z_hard']}" for r in rows))
    return outputs
