"""The skim on all three executors: identical columns; on Dask the columns stay on the workers."""

from __future__ import annotations

import json
import os
import pickle
import signal
import time

import numpy as np
import pytest

from zprime_grad.analysis import Analysis
from zprime_grad.columns import ColumnChunk, concatenate
from zprime_grad.skim.pipeline import run_skim, skim_options
from zprime_grad.skim.resident import ResidentChunks, chunk_digest, chunk_nbytes
from zprime_grad.skim.toy import write_toy_nanoaod

CHUNKSIZE = 1500


@pytest.fixture(scope="module")
def toy_fileset(tmp_path_factory):
    d = tmp_path_factory.mktemp("skim")
    fileset = {
        "ttbar": {"files": {str(write_toy_nanoaod(d / "tt1.root", 3000, seed=11)): "Events",
                            str(write_toy_nanoaod(d / "tt2.root", 2000, seed=12, first_event=10**6)): "Events"},
                  "metadata": {"process": "ttbar", "xsec": 831.76, "is_data": False}},
        "data": {"files": {str(write_toy_nanoaod(d / "data.root", 2000, seed=13, is_data=True)): "Events"},
                 "metadata": {"process": "data", "is_data": True}},
    }
    path = d / "fileset.json"
    path.write_text(json.dumps(fileset))
    return path


@pytest.fixture(scope="module")
def analysis():
    return Analysis.from_yaml()


def skim(analysis, fileset, executor, client=None, **options):
    """The skim library on one executor (a Session does this in a run)."""
    config = analysis.config
    return run_skim(config, fileset, skim_options(config, executor=executor, chunksize=CHUNKSIZE, **options),
                    client=client)


def assert_same_chunks(a: list[ColumnChunk], b: list[ColumnChunk]):
    a, b = sorted(a, key=lambda c: c.key), sorted(b, key=lambda c: c.key)
    assert [c.key for c in a] == [c.key for c in b] and len(a) > 1
    for x, y in zip(a, b):
        assert x.meta() == y.meta()
        assert x.arrays().keys() == y.arrays().keys()
        for k, v in x.arrays().items():
            assert np.array_equal(v, y.arrays()[k]), (x.key, k)


def test_iterative_futures_and_dask_give_identical_columns(analysis, toy_fileset, client):
    iterative = skim(analysis, toy_fileset, "iterative")
    futures = skim(analysis, toy_fileset, "futures", workers=2)
    resident = skim(analysis, toy_fileset, "dask", client)
    gathered = client.gather(resident.futures)  # only the test pulls the columns back
    resident.release()
    assert_same_chunks(iterative.chunks, futures.chunks)
    assert_same_chunks(iterative.chunks, gathered)
    assert sum(c.n_events for c in iterative.chunks) > 100
    # the same events in the same order, with data weights of one
    cols = concatenate(iterative.chunks)
    assert len(np.unique(cols["id.event"][cols["weight.nominal"] != 1])) == (cols["weight.nominal"] != 1).sum()


def test_dask_handle_holds_only_futures_and_small_summaries(analysis, toy_fileset, client):
    resident = skim(analysis, toy_fileset, "dask", client)
    try:
        assert isinstance(resident, ResidentChunks) and len(resident) == len(resident.summaries) >= 4
        placement = resident.who_has()
        workers = set(client.scheduler_info()["workers"])
        assert all(len(w) >= 1 and set(w) <= workers for w in placement.values())
        assert len(placement) == len(resident)
        resident_bytes = resident.resident_bytes()
        summed = sum(s["nbytes"] for s in resident.summaries)
        assert resident_bytes >= summed > 1_000_000
        # what the driver holds: futures and per-chunk summaries, orders of magnitude smaller
        assert len(pickle.dumps(resident.summaries)) < summed / 100
        assert all(not isinstance(v, (np.ndarray, ColumnChunk, list)) or k in ("futures", "summaries", "bad_files")
                   for k, v in vars(resident).items())
        assert all(f.status == "finished" and f.type is ColumnChunk for f in resident.futures)
        with pytest.raises(AttributeError, match="stay on the workers"):
            resident.chunks
        # work goes to the data: a function mapped over the chunks runs where they are
        sizes = client.gather(resident.map(chunk_nbytes))
        assert sum(sizes) == summed
    finally:
        resident.release()
    assert resident.futures == []  # releasing the handle lets the workers forget the chunks


def test_skim_counts_match_the_hard_selection_of_the_columns(analysis, toy_fileset):
    result = skim(analysis, toy_fileset, "iterative")
    proc = analysis.processor()
    params = proc.initial_params()
    for ch in proc.channels:
        total = sum(s["counts"][ch.name]["raw"] for s in result.summaries)
        direct = sum(int(ch.hard_mask(c.columns, params).sum()) for c in result.chunks)
        assert total == direct
    signal = sum(s["counts"]["signal"]["raw"] for s in result.summaries)
    assert signal > 0



def test_cli_on_an_existing_scheduler_leaves_it_running(toy_fileset, client, tmp_path, capsys):
    from zprime_grad.cli import main

    address = client.scheduler.address
    rc = main(["skim", "--fileset", str(toy_fileset), "--executor", "dask", "--scheduler", address,
               "--chunksize", str(CHUNKSIZE), "--out", str(tmp_path / "S")])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "S" / "skim.json").read_text())
    assert report["executor"] == "dask" and report["datasets"]["ttbar"]["channels"]["signal"]["raw"] > 0
    assert len(client.scheduler_info()["workers"]) == 2  # the CLI did not shut down a cluster it did not start
    assert not client.who_has()  # and released every chunk it made

def test_a_lost_worker_costs_a_recomputation_not_the_run(analysis, toy_fileset, client):
    """Kill the worker process holding a chunk: the chunk is recomputed from its lineage, identical."""
    resident = skim(analysis, toy_fileset, "dask", client)
    try:
        before = client.gather(resident.map(chunk_digest))
        victim = sorted(resident.who_has().values())[0][0]
        lost = [k for k, w in resident.who_has().items() if w == [victim]]
        assert lost
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)  # the nanny starts a fresh worker; the chunk's memory is gone
        deadline = time.monotonic() + 60
        while victim in client.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert victim not in client.scheduler_info()["workers"]
        after = client.gather(resident.map(chunk_digest))
        assert after == before
        assert all(f.status == "finished" for f in resident.futures)
    finally:
        resident.release()
