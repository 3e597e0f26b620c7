"""dask-gateway server configuration for an analysis facility on Kubernetes.

Deployed with the dask-gateway Helm chart (API server, controller and proxy), this file as its extra
configuration:

    helm upgrade --install dask-gateway dask-gateway --repo https://helm.dask.org \
        --namespace dask-gateway --create-namespace \
        --set-file gateway.extraConfig.zprime=deploy/gateway/dask_gateway_config.py

Every cluster's scheduler and workers run the zprime_grad image (deploy/Dockerfile: the lock file's
versions) as its unprivileged user (uid 10001, no capabilities, no privilege escalation), so
`zprime-grad ... --scheduler gateway://HOST:443` passes the version check on connect. Clients reach
the gateway over https (gateway:// is https; TLS terminated by the chart's Traefik or the facility's
ingress) and the schedulers through the gateway's proxy, which dask-gateway always runs over TLS with
per-cluster certificates. Users log in through JupyterHub; the hub's API token comes from the
environment (the chart sets JUPYTERHUB_API_TOKEN), never from this file.
"""

# ``c`` is the traitlets config object the server provides when it loads this file.
from dask_gateway_server.options import Float, Integer, Options

IMAGE = "zprime-grad:0.1.0-dask2025.3.1-py3.11"  # push it to the facility's registry; keep this tag
MAX_WORKER_CORES = 4
MAX_WORKER_MEMORY_GIB = 16

c.DaskGateway.backend_class = "dask_gateway_server.backends.kubernetes.KubeBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"

c.KubeClusterConfig.image = IMAGE
c.KubeClusterConfig.image_pull_policy = "IfNotPresent"
c.KubeClusterConfig.scheduler_cores = 1
c.KubeClusterConfig.scheduler_memory = "2 G"
c.KubeClusterConfig.worker_cores = 1
c.KubeClusterConfig.worker_memory = "4 G"
c.KubeClusterConfig.worker_threads = 1  # one JAX computation per core: chunks are the parallelism
c.KubeClusterConfig.idle_timeout = 3600  # seconds without a client before a cluster is stopped
c.KubeClusterConfig.cluster_max_workers = 200
c.KubeClusterConfig.environment = {"OMP_NUM_THREADS": "1", "JAX_COMPILATION_CACHE_DIR": "/work/.cache/jax"}
# scheduler and worker pods: the image's unprivileged user, no service-account token, no capabilities
UNPRIVILEGED_POD = {
    "automountServiceAccountToken": False,
    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"}},
}
UNPRIVILEGED_CONTAINER = {"securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
c.KubeClusterConfig.scheduler_extra_pod_config = dict(UNPRIVILEGED_POD)
c.KubeClusterConfig.scheduler_extra_container_config = dict(UNPRIVILEGED_CONTAINER)
# the facility's shared work area (inputs, skim columns, outputs are read by path on the workers)
c.KubeClusterConfig.worker_extra_pod_config = {
    **UNPRIVILEGED_POD,
    "volumes": [{"name": "work", "persistentVolumeClaim": {"claimName": "zprime-grad-work"}}],
}
c.KubeClusterConfig.worker_extra_container_config = {
    **UNPRIVILEGED_CONTAINER,
    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
}


def worker_options(options, user):
    """What a user may choose (cluster.gateway.options in the zprime_grad config)."""
    return {"worker_cores": options.worker_cores, "worker_cores_limit": options.worker_cores,
            "worker_threads": options.worker_cores, "worker_memory": f"{options.worker_memory_gib:g} G",
            "worker_memory_limit": f"{options.worker_memory_gib:g} G"}


c.Backend.cluster_options = Options(
    Integer("worker_cores", default=1, min=1, max=MAX_WORKER_CORES, label="Worker cores"),
    Float("worker_memory_gib", default=4, min=1, max=MAX_WORKER_MEMORY_GIB, label="Worker memory (GiB)"),
    handler=worker_options,
)
