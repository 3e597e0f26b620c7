"""``zprime-grad`` command line: one subcommand per stage, each registered by its own module.

Every subcommand takes the config as an optional first positional argument (default
``configs/zprime.yaml``). Errors the user can act on are printed in one line with exit status 2;
nothing but a genuine bug shows a traceback.

The parser is built from the subcommands' small ``cli`` modules only, loaded by file so that their
packages' ``__init__`` (which import jax, coffea, pyhf…) are not run: ``--help`` and argument errors
answer in a fraction of a second; a command imports what it needs when it runs. What the terminal
shows while it runs (bars, captured third-party chatter, ``-v``/``-q``) is `zprime_grad.terminal`.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import multiprocessing
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

# Each module defines ``register(subparsers)``, which adds its parser and sets ``func``.
COMMANDS = [
    "zprime_grad.generate.cli",
    "zprime_grad.stages.run",
    "zprime_grad.stats.cli",
    "zprime_grad.stages.commands.optimise",
    "zprime_grad.stages.commands.scan",
    "zprime_grad.stages.commands.skim",
    "zprime_grad.stages.commands.validate",
    "zprime_grad.stages.commands.train",
    "zprime_grad.stages.commands.fileset",
]
_PACKAGE = Path(__file__).resolve().parent

if multiprocessing.current_process().name != "MainProcess":
    # a worker process the command spawned (Dask's LocalCluster, the generator's pool) imports the command's
    # main module first: it ignores the terminal's Ctrl-C from birth, and the command stops it. A Ctrl-C that
    # killed a worker while it starts would leave the cluster's start-up waiting and print its traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _command_module(name: str):
    """The module ``name`` without importing its parent package (whose ``__init__`` is heavy)."""
    if name in sys.modules:
        return sys.modules[name]
    path = _PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not put in sys.modules: a later normal import gets the real package
    return module


def _verbosity(parser: argparse.ArgumentParser, default) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_const", const="verbose", dest="verbosity", default=default,
                       help="show everything: debug logging, third-party output and warnings")
    group.add_argument("-q", "--quiet", action="store_const", const="quiet", dest="verbosity", default=default,
                       help="only errors and the final summary")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zprime-grad", description=__doc__.splitlines()[0])
    _verbosity(parser, "normal")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        _command_module(name).register(sub)
    for command in sub.choices.values():  # -v/-q also after the subcommand (SUPPRESS: keep the top-level one)
        _verbosity(command, argparse.SUPPRESS)
    return parser


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, help="YAML config (default: configs/zprime.yaml)")


def add_chunk_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a stage's chunks come from, and the run's cluster (`zprime_grad.stages.session.Session`)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--columns", help="a skim directory (zprime-grad skim --out DIR)")
    source.add_argument("--fileset", help="a coffea fileset JSON: skim it first (on a cluster the chunks stay on the workers)")
    parser.add_argument("--backend", choices=("local", "dask"), default=None, help="default: optimise.backend")
    parser.add_argument("--workers", type=workers_type(), default=None, help="LocalCluster workers (dask)")
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://, tls://, gateway://)")


def workers_type():
    from zprime_grad.limits import CLUSTER_WORKERS_MAX, integer

    return integer(1, CLUSTER_WORKERS_MAX)


def epochs_type():
    from zprime_grad.limits import EPOCHS_MAX, integer

    return integer(0, EPOCHS_MAX)


# what the file system says about a path the user gave: theirs to act on, never a bug of ours
USER_OS_ERRORS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                            errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP})


def _actionable(err: Exception) -> bool:
    """A UserError, an OS error about a named path (missing, read-only, no permission, disk full …), or a
    bad config (only a command that loaded the config, with its pydantic models, can raise ConfigError:
    commands that need no config never import it)."""
    from zprime_grad.errors import UserError

    config = sys.modules.get("zprime_grad.config")
    return (isinstance(err, (UserError, FileNotFoundError))
            or (isinstance(err, OSError) and err.errno in USER_OS_ERRORS)
            or (config is not None and isinstance(err, config.ConfigError)))


def _message(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    return str(err)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from zprime_grad import terminal

    try:
        with terminal.session(args.verbosity), _ctrl_c(), _jax_settings():
            return int(args.func(args) or 0)
    except Exception as err:
        if not _actionable(err):
            raise
        print(f"zprime-grad {args.command}: error: {_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if argv is None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # decided: exit 130; a second or re-sent Ctrl-C
            # (`_ctrl_c`) arriving during shutdown must not turn it into death by SIGINT (the command
            # line's process only: a caller of main([...]) keeps its Ctrl-C)
        print(f"zprime-grad {args.command}: interrupted; completed outputs are kept", file=sys.stderr)
        return 130


@contextmanager
def _jax_settings():
    """A command is our own process: float64 throughout and the persistent compilation cache (for it and
    the local workers it starts); see `zprime_grad.jaxconfig`. Before jax is imported they are set
    through the environment jax reads at import, so a command that fails on its input never pays for
    importing jax; a caller of ``main([...])`` that has imported jax gets them for the call."""
    from zprime_grad.jaxconfig import compile_cache_dir, float64, use_compile_cache

    if "jax" not in sys.modules:
        os.environ["JAX_ENABLE_X64"] = "1"
        cache = compile_cache_dir()
        if cache and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
            os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
            os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1.0")
        yield
        return
    use_compile_cache()
    with float64():
        yield


@contextmanager
def _ctrl_c():
    """Ctrl-C while a command runs: a KeyboardInterrupt that a C callback swallowed (Python reports it as
    'Exception ignored', e.g. inside llvmlite's JIT, and goes on) is sent again, silently, until one reaches
    the command, so the first Ctrl-C stops it. Outside the main thread: nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unraisable(info, previous=sys.unraisablehook):
        if isinstance(info.exc_value, KeyboardInterrupt):
            # lost in a callback: once more, from another thread, once the callback has returned
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
        else:
            previous(info)

    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook


if __name__ == "__main__":
    sys.exit(main())
