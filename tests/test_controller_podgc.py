"""The pod garbage collector: unit tests on seeded caches with a fake clock, then against
a real API server."""
import uuid

import pytest

from client.clock import FakeClock
from client.rest import Client
from controller_manager.controllers.podgc import KEY, PodGCController, PodGCOptions
from controller_manager.testing import RecordingClient, Running, eventually


def pod(name, *, node=None, phase="Running", created="2024-01-01T00:00:00Z", reason=None,
        deleting=False, ns="default"):
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "creationTimestamp": created},
         "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"phase": phase}}
    if node:
        p["spec"]["nodeName"] = node
    if reason:
        p["status"]["reason"] = reason
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return p


def node(name):
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def controller(*objs, **options):
    client = RecordingClient()
    clock = FakeClock()
    ctrl = PodGCController(client, client, clock=clock, options=PodGCOptions(**options))
    client.seed(*objs)
    return client, ctrl, clock


def force(name):
    return ("delete", "pods", f"default/{name}",
            {"grace_period_seconds": 0, "preconditions": {"uid": f"uid-{name}"}})


async def test_deletes_oldest_terminated_pods_beyond_the_threshold_evicted_first():
    client, ctrl, _ = controller(
        node("n1"),
        pod("new", node="n1", phase="Succeeded", created="2024-01-03T00:00:00Z"),
        pod("old", node="n1", phase="Failed", created="2024-01-01T00:00:00Z"),
        pod("evicted", node="n1", phase="Failed", reason="Evicted", created="2024-01-05T00:00:00Z"),
        pod("running", node="n1", created="2023-01-01T00:00:00Z"),
        terminated_pod_gc_threshold=1)
    await ctrl.reconcile(KEY)
    assert client.actions == [force("evicted"), force("old")]


async def test_does_nothing_at_or_below_the_threshold():
    client, ctrl, _ = controller(node("n1"), pod("a", node="n1", phase="Succeeded"),
                                 pod("b", node="n1", phase="Failed"), terminated_pod_gc_threshold=2)
    await ctrl.reconcile(KEY)
    assert client.actions == []


async def test_threshold_zero_turns_terminated_pod_gc_off():
    client, ctrl, _ = controller(node("n1"), pod("a", node="n1", phase="Succeeded"),
                                 terminated_pod_gc_threshold=0)
    await ctrl.reconcile(KEY)
    assert client.actions == []


async def test_orphaned_pods_are_deleted_only_after_quarantine_and_a_live_check():
    client, ctrl, clock = controller(node("n1"), pod("kept", node="n1"), pod("orphan", node="ghost"))
    await ctrl.reconcile(KEY)
    assert client.actions == []  # quarantined
    clock.step(39)
    await ctrl.reconcile(KEY)
    assert client.actions == []
    clock.step(1)
    await ctrl.reconcile(KEY)
    assert ("nodes", "ghost") in client.reads
    assert client.verbs() == [("patch_status", "pods", "default/orphan"), ("delete", "pods", "default/orphan")]
    status = client.actions[0][3]["status"]
    assert status["phase"] == "Failed"
    assert status["conditions"][0]["type"] == "DisruptionTarget"
    assert status["conditions"][0]["reason"] == "DeletionByPodGC"
    assert client.actions[1] == force("orphan")


async def test_node_missing_only_from_a_stale_cache_saves_its_pods():
    client, ctrl, clock = controller(pod("p", node="late"), orphaned_pod_quarantine=0)
    client.live[("nodes", "late")] = node("late")  # the server has it
    await ctrl.reconcile(KEY)
    assert client.actions == []


async def test_node_that_comes_back_ends_the_quarantine():
    client, ctrl, clock = controller(pod("p", node="flaky"))
    await ctrl.reconcile(KEY)
    client.seed(node("flaky"))
    await ctrl.reconcile(KEY)
    clock.step(60)
    await ctrl.reconcile(KEY)
    assert client.actions == []


async def test_terminated_orphan_is_deleted_without_marking_it_failed():
    client, ctrl, _ = controller(pod("done", node="ghost", phase="Succeeded"), orphaned_pod_quarantine=0)
    await ctrl.reconcile(KEY)
    assert client.actions == [force("done")]


async def test_unscheduled_terminating_pods_are_force_deleted():
    client, ctrl, _ = controller(pod("stuck", deleting=True), pod("pending"))
    await ctrl.reconcile(KEY)
    assert client.actions == [force("stuck")]


async def test_pods_it_deleted_are_not_counted_again_while_the_cache_lags():
    client, ctrl, _ = controller(node("n1"), pod("a", node="n1", phase="Succeeded", created="2024-01-02T00:00:00Z"),
                                 pod("orphan", node="ghost"), orphaned_pod_quarantine=0,
                                 terminated_pod_gc_threshold=1)
    await ctrl.reconcile(KEY)
    assert client.verbs() == [("patch_status", "pods", "default/orphan"), ("delete", "pods", "default/orphan")]
    # The watch shows the pod as Failed before it shows it gone.
    client.seed(pod("orphan", node="ghost", phase="Failed"))
    await ctrl.reconcile(KEY)
    assert len(client.actions) == 2  # "a" is still the only terminated pod


async def test_a_pass_is_scheduled_again_when_a_quarantine_ends():
    client, ctrl, clock = controller(pod("p", node="ghost"), orphaned_pod_quarantine=7, pod_gc_period=20)
    await ctrl.reconcile(KEY)
    when, _ = ctrl.queue._waiting[KEY]
    assert when == pytest.approx(7)


# -- against a real API server -------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(private_apiserver):
    return private_apiserver


async def test_collects_terminated_surplus_and_orphans(cluster):
    async with Client(cluster.connection()) as client:
        ns = "gc-" + uuid.uuid4().hex[:8]
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})

        async def make(name, node, phase=None):
            await client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                                 "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
            if phase:
                await client.patch("pods", name, {"status": {"phase": phase}}, namespace=ns, subresource="status")
        for i in range(4):
            await make(f"done-{i}", "n1", "Succeeded")
        await make("live", "n1")
        await make("orphan", "ghost")

        async def pods():
            return sorted(p["metadata"]["name"] for p in (await client.list("pods", namespace=ns))["items"])
        async with Running(client, (PodGCController, {"terminated_pod_gc_threshold": 2,
                                                      "orphaned_pod_quarantine": 0.2,
                                                      "pod_gc_period": 0.2})):
            await eventually(lambda: _equals(pods, ["done-2", "done-3", "live"]),
                             what="surplus terminated pods and the orphan collected")


async def _equals(fn, want):
    return await fn() == want
