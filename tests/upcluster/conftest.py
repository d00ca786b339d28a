"""One `minik8s up` cluster (root) for every test of this package: the cluster DNS, the
registry walk-through, Services end to end, and the Job, DaemonSet, StatefulSet and
storage tests on real kubelets. Bringing a cluster up and down takes longer than most
of these tests, so they share one, in its own state dir, ports and address ranges;
`minik8s down` once the package's last test is done, whatever happens.

Three nodes: a pod on node-1 reaches pods on node-2 and node-3, and what is per node (a
DaemonSet's pods, a claim's volume on the node its first pod ran on) is shown on more
than one. Every test names its objects apart
from the others' (all in `default`) and removes what would go on running."""
from __future__ import annotations

import httpx
import pytest
import yaml

from cluster import bringup
from cluster.state import ClusterConfig
from kubelet.images import HOST_ROOT_IMAGE
from tests.procs import free_port
from tests.test_cluster import Cluster, dump_logs
from tests.test_cluster_cli import minik8s
from tests.test_cluster_network import unique_cidrs

CRONJOBS = "/apis/batch/v1/namespaces/default/cronjobs"


@pytest.fixture(scope="package")
def upcluster(tmp_path_factory) -> Cluster:
    """The package's cluster (tests/test_cluster.py's Cluster, with `up`'s output); its
    registries.yaml marks node-1:5000 a plain-HTTP registry (the registry walk-through's)."""
    state = str(tmp_path_factory.mktemp("cluster"))
    node_cidr, cluster_cidr = unique_cidrs()
    registry = ClusterConfig(state_dir=state, node_cidr=node_cidr).node_ip("node-1") + ":5000"
    # registries.yaml as k3s reads it: an http:// endpoint marks the registry plain HTTP.
    registries = str(tmp_path_factory.mktemp("registry-config") / "registries.yaml")
    with open(registries, "w") as f:
        yaml.safe_dump({"mirrors": {registry: {"endpoint": [f"http://{registry}"]}}}, f)
    r = minik8s("up", "--nodes", "3", "--state-dir", state, "--port", str(free_port()),
                "--node-cidr", node_cidr, "--cluster-cidr", cluster_cidr, "--registry-config", registries,
                timeout=300)
    cfg = ClusterConfig.load(state)
    try:
        assert r.returncode == 0, r.stdout + r.stderr + (dump_logs(cfg) if cfg else "")
        c = Cluster(cfg, str(tmp_path_factory.mktemp("kubectl-cache")))
        c.up_output, c.registry = r.stdout, registry
        with c.api:
            yield c
    finally:
        if cfg is not None:
            minik8s("down", "--state-dir", state, timeout=180)
            bringup.cleanup(cfg)


@pytest.fixture(scope="package")
def api(upcluster) -> httpx.Client:
    """The admin's client of the package's cluster."""
    return upcluster.api


@pytest.fixture(scope="package", autouse=True)
def minutely(api):
    """A CronJob that runs every minute (test_job_cluster.py's), made as soon as the
    cluster is up, so the minute its test waits for passes while the tests before it run;
    deleted at the end."""
    cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "minutely"},
          "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Forbid",
                   "jobTemplate": {"spec": {"template": {"spec": {
                       "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                       "containers": [{"name": "c", "image": HOST_ROOT_IMAGE,
                                       "command": ["sh", "-c", "echo tick"]}]}}}}}}
    r = api.post(CRONJOBS, json=cj)
    assert r.status_code == 201, r.text
    yield r.json()
    api.delete(f"{CRONJOBS}/minutely")
