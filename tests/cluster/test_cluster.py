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
    assert gw.kind == "gateway" and gateway_url(gw.address) == "https://gw.example.org:8000"  # TLS by default
    plain = resolve(config, scheduler="gateway+http://gw.example.org:8000")  # cleartext only when asked for
    assert plain.kind == "gateway" and gateway_url(plain.address) == "http://gw.example.org:8000"
    assert gateway_url("gateway://") is None  # the dask config's gateway.address
    assert gateway_url("https://gw.example.org") == "https://gw.example.org"  # cluster.gateway.address as given
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
    with pytest.raises(UserError, match="cluster.address: gateway\\+http:// needs the gateway's host:port"):
        resolve(config_with(), scheduler="gateway+http://")
    for bad in ("localhost", "127.0.0.1:99999", "0.0.0.0:", "a b:8787"):
        with pytest.raises(ConfigError, match=r"field 'cluster.dashboard': must be \[host\]:port") as err:
            config_with(cluster={"dashboard": bad})
        assert len(str(err.value).splitlines()) == 2  # "invalid configuration" + the one line naming the field
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


def listening(pids) -> set[tuple[int, str, int]]:
    """(pid, ip, port) of every listening inet socket of these processes (psutil: /proc/net)."""
    import psutil

    return {(pid, c.laddr.ip, c.laddr.port) for pid in pids
            for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def cluster_listeners(client, before: set) -> set[tuple[int, str, int]]:
    """The sockets the LocalCluster opened: new ones in this process (scheduler, its HTTP server, the
    nannies) and all of the worker processes'."""
    import os

    workers = set(client.run(os.getpid).values())
    return (listening({os.getpid()}) - before) | listening(workers)


def http_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_local_cluster_connects_checks_versions_and_stops(caplog):
    """Also: everything it starts listens on 127.0.0.1 only, and there is no dashboard by default."""
    import os
    from urllib.parse import urlparse

    settings = resolve(config_with(), workers=1)
    before = listening({os.getpid()})
    with caplog.at_level("INFO", logger="zprime_grad.cluster"), connect(settings) as (client, owned):
        assert len(client.scheduler_info()["workers"]) == 1
        cluster = owned.cluster
        assert client.submit(sum, [1, 2]).result() == 3
        sockets = cluster_listeners(client, before)
        (address, worker), = client.scheduler_info()["workers"].items()
        ports = {port for _, _, port in sockets}
        http = urlparse(cluster.dashboard_link)
        # the scheduler, its HTTP server (/health), the nanny, the worker and its HTTP server
        assert {urlparse(a).port for a in (client.scheduler.address, address, worker["nanny"])} | {http.port} <= ports
        assert len(sockets) == 5, sockets
        assert {ip for _, ip, _ in sockets} == {"127.0.0.1"}, sockets  # never 0.0.0.0 or another interface
        assert http.hostname == "127.0.0.1" and http_status(f"http://127.0.0.1:{http.port}/health") == 200
        assert http_status(cluster.dashboard_link) == 404  # no dashboard unless cluster.dashboard asks
    assert client.status == "closed" and cluster.status.name == "closed"
    assert "LocalCluster (1 workers, 127.0.0.1)" in caplog.text


def test_local_cluster_dashboard_when_configured_and_on_127_0_0_1_for_a_bare_port():
    """cluster.dashboard ':0' (a port alone): the dashboard is served, on 127.0.0.1, not on every
    interface (distributed's own reading of ':port')."""
    import os
    from urllib.parse import urlparse

    settings = resolve(config_with(cluster={"dashboard": ":0"}), workers=1)
    before = listening({os.getpid()})
    with connect(settings) as (client, owned):
        sockets = cluster_listeners(client, before)
        link = urlparse(owned.cluster.dashboard_link)
        assert link.hostname == "127.0.0.1" and link.port in {port for _, _, port in sockets}
        assert {ip for _, ip, _ in sockets} == {"127.0.0.1"}, sockets
        assert http_status(owned.cluster.dashboard_link) == 200


class Recorder:
    """A TCP listener on 127.0.0.1 that records what a client sends to a gateway (or to anyone between
    it and the gateway): plain HTTP requests get a 401 Basic challenge (a real gateway's answer, after
    which the client sends its credentials), anything else is recorded and hung up on."""

    def __init__(self):
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port, self.received, self.stop = self.sock.getsockname()[1], [], threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                for _ in range(3):  # the request, the retry with credentials
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        break
                    self.received.append(data)
                    if not data.startswith((b"GET ", b"POST ")):
                        break
                    conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\n"
                                 b"Content-Length: 0\r\n\r\n")

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("spelling", ["gateway", "gateway+http"])
def test_gateway_address_sends_credentials_only_over_tls_unless_http_is_asked_for(spelling, monkeypatch):
    """A real dask-gateway client (basic auth, password from $DASK_GATEWAY_PASSWORD) pointed at a
    recording listener: ``gateway://`` opens with a TLS handshake and the password never crosses the
    wire in cleartext; ``gateway+http://`` sends it as plain HTTP, as asked for."""
    import base64

    from zprime_grad.cluster import open_cluster

    password = "canary-9f3c2a"
    monkeypatch.setenv("DASK_GATEWAY_PASSWORD", password)
    recorder = Recorder()
    try:
        settings = resolve(config_with(cluster={"kind": "gateway", "timeout_s": 10,
                                                "gateway": {"auth": "basic", "username": "zprime-test"}}),
                           scheduler=f"{spelling}://127.0.0.1:{recorder.port}")
        with pytest.raises(UserError, match="cannot use dask-gateway") as err:
            open_cluster(settings)
    finally:
        recorder.close()
    assert recorder.received, "the client never connected"
    sent = b"".join(recorder.received)
    credentials = base64.b64encode(f"zprime-test:{password}".encode())
    if spelling == "gateway":
        assert all(first[:1] == b"\x16" for first in recorder.received if first)  # TLS handshake records only
        assert credentials not in sent and password.encode() not in sent and b"HTTP/1.1" not in sent
    else:
        assert sent.startswith(b"GET /api/") and b"Authorization: Basic " + credentials in sent
    scheme = "https" if spelling == "gateway" else "http"
    assert f"dask-gateway {scheme}://127.0.0.1:{recorder.port}:" in str(err.value)
    assert password not in str(err.value)


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
