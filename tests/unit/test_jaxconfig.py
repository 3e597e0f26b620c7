"""Importing the package changes no JAX setting; its entry points ask for float64 themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from zprime_grad.jaxconfig import call_in_float64, float64, in_float64

IMPORT_ALL = """
import importlib, json, pkgutil, jax
import zprime_grad
names = sorted(m.name for m in pkgutil.walk_packages(zprime_grad.__path__, "zprime_grad."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": len(names), "x64": bool(jax.config.jax_enable_x64),
                  "cache": jax.config.jax_compilation_cache_dir,
                  "dtype": str(jax.numpy.ones(1).dtype)}))
"""


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def test_importing_every_module_sets_no_jax_option():
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL], env=clean_env(), capture_output=True, text=True,
                         check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["modules"] > 50
    assert got == {**got, "x64": False, "cache": None, "dtype": "float32"}


def test_float64_is_asked_for_per_call_and_per_thread():
    with jax.enable_x64(False):
        assert jnp.ones(1).dtype == jnp.float32
        with float64():
            assert jnp.ones(1).dtype == jnp.float64
        assert in_float64(lambda: jnp.ones(1).dtype)() == jnp.float64
        assert call_in_float64(lambda x: (jnp.asarray(x) * 2).dtype, np.ones(1)) == jnp.float64
        assert jnp.ones(1).dtype == jnp.float32  # nothing leaks out
