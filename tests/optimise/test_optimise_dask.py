"""The optimiser on a real Dask cluster (2 worker processes on 127.0.0.1): the same numbers as in one
process, only layout-sized arrays reach the driver, no recompilation, and a SIGKILLed worker costs a
recomputation, not the result."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import numpy as np
import pytest
from distributed import Future

from tests.optimise.test_optimise import EPOCHS, THETA_OFF, skim_columns
from zprime_grad.chunks import DaskChunks, LocalChunks, chunk_paths, load_chunk
from zprime_grad.optimise.contribution import forward_part
from zprime_grad.optimise.driver import Evaluator, build_problem, optimise
from zprime_grad.config import override
from zprime_grad.optimise.reference import hold_everything, reference_evaluation


@pytest.fixture(scope="module")
def columns(generated, tmp_path_factory):
    return skim_columns(generated, tmp_path_factory)


@pytest.fixture(scope="module")
def config(generated):
    data = generated.config.model_dump(mode="json", exclude={"source"})
    data["optimise"]["relaxation"]["anneal_epochs"] = EPOCHS
    data["optimise"]["epochs"] = EPOCHS
    return type(generated.config).model_validate({**data, "source": "tests/test_optimise_dask.py"})


@pytest.fixture(scope="module")
def backends(config, columns, client):
    paths = chunk_paths(columns)
    workers = sorted(client.scheduler_info()["workers"])  # round robin: the chunks sit on both workers, even
    futures = [client.submit(load_chunk, p, pure=False, workers=[workers[i % len(workers)]])  # when one is busy
               for i, p in enumerate(paths)]
    dask = DaskChunks(client, futures, fan_in=config.optimise.fan_in)
    local = LocalChunks.from_directory(columns, fan_in=config.optimise.fan_in)
    yield dask, local
    dask.close()


@pytest.fixture(scope="module")
def local_result(config, columns, tmp_path_factory):
    out = tmp_path_factory.mktemp("dask_local_ref")
    return out, optimise(config, LocalChunks.from_directory(columns), out, progress=False)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_two_workers_give_the_single_process_gradient(config, backends, mode):
    dask, local = backends
    assert len({w for ws in dask.client.who_has(dask.futures).values() for w in ws}) == 2  # chunks on both
    # Reverse mode's per-chunk vjp sums over events in XLA reductions whose order follows the process's CPU
    # count (a 65536-event chunk differs in the last bits between 1 and 2 visible cores, float32 and float64
    # alike); with the float32 kernel that shows already on these small chunks. Forward mode sums through
    # GEMMs, bit-identical anywhere: it is the default (auto: up to 32 parameters) and is checked in float32.
    if mode == "reverse":
        config = override(config, optimise={"precision": "float64"})
    problem = dataclasses.replace(build_problem(config, dask, gradient=mode), mode=mode)
    theta, relax = problem.theta0 + THETA_OFF, (12.0, 0.25)
    ev = Evaluator(dask, problem)(theta, relax)
    value, grad, valid = reference_evaluation(hold_everything(local.chunks, problem.layout), theta, relax,
                                              problem.objective)
    assert ev.value == pytest.approx(value, rel=1e-6) and ev.valid == pytest.approx(valid, rel=1e-6)
    assert np.allclose(ev.grad, grad, rtol=1e-6, atol=1e-6 * np.abs(grad).max())
    same = Evaluator(local, problem)(theta, relax)  # the same reduction tree: bit-identical
    assert same.value == ev.value and np.array_equal(same.grad, ev.grad)


def test_only_layout_sized_arrays_reach_the_driver(config, backends, client):
    dask, _ = backends
    assert all(isinstance(f, Future) for f in dask.futures)
    problem = build_problem(config, dask)
    half = DaskChunks(client, dask.futures[: len(dask.futures) // 2], owns_futures=False)
    sizes = []
    for backend in (dask, half):
        before = backend.bytes_received
        r = backend.map_reduce(forward_part, layout=problem.layout, theta=problem.theta0, relax=(10.0, 0.3))
        assert {k: v.shape for k, v in r.items()} == {"train": problem.layout.shape, "valid": problem.layout.shape,
                                                      "jac": (*problem.layout.shape, 5)}
        assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in r.values())
        sizes.append(backend.bytes_received - before)
    n_events = [sum(d["n_events"] for d in b.descriptions()) for b in (dask, half)]
    assert n_events[0] > n_events[1] and sizes[0] == sizes[1] < 100_000


def test_dask_run_equals_local_run_and_does_not_recompile(config, columns, client, local_result, tmp_path):
    from zprime_grad.optimise.contribution import trace_counts

    traces = []
    out = tmp_path / "dask"
    with DaskChunks.from_directory(client, columns) as chunks:
        optimise(config, chunks, out, progress=False, on_epoch=lambda s: traces.append(client.run(trace_counts)))
    got = json.loads((out / "optimisation.json").read_text())["epochs"]
    want = json.loads((local_result[0] / "optimisation.json").read_text())["epochs"]
    for g, w in zip(got, want, strict=True):
        assert g["z_train"] == pytest.approx(w["z_train"], rel=1e-6) and g["z_valid"] == pytest.approx(w["z_valid"], rel=1e-6)
        assert np.allclose(g["grad"], w["grad"], rtol=1e-6, atol=0)
    assert all(t == traces[0] for t in traces) and all(v for v in traces[0].values())


def test_analysis_optimise_on_chunks_skimmed_resident_on_the_workers(config, generated, client, local_result,
                                                                     tmp_path):
    """A fresh Dask skim whose chunks never leave the workers, optimised in place (other chunking)."""
    from zprime_grad.analysis import Analysis

    with Analysis(config, client=client) as analysis:
        resident = analysis.skim(generated.fileset, chunksize=400)
        assert isinstance(resident, DaskChunks)
        analysis.optimise(resident, tmp_path, epochs=2, progress=False)
        assert len(resident.futures) > 0  # the session still holds its chunks
    assert resident.futures == [] and client.status == "running"  # released with the session; client left open
    got = json.loads((tmp_path / "optimisation.json").read_text())["epochs"]
    want = json.loads((local_result[0] / "optimisation.json").read_text())["epochs"][:2]
    assert json.loads((tmp_path / "optimisation.json").read_text())["backend"] == "dask"
    for g, w in zip(got, want, strict=True):  # other chunk boundaries: another float32 summation order
        assert g["z_train"] == pytest.approx(w["z_train"], rel=1e-6)
        assert np.allclose(g["grad"], w["grad"], rtol=1e-5, atol=1e-9)


def test_a_killed_worker_costs_a_recomputation_not_the_result(config, columns, client, local_result, tmp_path):
    killed = []

    def kill_a_worker(state):
        if state.epoch == 2 and not killed:  # after two epochs: chunks resident, kernels compiled
            pids = client.run(os.getpid)
            address = sorted(pids)[0]
            os.kill(pids[address], signal.SIGKILL)
            killed.append(address)

    out = tmp_path / "killed"
    with DaskChunks.from_directory(client, columns) as chunks:
        result = optimise(config, chunks, out, progress=False, on_epoch=kill_a_worker)
    assert killed and len(json.loads((out / "optimisation.json").read_text())["epochs"]) == EPOCHS
    assert killed[0] not in client.scheduler_info()["workers"]  # really gone (the nanny started a new one)
    want = local_result[1]
    assert np.allclose([p["value"] for p in result["parameters"]], [p["value"] for p in want["parameters"]],
                       rtol=1e-9, atol=0)
    assert result["z_train_final"] == pytest.approx(want["z_train_final"], rel=1e-9)
