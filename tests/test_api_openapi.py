"""/openapi/v3 and /openapi/v2, plain discovery, and the node-side endpoints' shapes
(pods/log, pods/exec over WebSocket)."""
from __future__ import annotations

import json

import orjson
import pytest
from websockets.exceptions import InvalidStatus
from client.wsclient import connect

from apiserver import registry
from tests.util import pod


@pytest.fixture(scope="module")
def documents(apiserver):
    with apiserver.client() as c:
        index = c.get("/openapi/v3").json()["paths"]
        return {p: c.get(v["serverRelativeURL"]) for p, v in index.items()}


def test_index_names_a_document_per_group_version(documents):
    # Custom resources' groups (tests/test_crd.py's, in *.example.com) may come and go.
    built_in = {p for p in documents if not p.split("/")[1].endswith(".example.com")}
    assert built_in == {"api/v1", "apis/apps/v1", "apis/coordination.k8s.io/v1",
                        "apis/discovery.k8s.io/v1",
                        "apis/rbac.authorization.k8s.io/v1", "apis/authorization.k8s.io/v1",
                        "apis/authentication.k8s.io/v1", "apis/batch/v1",
                        "apis/certificates.k8s.io/v1", "apis/policy/v1", "apis/storage.k8s.io/v1",
                        "apis/apiextensions.k8s.io/v1", "apis/autoscaling/v1", "apis/autoscaling/v2",
                        "apis/apiregistration.k8s.io/v1", "apis/flowcontrol.apiserver.k8s.io/v1"}
    for r in documents.values():
        assert r.status_code == 200
        assert r.headers["cache-control"].startswith("public, immutable")  # fetched by its hash


def test_every_resource_patch_declares_field_validation_and_strategic_merge(documents):
    for rt in registry.RESOURCES:
        if rt.verbs == ("create",):
            continue  # the review kinds: create only, nothing to patch
        doc = documents["api/v1" if not rt.group else f"apis/{rt.group}/{rt.version}"].json()
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        item = "/namespaces/{namespace}/" if rt.namespaced else "/"
        prefix = "/api/v1" if not rt.group else f"/apis/{rt.group}/{rt.version}"
        patch = doc["paths"][f"{prefix}{item}{rt.plural}/{{name}}"]["patch"]
        assert patch["x-kubernetes-group-version-kind"] == gvk
        assert "fieldValidation" in {p["name"] for p in patch["parameters"] if p["in"] == "query"}
        assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
        schemas = [s for s in doc["components"]["schemas"].values()
                   if gvk in s.get("x-kubernetes-group-version-kind", [])]
        assert len(schemas) == 1, rt.kind


def test_schemas_are_openapi_3_with_patch_extensions(documents):
    doc = documents["apis/apps/v1"].json()
    schemas = doc["components"]["schemas"]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    strategy = schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]
    assert strategy["x-kubernetes-patch-strategy"] == "retainKeys"
    assert strategy["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"}]
    text = documents["apis/apps/v1"].text
    assert '"null"' not in text  # JSON Schema's nullable type lists are gone
    for ref in set(part.split('"')[0] for part in text.split('"$ref":"')[1:]):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


def _fields(buf: bytes):
    """(field number, value) of one protobuf message: ints for varints, bytes else."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        if key & 7 == 0:
            value, i = _varint(buf, i)
        else:
            assert key & 7 == 2, key
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        yield key >> 3, value


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        n |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not b & 0x80:
            return n, i


def test_openapi_v2_json_has_every_served_kind_and_resolving_refs(http):
    r = http.get("/openapi/v2", headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["swagger"] == "2.0"
    defs = doc["definitions"]
    gvks = [g for d in defs.values() for g in d.get("x-kubernetes-group-version-kind", [])]
    for rt in registry.RESOURCES:
        assert {"group": rt.group, "version": rt.version, "kind": rt.kind} in gvks, rt.kind
    refs = [m for m in json.dumps(defs).split('"$ref": "')[1:]]
    assert refs and all(ref.split('"')[0].removeprefix("#/definitions/") in defs for ref in refs)
    assert defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] == {
        "type": "string", "format": "int-or-string"}
    assert defs["io.k8s.api.core.v1.ConfigMap"]["properties"]["data"]["type"] == "object"
    assert "name" in defs["io.k8s.api.core.v1.Container"]["required"]
    again = http.get("/openapi/v2", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


def test_openapi_v2_protobuf_is_gnostic_document_with_the_same_definitions(http):
    # What client-go's OpenAPISchema() asks for, and parses whatever comes back as.
    r = http.get("/openapi/v2", headers={
        "Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    top = dict(_fields(r.content))
    assert top[1] == b"2.0"
    names = {}
    for _, named in _fields(top[9]):  # Definitions.additional_properties: NamedSchema
        entry = dict(_fields(named))
        names[entry[1].decode()] = entry[2]
    as_json = http.get("/openapi/v2").json()["definitions"]
    assert set(names) == set(as_json)
    pod = {n: v for n, v in _fields(names["io.k8s.api.core.v1.Pod"]) if n != 31}
    assert dict(_fields(pod[22])) == {1: b"object"}  # Schema.type
    extensions = {dict(_fields(v))[1]: dict(_fields(dict(_fields(v))[2]))[2]
                  for n, v in _fields(names["io.k8s.api.core.v1.Pod"]) if n == 31}
    assert json.loads(extensions[b"x-kubernetes-group-version-kind"]) == [
        {"group": "", "kind": "Pod", "version": "v1"}]


def test_unknown_document_is_not_found(http):
    r = http.get("/openapi/v3/apis/example.com/v1")
    assert r.status_code == 404 and r.json()["reason"] == "NotFound"
    assert http.get("/openapi/v3").headers["cache-control"] == "no-cache, private"


def test_log_of_a_pod_that_never_ran_is_empty(http, ns):
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("p"))
    r = http.get(f"/api/v1/namespaces/{ns}/pods/p/log")
    assert (r.status_code, r.text) == (200, "")
    r = http.get(f"/api/v1/namespaces/{ns}/pods/p/log", params={"container": "nope"})
    assert r.status_code == 400 and r.json()["message"] == "container nope is not valid for pod p"
    assert http.get(f"/api/v1/namespaces/{ns}/pods/nope/log").status_code == 404
    r = http.get(f"/api/v1/namespaces/{ns}/pods/p/exec", params={"command": "true"})
    assert r.status_code == 400 and r.json()["message"] == "Upgrade request required"


def ws_url(apiserver, ns: str, name: str) -> str:
    return apiserver.ws_url(
        f"/api/v1/namespaces/{ns}/pods/{name}/exec?command=echo&command=hi&stdout=true&stderr=true")


@pytest.mark.parametrize("protocol", ["v5.channel.k8s.io", "v4.channel.k8s.io"])
def test_exec_answers_on_the_error_channel(apiserver, http, ns, protocol):
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("p", node="node-x"))
    with connect(ws_url(apiserver, ns, "p"), subprotocols=[protocol, "base64.channel.k8s.io"],
                 ssl=apiserver.ws_ssl()) as ws:
        assert ws.subprotocol == protocol
        frame = ws.recv(timeout=10)
    assert frame[0] == 3  # the error channel
    status = orjson.loads(frame[1:])
    assert (status["kind"], status["status"], status["code"]) == ("Status", "Failure", 400)
    assert status["message"] == 'no kubelet is connected to serve pods on node "node-x"'


def test_exec_refuses_before_the_upgrade(apiserver, http, ns):
    with pytest.raises(InvalidStatus) as err:
        connect(ws_url(apiserver, ns, "missing"), subprotocols=["v5.channel.k8s.io"], ssl=apiserver.ws_ssl())
    assert err.value.response.status_code == 404
    assert json.loads(err.value.response.body)["message"] == 'pods "missing" not found'
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("p"))
    with pytest.raises(InvalidStatus) as err:
        connect(ws_url(apiserver, ns, "p"), subprotocols=["channel.k8s.io"], ssl=apiserver.ws_ssl())
    assert err.value.response.status_code == 400


def test_plain_discovery_names_the_group_of_subresources_from_other_groups(http):
    core = {r["name"]: r for r in http.get("/api/v1").json()["resources"]}
    assert (core["pods/eviction"]["group"], core["pods/eviction"]["version"],
            core["pods/eviction"]["kind"]) == ("policy", "v1", "Eviction")
    assert "group" not in core["pods/status"] and core["pods/status"]["kind"] == "Pod"
    assert "group" not in core["pods/binding"] and core["pods/binding"]["kind"] == "Binding"
    apps = {r["name"]: r for r in http.get("/apis/apps/v1").json()["resources"]}
    assert (apps["deployments/scale"]["group"], apps["deployments/scale"]["kind"]) == ("autoscaling", "Scale")
