"""``zprime-grad train``: pre-train the config's models (class-balanced cross-entropy on the even events)."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from zprime_grad.cli import add_chunk_arguments, add_config_argument


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="pre-train the learned observables (models:) on the skimmed columns",
                              description=__doc__.splitlines()[0])
    add_config_argument(p)
    add_chunk_arguments(p)
    p.add_argument("--model", action="append", help="train only this model (repeatable; default: all)")
    p.add_argument("--retrain", action="store_true", help="train even if OUT holds a network of the same inputs")
    p.add_argument("--out", required=True, help="output directory: OUT/<model>.npz, OUT/train.json, OUT/plots/")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zprime_grad import atomic
    from zprime_grad.config import load_config
    from zprime_grad.errors import UserError
    from zprime_grad.learn.train import train_models
    from zprime_grad.stages.session import Session

    config = load_config(args.config)
    if not config.models:
        raise UserError(f"{config.source}: the config declares no models to train")
    atomic.writable_directory(args.out, "--out directory")
    with warnings.catch_warnings(), Session(config, scheduler=args.scheduler, workers=args.workers,
                                            backend=args.backend) as session:
        warnings.simplefilter("ignore")
        chunks = session.chunks(columns=args.columns, fileset=args.fileset)
        paths = train_models(config, chunks, args.out, names=args.model, reuse=not args.retrain)
    summaries = json.loads((Path(args.out) / "train.json").read_text())["models"]
    for name, path in paths.items():
        s = summaries[name]
        print(f"zprime-grad train: {name}: {s['n_params']} parameters, {s['epochs_run']} epochs (best {s['best_epoch']}), "
              f"held-out loss {s['loss_initial']['loss_heldout']:.4f} -> {s['loss_best']['loss_heldout']:.4f} -> {path}")
    return 0
