"""The running scheduler: informers feed the cache and the queue, one loop schedules,
bindings run as tasks (kube-scheduler's Scheduler, eventhandlers.go, schedule_one.go).

Wiring (what a watch event does):
- Node added / changed / deleted: the cache follows; the parked (unschedulable) pods a
  plugin says the change may help move on - a node heartbeat that changes nothing the
  plugins read moves nobody (`Cache.update_node` reports what changed).
- A pod bound to a node (by us, by someone else, or created with `spec.nodeName`): the
  cache counts it, confirming our assumption if we bound it; it leaves the queue. Its
  deletion (or its end: Succeeded and Failed pods leave the pod watch, whose field
  selector drops them as kube-scheduler's does) frees its resources and moves the pods
  waiting for room.
- A pod without a node whose `spec.schedulerName` is one of our profiles: queue add,
  update, delete. Pods for other schedulers are ignored.
Handlers only touch the cache and the queue; no I/O happens in them.

Scheduling (`run`, the leader's work): pop a pod, run its scheduling cycle (synchronous,
so the cache cannot change under it), and on success hand the assumed pod to a binding
task and go on with the next pod at once. The binding task POSTs `pods/{name}/binding`
(the DefaultBinder, through `bind` below - the scheduler's only write to a pod's spec);
if that fails, the assumption is forgotten and the pod goes back to the queue with
backoff. At most `max_bindings_in_flight` (32) bindings are outstanding; beyond that the
loop waits for one to finish (32 keep the API server busy; more only queue up there).

Failures, as kube-scheduler reports them: a `FailedScheduling` Warning event with the
cycle's message (`0/5 nodes are available: ...`) and the pod's `PodScheduled=False`
condition (reason `Unschedulable`, or `SchedulerError` for errors), written through the
status subresource only when it changed. A success gets a `Scheduled` Normal event.

Metrics: kube-scheduler's (scheduler.metrics) - attempts and their durations by result
and profile, the algorithm's duration, the pod scheduling SLI, pending pods per queue -
plus `Metrics`, the summary `minik8s scheduler` logs when it stops (bench/scheduler.py
reads it).

Concurrency: one asyncio loop. A scheduling cycle never yields; between cycles the loop
yields once, so watch events and binding answers are handled in between. The status
write and the binding of one pod are ordered: a binding waits for that pod's pending
status write, so a late `PodScheduled=False` can never overwrite the binding's `True`.
"""
from __future__ import annotations

import asyncio
import collections
import gc
import logging
import random
import time
from datetime import datetime, timezone
from typing import Any, Callable

from client.events import NORMAL, WARNING, EventRecorder
from client.informer import Informer, key_of, strip_managed_fields
from client.rest import Client
from machinery.errors import NotFound
from scheduler.algorithm import Algorithm, CycleResult
from scheduler.cache import Cache
from scheduler.config import SchedulerConfig, build_frameworks, default_config
from scheduler.framework import (ASSIGNED_POD, NODE, ActionType, ClusterEvent, Status,
                                 node_update_event)
from scheduler.metrics import ALGORITHM_DURATION, ProfileMetrics, scheduled, track_queue
from scheduler.queue import QueuedPodInfo, SchedulingQueue
from scheduler.types import PodInfo

log = logging.getLogger("minik8s.scheduler")

COMPONENT = "default-scheduler"
# kube-scheduler's pod informer: terminated pods hold no resources and are not watched.
POD_FIELD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"
FLUSH_UNSCHEDULABLE_EVERY = 30.0

NODE_ADD = ClusterEvent(NODE, ActionType.ADD)
NODE_DELETE = ClusterEvent(NODE, ActionType.DELETE)
ASSIGNED_POD_ADD = ClusterEvent(ASSIGNED_POD, ActionType.ADD)
ASSIGNED_POD_UPDATE = ClusterEvent(ASSIGNED_POD, ActionType.UPDATE_POD)
ASSIGNED_POD_DELETE = ClusterEvent(ASSIGNED_POD, ActionType.DELETE)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _assigned(pod: dict) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def _may_help_others(before: PodInfo, after: PodInfo) -> bool:
    """Whether a bound pod's update may make a parked pod schedulable: it shrank (an
    in-place resize) or its labels changed. A status update (the kubelet's, every few
    seconds) helps nobody."""
    if before.labels != after.labels:
        return True
    if after.cpu < before.cpu or after.memory < before.memory or after.ephemeral < before.ephemeral:
        return True
    return any(after.scalars.get(k, 0) < v for k, v in before.scalars.items())


def _pod_ref(pod: PodInfo) -> dict:
    """The pod as an event's involvedObject (list items need not carry kind/apiVersion)."""
    md = pod.pod.get("metadata") or {}
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
                         "resourceVersion": md.get("resourceVersion")}}


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


class Metrics:
    """Counters and the latest durations (seconds) of scheduling cycles and bindings."""

    def __init__(self, keep: int = 100_000):
        self.cycles = self.scheduled = self.unschedulable = self.errors = self.bind_failures = 0
        self.cycle_seconds: collections.deque[float] = collections.deque(maxlen=keep)
        self.binding_seconds: collections.deque[float] = collections.deque(maxlen=keep)

    def summary(self) -> str:
        c, b = list(self.cycle_seconds), list(self.binding_seconds)
        return (f"cycles={self.cycles} scheduled={self.scheduled} unschedulable={self.unschedulable} "
                f"errors={self.errors} bind_failures={self.bind_failures} "
                f"cycle_p50_ms={_percentile(c, 50) * 1e3:.3f} cycle_p99_ms={_percentile(c, 99) * 1e3:.3f} "
                f"binding_p50_ms={_percentile(b, 50) * 1e3:.3f} binding_p99_ms={_percentile(b, 99) * 1e3:.3f}")


class Scheduler:
    def __init__(self, client: Client, *, config: SchedulerConfig | None = None,
                 recorder: EventRecorder | None = None, max_bindings_in_flight: int = 32,
                 rng: random.Random | None = None, clock=time.monotonic, freeze_gc: bool = False):
        cfg = config or default_config()
        self.freeze_gc = freeze_gc
        self.client = client
        self.frameworks = build_frameworks(cfg, handle=self)
        self.cache = Cache()
        self.algorithm = Algorithm(self.cache, rng=rng)
        self.queue = SchedulingQueue(clock=clock, initial_backoff=cfg.pod_initial_backoff_seconds,
                                     max_backoff=cfg.pod_max_backoff_seconds, hint=self._hint)
        self.recorder = recorder or EventRecorder(client, component=COMPONENT)
        self.metrics = Metrics()
        self._profile_metrics = {name: ProfileMetrics(name) for name in self.frameworks}
        track_queue(self.queue)
        self._hints: dict[tuple, bool] = {}
        self._slots = asyncio.Semaphore(max_bindings_in_flight)
        self._bindings: set[asyncio.Task] = set()
        self._status_writes: dict[str, asyncio.Task] = {}
        self._synced: asyncio.Task | None = None
        # The scheduler reads no index, so its informers keep none (cheaper per event),
        # nor managedFields (nothing here reads them).
        self.pods = Informer(client, "pods", field_selector=POD_FIELD_SELECTOR, indexers={},
                             transform=strip_managed_fields)
        self.nodes = Informer(client, "nodes", indexers={}, transform=strip_managed_fields)
        self.nodes.add_handler(on_add=self.on_node_add, on_update=self.on_node_update,
                               on_delete=self.on_node_delete)
        self.pods.add_handler(on_add=self.on_pod_add, on_update=self.on_pod_update,
                              on_delete=self.on_pod_delete)
        # What VolumeBinding reads; a change may make a pod it rejected schedulable.
        self.pvcs = Informer(client, "persistentvolumeclaims", indexers={})
        self.pvs = Informer(client, "persistentvolumes", indexers={})
        self.storageclasses = Informer(client, "storageclasses", indexers={})
        for informer, resource in ((self.pvcs, "PersistentVolumeClaim"), (self.pvs, "PersistentVolume"),
                                   (self.storageclasses, "StorageClass")):
            informer.add_handler(
                on_add=lambda _, r=resource: self._move(ClusterEvent(r, ActionType.ADD)),
                on_update=lambda _o, _n, r=resource: self._move(ClusterEvent(r, ActionType.UPDATE)))

    # --- what plugins get as their handle (DefaultBinder) ------------------------------------

    async def bind(self, pod: PodInfo, node_name: str) -> None:
        await self.client.bind(pod.name, node_name, namespace=pod.namespace, uid=pod.uid or None)

    async def annotate_claim(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """VolumeBinding's one write: a claim's annotations (the selected node)."""
        await self.client.patch("persistentvolumeclaims", name, {"metadata": {"annotations": annotations}},
                                namespace=namespace, patch_type="merge")

    # --- informer handlers: cache and queue only -----------------------------------------------

    def _hint(self, pod: PodInfo, plugins: frozenset[str], event: ClusterEvent) -> bool:
        key = (pod.scheduler_name, plugins, event)
        hit = self._hints.get(key)
        if hit is None:
            fwk = self.frameworks.get(pod.scheduler_name)
            hit = self._hints[key] = fwk is None or fwk.may_help(plugins, event)
        return hit

    def _move(self, event: ClusterEvent) -> None:
        if self.queue.unschedulable:
            self.queue.move_all_to_active_or_backoff(event)

    def on_node_add(self, node: dict) -> None:
        self.cache.add_node(node)
        self._move(NODE_ADD)

    def on_node_update(self, old: dict, new: dict) -> None:
        event = node_update_event(self.cache.update_node(new))
        if event is not None:
            self._move(event)

    def on_node_delete(self, node: dict) -> None:
        self.cache.remove_node(node["metadata"]["name"])
        self._move(NODE_DELETE)

    def _responsible(self, pod: dict) -> bool:
        return ((pod.get("spec") or {}).get("schedulerName") or COMPONENT) in self.frameworks

    def on_pod_add(self, pod: dict) -> None:
        if _assigned(pod):
            self.cache.add_pod(PodInfo(pod))
            self._move(ASSIGNED_POD_ADD)
        elif self._responsible(pod) and not pod["metadata"].get("deletionTimestamp"):
            self.queue.add(PodInfo(pod))

    def on_pod_update(self, old: dict, new: dict) -> None:
        key = key_of(new)
        if _assigned(new):
            if not _assigned(old):  # just bound (by us or not): out of the queue, into the cache
                self.queue.delete(key)
                self.cache.add_pod(PodInfo(new))
                self._move(ASSIGNED_POD_ADD)
                return
            before = self.cache.pod(key)
            info = PodInfo(new)
            self.cache.update_pod(info)
            if before is None or _may_help_others(before, info):
                self._move(ASSIGNED_POD_UPDATE)
        elif self._responsible(new):
            if new["metadata"].get("deletionTimestamp"):
                self.queue.delete(key)
            else:
                self.queue.update(PodInfo(new))

    def on_pod_delete(self, pod: dict) -> None:
        key = key_of(pod)
        self.queue.delete(key)
        # Also an assumed pod whose binding is in flight: its binding then fails (the pod
        # is gone) and finds nothing left to forget.
        if self.cache.pod(key) is not None:
            self.cache.remove_pod(key)
            self._move(ASSIGNED_POD_DELETE)

    # --- running ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the informers (every replica runs them, leader or not, so a successor's
        cache is warm when it takes over)."""
        self.nodes.start()
        self.pods.start()
        for informer in (self.pvcs, self.pvs, self.storageclasses):
            informer.start()
        if self._synced is None:
            self._synced = asyncio.create_task(self._when_synced(), name="scheduler-sync")

    async def _when_synced(self) -> None:
        """Wait for the first lists; with `freeze_gc` (the scheduler process), then take
        what they built out of the cyclic GC's sight: the cache and the informers'
        objects live long, and full collections would otherwise rescan them between
        cycles."""
        await self.nodes.wait_for_sync()
        await self.pods.wait_for_sync()
        for informer in (self.pvcs, self.pvs, self.storageclasses):
            await informer.wait_for_sync()
        if self.freeze_gc:
            gc.collect()
            gc.freeze()
        log.info("caches synced: %d nodes, %d pods bound, %d pods to schedule",
                 len(self.cache), self.cache.pod_count_total(), len(self.queue))

    async def wait_for_sync(self) -> None:
        if self._synced is None:
            self._synced = asyncio.create_task(self._when_synced(), name="scheduler-sync")
        await asyncio.shield(self._synced)

    async def run(self, *, lease_lost: Callable[[], bool] = lambda: False) -> None:
        """Schedule until cancelled (the leader's work): informers must be started.
        Cancelled because `lease_lost()`, the bindings and status writes in flight are
        cancelled too (a successor may act soon: kube-scheduler exits at once);
        otherwise (a stop, before the Lease is released) they may land first."""
        await self.wait_for_sync()
        flusher = asyncio.create_task(self._flush_unschedulable(), name="scheduler-flush")
        log.info("scheduling")
        try:
            while True:
                await self._slots.acquire()
                q = await self.queue.pop()
                if q is None:
                    self._slots.release()
                    return
                binding = False
                try:
                    binding = self.schedule_one(q)
                except Exception:  # noqa: BLE001 - one pod's trouble must not stop scheduling
                    log.exception("scheduling %s failed", q.key)
                    self.queue.add_unschedulable(q)
                finally:
                    if not binding:
                        self._slots.release()
                # Let the watches and the bindings in: a cycle does not yield.
                await asyncio.sleep(0)
        finally:
            flusher.cancel()
            if lease_lost():
                for task in [*self._bindings, *self._status_writes.values()]:
                    task.cancel()
            elif self._bindings:
                # Before the Lease is given up (the caller's next step), let the bindings
                # in flight land, so a successor's first list already counts them.
                await asyncio.wait(list(self._bindings), timeout=2.0)

    async def _flush_unschedulable(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_UNSCHEDULABLE_EVERY)
            self.queue.flush_unschedulable_leftover()

    def schedule_one(self, q: QueuedPodInfo) -> bool:
        """One scheduling cycle for a popped pod; on success its binding is started as a
        task, which then owns the caller's binding slot (True is returned)."""
        pod = q.pod_info
        fwk = self.frameworks.get(pod.scheduler_name)
        if fwk is None or pod.node_name or pod.terminating:  # skipPodSchedule
            self.queue.done(q.key)
            return False
        t = time.perf_counter()
        result = self.algorithm.scheduling_cycle(fwk, pod)
        took = time.perf_counter() - t
        self.metrics.cycle_seconds.append(took)
        ALGORITHM_DURATION.observe(took)
        self.metrics.cycles += 1
        if result.node_name is None:
            assert result.status is not None
            self.handle_failure(q, result.status, result.unschedulable_plugins, started=t)
            return False
        task = asyncio.create_task(self._binding_cycle(q, result, t))
        self._bindings.add(task)
        task.add_done_callback(self._bindings.discard)
        return True

    async def _binding_cycle(self, q: QueuedPodInfo, result: CycleResult, started: float) -> None:
        """Bind; `started` is when the attempt's scheduling cycle began (perf_counter)."""
        pod = result.pod
        try:
            pending = self._status_writes.get(q.key)
            if pending is not None:
                await asyncio.wait([pending])
            t = time.perf_counter()
            try:
                status = await self.algorithm.binding_cycle(result)
            except Exception as e:  # noqa: BLE001 - a bug in a plugin is this binding's failure
                log.exception("binding %s failed", q.key)
                status = Status.error(str(e))
            self.metrics.binding_seconds.append(time.perf_counter() - t)
        finally:
            self._slots.release()
        if status is None:
            self.queue.done(q.key)
            self.metrics.scheduled += 1
            self._attempt(pod, "scheduled", started)
            if q.initial_attempt_timestamp is not None:
                scheduled(q.attempts, self.queue.clock() - q.initial_attempt_timestamp)
            self.recorder.event(_pod_ref(pod), NORMAL, "Scheduled",
                                f"Successfully assigned {pod.namespace}/{pod.name} to {result.node_name}")
            return
        self.metrics.bind_failures += 1
        log.info("binding %s to %s failed: %s", q.key, result.node_name, status.message)
        # The forgotten pod's room is free again (kube-scheduler moves as for a deleted
        # assigned pod), then the pod itself goes back with backoff.
        self._move(ASSIGNED_POD_DELETE)
        self.handle_failure(q, status, frozenset(), started=started)

    # --- failures --------------------------------------------------------------------------

    def _attempt(self, pod: PodInfo, result: str, started: float) -> None:
        m = self._profile_metrics.get(pod.scheduler_name)
        if m is None:
            m = self._profile_metrics[pod.scheduler_name] = ProfileMetrics(pod.scheduler_name)
        m.attempt(result, time.perf_counter() - started)

    def handle_failure(self, q: QueuedPodInfo, status: Status, plugins: frozenset[str], *,
                       started: float | None = None) -> None:
        """Requeue the pod, tell the user why (event), record it in its status. `started`:
        when the attempt's scheduling cycle began (perf_counter), for its metrics."""
        pod = q.pod_info
        if status.is_rejected():
            self.metrics.unschedulable += 1
            reason = "Unschedulable"
        else:
            self.metrics.errors += 1
            reason = "SchedulerError"
        if started is not None:
            self._attempt(pod, "unschedulable" if status.is_rejected() else "error", started)
        self.queue.add_unschedulable(q, plugins)
        msg = status.message
        if self.queue.where(q.key) is None:
            # Deleted, or bound by someone else, while in flight: nothing to tell.
            log.info("not retrying %s (gone or bound meanwhile): %s", q.key, msg)
            return
        log.info("unable to schedule %s: %s", q.key, msg)
        self.recorder.event(_pod_ref(pod), WARNING, "FailedScheduling", msg)
        self._write_condition(pod, reason, msg)

    def _write_condition(self, pod: PodInfo, reason: str, message: str) -> None:
        current = self.pods.store.get(pod.key) or pod.pod
        if _assigned(current):
            return
        old = next((c for c in (current.get("status") or {}).get("conditions") or ()
                    if c.get("type") == "PodScheduled"), None)
        if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == (
                "False", reason, message):
            return  # unchanged: no write (kube-scheduler's UpdatePodCondition)
        since = old.get("lastTransitionTime") if old is not None and old.get("status") == "False" else None
        cond = {"type": "PodScheduled", "status": "False", "reason": reason, "message": message,
                "lastTransitionTime": since or _now()}
        previous = self._status_writes.get(pod.key)
        task = asyncio.create_task(self._patch_condition(pod, cond, previous))
        self._status_writes[pod.key] = task

        def done(t: asyncio.Task, key: str = pod.key) -> None:
            if self._status_writes.get(key) is t:
                del self._status_writes[key]
        task.add_done_callback(done)

    async def _patch_condition(self, pod: PodInfo, cond: dict, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # writes for one pod land in order
        try:
            await self.client.patch("pods", pod.name, {"status": {"conditions": [cond]}},
                                    namespace=pod.namespace, patch_type="strategic",
                                    subresource="status")
        except NotFound:
            pass
        except Exception as e:  # noqa: BLE001 - the next failure writes it again
            log.warning("updating the PodScheduled condition of %s failed: %s", pod.key, e)

    # --- stopping ---------------------------------------------------------------------------

    async def stop_scheduling(self, timeout: float = 5.0) -> None:
        """Pop no more pods; let bindings and status writes in flight finish (up to `timeout`)."""
        self.queue.close()
        pending: list[Any] = [*self._bindings, *self._status_writes.values()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def shutdown(self, timeout: float = 1.0) -> None:
        """stop_scheduling, then write the events recorded so far (up to `timeout`: they
        are best effort) and stop the informers."""
        await self.stop_scheduling()
        try:
            async with asyncio.timeout(timeout):
                await self.recorder.close()  # writes what was recorded, then stops
        except TimeoutError:
            # EventRecorder.close has no deadline of its own: stop its writer here, or it
            # would go on failing against the closed client, once per event.
            worker = getattr(self.recorder, "_worker", None)
            if worker is not None:
                worker.cancel()
            log.warning("events not written within %.0fs were dropped", timeout)
        await self.nodes.stop()
        await self.pods.stop()
        for informer in (self.pvcs, self.pvs, self.storageclasses):
            await informer.stop()
