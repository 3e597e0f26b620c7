"""JAX settings the package asks for explicitly, never at import: float64 where it is needed, and an
opt-in persistent compilation cache.

* `float64()` (a context) and `in_float64` (a decorator) switch ``jax_enable_x64`` on for one call, in
  this thread only (``jax.enable_x64``): the stage entry points (optimise, validate, scan, train, toys,
  the `Analysis` session) and every function the chunk backends run next to the chunks use it, so the
  driver's templates, fits and gradients are float64 while a notebook's own JAX code keeps its settings.
  The pure functions (``soft``, ``selection``, ``stats``) follow the caller's precision.
* `use_compile_cache()` points jax's persistent compilation cache at ``$JAX_COMPILATION_CACHE_DIR`` or
  ``~/.cache/zprime_grad/jax`` and exports the directory to child processes (local Dask workers): the
  driver's objective (a profile fit inside ``value_and_grad``) takes 10-20 s to compile, and a later
  process reuses it. The ``zprime-grad`` command calls it (``ZPRIME_GRAD_JAX_CACHE=0`` switches it off);
  a library user opts in by calling it. jax keys entries by its version, the backend and the program, so
  a stale entry is never used.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

# jax is imported when first needed, not with this module: `zprime-grad --help` imports no heavy library


def float64():
    """A context in which JAX computes in float64 (this thread only)."""
    import jax

    return jax.enable_x64(True)


def in_float64(func):
    """``func`` run inside `float64()`: for the package's entry points."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with float64():
            return func(*args, **kwargs)

    return wrapper


def call_in_float64(func, *args, **kwargs):
    """``func(*args, **kwargs)`` inside `float64()` (picklable: what a Dask task runs)."""
    with float64():
        return func(*args, **kwargs)


def compile_cache_dir() -> str | None:
    """The persistent cache's directory (created), or None: switched off or not writable."""
    if os.environ.get("ZPRIME_GRAD_JAX_CACHE", "1") == "0":
        return None
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(Path.home() / ".cache" / "zprime_grad" / "jax")
    try:
        Path(cache).mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache
        return None
    return cache


def use_compile_cache() -> str | None:
    """Turn on jax's persistent compilation cache for this process and its children; returns the
    directory (None: switched off, or not writable)."""
    cache = compile_cache_dir()
    if cache is None:
        return None
    import jax

    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache  # local Dask workers started from here read it
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1.0")
    return cache
