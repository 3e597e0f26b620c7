"""deploy/: every version it names comes from the lock file (requirements/constraints.txt) and
pyproject.toml, and every file is what its tool will accept (YAML parses into the expected objects,
the Dockerfile installs with the lock file, the gateway config is Python that sets real traitlets).
No image is built here (no Docker engine)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from zprime_grad import __version__
from zprime_grad.config import load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
IMAGE_RE = re.compile(r"zprime-grad(?:-notebook)?:[\w.+-]+")


def lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements/constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements/constraints.txt: '{line}' is not an exact pin"
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def python_version() -> str:
    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    match = re.fullmatch(r">=(\d+)\.(\d+),<(\d+)\.(\d+)", spec.replace(" ", ""))
    assert match and int(match[4]) == int(match[2]) + 1, f"requires-python {spec!r} names one minor version"
    return f"{match[1]}.{match[2]}"


def expected_tag() -> str:
    return f"{__version__}-dask{lock()['dask']}-py{python_version()}"


def deploy_texts() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for p in sorted(DEPLOY.rglob("*")) if p.is_file()}


def test_lock_pins_the_cluster_packages_in_one_version():
    pins = lock()
    assert pins["dask"] == pins["distributed"]
    for name in ("dask-gateway", "dask-gateway-server", "jax", "jaxlib", "coffea", "awkward", "cryptography"):
        assert name in pins, name
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] == __version__


def test_every_image_and_version_in_deploy_is_the_lock_files():
    images = {(path, m) for path, text in deploy_texts().items() for m in IMAGE_RE.findall(text)}
    assert {p for p, _ in images} >= {"deploy/compose.yaml", "deploy/kubernetes/daskcluster.yaml",
                                      "deploy/gateway/dask_gateway_config.py", "deploy/Dockerfile"}
    for path, image in images:
        assert image.split(":", 1)[1] == expected_tag(), f"{path}: {image} (lock file: {expected_tag()})"
    # any upstream dask image, or any other pinned version, must equal the lock file too
    pins = {**lock(), "zprime-grad": __version__}
    for path, text in deploy_texts().items():
        for version in re.findall(r"ghcr\.io/dask/dask(?:-notebook)?:([\w.]+)", text):
            assert version.split("-py")[0] == pins["dask"], path
        for name, version in re.findall(r"\b([A-Za-z][\w.-]*)==([\w.+-]+)", text):
            assert pins.get(name.lower().replace("_", "-")) == version, f"{path}: {name}=={version} is not the lock's"


def test_dockerfile_installs_the_package_with_the_lock_file():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(rf"^ARG PYTHON_VERSION={re.escape(python_version())}$", text, re.M)
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim AS runtime$", text, re.M)
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and all("-c requirements/constraints.txt" in line or
                            "-c /opt/zprime_grad/requirements/constraints.txt" in line for line in installs)
    assert "COPY requirements/constraints.txt requirements/constraints.txt" in text
    for copied in re.findall(r"^COPY (\S+) ", text, re.M):
        for part in copied.split():
            assert (REPO / part).exists(), f"deploy/Dockerfile copies {part}, which is not in the repository"
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and "data" in ignored and "outputs" in ignored


def test_compose_runs_scheduler_workers_and_a_notebook_from_the_image():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"scheduler", "worker", "notebook"}
    assert services["scheduler"]["command"][:2] == ["dask", "scheduler"]
    worker = services["worker"]
    assert worker["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    assert worker["deploy"]["replicas"] >= 2
    assert services["scheduler"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / services["scheduler"]["build"]["context"] / "requirements/constraints.txt").is_file()
    assert services["notebook"]["build"]["target"] == "notebook"
    assert "work:/work" in worker["volumes"] and "work:/work" in services["notebook"]["volumes"]


def test_kubernetes_daskcluster_is_a_dask_operator_resource():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes/daskcluster.yaml").read_text()))
    cluster = next(d for d in docs if d["kind"] == "DaskCluster")
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    worker = cluster["spec"]["worker"]["spec"]["containers"][0]
    scheduler = cluster["spec"]["scheduler"]["spec"]["containers"][0]
    assert worker["args"][:2] == ["dask", "worker"] and scheduler["args"][:2] == ["dask", "scheduler"]
    assert {p["name"] for p in scheduler["ports"]} == {"tcp-comm", "http-dashboard"}
    service = cluster["spec"]["scheduler"]["service"]
    assert service["selector"]["dask.org/cluster-name"] == cluster["metadata"]["name"]
    claim = cluster["spec"]["worker"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert any(d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim for d in docs)


def kube_cluster_config_traits() -> set[str]:
    """KubeClusterConfig's traits, read from the installed source: importing it needs kubernetes_asyncio,
    which only the gateway server's Kubernetes deployment has."""
    import ast
    import importlib.util

    from dask_gateway_server.backends.base import ClusterConfig

    spec = importlib.util.find_spec("dask_gateway_server.backends")
    source = Path(spec.submodule_search_locations[0]) / "kubernetes" / "backend.py"
    cls = next(n for n in ast.parse(source.read_text()).body if isinstance(n, ast.ClassDef) and n.name == "KubeClusterConfig")
    own = {t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    return own | set(ClusterConfig.class_traits(config=True))


def test_gateway_config_sets_real_traitlets_and_matches_the_facility_config():
    from traitlets.config import Config

    from dask_gateway_server.app import DaskGateway
    from dask_gateway_server.backends.base import ClusterConfig
    from dask_gateway_server.options import Options

    path = DEPLOY / "gateway/dask_gateway_config.py"
    c = Config()
    exec(compile(path.read_text(), str(path), "exec"), {"c": c, "__name__": "dask_gateway_config"})
    assert c.DaskGateway.backend_class == "dask_gateway_server.backends.kubernetes.KubeBackend"
    assert c.DaskGateway.authenticator_class == "dask_gateway_server.auth.JupyterHubAuthenticator"
    for section, traits in (("DaskGateway", set(DaskGateway.class_traits(config=True))),
                            ("KubeClusterConfig", kube_cluster_config_traits())):
        unknown = set(c[section]) - traits
        assert not unknown, f"{path}: {section} has no traits {unknown}"
    assert c.KubeClusterConfig.image.endswith(expected_tag())
    base = Config({"ClusterConfig": {k: v for k, v in c.KubeClusterConfig.items()
                                     if k in ClusterConfig.class_traits(config=True)}})
    validated = ClusterConfig(config=base)  # traitlets check every value the base class declares
    assert validated.worker_threads == 1 and validated.worker_memory == 4 * 2**30
    options = c.Backend.cluster_options
    assert isinstance(options, Options)
    facility = load_config(REPO / "configs/facility_gateway.yaml").cluster.gateway.options
    assert set(facility) <= {f.field for f in options.fields}
    chosen = options.get_configuration(options.parse_options(dict(facility)), user=None)
    assert chosen["worker_memory"] == f"{facility['worker_memory_gib']:g} G"
    # the gateway's scheduler and worker pods run as the image's unprivileged user
    for role in ("scheduler", "worker"):
        pod, container = c.KubeClusterConfig[f"{role}_extra_pod_config"], c.KubeClusterConfig[f"{role}_extra_container_config"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == UID, role
        assert pod["automountServiceAccountToken"] is False, role
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, role
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], role
    assert c.KubeClusterConfig.worker_extra_pod_config["volumes"][0]["name"] == "work"


@pytest.mark.parametrize("name", ["facility_tls.yaml", "facility_gateway.yaml"])
def test_facility_configs_are_the_default_analysis_on_a_remote_cluster(name):
    from zprime_grad.cluster import remote

    config, default = load_config(REPO / "configs" / name), load_config()
    assert remote(config)
    assert config.analysis == default.analysis and config.optimise.backend == "dask"
    if name == "facility_tls.yaml":
        assert config.cluster.address.startswith("tls://") and all(config.cluster.tls.model_dump().values())


def test_readme_documents_each_deployment():
    text = (DEPLOY / "README.md").read_text()
    for part in ("Dockerfile", "compose.yaml", "kubernetes/daskcluster.yaml", "gateway/dask_gateway_config.py",
                 "PipInstall", "requirements/constraints.txt", expected_tag()):
        assert part in text, part
    # the security settings, as the files have them
    for part in ("gateway+http://host:port", "https", f"uid/gid {UID}", "zprime-grad-dask-tls", "NetworkPolicy",
                 "zprime-grad/role: driver", "tls://zprime-grad-scheduler:8786", "cluster.dashboard", "token"):
        assert part in text, part
    assert "gateway://GATEWAY-HOST:80 " not in text and "--scheduler tcp://zprime-grad-scheduler" not in text


# ----------------------------------------------------------------------------------------- secure by default
UID = 10001  # the images' unprivileged user: Dockerfile, compose, the Kubernetes pods and the gateway's pods


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """stage name -> its (instruction, arguments), continuation lines joined; a stage built FROM another
    starts with that stage's instructions (what it inherits, USER included)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            base, _, name = args.partition(" AS ")
            current = stages[name.strip()] = list(stages.get(base.strip(), []))
        if current is not None:
            current.append((instruction.upper(), args.strip()))
    return stages


def test_images_run_as_an_unprivileged_user_and_the_notebook_needs_a_token():
    import json

    stages = dockerfile_stages()
    assert set(stages) == {"runtime", "notebook"}
    for name, instructions in stages.items():
        users = [args for ins, args in instructions if ins == "USER"]
        assert users and users[-1] == f"{UID}:{UID}", f"deploy/Dockerfile stage {name} ends as {users[-1:]}"
        runs = " ".join(args for ins, args in instructions if ins == "RUN")
        assert f"useradd --uid {UID} --gid {UID}" in runs and f"groupadd --gid {UID}" in runs
        assert f"chown {UID}:{UID} /cache/jax /work" in runs
        cmd = json.loads([args for ins, args in instructions if ins == "CMD"][-1])
        assert "--allow-root" not in cmd
        if name == "notebook":
            assert cmd[:2] == ["jupyter", "lab"]
            # no option that empties the token or password or switches authentication off
            assert not [a for a in cmd if re.search(r"token|password|disable_check_xsrf|allow_unauthenticated", a, re.I)]
    for name, instructions in stages.items():
        assert not [a for _, a in instructions if "--allow-root" in a or "chmod 1777" in a], name


def test_compose_publishes_on_127_0_0_1_only_and_runs_unprivileged():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        assert service["user"] == f"{UID}:{UID}", name
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name
        assert not service.get("privileged") and service.get("network_mode") != "host", name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"deploy/compose.yaml: {name} publishes {port} beyond 127.0.0.1"
        env = service.get("environment", {})
        assert "JUPYTER_TOKEN" not in env or env["JUPYTER_TOKEN"], name


def k8s_docs() -> list[dict]:
    return list(yaml.safe_load_all((DEPLOY / "kubernetes/daskcluster.yaml").read_text()))


def option(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def test_kubernetes_is_mutual_tls_from_a_secret_unprivileged_and_behind_a_network_policy():
    docs = k8s_docs()
    cluster = next(d for d in docs if d["kind"] == "DaskCluster")
    pods = {role: cluster["spec"][role]["spec"] for role in ("scheduler", "worker")}
    for role, pod in pods.items():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == UID and context["runAsGroup"] == UID
        assert pod["automountServiceAccountToken"] is False
        container = pod["containers"][0]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        args = container["args"]
        assert option(args, "--protocol") == "tls", role
        # the certificates come from a mounted Secret, by reference
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"] if m["name"] in secrets}
        assert secrets == {"dask-tls": "zprime-grad-dask-tls"} and all(
            m["readOnly"] for m in container["volumeMounts"] if m["name"] in secrets)
        for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
            assert str(Path(option(args, flag)).parent) in mounts, f"{role}: {flag} is not in the Secret's mount"
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        assert env["DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__TLS__CERT"] == option(args, "--tls-cert")
    worker_args = pods["worker"]["containers"][0]["args"]
    assert worker_args[2] == f"tls://{cluster['metadata']['name']}-scheduler:8786"  # not the operator's tcp://
    scheduler = pods["scheduler"]["containers"][0]
    assert scheduler["readinessProbe"]["httpGet"]["scheme"] == "HTTPS" == scheduler["livenessProbe"]["httpGet"]["scheme"]

    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["spec"]["podSelector"]["matchLabels"] == {"dask.org/cluster-name": cluster["metadata"]["name"]}
    assert "Ingress" in policy["spec"]["policyTypes"]
    rules = policy["spec"]["ingress"]
    assert rules and all(rule.get("from") for rule in rules)  # an empty `from` would admit everyone
    peers = [peer for rule in rules for peer in rule["from"]]
    assert all(set(peer) == {"podSelector"} and peer["podSelector"].get("matchLabels") for peer in peers)
    driver = next(r for r in rules if r["from"][0]["podSelector"]["matchLabels"] == {"zprime-grad/role": "driver"})
    assert {p["port"] for p in driver["ports"]} == {8786, 8787}


def test_no_certificate_key_or_secret_content_in_deploy():
    for path, text in deploy_texts().items():
        assert "-----BEGIN" not in text, path
    for doc in k8s_docs():
        assert doc["kind"] != "Secret", "deploy/kubernetes: a Secret's contents must not live in the repository"


def test_the_kubernetes_tls_scheduler_and_worker_command_lines_run(tmp_path):
    """The manifest's scheduler and worker args and env, run as they are with the `dask` CLI, only
    rewritten to this machine: 127.0.0.1 and free ports, the Secret's files from certificates made here.
    A client with a CA-signed certificate gets work done over tls://; a plain tcp:// client gets nothing;
    the dashboard (the probes' /health) answers https and not http."""
    import ssl
    import urllib.request

    from distributed import Client
    from distributed.security import Security

    from tests.cluster.support import BIN, Processes, free_port, make_certificates, wait_for_port

    cluster = next(d for d in k8s_docs() if d["kind"] == "DaskCluster")
    certs = make_certificates(tmp_path / "certs")
    secret = tmp_path / "secret"  # the Secret's keys, as the pods see them
    secret.mkdir()
    for key, source in (("ca.crt", certs.ca), ("tls.crt", certs.node_cert), ("tls.key", certs.node_key)):
        (secret / key).write_bytes(source.read_bytes())
    mount = next(m["mountPath"] for m in cluster["spec"]["scheduler"]["spec"]["containers"][0]["volumeMounts"]
                 if m["name"] == "dask-tls")
    port, dashboard, worker_dashboard = free_port(), free_port(), free_port()
    service = f"tls://{cluster['metadata']['name']}-scheduler:8786"
    here = {"0.0.0.0": "127.0.0.1", "8786": str(port), ":8787": f"127.0.0.1:{dashboard}",
            "8788": f"127.0.0.1:{worker_dashboard}", service: f"tls://127.0.0.1:{port}",
            "$(DASK_WORKER_NAME)": "k8s-worker-0"}

    def command(role):
        container = cluster["spec"][role]["spec"]["containers"][0]
        args = [here.get(a, a).replace(mount, str(secret)) for a in container["args"]]
        assert args[0] == "dask"
        env = {e["name"]: e["value"].replace(mount, str(secret)) for e in container["env"]}
        return [str(BIN / "dask"), *args[1:], *(["--host", "127.0.0.1"] if role == "worker" else [])], env

    procs = Processes(tmp_path / "logs")
    try:
        cmd, env = command("scheduler")
        scheduler = procs.start("scheduler", cmd, env)
        wait_for_port(port, scheduler, "scheduler", procs)
        cmd, env = command("worker")
        procs.start("worker", cmd, env)
        security = Security(tls_ca_file=str(certs.ca), tls_client_cert=str(certs.client_cert),
                            tls_client_key=str(certs.client_key), require_encryption=True)
        with Client(f"tls://127.0.0.1:{port}", security=security, timeout="30s") as client:
            client.wait_for_workers(1, timeout=90)
            assert client.submit(sum, [1, 2]).result() == 3
            assert all(a.startswith("tls://127.0.0.1:") for a in client.scheduler_info()["workers"])
        with pytest.raises((OSError, TimeoutError)):
            Client(f"tcp://127.0.0.1:{port}", timeout="3s")  # no cleartext Dask connection
        unverified = ssl.create_default_context()
        unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE  # as kubelet's https probe
        path = cluster["spec"]["scheduler"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
        with urllib.request.urlopen(f"https://127.0.0.1:{dashboard}{path}", context=unverified, timeout=30) as r:
            assert r.status == 200
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{dashboard}{path}", timeout=10)
    finally:
        procs.stop()
