"""`zprime_grad.cluster` without a remote cluster: which settings a config and ``--scheduler`` give,
the errors that name a config field, the version comparison, and a real LocalCluster connection."""

from __future__ import annotations

import pytest

from tests.conftest import small_config
from zprime_grad.cluster import (connect, gateway_url, remote, resolve, security, version_mismatches,
                                 worker_versions)
from zprime_grad.config import ConfigError, parse_config
from zprime_grad.errors import UserError


def config_with(**sections):
    data = small_config().model_dump(mode="json", exclude={"source"})
    for name, values in sections.items():
        data[name] = {**data[name], **values}
    return parse_config(data, "tests/test_cluster.py")


def test_default_is_a_local_cluster_and_scheduler_schemes_pick_the_kind():
    config = config_with()
    assert resolve(config).kind == "local" and not remote(config)
    assert resolve(config, workers=3).workers == 3
    tcp = resolve(config, scheduler="tcp://10.0.0.1:8786")
    assert (tcp.kind, tcp.address) == ("scheduler", "tcp://10.0.0.1:8786") and remote(config, "tcp://h:1")
    assert resolve(config, scheduler="tls://h:8786").kind == "scheduler"
    gw = resolve(config, scheduler="gateway://gw.example.org:8000")
    assert gw.kind == "gateway" and gateway_url(gw.address) == "http://gw.example.org:8000"
    assert gateway_url("gateway://") is None  # the dask config's gateway.address
    assert resolve(config_with(cluster={"kind": "gateway"})).kind == "gateway"


def test_command_line_beats_the_cluster_section_and_the_older_fields_are_gone():
    config = config_with(cluster={"kind": "scheduler", "address": "tls://facility:8786"})
    assert resolve(config).address == "tls://facility:8786"
    assert resolve(config, scheduler="tcp://cli:8786").address == "tcp://cli:8786"
    assert resolve(config, workers=5).workers == 5
    # every cluster setting lives in `cluster:`; the per-stage spellings are refused, by name
    for section, field in (("optimise", "scheduler"), ("optimise", "tls"), ("optimise", "workers"),
                           ("skim", "scheduler")):
        with pytest.raises(ConfigError, match=f"unknown field '{section}.{field}'"):
            config_with(**{section: {field: "tcp://old:8786"}})


def test_bad_cluster_settings_name_the_field(tmp_path):
    with pytest.raises(UserError, match="cluster.address"):
        resolve(config_with(cluster={"kind": "scheduler"}))
    with pytest.raises(UserError, match="cluster.address: 'http://x:1' is not a scheduler address"):
        resolve(config_with(), scheduler="http://x:1")
    with pytest.raises(ConfigError, match="cluster.kind"):
        config_with(cluster={"kind": "slurm"})
    with pytest.raises(ConfigError, match="unknown field 'cluster.gateway.passwd'"):
        config_with(cluster={"gateway": {"passwd": "secret"}})
    settings = resolve(config_with(), scheduler="tls://h:8786")
    with pytest.raises(UserError, match="cluster.tls.ca_file"):
        security(settings)
    missing = settings.model_copy(update={"tls": settings.tls.model_copy(
        update={"ca_file": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem")})})
    with pytest.raises(UserError, match="cluster.tls.ca_file: file not found") as err:
        security(missing)
    assert str(tmp_path) not in str(err.value)  # paths stay out of messages and logs


def test_version_mismatches_name_worker_package_and_both_versions():
    driver = worker_versions()
    assert set(driver) >= {"python", "zprime_grad", "jax", "jaxlib", "coffea", "dask", "distributed", "awkward"}
    workers = {"tcp://a:1": dict(driver), "tcp://b:2": {**driver, "jax": "0.4.0"}}
    assert version_mismatches(driver, workers, {"tcp://b:2": "gpu-7"}) == [
        f"worker gpu-7 (tcp://b:2): jax 0.4.0 (driver: {driver['jax']})"]
    assert version_mismatches(driver, {"tcp://a:1": {}})[0].startswith("worker tcp://a:1: python not installed")


def test_local_cluster_connects_checks_versions_and_stops(caplog):
    settings = resolve(config_with(), workers=1)
    with caplog.at_level("INFO", logger="zprime_grad.cluster"), connect(settings) as (client, owned):
        assert len(client.scheduler_info()["workers"]) == 1
        cluster = owned.cluster
        assert client.submit(sum, [1, 2]).result() == 3
    assert client.status == "closed" and cluster.status.name == "closed"
    assert "LocalCluster (1 workers, 127.0.0.1)" in caplog.text


def test_a_worker_joining_later_with_other_versions_is_refused_before_it_gets_a_task(tmp_path, caplog):
    """A real LocalCluster (2 workers) checked at connect; then a third worker joins as a scale-up
    would (``dask worker`` with its nanny, pointed at the scheduler), its coffea reporting 0.0.1 (a
    fake dist-info first on its PYTHONPATH). It is refused when it registers: no task of a stream
    submitted meanwhile runs there, the worker and its nanny exit (not restarted), its log and the
    driver's name the package and both versions."""
    import os
    import subprocess
    import sys
    import time

    from zprime_grad.cluster import VERSION_TOPIC

    site = tmp_path / "stale-site" / "coffea-0.0.1.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text("Metadata-Version: 2.1\nName: coffea\nVersion: 0.0.1\n")
    want = f"coffea 0.0.1 (driver: {worker_versions()['coffea']})"

    def where(i):
        from distributed import get_worker

        time.sleep(0.02)
        return get_worker().name

    settings = resolve(config_with(), workers=2)
    with caplog.at_level("WARNING", logger="zprime_grad.cluster"), connect(settings) as (client, _):
        stale = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", client.scheduler.address, "--name", "stale",
             "--nthreads", "1", "--no-dashboard"], env={**os.environ, "PYTHONPATH": str(site.parent)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            futures, deadline = [], time.monotonic() + 25
            while not client.get_events(VERSION_TOPIC) and time.monotonic() < deadline:
                if sum(not f.done() for f in futures) < 20:  # a backlog: a joining worker would get some
                    futures += client.map(where, range(len(futures), len(futures) + 20), pure=False)
                time.sleep(0.05)
            futures += client.map(where, range(len(futures), len(futures) + 20), pure=False)
            events = client.get_events(VERSION_TOPIC)
            assert events, "the stale worker never registered"
            assert set(client.gather(futures)) == {0, 1}  # every task ran on the checked workers
            log = stale.communicate(timeout=20)[1]
        finally:
            stale.kill()
        assert stale.returncode is not None
        refused = events[0][1]
        assert refused["name"] == "stale" and list(refused["problems"]) == [f"worker stale ({refused['worker']}): {want}"]
        assert "stale" not in {w["name"] for w in client.scheduler_info()["workers"].values()}
    assert "zprime_grad refuses this worker" in log and want in log
    assert any(want in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)  # on the driver
