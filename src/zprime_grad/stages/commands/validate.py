"""``zprime-grad validate``: the optimised cuts as hard cuts on the held-out events, with hist/cabinetry/pyhf."""

from __future__ import annotations

import argparse

from zprime_grad.cli import add_config_argument, workers_type
from zprime_grad.limits import CHUNKSIZE_MAX, integer


def register(subparsers) -> None:
    p = subparsers.add_parser("validate", help="hard-cut validation of the optimised cuts (cabinetry/pyhf)",
                              description=__doc__.splitlines()[0])
    add_config_argument(p)
    p.add_argument("--params", required=True, help="params.json of the optimisation (theta*)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--fileset", help="a coffea fileset JSON: processed with coffea's Runner")
    source.add_argument("--columns", help="a skim directory (zprime-grad skim --out DIR)")
    p.add_argument("--executor", choices=("iterative", "futures", "dask"), default=None,
                   help="coffea executor for --fileset (default: skim.executor)")
    p.add_argument("--workers", type=workers_type(), default=None, help="processes (futures) or LocalCluster workers (dask)")
    p.add_argument("--scheduler", default=None, help="Dask cluster (tcp://, tls://, gateway://) for --fileset; implies --executor dask")
    p.add_argument("--chunksize", type=integer(1, CHUNKSIZE_MAX), default=None, help="entries per coffea chunk (default: skim.chunksize)")
    p.add_argument("--mode", choices=("runner", "dask-awkward"), default="runner",
                   help="coffea Runner (default) or NanoEvents dask mode + dask-histogram (on the dask client)")
    p.add_argument("--no-plots", action="store_true",
                   help="skip the mplhep plots (OUT/plots/); default: validation.plots")
    p.add_argument("--compare", action="append", default=[], metavar="LABEL=PARAMS",
                   help="other cuts validated beside theta* (e.g. scan_tpe=scan/tpe/params.json); repeatable")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def comparisons(pairs) -> dict[str, str]:
    from zprime_grad.errors import UserError

    out = {}
    for pair in pairs:
        label, sep, path = pair.partition("=")
        if not sep or not label or not path or label in out:
            raise UserError(f"--compare: expected LABEL=PARAMS with a new label, got {pair!r}")
        out[label] = path
    return out


def run(args: argparse.Namespace) -> int:
    from zprime_grad import atomic
    from zprime_grad.config import load_config
    from zprime_grad.stages.session import Session
    from zprime_grad.validate.driver import check_params, validate

    config = load_config(args.config)
    atomic.writable_directory(args.out, "--out directory")
    compare = comparisons(args.compare)
    for path in (args.params, *compare.values()):
        check_params(config, path)  # before the chunks are read
    # a cluster only when asked for (--executor dask, --scheduler, cluster.kind): the session opens it
    with Session(config, scheduler=args.scheduler, workers=args.workers,
                 backend="dask" if args.executor == "dask" else "local") as session:
        source = (session.load(args.columns) if args.columns else
                  session.fileset(args.fileset, mode=args.mode, executor=args.executor, chunksize=args.chunksize))
        result = validate(config, source, args.params, args.out, plots=False if args.no_plots else None,
                          compare=compare)
    fmt = lambda z: "n/a" if z is None else f"{z:.4f}"  # noqa: E731
    base, opt = result["baseline"], result["optimised"]
    measure = result.get("figure_of_merit") == "mu_uncertainty"
    print("zprime-grad validate: held-out (odd) events, hard cuts, expected "
          + ("uncertainty on the signal strength (Asimov)" if measure else "discovery Z (Asimov)"))
    if measure:
        print(f"  baseline  sigma(mu)_hard {fmt(base['mu_uncertainty_hard'])}")
        print(f"  optimised sigma(mu)_hard {fmt(opt['mu_uncertainty_hard'])}  "
              f"sigma(mu)_soft {fmt(opt['mu_uncertainty_soft'])}")
    else:
        print(f"  baseline  Z_hard {fmt(base['Z_hard'])}")
        print(f"  optimised Z_hard {fmt(opt['Z_hard'])}  Z_soft {fmt(opt['Z_soft'])}")
    improvement = result["improvement"]
    for label, c in result.get("comparisons", {}).items():
        print(f"  {label} Z_hard {fmt(c['Z_hard'])}  improvement {fmt(c.get('improvement'))}")
    print(f"  improvement {fmt(improvement)} -> {args.out}/validation.json")
    for warning in result.get("fit_warnings", []):  # fits that really failed: what it means for the numbers
        print(f"  warning: {warning}")
    return 0
