"""Shared fixtures: one small generated dataset per test session (real Pythia, real files)."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import jax
import pytest

from zprime_grad.config import Config, load_config, parse_config
from zprime_grad.jaxconfig import use_compile_cache

# The package sets no JAX option at import (tests/unit/test_jaxconfig.py): its entry points ask for float64
# themselves. The tests call the pure functions (soft, stats, ...) directly and check them in float64, so
# this process asks for it globally; Dask workers started here do not (they run what the backends send
# them in float64 contexts, and the backend tests compare them bit by bit with this process). The
# compilation cache is the one `zprime-grad` uses.
jax.config.update("jax_enable_x64", True)
use_compile_cache()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

SMALL_EVENTS = 300  # per MC sample (slices scale it)
SMALL_LUMI_PB = 100.0  # keeps the pseudo-data small; physics checks use the MC


def small_config(**generate_overrides) -> Config:
    """The default config with a small luminosity and dataset, no black-box scan, no plots and 20 bootstrap
    replicas, as the tests use it (tests/scan and the pipeline tests switch the scan on; tests/validate and
    the pipeline the plots)."""
    data = load_config().model_dump(mode="json", exclude={"source"})
    data["analysis"]["lumi_pb"] = SMALL_LUMI_PB
    data["scan"]["methods"] = []
    data["validation"].update({"plots": False, "bootstrap": 20})
    data["generate"].update({"events": SMALL_EVENTS, "events_per_file": 400, "batch_size": 200, **generate_overrides})
    return parse_config(data, "tests/conftest.py:small_config")


@dataclass(frozen=True)
class GeneratedDataset:
    config: Config
    out: Path
    fileset: Path


@contextmanager
def shared_directory(tmp_path_factory, name: str) -> Iterator[Path]:
    """A directory made once per test session, shared by the pytest-xdist workers: the first one to get
    the lock builds it, the others wait and reuse it (whatever is built there must reuse what it finds)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's directory, above every worker's own
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> GeneratedDataset:
    """Generated once per `make test` (the xdist workers share it: generate_dataset reuses its files)."""
    from zprime_grad.generate import generate_dataset

    config = small_config()
    with shared_directory(tmp_path_factory, "generated") as out:
        fileset = generate_dataset(config, out, progress=False)
    return GeneratedDataset(config, out, fileset)


@pytest.fixture(scope="session")
def generated_fileset(generated) -> Path:
    """Path of a coffea fileset.json over a few hundred generated events per sample."""
    return generated.fileset


@pytest.fixture(scope="module")
def client():
    """A real 2-worker LocalCluster on 127.0.0.1 (one per test module: some tests kill a worker). Work
    stealing is off so that a chunk stays on the one worker that made it (on a loaded machine a stolen
    task copies its chunk, and a killed worker then loses nothing to recompute)."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.work-stealing": False}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not next to this checkout")
    return SHARED_DATA


# The longest test files (seconds of one run of `make test` on 2 cores, longest first). After the unit
# layer they start first, so the pytest-xdist workers (`--dist loadfile --no-loadscope-reorder`: files in
# this order) finish together instead of one waiting on a long file that started last.
LONGEST = ("stages/test_notebook.py", "cluster/test_cluster_processes.py", "validate/test_validate.py",
           "optimise/test_optimise.py", "generate/test_generate.py", "stages/test_pipeline.py",
           "processors/test_agc_ttbar.py", "optimise/test_optimise_dask.py", "learn/test_learn.py")


def pytest_collection_modifyitems(config, items):
    """The fast unit layer (tests/unit: pure modules, no generated data, no cluster) runs first, then the
    longest files, then the rest in collection order."""
    here = Path(__file__).parent

    def rank(item):
        path = Path(str(item.path))
        if path.is_relative_to(here / "unit"):
            return -1
        relative = path.relative_to(here).as_posix() if path.is_relative_to(here) else ""
        return LONGEST.index(relative) if relative in LONGEST else len(LONGEST)

    items.sort(key=rank)
