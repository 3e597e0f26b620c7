"""``zprime-grad significance WORKSPACE.json``: discovery significance of a pyhf workspace, as JSON.

The top-level ``Z``, ``q0`` and ``mu_hat`` are for the workspace's observations (or for the mu = 1 Asimov
data with ``--asimov``, or when the spec has none); ``expected`` always holds the Asimov (mu = 1) result.

By default pyhf itself computes them (numpy backend, scipy optimiser): a one-off number needs no
gradient, and the command answers in about 3 s instead of about 10 s of JAX import and tracing.
``--jax`` uses the package's differentiable HistFactory (`zprime_grad.stats.Model`, the optimiser's
model, pyhf semantics): the same numbers to ~1e-3, its fits as the optimiser sees them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "significance",
        help="discovery significance Z0 of a pyhf workspace (pyhf; --jax: the package's JAX HistFactory)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("workspace", help="pyhf workspace JSON file")
    parser.add_argument("--measurement", default=None, help="measurement name (default: the first)")
    parser.add_argument("--asimov", action="store_true", help="report the mu = 1 Asimov data at top level")
    parser.add_argument("--jax", action="store_true", help="compute with zprime_grad's JAX HistFactory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _load(Path(args.workspace))  # a missing or malformed file: one line naming it, before either engine
    result = _with_jax(args) if args.jax else _with_pyhf(args)
    print(json.dumps({**result, "workspace": args.workspace}, indent=2))
    return 0


def _with_jax(args: argparse.Namespace) -> dict:
    from zprime_grad.stats.model import Model

    model = Model.from_file(args.workspace, measurement=args.measurement)
    q0_expected = float(model.discovery_q0())
    _, asimov_main, _ = model.asimov_data(1.0)
    use_asimov = args.asimov or model._observations is None
    discovery = model.discovery_observed(asimov_main if use_asimov else None)
    return {"Z": float(discovery.Z), "q0": float(discovery.q0), "mu_hat": float(discovery.mu_hat),
            "data": "asimov" if use_asimov else "observed", "poi": model.poi,
            "measurement": model.structure.measurement, "n_parameters": model.structure.n_parameters,
            "expected": {"Z": q0_expected**0.5, "q0": q0_expected}, "engine": "zprime_grad.stats (JAX)"}


def _with_pyhf(args: argparse.Namespace) -> dict:
    import pyhf

    from zprime_grad.errors import UserError

    spec = _load(Path(args.workspace))
    observed = bool(spec.get("observations"))
    if not observed:  # pyhf's workspace needs observations: placeholders, never used
        spec = {**spec, "observations": [{"name": c["name"], "data": [0.0] * len(c["samples"][0]["data"])}
                                         for c in spec["channels"]]}
    previous = pyhf.get_backend()
    try:
        pyhf.set_backend("numpy", "scipy")
        try:
            workspace = pyhf.Workspace(spec)
            measurement = workspace.get_measurement(measurement_name=args.measurement)
            model = workspace.model(measurement_name=measurement["name"])
        except (pyhf.exceptions.InvalidSpecification, pyhf.exceptions.InvalidMeasurement, KeyError) as err:
            raise UserError(f"{args.workspace}: invalid pyhf workspace: {err}") from None
        init, bounds = model.config.suggested_init(), model.config.suggested_bounds()
        fixed = model.config.suggested_fixed()
        asimov = model.expected_data(init)  # suggested init: mu = 1, nuisance parameters nominal

        def q0(data):
            value, (_, free) = pyhf.infer.test_statistics.q0(0.0, data, model, init, bounds, fixed,
                                                             return_fitted_pars=True)
            return float(value), float(free[model.config.poi_index])

        q0_expected, _ = q0(asimov)
        use_asimov = args.asimov or not observed
        q0_top, mu_hat = q0(asimov if use_asimov else workspace.data(model))
    finally:
        pyhf.set_backend(*previous)
    return {"Z": max(q0_top, 0.0) ** 0.5, "q0": q0_top, "mu_hat": mu_hat, "data": "asimov" if use_asimov else "observed",
            "poi": model.config.poi_name, "measurement": measurement["name"], "n_parameters": model.config.npars,
            "expected": {"Z": max(q0_expected, 0.0) ** 0.5, "q0": q0_expected}, "engine": "pyhf (numpy, scipy)"}


def _load(path: Path) -> dict:
    """The workspace file; a missing or malformed one is a one-line error naming it."""
    from zprime_grad.errors import UserError

    if not path.is_file():
        raise UserError(f"{path}: workspace file not found")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(spec, dict) or not spec.get("channels"):
        raise UserError(f"{path}: not a pyhf workspace (no 'channels')")
    channels = spec["channels"]
    if not (isinstance(channels, list) and all(
            isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("samples"), list) and c["samples"]
            and all(isinstance(s, dict) and isinstance(s.get("data"), list) for s in c["samples"]) for c in channels)):
        raise UserError(f"{path}: not a pyhf workspace ('channels' must list {{name, samples: [{{data: [...]}}]}})")
    return spec
