"""The scheduling queue (kube-scheduler's PriorityQueue): active, backoff, unschedulable.

Guarantees:
- activeQ pops the highest `spec.priority` first, then the pod queued earliest
  (PrioritySort: the queue timestamp, refreshed each time a pod is re-queued).
- A pod that failed a cycle waits in backoff for 1 s doubling per attempt up to 10 s
  (podInitialBackoffSeconds / podMaxBackoffSeconds), counted from its failure; a pod
  whose backoff is over moves to activeQ on the next pop (no timer thread).
- A pod rejected by plugins (Unschedulable) parks in `unschedulable` until a cluster
  event that one of those plugins registered for (node added, node labels / taints /
  allocatable / Ready changed, an assigned pod deleted, ...) may make it fit:
  `move_all_to_active_or_backoff(event)` then moves it to backoff (if its backoff has not
  expired) or active. Nothing polls the parked pods, except `flush_unschedulable_leftover`
  (kube-scheduler's 5-minute safety net), which the runner may call now and then.
- A pod that failed with an error (no rejecting plugin) goes to backoff, not parking. So
  does a pod whose cycle overlapped a move event (the event may already have helped it:
  kube-scheduler's moveRequestCycle).
- Each pod is in at most one place (active, backoff, unschedulable, in flight); a popped
  pod is in flight until `done(key)` or `add_unschedulable(...)`. Updates and deletes of
  an in-flight pod are remembered and applied when it comes back.
- Every time read goes through the injected `clock` (seconds, monotonic), so tests drive
  backoff without sleeping. Not thread-safe: call it from the event-loop thread.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Callable, Iterator

from scheduler.framework import ClusterEvent
from scheduler.types import PodInfo

DEFAULT_INITIAL_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 10.0
MAX_IN_UNSCHEDULABLE = 300.0  # podMaxInUnschedulablePodsDuration

# (pod, plugins that rejected it, event) -> may the event make the pod schedulable?
QueueingHint = Callable[[PodInfo, frozenset[str], ClusterEvent], bool]


class QueuedPodInfo:
    __slots__ = ("pod_info", "timestamp", "attempts", "unschedulable_plugins", "cycle",
                 "initial_attempt_timestamp")

    def __init__(self, pod_info: PodInfo, timestamp: float):
        self.pod_info = pod_info
        self.timestamp = timestamp
        self.attempts = 0
        self.unschedulable_plugins: frozenset[str] = frozenset()
        self.cycle = 0  # the scheduling cycle it was last popped in
        self.initial_attempt_timestamp: float | None = None  # the clock at its first pop

    @property
    def key(self) -> str:
        return self.pod_info.key

    def __repr__(self) -> str:
        return f"QueuedPodInfo({self.key}, attempts={self.attempts})"


_DELETED = object()


def _spec_changed(old: PodInfo, new: PodInfo) -> bool:
    """kube-scheduler's isPodUpdated: anything but status and bookkeeping metadata."""
    def strip(p: dict) -> tuple:
        meta = {k: v for k, v in (p.get("metadata") or {}).items()
                if k not in ("resourceVersion", "generation", "managedFields")}
        return meta, p.get("spec")
    return strip(old.pod) != strip(new.pod)


class SchedulingQueue:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
                 max_backoff: float = DEFAULT_MAX_BACKOFF,
                 hint: QueueingHint | None = None,
                 max_in_unschedulable: float = MAX_IN_UNSCHEDULABLE):
        self.clock = clock
        self.initial_backoff, self.max_backoff = initial_backoff, max_backoff
        self.hint = hint or (lambda pod, plugins, event: True)
        self.max_in_unschedulable = max_in_unschedulable
        self._seq = itertools.count()
        self._active_heap: list[tuple] = []
        self._active: dict[str, tuple[tuple, QueuedPodInfo]] = {}
        self._backoff_heap: list[tuple] = []
        self._backoff: dict[str, tuple[tuple, QueuedPodInfo]] = {}
        self.unschedulable: dict[str, QueuedPodInfo] = {}
        self._in_flight: dict[str, object] = {}  # key -> None, a newer PodInfo, or _DELETED
        self.scheduling_cycle = 0
        self.move_request_cycle = -1
        self._wakeup = asyncio.Event()
        self._closed = False

    # --- inspection --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._active) + len(self._backoff) + len(self.unschedulable)

    def __contains__(self, key: str) -> bool:
        return key in self._active or key in self._backoff or key in self.unschedulable

    def where(self, key: str) -> str | None:
        """'active', 'backoff', 'unschedulable', 'in-flight' or None."""
        if key in self._active:
            return "active"
        if key in self._backoff:
            return "backoff"
        if key in self.unschedulable:
            return "unschedulable"
        return "in-flight" if key in self._in_flight else None

    def sizes(self) -> dict[str, int]:
        """Pending pods per queue, as `scheduler_pending_pods{queue}` reports them (no
        pod is ever gated here: scheduling gates are not implemented)."""
        return {"active": len(self._active), "backoff": len(self._backoff),
                "unschedulable": len(self.unschedulable), "gated": 0}

    def active_keys(self) -> list[str]:
        """Active pods in pop order."""
        return [e[-1] for e in sorted(e for e, _ in self._active.values())]

    def backoff_duration(self, q: QueuedPodInfo) -> float:
        if q.attempts == 0:
            return 0.0
        return min(self.initial_backoff * 2 ** (q.attempts - 1), self.max_backoff)

    def backoff_expiry(self, q: QueuedPodInfo) -> float:
        return q.timestamp + self.backoff_duration(q)

    # --- the three queues ----------------------------------------------------------------------

    def _to_active(self, q: QueuedPodInfo) -> None:
        entry = (-q.pod_info.priority, q.timestamp, next(self._seq), q.key)
        self._active[q.key] = (entry, q)
        heapq.heappush(self._active_heap, entry)
        self._wakeup.set()

    def _to_backoff(self, q: QueuedPodInfo) -> None:
        entry = (self.backoff_expiry(q), next(self._seq), q.key)
        self._backoff[q.key] = (entry, q)
        heapq.heappush(self._backoff_heap, entry)
        self._wakeup.set()  # the waiter recomputes its timeout

    def _to_backoff_or_active(self, q: QueuedPodInfo) -> None:
        if self.backoff_expiry(q) > self.clock():
            self._to_backoff(q)
        else:
            self._to_active(q)

    def _remove(self, key: str) -> QueuedPodInfo | None:
        # Heap entries are dropped lazily: pop skips entries whose key maps elsewhere.
        for d in (self._active, self._backoff):
            if key in d:
                return d.pop(key)[1]
        return self.unschedulable.pop(key, None)

    # --- informer-driven changes ---------------------------------------------------------------

    def add(self, pod: PodInfo) -> None:
        """A new unscheduled pod (or one we knew, re-added): straight to activeQ."""
        if pod.key in self._in_flight:
            self._in_flight[pod.key] = pod
            return
        old = self._remove(pod.key)
        q = QueuedPodInfo(pod, self.clock())
        if old is not None:
            q.attempts = old.attempts
            q.initial_attempt_timestamp = old.initial_attempt_timestamp
        self._to_active(q)

    def update(self, pod: PodInfo) -> None:
        key = pod.key
        if key in self._in_flight:
            self._in_flight[key] = pod
            return
        if key in self._active:
            entry, q = self._active.pop(key)
            old_priority = q.pod_info.priority
            q.pod_info = pod
            if pod.priority != old_priority:
                self._to_active(q)
            else:
                self._active[key] = (entry, q)
            return
        if key in self._backoff:
            self._backoff[key][1].pod_info = pod
            return
        q = self.unschedulable.get(key)
        if q is not None:
            changed = _spec_changed(q.pod_info, pod)
            q.pod_info = pod
            if changed:
                del self.unschedulable[key]
                self._to_backoff_or_active(q)
            return
        self.add(pod)

    def delete(self, key: str) -> None:
        if key in self._in_flight:
            self._in_flight[key] = _DELETED
            return
        self._remove(key)

    # --- the scheduling loop's side --------------------------------------------------------------

    def flush_backoff_completed(self) -> int:
        """Move pods whose backoff is over to activeQ."""
        now, moved = self.clock(), 0
        heap = self._backoff_heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            cur = self._backoff.get(entry[-1])
            if cur is None or cur[0] is not entry:
                continue
            del self._backoff[entry[-1]]
            self._to_active(cur[1])
            moved += 1
        return moved

    def pop_nowait(self) -> QueuedPodInfo | None:
        self.flush_backoff_completed()
        heap = self._active_heap
        while heap:
            entry = heapq.heappop(heap)
            cur = self._active.get(entry[-1])
            if cur is None or cur[0] is not entry:
                continue
            del self._active[entry[-1]]
            q = cur[1]
            self.scheduling_cycle += 1
            q.cycle = self.scheduling_cycle
            q.attempts += 1
            if q.initial_attempt_timestamp is None:
                q.initial_attempt_timestamp = self.clock()
            self._in_flight[q.key] = None
            return q
        return None

    async def pop(self) -> QueuedPodInfo | None:
        """The next pod to schedule, waiting for one; None once the queue is closed."""
        while not self._closed:
            q = self.pop_nowait()
            if q is not None:
                return q
            self._wakeup.clear()
            timeout = None
            while self._backoff_heap:
                entry = self._backoff_heap[0]
                cur = self._backoff.get(entry[-1])
                if cur is not None and cur[0] is entry:
                    timeout = max(entry[0] - self.clock(), 0.0)
                    break
                heapq.heappop(self._backoff_heap)
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass
        return None

    def done(self, key: str) -> None:
        """The pod's cycle succeeded (it is assumed and being bound)."""
        self._in_flight.pop(key, None)

    def add_unschedulable(self, q: QueuedPodInfo, unschedulable_plugins: frozenset[str] = frozenset()) -> None:
        """Re-queue a pod whose cycle (or binding) failed. `unschedulable_plugins` are the
        plugins that rejected it; empty for an error."""
        latest = self._in_flight.pop(q.key, None)
        if latest is _DELETED:
            return
        updated = isinstance(latest, PodInfo)
        if updated:
            q.pod_info = latest
        if q.key in self:
            return  # re-added meanwhile (e.g. by a relist); that copy wins
        q.timestamp = self.clock()
        q.unschedulable_plugins = unschedulable_plugins
        if not unschedulable_plugins or updated or self.move_request_cycle >= q.cycle:
            self._to_backoff(q)
        else:
            self.unschedulable[q.key] = q

    def move_all_to_active_or_backoff(self, event: ClusterEvent) -> int:
        """A cluster event happened: wake the parked pods it may help. Returns how many moved."""
        moved = []
        for key, q in self.unschedulable.items():
            if self.hint(q.pod_info, q.unschedulable_plugins, event):
                moved.append(key)
        for key in moved:
            self._to_backoff_or_active(self.unschedulable.pop(key))
        self.move_request_cycle = self.scheduling_cycle
        return len(moved)

    def flush_unschedulable_leftover(self) -> int:
        now = self.clock()
        stale = [k for k, q in self.unschedulable.items()
                 if now - q.timestamp > self.max_in_unschedulable]
        for key in stale:
            self._to_backoff_or_active(self.unschedulable.pop(key))
        return len(stale)

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    def pending(self) -> Iterator[QueuedPodInfo]:
        yield from (q for _, q in self._active.values())
        yield from (q for _, q in self._backoff.values())
        yield from self.unschedulable.values()
