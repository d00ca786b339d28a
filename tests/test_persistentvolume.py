"""The PV binder, the protection controllers and the local-path provisioner end to end: a
real API server and `minik8s controller-manager` as a child process, no kubelets (the
tests play the scheduler where a node must be chosen).

Volumes are cluster-scoped and the server is shared by the session, so every volume
here has a storage class named after the test's namespace: no test binds another's.
"""
from __future__ import annotations

import time
import uuid

import pytest

from tests.procs import Component, default_service_account, free_port

TIMEOUT = 30.0  # catches hangs only
PVS = "/api/v1/persistentvolumes"
CONTROLLERS = "persistentvolume-binder,pvc-protection,pv-protection,local-path-provisioner"


def eventually(cond, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cm(kubeconfig):
    proc = Component("controller-manager", "--kubeconfig", kubeconfig, "--controllers", CONTROLLERS,
                     "--secure-port", str(free_port()),
                     "--leader-elect-resource-name", f"cm-{uuid.uuid4().hex[:8]}",
                     "--leader-elect-retry-period", "0.2s").start()
    try:
        yield proc
    finally:
        proc.stop()


def pv(name: str, size: str, klass: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": klass,
                     "hostPath": {"path": f"/tmp/{name}"}, **spec}}


def pvc(name: str, size: str, klass: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
                     "storageClassName": klass, **spec}}


class Objects:
    def __init__(self, http, ns: str):
        self.http, self.ns = http, ns
        self.claims = f"/api/v1/namespaces/{ns}/persistentvolumeclaims"

    def create(self, url: str, obj: dict) -> dict:
        r = self.http.post(url, json=obj)
        assert r.status_code == 201, r.text
        return r.json()

    def get(self, url: str) -> dict | None:
        r = self.http.get(url)
        return r.json() if r.status_code == 200 else None

    def claim(self, name: str) -> dict | None:
        return self.get(f"{self.claims}/{name}")

    def volume(self, name: str) -> dict | None:
        return self.get(f"{PVS}/{name}")

    def phase(self, obj: dict | None) -> str | None:
        return (obj or {}).get("status", {}).get("phase")

    def events(self, name: str) -> list[dict]:
        r = self.http.get(f"/api/v1/namespaces/{self.ns}/events",
                          params={"fieldSelector": f"involvedObject.name={name}"})
        return r.json()["items"]


@pytest.fixture
def objs(http, ns, cm):
    return Objects(http, ns)


def test_a_claim_binds_the_smallest_volume_that_fits(objs, ns):
    klass = f"{ns}-static"
    objs.create(PVS, pv(f"{ns}-small", "100Mi", klass))
    objs.create(PVS, pv(f"{ns}-big", "5Gi", klass))
    objs.create(PVS, pv(f"{ns}-fits", "1Gi", klass))
    objs.create(PVS, pv(f"{ns}-rwx", "1Gi", klass, accessModes=["ReadWriteMany"]))
    objs.create(objs.claims, pvc("data", "500Mi", klass))
    claim = eventually(lambda: objs.phase(objs.claim("data")) == "Bound" and objs.claim("data"), "the claim bound")
    assert claim["spec"]["volumeName"] == f"{ns}-fits"
    assert claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    assert claim["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
    assert claim["status"]["capacity"] == {"storage": "1Gi"}
    assert claim["status"]["accessModes"] == ["ReadWriteOnce"]
    volume = eventually(lambda: objs.phase(objs.volume(f"{ns}-fits")) == "Bound" and objs.volume(f"{ns}-fits"),
                        "the volume bound")
    ref = volume["spec"]["claimRef"]
    assert (ref["namespace"], ref["name"], ref["uid"]) == (ns, "data", claim["metadata"]["uid"])
    assert volume["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
    for other in ("small", "big", "rwx"):
        eventually(lambda o=other: objs.phase(objs.volume(f"{ns}-{o}")) == "Available", f"{other} Available")


def test_a_retained_volume_is_released_when_its_claim_goes(objs, http, ns):
    klass = f"{ns}-retain"
    objs.create(PVS, pv(f"{ns}-keep", "1Gi", klass))
    objs.create(objs.claims, pvc("data", "1Gi", klass))
    eventually(lambda: objs.phase(objs.volume(f"{ns}-keep")) == "Bound", "the volume bound")
    assert http.delete(f"{objs.claims}/data").status_code == 200  # held by its finalizer
    eventually(lambda: objs.claim("data") is None, "the claim gone (nothing used it)")
    volume = eventually(lambda: objs.phase(objs.volume(f"{ns}-keep")) == "Released" and objs.volume(f"{ns}-keep"),
                        "the volume Released")
    assert volume["spec"]["claimRef"]["name"] == "data"  # kept: the data is the old claim's
    # A new claim does not get a released volume.
    objs.create(objs.claims, pvc("again", "1Gi", klass))
    eventually(lambda: any(e["reason"] == "ExternalProvisioning" or e["reason"] == "ProvisioningFailed"
                           for e in objs.events("again")), "the new claim's sync")
    assert objs.phase(objs.claim("again")) == "Pending"
    assert objs.phase(objs.volume(f"{ns}-keep")) == "Released"


def test_a_static_volume_with_reclaim_delete_fails_without_a_deleter(objs, http, ns):
    klass = f"{ns}-del"
    objs.create(PVS, pv(f"{ns}-del", "1Gi", klass, persistentVolumeReclaimPolicy="Delete"))
    objs.create(objs.claims, pvc("data", "1Gi", klass))
    eventually(lambda: objs.phase(objs.volume(f"{ns}-del")) == "Bound", "the volume bound")
    http.delete(f"{objs.claims}/data")
    volume = eventually(lambda: objs.phase(objs.volume(f"{ns}-del")) == "Failed" and objs.volume(f"{ns}-del"),
                        "the volume Failed")
    assert "no deletable volume plugin matched" in volume["status"]["message"]


def test_a_claim_for_a_class_that_does_not_exist_stays_pending_and_says_why(objs, ns):
    objs.create(objs.claims, pvc("lost", "1Gi", f"{ns}-nowhere"))
    ev = eventually(lambda: next((e for e in objs.events("lost") if e["reason"] == "ProvisioningFailed"), None),
                    "a ProvisioningFailed event")
    assert ev["type"] == "Warning"
    assert ev["message"] == f'storageclass.storage.k8s.io "{ns}-nowhere" not found'
    assert objs.phase(objs.claim("lost")) == "Pending"


def test_a_claim_naming_its_volume_gets_that_one(objs, ns):
    klass = f"{ns}-pre"
    objs.create(PVS, pv(f"{ns}-exact", "1Gi", klass))
    objs.create(PVS, pv(f"{ns}-chosen", "10Gi", klass))
    objs.create(objs.claims, pvc("mine", "1Gi", klass, volumeName=f"{ns}-chosen"))
    claim = eventually(lambda: objs.phase(objs.claim("mine")) == "Bound" and objs.claim("mine"), "the claim bound")
    assert claim["spec"]["volumeName"] == f"{ns}-chosen"
    assert "pv.kubernetes.io/bound-by-controller" not in claim["metadata"]["annotations"]  # the user chose
    assert claim["status"]["capacity"] == {"storage": "10Gi"}
    assert objs.phase(objs.volume(f"{ns}-exact")) in ("Pending", "Available")
    # A volume pre-bound to a claim by name waits for that claim, and gets it.
    objs.create(PVS, pv(f"{ns}-reserved", "1Gi", klass, claimRef={"namespace": ns, "name": "later"}))
    eventually(lambda: objs.phase(objs.volume(f"{ns}-reserved")) == "Available", "the reserved volume Available")
    objs.create(objs.claims, pvc("other", "1Gi", klass))
    objs.create(objs.claims, pvc("later", "1Gi", klass))
    claim = eventually(lambda: objs.phase(objs.claim("later")) == "Bound" and objs.claim("later"), "later bound")
    assert claim["spec"]["volumeName"] == f"{ns}-reserved"
    claim = eventually(lambda: objs.phase(objs.claim("other")) == "Bound" and objs.claim("other"), "other bound")
    assert claim["spec"]["volumeName"] == f"{ns}-exact"


def test_a_claim_in_use_by_a_pod_is_removed_only_after_the_pod(objs, http, ns):
    objs.create(objs.claims, pvc("used", "1Gi", ""))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}],
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "used"}}]}}
    objs.create(f"/api/v1/namespaces/{ns}/pods", pod)
    objs.create(objs.claims, pvc("free", "1Gi", ""))
    http.delete(f"{objs.claims}/used")
    claim = objs.claim("used")
    assert claim["metadata"]["deletionTimestamp"]
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    # A claim deleted after it, which no pod uses, goes: the controller has looked at
    # both by then, and kept the one in use.
    http.delete(f"{objs.claims}/free")
    eventually(lambda: objs.claim("free") is None, "the unused claim removed")
    assert objs.claim("used") is not None
    http.delete(f"/api/v1/namespaces/{ns}/pods/user", params={"gracePeriodSeconds": "0"})
    eventually(lambda: objs.claim("used") is None, "the claim removed after the pod")


def test_a_claim_of_a_class_with_a_provisioner_is_handed_to_it(objs, http, ns):
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": f"{ns}-ext"},
          "provisioner": "example.com/nfs"}
    objs.create("/apis/storage.k8s.io/v1/storageclasses", sc)
    try:
        objs.create(objs.claims, pvc("ext", "1Gi", f"{ns}-ext"))
        claim = eventually(lambda: (objs.claim("ext")["metadata"].get("annotations") or {}).get(
            "volume.kubernetes.io/storage-provisioner") and objs.claim("ext"), "the provisioner annotation")
        assert claim["metadata"]["annotations"]["volume.kubernetes.io/storage-provisioner"] == "example.com/nfs"
        ev = eventually(lambda: next((e for e in objs.events("ext") if e["reason"] == "ExternalProvisioning"), None),
                        "an ExternalProvisioning event")
        assert "'example.com/nfs'" in ev["message"]
    finally:
        http.delete(f"/apis/storage.k8s.io/v1/storageclasses/{ns}-ext")


def test_local_path_provisions_on_the_selected_node_and_deletes_with_a_helper_pod(objs, http, ns):
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": f"{ns}-local"},
          "provisioner": "minik8s.io/local-path", "volumeBindingMode": "WaitForFirstConsumer",
          "parameters": {"nodePath": "/srv/local-path"}}
    objs.create("/apis/storage.k8s.io/v1/storageclasses", sc)
    node = f"{ns}-node"
    default_service_account(http, "kube-system")  # the helper pod's namespace; no SA controller runs
    objs.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                  "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}})
    try:
        claim = objs.create(objs.claims, pvc("db", "2Gi", f"{ns}-local"))
        ev = eventually(lambda: next((e for e in objs.events("db") if e["reason"] == "WaitForFirstConsumer"), None),
                        "the claim waiting for its consumer")
        assert ev["message"] == "waiting for first consumer to be created before binding"
        assert objs.phase(objs.claim("db")) == "Pending"
        # The scheduler's part: it names the node.
        http.patch(f"{objs.claims}/db", headers={"Content-Type": "application/merge-patch+json"},
                   json={"metadata": {"annotations": {"volume.kubernetes.io/selected-node": node}}})
        claim = eventually(lambda: objs.phase(objs.claim("db")) == "Bound" and objs.claim("db"), "the claim bound")
        name = f"pvc-{claim['metadata']['uid']}"
        assert claim["spec"]["volumeName"] == name
        volume = objs.volume(name)
        assert volume["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == "minik8s.io/local-path"
        assert volume["spec"]["hostPath"] == {"path": f"/srv/local-path/{name}_{ns}_db", "type": "DirectoryOrCreate"}
        assert volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"] == [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]
        assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
        eventually(lambda: {e["reason"] for e in objs.events("db")} >= {"Provisioning", "ProvisioningSucceeded"},
                   "the provisioner's events")
        # Released with Delete: a helper pod removes the directory on the node; the test
        # plays its kubelet and reports it done.
        http.delete(f"{objs.claims}/db")
        helper_url = f"/api/v1/namespaces/kube-system/pods/helper-pod-delete-{name}"
        helper = eventually(lambda: objs.get(helper_url), "the helper pod")
        assert helper["spec"]["nodeName"] == node
        assert helper["spec"]["containers"][0]["command"] == ["rm", "-rf", f"/minik8s-local-path/{name}_{ns}_db"]
        assert helper["spec"]["volumes"][0]["hostPath"]["path"] == "/srv/local-path"
        assert objs.volume(name) is not None  # not before the directory is gone
        r = http.patch(f"{helper_url}/status", headers={"Content-Type": "application/merge-patch+json"},
                       json={"status": {"phase": "Succeeded"}})
        assert r.status_code == 200, r.text
        eventually(lambda: objs.volume(name) is None, "the volume deleted")
        eventually(lambda: objs.get(helper_url) is None, "the helper pod deleted")
    finally:
        http.delete(f"/apis/storage.k8s.io/v1/storageclasses/{ns}-local")
        http.delete(f"/api/v1/nodes/{node}")


def test_a_bound_volume_is_protected_and_its_claim_is_lost_without_it(objs, http, ns):
    klass = f"{ns}-lost"
    objs.create(PVS, pv(f"{ns}-vol", "1Gi", klass))
    objs.create(objs.claims, pvc("data", "1Gi", klass))
    eventually(lambda: objs.phase(objs.claim("data")) == "Bound", "the claim bound")
    assert http.delete(f"{PVS}/{ns}-vol").status_code == 200  # held by its finalizer
    # A free volume deleted after it goes at once: by then pv-protection has seen both,
    # and kept the one that is Bound.
    objs.create(PVS, pv(f"{ns}-free", "1Gi", f"{ns}-unused"))
    http.delete(f"{PVS}/{ns}-free")
    eventually(lambda: objs.volume(f"{ns}-free") is None, "the free volume removed")
    volume = objs.volume(f"{ns}-vol")
    assert volume["metadata"]["deletionTimestamp"]
    assert volume["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]
    # Forced away (its finalizer removed by hand), it leaves its claim Lost.
    r = http.patch(f"{PVS}/{ns}-vol", json={"metadata": {"finalizers": None}},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    eventually(lambda: objs.volume(f"{ns}-vol") is None, "the volume gone")
    eventually(lambda: objs.phase(objs.claim("data")) == "Lost", "the claim Lost")
    ev = eventually(lambda: next((e for e in objs.events("data") if e["reason"] == "ClaimLost"), None),
                    "a ClaimLost event")
    assert ev["type"] == "Warning" and "Data on the volume is lost!" in ev["message"]


def test_a_claim_without_a_class_gets_the_default_class_made_later(objs, http, ns):
    # No class at all (not ""): DefaultStorageClass admission had none to give.
    claim = pvc("late", "1Gi", "")
    del claim["spec"]["storageClassName"]
    classes = [sc for sc in http.get("/apis/storage.k8s.io/v1/storageclasses").json()["items"]
               if (sc["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class")
               == "true"]
    if classes:
        pytest.skip("another test's default StorageClass exists")
    created = objs.create(objs.claims, claim)
    assert "storageClassName" not in created["spec"]
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {
          "name": f"{ns}-default", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
          "provisioner": "example.com/late"}
    objs.create("/apis/storage.k8s.io/v1/storageclasses", sc)
    try:
        got = eventually(lambda: objs.claim("late")["spec"].get("storageClassName"), "the default class")
        assert got == f"{ns}-default"
        eventually(lambda: any(e["reason"] == "ExternalProvisioning" for e in objs.events("late")),
                   "the claim handed to the class's provisioner")
    finally:
        http.delete(f"/apis/storage.k8s.io/v1/storageclasses/{ns}-default")
