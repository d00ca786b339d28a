"""The namespace controller: unit tests on a recording client, then namespace deletion
against a real API server with the controller running in-process."""
import uuid

import pytest

from client.clock import FakeClock
from client.rest import Client
from controller_manager.controllers.namespace import NamespaceController
from controller_manager.testing import RecordingClient, Running, eventually
from machinery import errors


def namespace(name, *, deleting=True, finalizers=("kubernetes",)):
    ns = {"apiVersion": "v1", "kind": "Namespace",
          "metadata": {"name": name}, "spec": {"finalizers": list(finalizers)},
          "status": {"phase": "Terminating" if deleting else "Active"}}
    if deleting:
        ns["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return ns


def cm(name, ns="doomed"):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}}


def controller(*objs, kinds=("configmaps", "pods", "services")):
    client = RecordingClient()
    ctrl = NamespaceController(client, client, clock=FakeClock())
    for plural in kinds:
        client.informer(plural)  # kinds whose objects the test seeds
    client.seed(*objs)
    return client, ctrl


def conditions(client):
    status_writes = [a for a in client.actions if a[0] == "update_status"]
    return {c["type"]: c for c in status_writes[-1][3]["status"]["conditions"]}


async def test_ignores_a_namespace_that_is_not_being_deleted():
    client, ctrl = controller(namespace("live", deleting=False), cm("x", "live"))
    await ctrl.reconcile("live")
    assert client.actions == []


async def test_deletes_every_namespaced_kind_then_finalizes():
    client, ctrl = controller(namespace("doomed"), cm("a"), cm("b"), cm("elsewhere", "other"))
    await ctrl.reconcile("doomed")
    collections = [a[1] for a in client.actions if a[0] == "delete_collection"]
    namespaced = sorted(r.plural for r in client.resources if r.namespaced)
    # Every namespaced kind that stores objects; a review (create only) holds none.
    assert sorted(collections) == [p for p in namespaced if not p.endswith("reviews")]
    assert "configmaps" in collections and "localsubjectaccessreviews" not in collections
    assert all(a[2] == "doomed" for a in client.actions if a[0] == "delete_collection")
    assert "other/elsewhere" in client.informers["configmaps"].store  # other namespaces untouched
    finalize = [a for a in client.actions if a[0] == "update_finalize"]
    assert len(finalize) == 1 and finalize[0][3]["spec"]["finalizers"] == []
    assert conditions(client)["NamespaceContentRemaining"]["status"] == "False"


async def test_keeps_other_finalizers_when_finalizing():
    client, ctrl = controller(namespace("doomed", finalizers=("kubernetes", "example.com/x")))
    await ctrl.reconcile("doomed")
    finalize = [a for a in client.actions if a[0] == "update_finalize"]
    assert finalize[0][3]["spec"]["finalizers"] == ["example.com/x"]


async def test_waits_while_content_remains_and_reports_it():
    lingering = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "p", "namespace": "doomed", "deletionTimestamp": "2024-01-01T00:00:00Z",
        "deletionGracePeriodSeconds": 30, "finalizers": ["example.com/hold"]},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}
    client, ctrl = controller(namespace("doomed"), lingering)
    # Without delete-collection each object is deleted by itself, and one already
    # terminating is left to finish: so it stays, as a terminating pod does.
    client.fail[("delete_collection", "pods")] = errors.MethodNotAllowed("no collections")
    await ctrl.reconcile("doomed")
    assert ("delete", "pods", "doomed/p") not in client.verbs()
    assert not [a for a in client.actions if a[0] == "update_finalize"]
    conds = conditions(client)
    assert conds["NamespaceContentRemaining"]["status"] == "True"
    assert "pods has 1 resource instances" in conds["NamespaceContentRemaining"]["message"]
    assert conds["NamespaceFinalizersRemaining"]["status"] == "True"
    assert "example.com/hold in 1 resource instances" in conds["NamespaceFinalizersRemaining"]["message"]
    assert conds["NamespaceDeletionContentFailure"]["status"] == "False"
    assert "doomed" in ctrl.queue._waiting  # looked at again later, not finalized


async def test_conditions_are_written_only_when_they_change():
    client, ctrl = controller(namespace("doomed"), {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "held", "namespace": "doomed", "finalizers": ["example.com/hold"]}})
    client.fail[("delete_collection", "configmaps")] = errors.MethodNotAllowed("no collections")
    client.fail[("delete", "configmaps")] = errors.Conflict("held")
    with pytest.raises(RuntimeError):
        await ctrl.reconcile("doomed")
    writes = len([a for a in client.actions if a[0] == "update_status"])
    with pytest.raises(RuntimeError):
        await ctrl.reconcile("doomed")
    assert len([a for a in client.actions if a[0] == "update_status"]) == writes


async def test_falls_back_to_deleting_one_by_one_without_delete_collection():
    client, ctrl = controller(namespace("doomed"), cm("a"), cm("b"))
    client.fail[("delete_collection", "configmaps")] = errors.MethodNotAllowed("no collections")
    await ctrl.reconcile("doomed")
    assert ("delete", "configmaps", "doomed/a") in client.verbs()
    assert ("delete", "configmaps", "doomed/b") in client.verbs()
    assert [a[0] for a in client.actions][-1] == "update_finalize"


async def test_already_finalized_namespace_is_left_to_the_server():
    client, ctrl = controller(namespace("doomed", finalizers=("example.com/x",)), cm("a"))
    await ctrl.reconcile("doomed")
    assert client.actions == []


# -- against a real API server -------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(private_apiserver):
    return private_apiserver


@pytest.fixture
async def client(cluster):
    async with Client(cluster.connection()) as c:
        yield c


async def ns_gone(client, name):
    try:
        await client.get("namespaces", name)
        return False
    except errors.NotFound:
        return True


async def test_deleting_a_namespace_removes_its_contents_then_the_namespace(client):
    name = "ns-" + uuid.uuid4().hex[:8]
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    for i in range(3):
        await client.create(cm(f"cm{i}", name))
    await client.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": name}})
    await client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": name},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": name},
                         "spec": {"ports": [{"port": 80}], "selector": {"app": "x"}}})
    await client.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": name},
                         "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                             "metadata": {"labels": {"a": "b"}},
                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    async with Running(client, (NamespaceController, {})):
        deleted = await client.delete("namespaces", name)
        assert deleted["status"]["phase"] == "Terminating"
        await eventually(lambda: ns_gone(client, name), what="namespace finalized and removed")
    for plural in ("configmaps", "secrets", "pods", "services", "deployments"):
        assert (await client.list(plural, namespace=name))["items"] == []


async def test_namespace_waits_for_a_terminating_pod(client):
    name = "ns-" + uuid.uuid4().hex[:8]
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # Bound to a node: deleted gracefully, so it lingers until its "kubelet" confirms.
    await client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": name},
                         "spec": {"nodeName": "node-a", "terminationGracePeriodSeconds": 1,
                                  "containers": [{"name": "c", "image": "busybox"}]}})
    async with Running(client, (NamespaceController, {})):
        await client.delete("namespaces", name)

        async def reports_remaining():
            ns = await client.get("namespaces", name)
            return any(c["type"] == "NamespaceContentRemaining" and c["status"] == "True"
                       for c in (ns.get("status") or {}).get("conditions") or ())
        await eventually(reports_remaining, what="NamespaceContentRemaining=True")
        pod = await client.get("pods", "p", namespace=name)
        assert pod["metadata"].get("deletionTimestamp")
        assert not await ns_gone(client, name)
        await client.delete("pods", "p", namespace=name, grace_period_seconds=0)  # the kubelet confirms
        await eventually(lambda: ns_gone(client, name), what="namespace removed")
