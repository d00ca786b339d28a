"""Bad input gets a clear Status with the right code, and changes nothing."""
import random


from tests.util import pod


def status(r, code, reason=None):
    assert r.status_code == code, r.text
    body = r.json()
    assert body["kind"] == "Status" and body["code"] == code and body["status"] == "Failure"
    if reason:
        assert body["reason"] == reason
    return body


def test_malformed_json_is_bad_request(http, ns):
    r = http.post(f"/api/v1/namespaces/{ns}/pods", content=b'{"metadata": {',
                  headers={"content-type": "application/json"})
    status(r, 400, "BadRequest")


def test_yaml_body_is_accepted(http, ns):
    r = http.post(f"/api/v1/namespaces/{ns}/configmaps",
                  content=b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: yaml-body\ndata:\n  k: v\n",
                  headers={"content-type": "application/yaml"})
    assert r.status_code == 201 and r.json()["data"] == {"k": "v"}


def test_schema_invalid_lists_every_cause(http, ns):
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name", "labels": {"ok": "no way"}},
           "spec": {"containers": [{"name": "c"}, {"name": "c", "image": "x"}], "restartPolicy": "Sometimes"}}
    body = status(http.post(f"/api/v1/namespaces/{ns}/pods", json=bad), 422, "Invalid")
    fields = {c["field"] for c in body["details"]["causes"]}
    assert {"metadata.name", "spec.containers[0].image", "spec.containers[1].name", "spec.restartPolicy"} <= fields
    assert any(f.startswith("metadata.labels") for f in fields)
    assert body["details"]["kind"] == "Pod"
    assert http.get(f"/api/v1/namespaces/{ns}/pods/Bad_Name").status_code == 404


def test_wrong_types_are_invalid_not_500(http, ns):
    bad = {"metadata": {"name": "t"}, "spec": {"containers": "nope"}}
    status(http.post(f"/api/v1/namespaces/{ns}/pods", json=bad), 422, "Invalid")
    bad = {"metadata": {"name": "t"}, "data": {"k": 5}}
    status(http.post(f"/api/v1/namespaces/{ns}/configmaps", json=bad), 422, "Invalid")


def test_unknown_fields(http, ns):
    body = pod("uf")
    body["spec"]["bogus"] = 1
    r = http.post(f"/api/v1/namespaces/{ns}/pods?fieldValidation=Strict", json=body)
    st = status(r, 422, "Invalid")
    assert any("bogus" in c["message"] or "bogus" in c.get("field", "") for c in st["details"]["causes"])
    assert http.get(f"/api/v1/namespaces/{ns}/pods/uf").status_code == 404
    # Without Strict the unknown field is dropped with a warning, as Kubernetes does.
    r = http.post(f"/api/v1/namespaces/{ns}/pods", json=body)
    assert r.status_code == 201 and "bogus" not in r.json()["spec"]
    assert "bogus" in r.headers.get("warning", "")


def test_invalid_selectors_are_bad_request(http, ns):
    for sel in ("app in (a", "a b c", "=x", "!", "a=b=c"):
        status(http.get(f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": sel}), 400, "BadRequest")
    status(http.get(f"/api/v1/namespaces/{ns}/pods", params={"fieldSelector": "a=b=c,,"}), 400)


def test_unknown_resource_and_paths(http):
    status(http.get("/api/v1/widgets"), 404, "NotFound")
    status(http.get("/apis/nosuch.io/v1/things"), 404, "NotFound")
    status(http.get("/api/v2/pods"), 404)
    status(http.get("/api/v1/namespaces/default/pods/x/nosub"), 404)
    status(http.get("/api/v1/namespaces/default/nodes"), 404)


def test_body_too_large(http, ns):
    big = {"metadata": {"name": "big"}, "data": {"k": "x" * (3 * 1024 * 1024 + 10)}}
    status(http.post(f"/api/v1/namespaces/{ns}/configmaps", json=big), 413)
    assert http.get(f"/api/v1/namespaces/{ns}/configmaps/big").status_code == 404


def test_wrong_method(http, ns):
    status(http.put(f"/api/v1/namespaces/{ns}/pods", json={}), 405, "MethodNotAllowed")
    status(http.post(f"/api/v1/namespaces/{ns}/pods/x", json={}), 405)
    status(http.request("OPTIONS", f"/api/v1/namespaces/{ns}/pods"), 405, "MethodNotAllowed")
    assert http.get("/apis/apps/v1").json()["groupVersion"] == "apps/v1"
    # Read-only paths answer other methods, and unknown paths, with a Status too.
    status(http.post("/version", json={}), 405, "MethodNotAllowed")
    status(http.delete("/apis/apps/v1"), 405, "MethodNotAllowed")
    status(http.get("/no/such/path"), 404, "NotFound")
    # A subresource serves only its own verbs: deleting pods/x/status deletes nothing.
    assert http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("kept")).status_code == 201
    status(http.delete(f"/api/v1/namespaces/{ns}/pods/kept/status"), 405, "MethodNotAllowed")
    status(http.get(f"/api/v1/namespaces/{ns}/pods/kept/binding"), 405, "MethodNotAllowed")
    assert http.get(f"/api/v1/namespaces/{ns}/pods/kept").status_code == 200


def test_mismatched_identity(http, ns):
    r = http.post(f"/api/v1/namespaces/{ns}/pods", json={**pod("m"), "kind": "Service"})
    status(r, 400)
    r = http.post(f"/api/v1/namespaces/{ns}/pods", json={**pod("m"), "metadata": {"name": "m", "namespace": "other"}})
    status(r, 400)
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("m"))
    status(http.put(f"/api/v1/namespaces/{ns}/pods/m", json=pod("other")), 400)


def _snapshot(http):
    return {(p["metadata"].get("namespace"), p["metadata"]["name"], p["metadata"]["resourceVersion"])
            for kind in ("pods", "configmaps") for p in http.get(f"/api/v1/{kind}").json()["items"]}


def test_fuzz_no_5xx_and_nothing_stored(http, ns):
    """Throw broken bodies, selectors, query values and paths: never a 5xx, never a change."""
    rng = random.Random(1234)
    http.post(f"/api/v1/namespaces/{ns}/pods", json=pod("victim"))
    before = _snapshot(http)
    bodies = [b"", b"null", b"[]", b"1", b'"s"', b"{", b"\xff\xfe", b'{"metadata": 5}',
              b'{"metadata": {"name": 5}}', b'{"metadata": {"name": ""}}', b'{"metadata": {"labels": []}}',
              b'{"spec": null}', b'{"metadata":{"name":"x","namespace":5}}',
              b'{"metadata":{"name":"x"},"spec":{"containers":[{"name":"a","image":"b","ports":[{"containerPort":"x"}]}]}}',
              b'{"metadata":{"name":"x"},"spec":{"containers":[{"name":"a","image":"b","resources":{"limits":{"cpu":"lots"}}}]}}',
              b'{"metadata":{"name":"x"},"spec":{"containers":[null]}}',
              b'{"metadata":{"name":"x","finalizers":[1]}}', b'{"metadata":{"name":"x","resourceVersion":"abc"}}',
              b'{"metadata":{"name":"victim","resourceVersion":"1"},"spec":{}}',
              b'[{"op":"remove","path":"/nope"}]', b'[{"op":"bogus"}]', b'[{}]', b'{"$patch":"delete"}',
              b'{"spec":{"containers":[{"$patch":"delete"}]}}', b'{"metadata":{"$patch":"replace"}}']
    ctypes = ["application/json", "application/merge-patch+json", "application/json-patch+json",
              "application/strategic-merge-patch+json", "application/yaml", "text/plain", ""]
    paths = [f"/api/v1/namespaces/{ns}/pods", f"/api/v1/namespaces/{ns}/pods/victim",
             f"/api/v1/namespaces/{ns}/pods/victim/status", f"/api/v1/namespaces/{ns}/pods/victim/binding",
             f"/api/v1/namespaces/{ns}/configmaps", f"/apis/apps/v1/namespaces/{ns}/deployments/x/scale",
             "/api/v1/namespaces//pods", "/api/v1/namespaces/%00/pods", "/apis/apps", "/apis/apps/v1/x/y/z/w/v",
             "/api/v1/nodes/%2F", f"/api/v1/namespaces/{ns}/pods/victim/log"]
    params = [{}, {"labelSelector": "a in (b"}, {"fieldSelector": "x"}, {"limit": "-1"}, {"limit": "abc"},
              {"resourceVersion": "abc"}, {"resourceVersion": "-5"}, {"continue": "%%%"}, {"timeoutSeconds": "x"},
              {"dryRun": "Nope"}, {"fieldValidation": "Loose"}, {"gracePeriodSeconds": "x"},
              {"propagationPolicy": "Sideways"}, {"watch": "true", "resourceVersion": "abc"}]
    for _ in range(400):
        method = rng.choice(["POST", "PUT", "PATCH", "GET", "DELETE"])
        path, body, ctype, q = rng.choice(paths), rng.choice(bodies), rng.choice(ctypes), rng.choice(params)
        if (method in ("POST", "PUT", "PATCH") and path.endswith("/pods") and body.startswith(b"{")
                and b"victim" not in body):
            if rng.random() < 0.5:
                continue  # a valid-looking create could legitimately succeed; keep to broken ones
        if method == "POST" and "fieldValidation" not in q:
            q = {**q, "fieldValidation": "Strict"}  # else a stray field is dropped and the create is valid
        if method == "DELETE" and "dryRun" not in q:
            q = {**q, "dryRun": "All"} if rng.random() < 0.5 else {"gracePeriodSeconds": "x"}
        if method == "GET" and q.get("watch"):
            q = {**q, "timeoutSeconds": "1"}
        r = http.request(method, path, content=body if method != "GET" else None, params=q,
                         headers={"content-type": ctype} if ctype else {})
        assert r.status_code < 500, (method, path, body, ctype, q, r.status_code, r.text)
        if r.status_code >= 400:
            assert r.json()["kind"] == "Status"
    after = _snapshot(http)
    changed = {x for x in after ^ before if x[0] == ns}
    assert not changed, changed


def test_quantity_of_the_wrong_type_is_invalid_not_500(http, ns):
    """A quantity that is an object, a list or a boolean is a schema error (422), never a 500
    from the quantity parser (found by mutating pod bodies, issue 19)."""
    for value in ({}, [], True, {"a": 1}):
        for field in ("limits", "requests"):
            body = pod("q")
            body["spec"]["containers"][0]["resources"] = {field: {"memory": value}}
            st = status(http.post(f"/api/v1/namespaces/{ns}/pods", json=body), 422, "Invalid")
            assert any(c["field"] == f"spec.containers[0].resources.{field}[memory]"
                       for c in st["details"]["causes"]), st
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "q-node"},
            "status": {"capacity": {"cpu": []}}}
    status(http.post("/api/v1/nodes", json=node), 422, "Invalid")
    assert http.get(f"/api/v1/namespaces/{ns}/pods/q").status_code == 404


def test_delete_options_of_the_wrong_shape_are_bad_request(http, ns):
    # Found by schemathesis: a list for preconditions was a 500, and the object stayed.
    http.post(f"/api/v1/namespaces/{ns}/configmaps", json={"metadata": {"name": "keep"}})
    for options in ({"preconditions": []}, {"preconditions": {"uid": 5}}, {"gracePeriodSeconds": "x"},
                    {"gracePeriodSeconds": True}, {"orphanDependents": 1}, {"dryRun": "All"},
                    {"dryRun": [1]}, {"propagationPolicy": {}}):
        for path in (f"/api/v1/namespaces/{ns}/configmaps/keep", f"/api/v1/namespaces/{ns}/configmaps"):
            status(http.request("DELETE", path, json=options), 400, "BadRequest")
    assert http.get(f"/api/v1/namespaces/{ns}/configmaps/keep").status_code == 200


def test_a_csr_usage_of_the_wrong_type_is_invalid_not_500(http):
    csr = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
           "metadata": {"name": "bad-usages"},
           "spec": {"request": "", "signerName": "example.com/x", "usages": [["digital signature"], {}]}}
    status(http.post("/apis/certificates.k8s.io/v1/certificatesigningrequests", json=csr), 422, "Invalid")
