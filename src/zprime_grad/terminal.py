"""What a command shows on the terminal: one bar per stage, third-party chatter kept out, a short summary.

The CLI opens a `session` for the duration of a command; stage functions ask `bar` for their progress
bar and run noisy third-party code inside `chatter` (output of C++ libraries, Minuit, FastJet and
worker processes is captured at the file-descriptor level). Without a session (a notebook, a test, a
library call) bars keep tqdm's own behaviour and nothing is captured. Nothing here changes global
state at import; a session restores the logging, warnings and jax logger settings it changed.

Levels: ``verbose`` shows everything (debug logging, third-party output and warnings), ``normal`` one
bar per stage on a TTY (one line per stage otherwise) and our warnings, ``quiet`` errors and the summary.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import warnings
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import IO

LEVELS = ("quiet", "normal", "verbose")


@dataclass(frozen=True)
class Mode:
    level: str
    tty: bool
    stream: IO[str]  # where bars and our log lines go: the terminal's stderr, even while fd 2 is captured
    bars: list = field(default_factory=list)  # closed at the end, so that an error starts on its own line


_mode: ContextVar[Mode | None] = ContextVar("zprime_grad_terminal", default=None)


def current() -> Mode | None:
    return _mode.get()


def _terminal_stream() -> tuple[IO[str], bool]:
    """A private handle on the terminal's stderr (a dup of fd 2), so that capturing fd 2 leaves it alone."""
    err = sys.stderr
    try:
        fd = err.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a test harness: use it as it is
        return err, False
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(err, "encoding", None) or "utf-8",
                     errors="replace"), True


class _StageFilter(logging.Filter):
    """Our loggers from ``threshold`` up; third-party loggers only from ERROR up (except when verbose)."""

    def __init__(self, threshold: int, others: int):
        super().__init__()
        self.threshold, self.others = threshold, others

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == "zprime_grad" or record.name.startswith("zprime_grad.")
        if not ours and _closing_mid_gather(record):
            return False
        return record.levelno >= (self.threshold if ours else self.others)


def _closing_mid_gather(record: logging.LogRecord) -> bool:
    """asyncio's "Task exception was never retrieved" for distributed's ``AllExit``: a Dask client closed
    while it was gathering (a Ctrl-C or an error that stops the command) — the stop itself, not an error."""
    exc = record.exc_info[1] if record.exc_info else None
    return record.name == "asyncio" and type(exc).__name__ == "AllExit" and \
        type(exc).__module__.startswith("distributed")


@contextlib.contextmanager
def session(level: str = "normal"):
    """The terminal settings of one CLI command; everything is restored on exit."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    stream, owned = _terminal_stream()
    mode = Mode(level, bool(getattr(stream, "isatty", lambda: False)()), stream)
    handler = logging.StreamHandler(stream)
    if level == "verbose":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler.addFilter(_StageFilter(logging.DEBUG, logging.DEBUG))
    else:
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_StageFilter(logging.WARNING if level == "normal" else logging.ERROR, logging.ERROR))
    root, jax_logger = logging.getLogger(), logging.getLogger("jax")
    saved = (root.level, jax_logger.level)
    root.setLevel(logging.DEBUG if level == "verbose" else logging.INFO)
    if level != "verbose":  # "Unable to initialize backend 'tpu'" and friends
        jax_logger.setLevel(logging.ERROR)
    root.addHandler(handler)
    token = _mode.set(mode)
    try:
        with warnings.catch_warnings():
            if level != "verbose":
                warnings.simplefilter("ignore")  # library warnings (coffea schema, numpy, iminuit)
            yield mode
    finally:
        for open_bar in mode.bars:
            open_bar.close()
        _mode.reset(token)
        root.removeHandler(handler)
        root.setLevel(saved[0])
        jax_logger.setLevel(saved[1])
        if owned:
            stream.close()


# ------------------------------------------------------------------------------------------ progress
class _LineBar:
    """A bar's stand-in where there is no TTY: one line when the stage ends, none while it runs."""

    def __init__(self, total, desc, unit, stream, initial=0):
        self.total, self.desc, self.unit, self.stream, self.n = total, desc, unit, stream, initial
        self.postfix, self.start, self.closed = "", time.perf_counter(), False

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def set_description(self, desc, refresh=True):
        self.desc = desc

    def close(self):
        if self.closed:
            return
        self.closed = True
        total = f"/{self.total}" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{total} {self.unit} in {time.perf_counter() - self.start:.1f} s{extra}",
              file=self.stream, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def bar(total: int | None, desc: str, unit: str, *, progress: bool | None = None, initial: int = 0):
    """The progress bar of one stage.

    In a session: a tqdm bar that stays on screen (TTY, not quiet), one line at the end (no TTY, not
    quiet) or nothing (quiet), unless ``progress`` is False. Without one: tqdm, shown if ``progress``
    (``None``: where tqdm's own TTY check allows)."""
    from tqdm.auto import tqdm

    mode = current()
    if mode is None:
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False,
                    disable=None if progress is None else not progress)
    if progress is False or mode.level == "quiet":
        return tqdm(total=total, initial=initial, disable=True)
    if not mode.tty:
        mode.bars.append(_LineBar(total, desc, unit, mode.stream, initial))
        return mode.bars[-1]
    from tqdm import tqdm as plain  # the terminal: no notebook widget

    try:  # a pseudo-terminal without a size (script, some CI runners) reports 0 columns: tqdm would draw nothing
        width = os.get_terminal_size(mode.stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        width = 0
    mode.bars.append(plain(total=total, initial=initial, desc=desc, unit=unit, leave=True, file=mode.stream,
                           mininterval=0.5, ncols=min(width, 120) or 100))
    return mode.bars[-1]


def say(message: str) -> None:
    """One line for the user in a session that is not quiet (library use: nothing; logging has it)."""
    mode = current()
    if mode is not None and mode.level != "quiet":
        print(message, file=mode.stream, flush=True)


# ------------------------------------------------------------------------------------------- summary
def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def summary_lines(validation: dict, where: str) -> list[str]:
    """The result in a few lines: baseline vs optimised (hard cuts, held-out events), the bootstrap
    interval when there is one, the learned analyses, fits that failed, where the report is."""
    base, opt = validation["baseline"], validation["optimised"]
    if validation.get("figure_of_merit") == "mu_uncertainty":
        lines = [f"sigma(mu), hard cuts on the held-out events (Asimov): baseline {_fmt(base.get('mu_uncertainty_hard'))}"
                 f" -> optimised {_fmt(opt.get('mu_uncertainty_hard'))} (soft {_fmt(opt.get('mu_uncertainty_soft'))})"]
        better = "smaller"
    else:
        lines = [f"Z0, hard cuts on the held-out events (Asimov): baseline {_fmt(base['Z_hard'])}"
                 f" -> optimised {_fmt(opt['Z_hard'])} (soft {_fmt(opt.get('Z_soft'))})"]
        better = "larger"
    improvement = f"improvement x{_fmt(validation.get('improvement'))} ({better} is better)"
    boot = (validation.get("bootstrap") or {}).get("analyses", {}).get("optimised")
    if boot and boot.get("ratio_interval_68"):
        lo, hi = boot["ratio_interval_68"]
        improvement += f"; bootstrap 68 % interval {lo:.3f} - {hi:.3f} ({validation['bootstrap']['replicas']} replicas)"
    lines.append(improvement)
    if validation.get("comparisons"):  # the black-box scan's best cuts on the same held-out events
        against = (validation.get("bootstrap") or {}).get("against_optimised") or {}

        def beaten(label: str) -> str:
            a = against.get(label)
            return f", above theta* in {a['fraction_above_reference']:.0%} of replicas" if a else ""

        lines.append("black-box search, same budget: " + ", ".join(
            f"{label} Z0 {_fmt(c['Z_hard'])} (x{_fmt(c.get('improvement'))}{beaten(label)})"
            for label, c in validation["comparisons"].items()))
    for row in (validation.get("learned") or {}).get("rows", [])[2:]:
        lines.append(f"{row['label']}: Z0 {_fmt(row['Z_hard'])}")
    if (validation.get("learned") or {}).get("finetuned_over_cuts_only") is not None:
        lines.append(f"fine-tuned / cuts only x{_fmt(validation['learned']['finetuned_over_cuts_only'])}")
    lines += [f"warning: {w}" for w in validation.get("fit_warnings", [])]
    lines.append(f"report: {where}")
    return lines


def print_summary(validation_json, outputs=None) -> None:
    """Print `summary_lines` of ``validation.json`` to stdout (also when quiet)."""
    import json
    from pathlib import Path

    path = Path(validation_json)
    validation = json.loads(path.read_text())
    report = validation.get("outputs", {}).get("report")
    where = str(path.parent / report) if report else str(path)
    if outputs is not None:
        where += f" (every output: {outputs})"
    print("\n".join(summary_lines(validation, where)), flush=True)


# ------------------------------------------------------------------------------------------- chatter
class Captured:
    """What a `chatter` scope captured (empty when nothing was captured)."""

    text: str = ""


@contextlib.contextmanager
def chatter():
    """Capture what third-party code writes to fds 1 and 2 (C++ banners, Minuit, worker processes
    started inside the scope), in a session that is not verbose; elsewhere a no-op."""
    captured = Captured()
    mode = current()
    if mode is None or mode.level == "verbose":
        yield captured
        return
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            for fd in (1, 2):
                os.dup2(sink.fileno(), fd)
            yield captured
        finally:
            for s in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    s.flush()
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")
