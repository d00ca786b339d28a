"""The scheduling queue: ordering, backoff on a fake clock, event-driven moves."""
import asyncio

from scheduler.config import build_frameworks
from scheduler.framework import ASSIGNED_POD, NODE, ActionType, ClusterEvent, node_update_event
from scheduler.queue import SchedulingQueue
from scheduler.testing import make_pod

NODE_ADD = ClusterEvent(NODE, ActionType.ADD)
POD_DELETE = ClusterEvent(ASSIGNED_POD, ActionType.DELETE)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def step(self, seconds):
        self.now += seconds


def new_queue(clock=None):
    fwks = build_frameworks()
    return SchedulingQueue(clock=clock or FakeClock(),
                           hint=lambda pod, plugins, event: fwks[pod.scheduler_name].may_help(plugins, event))


def pop_keys(q):
    out = []
    while (p := q.pop_nowait()) is not None:
        out.append(p.key)
    return out


def test_active_queue_orders_by_priority_then_age():
    clock = FakeClock()
    q = new_queue(clock)
    for name, prio in [("low-old", 0), ("high-new", 0), ("mid", 5), ("low-new", 0)]:
        if name == "high-new":
            prio = 10
        q.add(make_pod(name).priority(prio).info())
        clock.step(1)
    assert pop_keys(q) == ["default/high-new", "default/mid", "default/low-old", "default/low-new"]


def test_priority_update_reorders():
    q = new_queue()
    q.add(make_pod("a").info())
    q.add(make_pod("b").info())
    q.update(make_pod("b").priority(100).info())
    assert q.active_keys() == ["default/b", "default/a"]


def test_backoff_doubles_from_one_second_to_ten():
    clock = FakeClock()
    q = new_queue(clock)
    q.add(make_pod("p").info())
    got = []
    for _ in range(6):
        p = q.pop_nowait()
        q.add_unschedulable(p)
        got.append(q.backoff_duration(p))
        assert q.pop_nowait() is None
        clock.step(got[-1] - 0.01)
        assert q.pop_nowait() is None
        clock.step(0.01)
        assert q.where(p.key) == "backoff"  # pop flushes it...
        assert q.flush_backoff_completed() == 1 and q.where(p.key) == "active"
    assert got == [1, 2, 4, 8, 10, 10]


def test_unschedulable_pods_wait_for_a_relevant_event():
    clock = FakeClock()
    q = new_queue(clock)
    q.add(make_pod("ports").info())
    q.add(make_pod("cpu").info())
    ports, cpu = q.pop_nowait(), q.pop_nowait()
    q.add_unschedulable(ports, frozenset({"NodePorts"}))
    q.add_unschedulable(cpu, frozenset({"NodeResourcesFit"}))
    assert q.where(ports.key) == q.where(cpu.key) == "unschedulable"
    clock.step(60)
    assert q.pop_nowait() is None  # nothing polls them
    # a node's labels changed: neither plugin cares
    assert q.move_all_to_active_or_backoff(node_update_event({"Label"})) == 0
    # a node's allocatable grew: NodeResourcesFit cares, NodePorts does not
    assert q.move_all_to_active_or_backoff(node_update_event({"Allocatable"})) == 1
    assert q.where(cpu.key) == "active" and q.where(ports.key) == "unschedulable"
    # an assigned pod was deleted: NodePorts cares
    assert q.move_all_to_active_or_backoff(POD_DELETE) == 1
    assert pop_keys(q) == ["default/cpu", "default/ports"]


def test_moved_pod_still_backing_off_goes_to_backoff():
    clock = FakeClock()
    q = new_queue(clock)
    q.add(make_pod("p").info())
    p = q.pop_nowait()
    q.add_unschedulable(p, frozenset({"TaintToleration"}))
    q.move_all_to_active_or_backoff(NODE_ADD)
    assert q.where(p.key) == "backoff"
    clock.step(1)
    assert q.pop_nowait().key == p.key


def test_event_during_the_cycle_sends_the_pod_to_backoff_not_parking():
    clock = FakeClock()
    q = new_queue(clock)
    q.add(make_pod("p").info())
    p = q.pop_nowait()
    q.move_all_to_active_or_backoff(NODE_ADD)  # e.g. a node joined while we were filtering
    q.add_unschedulable(p, frozenset({"NodeResourcesFit"}))
    assert q.where(p.key) == "backoff"


def test_update_of_a_parked_pod():
    clock = FakeClock()
    q = new_queue(clock)
    q.add(make_pod("p").info())
    p = q.pop_nowait()
    q.add_unschedulable(p, frozenset({"TaintToleration"}))
    status_only = make_pod("p").info()
    status_only.pod["status"] = {"conditions": [{"type": "PodScheduled", "status": "False"}]}
    q.update(status_only)
    assert q.where(p.key) == "unschedulable"
    clock.step(5)
    q.update(make_pod("p").toleration("dedicated", "gpu").info())
    assert q.where(p.key) == "active"
    assert q.pop_nowait().pod_info.tolerations


def test_delete_and_update_while_in_flight():
    q = new_queue()
    q.add(make_pod("gone").info())
    q.add(make_pod("changed").info())
    gone, changed = q.pop_nowait(), q.pop_nowait()
    assert q.where(gone.key) == "in-flight"
    q.delete(gone.key)
    q.update(make_pod("changed").node_selector({"a": "b"}).info())
    q.add_unschedulable(gone, frozenset({"NodeAffinity"}))
    q.add_unschedulable(changed, frozenset({"NodeAffinity"}))
    assert q.where(gone.key) is None
    assert q.where(changed.key) == "backoff"  # it changed, so it is worth another try
    assert changed.pod_info.pod["spec"]["nodeSelector"] == {"a": "b"}


def test_done_and_delete():
    q = new_queue()
    q.add(make_pod("a").info())
    q.add(make_pod("b").info())
    a = q.pop_nowait()
    q.done(a.key)
    assert q.where(a.key) is None
    q.delete("default/b")
    assert q.pop_nowait() is None and len(q) == 0


def test_leftover_flush_after_five_minutes():
    clock = FakeClock()
    q = new_queue(clock)
    q.add(make_pod("p").info())
    p = q.pop_nowait()
    q.add_unschedulable(p, frozenset({"NodeAffinity"}))
    clock.step(299)
    assert q.flush_unschedulable_leftover() == 0
    clock.step(2)
    assert q.flush_unschedulable_leftover() == 1 and q.where(p.key) == "active"


def test_async_pop_waits_for_an_add_and_for_backoff():
    async def main():
        q = SchedulingQueue(initial_backoff=0.05)
        waiter = asyncio.create_task(q.pop())
        # One turn of the loop runs the waiter up to its wait (wait_for without a
        # timeout adds no task of its own): from here on only add() or close() wakes it.
        await asyncio.sleep(0)
        assert not waiter.done()
        q.add(make_pod("p").info())
        p = await asyncio.wait_for(waiter, 5)
        q.add_unschedulable(p)  # backoff 50 ms, then pop returns it without any add
        again = await asyncio.wait_for(q.pop(), 5)
        assert again.key == p.key and again.attempts == 2
        closer = asyncio.create_task(q.pop())
        await asyncio.sleep(0)  # as above: the closer is parked in its wait
        assert not closer.done()
        q.close()
        assert await asyncio.wait_for(closer, 5) is None
    asyncio.run(main())
