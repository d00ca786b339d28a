"""ReplicaSet controller: reconcile against seeded caches and a recording client."""
from __future__ import annotations

import asyncio
import copy
from datetime import datetime, timedelta, timezone

import pytest

from client.clock import FakeClock
from controller_manager.controller_utils import deletion_order, rfc3339, slow_start_batch
from controller_manager.controllers.replicaset import ReplicaSetController
from controller_manager.testing import RecordingClient
from machinery import errors

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
RS_UID = "rs-uid"


def ago(seconds: float) -> str:
    return rfc3339(NOW - timedelta(seconds=seconds))


def make_rs(replicas=3, *, labels=None, min_ready=0, status=None, generation=1, **meta) -> dict:
    labels = labels or {"app": "web"}
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "web", "namespace": "default", "uid": RS_UID, "generation": generation,
                       **meta},
          "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                   "minReadySeconds": min_ready,
                   "template": {"metadata": {"labels": dict(labels)},
                                "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}}
    if status is not None:
        rs["status"] = status
    return rs


def make_pod(name, *, labels=None, owner: str | None = RS_UID, node="node-1", phase="Running",
             ready=True, ready_since=100, created=1000, deleting=False, owner_kind="ReplicaSet",
             owner_name="web", annotations=None, restarts=0) -> dict:
    md = {"name": name, "namespace": "default", "uid": f"uid-{name}",
          "labels": {"app": "web"} if labels is None else labels, "creationTimestamp": ago(created)}
    if owner:
        md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner_name,
                                  "uid": owner, "controller": True, "blockOwnerDeletion": True}]
    if deleting:
        md["deletionTimestamp"] = ago(0)
    if annotations:
        md["annotations"] = annotations
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": md,
           "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
           "status": {"phase": phase, "conditions": [
               {"type": "Ready", "status": "True" if ready else "False",
                "lastTransitionTime": ago(ready_since)}],
               "containerStatuses": [{"name": "c", "restartCount": restarts}]}}
    if node:
        pod["spec"]["nodeName"] = node
    return pod


class Events:
    def __init__(self):
        self.items = []

    def event(self, obj, type_, reason, message):
        self.items.append((type_, reason, message))

    def reasons(self):
        return [r for _, r, _ in self.items]


@pytest.fixture
def env():
    rc = RecordingClient()
    clock = FakeClock(1000.0)
    events = Events()
    ctrl = ReplicaSetController(rc, rc, clock=clock, recorder=events, now=lambda: NOW)
    return rc, ctrl, clock, events


def pods_in(rc) -> list[dict]:
    return rc.informers["pods"].store.list()


def status_writes(rc) -> list[dict]:
    return [a[3]["status"] for a in rc.actions if a[0] == "update_status"]


def in_sync_status(n, *, ready=None, available=None):
    ready = n if ready is None else ready
    available = ready if available is None else available
    return {k: v for k, v in {"replicas": n, "fullyLabeledReplicas": n, "readyReplicas": ready,
                              "availableReplicas": available, "observedGeneration": 1}.items() if v}


async def test_creates_missing_pods(env):
    rc, ctrl, _, events = env
    rc.seed(make_rs(3))
    await ctrl.reconcile("default/web")

    creates = [a for a in rc.actions if a[0] == "create"]
    assert len(creates) == 3
    for _, plural, _, pod in creates:
        assert plural == "pods"
        md = pod["metadata"]
        assert md["generateName"] == "web-"
        assert md["labels"] == {"app": "web"}
        assert md["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                          "uid": RS_UID, "controller": True, "blockOwnerDeletion": True}]
        assert pod["spec"] == {"containers": [{"name": "c", "image": "nginx:1"}]}
    assert events.reasons() == ["SuccessfulCreate"] * 3
    # Status is computed from what the cache held when the sync began.
    assert status_writes(rc) == [{"replicas": 0, "observedGeneration": 1}]

    rc.actions.clear()
    await ctrl.reconcile("default/web")
    assert rc.verbs() == [("update_status", "replicasets", "default/web")]
    assert status_writes(rc) == [{"replicas": 3, "fullyLabeledReplicas": 3, "observedGeneration": 1}]


async def test_does_nothing_when_in_sync(env):
    rc, ctrl, _, _ = env
    rc.seed(make_rs(3, status=in_sync_status(3)), *(make_pod(f"p{i}") for i in range(3)))
    await ctrl.reconcile("default/web")
    assert rc.actions == []


async def test_does_nothing_for_a_deleted_replicaset(env):
    rc, ctrl, _, _ = env
    await ctrl.reconcile("default/gone")
    assert rc.actions == []


async def test_deletes_surplus_preferring_unscheduled_then_not_ready(env):
    rc, ctrl, _, events = env
    rc.seed(make_rs(2),
            make_pod("ready-old", created=500),
            make_pod("ready-new", created=50),
            make_pod("running-not-ready", ready=False),
            make_pod("pending", phase="Pending", ready=False),
            make_pod("unscheduled", node=None, phase="Pending", ready=False))
    await ctrl.reconcile("default/web")
    deleted = [a[2] for a in rc.actions if a[0] == "delete"]
    assert deleted == ["default/unscheduled", "default/pending", "default/running-not-ready"]
    assert events.reasons() == ["SuccessfulDelete"] * 3

    # Among ready pods, the newest goes first.
    rc.actions.clear()
    rc.seed(make_rs(1, generation=2))
    await ctrl.reconcile("default/web")
    assert [a[2] for a in rc.actions if a[0] == "delete"] == ["default/ready-new"]


def test_deletion_order_follows_active_pods_with_ranks():
    pods = [make_pod("ready-long", node="n1", ready_since=500, created=600),
            make_pod("ready-recently", node="n2", ready_since=10, created=600),
            make_pod("costly", node="n3", ready=False,
                     annotations={"controller.kubernetes.io/pod-deletion-cost": "10"}),
            make_pod("cheap", node="n4", ready=False,
                     annotations={"controller.kubernetes.io/pod-deletion-cost": "-5"}),
            make_pod("restarting", node="n5", ready_since=500, created=600, restarts=3)]
    # A pod doubled up with its siblings on a node goes before a lonely one.
    crowded = make_pod("crowded", node="n6", ready_since=500, created=600)
    siblings = [make_pod(f"s{i}", node="n6") for i in range(2)]
    names = [p["metadata"]["name"] for p in deletion_order(pods + [crowded], pods + [crowded] + siblings)]
    assert names == ["cheap", "costly", "crowded", "ready-recently", "restarting", "ready-long"]


async def test_adopts_orphans(env):
    rc, ctrl, _, _ = env
    rc.seed(make_rs(2), make_pod("p0"), make_pod("orphan", owner=None))
    await ctrl.reconcile("default/web")
    patches = [a for a in rc.actions if a[0] == "patch"]
    assert [a[2] for a in patches] == ["default/orphan"]
    assert patches[0][3]["metadata"]["ownerReferences"][0]["uid"] == RS_UID
    assert patches[0][3]["metadata"]["uid"] == "uid-orphan"  # a precondition, as Kubernetes sends
    # Before adopting, the ReplicaSet was re-read live (it might be gone or going).
    assert rc.reads == [("replicasets", "default/web")]
    # Adopted pods count: no create, no delete.
    assert not [a for a in rc.actions if a[0] in ("create", "delete")]
    owned = rc.informers["pods"].store.get("default/orphan")["metadata"]["ownerReferences"]
    assert owned[0]["controller"] is True


async def test_does_not_adopt_when_the_replicaset_was_replaced(env):
    rc, ctrl, _, _ = env
    rc.seed(make_rs(1), make_pod("orphan", owner=None))
    rc.live[("replicasets", "default/web")] = {**make_rs(1), "metadata": {
        **make_rs(1)["metadata"], "uid": "another-uid"}}
    with pytest.raises(errors.Conflict):
        await ctrl.reconcile("default/web")
    assert not [a for a in rc.actions if a[0] in ("patch", "create")]


async def test_releases_pods_that_stop_matching(env):
    rc, ctrl, _, _ = env
    rc.seed(make_rs(1), make_pod("relabelled", labels={"app": "debug"}))
    await ctrl.reconcile("default/web")
    patch = next(a for a in rc.actions if a[0] == "patch")
    assert patch[2] == "default/relabelled"
    assert patch[3]["metadata"]["ownerReferences"] == [{"$patch": "delete", "uid": RS_UID}]
    assert not rc.informers["pods"].store.get("default/relabelled")["metadata"].get("ownerReferences")
    # ... and replaces it, since it no longer counts.
    assert [a[0] for a in rc.actions if a[0] == "create"] == ["create"]


async def test_ignores_pods_owned_by_another_controller(env):
    rc, ctrl, _, _ = env
    theirs = make_pod("theirs", owner="other-uid", owner_name="other")
    rc.seed(make_rs(1), theirs)
    await ctrl.reconcile("default/web")
    assert not [a for a in rc.actions if a[0] in ("patch", "delete")]
    assert len([a for a in rc.actions if a[0] == "create"]) == 1
    assert rc.informers["pods"].store.get("default/theirs")["metadata"]["ownerReferences"][0]["uid"] == "other-uid"


async def test_ignores_terminating_and_finished_pods(env):
    rc, ctrl, _, _ = env
    rc.seed(make_rs(2), make_pod("going", deleting=True), make_pod("done", phase="Succeeded"),
            make_pod("alive"))
    await ctrl.reconcile("default/web")
    assert len([a for a in rc.actions if a[0] == "create"]) == 1
    assert not [a for a in rc.actions if a[0] == "delete"]
    assert status_writes(rc)[0]["replicas"] == 1


async def test_expectations_prevent_over_creation(env):
    rc, ctrl, clock, _ = env
    rc.seed(make_rs(3))
    pods_informer = rc.informers.pop("pods")  # a watch that lags: creates are not seen yet
    await ctrl.reconcile("default/web")
    created = [a[3] for a in rc.actions if a[0] == "create"]
    assert len(created) == 3 and ctrl.expectations.pending("default/web") == (3, 0)

    rc.actions.clear()
    await ctrl.reconcile("default/web")  # the cache still shows no pods
    assert not [a for a in rc.actions if a[0] == "create"]

    # The watch catches up: each create is observed, and then the count is right.
    rc.informers["pods"] = pods_informer
    rc.seed(*created[:2])
    await ctrl.reconcile("default/web")
    assert not [a for a in rc.actions if a[0] == "create"]
    rc.seed(created[2])
    assert ctrl.expectations.satisfied("default/web")
    await ctrl.reconcile("default/web")
    assert not [a for a in rc.actions if a[0] in ("create", "delete")]


async def test_expectations_expire_after_five_minutes(env):
    rc, ctrl, clock, _ = env
    rc.seed(make_rs(2))
    rc.informers.pop("pods")  # these creates are never observed
    await ctrl.reconcile("default/web")
    rc.actions.clear()
    clock.step(299)
    await ctrl.reconcile("default/web")
    assert not [a for a in rc.actions if a[0] == "create"]
    clock.step(2)
    await ctrl.reconcile("default/web")
    assert len([a for a in rc.actions if a[0] == "create"]) == 2


async def test_deletion_expectations_prevent_over_deletion(env):
    rc, ctrl, _, _ = env
    rc.seed(make_rs(1), make_pod("a", created=10), make_pod("b", created=20), make_pod("c", created=30))
    pods_informer = rc.informers.pop("pods")
    await ctrl.reconcile("default/web")
    assert [a[2] for a in rc.actions if a[0] == "delete"] == ["default/a", "default/b"]
    rc.informers["pods"] = pods_informer
    rc.actions.clear()
    await ctrl.reconcile("default/web")  # cache still has all three
    assert not [a for a in rc.actions if a[0] == "delete"]
    # A pod seen terminating and then deleted is counted once.
    going = copy.deepcopy(pods_informer.store.get("default/a"))
    going["metadata"]["deletionTimestamp"] = ago(0)
    rc.seed(going)
    await rc.delete("pods", "a", namespace="default")
    assert ctrl.expectations.pending("default/web") == (0, 1)
    await rc.delete("pods", "b", namespace="default")
    assert ctrl.expectations.satisfied("default/web")


async def test_slow_start_stops_after_a_failed_batch(env):
    rc, ctrl, _, events = env
    rc.seed(make_rs(10))
    rc.fail[("create", "pods")] = errors.Forbidden("quota exceeded")
    with pytest.raises(errors.Forbidden):
        await ctrl.reconcile("default/web")
    assert events.reasons() == ["FailedCreate"]  # one attempt, not ten
    assert ctrl.expectations.satisfied("default/web")  # the skipped creates are not awaited
    cond = status_writes(rc)[-1]["conditions"]
    assert [(c["type"], c["status"], c["reason"]) for c in cond] == [("ReplicaFailure", "True", "FailedCreate")]

    del rc.fail[("create", "pods")]
    rc.actions.clear()
    await ctrl.reconcile("default/web")
    assert len([a for a in rc.actions if a[0] == "create"]) == 10
    assert "conditions" not in status_writes(rc)[-1]


async def test_slow_start_batches_double():
    batches, started = [], []

    async def fn():
        started.append(1)
        await asyncio.sleep(0)  # every call of a batch starts before any finishes
        if started:
            batches.append(len(started))
            started.clear()
    assert await slow_start_batch(10, fn) == (10, None)
    assert batches == [1, 2, 4, 3]


async def test_status_written_only_when_changed(env):
    rc, ctrl, _, _ = env
    rc.seed(make_rs(2), make_pod("a"), make_pod("b", ready=False))
    await ctrl.reconcile("default/web")
    assert status_writes(rc) == [{"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 1,
                                  "availableReplicas": 1, "observedGeneration": 1}]
    rc.actions.clear()
    await ctrl.reconcile("default/web")
    assert rc.actions == []
    # A pod that becomes ready changes it.
    rc.seed(make_pod("b"))
    await ctrl.reconcile("default/web")
    assert status_writes(rc) == [in_sync_status(2)]


async def test_available_replicas_honour_min_ready_seconds(env):
    rc, ctrl, clock, _ = env
    rc.seed(make_rs(2, min_ready=30), make_pod("long", ready_since=60), make_pod("recent", ready_since=10))
    await ctrl.reconcile("default/web")
    assert status_writes(rc)[-1]["availableReplicas"] == 1
    assert status_writes(rc)[-1]["readyReplicas"] == 2
    # All ready but not all available: look again when the rest will be.
    assert ctrl.queue._waiting and "default/web" in ctrl.queue._waiting


async def test_fully_labeled_counts_pods_with_all_template_labels(env):
    rc, ctrl, _, _ = env
    rs = make_rs(2)
    rs["spec"]["template"]["metadata"]["labels"]["tier"] = "front"
    rc.seed(rs, make_pod("a", labels={"app": "web", "tier": "front"}), make_pod("b"))
    await ctrl.reconcile("default/web")
    assert status_writes(rc)[-1]["fullyLabeledReplicas"] == 1


async def test_pod_events_feed_expectations_and_enqueue_the_owner(env):
    rc, ctrl, _, _ = env
    rc.seed(make_rs(1))
    ctrl.expectations.expect_creations("default/web", 1)
    assert not ctrl.expectations.satisfied("default/web")
    rc.seed(make_pod("new"))
    assert ctrl.expectations.satisfied("default/web")
    # An orphan enqueues the ReplicaSets that could adopt it.
    while len(ctrl.queue):
        key = await ctrl.queue.get()
        ctrl.queue.done(key)
    rc.seed(make_pod("stray", owner=None))
    assert len(ctrl.queue) == 1 and await ctrl.queue.get() == "default/web"
