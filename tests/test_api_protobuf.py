"""Protobuf request bodies (what client-go's typed clients send) through a real API server:
every write path takes them, and what is stored is what the JSON body would have stored.
Responses stay JSON."""
from __future__ import annotations

from tests.util import pb, pb_body

PROTOBUF = {"Content-Type": "application/vnd.kubernetes.protobuf",
            "Accept": "application/vnd.kubernetes.protobuf,application/json"}


def meta(name: str, *more: bytes) -> bytes:
    return pb(1, pb(1, name) + pb(8, b"") + b"".join(more))


def configmap(name: str, value: str, *more: bytes) -> bytes:
    return pb_body("v1", "ConfigMap", meta(name, *more), pb(2, pb(1, "k") + pb(2, value)))


def pod(name: str, *, node: str = "") -> bytes:
    spec = pb(2, pb(1, "c") + pb(2, "busybox")) + (pb(10, node) if node else b"")
    return pb_body("v1", "Pod", meta(name), pb(2, spec))


def test_create_and_update_from_protobuf_answer_json(http, ns):
    r = http.post(f"/api/v1/namespaces/{ns}/configmaps", content=configmap("c", "one"),
                  headers=PROTOBUF)
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == "application/json"
    created = r.json()
    assert created["data"] == {"k": "one"} and created["kind"] == "ConfigMap"

    rv = created["metadata"]["resourceVersion"]
    r = http.put(f"/api/v1/namespaces/{ns}/configmaps/c", headers=PROTOBUF,
                 content=configmap("c", "two", pb(6, rv)))
    assert r.status_code == 200, r.text
    assert http.get(f"/api/v1/namespaces/{ns}/configmaps/c").json()["data"] == {"k": "two"}

    r = http.put(f"/api/v1/namespaces/{ns}/configmaps/c", headers=PROTOBUF,
                 content=configmap("c", "three", pb(6, rv)))
    assert r.status_code == 409, r.text


def test_dry_run_create_from_protobuf_stores_nothing(http, ns):
    r = http.post(f"/api/v1/namespaces/{ns}/configmaps?dryRun=All", headers=PROTOBUF,
                  content=configmap("dry", "v"))
    assert r.status_code == 201, r.text
    assert http.get(f"/api/v1/namespaces/{ns}/configmaps/dry").status_code == 404


def test_binding_eviction_and_delete_options_in_protobuf(http, ns):
    for name in ("a", "b"):
        r = http.post(f"/api/v1/namespaces/{ns}/pods", content=pod(name), headers=PROTOBUF)
        assert r.status_code == 201, r.text
    r = http.post(f"/api/v1/namespaces/{ns}/pods/a/binding", headers=PROTOBUF,
                  content=pb_body("v1", "Binding", meta("a"), pb(2, pb(1, "Node") + pb(3, "n1"))))
    assert r.status_code == 201, r.text
    assert http.get(f"/api/v1/namespaces/{ns}/pods/a").json()["spec"]["nodeName"] == "n1"

    # gracePeriodSeconds 0 is a pointer set to zero: deletes at once, even on a node.
    r = http.post(f"/api/v1/namespaces/{ns}/pods/a/eviction", headers=PROTOBUF,
                  content=pb_body("policy/v1", "Eviction", meta("a"), pb(2, pb(1, 0))))
    assert r.status_code == 201, r.text
    assert http.get(f"/api/v1/namespaces/{ns}/pods/a").status_code == 404

    r = http.request("DELETE", f"/api/v1/namespaces/{ns}/pods/b", headers=PROTOBUF,
                     content=pb_body("v1", "DeleteOptions", pb(1, 0)))
    assert r.status_code == 200, r.text
    assert http.get(f"/api/v1/namespaces/{ns}/pods/b").status_code == 404


def test_bad_protobuf_is_400_an_unknown_kind_415_a_protobuf_patch_415(http, ns):
    r = http.post(f"/api/v1/namespaces/{ns}/configmaps", headers=PROTOBUF,
                  content=pb_body("v1", "ConfigMap", pb(1, b"\x0a\x09short")))
    assert r.status_code == 400, r.text
    assert r.json()["reason"] == "BadRequest"
    assert "metadata" in r.json()["message"]

    r = http.post(f"/api/v1/namespaces/{ns}/configmaps", headers=PROTOBUF,
                  content=pb_body("example.com/v1", "Widget", meta("j")))
    assert r.status_code == 415, r.text
    assert "Widget (example.com/v1)" in r.json()["message"]

    r = http.patch(f"/api/v1/namespaces/{ns}/configmaps/x", headers=PROTOBUF,
                   content=configmap("x", "v"))
    assert r.status_code == 415, r.text


def test_a_protobuf_body_of_another_kind_is_rejected_like_json(http, ns):
    json_r = http.post(f"/api/v1/namespaces/{ns}/configmaps",
                       json={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
    pb_r = http.post(f"/api/v1/namespaces/{ns}/configmaps", headers=PROTOBUF,
                     content=pb_body("v1", "Secret", meta("s")))
    assert pb_r.status_code == json_r.status_code
    assert pb_r.json()["reason"] == json_r.json()["reason"]
    assert pb_r.status_code >= 400
