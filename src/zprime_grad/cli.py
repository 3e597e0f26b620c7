"""``zprime-grad`` command line: one subcommand per stage, each registered by its own module.

Every subcommand takes the config as an optional first positional argument (default
``configs/zprime.yaml``). Errors the user can act on are printed in one line with exit status 2;
nothing but a genuine bug shows a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from zprime_grad.config import ConfigError
from zprime_grad.errors import UserError

# Each module defines ``register(subparsers)``, which adds its parser and sets ``func``.
COMMANDS = [
    "zprime_grad.generate.cli",
    "zprime_grad.pipeline",
    "zprime_grad.stats.cli",
    "zprime_grad.optimise.cli",
    "zprime_grad.skim.cli",
    "zprime_grad.validate.cli",
    "zprime_grad.learn.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zprime-grad", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, help="YAML config (default: configs/zprime.yaml)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UserError, FileNotFoundError) as err:
        print(f"zprime-grad {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zprime-grad {args.command}: interrupted; completed outputs are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
