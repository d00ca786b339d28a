"""Server-side apply and managedFields, at the HTTP level."""
from __future__ import annotations

import json

import pytest

from apiserver import apply
from tests.util import deployment

APPLY = {"content-type": "application/apply-patch+yaml"}


def url(ns: str, name: str = "web") -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"


def do_apply(http, ns, body, manager="alice", name="web", **params):
    return http.patch(url(ns, name), content=json.dumps(body), headers=APPLY,
                      params={"fieldManager": manager, **params})


def owned(obj: dict, manager: str, operation: str | None = None) -> set[str]:
    """The paths `manager` owns, printed as Kubernetes prints them."""
    for m in obj["metadata"].get("managedFields") or []:
        if m["manager"] == manager and operation in (None, m["operation"]):
            return {apply.path_string(p) for p in apply.parse_fields_v1(m["fieldsV1"])}
    return set()


def test_apply_creates_then_updates(http, ns):
    r = do_apply(http, ns, deployment("web"))
    assert r.status_code == 201, r.text
    created = r.json()
    assert owned(created, "alice", "Apply") >= {".spec.replicas", ".metadata.labels.app",
                                                '.spec.template.spec.containers[name="web"].image'}
    assert ".spec.progressDeadlineSeconds" not in owned(created, "alice")  # defaults have no owner
    r = do_apply(http, ns, deployment("web", replicas=2))
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["replicas"] == 2
    assert r.json()["metadata"]["uid"] == created["metadata"]["uid"]


def test_apply_accepts_yaml(http, ns):
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  a: '1'\n"
    r = http.patch(f"/api/v1/namespaces/{ns}/configmaps/cm", content=body, headers=APPLY,
                   params={"fieldManager": "alice"})
    assert r.status_code == 201, r.text
    assert r.json()["data"] == {"a": "1"}


def test_an_apply_that_changes_nothing_writes_nothing(http, ns):
    rv = do_apply(http, ns, deployment("web")).json()["metadata"]["resourceVersion"]
    again = do_apply(http, ns, deployment("web")).json()
    assert again["metadata"]["resourceVersion"] == rv


def test_apply_needs_a_field_manager_and_force_needs_apply(http, ns):
    r = http.patch(url(ns), content=json.dumps(deployment("web")), headers=APPLY)
    assert r.status_code == 422
    assert r.json()["details"]["causes"] == [{"reason": "FieldValueRequired", "field": "fieldManager",
                                              "message": "Required value: is required for apply patch"}]
    r = http.patch(url(ns), json={"spec": {}}, params={"force": "true"},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "force"


def test_apply_refuses_managed_fields_and_a_stale_resource_version(http, ns):
    body = deployment("web")
    body["metadata"]["managedFields"] = []
    assert do_apply(http, ns, body).status_code == 400
    do_apply(http, ns, deployment("web"))
    body = deployment("web", replicas=3)
    body["metadata"]["resourceVersion"] = "1"
    r = do_apply(http, ns, body)
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"


def test_conflict_names_each_field_and_owner(http, ns):
    do_apply(http, ns, deployment("web"))
    r = do_apply(http, ns, deployment("web", replicas=5, image="nginx:1.28"), manager="bob")
    assert r.status_code == 409
    status = r.json()
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Apply failed with 2 conflicts: conflicts with "alice":\n- .spec.replicas\n'
        '- .spec.template.spec.containers[name="web"].image')
    assert status["details"]["causes"] == [
        {"type": "FieldManagerConflict", "message": 'conflict with "alice"', "field": ".spec.replicas"},
        {"type": "FieldManagerConflict", "message": 'conflict with "alice"',
         "field": '.spec.template.spec.containers[name="web"].image'}]
    assert http.get(url(ns)).json()["spec"]["replicas"] == 1


def test_applying_the_same_value_shares_the_field(http, ns):
    do_apply(http, ns, deployment("web"))
    r = do_apply(http, ns, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                            "spec": {"replicas": 1}}, manager="bob")
    assert r.status_code == 200, r.text
    assert ".spec.replicas" in owned(r.json(), "alice") and ".spec.replicas" in owned(r.json(), "bob")


def test_force_takes_the_field_from_its_owner(http, ns):
    do_apply(http, ns, deployment("web"))
    r = do_apply(http, ns, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                            "spec": {"replicas": 4}}, manager="bob", force="true")
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["replicas"] == 4
    assert owned(r.json(), "bob") == {".spec.replicas"}
    assert ".spec.replicas" not in owned(r.json(), "alice")


def test_update_managers_conflict_too_and_updates_take_fields(http, ns):
    r = http.post(f"/apis/apps/v1/namespaces/{ns}/deployments", json=deployment("web"),
                  params={"fieldManager": "creator"})
    assert ".spec.replicas" in owned(r.json(), "creator", "Update")
    r = do_apply(http, ns, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                            "spec": {"replicas": 2}})
    assert r.status_code == 409
    assert r.json()["message"] == ('Apply failed with 1 conflict: conflict with "creator" using apps/v1: '
                                   '.spec.replicas')
    # An update takes what it changes from everyone else, without conflicts.
    r = http.patch(url(ns), json={"spec": {"replicas": 3}}, params={"fieldManager": "scaler"},
                   headers={"content-type": "application/merge-patch+json"})
    assert owned(r.json(), "scaler", "Update") == {".spec.replicas"}
    assert ".spec.replicas" not in owned(r.json(), "creator")
    # A PUT that does not send managedFields keeps them.
    obj = r.json()
    del obj["metadata"]["managedFields"]
    obj["metadata"]["labels"]["new"] = "x"
    r = http.put(url(ns), json=obj, params={"fieldManager": "putter"})
    assert owned(r.json(), "putter") == {".metadata.labels.new"}
    assert owned(r.json(), "scaler") == {".spec.replicas"}


def test_fields_no_longer_applied_are_removed_unless_someone_else_owns_them(http, ns):
    body = deployment("web")
    body["metadata"]["labels"].update(tier="front", team="a")
    body["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    do_apply(http, ns, body)
    r = http.patch(url(ns), json={"metadata": {"labels": {"team": "a"}}}, params={"fieldManager": "labeller"},
                   headers={"content-type": "application/merge-patch+json"})
    assert ".metadata.labels.team" not in owned(r.json(), "labeller")  # no change: nothing taken
    do_apply(http, ns, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "web", "labels": {"team": "a"}}}, manager="labeller")  # now shared
    r = do_apply(http, ns, deployment("web"))  # no tier or team label, no sidecar
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["metadata"]["labels"] == {"app": "web", "team": "a"}
    assert [c["name"] for c in d["spec"]["template"]["spec"]["containers"]] == ["web"]
    assert d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 80


def test_dry_run_apply_stores_nothing(http, ns):
    r = do_apply(http, ns, deployment("web"), dryRun="All")
    assert r.status_code == 201
    assert http.get(url(ns)).status_code == 404


@pytest.mark.parametrize("paths", [
    {("f:spec", "f:replicas")},
    {("f:spec", "f:containers", 'k:{"name":"a"}'), ("f:spec", "f:containers", 'k:{"name":"a"}', "f:image")},
    {("f:metadata", "f:finalizers", 'v:"x"'), ("f:data", "f:a.b/c")},
])
def test_fields_v1_round_trips(paths):
    assert apply.parse_fields_v1(json.loads(json.dumps(apply.fields_v1(paths)))) == paths


def test_apply_to_status_owns_status_fields_only(http, ns):
    do_apply(http, ns, deployment("web"))
    r = http.patch(url(ns) + "/status", headers=APPLY, params={"fieldManager": "controller"},
                   content=json.dumps({"apiVersion": "apps/v1", "kind": "Deployment",
                                       "metadata": {"name": "web"}, "spec": {"replicas": 9},
                                       "status": {"replicas": 1, "observedGeneration": 1}}))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["status"]["replicas"] == 1 and d["spec"]["replicas"] == 1
    (entry,) = [m for m in d["metadata"]["managedFields"] if m["manager"] == "controller"]
    assert (entry["operation"], entry["subresource"]) == ("Apply", "status")
    assert owned(d, "controller") == {".status.replicas", ".status.observedGeneration"}
    r = http.patch(url(ns) + "/status", json={"status": {"readyReplicas": 1}}, params={"fieldManager": "kubelet"},
                   headers={"content-type": "application/merge-patch+json"})
    (entry,) = [m for m in r.json()["metadata"]["managedFields"] if m["manager"] == "kubelet"]
    assert (entry["operation"], entry["subresource"]) == ("Update", "status")
    assert owned(r.json(), "kubelet") == {".status.readyReplicas"}
