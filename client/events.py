"""The event recorder: core/v1 Events about objects, for `describe` and for humans.

Guarantees
- `event(obj, type, reason, message)` never blocks and never raises: events are
  written in the order recorded by one background task, and a failed write is logged
  and dropped (an event is a hint for people, never state a component depends on).
  `flush()` waits until everything recorded so far has been written.
- Repeats are counted, as Kubernetes' event correlator does: an event with the same
  (involved object, type, reason, message, source) as a recent one is a PATCH of that
  Event's `count` and `lastTimestamp`, not a new object. "Recent" means among the last
  `cache_size` distinct events this recorder wrote (an LRU); if the Event has gone
  meanwhile (404) a new one is created.
- Events live in the involved object's namespace ("default" for cluster-scoped objects).

Not done (kept simple): the correlator's aggregation of similar events with different
messages, and its per-object spam filter.

Concurrency: one asyncio loop; `emit` is serialized by a lock, so the LRU and the
server agree on counts.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Callable

from client.clock import Clock, RealClock
from client.rest import Client
from machinery import times
from machinery.errors import NotFound

log = logging.getLogger("minik8s.client.events")

NORMAL, WARNING = "Normal", "Warning"


def reference(obj: dict[str, Any], *, field_path: str | None = None) -> dict[str, Any]:
    """An ObjectReference to `obj` (involvedObject)."""
    md = obj.get("metadata") or {}
    ref = {"kind": obj.get("kind", ""), "apiVersion": obj.get("apiVersion", ""),
           "name": md.get("name", ""), "namespace": md.get("namespace"), "uid": md.get("uid"),
           "resourceVersion": md.get("resourceVersion"), "fieldPath": field_path}
    return {k: v for k, v in ref.items() if v}


class EventRecorder:
    def __init__(self, client: Client, *, component: str, host: str = "",
                 instance: str | None = None, cache_size: int = 4096,
                 clock: Clock | None = None, now: Callable[[], str] | None = None):
        """`now` overrides how timestamps are read (default: the clock's wall time)."""
        self.client = client
        clock = clock or RealClock()
        self.component, self.host = component, host
        self.instance = instance or host or component
        self.cache_size = cache_size
        self.now = now or (lambda: times.rfc3339(clock.now()))
        self._seen: collections.OrderedDict[tuple[Any, ...], tuple[str, str, int]] = collections.OrderedDict()
        self._lock = asyncio.Lock()
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str, str, str | None]] | None = None
        self._worker: asyncio.Task[None] | None = None

    def event(self, obj: dict[str, Any], type: str, reason: str, message: str, *,
              field_path: str | None = None) -> None:
        """Record without waiting (a running event loop is required)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._drain(), name=f"events-{self.component}")
        self._queue.put_nowait((obj, type, reason, message, field_path))

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            obj, type, reason, message, field_path = await self._queue.get()
            try:
                await self.emit(obj, type, reason, message, field_path=field_path)
            except Exception as exc:  # noqa: BLE001 - events are best effort
                log.warning("event %s/%s on %s dropped: %s", type, reason,
                            (obj.get("metadata") or {}).get("name"), exc)
            finally:
                self._queue.task_done()

    async def flush(self) -> None:
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        await self.flush()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker, self._queue = None, None

    async def emit(self, obj: dict[str, Any], type: str, reason: str, message: str, *,
                   field_path: str | None = None) -> dict[str, Any]:
        """Write one event now (create, or count a repeat) and answer the Event."""
        ref = reference(obj, field_path=field_path)
        namespace = ref.get("namespace") or "default"
        key = (ref.get("kind"), ref.get("apiVersion"), namespace, ref.get("name"), ref.get("uid"),
               field_path, type, reason, message, self.component, self.host)
        now = self.now()
        async with self._lock:
            seen = self._seen.get(key)
            if seen is not None:
                name, ns, count = seen
                try:
                    ev = await self.client.patch("events", name, namespace=ns, patch_type="strategic",
                                                 patch={"count": count + 1, "lastTimestamp": now})
                    self._remember(key, ev)
                    return ev
                except NotFound:
                    pass  # it expired or was deleted: start a new one
            source = {"component": self.component, **({"host": self.host} if self.host else {})}
            ev = await self.client.create({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{ref.get('name', 'event')}.{time.time_ns():x}",
                             "namespace": namespace},
                "involvedObject": ref, "type": type, "reason": reason, "message": message,
                "source": source, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                "reportingComponent": self.component, "reportingInstance": self.instance})
            self._remember(key, ev)
            return ev

    def _remember(self, key: tuple[Any, ...], ev: dict[str, Any]) -> None:
        self._seen[key] = (ev["metadata"]["name"], ev["metadata"]["namespace"], ev.get("count", 1))
        self._seen.move_to_end(key)
        while len(self._seen) > self.cache_size:
            self._seen.popitem(last=False)
