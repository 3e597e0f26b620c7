"""Real Dask processes on 127.0.0.1 for the cluster tests: certificates, free ports, CLI-started
schedulers/workers and a dask-gateway server, each killed in teardown (by its own process id)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent  # the venv's bin: dask, dask-gateway-server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------- TLS
@dataclass(frozen=True)
class Certificates:
    ca: Path
    node_cert: Path  # scheduler and workers
    node_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path) -> Certificates:
    """A throw-away CA, a node certificate (127.0.0.1) and a client certificate, both CA-signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    directory.mkdir(parents=True, exist_ok=True)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path):
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder().subject_name(name("zprime-grad test CA")).issuer_name(name("zprime-grad test CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ca_key, hashes.SHA256()))
    ca = directory / "ca.pem"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(cn):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        cert_path, key_path = directory / f"{cn}.pem", directory / f"{cn}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, key_path)
        return cert_path, key_path

    node_cert, node_key = leaf("node")
    client_cert, client_key = leaf("client")
    return Certificates(ca, node_cert, node_key, client_cert, client_key)


# ----------------------------------------------------------------------------------------- processes
class Processes:
    """Subprocesses started by one fixture; ``stop()`` terminates, then kills, each by its pid."""

    def __init__(self, logs: Path):
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)  # its own group: its children go with it
        log.close()
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group (worker children)
            except ProcessLookupError:
                pass
            proc.wait()
        self.procs = []


def wait_for_port(port: int, proc: subprocess.Popen, what: str, logs: Processes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{logs.log(what)[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s:\n{logs.log(what)[-3000:]}")


def tls_args(certs: Certificates) -> list[str]:
    return ["--tls-ca-file", str(certs.ca), "--tls-cert", str(certs.node_cert), "--tls-key", str(certs.node_key)]


def start_scheduler(procs: Processes, protocol: str, certs: Certificates | None = None) -> str:
    port = free_port()
    cmd = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--protocol", protocol,
           "--no-dashboard", *(tls_args(certs) if certs else [])]
    proc = procs.start("scheduler", cmd)
    wait_for_port(port, proc, "scheduler", procs)
    return f"{protocol}://127.0.0.1:{port}"


def start_worker(procs: Processes, name: str, address: str, certs: Certificates | None = None,
                 env: dict | None = None, prefix: list[str] | None = None) -> subprocess.Popen:
    """``prefix``: a command the worker runs under (e.g. `hiding` a directory from it)."""
    cmd = [str(BIN / "dask"), "worker", address, "--name", name, "--host", "127.0.0.1", "--nthreads", "1",
           "--no-dashboard", "--memory-limit", "0", *(tls_args(certs) if certs else [])]
    return procs.start(name, [*(prefix or []), *cmd], env)


# ----------------------------------------------------------------------------------------- private view
def hiding(directory: Path) -> list[str] | None:
    """A command prefix that runs a process in its own mount namespace with an empty tmpfs over
    ``directory``: the process cannot see what the driver writes there (as on a facility whose workers
    do not share the notebook's filesystem). None where this machine allows no mount namespace (needs
    root, or unprivileged user namespaces for ``unshare -r``)."""
    script = 'mount -t tmpfs zprime-grad-hidden "$0" && exec "$@"'
    for flags in (["-m"], ["-r", "-m"]):
        prefix = ["unshare", *flags, "--propagation", "private", "sh", "-c", script, str(directory)]
        try:
            probe = subprocess.run([*prefix, "sh", "-c", f'test -z "$(ls -A "{directory}")"'], capture_output=True,
                                   timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if probe.returncode == 0:
            return prefix
    return None


def wait_for_workers(address: str, n: int, certs: Certificates | None = None, timeout: float = 90) -> None:
    """Until ``n`` workers have registered (each CLI worker imports distributed: seconds on 2 cores)."""
    from distributed import Client
    from distributed.security import Security

    security = None
    if certs is not None:
        security = Security(tls_ca_file=str(certs.ca), tls_client_cert=str(certs.client_cert),
                            tls_client_key=str(certs.client_key), require_encryption=True)
    with Client(address, security=security, timeout="30s") as client:
        client.wait_for_workers(n, timeout=timeout)


# ----------------------------------------------------------------------------------------- gateway
def write_gateway_config(directory: Path) -> tuple[Path, str]:
    """A dask-gateway-server config: UnsafeLocalBackend (processes as this user) on 127.0.0.1 ports,
    its schedulers and workers from this venv. Returns (config file, public http address)."""
    api, proxy = free_port(), free_port()  # the proxy serves HTTP and the schedulers (TLS) on one port
    config = directory / "dask_gateway_config.py"
    config.write_text(f"""
c.DaskGateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{proxy}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.UnsafeLocalBackend.clusters_directory = "{directory}/clusters"
c.LocalClusterConfig.scheduler_cmd = "{BIN / 'dask-scheduler'}"
c.LocalClusterConfig.worker_cmd = "{BIN / 'dask-worker'}"
c.LocalClusterConfig.worker_cores = 1
c.LocalClusterConfig.worker_threads = 1
c.LocalClusterConfig.worker_memory = "4 G"
""")
    return config, f"127.0.0.1:{proxy}"


def kill_gateway_clusters(directory: Path) -> list[int]:
    """Schedulers/workers the gateway started (their working directory is under ``clusters/``) that
    outlived it: killed by pid. Returns the pids found (empty after a clean shutdown)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(directory / "clusters")):
            found.append(int(entry.name))
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    return found


def start_gateway(procs: Processes, directory: Path) -> str:
    config, public = write_gateway_config(directory)
    proc = procs.start("gateway", [str(BIN / "dask-gateway-server"), "-f", str(config)])
    wait_for_port(int(public.rsplit(":", 1)[1]), proc, "gateway", procs)
    return public
