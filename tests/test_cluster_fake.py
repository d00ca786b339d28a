"""`minik8s up --runtime fake --nodes 100`: a big simulated cluster that needs no root.

As root (CI), the command runs as the unprivileged user nobody, which shows that it
needs no privilege; a non-root user runs it as itself.
"""
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import httpx
import pytest

from cluster import bringup
from cluster.state import ClusterConfig
from tests.procs import free_port, wait_for
from tests.test_cluster_cli import as_nobody
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fake_cluster():
    nobody = as_nobody()
    if nobody is None and os.geteuid() == 0:
        pytest.skip("cannot run as an unprivileged user here (no setpriv, or no Python nobody can run)")
    prefix, env = nobody or ([sys.executable], {})
    state = tempfile.mkdtemp(prefix="minik8s-fake-")
    if nobody:
        os.chown(state, pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
    env = {**os.environ, **env, "HOME": state}

    def cli(*args, timeout=240):
        return subprocess.run([*prefix, "-m", "cluster.cli", *args, "--state-dir", state],
                              capture_output=True, text=True, env=env, cwd="/", timeout=timeout)
    try:
        r = cli("up", "--runtime", "fake", "--nodes", "100", "--port", str(free_port()))
        cfg = ClusterConfig.load(state)
        assert r.returncode == 0, r.stdout + r.stderr + (bringup.log_tail(cfg.log_path("kubelet"), 20) if cfg else "")
        yield cfg, cli, r.stdout
    finally:
        cli("down")
        shutil.rmtree(state, ignore_errors=True)


def test_a_hundred_fake_nodes_come_up_without_root(fake_cluster):
    cfg, cli, out = fake_cluster
    assert "100/100 Ready" in out and "Cluster ready" in out, out
    st = bringup.read_json(bringup.status_path(cfg))
    assert st["supervisor"]["pid"] and os.stat(f"/proc/{st['supervisor']['pid']}").st_uid != 0 \
        or os.geteuid() != 0
    nodes = httpx.get(cfg.api_url + "/api/v1/nodes", timeout=30, verify=bringup.admin_tls(cfg)).json()["items"]
    assert len(nodes) == 100 and all(bringup.node_ready(n) for n in nodes)
    r = cli("status")
    assert r.returncode == 0 and "100 of 100 Ready" in r.stdout, r.stdout + r.stderr
    assert "route-syncer" not in r.stdout  # no node network to route


def test_pods_run_on_fake_nodes(fake_cluster):
    cfg, cli, _ = fake_cluster
    api = httpx.Client(base_url=cfg.api_url, timeout=30, verify=bringup.admin_tls(cfg))
    d = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "many"},
         "spec": {"replicas": 50, "selector": {"matchLabels": {"app": "many"}},
                  "template": {"metadata": {"labels": {"app": "many"}},
                               "spec": {"containers": [{"name": "c", "image": "nothing"}]}}}}
    assert api.post("/apis/apps/v1/namespaces/default/deployments", json=d).status_code == 201

    def running():
        pods = api.get("/api/v1/namespaces/default/pods", params={"labelSelector": "app=many"}).json()["items"]
        return [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    pods = wait_for(lambda: len(running()) == 50 and running(), timeout=120, what="50 fake pods Running")
    assert len({p["spec"]["nodeName"] for p in pods}) > 10


def test_kubectl_top_reads_the_metrics_server(fake_cluster):
    """`up` runs the metrics server and registers it: the fake nodes' usage (a pod's
    annotation) reaches `kubectl-lite top` through the API server's aggregation layer."""
    cfg, cli, out = fake_cluster
    assert "metrics-server" in out and "apiservice/v1beta1.metrics.k8s.io -> service/metrics-server" in out, out
    api = httpx.Client(base_url=cfg.api_url, timeout=30, verify=bringup.admin_tls(cfg))
    usage = '{"c": {"cpu": "200m", "memory": "48Mi"}}'
    r = api.post("/api/v1/namespaces/default/pods", json={
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hot", "annotations": {"fake.minik8s.io/usage": usage}},
        "spec": {"containers": [{"name": "c", "image": "nothing"}]}})
    assert r.status_code == 201, r.text
    kl = [sys.executable, "-m", "kubectl_lite.cli", "--kubeconfig", cfg.kubeconfig]

    def top():
        r = subprocess.run([*kl, "top", "pod", "hot", "--no-headers"], capture_output=True, text=True, timeout=60)
        return r.returncode == 0 and r.stdout.split()
    row = wait_for(top, timeout=120, interval=1, what="the pod's metrics through kubectl-lite top")
    assert row[0] == "hot" and row[2] == "48Mi" and abs(int(row[1].rstrip("m")) - 200) <= 5
    # A node's metrics need two scrapes (a fresh pod's, one). The fake nodes that run
    # nothing report no usage, which metrics-server leaves out: kubectl shows <unknown>.
    node = api.get("/api/v1/namespaces/default/pods/hot").json()["spec"]["nodeName"]

    def top_nodes():
        r = subprocess.run([*kl, "top", "nodes", "--no-headers"], capture_output=True, text=True, timeout=60)
        return r.returncode == 0 and {line.split()[0]: line.split() for line in r.stdout.splitlines()}
    rows = wait_for(top_nodes, timeout=120, interval=1, what="node metrics through kubectl-lite top")
    assert len(rows) == 100 and rows[node][3] == "48Mi", rows[node]


def test_down_stops_every_process(fake_cluster):
    cfg, cli, _ = fake_cluster
    st = bringup.read_json(bringup.status_path(cfg))
    pids = [(c["pid"], c["start"]) for c in st["components"].values()] + \
        [(st["supervisor"]["pid"], st["supervisor"]["start"])]
    r = cli("down")
    assert r.returncode == 0, r.stdout + r.stderr
    from cluster import host
    assert not [p for p in pids if host.alive(*p)]
    assert cli("status").returncode == 3
