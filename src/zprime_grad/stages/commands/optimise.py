"""``zprime-grad optimise``: optimise the cut thresholds by gradient ascent of the expected significance."""

from __future__ import annotations

import argparse
import os
import signal
import warnings

from zprime_grad.cli import add_chunk_arguments, add_config_argument, epochs_type


def register(subparsers) -> None:
    p = subparsers.add_parser("optimise", help="optimise the cuts (exact distributed gradients)",
                              description=__doc__.splitlines()[0])
    add_config_argument(p)
    add_chunk_arguments(p)
    p.add_argument("--epochs", type=epochs_type(), default=None, help="default: optimise.epochs")
    p.add_argument("--gradient", choices=("auto", "forward", "reverse"), default=None)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pkl")
    p.add_argument("--network", action="append", default=[], metavar="NAME=FILE",
                   help="weights of an optimise.networks model (zprime-grad train); default: models.NAME.init_from")
    p.add_argument("--out", required=True, help="output directory")
    # test hook: SIGKILL this process right after the checkpoint of the given epoch is written
    p.add_argument("--kill-after-epoch", type=epochs_type(), default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zprime_grad import atomic
    from zprime_grad.config import load_config, override
    from zprime_grad.optimise.driver import Start, optimise
    from zprime_grad.stages.session import Session

    config = override(load_config(args.config), optimise={"epochs": args.epochs, "gradient": args.gradient})
    atomic.writable_directory(args.out, "--out directory")  # before the skim or the first epoch
    on_epoch = None
    if args.kill_after_epoch is not None:
        def on_epoch(state):
            if state.epoch - 1 >= args.kill_after_epoch:
                os.kill(os.getpid(), signal.SIGKILL)
    with warnings.catch_warnings(), Session(config, scheduler=args.scheduler, workers=args.workers,
                                            backend=args.backend) as session:
        warnings.simplefilter("ignore")  # coffea schema warnings when skimming from a fileset
        chunks = session.chunks(columns=args.columns, fileset=args.fileset)
        result = optimise(config, chunks, args.out, start=Start(networks=_networks(args.network)),
                          resume=args.resume, on_epoch=on_epoch)
    print(f"zprime-grad optimise: {result['epochs_run']} epochs, {result['objective']} "
          f"train {result['z_train_final']:.4f}, validation {result['z_valid_final']:.4f} -> {args.out}/params.json")
    for p in result["parameters"]:
        print(f"  {p['name']:20s} {p['init']:10.4g} -> {p['value']:10.4g} {p['unit']}")
    return 0


def _networks(pairs) -> dict:
    from zprime_grad.errors import UserError

    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--network: expected NAME=FILE, got '{pair}'")
        out[name] = path
    return out
