"""The running scheduler's wiring, without an API server: informer handlers feed the
cache and the queue, a cycle's outcome becomes a binding, an event and a status write.
Handlers are called directly, as the informers would; the client records its calls."""
import asyncio
import random

from client.rest import Resources
from machinery.errors import Conflict
from scheduler.config import parse_config
from scheduler.scheduler import Scheduler
from scheduler.testing import make_node, make_pod


class RecordingClient:
    """What the scheduler writes: bindings and status patches (events go to the recorder)."""

    def __init__(self):
        self.resources = Resources()
        self.actions: list[tuple] = []
        self.fail_bind: Exception | None = None
        self.bound = asyncio.Event()

    async def bind(self, pod, node, *, namespace=None, uid=None):
        self.actions.append(("bind", f"{namespace}/{pod}", node))
        self.bound.set()
        if self.fail_bind is not None:
            raise self.fail_bind

    async def patch(self, resource, name, patch, *, namespace=None, patch_type="merge",
                    subresource=None, **kw):
        self.actions.append(("patch", f"{namespace}/{name}", subresource, patch_type, patch))
        return {}


class Recorder:
    def __init__(self):
        self.events: list[tuple] = []

    def event(self, obj, type, reason, message, **kw):
        md = obj["metadata"]
        self.events.append((f"{md['namespace']}/{md['name']}", type, reason, message))

    async def close(self):
        pass


def scheduler(config: str | None = None) -> tuple[Scheduler, RecordingClient, Recorder]:
    client, recorder = RecordingClient(), Recorder()
    cfg = parse_config(config) if config else None
    return Scheduler(client, config=cfg, recorder=recorder, rng=random.Random(0)), client, recorder


async def settle(s: Scheduler) -> None:
    """Run every binding and status write started so far to its end."""
    while s._bindings or s._status_writes:
        await asyncio.gather(*s._bindings, *s._status_writes.values(), return_exceptions=True)


async def schedule_next(s: Scheduler) -> None:
    q = s.queue.pop_nowait()
    assert q is not None
    await s._slots.acquire()
    if not s.schedule_one(q):
        s._slots.release()
    await settle(s)


def bound(pod: dict, node: str) -> dict:
    return {**pod, "spec": {**pod["spec"], "nodeName": node},
            "metadata": {**pod["metadata"], "resourceVersion": "2"}}


async def test_binds_a_pod_and_reports_it_scheduled():
    s, client, rec = scheduler()
    s.on_node_add(make_node("n1").obj())
    s.on_pod_add(make_pod("web", "ns").req(cpu="1").obj())
    assert s.queue.where("ns/web") == "active"
    await schedule_next(s)
    assert client.actions == [("bind", "ns/web", "n1")]
    assert rec.events == [("ns/web", "Normal", "Scheduled", "Successfully assigned ns/web to n1")]
    # The pod counts on its node before the watch confirms the binding...
    assert s.cache.is_assumed("ns/web") and s.cache.req_cpu[0] == 1000
    s.on_pod_update(make_pod("web", "ns").req(cpu="1").obj(),
                    bound(make_pod("web", "ns").req(cpu="1").obj(), "n1"))
    # ...and once confirmed it is a bound pod, and out of the queue for good.
    assert not s.cache.is_assumed("ns/web") and s.cache.req_cpu[0] == 1000
    assert s.queue.where("ns/web") is None and len(s.queue) == 0


async def test_ignores_pods_of_other_schedulers_and_terminating_ones():
    s, client, _ = scheduler()
    s.on_pod_add(make_pod("other").scheduler_name("someone-else").obj())
    s.on_pod_add(make_pod("going").terminating().obj())
    assert len(s.queue) == 0


async def test_bound_pods_count_in_the_cache_and_free_room_when_deleted():
    s, _, _ = scheduler()
    s.on_node_add(make_node("n1").cap(cpu="2").obj())
    p = make_pod("a").req(cpu="1500m").node("n1").obj()
    s.on_pod_add(p)
    assert s.cache.req_cpu[0] == 1500 and len(s.queue) == 0
    s.on_pod_delete(p)
    assert s.cache.req_cpu[0] == 0


async def test_unschedulable_pod_gets_event_and_condition_then_waits_for_a_node():
    s, client, rec = scheduler()
    s.on_node_add(make_node("n1").cap(cpu="1").obj())
    pod = make_pod("big", "ns").req(cpu="2").obj()
    s.on_pod_add(pod)
    await schedule_next(s)
    msg = "0/1 nodes are available: 1 Insufficient cpu."
    assert rec.events == [("ns/big", "Warning", "FailedScheduling", msg)]
    [(verb, key, sub, ptype, patch)] = client.actions
    assert (verb, key, sub, ptype) == ("patch", "ns/big", "status", "strategic")
    [cond] = patch["status"]["conditions"]
    assert {k: cond[k] for k in ("type", "status", "reason", "message")} == {
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}
    assert s.queue.where("ns/big") == "unschedulable"
    # A heartbeat that changes nothing the plugins read wakes nobody...
    s.on_node_update(make_node("n1").cap(cpu="1").obj(), make_node("n1").cap(cpu="1").obj())
    assert s.queue.where("ns/big") == "unschedulable"
    # ...a new node does.
    s.on_node_add(make_node("n2").cap(cpu="4").obj())
    assert s.queue.where("ns/big") in ("active", "backoff")


async def test_condition_is_written_only_when_it_changes():
    s, client, rec = scheduler()
    s.on_node_add(make_node("n1").cap(cpu="1").obj())
    pod = make_pod("big", "ns").req(cpu="2").obj()
    pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                    "message": "0/1 nodes are available: 1 Insufficient cpu."}]
    s.pods.store.set("ns/big", pod)  # what the informer holds
    s.on_pod_add(pod)
    await schedule_next(s)
    assert client.actions == []  # same condition: no write
    assert [e[2] for e in rec.events] == ["FailedScheduling"]  # but the event, every time


async def test_failed_binding_forgets_the_pod_and_retries_with_backoff():
    s, client, rec = scheduler()
    s.on_node_add(make_node("n1").cap(cpu="1").obj())
    client.fail_bind = Conflict("pods \"web\" is being deleted")
    s.on_pod_add(make_pod("web", "ns").req(cpu="1").obj())
    await schedule_next(s)
    assert client.actions[0] == ("bind", "ns/web", "n1")
    assert s.cache.pod("ns/web") is None and s.cache.req_cpu[0] == 0
    assert s.queue.where("ns/web") == "backoff"
    assert rec.events[-1][:3] == ("ns/web", "Warning", "FailedScheduling")
    assert "binding rejected" in rec.events[-1][3]
    assert client.actions[-1][0] == "patch"
    assert client.actions[-1][4]["status"]["conditions"][0]["reason"] == "SchedulerError"


async def test_pod_bound_by_someone_else_while_binding_is_not_requeued():
    s, client, _ = scheduler()
    s.on_node_add(make_node("n1").obj())
    s.on_node_add(make_node("n2").obj())
    pod = make_pod("web", "ns").obj()
    s.on_pod_add(pod)
    q = s.queue.pop_nowait()
    await s._slots.acquire()
    client.fail_bind = Conflict("already assigned")
    assert s.schedule_one(q)
    # The watch reports the pod bound elsewhere before our binding's answer comes back.
    s.on_pod_update(pod, bound(pod, "n2"))
    await settle(s)
    assert s.cache.node_of("ns/web") == "n2" and not s.cache.is_assumed("ns/web")
    assert s.queue.where("ns/web") is None
    assert [a[0] for a in client.actions] == ["bind"]  # no PodScheduled=False on a bound pod


async def test_deleted_while_binding_leaves_nothing_behind():
    s, client, _ = scheduler()
    s.on_node_add(make_node("n1").obj())
    pod = make_pod("web", "ns").req(cpu="1").obj()
    s.on_pod_add(pod)
    q = s.queue.pop_nowait()
    await s._slots.acquire()
    client.fail_bind = Conflict("gone")
    assert s.schedule_one(q)
    s.on_pod_delete(pod)
    await settle(s)
    assert s.cache.pod("ns/web") is None and s.cache.req_cpu[0] == 0
    assert s.queue.where("ns/web") is None


async def test_profiles_by_scheduler_name():
    s, client, _ = scheduler("apiVersion: kubescheduler.config.k8s.io/v1\n"
                             "kind: KubeSchedulerConfiguration\n"
                             "profiles: [{schedulerName: packer}]\n")
    s.on_node_add(make_node("n1").obj())
    s.on_pod_add(make_pod("mine").scheduler_name("packer").obj())
    s.on_pod_add(make_pod("default").obj())  # default-scheduler is not a profile here
    assert [q.key for q in s.queue.pending()] == ["default/mine"]


async def test_the_loop_schedules_until_stopped():
    s, client, _ = scheduler()
    for informer in (s.nodes, s.pods, s.pvcs, s.pvs, s.storageclasses):
        informer._synced.set()
    s.on_node_add(make_node("n1").obj())
    for i in range(20):
        s.on_pod_add(make_pod(f"p{i}").obj())
    task = asyncio.create_task(s.run())
    try:
        async with asyncio.timeout(10):
            while len([a for a in client.actions if a[0] == "bind"]) < 20:
                await asyncio.sleep(0.01)
    finally:
        await s.stop_scheduling()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sorted(a[1] for a in client.actions) == sorted(f"default/p{i}" for i in range(20))
    assert s.metrics.scheduled == 20 and s.metrics.cycles == 20


async def test_a_deleted_pod_makes_room_for_a_parked_one():
    s, client, _ = scheduler()
    s.on_node_add(make_node("n1").cap(cpu="2").obj())
    old = make_pod("old").req(cpu="1500m").node("n1").obj()
    s.on_pod_add(old)
    s.on_pod_add(make_pod("new").req(cpu="1").obj())
    await schedule_next(s)
    assert s.queue.where("default/new") == "unschedulable"
    running = {**old, "status": {"phase": "Running"}}
    s.on_pod_update(old, running)
    assert s.queue.where("default/new") == "unschedulable"  # a status update helps nobody
    s.on_pod_delete(running)
    assert s.queue.where("default/new") in ("active", "backoff")
