"""``zprime-grad run`` on real multi-process clusters on 127.0.0.1, compared with the local backend.

- a ``dask scheduler`` and two ``dask worker`` processes started from their command lines with TLS
  certificates made here: the run matches the local run; clients without the right certificate are refused;
- a ``dask-gateway-server`` (UnsafeLocalBackend) from a config written here: the run through the gateway;
- workers that cannot see the driver's output directory (each in its own mount namespace with an empty
  tmpfs over it), one of them SIGKILLed after the first epoch: the run matches the local run;
- a worker that imports another installation of zprime_grad (an older version on its PYTHONPATH, as
  in a stale image) makes the connection fail with a message naming the worker, package and versions.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.cluster.support import (BIN, Certificates, Processes, hiding, kill_gateway_clusters, make_certificates,
                                   start_gateway, start_scheduler, start_worker, wait_for_workers)
from zprime_grad import __version__
from zprime_grad.cli import main
from zprime_grad.cluster import open_cluster, resolve
from zprime_grad.config import load_config
from zprime_grad.errors import UserError

pytestmark = pytest.mark.slow
EPOCHS = 2
SRC = Path(__file__).resolve().parents[2] / "src" / "zprime_grad"


def write_config(generated, path: Path, **cluster) -> Path:
    data = generated.config.model_dump(mode="json", exclude={"source"})
    data["optimise"]["epochs"] = EPOCHS
    data["validation"]["plots"] = False  # the comparison is of numbers; the plots are tested elsewhere
    data["cluster"] = {**data["cluster"], **cluster}
    path.write_text(yaml.safe_dump(data))
    load_config(path)  # valid
    return path


def zprime_grad_run(config: Path, out: Path, fileset: Path, *extra: str, timeout: float = 600):
    """The installed command line, as a user runs it."""
    cmd = [str(BIN / "zprime-grad"), "run", str(config), "--fileset", str(fileset), "--out", str(out), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc, time.perf_counter() - start


def assert_same_results(out: Path, reference: Path) -> None:
    """validation.json and params.json agree with the local-backend run to float tolerance."""
    got, want = (json.loads((d / "validation.json").read_text()) for d in (out, reference))
    for label in ("baseline", "optimised"):
        for key in ("Z_hard", "Z_hard_optimiser_model", "p0_hard"):
            np.testing.assert_allclose(got[label][key], want[label][key], rtol=1e-7, err_msg=f"{label}.{key}")
        assert got[label]["params"].keys() == want[label]["params"].keys()
        for name, value in want[label]["params"].items():
            np.testing.assert_allclose(got[label]["params"][name], value, rtol=1e-9, atol=1e-12, err_msg=name)
        for ch, procs in want[label]["yields"].items():
            for p, y in procs.items():
                np.testing.assert_allclose(got[label]["yields"][ch][p], y, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["optimised"]["Z_soft"], want["optimised"]["Z_soft"], rtol=1e-7)
    gp, wp = (json.loads((d / "optimise/params.json").read_text()) for d in (out, reference))
    assert [p["name"] for p in gp["parameters"]] == [p["name"] for p in wp["parameters"]]
    np.testing.assert_allclose([p["value"] for p in gp["parameters"]], [p["value"] for p in wp["parameters"]],
                               rtol=1e-9, atol=1e-12)
    # the work really ran on the cluster, and the reference did not
    assert json.loads((out / "skim/skim.json").read_text())["executor"] == "dask"
    assert json.loads((out / "optimise/optimisation.json").read_text())["backend"] == "dask"
    assert json.loads((reference / "optimise/optimisation.json").read_text())["backend"] == "local"


@pytest.fixture(scope="module")
def local_run(generated, tmp_path_factory) -> Path:
    """The reference: the same config and dataset on the local backend (futures skim, in-process optimiser)."""
    tmp = tmp_path_factory.mktemp("local_run")
    config = write_config(generated, tmp / "local.yaml")
    out = tmp / "out"
    assert main(["run", str(config), "--fileset", str(generated.fileset), "--out", str(out), "--backend", "local"]) == 0
    return out


# ----------------------------------------------------------------------------------------- TLS
def handshake_refused(address: str, certs: Certificates) -> bool:
    """A plain TLS client that trusts the scheduler's CA but shows no certificate of its own."""
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(certs.ca))  # verifies the scheduler: no false alarm
    try:
        with socket.create_connection((host, int(port)), timeout=20) as raw, \
                context.wrap_socket(raw, server_hostname=host) as conn:
            return conn.recv(1) == b""  # closed without a byte
    except ssl.SSLCertVerificationError:
        raise
    except (ssl.SSLError, ConnectionResetError):
        return True  # TLS 1.3: alert "certificate required" on the first read


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """``dask scheduler --protocol tls`` + two ``dask worker`` processes, mutual TLS with a fresh CA."""
    tmp = tmp_path_factory.mktemp("tls_cluster")
    certs = make_certificates(tmp / "certs")
    procs = Processes(tmp / "logs")
    try:
        address = start_scheduler(procs, "tls", certs)
        for i in range(2):
            start_worker(procs, f"worker-{i}", address, certs)
        wait_for_workers(address, 2, certs)
        yield address, certs
    finally:
        procs.stop()


def test_run_through_tls_scheduler_matches_local_backend(generated, tls_cluster, local_run, tmp_path):
    address, certs = tls_cluster
    config = write_config(generated, tmp_path / "facility_tls.yaml", kind="scheduler", address=None,
                          tls={"ca_file": str(certs.ca), "cert": str(certs.client_cert), "key": str(certs.client_key)})
    out = tmp_path / "out"
    proc, wall = zprime_grad_run(config, out, generated.fileset, "--scheduler", address, "--epochs", str(EPOCHS))
    assert_same_results(out, local_run)
    # the address is logged, the certificate paths never are
    assert address in proc.stderr
    assert str(certs.ca.parent) not in proc.stderr + proc.stdout
    print(f"tls run: {wall:.1f} s")


def test_tls_scheduler_refuses_clients_without_its_certificate(generated, tls_cluster, tmp_path, capsys):
    from distributed import Client
    from distributed.security import Security

    address, certs = tls_cluster
    # a TLS handshake without a client certificate: the scheduler (mutual TLS) drops it
    assert handshake_refused(address, certs)
    # a certificate from another CA
    other: Certificates = make_certificates(tmp_path / "other")
    with pytest.raises((OSError, TimeoutError)):
        Client(address, security=Security(tls_ca_file=str(certs.ca), tls_client_cert=str(other.client_cert),
                                          tls_client_key=str(other.client_key), require_encryption=True),
               timeout="5s")
    # plain TCP to the TLS port
    with pytest.raises((OSError, TimeoutError)):
        Client(address.replace("tls://", "tcp://"), timeout="5s")
    # through the package: the wrong certificate is a one-line error naming the scheduler ...
    config = write_config(generated, tmp_path / "wrong.yaml", timeout_s=5,
                          tls={"ca_file": str(certs.ca), "cert": str(other.client_cert), "key": str(other.client_key)})
    with pytest.raises(UserError, match=f"cannot connect to Dask scheduler {address}"):
        open_cluster(resolve(load_config(config), scheduler=address))
    # ... and a missing one names the config field, from the command line with exit status 2
    config = write_config(generated, tmp_path / "nocert.yaml", tls={"ca_file": str(certs.ca), "cert": None, "key": None})
    capsys.readouterr()
    assert main(["optimise", str(config), "--columns", str(tmp_path), "--scheduler", address,
                 "--out", str(tmp_path / "o")]) == 2
    stderr = capsys.readouterr().err
    assert "cluster.tls.cert" in stderr and "Traceback" not in stderr


# ----------------------------------------------------------------------------------------- versions
def test_worker_with_another_zprime_grad_version_is_refused(tmp_path, capsys):
    """A worker whose PYTHONPATH holds an older copy of the package (as a stale image would)."""
    stale = tmp_path / "stale"
    shutil.copytree(SRC, stale / "zprime_grad", ignore=shutil.ignore_patterns("__pycache__"))
    init = stale / "zprime_grad" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{__version__}"', '__version__ = "0.0.0+stale"'))
    assert "0.0.0+stale" in init.read_text()
    procs = Processes(tmp_path / "logs")
    try:
        address = start_scheduler(procs, "tcp")
        start_worker(procs, "good", address)
        start_worker(procs, "stale", address, env={"PYTHONPATH": str(stale)})
        wait_for_workers(address, 2)
        with pytest.raises(UserError) as err:
            open_cluster(resolve(None, scheduler=address, workers=2))
        message = str(err.value)
        assert f"zprime_grad 0.0.0+stale (driver: {__version__})" in message
        assert "worker stale (tcp://127.0.0.1:" in message and "PipInstall" in message and "deploy/" in message
        assert message.count("zprime_grad 0.0.0+stale") == 1  # only the stale worker is named
        # the same from the command line: exit status 2, one line, no traceback
        capsys.readouterr()
        assert main(["run", "--fileset", str(tmp_path / "unused.json"), "--scheduler", address,
                     "--out", str(tmp_path / "out")]) == 2
        stderr = capsys.readouterr().err
        assert "0.0.0+stale" in stderr and "Traceback" not in stderr
    finally:
        procs.stop()


# ----------------------------------------------------------------------------------------- gateway
@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway")
    procs = Processes(tmp / "logs")
    try:
        yield start_gateway(procs, tmp)
    finally:
        procs.stop()
        leftovers = kill_gateway_clusters(tmp)
        assert not leftovers, f"the gateway left cluster processes behind: {leftovers}"


def test_run_through_dask_gateway_matches_local_backend(generated, gateway, local_run, tmp_path):
    config = write_config(generated, tmp_path / "facility_gateway.yaml", kind="gateway",
                          gateway={"auth": "basic", "username": "zprime-test", "workers": 2})
    out = tmp_path / "out"
    # the test gateway serves plain http on 127.0.0.1: asked for by name (gateway:// is https)
    proc, wall = zprime_grad_run(config, out, generated.fileset, "--scheduler", f"gateway+http://{gateway}",
                                 "--epochs", str(EPOCHS))
    assert_same_results(out, local_run)
    assert f"dask-gateway http://{gateway}" in proc.stderr
    # the run shut down the cluster it started (the gateway's REST API, as the user)
    request = urllib.request.Request(f"http://{gateway}/api/v1/clusters/",
                                     headers={"Authorization": "Basic " + base64.b64encode(b"zprime-test:").decode()})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read()) == {}
    print(f"gateway run: {wall:.1f} s")


# ----------------------------------------------------------------------------------------- no shared filesystem
def test_workers_that_cannot_see_the_output_directory_and_a_killed_worker(generated, local_run, tmp_path):
    """The facility case: the driver's OUT is invisible to the workers, so the chunks must stay in their
    memory from the skim to the last bootstrap replica; one worker dies after the first epoch."""
    import os
    import signal

    from distributed import Client

    driver = tmp_path / "driver"  # what only the driver sees: the outputs
    driver.mkdir()
    (driver / "marker").write_text("the driver's file")
    prefix = hiding(driver)
    if prefix is None:
        pytest.skip("no private mount namespace on this machine (needs root or unprivileged user namespaces)")
    procs = Processes(tmp_path / "logs")
    try:
        address = start_scheduler(procs, "tcp")
        workers = [start_worker(procs, f"hidden-{i}", address, prefix=prefix) for i in range(2)]
        wait_for_workers(address, 2)
        with Client(address, timeout="30s") as client:  # the workers really see an empty directory there
            seen = client.run(os.listdir, str(driver))
        assert len(seen) == 2 and all(listing == [] for listing in seen.values()), seen

        config = write_config(generated, tmp_path / "facility.yaml", kind="scheduler", address=None)
        out = driver / "out"
        cmd = [str(BIN / "zprime-grad"), "run", str(config), "--fileset", str(generated.fileset), "--out", str(out),
               "--scheduler", address, "--epochs", str(EPOCHS)]
        with open(tmp_path / "run.log", "w") as log:
            run = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            history = out / "optimise" / "optimisation.json"
            deadline = time.monotonic() + 600
            while not history.exists() and run.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            killed = run.poll() is None
            if killed:  # after the first epoch: half the resident chunks are lost
                os.killpg(workers[0].pid, signal.SIGKILL)
            returncode = run.wait(timeout=600)
        output = (tmp_path / "run.log").read_text()
        assert returncode == 0, output[-4000:]
        assert killed, "the run ended before a worker could be killed"
        assert workers[0].poll() is not None
        assert_same_results(out, local_run)
        skim = json.loads((out / "skim/skim.json").read_text())
        assert skim["resident"] and skim["columns"] == [] and not (out / "skim/columns").exists()
    finally:
        procs.stop()
