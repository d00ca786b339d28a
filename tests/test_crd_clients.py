"""Real clients on a custom resource, unchanged: the official Python client's
ApiextensionsV1Api and CustomObjectsApi, the real kubectl (1.32) and kubectl-lite.

The module creates one CustomResourceDefinition, `CronTab` (Kubernetes' own example kind,
in a group of this test's own), with a structural schema carrying descriptions and a
default, the status and scale subresources, additionalPrinterColumns, a short name and
categories; it waits until the CRD is Established and deletes it at the end. Each test
works in its own namespace. What the clients show is checked against the API, not only
against their own output.
"""
from __future__ import annotations

import json
import re
import threading

import pytest
import yaml
from kubernetes import client, dynamic, watch
from kubernetes.client.exceptions import ApiException

from tests.procs import wait_for
from tests.test_kubectl import Kubectl, rows
from tests.test_kubectl_lite import KubectlLite

GROUP, VERSION, PLURAL, KIND = "crdcli.example.com", "v1", "crontabs", "CronTab"
CRD_NAME = f"{PLURAL}.{GROUP}"
API_VERSION = f"{GROUP}/{VERSION}"
QUALIFIED = f"crontab.{GROUP}"  # how kubectl names an object of the kind: crontab.crdcli.example.com/web

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": GROUP, "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "crontab", "kind": KIND, "listKind": "CronTabList",
                  "shortNames": ["ct"], "categories": ["all", "examples"]},
        "versions": [{
            "name": VERSION, "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object", "description": "CronTab runs an image on a schedule.",
                "properties": {
                    "spec": {
                        "type": "object", "description": "What to run and how often.",
                        "required": ["cronSpec", "image"],
                        "properties": {
                            "cronSpec": {"type": "string", "description": "The schedule, in cron format."},
                            "image": {"type": "string", "description": "The container image to run."},
                            "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1,
                                         "description": "How many copies run at once."},
                        }},
                    "status": {
                        "type": "object",
                        "properties": {"replicas": {"type": "integer"}, "labelSelector": {"type": "string"}}},
                }}},
            "subresources": {
                "status": {},
                "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                          "labelSelectorPath": ".status.labelSelector"}},
            "additionalPrinterColumns": [
                {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec",
                 "description": "The cron spec defining the interval a CronJob is run"},
                {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
                {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ],
        }],
    },
}

UNSUPPORTED_PATCH = ("the body of the request was in an unknown format - accepted media types include: "
                     "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")


def crontab(name: str, *, image: str = "nginx:1.27", replicas: int | None = 2,
            labels: dict | None = None) -> dict:
    spec: dict = {"cronSpec": "*/5 * * * *", "image": image}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "labels": labels or {"app": name}}, "spec": spec}


def path(namespace: str, name: str = "", sub: str = "") -> str:
    p = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return p + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def get(http, p: str) -> dict | None:
    r = http.get(p)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def api(apiserver):
    config = client.Configuration(host=apiserver.url)
    config.ssl_ca_cert = apiserver.ca_file
    config.cert_file, config.key_file = f"{apiserver.pki_dir}/admin.crt", f"{apiserver.pki_dir}/admin.key"
    with client.ApiClient(config) as c:
        yield c


@pytest.fixture(scope="module")
def crd(api):
    """The CronTab CRD, made and read back through ApiextensionsV1Api, Established."""
    ext = client.ApiextensionsV1Api(api)
    made = ext.create_custom_resource_definition(client.V1CustomResourceDefinition.from_dict(CRD))
    assert made.metadata.name == CRD_NAME and made.metadata.uid

    def established():
        got = ext.read_custom_resource_definition(CRD_NAME)
        return any(c.type == "Established" and c.status == "True" for c in got.status.conditions or []) and got
    got = wait_for(established, timeout=30, what="the CronTab CRD to be Established")
    yield got
    try:
        ext.delete_custom_resource_definition(CRD_NAME)
    except ApiException as e:
        assert e.status == 404, e.body


# -- the official Python client ----------------------------------------------------------------

def test_apiextensions_reads_the_crd_back(crd):
    assert crd.spec.names.kind == KIND and crd.spec.names.short_names == ["ct"]
    assert crd.status.accepted_names.plural == PLURAL and crd.status.accepted_names.kind == KIND
    assert crd.status.stored_versions == [VERSION]
    conds = {c.type: c.status for c in crd.status.conditions}
    assert conds["NamesAccepted"] == "True" and conds["Established"] == "True"
    # Given back as it was given, with the server's defaults.
    v = crd.spec.versions[0]
    assert v.schema.open_apiv3_schema.properties["spec"].properties["replicas"].default == 1
    assert v.subresources.scale.spec_replicas_path == ".spec.replicas"
    assert [c.name for c in v.additional_printer_columns] == ["Spec", "Image", "Replicas", "Age"]


def test_custom_objects_create_list_patch_delete(api, crd, ns):
    co = client.CustomObjectsApi(api)
    a = co.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, crontab("a", replicas=None))
    co.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, crontab("b"))
    assert a["metadata"]["uid"] and a["metadata"]["generation"] == 1
    assert a["spec"]["replicas"] == 1  # the schema's default

    listed = co.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, label_selector="app=a")
    assert listed["kind"] == "CronTabList" and listed["apiVersion"] == API_VERSION
    assert listed["metadata"]["resourceVersion"]
    assert [o["metadata"]["name"] for o in listed["items"]] == ["a"]
    every = co.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector="app in (a,b)")
    assert sorted(o["metadata"]["name"] for o in every["items"] if o["metadata"]["namespace"] == ns) == ["a", "b"]
    by_field = co.list_cluster_custom_object(GROUP, VERSION, PLURAL,
                                             field_selector=f"metadata.namespace={ns},metadata.name=b")
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in by_field["items"]] == [(ns, "b")]

    # A merge patch of the object; its status is not written through the main resource.
    patched = co.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "a",
                                                {"spec": {"image": "nginx:1.28"}, "status": {"replicas": 9}})
    assert patched["spec"] == {"cronSpec": "*/5 * * * *", "image": "nginx:1.28", "replicas": 1}
    assert patched["metadata"]["generation"] == 2
    assert "replicas" not in patched.get("status", {})

    # The status subresource: its writes keep the spec and the generation.
    st = co.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "a", {
        "spec": {"image": "ignored"}, "status": {"replicas": 1, "labelSelector": "app=a"}})
    assert st["status"] == {"replicas": 1, "labelSelector": "app=a"}
    assert st["spec"]["image"] == "nginx:1.28" and st["metadata"]["generation"] == 2
    assert co.get_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "a")["status"]["replicas"] == 1

    # The scale subresource, as autoscaling/v1 Scale.
    scale = co.get_namespaced_custom_object_scale(GROUP, VERSION, ns, PLURAL, "a")
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 1}
    assert scale["status"] == {"replicas": 1, "selector": "app=a"}
    co.patch_namespaced_custom_object_scale(GROUP, VERSION, ns, PLURAL, "a", {"spec": {"replicas": 3}})
    assert co.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "a")["spec"]["replicas"] == 3

    # An object that fails its schema: 422, Kubernetes' Status, and nothing stored.
    with pytest.raises(ApiException) as err:
        co.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, crontab("bad", replicas=11))
    assert err.value.status == 422
    status = json.loads(err.value.body)
    assert status["reason"] == "Invalid" and status["details"]["causes"][0]["field"] == "spec.replicas"
    assert status["message"] == (f'{KIND}.{GROUP} "bad" is invalid: spec.replicas: Invalid value: 11: '
                                 "spec.replicas in body should be less than or equal to 10")
    with pytest.raises(ApiException) as err:
        co.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "bad")
    assert err.value.status == 404

    co.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "a")
    with pytest.raises(ApiException) as err:
        co.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "a")
    assert err.value.status == 404
    assert json.loads(err.value.body)["message"] == f'{CRD_NAME} "a" not found'
    left = co.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    assert [o["metadata"]["name"] for o in left["items"]] == ["b"]


def test_custom_objects_watch_sees_added_modified_deleted(api, crd, ns):
    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, crontab("other", labels={"app": "other"}))
    rv = co.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["metadata"]["resourceVersion"]

    def act():
        co.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, crontab("w"))
        co.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "w", {"spec": {"replicas": 4}})
        co.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "other", {"spec": {"replicas": 4}})
        co.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "w")

    writer = threading.Thread(target=act)
    writer.start()
    w, events = watch.Watch(), []
    try:
        for ev in w.stream(co.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
                           label_selector="app=w", resource_version=rv, timeout_seconds=15):
            assert ev["object"]["kind"] == KIND and ev["object"]["apiVersion"] == API_VERSION
            events.append((ev["type"], ev["object"]["metadata"]["name"], ev["object"]["spec"]["replicas"]))
            if ev["type"] == "DELETED":
                w.stop()
    finally:
        writer.join(10)
    assert events == [("ADDED", "w", 2), ("MODIFIED", "w", 4), ("DELETED", "w", 4)]


def test_dynamic_client_discovers_the_kind_and_applies_server_side(api, crd, ns):
    # The dynamic client finds the kind in the plain discovery documents, as operators' tools do.
    dyn = dynamic.DynamicClient(api)
    crontabs = dyn.resources.get(api_version=API_VERSION, kind=KIND)
    assert (crontabs.name, crontabs.namespaced, crontabs.short_names) == (PLURAL, True, ["ct"])
    body = {**crontab("dyn"), "metadata": {"name": "dyn", "namespace": ns}}
    applied = crontabs.server_side_apply(body=body, name="dyn", namespace=ns, field_manager="tester")
    assert applied.spec.replicas == 2
    assert [(m.manager, m.operation) for m in applied.metadata.managedFields] == [("tester", "Apply")]
    assert [o.metadata.name for o in crontabs.get(namespace=ns).items] == ["dyn"]


def test_client_resources_follow_the_preferred_version_and_categories():
    # client.rest.Resources, as discovery fills it for a kind served at two versions.
    from client.rest import Resource, Resources
    rs = Resources(())
    beta = Resource(GROUP, "v1beta1", KIND, PLURAL, True, ("ct",), (), ("examples",))
    v1 = Resource(GROUP, "v1", KIND, PLURAL, True, ("ct",), ("status",), ("all", "examples"))
    rs.add(beta)
    rs.add(v1, preferred=True)
    assert rs.get("ct") is v1 and rs.get(f"{PLURAL}.{GROUP}") is v1
    assert rs.for_object({"apiVersion": f"{GROUP}/v1beta1", "kind": KIND}) is beta
    assert rs.in_category("examples") == [v1] and rs.in_category("nothing") == []


# -- the real kubectl --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("kubectl-cache"))


@pytest.fixture
def kubectl(apiserver, crd, ns, cache_dir, tmp_path):
    return Kubectl(apiserver.write_kubeconfig(tmp_path / "kubeconfig", namespace=ns), cache_dir, str(tmp_path))


def write(tmp_path, name: str, obj: dict) -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(obj))
    return str(p)


@pytest.mark.kubectl
def test_kubectl_apply_client_side_creates_and_three_way_merges(kubectl, http, ns, tmp_path):
    manifest = crontab("web", labels={"app": "web", "tier": "front"})
    f = write(tmp_path, "web.yaml", manifest)
    assert kubectl.out("apply", "-f", f).strip() == f"{QUALIFIED}/web created"
    obj = get(http, path(ns, "web"))
    last = json.loads(obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert last["spec"] == manifest["spec"]

    # Someone else's change survives the next apply; a field dropped from the manifest goes.
    r = http.patch(path(ns, "web"), json={"metadata": {"labels": {"owner": "ops"}}},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    manifest["metadata"]["labels"] = {"app": "web"}
    manifest["spec"]["image"] = "nginx:1.28"
    write(tmp_path, "web.yaml", manifest)
    assert kubectl.out("apply", "-f", f).strip() == f"{QUALIFIED}/web configured"
    obj = get(http, path(ns, "web"))
    assert obj["metadata"]["labels"] == {"app": "web", "owner": "ops"}
    assert obj["spec"] == {"cronSpec": "*/5 * * * *", "image": "nginx:1.28", "replicas": 2}
    assert kubectl.out("apply", "-f", f).strip() == f"{QUALIFIED}/web unchanged"


@pytest.mark.kubectl
def test_kubectl_apply_server_side(kubectl, http, ns, tmp_path):
    manifest = crontab("ssa", replicas=3)
    f = write(tmp_path, "ssa.yaml", manifest)
    assert kubectl.out("apply", "--server-side", "-f", f).strip() == f"{QUALIFIED}/ssa serverside-applied"
    obj = get(http, path(ns, "ssa"))
    assert [(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]] == [("kubectl", "Apply")]
    assert obj["spec"]["replicas"] == 3

    # A field the applier owned and no longer applies is removed (then the schema's default holds).
    del manifest["spec"]["replicas"]
    manifest["spec"]["image"] = "nginx:1.28"
    write(tmp_path, "ssa.yaml", manifest)
    assert kubectl.out("apply", "--server-side", "-f", f).strip() == f"{QUALIFIED}/ssa serverside-applied"
    obj = get(http, path(ns, "ssa"))
    assert obj["spec"] == {"cronSpec": "*/5 * * * *", "image": "nginx:1.28", "replicas": 1}


@pytest.mark.kubectl
def test_kubectl_get_shows_printer_columns_by_plural_short_name_and_category(kubectl, http, ns):
    for name, replicas in (("one", 1), ("two", 2)):
        r = http.post(path(ns), json=crontab(name, replicas=replicas))
        assert r.status_code == 201, r.text

    table = rows(kubectl.out("get", "crontabs"))
    assert [list(t) for t in table] == [["NAME", "SPEC", "REPLICAS", "AGE"]] * 2
    assert [(t["NAME"], t["SPEC"], t["REPLICAS"]) for t in table] == [
        ("one", "*/5 * * * *", "1"), ("two", "*/5 * * * *", "2")]
    wide = rows(kubectl.out("get", "ct", "-o", "wide"))
    assert [(t["NAME"], t["IMAGE"]) for t in wide] == [("one", "nginx:1.27"), ("two", "nginx:1.27")]
    # A category of one kind prints plain names; `all` spans kinds, so it prints kind/name.
    assert [t["NAME"] for t in rows(kubectl.out("get", "examples"))] == ["one", "two"]
    assert f"{QUALIFIED}/two" in kubectl.out("get", "all")
    assert [t["NAME"] for t in rows(kubectl.out("get", f"{PLURAL}.{GROUP}", "-l", "app=two"))] == ["two"]

    got = yaml.safe_load(kubectl.out("get", "crontab", "one", "-o", "yaml"))
    assert (got["apiVersion"], got["kind"], got["metadata"]["name"]) == (API_VERSION, KIND, "one")
    assert got["spec"] == {"cronSpec": "*/5 * * * *", "image": "nginx:1.27", "replicas": 1}
    listed = json.loads(kubectl.out("get", "ct", "-o", "json"))
    assert listed["kind"] == "List" and [i["kind"] for i in listed["items"]] == [KIND, KIND]


@pytest.mark.kubectl
def test_kubectl_describe_and_explain(kubectl, http, ns):
    r = http.post(path(ns), json=crontab("desc", labels={"app": "desc"}))
    assert r.status_code == 201, r.text
    out = kubectl.out("describe", "crontab", "desc")
    for line in (r"Name:\s+desc", f"Namespace:\\s+{ns}", r"Labels:\s+app=desc", f"API Version:\\s+{API_VERSION}",
                 r"Kind:\s+CronTab", r"Spec:", r"\s+Cron Spec:\s+\*/5 \* \* \* \*", r"\s+Image:\s+nginx:1\.27",
                 r"\s+Replicas:\s+2", r"Events:\s+<none>"):
        assert re.search(f"^{line}$", out, re.M), (line, out)

    out = kubectl.out("explain", "crontab.spec")
    assert re.search(r"^KIND:\s+CronTab$", out, re.M) and re.search(f"^GROUP:\\s+{GROUP}$", out, re.M), out
    assert "FIELD: spec <Object>" in out and "What to run and how often." in out
    assert re.search(r"^\s+cronSpec\s+<string> -required-$", out, re.M), out
    assert "The schedule, in cron format." in out
    assert re.search(r"^\s+replicas\s+<integer>$", out, re.M), out
    out = kubectl.out("explain", "crontabs")
    assert "CronTab runs an image on a schedule." in out and re.search(r"^\s+spec\s+<Object>$", out, re.M), out


@pytest.mark.kubectl
def test_kubectl_patch_merge_and_scale_and_strategic_refused(kubectl, http, ns):
    r = http.post(path(ns), json=crontab("p"))
    assert r.status_code == 201, r.text

    assert kubectl.out("patch", "crontab", "p", "--type=merge",
                       "-p", '{"spec":{"replicas":4}}').strip() == f"{QUALIFIED}/p patched"
    assert get(http, path(ns, "p"))["spec"]["replicas"] == 4

    # A custom resource has no strategic merge: the server refuses it with 415, which
    # kubectl reports in its own words around the server's message.
    err = kubectl("patch", "crontab", "p", "-p", '{"spec":{"replicas":5}}', ok=False).stderr
    assert err.strip() == (f"error: application/strategic-merge-patch+json is not supported by "
                           f"{GROUP}/{VERSION}, Kind={KIND}: {UNSUPPORTED_PATCH}")
    assert get(http, path(ns, "p"))["spec"]["replicas"] == 4

    # kubectl scale writes through the scale subresource.
    assert kubectl.out("scale", "crontab", "p", "--replicas=6").strip() == f"{QUALIFIED}/p scaled"
    assert get(http, path(ns, "p"))["spec"]["replicas"] == 6
    scale = json.loads(kubectl.out("get", "--raw", path(ns, "p", "scale")))
    assert scale["kind"] == "Scale" and scale["spec"] == {"replicas": 6}

    assert kubectl.out("delete", "ct", "p").strip() == f'{QUALIFIED} "p" deleted'
    assert get(http, path(ns, "p")) is None


def test_strategic_merge_patch_is_415_with_kubernetes_status(http, crd, ns):
    r = http.post(path(ns), json=crontab("smp"))
    assert r.status_code == 201, r.text
    r = http.patch(path(ns, "smp"), content=b'{"spec":{"replicas":5}}',
                   headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert r.status_code == 415, r.text
    assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": UNSUPPORTED_PATCH, "reason": "UnsupportedMediaType", "code": 415}
    assert get(http, path(ns, "smp"))["spec"]["replicas"] == 2


# -- kubectl-lite ------------------------------------------------------------------------------

@pytest.fixture
def kl(apiserver, crd, ns, tmp_path):
    return KubectlLite(apiserver.write_kubeconfig(tmp_path / "kubeconfig", namespace=ns), str(tmp_path), ns)


def test_kubectl_lite_apply_get_describe(kl, http, ns, tmp_path):
    manifest = crontab("lite", labels={"app": "lite", "tier": "front"})
    assert kl.out("apply", "--server-side", "-f", write(tmp_path, "ssa.yaml", crontab("lite-ssa"))).strip() == \
        f"{QUALIFIED}/lite-ssa serverside-applied"
    f = write(tmp_path, "lite.yaml", manifest)
    assert kl.out("apply", "-f", f).strip() == f"{QUALIFIED}/lite created"
    manifest["metadata"]["labels"] = {"app": "lite"}
    manifest["spec"]["image"] = "nginx:1.28"
    write(tmp_path, "lite.yaml", manifest)
    assert kl.out("apply", "-f", f).strip() == f"{QUALIFIED}/lite configured"
    obj = get(http, path(ns, "lite"))
    assert obj["metadata"]["labels"] == {"app": "lite"} and obj["spec"]["image"] == "nginx:1.28"
    assert kl.out("apply", "-f", f).strip() == f"{QUALIFIED}/lite unchanged"

    table = rows(kl.out("get", "crontabs"))
    assert [(t["NAME"], t["SPEC"], t["REPLICAS"]) for t in table] == [
        ("lite", "*/5 * * * *", "2"), ("lite-ssa", "*/5 * * * *", "2")]
    assert list(table[0]) == ["NAME", "SPEC", "REPLICAS", "AGE"]
    assert [t["IMAGE"] for t in rows(kl.out("get", "ct", "-o", "wide"))] == ["nginx:1.28", "nginx:1.27"]
    assert [t["NAME"] for t in rows(kl.out("get", "examples"))] == ["lite", "lite-ssa"]
    assert f"{QUALIFIED}/lite" in kl.out("get", "all")
    got = yaml.safe_load(kl.out("get", "ct", "lite", "-o", "yaml"))
    assert (got["kind"], got["spec"]["image"]) == (KIND, "nginx:1.28")

    out = kl.out("describe", "crontab", "lite")
    for line in (r"Name:\s+lite", f"API Version:\\s+{API_VERSION}", r"Kind:\s+CronTab",
                 r"\s+Cron Spec:\s+\*/5 \* \* \* \*", r"\s+Image:\s+nginx:1\.28"):
        assert re.search(f"^{line}$", out, re.M), (line, out)

    out = kl.out("explain", "crontab.spec")
    assert "FIELD: spec <Object>" in out and "What to run and how often." in out
    assert re.search(r"^\s+cronSpec\s+<string> -required-$", out, re.M), out

    assert kl.out("patch", "ct", "lite", "--type=merge", "-p", '{"spec":{"replicas":3}}').strip() == \
        f"{QUALIFIED}/lite patched"
    err = kl.err("patch", "ct", "lite", "-p", '{"spec":{"replicas":5}}')
    assert err.strip() == (f"error: application/strategic-merge-patch+json is not supported by "
                           f"{GROUP}/{VERSION}, Kind={KIND}: {UNSUPPORTED_PATCH}")
    assert kl.out("scale", "ct", "lite", "--replicas=4").strip() == f"{QUALIFIED}/lite scaled"
    assert get(http, path(ns, "lite"))["spec"]["replicas"] == 4
