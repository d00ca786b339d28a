"""client/'s Prometheus metrics, with the names and labels client-go gives them
(component-base's workqueue and restclient metrics, and leader election's), registered
in `machinery.metrics.REGISTRY` at import.

Work queues (label `name`; only named queues report, as client-go's):
- `workqueue_adds_total`, `workqueue_retries_total` (every `add_after`, as client-go's
  delaying queue counts them), `workqueue_queue_duration_seconds` (added -> handed out),
  `workqueue_work_duration_seconds` (handed out -> done);
- `workqueue_depth` (keys waiting to be handed out), `workqueue_unfinished_work_seconds`
  (the sum of how long every key in processing has been) and
  `workqueue_longest_running_processor_seconds`: computed when scraped, from each
  live queue's state, on the queue's own clock. Queues sharing a name add up (the
  longest-running one wins).

REST client (`client.rest.Client`, counted in client.rest itself):
- `rest_client_requests_total{code,method,host}`: one per attempt (a retried request
  counts each try); `code` is `<error>` when no answer came;
- `rest_client_request_duration_seconds{verb,host}`: one per request, retries and their
  backoff included.
The hot path is cheap (~0.5 us a request, against the lean transport's ~33 us; see
`RestClientMetrics`): counts are plain numbers that prometheus_client reads when scraped.

Leader election: `leader_election_master_status{name}` is 1 while a tracked elector
leads (`track_leader`).

Concurrency: prometheus_client's values are thread-safe; the per-queue state belongs to
its queue's event loop.
"""
from __future__ import annotations

import itertools
import math
import weakref
from typing import Any, Callable, Hashable, Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString
from prometheus_client.registry import Collector

from client import rest
from machinery.metrics import REGISTRY, exponential_buckets

# -- work queues --------------------------------------------------------------------------

_WQ_BUCKETS = exponential_buckets(10e-9, 10, 12)  # client-go: 10ns .. 1000s

WORKQUEUE_ADDS = Counter("workqueue_adds_total", "Total number of adds handled by workqueue",
                         ["name"], registry=REGISTRY)
WORKQUEUE_RETRIES = Counter("workqueue_retries_total", "Total number of retries handled by workqueue",
                            ["name"], registry=REGISTRY)
WORKQUEUE_QUEUE_DURATION = Histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in workqueue before being requested.",
    ["name"], buckets=_WQ_BUCKETS, registry=REGISTRY)
WORKQUEUE_WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "How long in seconds processing an item from workqueue takes.",
    ["name"], buckets=_WQ_BUCKETS, registry=REGISTRY)


class QueueMetrics:
    """One named queue's bookkeeping (client-go's defaultQueueMetrics)."""

    __slots__ = ("name", "now", "depth", "_adds", "_retries", "_latency", "_work",
                 "_added_at", "_started_at", "__weakref__")

    def __init__(self, name: str, now: Callable[[], float]):
        self.name, self.now = name, now
        self.depth = 0
        self._adds = WORKQUEUE_ADDS.labels(name)
        self._retries = WORKQUEUE_RETRIES.labels(name)
        self._latency = WORKQUEUE_QUEUE_DURATION.labels(name)
        self._work = WORKQUEUE_WORK_DURATION.labels(name)
        self._added_at: dict[Hashable, float] = {}
        self._started_at: dict[Hashable, float] = {}
        _QUEUES.add(self)

    def add(self, key: Hashable) -> None:
        self._adds.inc()
        self.depth += 1
        self._added_at.setdefault(key, self.now())

    def get(self, key: Hashable) -> None:
        now = self.now()
        self.depth -= 1
        self._started_at[key] = now
        added = self._added_at.pop(key, None)
        if added is not None:
            self._latency.observe(now - added)

    def done(self, key: Hashable) -> None:
        started = self._started_at.pop(key, None)
        if started is not None:
            self._work.observe(self.now() - started)

    def retry(self) -> None:
        self._retries.inc()

    def unfinished(self) -> tuple[float, float]:
        """(the sum, the longest) of how long the keys in processing have been."""
        if not self._started_at:
            return 0.0, 0.0
        now = self.now()
        ages = [now - t for t in self._started_at.values()]
        return sum(ages), max(ages)


_QUEUES: weakref.WeakSet[QueueMetrics] = weakref.WeakSet()


class _QueueCollector(Collector):
    def collect(self) -> Iterator[Any]:
        depth: dict[str, float] = {}
        unfinished: dict[str, float] = {}
        longest: dict[str, float] = {}
        for q in list(_QUEUES):
            total, oldest = q.unfinished()
            depth[q.name] = depth.get(q.name, 0) + q.depth
            unfinished[q.name] = unfinished.get(q.name, 0.0) + total
            longest[q.name] = max(longest.get(q.name, 0.0), oldest)
        for metric, help_, values in (
                ("workqueue_depth", "Current depth of workqueue", depth),
                ("workqueue_unfinished_work_seconds",
                 "How many seconds of work has done that is in progress and hasn't been observed by "
                 "work_duration. Large values indicate stuck threads. One can deduce the number of "
                 "stuck threads by observing the rate at which this increases.", unfinished),
                ("workqueue_longest_running_processor_seconds",
                 "How many seconds has the longest running processor for workqueue been running.", longest)):
            family = GaugeMetricFamily(metric, help_, labels=["name"])
            for name, value in sorted(values.items()):
                family.add_metric([name], value)
            yield family

    def describe(self) -> list[Any]:
        return list(self.collect())


# -- REST client (counted in client.rest) -------------------------------------------

def _go_float(value: float) -> str:
    """A bucket bound as Prometheus' Go client writes it (`+Inf`, `0.005`)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]  # untyped upstream


class _RestCollector(Collector):
    def collect(self) -> Iterator[Any]:
        with rest.METRICS_LOCK:
            total: tuple[rest.MetricCounts, rest.MetricLatency] = ({}, {})
            rest.merge_metrics(total, *rest.RETIRED_METRICS)
            for m in list(rest.LIVE_METRICS):
                rest.merge_metrics(total, m.counts, m.latency)
        counts, latency = total
        requests = CounterMetricFamily(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            labels=["code", "method", "host"])
        for labels, n in sorted(counts.items()):
            requests.add_metric(list(labels), n)
        yield requests
        duration = HistogramMetricFamily(
            "rest_client_request_duration_seconds",
            "Request latency in seconds. Broken down by verb, and host.", labels=["verb", "host"])
        for labels, h in sorted(latency.items()):
            cumulative = list(itertools.accumulate(h[:-1]))
            buckets = [(_go_float(b), c) for b, c in zip((*rest.METRIC_BUCKETS, math.inf), cumulative)]
            duration.add_metric(list(labels), buckets, h[-1])
        yield duration

    def describe(self) -> list[Any]:
        return list(self.collect())


# -- leader election -----------------------------------------------------------------------

_ELECTORS: weakref.WeakSet[Any] = weakref.WeakSet()


def track_leader(elector: Any) -> None:
    """Report `elector` (a client.leaderelection.LeaderElector) as
    `leader_election_master_status{name=<its Lease's name>}`."""
    _ELECTORS.add(elector)


class _LeaderCollector(Collector):
    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, "
            "1 indicates master. 'name' is the string used to identify the lease. Please make sure "
            "to group by name.", labels=["name"])
        for e in list(_ELECTORS):
            family.add_metric([e.name], 1.0 if e.is_leader() else 0.0)
        yield family

    def describe(self) -> list[Any]:
        return list(self.collect())


REGISTRY.register(_QueueCollector())
REGISTRY.register(_RestCollector())
REGISTRY.register(_LeaderCollector())
