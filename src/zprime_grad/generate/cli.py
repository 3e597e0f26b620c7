"""``zprime-grad generate [CONFIG] [--events N] [--out DIR] [--seed S] [--workers W]``."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from zprime_grad.cli import add_config_argument
    from zprime_grad.limits import EVENTS_MAX, POOL_WORKERS_MAX, SEED_MAX, integer

    p = subparsers.add_parser("generate", help="generate the default NanoAOD samples (Pythia 8 + FastJet)")
    add_config_argument(p)
    p.add_argument("--events", type=integer(1, EVENTS_MAX), help="events per sample (default: generate.events)")
    p.add_argument("--out", help="output directory (default: generate.out)")
    p.add_argument("--seed", type=integer(0, SEED_MAX), help="random seed (default: generate.seed)")
    p.add_argument("--workers", type=integer(1, POOL_WORKERS_MAX), help="worker processes (default: generate.workers)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zprime_grad import atomic
    from zprime_grad.config import load_config
    from zprime_grad.generate import generate_dataset

    config = load_config(args.config)
    if args.out is not None:
        atomic.writable_directory(args.out, "--out directory")
    path = generate_dataset(
        config, args.out, events=args.events, seed=args.seed, workers=args.workers, progress=None
    )
    print(path)
    return 0
