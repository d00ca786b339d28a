"""An operator written with kopf manages a custom resource on a real API server.

tests/kopf_operator.py is run as `kopf run --standalone` (kopf's own CLI, a real
subprocess, stopped by PID) with a kubeconfig for the session's API server, after its
CustomResourceDefinition is created and Established. What kopf needs from the server is
what it needs from Kubernetes: plain discovery (/api, /apis, APIResourceList with
singularName and the status subresource), list + watch with allowWatchBookmarks and
resourceVersion, JSON merge patch of the object and of its status subresource, JSON patch
with a `test` of resourceVersion for its finalizer, core/v1 Events, and finalizers that
hold a deleted object until they are removed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from tests.procs import default_service_account, wait_for

GROUP, VERSION, PLURAL, KIND = "kopf.minik8s.io", "v1", "greetings", "Greeting"
CRD_NAME = f"{PLURAL}.{GROUP}"
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
LAST_HANDLED = "kopf.zalando.org/last-handled-configuration"
OPERATOR = os.path.join(os.path.dirname(__file__), "kopf_operator.py")

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": GROUP, "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "greeting", "kind": KIND, "shortNames": ["gr"]},
        "versions": [{
            "name": VERSION, "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "required": ["message"],
                             "properties": {"message": {"type": "string"}}},
                    # kopf keeps its progress in status.kopf, as its documentation's CRDs allow.
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                }}},
        }],
    },
}


def established(http) -> bool:
    r = http.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
    conds = r.json().get("status", {}).get("conditions", []) if r.status_code == 200 else []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conds)


@pytest.fixture(scope="module")
def admin(apiserver):
    with apiserver.client() as c:
        yield c


@pytest.fixture(scope="module")
def crd(admin):
    r = admin.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=CRD)
    assert r.status_code == 201, r.text
    wait_for(lambda: established(admin), timeout=30, what="the Greeting CRD to be Established")
    yield CRD_NAME
    admin.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")


@pytest.fixture(scope="module")
def namespace(admin):
    name = "kopf-" + uuid.uuid4().hex[:8]
    r = admin.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    default_service_account(admin, name)
    return name


class Operator:
    """`kopf run` of tests/kopf_operator.py in its own process, watching one namespace."""

    def __init__(self, kubeconfig: str, namespace: str, gate_dir: str, log_path: str):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        env = {**os.environ, "KUBECONFIG": kubeconfig, "GREETING_GATE_DIR": gate_dir}
        # --standalone: no peering objects (kopf's KopfPeering CRDs are not served here).
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", namespace,
             "--verbose", OPERATOR],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def tail(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-6000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def operator(apiserver, crd, namespace, tmp_path_factory):
    d = tmp_path_factory.mktemp("kopf")
    kubeconfig = apiserver.write_kubeconfig(d / "kubeconfig", namespace=namespace)
    gate = d / "gates"
    gate.mkdir()
    op = Operator(kubeconfig, namespace, str(gate), str(d / "operator.log"))
    op.gate = gate
    yield op
    # The operator's finalizer is on every Greeting left: let it run their delete handlers,
    # so that deleting the CRD afterwards is not held by objects no one finalizes.
    try:
        with apiserver.client() as c:
            for o in c.get(path(namespace)).json().get("items", []):
                (gate / o["metadata"]["name"]).touch()
                c.delete(path(namespace, o["metadata"]["name"]))
            wait_for(lambda: c.get(path(namespace)).json()["items"] == [], timeout=60,
                     what="the operator to finalize the Greetings left")
    finally:
        op.stop()


def path(namespace: str, name: str = "", sub: str = "") -> str:
    p = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return p + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def get(http, p: str) -> dict | None:
    r = http.get(p)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()


def wait(operator, cond, what: str, timeout: float = 60):
    """Poll `cond` until it is truthy; on a timeout, show what the operator logged."""
    try:
        return wait_for(cond, timeout=timeout, interval=0.1, what=what)
    except TimeoutError:
        alive = "running" if operator.proc.poll() is None else f"exited {operator.proc.returncode}"
        pytest.fail(f"timed out waiting for {what}; the operator ({alive}) logged:\n{operator.tail()}")


def create_greeting(http, namespace: str, name: str, message: str) -> dict:
    r = http.post(path(namespace), json={"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                                         "metadata": {"name": name}, "spec": {"message": message}})
    assert r.status_code == 201, r.text
    return r.json()


def ready(http, operator, namespace: str, name: str) -> dict:
    return wait(operator, lambda: (o := get(http, path(namespace, name))) and
                o.get("status", {}).get("phase") == "Ready" and o, f"{name} to be Ready")


def configmap(http, namespace: str, name: str) -> dict | None:
    return get(http, f"/api/v1/namespaces/{namespace}/configmaps/{name}-greeting")


def test_create_makes_an_owned_configmap_and_writes_status(admin, operator, namespace):
    created = create_greeting(admin, namespace, "hello", "hi there")
    obj = ready(admin, operator, namespace, "hello")

    assert obj["status"]["message"] == "hi there"
    assert obj["status"]["configMap"] == "hello-greeting"
    # kopf puts its finalizer on (the operator has a delete handler) and records what it handled.
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert json.loads(obj["metadata"]["annotations"][LAST_HANDLED])["spec"] == {"message": "hi there"}

    cm = configmap(admin, namespace, "hello")
    assert cm is not None and cm["data"] == {"message": "hi there"}
    assert cm["metadata"]["ownerReferences"] == [{
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": "hello",
        "uid": created["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]

    # The handler's kopf.info() is a core/v1 Event about the Greeting, posted in the background.
    def events():
        r = admin.get(f"/api/v1/namespaces/{namespace}/events",
                      params={"fieldSelector": "involvedObject.name=hello"})
        assert r.status_code == 200, r.text
        return [e for e in r.json()["items"] if e["reason"] == "ConfigMapCreated"]
    evs = wait(operator, events, "the operator's event about hello")
    assert (evs[0]["type"], evs[0]["message"]) == ("Normal", "made ConfigMap hello-greeting")
    assert evs[0]["involvedObject"]["kind"] == KIND
    assert evs[0]["involvedObject"]["apiVersion"] == f"{GROUP}/{VERSION}"
    assert evs[0]["involvedObject"]["uid"] == created["metadata"]["uid"]


def test_update_changes_the_configmap_and_status(admin, operator, namespace):
    create_greeting(admin, namespace, "upd", "one")
    ready(admin, operator, namespace, "upd")

    r = admin.patch(path(namespace, "upd"), json={"spec": {"message": "two"}},
                    headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["generation"] == 2

    wait(operator, lambda: configmap(admin, namespace, "upd")["data"] == {"message": "two"},
         "the ConfigMap to follow the new message")
    obj = wait(operator, lambda: (o := get(admin, path(namespace, "upd")))["status"]["message"] == "two" and o,
               "status.message to follow the new message")
    assert obj["status"]["phase"] == "Ready"
    assert json.loads(obj["metadata"]["annotations"][LAST_HANDLED])["spec"] == {"message": "two"}


def test_delete_waits_for_the_finalizer_handler(admin, operator, namespace):
    create_greeting(admin, namespace, "bye", "so long")
    ready(admin, operator, namespace, "bye")

    r = admin.delete(path(namespace, "bye"))
    assert r.status_code == 200, r.text  # held by the finalizer: 200, as Kubernetes
    assert r.json()["metadata"]["deletionTimestamp"]

    # The delete handler runs and is retried while its gate is closed: kopf records the
    # retries on the object, which its finalizer keeps, with its ConfigMap.
    def retried():
        o = get(admin, path(namespace, "bye"))
        progress = o["metadata"].get("annotations", {}).get("kopf.zalando.org/delete")
        return o if progress and json.loads(progress).get("retries", 0) >= 1 else None
    held = wait(operator, retried, "the delete handler to be retried")
    assert held["metadata"]["deletionTimestamp"]
    assert FINALIZER in held["metadata"]["finalizers"]
    assert configmap(admin, namespace, "bye") is not None

    (operator.gate / "bye").touch()
    wait(operator, lambda: get(admin, path(namespace, "bye")) is None, "bye to be gone")
    assert configmap(admin, namespace, "bye") is None
