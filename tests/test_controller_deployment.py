"""Deployment controller: reconcile against seeded caches and a recording client."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from client.clock import FakeClock
from controller_manager.controllers.deployment import (
    DESIRED_REPLICAS, HASH_LABEL, MAX_REPLICAS, REVISION, REVISION_HISTORY, DeploymentController,
    compute_hash, equal_ignore_hash, fnv32a, max_surge, max_unavailable, resolve_fenceposts, safe_encode)
from controller_manager.controller_utils import rfc3339
from controller_manager.testing import RecordingClient
from machinery import errors

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
D_UID = "d-uid"


def ago(seconds: float) -> str:
    return rfc3339(NOW - timedelta(seconds=seconds))


def template(image: str) -> dict:
    return {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}}


def make_deploy(replicas=4, image="nginx:2", *, surge=1, unavailable=0, strategy="RollingUpdate",
                status=None, revision=None, **spec) -> dict:
    d = {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "namespace": "default", "uid": D_UID, "generation": 1},
         "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                  "template": template(image), "revisionHistoryLimit": 10,
                  "progressDeadlineSeconds": 600, "strategy": {"type": strategy}, **spec}}
    if strategy == "RollingUpdate":
        d["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    if status is not None:
        d["status"] = status
    if revision is not None:
        d["metadata"]["annotations"] = {REVISION: str(revision)}
    return d


def make_rs(image, replicas, *, revision, available=None, created=600, d=None, owner=D_UID,
            desired=None, max_replicas=None) -> dict:
    d = d or make_deploy()
    tmpl = template(image)
    h = compute_hash(tmpl)
    tmpl["metadata"]["labels"][HASH_LABEL] = h
    available = replicas if available is None else available
    ann = {REVISION: str(revision)}
    if desired is not None:
        ann[DESIRED_REPLICAS] = str(desired)
    if max_replicas is not None:
        ann[MAX_REPLICAS] = str(max_replicas)
    md = {"name": f"web-{h}", "namespace": "default", "uid": f"rs-{image}", "generation": 1,
          "labels": dict(tmpl["metadata"]["labels"]), "annotations": ann,
          "creationTimestamp": ago(created)}
    if owner:
        md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                  "uid": owner, "controller": True, "blockOwnerDeletion": True}]
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": md,
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web", HASH_LABEL: h}},
                     "template": tmpl, "minReadySeconds": 0},
            "status": {k: v for k, v in {"replicas": replicas, "readyReplicas": available,
                                         "availableReplicas": available, "observedGeneration": 1}.items() if v}}


class Events:
    def __init__(self):
        self.items = []

    def event(self, obj, type_, reason, message):
        self.items.append((type_, reason, message))


@pytest.fixture
def env():
    rc = RecordingClient()
    events = Events()
    ctrl = DeploymentController(rc, rc, clock=FakeClock(1000.0), recorder=events, now=lambda: NOW)
    return rc, ctrl, events


def replicasets(rc) -> dict[str, dict]:
    """image -> ReplicaSet, from the cache."""
    return {rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs
            for rs in rc.informers["replicasets"].store.list()}


def settle(rc) -> None:
    """What the ReplicaSet controller and kubelets would do: every ReplicaSet's pods exist
    and are available."""
    for rs in rc.informers["replicasets"].store.list():
        n = rs["spec"]["replicas"]
        rs = copy.deepcopy(rs)
        rs["status"] = {k: v for k, v in {"replicas": n, "readyReplicas": n, "availableReplicas": n,
                                          "observedGeneration": 1}.items() if v}
        rc.seed(rs)


def deployment(rc) -> dict:
    return rc.informers["deployments"].store.get("default/web")


def conditions(d) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in (d.get("status") or {}).get("conditions", [])}


# -- pure helpers ------------------------------------------------------------------

def test_fnv32a_and_safe_encode_match_go():
    assert fnv32a(b"") == 0x811C9DC5
    assert fnv32a(b"a") == 0xE40C292C
    assert fnv32a(b"foobar") == 0xBF9CF968
    assert safe_encode("0123456789") == "456789bcdf"  # "0" is 48, 48 % 27 = 21


def test_hash_is_stable_short_and_changes_with_collision_count():
    t = template("nginx:1")
    h = compute_hash(t)
    assert h == compute_hash(copy.deepcopy(t))
    assert 1 <= len(h) <= 10 and set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert compute_hash(t, 1) != h != compute_hash(template("nginx:2"))


def test_equal_ignore_hash():
    a = template("nginx:1")
    b = copy.deepcopy(a)
    b["metadata"]["labels"][HASH_LABEL] = "abc"
    b["spec"]["volumes"] = []  # empty and absent are the same, semantically
    assert equal_ignore_hash(a, b)
    assert not equal_ignore_hash(a, template("nginx:2"))


@pytest.mark.parametrize("surge,unavailable,replicas,want", [
    ("25%", "25%", 10, (3, 2)),      # surge rounds up, unavailable down
    ("25%", "25%", 1, (1, 0)),
    (0, 0, 3, (0, 1)),               # both zero: one may be unavailable
    ("0%", "0%", 3, (0, 1)),
    (2, "50%", 5, (2, 2)),
])
def test_fenceposts_round_as_kubernetes(surge, unavailable, replicas, want):
    assert resolve_fenceposts(surge, unavailable, replicas) == want


def test_max_unavailable_is_capped_and_zero_for_recreate():
    assert max_unavailable(make_deploy(2, surge=0, unavailable=5)) == 2
    assert max_unavailable(make_deploy(2, strategy="Recreate")) == 0
    assert max_surge(make_deploy(2, strategy="Recreate")) == 0


# -- reconcile --------------------------------------------------------------------

async def test_creates_new_replicaset(env):
    rc, ctrl, events = env
    rc.seed(make_deploy(3, "nginx:1", surge="25%", unavailable="25%"))
    await ctrl.reconcile("default/web")

    create = next(a for a in rc.actions if a[0] == "create")
    rs = create[3]
    h = compute_hash(template("nginx:1"))
    assert create[1:3] == ("replicasets", f"default/web-{h}")
    assert rs["metadata"]["labels"] == {"app": "web", HASH_LABEL: h}
    assert rs["spec"]["selector"] == {"matchLabels": {"app": "web", HASH_LABEL: h}}
    assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", HASH_LABEL: h}
    assert rs["spec"]["replicas"] == 3
    assert rs["metadata"]["annotations"] == {REVISION: "1", DESIRED_REPLICAS: "3", MAX_REPLICAS: "4"}
    assert rs["metadata"]["ownerReferences"][0] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                    "name": "web", "uid": D_UID, "controller": True,
                                                    "blockOwnerDeletion": True}
    assert ("Normal", "ScalingReplicaSet", f"Scaled up replica set web-{h} to 3") in events.items
    d = deployment(rc)
    assert d["metadata"]["annotations"][REVISION] == "1"
    assert conditions(d)["Progressing"] == ("True", "NewReplicaSetCreated")

    # Once the pods are there: complete.
    settle(rc)
    await ctrl.reconcile("default/web")
    d = deployment(rc)
    assert conditions(d) == {"Available": ("True", "MinimumReplicasAvailable"),
                             "Progressing": ("True", "NewReplicaSetAvailable")}
    assert {k: d["status"][k] for k in ("replicas", "updatedReplicas", "readyReplicas",
                                        "availableReplicas", "observedGeneration")} == {
        "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
        "observedGeneration": 1}
    assert "unavailableReplicas" not in d["status"]


async def test_does_nothing_when_in_sync(env):
    rc, ctrl, _ = env
    rc.seed(make_deploy(3, "nginx:1"), make_rs("nginx:1", 3, revision=1, desired=3, max_replicas=4))
    await ctrl.reconcile("default/web")
    rc.actions.clear()
    await ctrl.reconcile("default/web")
    assert rc.actions == []


async def test_rolling_update_steps_with_surge_and_unavailable(env):
    """maxSurge 1, maxUnavailable 0 from v1 to v2, four replicas: never more than five
    pods, never fewer than four available, one step at a time."""
    rc, ctrl, _ = env
    rc.seed(make_deploy(4, "nginx:2", surge=1, unavailable=0, revision=1),
            make_rs("nginx:1", 4, revision=1, desired=4, max_replicas=5))
    await ctrl.reconcile("default/web")
    rss = replicasets(rc)
    assert rss["nginx:2"]["spec"]["replicas"] == 1  # surge 1
    assert rss["nginx:2"]["metadata"]["annotations"][REVISION] == "2"
    assert rss["nginx:1"]["spec"]["replicas"] == 4  # nothing is available yet to spare
    assert deployment(rc)["metadata"]["annotations"][REVISION] == "2"

    seen = []
    for _ in range(20):
        settle(rc)
        rss = replicasets(rc)
        sizes = (rss["nginx:1"]["spec"]["replicas"], rss["nginx:2"]["spec"]["replicas"])
        seen.append(sizes)
        assert sum(sizes) <= 5
        if sizes == (0, 4):
            break
        await ctrl.reconcile("default/web")
    assert seen == [(4, 1), (3, 1), (3, 2), (2, 2), (2, 3), (1, 3), (1, 4), (0, 4)]
    await ctrl.reconcile("default/web")
    assert conditions(deployment(rc))["Progressing"] == ("True", "NewReplicaSetAvailable")


async def test_rolling_update_with_max_unavailable_scales_old_down_at_once(env):
    rc, ctrl, _ = env
    rc.seed(make_deploy(4, "nginx:2", surge=0, unavailable=2, revision=1),
            make_rs("nginx:1", 4, revision=1, desired=4, max_replicas=4))
    await ctrl.reconcile("default/web")
    rss = replicasets(rc)
    # No surge: the new ReplicaSet starts at 0 and the old one gives up two pods.
    assert rss["nginx:2"]["spec"]["replicas"] == 0
    assert rss["nginx:1"]["spec"]["replicas"] == 2
    settle(rc)
    await ctrl.reconcile("default/web")
    assert replicasets(rc)["nginx:2"]["spec"]["replicas"] == 2


async def test_unhealthy_old_pods_are_scaled_down_first(env):
    rc, ctrl, _ = env
    rc.seed(make_deploy(4, "nginx:2", surge=1, unavailable=1, revision=1),
            make_rs("nginx:1", 4, revision=1, available=2, desired=4, max_replicas=5))
    await ctrl.reconcile("default/web")
    rss = replicasets(rc)
    # Only two available, fewer than the three required: still one old pod may go, as
    # it is one of those not available anyway.
    assert rss["nginx:2"]["spec"]["replicas"] == 1
    assert rss["nginx:1"]["spec"]["replicas"] == 3


async def test_recreate_scales_old_to_zero_before_creating_new(env):
    rc, ctrl, _ = env
    rc.seed(make_deploy(3, "nginx:2", strategy="Recreate", revision=1),
            make_rs("nginx:1", 3, revision=1, desired=3, max_replicas=3))
    old_pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "old", "namespace": "default", "labels": {"app": "web"},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                 "name": "x", "uid": "rs-nginx:1", "controller": True}]},
               "spec": {}, "status": {"phase": "Running"}}
    rc.seed(old_pod)
    await ctrl.reconcile("default/web")
    assert replicasets(rc)["nginx:1"]["spec"]["replicas"] == 0
    assert "nginx:2" not in replicasets(rc)

    settle(rc)  # the old ReplicaSet reports no pods, but one still runs
    await ctrl.reconcile("default/web")
    assert "nginx:2" not in replicasets(rc)

    await rc.delete("pods", "old", namespace="default")
    assert len(ctrl.queue) == 1  # a pod of a Recreate deployment went away: look again
    await ctrl.reconcile("default/web")
    assert replicasets(rc)["nginx:2"]["spec"]["replicas"] == 3
    assert replicasets(rc)["nginx:2"]["metadata"]["annotations"][REVISION] == "2"


async def test_revision_annotations_and_rollback(env):
    """Rolling back is applying an old template: the old ReplicaSet becomes the new one
    and gets the next revision, remembering its old one."""
    rc, ctrl, _ = env
    rc.seed(make_deploy(3, "nginx:1", surge=1, unavailable=0, revision=2),
            make_rs("nginx:1", 0, revision=1, created=900),
            make_rs("nginx:2", 3, revision=2, desired=3, max_replicas=4))
    await ctrl.reconcile("default/web")
    assert not [a for a in rc.actions if a[0] == "create"]
    back = replicasets(rc)["nginx:1"]
    assert back["metadata"]["annotations"][REVISION] == "3"
    assert back["metadata"]["annotations"][REVISION_HISTORY] == "1"
    assert back["spec"]["replicas"] == 1  # and the rollout towards it begins

    await ctrl.reconcile("default/web")
    assert deployment(rc)["metadata"]["annotations"][REVISION] == "3"
    for _ in range(10):
        settle(rc)
        await ctrl.reconcile("default/web")
    rss = replicasets(rc)
    assert (rss["nginx:1"]["spec"]["replicas"], rss["nginx:2"]["spec"]["replicas"]) == (3, 0)


async def test_deployment_annotations_are_copied_to_the_new_replicaset(env):
    rc, ctrl, _ = env
    d = make_deploy(1, "nginx:1")
    d["metadata"]["annotations"] = {"team": "a", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    rc.seed(d)
    await ctrl.reconcile("default/web")
    ann = replicasets(rc)["nginx:1"]["metadata"]["annotations"]
    assert ann["team"] == "a" and "kubectl.kubernetes.io/last-applied-configuration" not in ann


async def test_history_cleanup_deletes_oldest_empty_replicasets(env):
    rc, ctrl, _ = env
    done = {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
            "availableReplicas": 3}
    rc.seed(make_deploy(3, "nginx:4", revision=4, status=done, revisionHistoryLimit=1),
            make_rs("nginx:1", 0, revision=1, created=900),
            make_rs("nginx:2", 0, revision=2, created=800),
            make_rs("nginx:3", 0, revision=3, created=700),
            make_rs("nginx:4", 3, revision=4, desired=3, max_replicas=4))
    await ctrl.reconcile("default/web")
    deleted = [a[2] for a in rc.actions if a[0] == "delete"]
    assert deleted == [f"default/web-{compute_hash(template(f'nginx:{i}'))}" for i in (1, 2)]


async def test_history_cleanup_waits_for_the_rollout_to_complete(env):
    rc, ctrl, _ = env
    rc.seed(make_deploy(3, "nginx:3", revision=3, revisionHistoryLimit=0),
            make_rs("nginx:1", 0, revision=1, created=900),
            make_rs("nginx:3", 3, revision=3, available=1, desired=3, max_replicas=4))
    await ctrl.reconcile("default/web")
    assert not [a for a in rc.actions if a[0] == "delete"]


async def test_paused_deployment_scales_but_does_not_roll_out(env):
    rc, ctrl, _ = env
    rc.seed(make_deploy(3, "nginx:2", paused=True, revision=1),
            make_rs("nginx:1", 3, revision=1, desired=3, max_replicas=4))
    await ctrl.reconcile("default/web")
    assert "nginx:2" not in replicasets(rc)
    assert conditions(deployment(rc))["Progressing"] == ("Unknown", "DeploymentPaused")

    d = copy.deepcopy(deployment(rc))
    d["spec"]["replicas"] = 5
    rc.seed(d)
    await ctrl.reconcile("default/web")
    assert "nginx:2" not in replicasets(rc)
    assert replicasets(rc)["nginx:1"]["spec"]["replicas"] == 5

    d = copy.deepcopy(deployment(rc))
    d["spec"]["paused"] = False
    rc.seed(d)
    await ctrl.reconcile("default/web")
    assert "nginx:2" in replicasets(rc)
    assert conditions(deployment(rc))["Progressing"][0] == "True"


async def test_scaling_mid_rollout_is_proportional(env):
    rc, ctrl, _ = env
    d = make_deploy(20, "nginx:2", surge="25%", unavailable="25%", revision=2,
                    status={"replicas": 13, "updatedReplicas": 5, "observedGeneration": 1})
    rc.seed(d, make_rs("nginx:1", 8, revision=1, desired=10, max_replicas=13),
            make_rs("nginx:2", 5, revision=2, available=0, desired=10, max_replicas=13))
    await ctrl.reconcile("default/web")
    rss = replicasets(rc)
    # 20 + 25% surge = 25 allowed: 12 more, shared 8:5 as the sizes are.
    assert (rss["nginx:1"]["spec"]["replicas"], rss["nginx:2"]["spec"]["replicas"]) == (15, 10)
    assert rss["nginx:1"]["metadata"]["annotations"][DESIRED_REPLICAS] == "20"
    assert rss["nginx:1"]["metadata"]["annotations"][MAX_REPLICAS] == "25"


async def test_a_scale_that_leaves_the_total_as_it_is_still_ends_the_scaling_event(env):
    # Found by tests/chaos/test_churn.py: scaled from 4 to 3 mid-rollout with two active
    # ReplicaSets of 2 + 2, 3 + maxSurge 1 allows the 4 there are. Kubernetes still
    # updates every active ReplicaSet (their desired-replicas annotation), which ends
    # the scaling event; without that the Deployment stayed a scaling event forever and
    # its rollout never went on.
    rc, ctrl, _ = env
    d = make_deploy(3, "nginx:2", surge=1, unavailable=1, revision=2,
                    status={"replicas": 4, "updatedReplicas": 2, "observedGeneration": 1})
    rc.seed(d, make_rs("nginx:1", 2, revision=1, desired=4, max_replicas=5),
            make_rs("nginx:2", 2, revision=2, desired=4, max_replicas=5))
    await ctrl.reconcile("default/web")
    rss = replicasets(rc)
    assert (rss["nginx:1"]["spec"]["replicas"], rss["nginx:2"]["spec"]["replicas"]) == (2, 2)
    for rs in rss.values():
        assert rs["metadata"]["annotations"][DESIRED_REPLICAS] == "3"
        assert rs["metadata"]["annotations"][MAX_REPLICAS] == "4"
    settle(rc)
    await ctrl.reconcile("default/web")  # no longer a scaling event: the rollout goes on
    assert replicasets(rc)["nginx:1"]["spec"]["replicas"] < 2


async def test_progress_deadline_exceeded(env):
    rc, ctrl, _ = env
    stuck = {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1,
             "availableReplicas": 1, "unavailableReplicas": 2, "conditions": [
                 {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                  "message": "Deployment does not have minimum availability.",
                  "lastUpdateTime": ago(700), "lastTransitionTime": ago(700)},
                 {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                  "message": "x", "lastUpdateTime": ago(700), "lastTransitionTime": ago(700)}]}
    rc.seed(make_deploy(3, "nginx:1", revision=1, status=stuck),
            make_rs("nginx:1", 3, revision=1, available=1, desired=3, max_replicas=4))
    await ctrl.reconcile("default/web")
    d = deployment(rc)
    assert conditions(d)["Progressing"] == ("False", "ProgressDeadlineExceeded")
    cond = next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")
    assert cond["message"] == f'ReplicaSet "web-{compute_hash(template("nginx:1"))}" has timed out progressing.'


async def test_progress_deadline_requeues_when_it_would_pass(env):
    rc, ctrl, _ = env
    stuck = {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1,
             "availableReplicas": 1, "unavailableReplicas": 2, "conditions": [
                 {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                  "message": "Deployment does not have minimum availability.",
                  "lastUpdateTime": ago(100), "lastTransitionTime": ago(100)},
                 {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                  "message": "x", "lastUpdateTime": ago(100), "lastTransitionTime": ago(100)}]}
    rc.seed(make_deploy(3, "nginx:1", revision=1, status=stuck),
            make_rs("nginx:1", 3, revision=1, available=1, desired=3, max_replicas=4))
    await ctrl.reconcile("default/web")
    assert rc.actions == []
    when, _ = ctrl.queue._waiting["default/web"]
    assert when == pytest.approx(1000.0 + 500 + 1)


async def test_progress_refreshes_the_progressing_condition(env):
    rc, ctrl, _ = env
    before = {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1,
              "availableReplicas": 1, "unavailableReplicas": 2, "conditions": [
                  {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                   "message": "x", "lastUpdateTime": ago(500), "lastTransitionTime": ago(500)}]}
    rc.seed(make_deploy(3, "nginx:1", revision=1, status=before),
            make_rs("nginx:1", 3, revision=1, available=2, desired=3, max_replicas=4))
    await ctrl.reconcile("default/web")
    cond = next(c for c in deployment(rc)["status"]["conditions"] if c["type"] == "Progressing")
    assert (cond["lastUpdateTime"], cond["lastTransitionTime"]) == (rfc3339(NOW), ago(500))


async def test_hash_collision_bumps_collision_count(env):
    rc, ctrl, _ = env
    squatter = make_rs("nginx:1", 1, revision=1, owner=None)
    squatter["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    squatter["metadata"]["labels"] = {"unrelated": "yes"}
    rc.seed(make_deploy(1, "nginx:1"), squatter)
    rc.fail[("create", "replicasets")] = errors.already_exists("replicasets", squatter["metadata"]["name"])
    with pytest.raises(errors.AlreadyExists):
        await ctrl.reconcile("default/web")
    assert deployment(rc)["status"]["collisionCount"] == 1
    del rc.fail[("create", "replicasets")]
    await ctrl.reconcile("default/web")
    created = next(a for a in rc.actions if a[0] == "create")
    assert created[2] == f"default/web-{compute_hash(template('nginx:1'), 1)}"


async def test_adopts_orphan_replicasets_and_ignores_others(env):
    rc, ctrl, _ = env
    orphan = make_rs("nginx:1", 2, revision=1, owner=None, desired=2, max_replicas=3)
    theirs = make_rs("nginx:0", 1, revision=1, owner="someone-else")
    rc.seed(make_deploy(2, "nginx:1"), orphan, theirs)
    await ctrl.reconcile("default/web")
    patches = [a for a in rc.actions if a[0] == "patch" and a[1] == "replicasets"]
    assert [a[2] for a in patches] == [f"default/{orphan['metadata']['name']}"]
    assert not [a for a in rc.actions if a[0] == "create"]
    assert replicasets(rc)["nginx:0"]["spec"]["replicas"] == 1


async def test_selecting_everything_is_refused(env):
    rc, ctrl, events = env
    d = make_deploy(1, "nginx:1")
    d["spec"]["selector"] = {}
    rc.seed(d)
    await ctrl.reconcile("default/web")
    assert [a[0] for a in rc.actions] == ["update_status"]
    assert events.items[0][1] == "SelectingAll"
