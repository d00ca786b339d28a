"""The kubelet's metrics (pkg/kubelet/metrics, as of 1.32), in machinery.metrics.REGISTRY:

- `kubelet_pod_start_duration_seconds`: from the kubelet first seeing a pod to its
  status first reporting phase Running (upstream's SyncPod observes the same step);
- `kubelet_pod_start_sli_duration_seconds{first_with_network}`: from the pod's
  creationTimestamp to the same moment, for pods without init containers (the SLI
  excludes image pulls, which minik8s has none of, and init containers, which it would
  have to subtract). `first_with_network` is "false": every pod here has a network;
- `kubelet_pod_worker_duration_seconds{operation_type}`: one sync of one pod; `create`
  (its first), `kill` (stopping it), else `sync`;
- `kubelet_pleg_relist_duration_seconds`, `kubelet_pleg_relist_interval_seconds`: the
  PLEG's relist, and the time between the starts of two relists;
- `kubelet_running_pods` (pods with a ready sandbox) and
  `kubelet_running_containers{container_state}` (`running`, `exited`), read when
  scraped from each live Kubelet's last PLEG relist: no cost per pod between scrapes;
- `kubelet_started_pods_total` (sandboxes created) and
  `kubelet_started_containers_total{container_type}` (`container`, `init_container`).

Names, help texts and buckets are Kubernetes'. The fake runtime (kubelet/fake.py) runs no
Kubelet and records none of these, so a process simulating 1,000 nodes pays nothing here.

Cost per pod: the children are bound once at import, so a pod's start records two
counter increments and three histogram observations (~0.3 µs and ~0.6 µs each), plus
parsing its creationTimestamp for the SLI (~5 µs, machinery.times): ~8 µs per pod in
all, measured with timeit on the 2-core CI machine while a kubelet test ran beside it,
against the ~0.1 s or more it takes to start a pod. Each sync adds one observation.
"""
from __future__ import annotations

import weakref
from typing import Any, Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from machinery.metrics import REGISTRY

# Go's prometheus.DefBuckets.
DEF_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
POD_START_BUCKETS = (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480,
                     600, 900, 1200, 1800, 2700, 3600)

POD_START_DURATION = Histogram(
    "kubelet_pod_start_duration_seconds",
    "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
    buckets=POD_START_BUCKETS, registry=REGISTRY)
POD_START_SLI_DURATION = Histogram(
    "kubelet_pod_start_sli_duration_seconds",
    "Duration in seconds to start a pod, excluding time to pull images and run init containers, "
    "measured from pod creation timestamp to when all its containers are reported as started and "
    "observed via watch", ["first_with_network"], buckets=POD_START_BUCKETS, registry=REGISTRY)
POD_WORKER_DURATION = Histogram(
    "kubelet_pod_worker_duration_seconds",
    "Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
    ["operation_type"], buckets=DEF_BUCKETS, registry=REGISTRY)
PLEG_RELIST_DURATION = Histogram(
    "kubelet_pleg_relist_duration_seconds", "Duration in seconds for relisting pods in PLEG.",
    buckets=DEF_BUCKETS, registry=REGISTRY)
PLEG_RELIST_INTERVAL = Histogram(
    "kubelet_pleg_relist_interval_seconds", "Interval in seconds between relisting in PLEG.",
    buckets=DEF_BUCKETS, registry=REGISTRY)
STARTED_PODS = Counter(
    "kubelet_started_pods", "Cumulative number of pods started", registry=REGISTRY)
STARTED_CONTAINERS = Counter(
    "kubelet_started_containers", "Cumulative number of containers started",
    ["container_type"], registry=REGISTRY)

# Children bound once: recording costs no label lookup.
SLI_WITH_NETWORK = POD_START_SLI_DURATION.labels("false")
SYNC_DURATION = {op: POD_WORKER_DURATION.labels(op) for op in ("create", "sync", "kill")}
STARTED = {True: STARTED_CONTAINERS.labels("init_container"), False: STARTED_CONTAINERS.labels("container")}

_KUBELETS: weakref.WeakSet[Any] = weakref.WeakSet()


def track(kubelet: Any) -> None:
    """Report `kubelet` (a Kubelet) in kubelet_running_pods and kubelet_running_containers:
    its `relisted` attribute is the PLEG's last relist, `{key: (pod uid, state)}`, with
    `sandbox/<uid>` keys for sandboxes (state: ready) and container ids for containers."""
    _KUBELETS.add(kubelet)


class _RunningCollector(Collector):
    def collect(self) -> Iterator[Any]:
        pods = 0
        states = {"running": 0, "exited": 0}
        for k in list(_KUBELETS):
            for key, (_uid, state) in list(k.relisted.items()):
                if key.startswith("sandbox/"):
                    pods += bool(state)
                else:
                    states[state] = states.get(state, 0) + 1
        yield GaugeMetricFamily("kubelet_running_pods", "Number of pods that have a running pod sandbox",
                                value=pods)
        family = GaugeMetricFamily("kubelet_running_containers", "Number of containers currently running",
                                   labels=["container_state"])
        for state, n in states.items():
            family.add_metric([state], n)
        yield family

    def describe(self) -> list[Any]:
        return list(self.collect())


REGISTRY.register(_RunningCollector())
