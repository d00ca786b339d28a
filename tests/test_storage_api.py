"""PersistentVolumes, PersistentVolumeClaims and StorageClasses through the API server
and the real kubectl: defaults, the protection finalizers, DefaultStorageClass admission,
Kubernetes' 422s and immutable fields, and kubectl's columns.

PVs and StorageClasses are cluster-scoped and the server is shared by the session, so
every test names its cluster objects after its namespace.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

KUBECTL = shutil.which("kubectl")
PVS, SCS = "/api/v1/persistentvolumes", "/apis/storage.k8s.io/v1/storageclasses"
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}


def pv(name: str, size: str = "1Gi", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": f"/tmp/{name}"}, **spec}}


def pvc(name: str, size: str = "1Gi", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, **spec}}


def sc(name: str, **fields) -> dict:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": "example.com/disk", **fields}


def causes(r) -> dict[str, str]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    return {c["field"]: c["message"] for c in body["details"]["causes"]}


def test_defaults_status_and_protection_finalizers(http, ns):
    r = http.post(PVS, json=pv(f"{ns}-a"))
    assert r.status_code == 201, r.text
    obj = r.json()
    assert obj["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert obj["spec"]["volumeMode"] == "Filesystem"
    assert obj["status"] == {"phase": "Pending"}
    assert obj["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]
    r = http.post(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", json=pvc("c", storageClassName=""))
    assert r.status_code == 201, r.text
    claim = r.json()
    assert claim["spec"]["volumeMode"] == "Filesystem" and claim["status"] == {"phase": "Pending"}
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    assert claim["spec"]["storageClassName"] == ""  # "" asks for no class: admission keeps it
    r = http.post(SCS, json=sc(f"{ns}-plain"))
    assert r.status_code == 201, r.text
    assert (r.json()["reclaimPolicy"], r.json()["volumeBindingMode"]) == ("Delete", "Immediate")
    http.delete(f"{SCS}/{ns}-plain")


def test_default_storage_class_admission_fills_a_missing_class(http, ns):
    url = f"/api/v1/namespaces/{ns}/persistentvolumeclaims"
    default = sc(f"{ns}-default")
    default["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    assert http.post(SCS, json=default).status_code == 201
    try:
        r = http.post(url, json=pvc("implicit"))
        assert r.json()["spec"]["storageClassName"] == f"{ns}-default"
        r = http.post(url, json=pvc("explicit", storageClassName="other"))
        assert r.json()["spec"]["storageClassName"] == "other"
    finally:
        http.delete(f"{SCS}/{ns}-default")


def test_bad_objects_get_kubernetes_422s(http, ns):
    bad = pv(f"{ns}-bad")
    del bad["spec"]["accessModes"], bad["spec"]["hostPath"]
    bad["spec"]["persistentVolumeReclaimPolicy"] = "Shred"
    assert causes(http.post(PVS, json=bad)) == {
        "spec.accessModes": "Required value",
        "spec.persistentVolumeReclaimPolicy":
            'Unsupported value: "Shred": supported values: "Delete", "Recycle", "Retain"',
        "spec": "Required value: must specify a volume type"}
    two = pv(f"{ns}-two", nfs={"server": "nfs.example", "path": "/x"})
    assert causes(http.post(PVS, json=two)) == {"spec.nfs": "Forbidden: may not specify more than 1 volume type"}
    local = pv(f"{ns}-local", local={"path": "/mnt/disk"})
    del local["spec"]["hostPath"]
    assert causes(http.post(PVS, json=local)) == {
        "spec.nodeAffinity": "Required value: Local volume requires node affinity"}

    url = f"/api/v1/namespaces/{ns}/persistentvolumeclaims"
    claim = pvc("bad")
    claim["spec"] = {"accessModes": [], "resources": {}}
    assert causes(http.post(url, json=claim)) == {
        "spec.accessModes": "Required value: at least 1 access mode is required",
        "spec.resources[storage]": "Required value"}
    assert causes(http.post(url, json=pvc("zero", "0"))) == {
        "spec.resources[storage]": 'Invalid value: "0": must be greater than zero'}
    assert causes(http.post(SCS, json={**sc(f"{ns}-bad"), "reclaimPolicy": "Recycle",
                                       "provisioner": ""})) == {
        "provisioner": "Required value",
        "reclaimPolicy": 'Unsupported value: "Recycle": supported values: "Delete", "Retain"'}
    assert http.get(f"{PVS}/{ns}-bad").status_code == 404
    assert http.get(f"{url}/bad").status_code == 404


def test_a_claims_spec_is_immutable_but_for_volume_name_and_a_larger_request(http, ns):
    url = f"/api/v1/namespaces/{ns}/persistentvolumeclaims"
    live = http.post(url, json=pvc("c", storageClassName="")).json()
    changed = {**live, "spec": {**live["spec"], "accessModes": ["ReadWriteMany"]}}
    assert causes(http.put(f"{url}/c", json=changed)) == {
        "spec": "Forbidden: spec is immutable after creation except resources.requests and "
                "volumeAttributesClassName for bound claims"}
    named = {**live, "spec": {**live["spec"], "volumeName": "some-pv"}}
    r = http.put(f"{url}/c", json=named)
    assert r.status_code == 200, r.text
    renamed = {**r.json(), "spec": {**r.json()["spec"], "volumeName": "another"}}
    assert "spec" in causes(http.put(f"{url}/c", json=renamed))
    # Bound, a claim's request may grow but not shrink.
    bound = http.put(f"{url}/c/status", json={**r.json(), "status": {"phase": "Bound"}}).json()
    bigger = {**bound, "spec": {**bound["spec"], "resources": {"requests": {"storage": "2Gi"}}}}
    r = http.put(f"{url}/c", json=bigger)
    assert r.status_code == 200, r.text
    smaller = {**r.json(), "spec": {**r.json()["spec"], "resources": {"requests": {"storage": "1Gi"}}}}
    assert causes(http.put(f"{url}/c", json=smaller)) == {
        "spec.resources.requests.storage": "Forbidden: field can not be less than previous value"}


def test_a_volumes_source_and_a_classs_provisioner_are_immutable(http, ns):
    live = http.post(PVS, json=pv(f"{ns}-imm")).json()
    moved = {**live, "spec": {**live["spec"], "hostPath": {"path": "/elsewhere"}}}
    assert causes(http.put(f"{PVS}/{ns}-imm", json=moved)) == {
        "spec.persistentvolumesource": "Forbidden: spec.persistentvolumesource is immutable after creation"}
    live = http.post(SCS, json=sc(f"{ns}-imm")).json()
    r = http.put(f"{SCS}/{ns}-imm", json={**live, "provisioner": "example.com/other",
                                          "volumeBindingMode": "WaitForFirstConsumer"})
    assert causes(r) == {"provisioner": "Forbidden: updates to provisioner are forbidden.",
                         "volumeBindingMode": 'Invalid value: "WaitForFirstConsumer": field is immutable'}
    http.delete(f"{SCS}/{ns}-imm")


def test_tables_have_kubectls_columns(http, ns):
    http.post(PVS, json=pv(f"{ns}-cols", "5Gi", storageClassName="slow",
                           accessModes=["ReadWriteMany", "ReadWriteOnce"],
                           claimRef={"namespace": ns, "name": "data"}))
    t = http.get(f"{PVS}/{ns}-cols", headers=TABLE).json()
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name", "Capacity", "Access Modes", "Reclaim Policy", "Status", "Claim", "StorageClass",
        "VolumeAttributesClass", "Reason", "Age", "VolumeMode"]
    assert t["rows"][0]["cells"][:9] == [f"{ns}-cols", "5Gi", "RWO,RWX", "Retain", "Pending",
                                         f"{ns}/data", "slow", "<unset>", ""]
    http.post(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", json=pvc("data", storageClassName="slow"))
    t = http.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", headers=TABLE).json()
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name", "Status", "Volume", "Capacity", "Access Modes", "StorageClass",
        "VolumeAttributesClass", "Age", "VolumeMode"]
    assert t["rows"][0]["cells"][:7] == ["data", "Pending", "", "", "", "slow", "<unset>"]
    default = sc(f"{ns}-cols", volumeBindingMode="WaitForFirstConsumer")
    default["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    http.post(SCS, json=default)
    try:
        t = http.get(f"{SCS}/{ns}-cols", headers=TABLE).json()
        assert [c["name"] for c in t["columnDefinitions"]] == [
            "Name", "Provisioner", "ReclaimPolicy", "VolumeBindingMode", "AllowVolumeExpansion", "Age"]
        assert t["rows"][0]["cells"][:5] == [f"{ns}-cols (default)", "example.com/disk", "Delete",
                                             "WaitForFirstConsumer", "false"]
    finally:
        http.delete(f"{SCS}/{ns}-cols")


@pytest.mark.kubectl
def test_kubectl_creates_and_gets_storage_objects(apiserver, ns, tmp_path):
    if not KUBECTL:
        pytest.skip("kubectl is not installed")
    import yaml

    config = apiserver.write_kubeconfig(tmp_path / "kubeconfig", namespace=ns)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

    def kubectl(*args: str, stdin: str | None = None) -> str:
        r = subprocess.run([KUBECTL, "--kubeconfig", config, "--cache-dir", str(tmp_path / "cache"), *args],
                           capture_output=True, text=True, env=env, timeout=60, input=stdin)
        assert r.returncode == 0, r.stderr
        return r.stdout

    docs = [pv(f"{ns}-k", "2Gi", storageClassName=f"{ns}-k"), pvc("claim", storageClassName=f"{ns}-k"),
            sc(f"{ns}-k")]
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    try:
        lines = kubectl("get", "pv", f"{ns}-k").splitlines()
        assert lines[0].split() == ["NAME", "CAPACITY", "ACCESS", "MODES", "RECLAIM", "POLICY", "STATUS",
                                    "CLAIM", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "REASON", "AGE"]
        assert lines[1].split()[:6] == [f"{ns}-k", "2Gi", "RWO", "Retain", "Pending", f"{ns}-k"]
        lines = kubectl("get", "pvc").splitlines()
        assert lines[0].split() == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES",
                                    "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"]
        assert lines[1].split()[:4] == ["claim", "Pending", f"{ns}-k", "<unset>"]
        lines = kubectl("get", "sc", f"{ns}-k").splitlines()
        assert lines[0].split() == ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE",
                                    "ALLOWVOLUMEEXPANSION", "AGE"]
        assert lines[1].split()[:5] == [f"{ns}-k", "example.com/disk", "Delete", "Immediate", "false"]
        # kubectl's strategic merge patch of a claim's labels.
        kubectl("label", "pvc", "claim", "tier=db")
        assert kubectl("get", "pvc", "claim", "-o", "jsonpath={.metadata.labels.tier}") == "db"
    finally:
        kubectl("delete", "sc", f"{ns}-k")


def test_the_example_manifest_is_accepted(http, ns):
    import yaml

    path = os.path.join(os.path.dirname(__file__), "..", "manifests", "local-path-pvc.yaml")
    with open(path) as f:
        docs = list(yaml.safe_load_all(f))
    plurals = {"PersistentVolumeClaim": "persistentvolumeclaims", "Pod": "pods"}
    for obj in docs:
        r = http.post(f"/api/v1/namespaces/{ns}/{plurals[obj['kind']]}?dryRun=All", json=obj)
        assert r.status_code == 201, r.text
