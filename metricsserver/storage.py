"""The last two scrapes of every node and container, and usage computed from them, as
metrics-server's pkg/storage does.

Guarantees
- `decode(text, node, default_time)` reads a kubelet's `/metrics/resource` (Prometheus
  text, millisecond timestamps; a sample without one takes `default_time`) into a
  `Batch`: the node's point and each container's (cumulative CPU seconds, working set
  bytes, start time). As metrics-server: a node or container point missing its CPU or
  memory (zero counts as missing) is dropped, and a pod with one incomplete container
  is dropped whole.
- `Storage.store(batch)` replaces what is kept by the new scrape: a node or pod absent
  from it (its kubelet failed, or the pod is gone) has no metrics from then on, so a
  stale point is never served. A point is moved to `prev` only when the new one is
  newer and (containers) has not restarted since; a container that started less than a
  metric resolution ago (but at least 10 s ago) gets a zero point at its start time as
  `prev`, so a fresh pod has metrics after one scrape.
- `node_metrics(name)` / `pod_metrics(namespace, name)`: `Usage` (CPU cores as a rate
  between the two points, memory the last working set; the point's timestamp and the
  window between the points) or None when there are not yet two points. A pod's
  timestamp and window are its earliest container's (seconds, as floats); a pod is served only when every
  container has both points.

Pure data: no I/O, no locks (one asyncio loop reads and writes it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("minik8s.metricsserver")

FRESH_CONTAINER_MIN_RESOLUTION = 10.0  # metrics-server's freshContainerMinMetricsResolution


@dataclass
class Point:
    # Integers, as metrics-server keeps them, so that a window between two millisecond
    # timestamps is exact (15.005s, not 15.004999876s).
    timestamp: int = 0           # nanoseconds since the epoch
    cpu: int = 0                 # cumulative CPU, core-nanoseconds
    memory: int = 0              # working set, bytes
    start_time: int = 0          # containers: when it started, nanoseconds since the epoch


@dataclass
class Batch:
    nodes: dict[str, Point] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Point]] = field(default_factory=dict)


@dataclass
class Usage:
    cpu_nanocores: int
    memory_bytes: int
    timestamp: float
    window: float

    @property
    def cpu(self) -> Fraction:
        return Fraction(self.cpu_nanocores, 1_000_000_000)


_NODE_CPU, _NODE_MEM = "node_cpu_usage_seconds_total", "node_memory_working_set_bytes"
_CTR_CPU, _CTR_MEM = "container_cpu_usage_seconds_total", "container_memory_working_set_bytes"
_CTR_START = "container_start_time_seconds"


def decode(text: str, node: str, default_time: float) -> Batch:
    """ValueError when `text` is not Prometheus' text format."""
    batch = Batch()
    default_ns = int(default_time * 1e9)
    npoint = Point()
    pods: dict[tuple[str, str], dict[str, Point]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            # the parser gives the exposition's milliseconds as seconds
            ts = round(float(s.timestamp) * 1000) * 1_000_000 if s.timestamp is not None else default_ns
            if s.name == _NODE_CPU:
                npoint.cpu, npoint.timestamp = int(s.value * 1e9), ts
            elif s.name == _NODE_MEM:
                npoint.memory, npoint.timestamp = int(s.value), ts
            elif s.name in (_CTR_CPU, _CTR_MEM, _CTR_START):
                ref = (s.labels.get("namespace", ""), s.labels.get("pod", ""))
                p = pods.setdefault(ref, {}).setdefault(s.labels.get("container", ""), Point())
                if s.name == _CTR_CPU:
                    p.cpu, p.timestamp = int(s.value * 1e9), ts
                elif s.name == _CTR_MEM:
                    p.memory, p.timestamp = int(s.value), ts
                else:
                    p.start_time = int(s.value * 1e9)
    if npoint.timestamp and npoint.cpu and npoint.memory:
        batch.nodes[node] = npoint
    else:
        log.debug("Failed getting complete node metric node=%s", node)
    for ref, containers in pods.items():
        complete = {n: p for n, p in containers.items() if p.timestamp or p.cpu or p.memory}
        if not complete:
            continue
        if any(not (p.cpu and p.memory) for p in complete.values()):
            log.debug("Failed getting complete Pod metric pod=%s/%s", *ref)
            continue
        batch.pods[ref] = complete
    return batch


def _usage(last: Point, prev: Point) -> Usage | None:
    if last.start_time < prev.start_time or last.cpu < prev.cpu:
        return None  # a restart or a counter reset: metrics-server skips the point
    window = last.timestamp - prev.timestamp
    if window <= 0:
        return None
    nanocores = int((last.cpu - prev.cpu) / (window / 1e9))
    return Usage(nanocores, last.memory, last.timestamp / 1e9, window / 1e9)


class Storage:
    def __init__(self, metric_resolution: float):
        self.resolution = metric_resolution
        self.nodes_last: dict[str, Point] = {}
        self.nodes_prev: dict[str, Point] = {}
        self.pods_last: dict[tuple[str, str], dict[str, Point]] = {}
        self.pods_prev: dict[tuple[str, str], dict[str, Point]] = {}

    def ready(self) -> bool:
        """metrics-server's storage readiness: some node has two points."""
        return bool(self.nodes_prev)

    def store(self, batch: Batch) -> None:
        self._store_nodes(batch)
        self._store_pods(batch)

    def _store_nodes(self, batch: Batch) -> None:
        last: dict[str, Point] = {}
        prev: dict[str, Point] = {}
        for name, new in batch.nodes.items():
            last[name] = new
            old = self.nodes_last.get(name)
            if old is None:
                continue
            if new.timestamp > old.timestamp:
                prev[name] = old
            elif (p := self.nodes_prev.get(name)) is not None and p.timestamp < new.timestamp:
                prev[name] = p
        self.nodes_last, self.nodes_prev = last, prev

    def _store_pods(self, batch: Batch) -> None:
        last_pods: dict[tuple[str, str], dict[str, Point]] = {}
        prev_pods: dict[tuple[str, str], dict[str, Point]] = {}
        for ref, containers in batch.pods.items():
            prev: dict[str, Point] = {}
            old_pod = self.pods_last.get(ref)
            for name, new in containers.items():
                age = (new.timestamp - new.start_time) / 1e9
                if new.start_time < new.timestamp and FRESH_CONTAINER_MIN_RESOLUTION <= age < self.resolution:
                    prev[name] = Point(new.start_time, 0, new.memory, new.start_time)
                elif old_pod is not None and (old := old_pod.get(name)) is not None \
                        and new.start_time < old.timestamp:
                    if new.timestamp > old.timestamp:
                        prev[name] = old
                    elif (p := self.pods_prev.get(ref, {}).get(name)) is not None and p.timestamp < new.timestamp:
                        prev[name] = p
            if prev:
                prev_pods[ref] = prev
            last_pods[ref] = dict(containers)
        self.pods_last, self.pods_prev = last_pods, prev_pods

    def node_metrics(self, name: str) -> Usage | None:
        last, prev = self.nodes_last.get(name), self.nodes_prev.get(name)
        if last is None or prev is None:
            return None
        return _usage(last, prev)

    def pod_metrics(self, namespace: str, name: str) -> tuple[float, float, dict[str, Usage]] | None:
        """(timestamp, window, usage per container) or None."""
        last, prev = self.pods_last.get((namespace, name)), self.pods_prev.get((namespace, name))
        if last is None or prev is None:
            return None
        out: dict[str, Usage] = {}
        earliest: Usage | None = None
        for cname, lp in last.items():
            pp = prev.get(cname)
            if pp is None:
                return None  # every container, or none
            u = _usage(lp, pp)
            if u is None:
                continue
            out[cname] = u
            if earliest is None or u.timestamp < earliest.timestamp:
                earliest = u
        if earliest is None:
            return None
        return earliest.timestamp, earliest.window, out

    def counts(self) -> tuple[int, int]:
        """(nodes, containers) with two points: what can be served."""
        return len(self.nodes_prev), sum(len(c) for c in self.pods_prev.values())
