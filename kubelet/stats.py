"""The kubelet's resource statistics: the Summary API (`GET /stats/summary`, stats/v1alpha1)
and the resource metrics (`GET /metrics/resource`), as pkg/kubelet/server/stats and
pkg/kubelet/metrics/collectors/resource_metrics.go serve them.

A summary is built from readings (`runtime.Usage`: the node's, each pod's and each of
its running containers', read from cgroups by the runtime, or set by the fake runtime).
`usageNanoCores` is the rate between a reading and the previous one of the same node,
pod or container, as the kubelet's CRI stats provider computes it from its cache; the
first reading has none. `/metrics/resource` is rendered from the summary, as the
kubelet's collector renders it: node_cpu_usage_seconds_total, node_memory_working_set_bytes,
per container container_cpu_usage_seconds_total, container_memory_working_set_bytes and
container_start_time_seconds, per pod pod_cpu_usage_seconds_total and
pod_memory_working_set_bytes, and scrape_error / resource_scrape_error; families sorted by
name and samples by labels, values formatted as Go's strconv 'g', timestamps the readings'
in milliseconds (Prometheus' text format 0.0.4, as the Go client writes it).

`Summarizer` keeps the previous readings; one per endpoint, used from one event loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubelet.runtime import Runtime, Usage
from machinery import times

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class ContainerReading:
    name: str
    start: float  # when it started, seconds since the epoch
    usage: Usage | None


@dataclass
class PodReading:
    name: str
    namespace: str
    uid: str
    start: float
    usage: Usage | None
    containers: list[ContainerReading] = field(default_factory=list)


class Summarizer:
    """Summaries (stats/v1alpha1 Summary, times as epoch seconds until `to_json`)."""

    def __init__(self) -> None:
        self._last: dict[str, Usage] = {}

    def _cpu(self, key: str, u: Usage, seen: dict[str, Usage]) -> dict[str, Any]:
        cpu: dict[str, Any] = {"time": u.time, "usageCoreNanoSeconds": u.cpu_ns}
        prev = self._last.get(key)
        if prev is not None and u.time > prev.time and u.cpu_ns >= prev.cpu_ns:
            cpu["usageNanoCores"] = int((u.cpu_ns - prev.cpu_ns) / (u.time - prev.time))
            seen[key] = u
        elif prev is not None and u.time <= prev.time and u.cpu_ns >= prev.cpu_ns:
            seen[key] = prev  # read again at once: keep the older reading to rate against
        else:
            seen[key] = u
        return cpu

    @staticmethod
    def _memory(u: Usage, limit: int | None = None) -> dict[str, Any]:
        mem: dict[str, Any] = {"time": u.time, "usageBytes": u.memory, "workingSetBytes": u.working_set,
                               "rssBytes": u.rss, "pageFaults": u.page_faults,
                               "majorPageFaults": u.major_page_faults}
        if limit:
            mem["availableBytes"] = max(0, limit - u.working_set)
        return mem

    def summary(self, *, node_name: str, node_start: float, node: Usage | None,
                pods: list[PodReading], memory_capacity: int | None = None) -> dict[str, Any]:
        seen: dict[str, Usage] = {}
        node_stats: dict[str, Any] = {"nodeName": node_name, "startTime": node_start}
        if node is not None:
            node_stats["cpu"] = self._cpu("node", node, seen)
            node_stats["memory"] = self._memory(node, memory_capacity)
        out_pods = []
        for p in pods:
            ps: dict[str, Any] = {"podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                                  "startTime": p.start, "containers": []}
            for c in p.containers:
                cs: dict[str, Any] = {"name": c.name, "startTime": c.start}
                if c.usage is not None:
                    cs["cpu"] = self._cpu(f"{p.uid}/{c.name}", c.usage, seen)
                    cs["memory"] = self._memory(c.usage)
                ps["containers"].append(cs)
            if p.usage is not None:
                ps["cpu"] = self._cpu(p.uid, p.usage, seen)
                ps["memory"] = self._memory(p.usage)
            out_pods.append(ps)
        self._last = seen  # what is gone is forgotten
        return {"node": node_stats, "pods": out_pods}


def to_json(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary as the kubelet serializes it: times as RFC 3339 (metav1.Time)."""
    def conv(v: Any, key: str = "") -> Any:
        if isinstance(v, dict):
            return {k: conv(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        if key in ("time", "startTime") and isinstance(v, (int, float)):
            return times.rfc3339(v)
        return v
    return conv(summary)


def go_float(v: float) -> str:
    """`v` as Go's strconv.FormatFloat(v, 'g', -1, 64): the shortest digits, in exponent
    form when the exponent is below -4 or at least 6 (what the Prometheus Go client writes)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1, v) < 0 else "0"
    sign, digits, exp = Decimal(repr(float(v))).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    assert isinstance(exp, int)
    point = len(digits) + exp  # digits before the decimal point
    e = point - 1
    neg = "-" if sign else ""
    if e < -4 or e >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return neg + ds + "0" * (point - len(ds))
    return f"{neg}{ds[:point]}.{ds[point:]}"


_FAMILIES = {  # name: (type, help with the stability level, as the kubelet's)
    "container_cpu_usage_seconds_total": (
        "counter", "[STABLE] Cumulative cpu time consumed by the container in core-seconds"),
    "container_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the container in bytes"),
    "container_start_time_seconds": ("gauge", "[STABLE] Start time of the container since unix epoch in seconds"),
    "node_cpu_usage_seconds_total": ("counter", "[STABLE] Cumulative cpu time consumed by the node in core-seconds"),
    "node_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the node in bytes"),
    "pod_cpu_usage_seconds_total": ("counter", "[STABLE] Cumulative cpu time consumed by the pod in core-seconds"),
    "pod_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the pod in bytes"),
    "resource_scrape_error": (
        "gauge", "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise"),
    "scrape_error": ("gauge", "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise"),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def resource_metrics(summary: dict[str, Any] | None) -> str:
    """The kubelet's /metrics/resource text from a summary (None: the summary could not
    be had, and scrape_error is 1)."""
    samples: dict[str, list[tuple[tuple[tuple[str, str], ...], float, float | None]]] = {
        name: [] for name in _FAMILIES}

    def add(name: str, labels: dict[str, str], value: float, at: float | None) -> None:
        samples[name].append((tuple(sorted(labels.items())), value, at))

    error = 1.0 if summary is None else 0.0
    add("scrape_error", {}, error, None)
    add("resource_scrape_error", {}, error, None)
    if summary is not None:
        node = summary.get("node") or {}
        if "usageCoreNanoSeconds" in (cpu := node.get("cpu") or {}):
            add("node_cpu_usage_seconds_total", {}, cpu["usageCoreNanoSeconds"] / 1e9, cpu["time"])
        if "workingSetBytes" in (mem := node.get("memory") or {}):
            add("node_memory_working_set_bytes", {}, mem["workingSetBytes"], mem["time"])
        for pod in summary.get("pods") or []:
            ref = pod["podRef"]
            pl = {"pod": ref["name"], "namespace": ref["namespace"]}
            for c in pod.get("containers") or []:
                cl = {**pl, "container": c["name"]}
                if c.get("startTime", 0) > 0:
                    add("container_start_time_seconds", cl, c["startTime"], None)
                if "usageCoreNanoSeconds" in (cpu := c.get("cpu") or {}):
                    add("container_cpu_usage_seconds_total", cl, cpu["usageCoreNanoSeconds"] / 1e9, cpu["time"])
                if "workingSetBytes" in (mem := c.get("memory") or {}):
                    add("container_memory_working_set_bytes", cl, mem["workingSetBytes"], mem["time"])
            if "usageCoreNanoSeconds" in (cpu := pod.get("cpu") or {}):
                add("pod_cpu_usage_seconds_total", pl, cpu["usageCoreNanoSeconds"] / 1e9, cpu["time"])
            if "workingSetBytes" in (mem := pod.get("memory") or {}):
                add("pod_memory_working_set_bytes", pl, mem["workingSetBytes"], mem["time"])
    lines = []
    for name in sorted(samples):
        if not samples[name]:
            continue
        kind, help_ = _FAMILIES[name]
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for labels, value, at in sorted(samples[name], key=lambda s: s[0]):
            ls = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}" if labels else ""
            stamp = f" {int(at * 1000)}" if at is not None else ""
            lines.append(f"{name}{ls} {go_float(float(value))}{stamp}")
    return "\n".join(lines) + "\n"


def boot_time() -> float:
    """When the machine booted (/proc/stat btime): the node's startTime."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def read_runtime(runtime: Runtime) -> tuple[Usage | None, list[PodReading]]:
    """The node's reading and every pod's with a ready sandbox, with its running
    containers (the latest run of each), from the runtime. Blocks: run it in a thread."""
    pods = []
    for sb in runtime.list_pod_sandboxes():
        if not sb.ready:
            continue
        latest: dict[str, Any] = {}
        for c in runtime.list_containers(sb.uid):
            if c.running and (c.name not in latest or c.attempt >= latest[c.name].attempt):
                latest[c.name] = c
        containers = [ContainerReading(c.name, c.started_at or 0.0, runtime.usage(sb.uid, c.id))
                      for c in sorted(latest.values(), key=lambda c: c.name)]
        pods.append(PodReading(sb.name, sb.namespace, sb.uid, sb.created_at, runtime.usage(sb.uid), containers))
    return runtime.node_usage(), pods
