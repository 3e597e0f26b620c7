"""One way to reach a Dask cluster for every stage: a LocalCluster, a scheduler address, or dask-gateway.

``resolve(config, scheduler=..., workers=...)`` turns the config's ``cluster`` section and a command
line ``--scheduler`` / ``--workers`` into one `ClusterConfig`; ``open_cluster`` / ``connect`` give
``(client, owned)``; a run's `stages.session.Session` is the one caller that opens a cluster.
Addresses: ``tcp://host:port``, ``tls://host:port`` (certificates from ``cluster.tls``) and
``gateway://host:port`` (the gateway over https; ``gateway://`` alone: the dask config's gateway).
Plain http, which sends the gateway credentials in cleartext, only when asked for by name:
``gateway+http://host:port`` (or an ``http://`` URL in ``cluster.gateway.address``). Only the address is
logged, never a certificate path, key or password.

Secure by default: a LocalCluster's scheduler, nanny and worker listen on 127.0.0.1 only, and its
dashboard is off unless ``cluster.dashboard`` asks for one (a port alone is 127.0.0.1's).

On connect the workers must run the driver's versions of the packages that decide results and
pickles (zprime_grad, jax, jaxlib, coffea, dask, distributed, awkward, numpy, Python): a stale
facility image otherwise fails deep inside a task, or silently computes something else. Workers that
join later (adaptive scaling, a gateway scale-up) are checked as they register, before they get a
task; one that differs is refused and closed, and the driver logs why (`watch_versions`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from zprime_grad.config import ClusterConfig, Config
from zprime_grad.errors import UserError

log = logging.getLogger(__name__)
PACKAGES = ("zprime_grad", "jax", "jaxlib", "coffea", "dask", "distributed", "awkward", "numpy")
FIX = ("rebuild the worker image from requirements/constraints.txt (deploy/Dockerfile), or install the "
       "driver's versions on the workers (distributed.PipInstall); see deploy/README.md")


# ----------------------------------------------------------------------------------------- settings
def scheme(address: str) -> str:
    return address.split("://", 1)[0] if "://" in address else ""


GATEWAY_SCHEMES = {"gateway": "https", "gateway+http": "http"}  # address scheme -> the gateway's URL scheme


def resolve(config: Config | None, *, scheduler: str | None = None, workers: int | None = None) -> ClusterConfig:
    """The effective cluster settings: ``scheduler`` (command line) > the ``cluster`` section;
    ``workers`` overrides ``cluster.workers``."""
    base = config.cluster if config is not None else ClusterConfig()
    address = scheduler or (base.address if base.kind != "local" else None)
    kind = base.kind if address is None else ("gateway" if scheme(address) in GATEWAY_SCHEMES else "scheduler")
    if kind == "gateway" and address and scheme(address) == "gateway+http" and not address.split("://", 1)[1].strip("/"):
        raise UserError("cluster.address: gateway+http:// needs the gateway's host:port (gateway:// alone is the dask "
                        "config's gateway)")
    if kind == "scheduler" and not address:
        raise UserError("cluster.address: kind 'scheduler' needs an address (tcp://host:8786 or tls://host:8786)")
    if kind == "scheduler" and scheme(address) not in ("tcp", "tls", "inproc", "ucx", "ws", "wss"):
        raise UserError(f"cluster.address: '{address}' is not a scheduler address (tcp://, tls://, gateway:// or "
                        f"gateway+http://)")
    return base.model_copy(update={"kind": kind, "address": address,
                                   "workers": workers if workers is not None else base.workers})


def remote(config: Config | None, scheduler: str | None = None) -> bool:
    """True when a scheduler or gateway is configured: the stages then default to Dask."""
    return resolve(config, scheduler=scheduler).kind != "local"


def security(settings: ClusterConfig):
    """A distributed ``Security`` for a tls:// address; names the missing config field otherwise."""
    from distributed.security import Security

    tls = settings.tls
    for field in ("ca_file", "cert", "key"):
        value = getattr(tls, field)
        if not value:
            raise UserError(f"cluster.tls.{field}: a tls:// scheduler needs ca_file, cert and key in the config")
        if not os.path.isfile(value):
            raise UserError(f"cluster.tls.{field}: file not found (the path is in the config)")
    return Security(tls_ca_file=tls.ca_file, tls_client_cert=tls.cert, tls_client_key=tls.key,
                    require_encryption=True)


# ----------------------------------------------------------------------------------------- versions
def worker_versions() -> dict[str, str]:
    """Runs on every worker (and the driver): the versions that must agree."""
    import platform
    from importlib import metadata

    import zprime_grad

    out = {"python": ".".join(platform.python_version_tuple()[:2]), "zprime_grad": zprime_grad.__version__}
    for name in PACKAGES[1:]:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def version_mismatches(driver: dict[str, str], workers: dict[str, dict[str, str]],
                       names: dict[str, str] | None = None) -> list[str]:
    label = {a: f"{names[a]} ({a})" if names and names.get(a) not in (None, a) else a for a in workers}
    return [f"worker {label[addr]}: {pkg} {got.get(pkg, 'not installed')} (driver: {want})"
            for addr, got in sorted(workers.items()) for pkg, want in driver.items() if got.get(pkg) != want]


def check_versions(client) -> dict[str, dict[str, str]]:
    """``UserError`` naming the worker, the package and both versions if any worker differs."""
    replies = client.run(worker_versions, on_error="return")
    broken = {a: r for a, r in replies.items() if isinstance(r, BaseException)}
    if broken:
        addr, err = sorted(broken.items(), key=str)[0]
        raise UserError(f"worker {addr} cannot run zprime_grad ({type(err).__name__}: {err}); it is not installed "
                        f"there or is broken: {FIX}")
    names = {a: str(w.get("name")) for a, w in client.scheduler_info()["workers"].items()}
    problems = version_mismatches(worker_versions(), replies, names)
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... {len(problems) - 6} more" if len(problems) > 6 else "")
        raise UserError(f"the Dask workers do not run the driver's package versions: {shown}. Fix: {FIX}")
    return replies


VERSION_TOPIC = "zprime_grad-version-check"  # the scheduler's event topic of refused workers


def version_check_plugin(expected: dict[str, str]):
    """A distributed ``WorkerPlugin`` checking every worker that registers from now on (adaptive
    scaling, a gateway scale-up, a ``dask worker`` started by hand) against ``expected`` (the driver's
    `worker_versions`). Its ``setup`` runs when the worker registers, before the worker handles any
    message from the scheduler; a worker that differs is paused at once (it starts no task and the
    scheduler sends it none), logs the reason naming each package and both versions, sends it to
    the driver (event topic ``VERSION_TOPIC``) and closes, with its nanny (not restarted).

    The class is defined here, so it travels by value (cloudpickle): a worker without zprime_grad
    can unpickle it and is refused the same way."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class VersionCheck(WorkerPlugin):
        name = VERSION_TOPIC

        def __init__(self, expected: dict[str, str], fix: str, topic: str):
            self.expected, self.fix, self.topic = dict(expected), fix, topic

        def setup(self, worker) -> None:
            import asyncio
            import logging

            from distributed.core import Status

            label = {worker.address: str(worker.name)}
            try:
                from zprime_grad.cluster import version_mismatches, worker_versions

                problems = version_mismatches(self.expected, {worker.address: worker_versions()}, label)
            except Exception as err:  # zprime_grad missing or broken on this worker
                problems = [f"worker {label[worker.address]} ({worker.address}) cannot run zprime_grad "
                            f"({type(err).__name__}: {err})"]
            if not problems:
                return
            reason = (f"zprime_grad refuses this worker: it does not run the driver's package versions: "
                      f"{'; '.join(problems)}. Fix: {self.fix}")
            logging.getLogger("zprime_grad.cluster").error(reason)
            worker.log_event(self.topic, {"worker": worker.address, "name": str(worker.name),
                                          "problems": problems, "message": reason})
            worker.status = Status.closing_gracefully  # paused: no task starts here, the scheduler sends none
            asyncio.get_running_loop().create_task(worker.close(reason=reason, nanny=True))

    return VersionCheck(expected, FIX, VERSION_TOPIC)


def watch_versions(client) -> None:
    """Every worker that joins from now on is version-checked before it gets a task (see
    `version_check_plugin`); a refused one is logged here, on the driver, as a warning."""
    def refused(event) -> None:
        _, msg = event
        log.warning("cluster: %s", msg.get("message", msg) if isinstance(msg, dict) else msg)

    client.register_plugin(version_check_plugin(worker_versions()))
    client.subscribe_topic(VERSION_TOPIC, refused)


# ----------------------------------------------------------------------------------------- clusters
class Owned:
    """What this process started and must stop: a LocalCluster, a gateway cluster, or nothing."""

    def __init__(self, cluster=None):
        self.cluster = cluster

    def close(self) -> None:
        if self.cluster is not None:
            cluster, self.cluster = self.cluster, None
            cluster.close()


def _local(settings: ClusterConfig):
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)
    # scheduler, nannies and workers on 127.0.0.1; the scheduler's HTTP server (its /health, and the
    # dashboard only when asked for) too: distributed binds a bare ":port" to 0.0.0.0, and with no
    # address to 8787 on the scheduler's host
    dashboard = dashboard_address(settings.dashboard)
    with _ctrl_c_after_startup():
        cluster = LocalCluster(n_workers=settings.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               protocol="tcp://", dashboard_address=dashboard or "127.0.0.1:0",
                               worker_dashboard_address=None, scheduler_kwargs={"dashboard": dashboard is not None},
                               silence_logs=logging.CRITICAL, preload=[__name__])  # dask_setup: workers ignore Ctrl-C
        client, owned = Client(cluster), Owned(cluster)
    if dashboard is not None:
        log.info("cluster: LocalCluster dashboard at %s", cluster.dashboard_link)
    return client, owned


@contextmanager
def _ctrl_c_after_startup() -> Iterator[None]:
    """A first Ctrl-C while LocalCluster starts is raised once it has started: interrupted half-way, the
    cluster is a half-made object that distributed's exit hook fails to close (a traceback at exit). A second
    press is raised at once (a worker process that died of the first one would keep the start-up waiting;
    the command's own worker processes ignore Ctrl-C from birth: `zprime_grad.cli`). Outside the main
    thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []

    def press(signum, frame) -> None:
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)

    previous = signal.signal(signal.SIGINT, press)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def dask_setup(worker) -> None:
    """Worker preload of the LocalCluster: its worker processes ignore SIGINT. A Ctrl-C in the terminal goes
    to the whole process group; the driver alone stops (its KeyboardInterrupt closes the cluster) instead of
    every worker printing a traceback."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def dashboard_address(configured: str | None) -> str | None:
    """``cluster.dashboard`` as distributed's ``dashboard_address``: a port alone (``8787``, ``:8787``)
    is 127.0.0.1's; None stays None (no dashboard)."""
    if configured is None:
        return None
    host, _, port = configured.rpartition(":")
    return f"{host or '127.0.0.1'}:{port}"


def _scheduler(settings: ClusterConfig):
    from distributed import Client

    sec = security(settings) if scheme(settings.address) == "tls" else None
    try:
        client = Client(settings.address, security=sec, timeout=f"{settings.timeout_s}s")
    except (OSError, TimeoutError) as err:
        hint = " (is the client certificate one the scheduler's CA signed?)" if sec is not None else ""
        raise UserError(f"cannot connect to Dask scheduler {settings.address}: {err}{hint}") from None
    return client, Owned()


def gateway_url(address: str | None) -> str | None:
    """``gateway://host:port`` → ``https://host:port`` (TLS: the credentials are never sent in cleartext);
    ``gateway+http://host:port`` → ``http://host:port`` (asked for by name); ``gateway://`` → None (the
    dask config's ``gateway.address``)."""
    if address is None or scheme(address) not in GATEWAY_SCHEMES:
        return address
    rest = address.split("://", 1)[1].rstrip("/")
    return f"{GATEWAY_SCHEMES[scheme(address)]}://{rest}" if rest else None


def _gateway_auth(settings: ClusterConfig):
    from dask_gateway.auth import BasicAuth

    g = settings.gateway
    if g.auth == "basic":
        return BasicAuth(g.username, os.environ.get(g.password_env))
    return None if g.auth == "default" else g.auth


def _gateway(settings: ClusterConfig):
    from dask_gateway import Gateway

    g = settings.gateway
    url = gateway_url(settings.address) or g.address
    cluster = None
    try:
        gateway = Gateway(url, proxy_address=g.proxy_address, auth=_gateway_auth(settings))
        if g.cluster_name:
            cluster = gateway.connect(g.cluster_name, shutdown_on_close=False)
        else:
            options = gateway.cluster_options()
            for key, value in g.options.items():
                if key not in options:
                    raise UserError(f"cluster.gateway.options.{key}: not an option of this gateway "
                                    f"(it offers {sorted(options)})")
                options[key] = value
            cluster = gateway.new_cluster(options, shutdown_on_close=g.shutdown)
        if g.adapt is not None:
            cluster.adapt(minimum=g.adapt.minimum, maximum=g.adapt.maximum)
        else:
            cluster.scale(g.workers or settings.workers)
        return cluster.get_client(set_as_default=False), Owned(cluster)
    except BaseException as err:
        if cluster is not None:
            cluster.close()
        if isinstance(err, UserError) or not isinstance(err, Exception):
            raise
        # aiohttp / gateway / comm errors: unreachable, refused, bad credentials, scheduler proxy
        raise UserError(f"cannot use dask-gateway {url or '(dask config gateway.address)'}: "
                        f"{type(err).__name__}: {err}") from None


def open_cluster(settings: ClusterConfig):
    """``(client, owned)``: close the client, then ``owned`` (which stops only what was started here)."""
    opener = {"local": _local, "scheduler": _scheduler, "gateway": _gateway}[settings.kind]
    client, owned = opener(settings)
    try:
        wanted = 1
        if settings.kind == "local":
            wanted = settings.workers
        elif settings.kind == "gateway" and settings.gateway.adapt is None:
            wanted = settings.gateway.workers or settings.workers
        elif settings.kind == "gateway":
            wanted = settings.gateway.adapt.minimum  # 0: workers come with work (checked as they join)
        try:
            client.wait_for_workers(wanted, timeout=settings.wait_workers_s)
        except TimeoutError:
            raise UserError(f"cluster: fewer than {wanted} Dask workers joined {describe(settings)} within "
                            f"cluster.wait_workers_s = {settings.wait_workers_s:g} s") from None
        if settings.check_versions and wanted:
            check_versions(client)
        if settings.check_versions:
            watch_versions(client)  # the workers that join later (adapt, gateway scale-up)
    except BaseException:
        client.close()
        owned.close()
        raise
    from zprime_grad import terminal

    line = f"cluster: {describe(settings)} with {len(client.scheduler_info()['workers'])} workers"
    terminal.say(line) if terminal.current() is not None else log.info(line)  # where a run's work goes
    return client, owned


@contextmanager
def connect(settings: ClusterConfig) -> Iterator[tuple[object, Owned]]:
    """``with connect(resolve(config)) as (client, owned):`` everything started here is stopped after."""
    client, owned = open_cluster(settings)
    try:
        yield client, owned
    finally:
        client.close()
        owned.close()


def describe(settings: ClusterConfig) -> str:
    """The address only: safe to log."""
    if settings.kind == "local":
        return f"LocalCluster ({settings.workers} workers, 127.0.0.1)"
    if settings.kind == "gateway":
        return f"dask-gateway {gateway_url(settings.address) or settings.gateway.address or '(dask config)'}"
    return f"scheduler {settings.address}"
