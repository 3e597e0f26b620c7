"""The ranges numbers must lie in, shared by the config's fields and the command line's options (light:
the CLI parses arguments without importing pydantic)."""

from __future__ import annotations

import argparse

SEED_MAX = 2**63 - 1  # numpy SeedSequence and JAX PRNG keys take a 64-bit integer
POOL_WORKERS_MAX = 1024  # processes of one machine's pool
CLUSTER_WORKERS_MAX = 100_000
EPOCHS_MAX = 1_000_000
EVENTS_MAX = 10**9  # events per generated sample
CHUNKSIZE_MAX = 10**9
XSEC_MAX_PB = 1e11  # above the total pp cross section (~80 mb = 8e10 pb)
FLOAT32_MAX = 3.4028234663852886e38  # the columns' type: a range beyond it bins nothing they can hold
STEP_MAX = 10.0  # an Adam step of more than 10 scales per epoch crosses any cut's bounds in one step


def integer(low: int, high: int | None = None):
    """An argparse ``type``: an integer in [low, high]; anything else is one line naming the option
    (argparse prefixes 'argument --NAME:') and the allowed range, exit status 2."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"an integer is needed (got {text!r})") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high)} (got {value})")
        return value

    parse.__name__ = "integer"
    return parse


def _range(low: int, high: int | None) -> str:
    return f"at least {low}" if high is None else f"from {low} to {high}"
