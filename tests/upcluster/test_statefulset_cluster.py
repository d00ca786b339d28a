"""StatefulSets on `minik8s up` (root): a real kubelet runs the pod and mounts its claim,
which the local-path provisioner backs with a directory on the node. A pod deleted and
created again by the StatefulSet controller mounts the same claim and finds its data.

Needs the kubelet's persistentVolumeClaim volumes: skipped, saying so, on a tree whose
kubelet does not mount claims yet.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import time

import httpx
import pytest

from kubelet.images import HOST_ROOT_IMAGE


def _kubelet_mounts_claims() -> bool:
    root = pathlib.Path(__file__).resolve().parents[2] / "kubelet"
    return any("persistentVolumeClaim" in p.read_text(errors="replace") for p in root.rglob("*.py"))


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the linux runtime needs root"),
    pytest.mark.skipif(importlib.util.find_spec("kubelet.main") is None, reason="no kubelet"),
    pytest.mark.skipif(not _kubelet_mounts_claims(),
                       reason="this kubelet does not mount persistentVolumeClaim volumes yet"),
]

TIMEOUT = 120.0
NS = "/api/v1/namespaces/default"
SCRIPT = ('if [ -f /data/first ]; then echo "found $(cat /data/first)"; '
          'else echo "$(hostname)-$$" > /data/first; echo "wrote $(cat /data/first)"; fi; exec sleep 3600')




def wait_for(fn, what: str):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what}")


def running(api: httpx.Client, name: str, not_uid: str = "") -> dict | None:
    r = api.get(f"{NS}/pods/{name}")
    if r.status_code != 200:
        return None
    pod = r.json()
    if pod["metadata"]["uid"] == not_uid or pod["metadata"].get("deletionTimestamp"):
        return None
    return pod if (pod.get("status") or {}).get("phase") == "Running" else None


def log_line(api: httpx.Client, name: str) -> str:
    r = api.get(f"{NS}/pods/{name}/log")
    return r.text.strip() if r.status_code == 200 else ""


def test_a_recreated_statefulset_pod_finds_its_data(api):
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "kv"},
           "spec": {"serviceName": "kv", "replicas": 1, "selector": {"matchLabels": {"app": "kv"}},
                    "template": {"metadata": {"labels": {"app": "kv"}}, "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "kv", "image": HOST_ROOT_IMAGE, "command": ["sh", "-c", SCRIPT],
                                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}]}}
    r = api.post("/apis/apps/v1/namespaces/default/statefulsets", json=sts)
    assert r.status_code == 201, r.text
    first = wait_for(lambda: running(api, "kv-0"), "kv-0 running")
    wrote = wait_for(lambda: log_line(api, "kv-0"), "kv-0's log")
    assert wrote.startswith("wrote kv-0-"), wrote
    pvc = api.get(f"{NS}/persistentvolumeclaims/data-kv-0").json()
    assert pvc["status"]["phase"] == "Bound"

    r = api.delete(f"{NS}/pods/kv-0")
    assert r.status_code == 200, r.text
    wait_for(lambda: running(api, "kv-0", not_uid=first["metadata"]["uid"]), "kv-0 running again")
    found = wait_for(lambda: log_line(api, "kv-0"), "the new kv-0's log")
    assert found == "found " + wrote.removeprefix("wrote "), found
    api.delete("/apis/apps/v1/namespaces/default/statefulsets/kv")  # the package's other tests share the nodes
