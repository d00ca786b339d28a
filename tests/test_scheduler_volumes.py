"""VolumeBinding end to end: a `minik8s scheduler` and a `minik8s controller-manager` (the
PV binder and the local-path provisioner) against a real API server, with node objects
only (no kubelets). A pod waits for its Immediate claim to be bound; a
WaitForFirstConsumer claim is provisioned on the node the scheduler picks, and later
pods of that claim follow it there; a pod goes where its bound volume is.
"""
from __future__ import annotations

import uuid

import pytest

from tests.procs import Component, free_port, wait_for
from tests.test_scheduler_integration import Env, cluster  # noqa: F401 - the module's fixture

CLASSES = "/apis/storage.k8s.io/v1/storageclasses"


@pytest.fixture
def env(cluster, tmp_path):  # noqa: F811
    e = Env(*cluster, tmp_path)
    cm = Component("controller-manager", "--kubeconfig", e.kubeconfig,
                   "--controllers", "persistentvolume-binder,local-path-provisioner",
                   "--secure-port", str(free_port()),
                   "--leader-elect-resource-name", f"cm-{uuid.uuid4().hex[:8]}",
                   "--leader-elect-retry-period", "0.2s").start()
    e.procs.append(cm)
    yield e
    for sc in ("imm", "wait"):
        e.http.delete(f"{CLASSES}/{e.ns}-{sc}")
    e.close()


def claim(env: Env, name: str, klass: str) -> None:
    body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": klass}}
    r = env.http.post(f"/api/v1/namespaces/{env.ns}/persistentvolumeclaims", json=body)
    assert r.status_code == 201, r.text


def volumes(name: str) -> list[dict]:
    return [{"name": "data", "persistentVolumeClaim": {"claimName": name}}]


def storage_class(env: Env, name: str, mode: str, provisioner: str) -> str:
    body = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": f"{env.ns}-{name}"},
            "provisioner": provisioner, "volumeBindingMode": mode}
    assert env.http.post(CLASSES, json=body).status_code == 201
    return f"{env.ns}-{name}"


def volume(env: Env, name: str, klass: str, node: str | None = None) -> None:
    spec = {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": klass,
            "hostPath": {"path": f"/tmp/{name}"}}
    if node:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    r = env.http.post("/api/v1/persistentvolumes", json={"apiVersion": "v1", "kind": "PersistentVolume",
                                                          "metadata": {"name": f"{env.ns}-{name}"}, "spec": spec})
    assert r.status_code == 201, r.text


def test_an_unbound_immediate_claim_keeps_the_pod_pending_until_it_binds(env):
    env.node("n1")
    env.scheduler("--leader-elect=false")
    klass = storage_class(env, "imm", "Immediate", "example.com/elsewhere")
    claim(env, "data", klass)
    env.pod("p", volumes=volumes("data"))

    def refused():
        cond = next((c for c in (env.get_pod("p").get("status") or {}).get("conditions") or []
                     if c["type"] == "PodScheduled"), None)
        return cond if cond and cond["status"] == "False" else None
    cond = wait_for(refused, 30, interval=0.1, what="PodScheduled=False")
    assert cond["reason"] == "Unschedulable"
    assert "pod has unbound immediate PersistentVolumeClaims" in cond["message"]
    volume(env, "static", klass)  # the binder binds it; the claim's change wakes the pod
    assert env.wait_bound(1)["p"] == env.nodes[0]


def test_a_wait_for_first_consumer_claim_is_provisioned_where_the_pod_goes_and_keeps_it_there(env):
    nodes = [env.node(f"n{i}") for i in range(3)]
    env.scheduler("--leader-elect=false")
    klass = storage_class(env, "wait", "WaitForFirstConsumer", "minik8s.io/local-path")
    claim(env, "data", klass)
    env.pod("first", volumes=volumes("data"))
    node = env.wait_bound(1)["first"]
    assert node in nodes
    pvc = env.http.get(f"/api/v1/namespaces/{env.ns}/persistentvolumeclaims/data").json()
    assert pvc["status"]["phase"] == "Bound"  # VolumeBinding binds the pod only after its claim
    assert pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == node
    pv = env.http.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}").json()
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == [node]
    for i in range(3):  # however many, they follow their data
        env.pod(f"again-{i}", volumes=volumes("data"))
    placed = env.wait_bound(4)
    assert set(placed.values()) == {node}
    env.http.delete(f"/api/v1/namespaces/{env.ns}/pods/first", params={"gracePeriodSeconds": "0"})
    for i in range(3):
        env.http.delete(f"/api/v1/namespaces/{env.ns}/pods/again-{i}", params={"gracePeriodSeconds": "0"})
    env.http.delete(f"/api/v1/namespaces/{env.ns}/persistentvolumeclaims/data")


def test_a_pod_goes_where_its_bound_volume_is(env):
    env.node("n1")
    far = env.node("n2")
    env.scheduler("--leader-elect=false")
    volume(env, "pinned", f"{env.ns}-pinned", node=far)
    claim(env, "data", f"{env.ns}-pinned")
    wait_for(lambda: env.http.get(f"/api/v1/namespaces/{env.ns}/persistentvolumeclaims/data").json()
             .get("status", {}).get("phase") == "Bound", 30, interval=0.1, what="the claim bound")
    for i in range(3):
        env.pod(f"p{i}", volumes=volumes("data"))
    assert set(env.wait_bound(3).values()) == {far}
