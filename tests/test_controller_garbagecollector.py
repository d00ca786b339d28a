"""The garbage collector: unit tests on seeded caches (actions asserted), then cascading
deletion against a real API server with the collector running in-process."""
import uuid

import pytest

from client.rest import Client
from controller_manager.controllers.garbagecollector import GarbageCollector
from controller_manager.testing import RecordingClient, Running, eventually
from machinery import errors
from tests.procs import APIServer, Etcd


def obj(kind, name, *, ns="default", uid=None, owners=(), deleting=False, finalizers=(),
        api_version=None):
    api_version = api_version or {"Deployment": "apps/v1", "ReplicaSet": "apps/v1"}.get(kind, "v1")
    md = {"name": name, "namespace": ns, "uid": uid or str(uuid.uuid4())}
    if owners:
        md["ownerReferences"] = list(owners)
    if deleting:
        md["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    if finalizers:
        md["finalizers"] = list(finalizers)
    return {"apiVersion": api_version, "kind": kind, "metadata": md}


def ref(owner, *, block=False, controller=True):
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": controller, "blockOwnerDeletion": block}


def gc_for(*objs):
    client = RecordingClient()
    gc = GarbageCollector(client, client)
    client.seed(*objs)
    return client, gc


def queued(ctrl) -> list:
    return list(ctrl.queue._queue)


# -- background ----------------------------------------------------------------------------

async def test_deletes_dependent_whose_owner_is_gone():
    rs = obj("ReplicaSet", "rs")
    pod = obj("Pod", "p", owners=[ref(rs)])
    client, gc = gc_for(pod)
    await gc.reconcile(("pods", "default/p"))
    assert client.actions == [("delete", "pods", "default/p", {
        "propagation_policy": "Background", "preconditions": {"uid": pod["metadata"]["uid"]}})]
    assert ("replicasets", "default/rs") in client.reads  # verified with a live GET


async def test_does_nothing_when_owner_is_present():
    rs = obj("ReplicaSet", "rs")
    client, gc = gc_for(rs, obj("Pod", "p", owners=[ref(rs)]))
    await gc.reconcile(("pods", "default/p"))
    assert client.actions == []
    assert client.reads == []  # the cache alone answers the common case


async def test_owner_of_same_name_with_another_uid_counts_as_absent():
    old_rs = obj("ReplicaSet", "rs")
    new_rs = obj("ReplicaSet", "rs")  # re-created: same name, new uid
    client, gc = gc_for(new_rs, obj("Pod", "p", owners=[ref(old_rs)]))
    await gc.reconcile(("pods", "default/p"))
    assert client.verbs() == [("delete", "pods", "default/p")]


async def test_owner_missing_from_a_stale_cache_is_found_by_live_get_and_kept():
    rs = obj("ReplicaSet", "rs")
    client, gc = gc_for(obj("Pod", "p", owners=[ref(rs)]))
    client.live[("replicasets", "default/rs")] = rs  # the server has it; the cache lags
    await gc.reconcile(("pods", "default/p"))
    assert client.actions == []


async def test_absent_owner_is_looked_up_once_for_many_dependents():
    rs = obj("ReplicaSet", "rs")
    client, gc = gc_for(*[obj("Pod", f"p{i}", owners=[ref(rs)]) for i in range(3)])
    for i in range(3):
        await gc.reconcile(("pods", f"default/p{i}"))
    assert sorted(client.verbs()) == [("delete", "pods", f"default/p{i}") for i in range(3)]
    assert client.reads.count(("replicasets", "default/rs")) == 1


async def test_keeps_dependent_with_a_live_owner_and_drops_the_dangling_reference():
    alive, gone = obj("ConfigMap", "alive"), obj("ConfigMap", "gone")
    client, gc = gc_for(alive, obj("Secret", "s", owners=[ref(alive), ref(gone, controller=False)]))
    await gc.reconcile(("secrets", "default/s"))
    assert client.verbs() == [("patch", "secrets", "default/s")]
    patch = client.actions[0][3]
    assert patch["metadata"]["ownerReferences"] == [{"$patch": "delete", "uid": gone["metadata"]["uid"]}]
    left = client.informers["secrets"].store.get("default/s")["metadata"]["ownerReferences"]
    assert [r["uid"] for r in left] == [alive["metadata"]["uid"]]


async def test_ignores_dependent_already_being_deleted():
    rs = obj("ReplicaSet", "rs")
    client, gc = gc_for(obj("Pod", "p", owners=[ref(rs)], deleting=True))
    await gc.reconcile(("pods", "default/p"))
    assert client.actions == []


async def test_never_collects_for_an_owner_kind_it_cannot_resolve():
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "u-1"}
    client, gc = gc_for(obj("ConfigMap", "c", owners=[widget]))
    await gc.reconcile(("configmaps", "default/c"))
    assert client.actions == []


async def test_cluster_scoped_owner_of_namespaced_dependent_is_resolved_cluster_wide():
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "node-uid"}}
    lease = obj("Lease", "n1", ns="kube-node-lease", api_version="coordination.k8s.io/v1",
                owners=[{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "node-uid"}])
    client, gc = gc_for(node, lease)
    await gc.reconcile(("leases", "kube-node-lease/n1"))
    assert client.actions == []
    client.informers["nodes"].store.delete("n1")
    await gc.reconcile(("leases", "kube-node-lease/n1"))
    assert client.verbs() == [("delete", "leases", "kube-node-lease/n1")]


async def test_deleted_owner_enqueues_its_dependents():
    rs = obj("ReplicaSet", "rs")
    client, gc = gc_for(rs, obj("Pod", "p", owners=[ref(rs)]), obj("Pod", "other"))
    gc.queue._queue.clear()
    gc.queue._dirty.clear()
    await client.delete("replicasets", "rs", namespace="default")
    assert ("pods", "default/p") in queued(gc)
    assert ("pods", "default/other") not in queued(gc)


# -- foreground ----------------------------------------------------------------------------

async def test_foreground_owner_waits_for_blocking_dependents_and_enqueues_them():
    d = obj("Deployment", "d", deleting=True, finalizers=["foregroundDeletion"])
    rs = obj("ReplicaSet", "rs", owners=[ref(d, block=True)])
    client, gc = gc_for(d, rs)
    gc.queue._queue.clear()
    gc.queue._dirty.clear()
    await gc.reconcile(("deployments", "default/d"))
    assert client.actions == []
    assert queued(gc) == [("replicasets", "default/rs")]


async def test_dependent_with_dependents_of_foreground_owner_is_deleted_in_foreground():
    d = obj("Deployment", "d", deleting=True, finalizers=["foregroundDeletion"])
    rs = obj("ReplicaSet", "rs", owners=[ref(d, block=True)])
    client, gc = gc_for(d, rs, obj("Pod", "p", owners=[ref(rs, block=True)]))
    await gc.reconcile(("replicasets", "default/rs"))
    assert client.actions == [("delete", "replicasets", "default/rs", {
        "propagation_policy": "Foreground", "preconditions": {"uid": rs["metadata"]["uid"]}})]


async def test_cycle_of_foreground_deletions_is_broken_by_unblocking_owner_references():
    d = obj("Deployment", "d", deleting=True, finalizers=["foregroundDeletion"])
    rs = obj("ReplicaSet", "rs", owners=[ref(d, block=True)])
    # rs's own dependent is itself waiting in foreground (and, in a cycle, on rs).
    dep = obj("ConfigMap", "c", owners=[ref(rs, block=True)], deleting=True, finalizers=["foregroundDeletion"])
    client, gc = gc_for(d, rs, dep)
    await gc.reconcile(("replicasets", "default/rs"))
    assert client.verbs() == [("patch", "replicasets", "default/rs"), ("delete", "replicasets", "default/rs")]
    assert client.actions[0][3]["metadata"]["ownerReferences"] == [
        {"uid": d["metadata"]["uid"], "blockOwnerDeletion": False}]
    assert client.actions[1][3]["propagation_policy"] == "Foreground"


async def test_leaf_dependent_of_foreground_owner_is_deleted_in_background():
    rs = obj("ReplicaSet", "rs", deleting=True, finalizers=["foregroundDeletion"])
    client, gc = gc_for(rs, obj("Pod", "p", owners=[ref(rs, block=True)]))
    await gc.reconcile(("pods", "default/p"))
    assert client.actions[0][:3] == ("delete", "pods", "default/p")
    assert client.actions[0][3]["propagation_policy"] == "Background"


async def test_foreground_finalizer_goes_once_no_blocking_dependent_remains():
    d = obj("Deployment", "d", deleting=True, finalizers=["foregroundDeletion", "example.com/keep"])
    # A dependent without blockOwnerDeletion does not hold the owner.
    client, gc = gc_for(d, obj("ConfigMap", "c", owners=[ref(d, block=False)]))
    await gc.reconcile(("deployments", "default/d"))
    assert client.verbs() == [("patch", "deployments", "default/d")]
    assert client.actions[0][3]["metadata"]["finalizers"] == ["example.com/keep"]
    assert "resourceVersion" in client.actions[0][3]["metadata"]  # against the live object


async def test_solid_owner_keeps_dependent_but_reference_to_waiting_owner_goes():
    keep = obj("ConfigMap", "keep")
    waiting = obj("Deployment", "d", deleting=True, finalizers=["foregroundDeletion"])
    secret = obj("Secret", "s", owners=[ref(keep), ref(waiting, block=True, controller=False)])
    client, gc = gc_for(keep, waiting, secret)
    await gc.reconcile(("secrets", "default/s"))
    assert client.verbs() == [("patch", "secrets", "default/s")]
    assert client.actions[0][3]["metadata"]["ownerReferences"] == [
        {"$patch": "delete", "uid": waiting["metadata"]["uid"]}]


# -- orphan --------------------------------------------------------------------------------

async def test_orphan_removes_owner_references_then_the_finalizer():
    rs = obj("ReplicaSet", "rs", deleting=True, finalizers=["orphan"])
    other = obj("ReplicaSet", "other")
    client, gc = gc_for(rs, other, obj("Pod", "a", owners=[ref(rs)]),
                        obj("Pod", "b", owners=[ref(rs), ref(other, controller=False)]))
    await gc.reconcile(("replicasets", "default/rs"))
    assert client.verbs() == [("patch", "pods", "default/a"), ("patch", "pods", "default/b"),
                              ("patch", "replicasets", "default/rs")]
    pods = client.informers["pods"].store
    assert not pods.get("default/a")["metadata"].get("ownerReferences")
    assert [r["name"] for r in pods.get("default/b")["metadata"]["ownerReferences"]] == ["other"]
    assert client.actions[-1][3]["metadata"]["finalizers"] == []


async def test_orphan_with_no_dependents_only_removes_the_finalizer():
    rs = obj("ReplicaSet", "rs", deleting=True, finalizers=["orphan"])
    client, gc = gc_for(rs)
    await gc.reconcile(("replicasets", "default/rs"))
    assert client.verbs() == [("patch", "replicasets", "default/rs")]


async def test_owner_gone_from_the_cache_is_nothing_to_do():
    client, gc = gc_for()
    await gc.reconcile(("replicasets", "default/nope"))
    assert client.actions == []


# -- against a real API server -------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """A private etcd + API server: the collector acts on every namespace, so it must
    not see other tests' objects."""
    etcd = Etcd().start()
    # No serviceaccount controller here: ServiceAccount admission off, as in Kubernetes'
    # integration tests of controllers.
    server = APIServer(etcd.url, "--disable-admission-plugins", "ServiceAccount").start()
    yield server
    server.stop()
    etcd.stop()


@pytest.fixture
async def client(cluster):
    async with Client(cluster.connection()) as c:
        yield c


@pytest.fixture
async def namespace(client):
    name = "gc-" + uuid.uuid4().hex[:8]
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def owner_ref(o, *, block=True):
    md = o["metadata"]
    return {"apiVersion": o["apiVersion"], "kind": o["kind"], "name": md["name"], "uid": md["uid"],
            "controller": True, "blockOwnerDeletion": block}


async def make_deployment_tree(client, ns, *, node=None, pods=2):
    """A Deployment, a ReplicaSet it owns and pods the ReplicaSet owns, made directly
    through the API (the ReplicaSet and Deployment controllers are not running)."""
    labels = {"app": "web"}
    template = {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    d = await client.create({"apiVersion": "apps/v1", "kind": "Deployment",
                             "metadata": {"name": "web", "namespace": ns},
                             "spec": {"replicas": pods, "selector": {"matchLabels": labels},
                                      "template": template}})
    rs = await client.create({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                              "metadata": {"name": "web-1", "namespace": ns,
                                           "ownerReferences": [owner_ref(d)]},
                              "spec": {"replicas": pods, "selector": {"matchLabels": labels},
                                       "template": template}})
    created = []
    for i in range(pods):
        spec = {"containers": [{"name": "c", "image": "busybox"}]}
        if node:
            spec["nodeName"] = node
        created.append(await client.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"web-1-{i}", "namespace": ns, "labels": labels,
                         "ownerReferences": [owner_ref(rs)]}, "spec": spec}))
    return d, rs, created


async def names(client, plural, ns):
    return sorted(o["metadata"]["name"] for o in (await client.list(plural, namespace=ns))["items"])


async def gone(client, plural, name, ns):
    try:
        await client.get(plural, name, namespace=ns)
        return False
    except errors.NotFound:
        return True


async def test_background_delete_of_a_deployment_removes_its_replicasets_and_pods(client, namespace):
    await make_deployment_tree(client, namespace)
    async with Running(client, (GarbageCollector, {})):
        await client.delete("deployments", "web", namespace=namespace)
        assert await gone(client, "deployments", "web", namespace)  # Background: at once
        await eventually(lambda: _empty(client, namespace), what="replicasets and pods collected")


async def _empty(client, ns):
    return not await names(client, "replicasets", ns) and not await names(client, "pods", ns)


async def test_foreground_delete_keeps_the_owner_until_its_dependents_are_gone(client, namespace):
    # Pods bound to a node are deleted gracefully and stay until a kubelet confirms; the
    # test plays the kubelet, so there is a window in which the pods still exist.
    await make_deployment_tree(client, namespace, node="node-a")
    async with Running(client, (GarbageCollector, {})):
        d = await client.delete("deployments", "web", namespace=namespace,
                                propagation_policy="Foreground")
        assert "foregroundDeletion" in d["metadata"]["finalizers"]

        async def pods_terminating():
            pods = (await client.list("pods", namespace=namespace))["items"]
            return len(pods) == 2 and all(p["metadata"].get("deletionTimestamp") for p in pods)
        await eventually(pods_terminating, what="pods deleted in foreground")
        rs = await client.get("replicasets", "web-1", namespace=namespace)
        assert rs["metadata"].get("deletionTimestamp") and "foregroundDeletion" in rs["metadata"]["finalizers"]
        d = await client.get("deployments", "web", namespace=namespace)  # still held
        assert d["metadata"].get("deletionTimestamp")

        for name in await names(client, "pods", namespace):  # the "kubelet" confirms
            await client.delete("pods", name, namespace=namespace, grace_period_seconds=0)

        async def owner_gone_last():
            d_gone = await gone(client, "deployments", "web", namespace)
            if d_gone:  # once the owner is gone, every dependent must already be gone
                assert await _empty(client, namespace)
            return d_gone
        await eventually(owner_gone_last, what="deployment deleted after its dependents")


async def test_orphan_delete_leaves_dependents_without_the_owner_reference(client, namespace):
    _, rs, _ = await make_deployment_tree(client, namespace)
    async with Running(client, (GarbageCollector, {})):
        await client.delete("deployments", "web", namespace=namespace, propagation_policy="Orphan")
        await eventually(lambda: gone(client, "deployments", "web", namespace), what="deployment gone")
        rs = await client.get("replicasets", "web-1", namespace=namespace)
        assert not rs["metadata"].get("ownerReferences")
        pods = (await client.list("pods", namespace=namespace))["items"]
        assert len(pods) == 2
        assert all(p["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"] for p in pods)


async def test_object_created_with_a_dangling_owner_reference_is_collected(client, namespace):
    async with Running(client, (GarbageCollector, {})):
        await client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "orphaned", "namespace": namespace, "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "never", "uid": str(uuid.uuid4())}]}})
        await eventually(lambda: gone(client, "configmaps", "orphaned", namespace),
                         what="dangling dependent collected")


def test_only_kinds_discovery_says_can_be_listed_watched_and_deleted_are_monitored():
    # metrics.k8s.io's kinds take get and list only: an informer on them would fail for ever
    # (found by the churn chaos run); Kubernetes' GetDeletableResources skips them too.
    from client.rest import Resource, Resources
    from controller_manager.controller_utils import stored_kinds
    resources = Resources()
    pod_metrics = Resource("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", True)
    widgets = Resource("example.com", "v1", "Widget", "widgets", True)
    resources.add(pod_metrics, verbs=("get", "list"))
    resources.add(widgets, verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"))
    kinds = stored_kinds(resources)
    assert widgets in kinds and pod_metrics not in kinds
    assert any(r.plural == "configmaps" for r in kinds)  # the built-in table's, verbs untold
    assert not any(r.plural == "subjectaccessreviews" for r in kinds)
