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
