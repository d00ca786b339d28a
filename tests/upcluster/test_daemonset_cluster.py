"""A DaemonSet on `minik8s up` (root): the daemonset controller, the scheduler and a real
kubelets together. A daemon pod lands on each node through its matchFields affinity,
runs and turns Ready; a template change rolls them (each old pod stops, a new one starts),
and the history holds both revisions.

The three-node cluster is the package's (tests/upcluster/conftest.py).
"""
from __future__ import annotations

import importlib.util
import os
import time

import httpx
import pytest

from kubelet.images import HOST_ROOT_IMAGE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the linux runtime needs root"),
    pytest.mark.skipif(importlib.util.find_spec("kubelet.main") is None, reason="no kubelet"),
]

TIMEOUT = 90.0
URL = "/apis/apps/v1/namespaces/default/daemonsets"




def wait(fn, what: str):
    deadline = time.monotonic() + TIMEOUT
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def exactly(n: int, items: list) -> list | None:
    return items if len(items) == n else None


def ready_pods(api: httpx.Client, marker: str) -> list[dict]:
    pods = api.get("/api/v1/namespaces/default/pods", params={"labelSelector": "app=agent"}).json()["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and marker in " ".join(p["spec"]["containers"][0]["command"])
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or ())]


def test_a_daemon_pod_runs_on_each_node_and_rolls(api):
    nodes = [n["metadata"]["name"] for n in api.get("/api/v1/nodes").json()["items"]]
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"metadata": {"labels": {"app": "agent"}},
                                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                                    "name": "c", "image": HOST_ROOT_IMAGE,
                                    "command": ["sh", "-c", "echo first; exec sleep 3600"]}]}}}}
    r = api.post(URL, json=ds)
    assert r.status_code == 201, r.text
    try:
        first = wait(lambda: exactly(len(nodes), ready_pods(api, "first")), "a daemon pod Ready on each node")
        assert sorted(p["spec"]["nodeName"] for p in first) == sorted(nodes) and len(nodes) == 3
        for pod in first:
            assert pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"] == [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                          "values": [pod["spec"]["nodeName"]]}]}]

        r = api.patch(f"{URL}/agent", json={"spec": {"template": {"spec": {"containers": [
            {"name": "c", "command": ["sh", "-c", "echo second; exec sleep 3600"]}]}}}},
            headers={"content-type": "application/strategic-merge-patch+json"})
        assert r.status_code == 200, r.text
        new = wait(lambda: exactly(len(nodes), ready_pods(api, "second")), "the updated daemon pods Ready")
        assert sorted(p["spec"]["nodeName"] for p in new) == sorted(nodes)
        old_uids = {p["metadata"]["uid"] for p in first}
        assert not old_uids & {p["metadata"]["uid"] for p in new}
        wait(lambda: not any(p["metadata"]["uid"] in old_uids for p in api.get(
            "/api/v1/namespaces/default/pods").json()["items"]), "the old pods gone")

        def rolled_out():
            st = api.get(f"{URL}/agent").json().get("status") or {}
            return (st.get("desiredNumberScheduled") == st.get("updatedNumberScheduled")
                    == st.get("numberAvailable") == len(nodes))
        wait(rolled_out, "the rollout recorded in status")
        revs = api.get("/apis/apps/v1/namespaces/default/controllerrevisions").json()["items"]
        assert sorted(r["revision"] for r in revs if r["metadata"]["name"].startswith("agent-")) == [1, 2]
    finally:  # the package's other tests share the nodes
        api.delete(f"{URL}/agent")
