"""``zprime-grad generate [CONFIG] [--events N] [--out DIR] [--seed S] [--workers W]``."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from zprime_grad.cli import add_config_argument

    p = subparsers.add_parser("generate", help="generate the default NanoAOD samples (Pythia 8 + FastJet)")
    add_config_argument(p)
    p.add_argument("--events", type=int, help="events per sample (default: generate.events)")
    p.add_argument("--out", help="output directory (default: generate.out)")
    p.add_argument("--seed", type=int, help="random seed (default: generate.seed)")
    p.add_argument("--workers", type=int, help="worker processes (default: generate.workers)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zprime_grad.config import load_config
    from zprime_grad.errors import UserError
    from zprime_grad.generate import generate_dataset

    for name in ("events", "workers"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name} must be positive, got {value}")
    config = load_config(args.config)
    path = generate_dataset(
        config, args.out, events=args.events, seed=args.seed, workers=args.workers, progress=None
    )
    print(path)
    return 0
