"""CustomResourceDefinitions and the dynamic registry under them.

The first tests drive the registry seam directly (apiserver/registry.py's register,
unregister, served, and one kind served at two versions from one stored object) on
the in-memory store; the rest run a real API server on real etcd."""
from __future__ import annotations

import asyncio
import dataclasses
import uuid

import orjson
import pytest

from apiserver import registry
from apiserver.cache import WatchCache
from apiserver.resources import Resources, Selection
from apiserver.storage import MemoryStore
from apiserver.strategies import Strategy
from machinery import errors, kinds
from tests.procs import APIServer, wait_for

NAMESPACES = registry.by_plural("namespaces")


class _Loose(Strategy):
    def schema_causes(self, rt, obj):
        return []


def _widget(version: str) -> registry.ResourceType:
    return registry.ResourceType(
        group="example.com", version=version, kind="Widget", plural="widgets", namespaced=True,
        strategy=_Loose(), storage_version="v1", storage_root="/registry/example.com/widgets/")


@pytest.fixture
def widgets():
    rows = (_widget("v1"), _widget("v1beta1"))
    for rt in rows:
        registry.register(rt)
    yield rows
    for rt in rows:
        registry.unregister(rt)


@pytest.fixture
async def api():
    store = MemoryStore()
    cache = WatchCache(store, history=50, bookmark_interval=3600)
    await cache.start()
    async with asyncio.timeout(10):
        await cache.ready.wait()
    api = Resources(store, cache)
    await api.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": "team"}})
    yield api
    await cache.stop()


def test_register_and_unregister_change_what_is_served(widgets):
    v1, beta = widgets
    assert registry.lookup("example.com", "v1beta1", "widgets") is beta
    assert registry.served()[-2:] == (v1, beta)
    assert registry.groups()["example.com"] == ["v1", "v1beta1"]
    assert registry.by_kind("example.com/v1beta1", "Widget") is beta
    assert registry.by_kind("example.com/v9", "Widget") is v1  # the stored version's row
    # A version registered later that Kubernetes prefers comes first in discovery.
    v2 = _widget("v2")
    registry.register(v2)
    assert registry.groups()["example.com"] == ["v2", "v1", "v1beta1"]
    registry.unregister(v2)
    before = registry.generation()
    registry.unregister(beta)
    assert registry.lookup("example.com", "v1beta1", "widgets") is None
    assert registry.generation() == before + 1
    assert "example.com" in registry.groups()
    with pytest.raises(ValueError):
        registry.register(dataclasses.replace(registry.by_plural("pods")))


def test_custom_resources_are_keyed_by_group_and_plural(widgets):
    assert widgets[1].key("team", "a") == "/registry/example.com/widgets/team/a"
    assert registry.by_plural("pods").key("team", "a") == "/registry/pods/team/a"


async def test_one_stored_object_is_served_at_every_version(api, widgets):
    v1, beta = widgets
    made = await api.create(beta, "team", {"apiVersion": "example.com/v1beta1", "kind": "Widget",
                                           "metadata": {"name": "a"}, "spec": {"size": 1}})
    assert made["apiVersion"] == "example.com/v1beta1"
    kv = await api.store.get("/registry/example.com/widgets/team/a")
    assert b'"apiVersion":"example.com/v1"' in kv.value  # stored at the storage version
    assert (await api.get(beta, "team", "a"))["apiVersion"] == "example.com/v1beta1"
    assert (await api.get(v1, "team", "a"))["apiVersion"] == "example.com/v1"
    entries, *_ = await api.list(beta, Selection(beta, "team"))
    assert [e.obj["apiVersion"] for e in entries] == ["example.com/v1beta1"]
    assert b"example.com/v1beta1" in entries[0].raw
    stream = await api.watch(beta, Selection(beta, "team"), resource_version=made["metadata"]["resourceVersion"],
                             bookmarks=False)
    updated = await api.patch(beta, "team", "a", "application/merge-patch+json", {"spec": {"size": 2}})
    assert updated["apiVersion"] == "example.com/v1beta1" and updated["spec"] == {"size": 2}
    async with asyncio.timeout(10):
        batch = await anext(stream)
    assert [(t, e.obj["apiVersion"], e.obj["spec"]) for t, e in batch] == \
        [("MODIFIED", "example.com/v1beta1", {"size": 2})]
    await stream.aclose()
    kv = await api.store.get("/registry/example.com/widgets/team/a")
    assert b'"apiVersion":"example.com/v1"' in kv.value
    # A request's apiVersion must still be the one it is sent to.
    with pytest.raises(errors.BadRequest):
        await api.create(beta, "team", {"apiVersion": "example.com/v1", "kind": "Widget",
                                        "metadata": {"name": "b"}})


def test_kinds_module_is_untouched_by_registration(widgets):
    assert "widgets" not in {k.plural for k in kinds.KINDS}


# -- a real API server on real etcd ------------------------------------------------------

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def _schema(**spec_props) -> dict:
    return {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "replicas": {"type": "integer", "minimum": 0},
            "size": {"type": "string", "default": "small"},
            "selector": {"type": "string"},
            **spec_props}},
        "status": {"type": "object", "properties": {"replicas": {"type": "integer"},
                                                    "selector": {"type": "string"}}}}}}


def crd_body(group: str, plural: str = "widgets", kind: str = "Widget", *, scope: str = "Namespaced",
             versions: list[dict] | None = None, short_names=("wd",), categories=("all",)) -> dict:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": scope,
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind,
                               "shortNames": list(short_names), "categories": list(categories)},
                     "versions": versions or [{
                         "name": "v1", "served": True, "storage": True, "schema": _schema(),
                         "subresources": {"status": {}, "scale": {
                             "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                             "labelSelectorPath": ".status.selector"}},
                         "additionalPrinterColumns": [
                             {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                             {"name": "Size", "type": "string", "jsonPath": ".spec.size", "priority": 1},
                             {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]}]}}


def established(http, name: str) -> dict:
    def ready():
        crd = http.get(f"{CRDS}/{name}").json()
        conds = {c["type"]: c for c in (crd.get("status") or {}).get("conditions") or []}
        return crd if conds.get("Established", {}).get("status") == "True" else None
    return wait_for(ready, what=f"CRD {name} Established")


@pytest.fixture
def group():
    return f"t{uuid.uuid4().hex[:8]}.example.com"


@pytest.fixture
def widgets_crd(http, group):
    r = http.post(CRDS, json=crd_body(group))
    assert r.status_code == 201, r.text
    crd = established(http, f"widgets.{group}")
    # Served from the moment it is Established: the first create is accepted.
    yield crd
    http.delete(f"{CRDS}/widgets.{group}")


def widget(name: str, group: str, version: str = "v1", **spec) -> dict:
    return {"apiVersion": f"{group}/{version}", "kind": "Widget", "metadata": {"name": name},
            "spec": spec}


def test_crd_is_established_with_its_names_and_status(http, widgets_crd, group):
    status = widgets_crd["status"]
    assert status["acceptedNames"]["kind"] == "Widget" and status["acceptedNames"]["listKind"] == "WidgetList"
    assert status["storedVersions"] == ["v1"]
    conds = {c["type"]: c for c in status["conditions"]}
    assert (conds["NamesAccepted"]["status"], conds["NamesAccepted"]["reason"]) == ("True", "NoConflicts")
    assert conds["Established"]["reason"] == "InitialNamesAccepted"
    assert widgets_crd["metadata"]["generation"] == 1
    assert widgets_crd["spec"]["conversion"] == {"strategy": "None"}  # defaulted
    table = http.get(f"{CRDS}/widgets.{group}",
                     headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Created At"]


def test_every_verb_on_custom_resources(http, widgets_crd, group, ns):
    base = f"/apis/{group}/v1/namespaces/{ns}/widgets"
    r = http.post(base, json={**widget("a", group, replicas=1), "extra": 1,
                              "metadata": {"name": "a", "labels": {"tier": "x"}}})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["spec"] == {"replicas": 1, "size": "small"}  # defaulted
    assert "extra" not in made  # pruned
    assert http.post(base, json=widget("b", group, replicas=2)).status_code == 201
    assert http.get(f"{base}/a").json()["metadata"]["uid"] == made["metadata"]["uid"]
    listed = http.get(base, params={"labelSelector": "tier=x"}).json()
    assert listed["kind"] == "WidgetList" and [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    r = http.get(base, params={"fieldSelector": "spec.size=small"})
    assert r.status_code == 400 and r.json()["message"] == \
        '"spec.size" is not a known field selector: only "metadata.name", "metadata.namespace"'
    by_name = http.get(base, params={"fieldSelector": "metadata.name=b"}).json()
    assert [i["metadata"]["name"] for i in by_name["items"]] == ["b"]
    page = http.get(base, params={"limit": 1}).json()
    assert len(page["items"]) == 1 and page["metadata"]["continue"]
    rest = http.get(base, params={"limit": 1, "continue": page["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["b"]
    everywhere = http.get(f"/apis/{group}/v1/widgets").json()
    assert {i["metadata"]["name"] for i in everywhere["items"]} == {"a", "b"}
    # merge patch and server-side apply
    r = http.patch(f"{base}/a", content=b'{"spec":{"replicas":3}}',
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 3 and r.json()["metadata"]["generation"] == 2
    r = http.patch(f"{base}/c", params={"fieldManager": "me"},
                   content=f"apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: c\n"
                           f"spec:\n  replicas: 4\n".encode(),
                   headers={"Content-Type": "application/apply-patch+yaml"})
    assert r.status_code == 201, r.text
    assert r.json()["spec"] == {"replicas": 4, "size": "small"}
    # strategic merge patch: 415, as Kubernetes answers
    r = http.patch(f"{base}/a", content=b'{"spec":{"replicas":5}}',
                   headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert r.status_code == 415
    assert r.json()["message"] == ("the body of the request was in an unknown format - accepted media types "
                                   "include: application/json-patch+json, application/merge-patch+json, "
                                   "application/apply-patch+yaml")
    # status and scale
    r = http.put(f"{base}/a/status", json={**http.get(f"{base}/a").json(),
                                           "status": {"replicas": 3, "selector": "tier=x"}})
    assert r.status_code == 200 and r.json()["status"]["replicas"] == 3
    scale = http.get(f"{base}/a/scale").json()
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    assert scale["status"] == {"replicas": 3, "selector": "tier=x"}
    r = http.patch(f"{base}/a/scale", content=b'{"spec":{"replicas":7}}',
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 7
    assert http.get(f"{base}/a").json()["spec"]["replicas"] == 7
    # Table with the printer columns
    table = http.get(base, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Replicas", "Size", "Age"]
    assert [r["cells"][:3] for r in table["rows"]] == [["a", 7, "small"], ["b", 2, "small"], ["c", 4, "small"]]
    # delete, deletecollection
    assert http.delete(f"{base}/c").status_code == 200
    assert http.delete(base).status_code == 200
    assert http.get(base).json()["items"] == []


def test_watch_custom_resources(http, widgets_crd, group, ns):
    base = f"/apis/{group}/v1/namespaces/{ns}/widgets"
    rv = http.get(base).json()["metadata"]["resourceVersion"]
    assert http.post(base, json=widget("w", group, replicas=1)).status_code == 201
    with http.stream("GET", base, params={"watch": "true", "resourceVersion": rv,
                                          "timeoutSeconds": "5"}) as r:
        line = next(r.iter_lines())
    import json
    ev = json.loads(line)
    assert ev["type"] == "ADDED" and ev["object"]["metadata"]["name"] == "w"


def test_discovery_serves_the_new_group(http, widgets_crd, group):
    plain = http.get(f"/apis/{group}/v1").json()
    res = {r["name"]: r for r in plain["resources"]}
    assert res["widgets"]["kind"] == "Widget" and res["widgets"]["shortNames"] == ["wd"]
    assert res["widgets"]["categories"] == ["all"] and "widgets/scale" in res and "widgets/status" in res
    groups = http.get("/apis").json()["groups"]
    assert any(g["name"] == group for g in groups)
    agg = http.get("/apis", headers={
        "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"}).json()
    assert any(i["metadata"].get("name") == group for i in agg["items"])


def test_a_crd_whose_names_clash_is_not_accepted(http, widgets_crd, group):
    # Another CRD of the group asks for the kind the first has: NamesAccepted False,
    # with the naming controller's reason and message, and it is never served.
    body = crd_body(group, plural="gadgets", kind="Widget", short_names=())
    body["spec"]["names"].update(listKind="GadgetList", singular="gadget")
    r = http.post(CRDS, json=body)
    assert r.status_code == 201, r.text
    try:
        def judged():
            crd = http.get(f"{CRDS}/gadgets.{group}").json()
            conds = {c["type"]: c for c in (crd.get("status") or {}).get("conditions") or []}
            return conds if "NamesAccepted" in conds else None
        conds = wait_for(judged, what="NamesAccepted")
        assert (conds["NamesAccepted"]["status"], conds["NamesAccepted"]["reason"],
                conds["NamesAccepted"]["message"]) == ("False", "KindConflict", '"Widget" is already in use')
        assert (conds["Established"]["status"], conds["Established"]["reason"]) == ("False", "NotAccepted")
        assert http.get(f"/apis/{group}/v1/gadgets").status_code == 404
        # Once the holder of the name goes, the clash is judged again and resolved.
        http.delete(f"{CRDS}/widgets.{group}")
        established(http, f"gadgets.{group}")
        assert http.get(f"/apis/{group}/v1/gadgets").json()["kind"] == "GadgetList"
    finally:
        http.delete(f"{CRDS}/gadgets.{group}")


def test_bad_crds_are_refused_with_kubernetes_wording(http, group):
    body = crd_body(group)
    body["metadata"]["name"] = "wrong.example.com"
    r = http.post(CRDS, json=body)
    assert r.status_code == 422
    assert r.json()["message"] == (
        'CustomResourceDefinition.apiextensions.k8s.io "wrong.example.com" is invalid: metadata.name: '
        'Invalid value: "wrong.example.com": must be spec.names.plural+"."+spec.group')
    body = crd_body(group)
    body["spec"]["versions"].append({**body["spec"]["versions"][0], "name": "v2"})
    r = http.post(CRDS, json=body)
    assert r.status_code == 422
    assert [(c["field"], c["message"].rpartition(": ")[2]) for c in r.json()["details"]["causes"]] == \
        [("spec.versions", "must have exactly one version marked as storage version")]
    body = crd_body("nodot")
    body["metadata"]["name"] = "widgets.nodot"
    r = http.post(CRDS, json=body)
    assert r.status_code == 422 and 'spec.group: Invalid value: "nodot": should be a domain with at least one dot' \
        in r.json()["message"]
    body = crd_body(group)
    body["spec"]["conversion"] = {"strategy": "Webhook"}
    r = http.post(CRDS, json=body)
    assert r.status_code == 422 and 'spec.conversion.strategy: Unsupported value: "Webhook"' in r.json()["message"]
    assert http.get(f"{CRDS}/widgets.{group}").status_code == 404  # nothing was stored


def _two_versions(storage: str) -> list[dict]:
    return [{"name": v, "served": True, "storage": v == storage, "schema": _schema()}
            for v in ("v1", "v1beta1")]


def _raw(etcd, key: str) -> bytes:
    """A key's value as etcd holds it."""
    import aetcd

    async def get() -> bytes:
        host, port = etcd.url.rsplit("//", 1)[1].split(":")
        async with aetcd.Client(host, int(port)) as c:
            kv = await c.get(key.encode())
            assert kv is not None, key
            return kv.value
    return asyncio.run(get())


def test_several_versions_one_object_and_storage_migration(http, etcd, group, ns):
    body = crd_body(group, versions=_two_versions("v1beta1"), short_names=(), categories=())
    body["spec"]["versions"][1]["deprecated"] = True
    assert http.post(CRDS, json=body).status_code == 201
    name = f"widgets.{group}"
    try:
        crd = established(http, name)
        assert crd["status"]["storedVersions"] == ["v1beta1"]
        assert http.get(f"/apis/{group}").json()["preferredVersion"]["version"] == "v1"
        r = http.post(f"/apis/{group}/v1beta1/namespaces/{ns}/widgets", json=widget("a", group, "v1beta1"))
        assert r.status_code == 201, r.text
        assert r.headers["warning"] == f'299 - "{group}/v1beta1 Widget is deprecated; use {group}/v1 Widget"'
        # One object, at either version (None conversion: only apiVersion differs).
        got = http.get(f"/apis/{group}/v1/namespaces/{ns}/widgets/a").json()
        assert got["apiVersion"] == f"{group}/v1" and got["spec"] == {"size": "small"}
        listed = http.get(f"/apis/{group}/v1/namespaces/{ns}/widgets").json()
        assert [i["apiVersion"] for i in listed["items"]] == [f"{group}/v1"]
        # Removing a version objects may still be stored at is refused.
        crd = http.get(f"{CRDS}/{name}").json()
        crd["spec"]["versions"] = [{**v, "storage": True} for v in crd["spec"]["versions"] if v["name"] == "v1"]
        r = http.put(f"{CRDS}/{name}", json=crd)
        assert r.status_code == 422
        assert r.json()["message"] == (
            f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: status.storedVersions[0]: '
            'Invalid value: "v1beta1": must appear in spec.versions')
        assert orjson.loads(_raw(etcd, f"/registry/{group}/widgets/{ns}/a"))["apiVersion"] == f"{group}/v1beta1"
        # Only the storage version changes: the objects are rewritten at it, and
        # storedVersions comes down to it.
        crd = http.get(f"{CRDS}/{name}").json()
        for v in crd["spec"]["versions"]:
            v["storage"] = v["name"] == "v1"
        r = http.put(f"{CRDS}/{name}", json=crd)
        assert r.status_code == 200, r.text
        assert wait_for(lambda: http.get(f"{CRDS}/{name}").json()["status"]["storedVersions"] == ["v1"],
                        what="storedVersions [v1]")
        stored = orjson.loads(_raw(etcd, f"/registry/{group}/widgets/{ns}/a"))
        assert stored["apiVersion"] == f"{group}/v1"  # rewritten at the new storage version
        # Now v1beta1 may go.
        crd = http.get(f"{CRDS}/{name}").json()
        crd["spec"]["versions"] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        r = http.put(f"{CRDS}/{name}", json=crd)
        assert r.status_code == 200, r.text
        wait_for(lambda: http.get(f"/apis/{group}/v1beta1/namespaces/{ns}/widgets").status_code == 404,
                 what="v1beta1 no longer served")
        assert http.get(f"/apis/{group}/v1/namespaces/{ns}/widgets/a").json()["apiVersion"] == f"{group}/v1"
    finally:
        http.delete(f"{CRDS}/{name}")


def test_deleting_a_crd_deletes_its_objects(http, apiserver, group, ns):
    assert http.post(CRDS, json=crd_body(group)).status_code == 201
    name = f"widgets.{group}"
    established(http, name)
    base = f"/apis/{group}/v1/namespaces/{ns}/widgets"
    watch = apiserver.client(timeout=30)
    # Its server-side timeout far away: the stream must end because the kind went (a
    # read that waits 30 s for nothing fails the test).
    events = watch.stream("GET", base, params={"watch": "true", "timeoutSeconds": "600"})
    stream = events.__enter__()
    held = {**widget("held", group), "metadata": {"name": "held", "finalizers": ["example.com/hold"]}}
    assert http.post(base, json=held).status_code == 201
    assert http.post(base, json=widget("plain", group)).status_code == 201
    r = http.delete(f"{CRDS}/{name}")
    assert r.status_code == 200, r.text  # held by its finalizer, still 200 as Kubernetes
    marked = r.json()
    assert "customresourcecleanup.apiextensions.k8s.io" in marked["metadata"]["finalizers"]
    conds = {c["type"]: c for c in marked["status"]["conditions"]}
    assert conds["Terminating"]["status"] == "True"
    # The plain object goes; the held one waits for its finalizer, and so does the CRD.
    wait_for(lambda: http.get(f"{base}/plain").status_code == 404, what="plain widget deleted")
    wait_for(lambda: http.get(f"{base}/held").json()["metadata"].get("deletionTimestamp"), what="held marked")
    assert http.get(f"{CRDS}/{name}").status_code == 200
    r = http.post(base, json=widget("late", group))
    assert r.status_code == 405
    assert r.json()["message"] == "create not allowed while custom resource definition is terminating"
    r = http.patch(f"{base}/held", content=b'{"metadata":{"finalizers":null}}',
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    wait_for(lambda: http.get(f"{CRDS}/{name}").status_code == 404, what="CRD removed")
    wait_for(lambda: http.get(base).status_code == 404, what="kind no longer served")
    # A watch of the kind saw its objects go, then ended.
    import json
    seen = [(json.loads(line)["type"], json.loads(line)["object"]["metadata"]["name"])
            for line in stream.iter_lines() if line]
    events.__exit__(None, None, None)
    watch.close()
    assert ("DELETED", "plain") in seen and ("DELETED", "held") in seen


# -- the garbage collector and the namespace controller learn custom resources -------------


@pytest.fixture
async def private_client(private_apiserver):
    from client.rest import Client
    async with Client(private_apiserver.connection()) as c:
        yield c


async def _crd_on(client, group: str) -> None:
    from controller_manager.testing import eventually
    await client.create(crd_body(group))

    async def ready():
        crd = await client.get("customresourcedefinitions", f"widgets.{group}")
        return any(c["type"] == "Established" and c["status"] == "True"
                   for c in crd.get("status", {}).get("conditions", []))
    await eventually(ready, what="CRD Established")


async def test_garbage_collector_collects_custom_resources_it_learns_later(private_client, group):
    from controller_manager.controllers.garbagecollector import GarbageCollector
    from controller_manager.testing import Running, eventually
    c = private_client
    ns = "gc-" + uuid.uuid4().hex[:8]
    await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    async with Running(c, (GarbageCollector, {"discovery_period": 0.2})):
        await _crd_on(c, group)  # after the collector started: it learns the kind by discovery
        owner = await c.create({"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "owner", "namespace": ns}})
        md = owner["metadata"]
        ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": md["name"], "uid": md["uid"]}
        base = f"/apis/{group}/v1/namespaces/{ns}/widgets"
        await c.request("POST", base, body={**widget("dep", group), "metadata": {
            "name": "dep", "ownerReferences": [ref]}})
        await c.delete("configmaps", "owner", namespace=ns)

        async def collected():
            try:
                await c.request("GET", f"{base}/dep")
                return False
            except errors.NotFound:
                return True
        await eventually(collected, what="dependent widget collected")


async def test_namespace_deletion_deletes_custom_resources(private_client, group):
    from controller_manager.controllers.namespace import NamespaceController
    from controller_manager.testing import Running, eventually
    c = private_client
    ns = "ns-" + uuid.uuid4().hex[:8]
    await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    async with Running(c, (NamespaceController, {})):
        await _crd_on(c, group)
        await c.request("POST", f"/apis/{group}/v1/namespaces/{ns}/widgets", body=widget("w", group))
        await c.delete("namespaces", ns)

        async def gone():
            try:
                await c.get("namespaces", ns)
                return False
            except errors.NotFound:
                return True
        await eventually(gone, what="namespace finalized")
    assert (await c.request("GET", f"/apis/{group}/v1/widgets"))["items"] == []


def test_openapi_documents_carry_the_crd_schema(http, widgets_crd, group):
    index = http.get("/openapi/v3").json()["paths"]
    assert f"apis/{group}/v1" in index
    doc = http.get("/openapi/v3" + index[f"apis/{group}/v1"]["serverRelativeURL"].split("/openapi/v3", 1)[1]).json()
    name = ".".join(reversed(group.split("."))) + ".v1.Widget"
    widget_def = doc["components"]["schemas"][name]
    assert widget_def["x-kubernetes-group-version-kind"] == [{"group": group, "version": "v1", "kind": "Widget"}]
    assert widget_def["properties"]["spec"]["properties"]["size"] == {"type": "string", "default": "small"}
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in doc["components"]["schemas"]
    assert f"/apis/{group}/v1/namespaces/{{namespace}}/widgets/{{name}}/scale" in doc["paths"]
    # No strategic merge patch for custom resources: kubectl's client-side apply reads this.
    for sub in ("", "/status", "/scale"):
        patch = doc["paths"][f"/apis/{group}/v1/namespaces/{{namespace}}/widgets/{{name}}{sub}"]["patch"]
        assert set(patch["requestBody"]["content"]) == {
            "application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"}
    v2 = http.get("/openapi/v2", headers={"Accept": "application/json"}).json()
    assert v2["definitions"][name]["properties"]["metadata"] == {
        "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    proto = http.get("/openapi/v2", headers={
        "Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
    assert proto.status_code == 200 and name.encode() in proto.content


def test_every_api_server_serves_a_crd_without_restart(http, etcd, group, ns):
    other = APIServer(etcd.url).start()
    try:
        with other.client() as second:
            r = http.post(CRDS, json=crd_body(group))
            assert r.status_code == 201, r.text
            established(http, f"widgets.{group}")
            base = f"/apis/{group}/v1/namespaces/{ns}/widgets"
            wait_for(lambda: second.post(base, json=widget("x", group)).status_code == 201,
                     what="the second server serving the new kind")
            assert http.get(f"{base}/x").json()["spec"] == {"size": "small"}
            assert http.delete(f"{CRDS}/widgets.{group}").status_code == 200
            wait_for(lambda: second.get(base).status_code == 404, what="the second server dropping it")
            wait_for(lambda: http.get(base).status_code == 404, what="the first server dropping it")
    finally:
        other.stop()


def test_a_custom_resource_failing_its_schema_is_refused(http, widgets_crd, group, ns):
    base = f"/apis/{group}/v1/namespaces/{ns}/widgets"
    r = http.post(base, json=widget("bad", group, replicas=-1))
    assert r.status_code == 422, r.text
    assert r.json()["message"] == (
        f'Widget.{group} "bad" is invalid: spec.replicas: Invalid value: -1: '
        'spec.replicas in body should be greater than or equal to 0')
    r = http.post(base, json=widget("bad", group, replicas="two"))
    assert r.status_code == 422
    assert r.json()["details"]["causes"] == [{
        "reason": "FieldValueTypeInvalid", "field": "spec.replicas",
        "message": 'Invalid value: "string": spec.replicas in body must be of type integer: "string"'}]
    assert http.get(f"{base}/bad").status_code == 404  # nothing stored
    # Unknown fields: pruned with a warning, or refused when asked to be strict.
    r = http.post(base, json=widget("loose", group, colour="red"))
    assert r.status_code == 201 and "colour" not in r.json()["spec"]
    assert 'unknown field \\"spec.colour\\"' in r.headers["warning"]
    r = http.post(base, params={"fieldValidation": "Strict"}, json=widget("strict", group, colour="red"))
    assert r.status_code == 422 and 'unknown field "spec.colour"' in r.json()["message"]


def test_a_crd_with_a_non_structural_schema_is_refused(http, group):
    body = crd_body(group)
    body["spec"]["versions"][0]["schema"] = {"openAPIV3Schema": {
        "type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}}}}}
    r = http.post(CRDS, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["details"]["causes"] == [{
        "reason": "FieldValueRequired",
        "field": "spec.versions[0].schema.openAPIV3Schema.properties[spec].type",
        "message": "Required value: must not be empty for specified object fields"}]
    assert http.get(f"{CRDS}/widgets.{group}").status_code == 404


def test_cel_rules_and_a_list_kind_of_its_own(http, group, ns):
    body = crd_body(group, short_names=(), categories=())
    body["spec"]["names"]["listKind"] = "WidgetCollection"
    spec = body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["x-kubernetes-validations"] = [{"rule": "self.replicas <= 10", "message": "at most 10 replicas"}]
    assert http.post(CRDS, json=body).status_code == 201
    try:
        established(http, f"widgets.{group}")
        base = f"/apis/{group}/v1/namespaces/{ns}/widgets"
        r = http.post(base, json=widget("big", group, replicas=11))
        assert r.status_code == 422
        assert r.json()["details"]["causes"][0]["field"] == "spec"
        assert r.json()["details"]["causes"][0]["message"].endswith("at most 10 replicas")
        assert http.post(base, json=widget("ok", group, replicas=10)).status_code == 201
        assert http.get(base).json()["kind"] == "WidgetCollection"
    finally:
        http.delete(f"{CRDS}/widgets.{group}")


def test_server_side_apply_follows_the_crd_schema_list_types(http, group, ns):
    ports = {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
             "items": {"type": "object", "required": ["name"],
                       "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}}
    body = crd_body(group, short_names=(), categories=())
    body["spec"]["versions"][0]["schema"] = _schema(ports=ports)
    assert http.post(CRDS, json=body).status_code == 201
    try:
        established(http, f"widgets.{group}")
        url = f"/apis/{group}/v1/namespaces/{ns}/widgets/w"
        for manager, port in (("alice", "a"), ("bob", "b")):
            doc = (f"apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w\n"
                   f"spec:\n  ports:\n  - name: {port}\n    port: 80\n")
            r = http.patch(url, params={"fieldManager": manager}, content=doc.encode(),
                           headers={"Content-Type": "application/apply-patch+yaml"})
            assert r.status_code in (200, 201), r.text
        # A list-type map: each manager owns its own element, so both stay.
        assert [p["name"] for p in http.get(url).json()["spec"]["ports"]] == ["a", "b"]
        everywhere = http.get(f"/apis/{group}/v1/widgets", params={"fieldSelector": f"metadata.namespace={ns}"})
        assert [i["metadata"]["name"] for i in everywhere.json()["items"]] == ["w"]
    finally:
        http.delete(f"{CRDS}/widgets.{group}")


def test_selectable_fields_select_custom_resources(http, group, ns):
    body = crd_body(group, short_names=(), categories=())
    body["spec"]["versions"][0]["selectableFields"] = [{"jsonPath": ".spec.size"}]
    assert http.post(CRDS, json=body).status_code == 201
    try:
        established(http, f"widgets.{group}")
        base = f"/apis/{group}/v1/namespaces/{ns}/widgets"
        for name, size in (("s", "small"), ("b", "big")):
            assert http.post(base, json=widget(name, group, size=size)).status_code == 201
        big = http.get(base, params={"fieldSelector": "spec.size=big"}).json()
        assert [i["metadata"]["name"] for i in big["items"]] == ["b"]
        r = http.get(base, params={"fieldSelector": "spec.replicas=1"})
        assert r.status_code == 400 and r.json()["message"] == (
            '"spec.replicas" is not a known field selector: only "metadata.name", "metadata.namespace", '
            '"spec.size"')
    finally:
        http.delete(f"{CRDS}/widgets.{group}")


def test_custom_resources_are_encrypted_at_rest_and_read_after_a_restart(tmp_path, group):
    from tests.procs import Etcd
    from tests.test_encryption import KEY1, Cluster, aescbc, config
    e = Etcd().start()
    cluster = Cluster(e, tmp_path)
    try:
        text = config(f"widgets.{group}", aescbc(("key1", KEY1)), "identity: {}")
        http = cluster.serve(text)
        assert http.post(CRDS, json=crd_body(group)).status_code == 201
        established(http, f"widgets.{group}")
        r = http.post(f"/apis/{group}/v1/namespaces/default/widgets", json=widget("secret", group, selector="s3cret"))
        assert r.status_code == 201, r.text
        raw = cluster.raw(f"/registry/{group}/widgets/default/secret")
        assert raw.startswith(b"k8s:enc:aescbc:v1:key1:") and b"s3cret" not in raw
        # A restarted server reads them before it serves their kind again; it is ready
        # (what `serve` waits for) only once it serves every stored CRD's kind.
        http = cluster.serve(text)
        assert http.get("/readyz/crd-informer-synced").text == "ok"
        got = http.get(f"/apis/{group}/v1/namespaces/default/widgets/secret")
        assert got.status_code == 200 and got.json()["spec"]["selector"] == "s3cret"
    finally:
        cluster.stop()
        e.stop()


def test_a_crds_group_versions_get_local_apiservices_while_served(http, group):
    """As kube-apiserver's crdRegistrationController: a Local APIService for each version
    a CRD serves (priority 1000/100, automanaged), removed with the CRD."""
    body = crd_body(group)
    body["spec"]["versions"].append({**body["spec"]["versions"][0], "name": "v2", "storage": False})
    assert http.post(CRDS, json=body).status_code == 201
    established(http, f"widgets.{group}")
    path = "/apis/apiregistration.k8s.io/v1/apiservices"

    def local(version: str):
        r = http.get(f"{path}/{version}.{group}")
        return r.json() if r.status_code == 200 else None
    for version in ("v1", "v2"):
        svc = wait_for(lambda v=version: local(v), what=f"APIService {version}.{group}")
        assert svc["spec"].get("service") is None
        assert (svc["spec"]["groupPriorityMinimum"], svc["spec"]["versionPriority"]) == (1000, 100)
        assert svc["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"] == "true"
        wait_for(lambda v=version: {c["type"]: c["reason"] for c in (local(v).get("status") or {}).get(
            "conditions") or []}.get("Available") == "Local", what="Available Local")
    assert http.delete(f"{CRDS}/widgets.{group}").status_code == 200
    wait_for(lambda: http.get(f"{path}/v1.{group}").status_code == 404
             and http.get(f"{path}/v2.{group}").status_code == 404, what="the APIServices removed")
