"""``zprime-grad significance WORKSPACE.json``: discovery significance of a pyhf workspace, as JSON.

The top-level ``Z``, ``q0`` and ``mu_hat`` are for the workspace's observations (or for the mu = 1 Asimov
data with ``--asimov``, or when the spec has none); ``expected`` always holds the Asimov (mu = 1) result.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "significance",
        help="discovery significance Z0 of a pyhf workspace (JAX HistFactory, pyhf semantics)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("workspace", help="pyhf workspace JSON file")
    parser.add_argument("--measurement", default=None, help="measurement name (default: the first)")
    parser.add_argument("--asimov", action="store_true", help="report the mu = 1 Asimov data at top level")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zprime_grad.stats.model import Model

    model = Model.from_file(args.workspace, measurement=args.measurement)
    q0_expected = float(model.discovery_q0())
    expected = {"Z": q0_expected**0.5, "q0": q0_expected}
    _, asimov_main, _ = model.asimov_data(1.0)
    use_asimov = args.asimov or model._observations is None
    discovery = model.discovery_observed(asimov_main if use_asimov else None)
    result = {
        "Z": float(discovery.Z),
        "q0": float(discovery.q0),
        "mu_hat": float(discovery.mu_hat),
        "data": "asimov" if use_asimov else "observed",
        "poi": model.poi,
        "measurement": model.structure.measurement,
        "n_parameters": model.structure.n_parameters,
        "expected": expected,
        "workspace": args.workspace,
    }
    print(json.dumps(result, indent=2))
    return 0
