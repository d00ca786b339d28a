"""A DaemonSet on `minik8s up` (root): the daemonset controller, the scheduler and a real
kubelet together. The daemon pod lands on the node through its matchFields affinity,
runs and turns Ready; a template change rolls it (the old pod stops, a new one starts),
and the history holds both revisions.

One one-node cluster for the module, in its own state dir, ports and address ranges;
`minik8s down` at the end whatever happens.
"""
from __future__ import annotations

import importlib.util
import os
import time

import httpx
import pytest

from cluster import bringup
from cluster.state import ClusterConfig
from kubelet.images import HOST_ROOT_IMAGE
from tests.procs import free_port
from tests.test_cluster_cli import minik8s
from tests.test_cluster_network import unique_cidrs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the linux runtime needs root"),
    pytest.mark.skipif(importlib.util.find_spec("kubelet.main") is None, reason="no kubelet"),
]

TIMEOUT = 90.0
URL = "/apis/apps/v1/namespaces/default/daemonsets"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    state = str(tmp_path_factory.mktemp("cluster"))
    node_cidr, cluster_cidr = unique_cidrs()
    r = minik8s("up", "--nodes", "1", "--state-dir", state, "--port", str(free_port()),
                "--node-cidr", node_cidr, "--cluster-cidr", cluster_cidr, timeout=240)
    cfg = ClusterConfig.load(state)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        with httpx.Client(base_url=cfg.api_url, timeout=30, verify=bringup.admin_tls(cfg)) as client:
            yield client
    finally:
        if cfg is not None:
            minik8s("down", "--state-dir", state, timeout=180)
            bringup.cleanup(cfg)


def wait(fn, what: str):
    deadline = time.monotonic() + TIMEOUT
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def ready_pods(api: httpx.Client, marker: str) -> list[dict]:
    pods = api.get("/api/v1/namespaces/default/pods", params={"labelSelector": "app=agent"}).json()["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and marker in " ".join(p["spec"]["containers"][0]["command"])
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or ())]


def test_a_daemon_pod_runs_on_the_node_and_rolls(api):
    nodes = [n["metadata"]["name"] for n in api.get("/api/v1/nodes").json()["items"]]
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"metadata": {"labels": {"app": "agent"}},
                                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                                    "name": "c", "image": HOST_ROOT_IMAGE,
                                    "command": ["sh", "-c", "echo first; exec sleep 3600"]}]}}}}
    r = api.post(URL, json=ds)
    assert r.status_code == 201, r.text
    (pod,) = wait(lambda: ready_pods(api, "first"), "the daemon pod Ready")
    assert pod["spec"]["nodeName"] == nodes[0] and len(nodes) == 1
    assert pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"] == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [nodes[0]]}]}]

    r = api.patch(f"{URL}/agent", json={"spec": {"template": {"spec": {"containers": [
        {"name": "c", "command": ["sh", "-c", "echo second; exec sleep 3600"]}]}}}},
        headers={"content-type": "application/strategic-merge-patch+json"})
    assert r.status_code == 200, r.text
    (new,) = wait(lambda: ready_pods(api, "second"), "the updated daemon pod Ready")
    assert new["metadata"]["uid"] != pod["metadata"]["uid"]
    wait(lambda: not any(p["metadata"]["uid"] == pod["metadata"]["uid"] for p in api.get(
        "/api/v1/namespaces/default/pods").json()["items"]), "the old pod gone")

    def rolled_out():
        st = api.get(f"{URL}/agent").json().get("status") or {}
        return st.get("desiredNumberScheduled") == st.get("updatedNumberScheduled") == st.get("numberAvailable") == 1
    wait(rolled_out, "the rollout recorded in status")
    revs = api.get("/apis/apps/v1/namespaces/default/controllerrevisions").json()["items"]
    assert sorted(r["revision"] for r in revs if r["metadata"]["name"].startswith("agent-")) == [1, 2]
