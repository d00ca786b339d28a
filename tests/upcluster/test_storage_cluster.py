"""Persistent volumes on `minik8s up` (root): the default local-path StorageClass, the
scheduler's VolumeBinding, the local-path provisioner and real kubelets mounting the
claim. A pod writes a file to its claim and is deleted; a new pod with the same claim
goes to the same node and reads it; deleting the claim (reclaim Delete) removes the
volume and its directory on the node.

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

TIMEOUT = 120.0  # catches hangs only
NS = "/api/v1/namespaces/default"




def eventually(cond, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.3)


def pod(name: str, script: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": HOST_ROOT_IMAGE, "command": ["sh", "-c", script],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}


def finished(api: httpx.Client, name: str) -> dict:
    def done():
        p = api.get(f"{NS}/pods/{name}").json()
        return p if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None
    return eventually(done, f"pod {name} finished")


def gone(api: httpx.Client, url: str) -> None:
    eventually(lambda: api.get(url).status_code == 404, f"{url} gone")


def test_a_claims_data_outlives_its_pod_and_goes_with_the_claim(api):
    sc = api.get("/apis/storage.k8s.io/v1/storageclasses/local-path").json()
    assert sc["provisioner"] == "minik8s.io/local-path" and sc["volumeBindingMode"] == "WaitForFirstConsumer"
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}
    r = api.post(f"{NS}/persistentvolumeclaims", json=claim)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["storageClassName"] == "local-path"  # the default class, by admission

    assert api.post(f"{NS}/pods", json=pod("writer", "echo kept > /data/f")).status_code == 201
    writer = finished(api, "writer")
    assert writer["status"]["phase"] == "Succeeded", writer["status"]
    node = writer["spec"]["nodeName"]
    claim = api.get(f"{NS}/persistentvolumeclaims/data").json()
    assert claim["status"]["phase"] == "Bound"
    assert claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == node
    pv = api.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}").json()
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == [node]
    path = pv["spec"]["hostPath"]["path"]
    with open(os.path.join(path, "f")) as f:  # the nodes share this host: the node's dir is here
        assert f.read() == "kept\n"

    assert api.delete(f"{NS}/pods/writer").status_code == 200
    gone(api, f"{NS}/pods/writer")
    assert api.post(f"{NS}/pods", json=pod("reader", "cat /data/f")).status_code == 201
    reader = finished(api, "reader")
    assert reader["status"]["phase"] == "Succeeded", reader["status"]
    assert reader["spec"]["nodeName"] == node  # where its data is
    assert api.get(f"{NS}/pods/reader/log").text == "kept\n"

    assert api.delete(f"{NS}/pods/reader").status_code == 200
    gone(api, f"{NS}/pods/reader")
    api.delete(f"{NS}/persistentvolumeclaims/data")
    gone(api, f"{NS}/persistentvolumeclaims/data")
    gone(api, f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
    assert not os.path.exists(path)  # the helper pod removed it on the node
    eventually(lambda: api.get(f"/api/v1/namespaces/kube-system/pods/helper-pod-delete-{pv['metadata']['name']}")
               .status_code == 404, "the helper pod gone")


def test_a_pod_waits_in_container_creating_until_its_claim_is_bound(api, tmp_path):
    node = api.get("/api/v1/nodes").json()["items"][0]["metadata"]["name"]
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "later"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}},
                      "storageClassName": ""}}
    assert api.post(f"{NS}/persistentvolumeclaims", json=claim).status_code == 201
    waiting = pod("waiting", "cat /data/hello")
    waiting["spec"]["nodeName"] = node  # past the scheduler, which would not place it yet
    waiting["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = "later"
    assert api.post(f"{NS}/pods", json=waiting).status_code == 201

    def failed_mount():
        items = api.get(f"{NS}/events", params={"fieldSelector": "involvedObject.name=waiting"}).json()["items"]
        return next((e for e in items if e["reason"] == "FailedMount"), None)
    ev = eventually(failed_mount, "a FailedMount event")
    assert "error processing PVC default/later: PVC is not bound" in ev["message"]

    def creating():
        status = api.get(f"{NS}/pods/waiting").json()["status"]
        reasons = [(c["state"].get("waiting") or {}).get("reason") for c in status.get("containerStatuses") or []]
        return status["phase"] == "Pending" and reasons == ["ContainerCreating"]
    eventually(creating, "the pod shown ContainerCreating")

    (tmp_path / "hello").write_text("static\n")
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "static-later"},
          "spec": {"capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                   "hostPath": {"path": str(tmp_path), "type": "Directory"},
                   "claimRef": {"namespace": "default", "name": "later"}}}
    assert api.post("/api/v1/persistentvolumes", json=pv).status_code == 201
    done = finished(api, "waiting")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert api.get(f"{NS}/pods/waiting/log").text == "static\n"
    api.delete(f"{NS}/pods/waiting")
    # A claim volume marked readOnly is mounted read-only in every container.
    ro = pod("read-only", "touch /data/new")
    ro["spec"]["volumes"][0]["persistentVolumeClaim"] = {"claimName": "later", "readOnly": True}
    assert api.post(f"{NS}/pods", json=ro).status_code == 201
    assert finished(api, "read-only")["status"]["phase"] == "Failed"
    assert not (tmp_path / "new").exists()
    api.delete(f"{NS}/pods/read-only")
    gone(api, f"{NS}/pods/read-only")
    api.delete(f"{NS}/persistentvolumeclaims/later")
    pv = eventually(lambda: (api.get("/api/v1/persistentvolumes/static-later").json().get("status") or {})
                    .get("phase") == "Released", "the static volume Released")
    assert (tmp_path / "hello").read_text() == "static\n"  # Retain: the data stays
    api.delete("/api/v1/persistentvolumes/static-later")
