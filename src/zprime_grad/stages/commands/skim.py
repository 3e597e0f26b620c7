"""``zprime-grad skim``: skim a coffea fileset into ``OUT/columns/`` and ``OUT/skim.json``."""

from __future__ import annotations

import argparse
import warnings

from zprime_grad.cli import add_config_argument, workers_type
from zprime_grad.limits import CHUNKSIZE_MAX, integer


def register(subparsers) -> None:
    p = subparsers.add_parser("skim", help="skim NanoAOD into JAX-ready columns",
                              description=__doc__.splitlines()[0])
    add_config_argument(p)
    p.add_argument("--fileset", required=True, help="coffea fileset JSON (e.g. data/generated/fileset.json)")
    p.add_argument("--executor", choices=("iterative", "futures", "dask"), default=None)
    p.add_argument("--workers", type=workers_type(), default=None, help="processes (futures) or LocalCluster workers (dask)")
    p.add_argument("--scheduler", default=None, help="Dask cluster: tcp://host:8786, tls://... (cluster.tls) or gateway://host:port")
    p.add_argument("--chunksize", type=integer(1, CHUNKSIZE_MAX), default=None, help="entries per chunk")
    p.add_argument("--skip-bad-files", action="store_true", default=None,
                   help="skip unreadable input files (listed in skim.json) instead of failing")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zprime_grad import atomic
    from zprime_grad.config import load_config
    from zprime_grad.skim.pipeline import skim_options, skim_to_directory
    from zprime_grad.stages.session import Session

    config = load_config(args.config)
    atomic.writable_directory(args.out, "--out directory")  # before any work
    executor = args.executor or config.skim.executor
    with Session(config, scheduler=args.scheduler, workers=args.workers,
                 backend="dask" if executor == "dask" else "local") as session, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coffea's per-chunk schema warnings; errors still raise
        options = skim_options(config, executor=session.executor or executor, workers=args.workers,
                               chunksize=args.chunksize, skip_bad_files=args.skip_bad_files)
        # the workers write the columns: OUT must be on a filesystem they see (a run keeps them resident)
        report, cached = skim_to_directory(config, args.fileset, args.out, options, client=session.client)
    print(f"zprime-grad skim: {'reused' if cached else 'wrote'} {args.out}/skim.json "
          f"({len(report['columns'])} chunks, executor {report['executor']})")
    for name, d in report["datasets"].items():
        channels = sorted(d["channels"].items(), key=lambda item: item[0] != "skim")  # skim first
        counts = ", ".join(f"{ch} {c['raw']} ({c['weighted']:.4g})" for ch, c in channels)
        print(f"  {name:12s} read {d['entries_read']:>9d}  {counts}")
    for bad in report["bad_files"]:
        print(f"  skipped bad file {bad['file']}: {bad['error']}")
    return 0
