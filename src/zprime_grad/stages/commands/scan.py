"""``zprime-grad scan``: the same cuts searched without gradients (Sobol, Optuna TPE), the black-box baseline."""

from __future__ import annotations

import argparse

from zprime_grad.cli import add_chunk_arguments, add_config_argument
from zprime_grad.limits import integer

METHODS = ("sobol", "tpe")  # zprime_grad.scan.METHODS, without importing the scan package for --help


def register(subparsers) -> None:
    p = subparsers.add_parser("scan", help="the black-box baseline: the same cuts searched without gradients",
                              description=__doc__.splitlines()[0])
    add_config_argument(p)
    add_chunk_arguments(p)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--params", help="the gradient run's params.json: the same budget, epochs x (1 + parameters)")
    budget.add_argument("--budget", type=integer(1, 1_000_000), default=None,
                        help="objective evaluations per method (default: scan.budget)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None, help="default: scan.methods")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zprime_grad import atomic
    from zprime_grad.config import load_config
    from zprime_grad.errors import UserError
    from zprime_grad.scan import gradient_budget, scan
    from zprime_grad.stages.session import Session

    config = load_config(args.config)
    atomic.writable_directory(args.out, "--out directory")
    budget = args.budget or config.scan.budget or (gradient_budget(args.params) if args.params else None)
    if budget is None:
        raise UserError("scan: no budget: give --params (the gradient run's), --budget, or scan.budget")
    methods = args.methods or config.scan.methods
    if not methods:
        raise UserError("scan: no method: scan.methods is empty; give --methods")
    with Session(config, scheduler=args.scheduler, workers=args.workers, backend=args.backend) as session:
        chunks = session.chunks(columns=args.columns, fileset=args.fileset)
        result = scan(config, chunks, args.out, budget=budget, methods=methods, reuse_for=args.params)
    print(f"zprime-grad scan: {budget} evaluations per method, {result['objective']} on the training half, "
          f"hard cuts -> {args.out}/scan.json")
    for method, m in result["methods"].items():
        print(f"  {method:6s} best {m['value_train']:.4f} (reference {m['value_reference']:.4f}) "
              f"-> {args.out}/{m['params']}")
    return 0
