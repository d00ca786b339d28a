"""kube-scheduler's metrics (pkg/scheduler/metrics, as of 1.32), in
machinery.metrics.REGISTRY:

- `scheduler_schedule_attempts_total{result,profile}`: each attempt's outcome,
  `scheduled`, `unschedulable` or `error`;
- `scheduler_scheduling_attempt_duration_seconds{result,profile}`: from the start of the
  attempt's scheduling cycle to its outcome (binding included when it binds);
- `scheduler_scheduling_algorithm_duration_seconds`: the scheduling cycle alone;
- `scheduler_pod_scheduling_sli_duration_seconds{attempts}`: from a pod's first attempt
  to its successful binding, over however many attempts (`attempts` caps at `15+`).
  This is 1.32's name: `scheduler_pod_scheduling_duration_seconds` was deprecated in
  1.29 and is hidden from 1.30 on, so it is not exposed;
- `scheduler_pod_scheduling_attempts`: attempts a pod needed to be scheduled;
- `scheduler_pending_pods{queue}`: pods in `active`, `backoff`, `unschedulable` and
  `gated`, read from every live scheduling queue when scraped.

Buckets are Kubernetes'. `ProfileMetrics` caches the labelled children, so recording an
attempt costs no label lookups.
"""
from __future__ import annotations

import weakref
from typing import Any, Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from machinery.metrics import REGISTRY, exponential_buckets

SCHEDULE_ATTEMPTS = Counter(
    "scheduler_schedule_attempts_total",
    "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be "
    "scheduled, while 'error' means an internal scheduler problem.",
    ["result", "profile"], registry=REGISTRY)
ATTEMPT_DURATION = Histogram(
    "scheduler_scheduling_attempt_duration_seconds",
    "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
    ["result", "profile"], buckets=exponential_buckets(0.001, 2, 15), registry=REGISTRY)
ALGORITHM_DURATION = Histogram(
    "scheduler_scheduling_algorithm_duration_seconds", "Scheduling algorithm latency in seconds",
    buckets=exponential_buckets(0.001, 2, 15), registry=REGISTRY)
SLI_DURATION = Histogram(
    "scheduler_pod_scheduling_sli_duration_seconds",
    "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue "
    "and might involve multiple scheduling attempts.",
    ["attempts"], buckets=exponential_buckets(0.01, 2, 20), registry=REGISTRY)
POD_ATTEMPTS = Histogram(
    "scheduler_pod_scheduling_attempts", "Number of attempts to successfully schedule a pod.",
    buckets=exponential_buckets(1, 2, 5), registry=REGISTRY)

RESULTS = ("scheduled", "unschedulable", "error")


def attempts_label(attempts: int) -> str:
    return "15+" if attempts >= 15 else str(attempts)


class ProfileMetrics:
    """One profile's children: `attempt(result, seconds)`."""

    def __init__(self, profile: str):
        self._attempts = {r: SCHEDULE_ATTEMPTS.labels(r, profile) for r in RESULTS}
        self._durations = {r: ATTEMPT_DURATION.labels(r, profile) for r in RESULTS}

    def attempt(self, result: str, seconds: float) -> None:
        self._attempts[result].inc()
        self._durations[result].observe(seconds)


_SLI_CHILDREN: dict[str, Any] = {}


def scheduled(attempts: int, since_first_attempt: float) -> None:
    label = attempts_label(attempts)
    child = _SLI_CHILDREN.get(label)
    if child is None:
        child = _SLI_CHILDREN[label] = SLI_DURATION.labels(label)
    child.observe(since_first_attempt)
    POD_ATTEMPTS.observe(attempts)


_QUEUES: weakref.WeakSet[Any] = weakref.WeakSet()


def track_queue(queue: Any) -> None:
    """Report `queue` (a SchedulingQueue) in scheduler_pending_pods."""
    _QUEUES.add(queue)


class _PendingCollector(Collector):
    def collect(self) -> Iterator[Any]:
        totals = {"active": 0, "backoff": 0, "unschedulable": 0, "gated": 0}
        for q in list(_QUEUES):
            for name, n in q.sizes().items():
                totals[name] = totals.get(name, 0) + n
        family = GaugeMetricFamily(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; "
            "'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in "
            "unschedulablePods that the scheduler attempted to schedule and failed; 'gated' is the "
            "number of unschedulable pods that the scheduler never attempted to schedule because "
            "they are gated.", labels=["queue"])
        for name, n in totals.items():
            family.add_metric([name], n)
        yield family

    def describe(self) -> list[Any]:
        return list(self.collect())


REGISTRY.register(_PendingCollector())
