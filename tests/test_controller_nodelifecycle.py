"""The node lifecycle controller: unit tests on seeded caches with a fake clock (health,
taints, zones and rate limits, the taint manager's evictions), then a node whose lease
stops renewing against a real API server."""
import asyncio
import datetime as dt
import uuid

import pytest

from client.clock import FakeClock
from client.rest import Client
from controller_manager.controllers.nodelifecycle import NodeLifecycleController, NodeLifecycleOptions
from controller_manager.testing import RecordingClient, Running, eventually
from tests.procs import APIServer, Etcd

UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
DEFAULT_TOLERATIONS = [{"key": k, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                       for k in (NOT_READY, UNREACHABLE)]


def node(name, *, ready="True", heartbeat="hb-0", zone=None, taints=None, unschedulable=False,
         conditions=True):
    n = {"apiVersion": "v1", "kind": "Node",
         "metadata": {"name": name, "labels": {}, "creationTimestamp": "2024-01-01T00:00:00Z"},
         "spec": {}, "status": {}}
    if conditions:
        n["status"]["conditions"] = [
            {"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat, "reason": "KubeletReady"},
            {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": heartbeat}]
    if zone:
        n["metadata"]["labels"]["topology.kubernetes.io/zone"] = zone
    if taints:
        n["spec"]["taints"] = taints
    if unschedulable:
        n["spec"]["unschedulable"] = True
    return n


def lease(name, renew="r-0"):
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "renewTime": renew}}


def pod(name, node_name, *, tolerations=None, ready=True, deleting=False):
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
         "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "x"}],
                  "tolerations": tolerations if tolerations is not None else []},
         "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return p


def taint(key, effect):
    return {"key": key, "effect": effect}


def controller(*objs, **options):
    client = RecordingClient()
    clock = FakeClock()
    ctrl = NodeLifecycleController(client, client, clock=clock, options=NodeLifecycleOptions(**options))
    client.seed(*objs)
    return client, ctrl, clock


def taints_of(client, name):
    return sorted((t["key"], t["effect"]) for t in
                  client.informers["nodes"].store.get(name)["spec"].get("taints") or ())


def conditions_of(client, name):
    return {c["type"]: c for c in client.informers["nodes"].store.get(name)["status"]["conditions"]}


async def look(ctrl, *names):
    for name in names:
        await ctrl.reconcile(("node", name))


# -- health --------------------------------------------------------------------------------

async def test_healthy_node_needs_no_action():
    client, ctrl, clock = controller(node("n1"), lease("n1"), node("n2"), lease("n2"))
    await look(ctrl, "n1", "n2")
    clock.step(30)
    await look(ctrl, "n1", "n2")
    assert client.actions == []


async def test_node_whose_lease_stops_renewing_gets_unknown_conditions_and_unreachable_taints():
    client, ctrl, clock = controller(node("alive"), lease("alive"), node("silent"), lease("silent"))
    await look(ctrl, "alive", "silent")
    clock.step(41)
    client.seed(lease("alive", renew="r-1"))  # only this one renews
    await look(ctrl, "alive", "silent")
    assert client.verbs() == [("update_status", "nodes", "silent"), ("patch", "nodes", "silent")]
    conds = conditions_of(client, "silent")
    assert conds["Ready"]["status"] == "Unknown"
    assert conds["Ready"]["reason"] == "NodeStatusUnknown"
    assert conds["Ready"]["message"] == "Kubelet stopped posting node status."
    assert conds["Ready"]["lastHeartbeatTime"] == "hb-0"  # left as the kubelet wrote it
    assert conds["MemoryPressure"]["status"] == "Unknown"
    assert conds["DiskPressure"]["reason"] == "NodeStatusNeverUpdated"
    assert taints_of(client, "silent") == [(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")]
    assert all(t.get("timeAdded") for t in client.informers["nodes"].store.get("silent")["spec"]["taints"])
    assert taints_of(client, "alive") == []


async def test_lease_renewal_or_a_new_heartbeat_keeps_a_node_healthy():
    client, ctrl, clock = controller(node("a"), lease("a"), node("b"), lease("b"))
    await look(ctrl, "a", "b")
    clock.step(30)
    client.seed(lease("a", renew="r-1"), node("b", heartbeat="hb-1"))
    await look(ctrl, "a", "b")
    clock.step(30)  # 60 s since the start, 30 since the last sign of life
    await look(ctrl, "a", "b")
    assert client.actions == []


async def test_grace_period_is_configurable():
    client, ctrl, clock = controller(node("a"), node("b"), node_monitor_grace_period=2)
    await look(ctrl, "a", "b")
    clock.step(2)
    await look(ctrl, "a")
    assert ("update_status", "nodes", "a") in client.verbs()


async def test_node_that_never_reported_gets_unknown_after_the_startup_grace_period():
    client, ctrl, clock = controller(node("new", conditions=False), node("other"), lease("other"))
    await look(ctrl, "new")
    clock.step(41)
    await look(ctrl, "new")
    assert client.actions == []
    clock.step(20)
    await look(ctrl, "new")
    assert client.verbs()[0] == ("update_status", "nodes", "new")
    assert conditions_of(client, "new")["Ready"]["reason"] == "NodeStatusNeverUpdated"


async def test_never_updated_condition_written_by_the_controller_is_no_sign_of_life():
    client, ctrl, clock = controller(node("new", conditions=False), node("other"), lease("other"))
    await look(ctrl, "new")
    clock.step(61)
    await look(ctrl, "new")
    assert ctrl.health["new"].probe == 0  # not reset by the condition it wrote itself
    clock.step(100)
    await look(ctrl, "new")
    assert ctrl.health["new"].probe == 0


async def test_pods_on_a_node_turned_unknown_are_marked_not_ready():
    client, ctrl, clock = controller(node("n1"), node("ok"), lease("ok"), pod("p", "n1"),
                                     pod("q", "n1", ready=False), pod("elsewhere", "ok"))
    await look(ctrl, "n1", "ok")
    clock.step(41)
    client.seed(lease("ok", renew="r-1"))
    await look(ctrl, "n1")
    patches = [a for a in client.actions if a[0] == "patch_status"]
    assert [a[2] for a in patches] == ["default/p"]
    assert patches[0][3]["status"]["conditions"][0]["status"] == "False"


async def test_unknown_node_is_written_once():
    client, ctrl, clock = controller(node("n1"), node("ok"), lease("ok"))
    await look(ctrl, "n1")
    clock.step(41)
    await look(ctrl, "n1")
    n = len(client.actions)
    clock.step(5)
    await look(ctrl, "n1")
    assert len(client.actions) == n


# -- taints --------------------------------------------------------------------------------

async def test_not_ready_node_gets_not_ready_taints():
    client, ctrl, _ = controller(node("sick", ready="False"), node("ok"))
    await look(ctrl, "sick")
    assert client.verbs() == [("patch", "nodes", "sick")]
    assert taints_of(client, "sick") == [(NOT_READY, "NoExecute"), (NOT_READY, "NoSchedule")]


async def test_conditions_and_unschedulable_map_to_no_schedule_taints():
    n = node("n1", unschedulable=True)
    n["status"]["conditions"][1]["status"] = "True"  # MemoryPressure
    client, ctrl, _ = controller(n)
    await look(ctrl, "n1")
    assert taints_of(client, "n1") == [("node.kubernetes.io/memory-pressure", "NoSchedule"),
                                       ("node.kubernetes.io/unschedulable", "NoSchedule")]


async def test_ready_node_loses_controller_taints_but_keeps_others():
    client, ctrl, _ = controller(node("back", taints=[
        taint(UNREACHABLE, "NoExecute"), taint(UNREACHABLE, "NoSchedule"), taint("example.com/gpu", "NoSchedule")]))
    await look(ctrl, "back")
    assert client.verbs() == [("patch", "nodes", "back")]
    assert taints_of(client, "back") == [("example.com/gpu", "NoSchedule")]


async def test_returning_node_keeps_its_taints_until_the_kubelet_reports_ready():
    client, ctrl, clock = controller(node("n1"), lease("n1"), node("ok"), lease("ok"))
    await look(ctrl, "n1", "ok")
    clock.step(41)
    client.seed(lease("ok", renew="r-1"))
    await look(ctrl, "n1")
    assert taints_of(client, "n1") == [(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")]
    client.seed(lease("n1", renew="r-1"))  # the lease renews; Ready is still Unknown
    await look(ctrl, "n1")
    assert taints_of(client, "n1") == [(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")]
    back = node("n1", heartbeat="hb-1")  # the kubelet posts Ready=True
    back["spec"] = client.informers["nodes"].store.get("n1")["spec"]
    client.seed(back)
    await look(ctrl, "n1")
    assert taints_of(client, "n1") == []


async def test_swapping_not_ready_for_unreachable_is_not_rate_limited():
    client, ctrl, clock = controller(
        node("first", ready="False"), node("swap", ready="Unknown", taints=[taint(NOT_READY, "NoExecute")]),
        *[node(f"ok{i}") for i in range(3)])
    await look(ctrl, "first")  # takes the zone's only token
    assert (NOT_READY, "NoExecute") in taints_of(client, "first")
    await look(ctrl, "swap")
    assert (UNREACHABLE, "NoExecute") in taints_of(client, "swap")
    assert (NOT_READY, "NoExecute") not in taints_of(client, "swap")


async def test_adding_no_execute_taints_is_rate_limited_per_zone():
    client, ctrl, clock = controller(
        *[node(f"down{i}", ready="False", zone="a") for i in range(3)],
        *[node(f"up{i}", zone="a") for i in range(3)],
        node("down-b", ready="False", zone="b"), node("up-b", zone="b"), node_eviction_rate=0.1)
    await look(ctrl, "down0", "down1", "down-b")
    assert (NOT_READY, "NoExecute") in taints_of(client, "down0")
    assert taints_of(client, "down1") == [(NOT_READY, "NoSchedule")]  # waits for a token
    assert (NOT_READY, "NoExecute") in taints_of(client, "down-b")  # another zone, another bucket
    when, _ = ctrl.queue._waiting[("node", "down1")]
    assert when == pytest.approx(5.0)  # the monitor period comes first; the token at 10 s
    clock.step(9.9)
    await look(ctrl, "down1")
    assert (NOT_READY, "NoExecute") not in taints_of(client, "down1")
    clock.step(0.1)
    await look(ctrl, "down1", "down2")
    assert (NOT_READY, "NoExecute") in taints_of(client, "down1")
    assert (NOT_READY, "NoExecute") not in taints_of(client, "down2")


async def test_no_eviction_taints_when_every_node_is_not_ready():
    client, ctrl, clock = controller(node("only"), lease("only"))
    await look(ctrl, "only")
    clock.step(41)
    await look(ctrl, "only")
    assert taints_of(client, "only") == [(UNREACHABLE, "NoSchedule")]  # no NoExecute
    assert conditions_of(client, "only")["Ready"]["status"] == "Unknown"


async def test_full_disruption_removes_existing_no_execute_taints():
    client, ctrl, _ = controller(node("a", ready="False", taints=[taint(NOT_READY, "NoExecute")]),
                                 node("b", ready="False"))
    await look(ctrl, "a")
    assert taints_of(client, "a") == [(NOT_READY, "NoSchedule")]


async def test_partial_disruption_of_a_small_zone_stops_eviction_taints():
    client, ctrl, _ = controller(*[node(f"down{i}", ready="False") for i in range(3)], node("up"))
    await look(ctrl, "down0")
    assert taints_of(client, "down0") == [(NOT_READY, "NoSchedule")]
    assert ctrl.zone_states[""] == "PartialDisruption"


async def test_zone_counts_follow_nodes_that_leave_or_move():
    # The per-zone counts are kept node by node: a deleted node, or one relabelled into
    # another zone, no longer counts where it was.
    client, ctrl, _ = controller(node("a1", ready="False", zone="a"), node("b1", zone="b"))
    await look(ctrl, "a1", "b1")
    zone = {z: f":\x00:{z}" for z in "abc"}  # Kubernetes' region:\x00:zone key, no region
    assert ctrl.zone_states == {zone["a"]: "FullDisruption", zone["b"]: "Normal"}
    client._store("nodes", None, "a1")
    await look(ctrl, "a1", "b1")
    assert ctrl.zone_states == {zone["b"]: "Normal"}
    client.seed(node("b1", ready="False", zone="c"))
    await look(ctrl, "b1")
    assert ctrl.zone_states == {zone["c"]: "FullDisruption"}
    assert ctrl.all_disrupted


async def test_node_taint_change_enqueues_its_pods():
    client, ctrl, _ = controller(node("n1"), pod("p", "n1"), pod("q", "n2"))
    await look(ctrl, "n1")
    while len(ctrl.queue):
        ctrl.queue.done(await ctrl.queue.get())
    client.seed(node("n1", taints=[taint(UNREACHABLE, "NoExecute")], ready="Unknown"))
    await look(ctrl, "n1")
    assert ("pod", "default/p") in ctrl.queue._queue
    assert ("pod", "default/q") not in ctrl.queue._queue


# -- the taint manager ---------------------------------------------------------------------

def tainted_node(name="n1"):
    return node(name, ready="Unknown", taints=[taint(UNREACHABLE, "NoExecute"), taint(UNREACHABLE, "NoSchedule")])


async def evict(ctrl, name="p"):
    await ctrl.reconcile(("pod", f"default/{name}"))


def evicted(client, name="p"):
    return ("delete", "pods", f"default/{name}") in client.verbs()


async def test_pod_without_a_matching_toleration_is_evicted_at_once():
    client, ctrl, _ = controller(tainted_node(), pod("p", "n1"))
    await evict(ctrl)
    assert client.verbs() == [("patch_status", "pods", "default/p"), ("delete", "pods", "default/p")]
    cond = client.actions[0][3]["status"]["conditions"][0]
    assert (cond["type"], cond["reason"]) == ("DisruptionTarget", "DeletionByTaintManager")
    assert client.actions[1][3] == {"preconditions": {"uid": "uid-p"}}  # graceful, uid-checked


async def test_pod_is_evicted_after_its_toleration_seconds():
    tol = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]
    client, ctrl, clock = controller(tainted_node(), pod("p", "n1", tolerations=tol))
    await evict(ctrl)
    clock.step(59)
    await evict(ctrl)
    assert not evicted(client)
    when, _ = ctrl.queue._waiting[("pod", "default/p")]
    assert when == pytest.approx(60)
    clock.step(1)
    await evict(ctrl)
    assert evicted(client)


async def test_smallest_toleration_seconds_of_the_matching_tolerations_wins():
    tainted = node("n1", ready="False", taints=[taint(NOT_READY, "NoExecute"), taint("example.com/x", "NoExecute")])
    tol = [{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 100},
           {"key": "example.com/x", "operator": "Exists", "tolerationSeconds": 10},
           {"operator": "Exists", "tolerationSeconds": 1}]  # matches too, but is not the first match
    client, ctrl, clock = controller(tainted, pod("p", "n1", tolerations=tol))
    await evict(ctrl)
    clock.step(9)
    await evict(ctrl)
    assert not evicted(client)
    clock.step(1)
    await evict(ctrl)
    assert evicted(client)


async def test_toleration_without_seconds_tolerates_forever():
    tol = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]
    client, ctrl, clock = controller(tainted_node(), pod("p", "n1", tolerations=tol))
    await evict(ctrl)
    clock.step(100000)
    await evict(ctrl)
    assert client.actions == []


async def test_api_server_default_toleration_counts_as_the_configured_default():
    client, ctrl, clock = controller(tainted_node(), pod("p", "n1", tolerations=DEFAULT_TOLERATIONS),
                                     default_unreachable_toleration_seconds=2)
    await evict(ctrl)
    clock.step(2)
    await evict(ctrl)
    assert evicted(client)


async def test_not_ready_and_unreachable_defaults_are_separate():
    not_ready = node("n1", ready="False", taints=[taint(NOT_READY, "NoExecute")])
    client, ctrl, clock = controller(not_ready, pod("p", "n1", tolerations=DEFAULT_TOLERATIONS),
                                     default_not_ready_toleration_seconds=5,
                                     default_unreachable_toleration_seconds=1)
    await evict(ctrl)
    clock.step(4)
    await evict(ctrl)
    assert not evicted(client)
    clock.step(1)
    await evict(ctrl)
    assert evicted(client)


async def test_an_explicit_toleration_is_not_overridden_by_the_default():
    tol = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 301}]
    client, ctrl, clock = controller(tainted_node(), pod("p", "n1", tolerations=tol),
                                     default_unreachable_toleration_seconds=2)
    await evict(ctrl)
    clock.step(300)
    await evict(ctrl)
    assert not evicted(client)


async def test_pending_eviction_is_cancelled_when_the_taint_goes_and_restarts_when_it_returns():
    tol = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]
    client, ctrl, clock = controller(tainted_node(), pod("p", "n1", tolerations=tol))
    await evict(ctrl)
    clock.step(30)
    client.seed(node("n1"))  # taints gone
    await evict(ctrl)
    clock.step(40)
    client.seed(tainted_node())
    await evict(ctrl)
    assert not evicted(client)  # 70 s since first seen, but only 0 s under the new taint
    clock.step(60)
    await evict(ctrl)
    assert evicted(client)


async def test_pod_already_being_deleted_is_left_alone():
    client, ctrl, _ = controller(tainted_node(), pod("p", "n1", deleting=True))
    await evict(ctrl)
    assert client.actions == []


async def test_pod_on_an_untainted_node_is_left_alone():
    client, ctrl, _ = controller(node("n1", taints=[taint("example.com/x", "NoSchedule")]), pod("p", "n1"))
    await evict(ctrl)
    assert client.actions == []


# -- against a real API server -------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """A private API server: the controller acts on every node, so it must not see the
    nodes other tests leave behind."""
    etcd = Etcd().start()
    # No serviceaccount controller here: ServiceAccount admission off, as in Kubernetes'
    # integration tests of controllers.
    server = APIServer(etcd.url, "--disable-admission-plugins", "ServiceAccount").start()
    yield server
    server.stop()
    etcd.stop()


def micro_now():
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ready_condition(status="True"):
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "Ready", "status": status, "reason": "KubeletReady", "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now}


async def test_node_whose_lease_stops_renewing_is_tainted_and_its_pods_evicted(cluster):
    async with Client(cluster.connection()) as client:
        ns = "nl-" + uuid.uuid4().hex[:8]
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for name in ("alive", "silent"):
            await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                                 "status": {"conditions": [ready_condition()]}})
            await client.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                 "metadata": {"name": name, "namespace": "kube-node-lease"},
                                 "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                                          "renewTime": micro_now()}})

        async def make_pod(name, node, tolerations=None):
            spec = {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
            if tolerations is not None:
                spec["tolerations"] = tolerations
            await client.create({"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": name, "namespace": ns}, "spec": spec})
        await make_pod("default-tolerations", "silent")  # the API server adds 300 s tolerations
        await make_pod("patient", "silent", [{"key": UNREACHABLE, "operator": "Exists",
                                              "effect": "NoExecute", "tolerationSeconds": 3600}])
        await make_pod("bystander", "alive")

        async def renew(name):  # what the alive node's kubelet does
            while True:
                await client.patch("leases", name, {"spec": {"renewTime": micro_now()}},
                                   namespace="kube-node-lease")
                await asyncio.sleep(0.2)
        renewer = asyncio.create_task(renew("alive"))
        options = {"node_monitor_grace_period": 1.0, "node_monitor_period": 0.2,
                   "default_unreachable_toleration_seconds": 1, "node_eviction_rate": 100.0}
        try:
            async with Running(client, (NodeLifecycleController, options)):
                async def tainted():
                    node = await client.get("nodes", "silent")
                    keys = {(t["key"], t["effect"]) for t in node["spec"].get("taints") or ()}
                    return {(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")} <= keys and node
                node = await eventually(tainted, what="silent node tainted unreachable")
                ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
                assert (ready["status"], ready["reason"]) == ("Unknown", "NodeStatusUnknown")

                async def deleting(name):
                    return (await client.get("pods", name, namespace=ns))["metadata"].get("deletionTimestamp")
                await eventually(lambda: deleting("default-tolerations"), what="pod evicted")
                assert not await deleting("patient")
                assert not await deleting("bystander")
                alive = await client.get("nodes", "alive")
                assert not (alive.get("spec") or {}).get("taints")

                # The node comes back: its lease renews and its kubelet posts Ready again.
                renewer.cancel()
                renewer = asyncio.create_task(renew("silent"))
                await client.patch("nodes", "silent", {"status": {"conditions": [ready_condition()]}},
                                   subresource="status", patch_type="strategic")

                async def untainted():
                    return not (await client.get("nodes", "silent"))["spec"].get("taints")
                await eventually(untainted, what="taints removed from the returning node")
        finally:
            renewer.cancel()
