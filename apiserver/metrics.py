"""The API server's Prometheus metrics, with kube-apiserver's names, labels and buckets
(k8s.io/apiserver/pkg/endpoints/metrics, pkg/storage/etcd3/metrics, the cacher's),
registered in `machinery.metrics.REGISTRY` at import:

- `apiserver_request_total{verb,dry_run,group,version,resource,subresource,scope,component,code}`
  and `apiserver_request_duration_seconds{verb,dry_run,group,version,resource,subresource,scope,component}`:
  one per request on a resource path, recorded when its response has been sent (a
  watch's duration is the whole watch). `verb` is what kube-apiserver reports: the HTTP
  method, `LIST` for a GET of a collection, `WATCH` for a watch, `APPLY` for a
  server-side apply patch; `scope` is `resource` (a named object), `namespace` or
  `cluster` (a collection); `dry_run` is `All` or empty; `component` is `apiserver`;
- `apiserver_longrunning_requests{verb,group,version,resource,subresource,scope,component}`:
  watches and log or exec streams in flight;
- `etcd_request_duration_seconds{operation,type}`: every storage call, timed by
  `InstrumentedStore` (operation: `get`, `list`, `listWithCount`, `create`, `update`,
  `delete`, `compact`; type: the resource, `pods`, `deployments.apps`);
- `apiserver_registered_watchers{group,version,kind}` and
  `apiserver_storage_objects{resource}`: read from the live watch caches when scraped;
  `apiserver_watch_events_total{group,version,kind}`: events sent to watchers.

The request path pays for its metrics in plain dicts that a collector turns into
metric families when scraped (as client/metrics.py does for the REST client):
measured with a timeit loop on the 2-core benchmark machine, deriving the labels and
recording a request costs ~1.25 us (`record_request` alone ~0.6 us; a labelled
Counter.inc plus Histogram.observe through prometheus_client ~3.5 us instead), and
`InstrumentedStore` ~0.8 us a storage call: ~2 us of a create's ~540 us of server CPU
(bench/api.py's ~1,850 creates/s), under 0.5%.

Concurrency: everything is touched from the server's event loop only; a scrape runs
there too (the /metrics endpoint is a coroutine), so the dicts need no lock.
"""
from __future__ import annotations

import bisect
import itertools
import math
import time
import weakref
from typing import Any, AsyncIterator, Awaitable, Iterator, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from apiserver import registry
from apiserver.storage import KeyValue, ListResult, Store
from apiserver.storage.interface import Batch, run_compactor
from machinery.metrics import REGISTRY

# kube-apiserver's buckets for both request and etcd latency.
BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0,
           6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)
_GO_BOUNDS = [str(floatToGoString(b)) for b in (*BUCKETS, math.inf)]  # type: ignore[no-untyped-call]

REQUEST_LABELS = ["verb", "dry_run", "group", "version", "resource", "subresource", "scope", "component"]

_Hist = dict[tuple[str, ...], list[float]]  # labels -> per-bucket counts, +Inf, then the sum


def _observe(hists: _Hist, labels: tuple[str, ...], seconds: float) -> None:
    h = hists.get(labels)
    if h is None:
        h = hists[labels] = [0.0] * (len(BUCKETS) + 2)
    h[bisect.bisect_left(BUCKETS, seconds)] += 1  # the first bucket with seconds <= le
    h[-1] += seconds


def _histogram(family: HistogramMetricFamily, hists: _Hist) -> HistogramMetricFamily:
    for labels, h in sorted(hists.items()):
        family.add_metric(list(labels), list(zip(_GO_BOUNDS, itertools.accumulate(h[:-1]))), h[-1])
    return family


# Process-wide, as kube-apiserver's legacyregistry: several servers in one process (tests)
# add up.
_REQUESTS: dict[tuple[str, ...], int] = {}
_DURATIONS: _Hist = {}
_LONGRUNNING: dict[tuple[str, ...], int] = {}
_ETCD: _Hist = {}
_WATCH_EVENTS: dict[tuple[str, str, str], int] = {}
_CACHES: weakref.WeakSet[Any] = weakref.WeakSet()  # apiserver.cache.WatchCache


def request_labels(verb: str, dry_run: bool, rt: registry.ResourceType, subresource: str | None,
                   scope: str) -> tuple[str, ...]:
    return (verb, "All" if dry_run else "", rt.group, rt.version, rt.plural, subresource or "",
            scope, "apiserver")


def record_request(labels: tuple[str, ...], code: int, seconds: float) -> None:
    key = (*labels, str(code))
    _REQUESTS[key] = _REQUESTS.get(key, 0) + 1
    _observe(_DURATIONS, labels, seconds)


def longrunning(labels: tuple[str, ...], delta: int) -> None:
    _LONGRUNNING[labels] = _LONGRUNNING.get(labels, 0) + delta


def watch_events(rt: registry.ResourceType, n: int) -> None:
    key = (rt.group, rt.version, rt.kind)
    _WATCH_EVENTS[key] = _WATCH_EVENTS.get(key, 0) + n


def track_cache(cache: Any) -> None:
    """Report `cache`'s watchers and objects while it lives."""
    _CACHES.add(cache)


T = TypeVar("T")

def _by_root(root: str) -> registry.ResourceType | None:
    """The row stored under `root` (its stored version's, if served)."""
    found = None
    for rt in registry.served():
        if rt.root == root:
            if not rt.converts:
                return rt
            found = found or rt
    return found


def _resource_of(key: str) -> str:
    if not key.startswith("/registry/"):
        return ""
    parts = key[len("/registry/"):].split("/", 2)
    if "." in parts[0] and len(parts) > 1:  # /registry/<group>/<plural>/
        return f"{parts[1]}.{parts[0]}"
    rt = registry.by_plural(parts[0]) if parts[0] else None
    return rt.group_resource if rt is not None else parts[0]


class InstrumentedStore:
    """A `Store` that times every call into `etcd_request_duration_seconds`, as the
    etcd3 storage's RecordEtcdRequest does. The wrapped store stays free of metrics;
    a watch is long-running and is not timed."""

    def __init__(self, store: Store):
        self.store = store

    async def _timed(self, operation: str, key: str, call: Awaitable[T]) -> T:
        start = time.perf_counter()
        try:
            return await call
        finally:
            _observe(_ETCD, (operation, _resource_of(key)), time.perf_counter() - start)

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def get(self, key: str) -> KeyValue | None:
        return await self._timed("get", key, self.store.get(key))

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0,
                   start_key: str | None = None) -> ListResult:
        return await self._timed("list", prefix, self.store.list(prefix, revision=revision, limit=limit,
                                                                  start_key=start_key))

    async def count(self, prefix: str) -> int:
        return await self._timed("listWithCount", prefix, self.store.count(prefix))

    async def create(self, key: str, value: bytes) -> tuple[bool, int | KeyValue | None]:
        return await self._timed("create", key, self.store.create(key, value))

    async def update(self, key: str, value: bytes,
                     expected_revision: int) -> tuple[bool, int | KeyValue | None]:
        return await self._timed("update", key, self.store.update(key, value, expected_revision))

    async def delete(self, key: str, expected_revision: int = 0) -> tuple[bool, KeyValue | None]:
        return await self._timed("delete", key, self.store.delete(key, expected_revision))

    async def current_revision(self) -> int:
        # A count-only range of one key: a get, of no resource.
        return await self._timed("get", "", self.store.current_revision())

    async def compact(self, revision: int) -> None:
        await self._timed("compact", "", self.store.compact(revision))

    def watch(self, prefix: str, from_revision: int, *, prev_values: bool = True) -> AsyncIterator[Batch]:
        return self.store.watch(prefix, from_revision, prev_values=prev_values)

    async def compactor(self, *, window_seconds: float = 300, interval: float = 60) -> None:
        await run_compactor(self, window_seconds=window_seconds, interval=interval)


class _Collector(Collector):
    def collect(self) -> Iterator[Any]:
        total = CounterMetricFamily(
            "apiserver_request_total",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, "
            "resource, scope, component, and HTTP response code.", labels=[*REQUEST_LABELS, "code"])
        for labels, n in sorted(_REQUESTS.items()):
            total.add_metric(list(labels), n)
        yield total
        yield _histogram(HistogramMetricFamily(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, "
            "resource, subresource, scope and component.", labels=REQUEST_LABELS), _DURATIONS)
        running = GaugeMetricFamily(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group, version, "
            "resource, scope and component. Not all requests are tracked this way.",
            labels=[lb for lb in REQUEST_LABELS if lb != "dry_run"])
        for labels, n in sorted(_LONGRUNNING.items()):
            running.add_metric([v for i, v in enumerate(labels) if i != 1], n)
        yield running
        yield _histogram(HistogramMetricFamily(
            "etcd_request_duration_seconds", "Etcd request latency in seconds for each operation and object type.",
            labels=["operation", "type"]), _ETCD)
        events = CounterMetricFamily("apiserver_watch_events_total",
                                     "Number of events sent in watch clients",
                                     labels=["group", "version", "kind"])
        for labels3, n in sorted(_WATCH_EVENTS.items()):
            events.add_metric(list(labels3), n)
        yield events
        watchers: dict[tuple[str, str, str], int] = {}
        objects: dict[str, int] = {}
        for cache in list(_CACHES):
            for root, bucket in list(cache.buckets.items()):
                rt = _by_root(root)
                if rt is None:
                    continue
                key = (rt.group, rt.version, rt.kind)
                watchers[key] = watchers.get(key, 0) + len(bucket.watchers)
                objects[rt.group_resource] = objects.get(rt.group_resource, 0) + len(bucket.objects)
        registered = GaugeMetricFamily("apiserver_registered_watchers",
                                       "Number of currently registered watchers for a given resources",
                                       labels=["group", "version", "kind"])
        for labels3, n in sorted(watchers.items()):
            registered.add_metric(list(labels3), n)
        yield registered
        stored = GaugeMetricFamily("apiserver_storage_objects",
                                   "Number of stored objects at the time of last check split by kind.",
                                   labels=["resource"])
        for resource, n in sorted(objects.items()):
            stored.add_metric([resource], n)
        yield stored

    def describe(self) -> list[Any]:
        return []


REGISTRY.register(_Collector())
