"""``zprime-grad run``: the whole chain on one config, each stage reusing its cached outputs.

Stages run in data-flow order: generate → skim → optimise → validate (+ report), skipping work
whose inputs did not change (the generator's files are keyed by their settings, the skim by config +
inputs, the optimisation continues a matching checkpoint, the scan and the validation are reused when
their key matches). ``OUT/skim`` (in-process; on a cluster the
chunks stay on the workers: `zprime_grad.stages.session`) and ``OUT/optimise`` hold the intermediate
stages; ``OUT/validation.json``, ``OUT/report.html``, ``OUT/histograms.root``, the workspaces and the
plots are the result. The hard-cut validation always runs (histogram filling and a few pyhf fits per
θ, unless reused). A config with ``optimise.networks`` runs the
cuts-only chain and then the learned-observable stages (``zprime_grad.stages.learned``: train → optimise
with the network frozen and fine-tuned → validate), adding their rows to validation.json/report.html.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from zprime_grad.jaxconfig import in_float64

log = logging.getLogger(__name__)



def register(subparsers) -> None:
    from zprime_grad.cli import add_config_argument, epochs_type, workers_type
    from zprime_grad.limits import EVENTS_MAX, integer

    p = subparsers.add_parser("run", help="generate (if needed) -> skim -> optimise -> validate + report")
    add_config_argument(p)
    p.add_argument("--events", type=integer(1, EVENTS_MAX), help="events per generated sample (default: generate.events)")
    p.add_argument("--fileset", help="skip generation: skim this coffea fileset JSON (default: the config's fileset)")
    p.add_argument("--backend", choices=("local", "dask"), help="optimisation backend (default: config)")
    p.add_argument("--workers", type=workers_type(), help="worker processes for every stage")
    p.add_argument("--scheduler", help="Dask cluster for every stage: tcp://, tls:// (cluster.tls) or gateway://host:port")
    p.add_argument("--epochs", type=epochs_type(), help="optimisation epochs (default: config)")
    p.add_argument("--out", default="outputs", help="output directory")
    p.set_defaults(func=run)


@in_float64
def run_chain(config, out: Path, *, events=None, fileset=None, backend=None, workers=None, scheduler=None,
              epochs=None, progress: bool | None = False) -> dict:
    """Run every available stage; returns ``{stage: output path}``. ``progress``: a bar per stage (None:
    as the CLI session decides, `zprime_grad.terminal`)."""
    from zprime_grad import atomic
    from zprime_grad.config import override
    from zprime_grad.generate import generate_dataset
    from zprime_grad.optimise.driver import optimise
    from zprime_grad.stages.session import Session
    from zprime_grad.validate.driver import validate

    atomic.writable_directory(out, "output directory")  # before anything is generated or skimmed
    outputs: dict[str, str] = {}
    if epochs is not None:  # --epochs: every optimisation of the run (fine-tuning included)
        config = override(config, optimise={"epochs": epochs,
                                            **({"finetune": {"epochs": epochs}} if config.optimise.networks else {})})
    learned = None
    if config.optimise.networks:  # learned observables: cuts only first, then zprime_grad.stages.learned
        from zprime_grad.stages.learned import cuts_only

        learned, config = config, cuts_only(config)
    if fileset is None and config.fileset is not None:  # the config names its inputs: no generation
        fileset = configured_fileset(config)
        if isinstance(fileset, dict):
            (out / "fileset.json").write_text(json.dumps(fileset, indent=1))
            fileset = out / "fileset.json"
    elif fileset is None:
        fileset = generate_dataset(config, events=events, workers=workers, progress=progress)
        log.info("run: generate -> %s", fileset)
    outputs["fileset"] = str(fileset)

    # one session for every stage: in-process (the skim cached in OUT/skim), or one cluster whose workers
    # keep the chunks from the skim to the last bootstrap replica (a remote scheduler implies dask)
    with Session(config, scheduler=scheduler, workers=workers, backend=backend) as session:
        chunks = session.skim(fileset, out / "skim", progress=progress)
        outputs["skim"] = str(out / "skim")

        optimise_dir = out / "optimise"
        optimise(config, chunks, optimise_dir, resume="auto", progress=progress)
        log.info("run: optimise -> %s", optimise_dir)
        outputs["optimise"] = str(optimise_dir)

        compare = {}
        if config.scan.methods and learned is None:  # the black-box baseline at the gradient run's budget
            from zprime_grad.scan import gradient_budget, scan

            scanned = scan(config, chunks, out / "scan", progress=progress,
                           budget=config.scan.budget or gradient_budget(optimise_dir / "params.json"),
                           reuse_for=optimise_dir / "params.json")
            compare = {f"scan_{m}": out / "scan" / m / "params.json" for m in scanned["methods"]}
            outputs["scan"] = str(out / "scan")

        # hard cuts at θ* and θ₀ (and the scan's) on the held-out (odd) events of the same chunks, report
        validate(config, chunks, optimise_dir / "params.json", out, progress=progress, compare=compare,
                 reuse=learned is None)  # a finished validation of the same inputs (learned rows: redone)
        if learned is not None:  # train -> optimise (frozen / fine-tuned network) -> validate, rows in the report
            from zprime_grad.stages.learned import run_learned

            outputs.update(run_learned(learned, out, chunks, progress=progress))
    log.info("run: validate -> %s", out / "validation.json")
    outputs["validation"] = str(out / "validation.json")
    outputs["report"] = str(out / "report.html")
    (out / "run.json").write_text(json.dumps({"outputs": outputs}, indent=1))
    return outputs


def run(args: argparse.Namespace) -> int:
    from zprime_grad.config import load_config

    from zprime_grad import terminal

    config = load_config(args.config)
    run_chain(config, Path(args.out), events=args.events, fileset=args.fileset, backend=args.backend,
              workers=args.workers, scheduler=args.scheduler, epochs=args.epochs, progress=None)
    terminal.print_summary(Path(args.out) / "validation.json", outputs=Path(args.out) / "run.json")
    return 0


def configured_fileset(config) -> dict | str:
    """The config's ``fileset:`` (a JSON path or an inline coffea fileset), relative paths resolved
    against the config file's directory, so the config runs from any working directory."""
    from zprime_grad.skim.fileset import LOGICAL_NAMES

    base = Path(config.source).resolve().parent if config.source else Path.cwd()

    def resolve(path: str) -> str:
        return path if "://" in path or Path(path).is_absolute() else str(base / path)

    if isinstance(config.fileset, str):
        return resolve(config.fileset)
    resolved = {}
    for name, entry in config.fileset.items():
        entry = {"files": entry} if isinstance(entry, (list, tuple)) else entry
        files = entry.get("files", {}) if isinstance(entry, dict) else None
        metadata = entry.get("metadata", {}) if isinstance(entry, dict) else None
        if not (isinstance(files, (list, tuple, dict)) and all(isinstance(f, str) for f in files)
                and isinstance(metadata, dict)):
            from zprime_grad.errors import UserError

            raise UserError(f"{config.source}: field 'fileset.{name}': a list of files or {{files: [...], "
                            f"metadata: {{...}}}} (got {config.fileset[name]!r:.60})")
        entry = dict(entry)
        tree = entry.get("treename", "Events")
        written = {f: tree for f in files} if isinstance(files, (list, tuple)) else dict(files)
        entry["files"] = {resolve(f): tree for f, tree in written.items()}
        # the names as the config wrote them identify the files in chunk keys and hashes
        entry["metadata"] = {**metadata, LOGICAL_NAMES: {resolve(f): f for f in written}}
        resolved[name] = entry
    return resolved
