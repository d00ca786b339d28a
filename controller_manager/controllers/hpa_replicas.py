"""The HPA's arithmetic: Kubernetes' replica calculator (pkg/controller/podautoscaler/
replica_calculator.go) and its normalization of a recommendation (horizontal.go:
stabilization windows, scaling policies, min/max), as pure functions.

What it guarantees, as Kubernetes does:
- desired = ceil(current-ready-pods * usage / target); a usage ratio within the
  tolerance (0.1) of 1 keeps the current count.
- Pods being deleted or Failed are not counted at all. Pending pods are unready; for
  CPU, a pod still in its CPU initialization period (5 min after start) is unready while
  it is unready or its sample predates one window after it turned ready, and after that
  period an unready pod is unready (set aside) if it never became ready within the
  initial readiness delay (30 s) of its start.
- A pod without a sample (missing or stale) counts as using 100% of its request (the
  target, for AverageValue) when scaling down and 0% when scaling up; unready pods count
  as 0% when scaling up. If that reversal flips the direction, or brings the ratio
  within the tolerance, the current count stands.
- Utilization is against the pods' requests; a container without a request for the
  resource fails the computation ("missing request for cpu in container c of Pod p").
- Normalization with `behavior`: the current count is raised to no more than the lowest
  recommendation of the scale-up window and lowered to no less than the highest of the
  scale-down window (stabilization), then limited by the policies of its direction counted over their
  periods from past scale events (selectPolicy Max: the largest change, Min: the
  smallest, Disabled: none), then by minReplicas/maxReplicas. Without `behavior`:
  Kubernetes' older rule, the highest recommendation of the downscale stabilization
  window, at most max(2 x current, 4) when scaling up, then min/max.

Time is passed in (`now`, seconds on the controller's clock), so every case can be
replayed. No I/O; the history objects are per-HPA and owned by one caller at a time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from machinery import quantity, times

TOLERANCE = 0.1
CPU_INITIALIZATION_PERIOD = 300.0
INITIAL_READINESS_DELAY = 30.0
DOWNSCALE_STABILIZATION = 300.0
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0


class MetricError(Exception):
    """The recommendation cannot be computed; the message is Kubernetes' wording."""


@dataclass(frozen=True)
class PodMetric:
    value: int  # milli-units (millicores, or milli-bytes for memory as Kubernetes counts)
    timestamp: float = 0.0
    window: float = 0.0


def _time(ts: Any) -> float | None:
    try:
        return times.parse(ts) if ts else None
    except (TypeError, ValueError):
        return None


def _ready_condition(pod: dict) -> dict | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c
    return None


def group_pods(pods: list[dict], metrics: dict[str, PodMetric], resource: str, *, now: float,
               cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
               initial_readiness_delay: float = INITIAL_READINESS_DELAY
               ) -> tuple[int, set[str], set[str], set[str]]:
    """groupPods: (ready pod count, unready pods, pods missing a metric, ignored pods).
    Unready pods count as 0% on a scale up; ignored ones (being deleted, Failed) never count."""
    ready, unready, missing, ignored = 0, set(), set(), set()
    for pod in pods:
        name, status = pod["metadata"]["name"], pod.get("status") or {}
        phase = status.get("phase")
        if pod["metadata"].get("deletionTimestamp") or phase == "Failed":
            ignored.add(name)
            continue
        if phase == "Pending":
            unready.add(name)
            continue
        metric = metrics.get(name)
        if metric is None:
            missing.add(name)
            continue
        if resource == "cpu":
            cond, start = _ready_condition(pod), _time(status.get("startTime"))
            if cond is None or start is None:
                unready_now = True
            else:
                transition = _time(cond.get("lastTransitionTime")) or start
                if start + cpu_initialization_period > now:
                    # Unready, or no full window of samples since it turned ready.
                    unready_now = cond.get("status") == "False" or metric.timestamp < transition + metric.window
                else:
                    # Unready, and never ready: it went unready within the readiness delay.
                    unready_now = cond.get("status") == "False" and start + initial_readiness_delay > transition
            if unready_now:
                unready.add(name)
                continue
        ready += 1
    return ready, unready, missing, ignored


def pod_requests(pods: list[dict], resource: str, container: str = "") -> dict[str, int]:
    """calculatePodRequests: each pod's request of `resource` in milli-units, over its
    containers (and restartable init containers); one without a request fails it."""
    out: dict[str, int] = {}
    for pod in pods:
        spec = pod.get("spec") or {}
        containers = list(spec.get("containers") or []) + [
            c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
        total = 0
        for c in containers:
            if container and c.get("name") != container:
                continue
            raw = ((c.get("resources") or {}).get("requests") or {}).get(resource)
            value = quantity.parse_quantity(raw) if raw is not None else 0
            if not value:
                raise MetricError(f"missing request for {resource} in container {c.get('name')} "
                                  f"of Pod {pod['metadata']['name']}")
            total += math.ceil(value * 1000)
        out[pod["metadata"]["name"]] = total
    return out


def utilization_ratio(metrics: dict[str, PodMetric], requests: dict[str, int],
                      target: int) -> tuple[float, int, int]:
    """GetResourceUtilizationRatio: (usage ratio, utilization %, average raw value)."""
    used = requested = entries = 0
    for name, m in metrics.items():
        if name in requests:
            used += m.value
            requested += requests[name]
            entries += 1
    if requested == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = used * 100 // requested
    return utilization / target, utilization, used // entries


def usage_ratio(metrics: dict[str, PodMetric], target: int) -> tuple[float, int]:
    """GetMetricUsageRatio: (usage ratio, average usage in milli-units)."""
    usage = sum(m.value for m in metrics.values()) // len(metrics)
    return usage / target, usage


def resource_replicas(current: int, target_utilization: int, resource: str, pods: list[dict],
                      metrics: dict[str, PodMetric], *, now: float, tolerance: float = TOLERANCE,
                      container: str = "",
                      cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
                      initial_readiness_delay: float = INITIAL_READINESS_DELAY
                      ) -> tuple[int, int, int]:
    """GetResourceReplicas: (replicas, utilization %, average raw usage) for a Utilization
    target. `metrics` holds the usable samples by pod name (stale ones left out)."""
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    metrics = dict(metrics)
    ready, unready, missing, ignored = group_pods(pods, metrics, resource, now=now,
                                                  cpu_initialization_period=cpu_initialization_period,
                                                  initial_readiness_delay=initial_readiness_delay)
    for name in ignored | unready:
        metrics.pop(name, None)
    requests = pod_requests(pods, resource, container)
    if not metrics:
        raise MetricError("did not receive metrics for any ready pods")
    ratio, utilization, raw = utilization_ratio(metrics, requests, target_utilization)
    replicas = _rebalance(current, ratio, ready, unready, missing, metrics, tolerance,
                          full=lambda n: requests[n],
                          recompute=lambda: utilization_ratio(metrics, requests, target_utilization)[0])
    return replicas, utilization, raw


def raw_replicas(current: int, target_milli: int, resource: str, pods: list[dict],
                 metrics: dict[str, PodMetric], *, now: float, tolerance: float = TOLERANCE,
                 cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
                 initial_readiness_delay: float = INITIAL_READINESS_DELAY) -> tuple[int, int]:
    """calcPlainMetricReplicas (AverageValue targets): (replicas, average usage milli)."""
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    metrics = dict(metrics)
    ready, unready, missing, ignored = group_pods(pods, metrics, resource, now=now,
                                                  cpu_initialization_period=cpu_initialization_period,
                                                  initial_readiness_delay=initial_readiness_delay)
    for name in ignored | unready:
        metrics.pop(name, None)
    if not metrics:
        raise MetricError("did not receive metrics for any ready pods")
    ratio, usage = usage_ratio(metrics, target_milli)
    replicas = _rebalance(current, ratio, ready, unready, missing, metrics, tolerance,
                          full=lambda _: target_milli,
                          recompute=lambda: usage_ratio(metrics, target_milli)[0])
    return replicas, usage


def _rebalance(current: int, ratio: float, ready: int, unready: set[str], missing: set[str],
               metrics: dict[str, PodMetric], tolerance: float, *, full: Callable[[str], int],
               recompute: Callable[[], float]) -> int:
    """The common tail of both calculations: missing pods at 100% (`full`) when scaling
    down and 0% when scaling up, unready pods at 0% when scaling up, then the ratio again."""
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if abs(1.0 - ratio) <= tolerance:
            return current
        return math.ceil(ratio * ready)
    if missing:
        for name in missing:
            if ratio < 1.0:
                metrics[name] = PodMetric(full(name))
            elif ratio > 1.0:
                metrics[name] = PodMetric(0)
    if scale_up_with_unready:
        for name in unready:
            metrics[name] = PodMetric(0)
    new_ratio = recompute()
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    replicas = math.ceil(new_ratio * len(metrics))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current
    return replicas


# --- normalization (horizontal.go) -------------------------------------------------------

@dataclass
class History:
    """What the controller remembers of one HPA between syncs (Kubernetes keeps it in
    memory too, so a restart forgets it): its recent recommendations and scale events."""
    recommendations: list[tuple[int, float]] = field(default_factory=list)  # (replicas, time)
    scale_up: list[tuple[int, float]] = field(default_factory=list)  # (pods added, time)
    scale_down: list[tuple[int, float]] = field(default_factory=list)  # (pods removed, time)


@dataclass(frozen=True)
class Normalized:
    replicas: int
    able_reason: str
    able_message: str
    limited: bool
    limited_reason: str
    limited_message: str


_READY = ("ReadyForNewScale", "recommended size matches current size")
_WITHIN = ("DesiredWithinRange", "the desired count is within the acceptable range")


def _record(history: History, desired: int, now: float, obsolete_before: float) -> None:
    """Replace one sample older than the longest window (or add one)."""
    for i, (_, t) in enumerate(history.recommendations):
        if t < obsolete_before:
            history.recommendations[i] = (desired, now)
            break
    else:
        history.recommendations.append((desired, now))


def normalize(history: History, *, current: int, desired: int, min_replicas: int, max_replicas: int,
              now: float, downscale_stabilization: float = DOWNSCALE_STABILIZATION) -> Normalized:
    """normalizeDesiredReplicas: an HPA without `behavior`."""
    cutoff = now - downscale_stabilization
    stabilized = max([desired] + [r for r, t in history.recommendations if t >= cutoff])
    _record(history, desired, now, cutoff)
    able = ("ScaleDownStabilized", "recent recommendations were higher than current one, "
            "applying the highest recent recommendation") if stabilized != desired else _READY
    scale_up_limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if max_replicas > scale_up_limit:
        top, why = scale_up_limit, ("ScaleUpLimit", "the desired replica count is increasing faster "
                                                    "than the maximum scale rate")
    else:
        top, why = max_replicas, ("TooManyReplicas", "the desired replica count is more than the maximum "
                                                     "replica count")
    if stabilized < min_replicas:
        out, why = min_replicas, ("TooFewReplicas", "the desired replica count is less than the minimum "
                                                    "replica count")
    elif stabilized > top:
        out = top
    else:
        out, why = stabilized, _WITHIN
    return Normalized(out, *able, out != stabilized, *why)


def _changes(events: list[tuple[int, float]], period: float, now: float) -> int:
    """getReplicasChangePerPeriod."""
    return sum(change for change, t in events if t > now - period)


def scale_up_limit(current: int, events: list[tuple[int, float]], rules: dict, now: float) -> int:
    """calculateScaleUpLimitWithScalingRules."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    pick = min if select == "Min" else max
    result: int | None = None
    for p in rules.get("policies") or []:
        start = current - _changes(events, p["periodSeconds"], now)
        proposed = start + p["value"] if p["type"] == "Pods" else math.ceil(start * (1 + p["value"] / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def scale_down_limit(current: int, events: list[tuple[int, float]], rules: dict, now: float) -> int:
    """calculateScaleDownLimitWithBehaviors."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    pick = max if select == "Min" else min
    result: int | None = None
    for p in rules.get("policies") or []:
        start = current + _changes(events, p["periodSeconds"], now)
        proposed = start - p["value"] if p["type"] == "Pods" else int(start * (1 - p["value"] / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def normalize_with_behavior(history: History, behavior: dict, *, current: int, desired: int,
                            min_replicas: int, max_replicas: int, now: float,
                            downscale_stabilization: float = DOWNSCALE_STABILIZATION) -> Normalized:
    """normalizeDesiredReplicasWithBehaviors."""
    up = behavior.get("scaleUp") or {}
    down = behavior.get("scaleDown") or {}
    up_window = up.get("stabilizationWindowSeconds") or 0
    down_window = down.get("stabilizationWindowSeconds")
    if down_window is None:
        down_window = downscale_stabilization
    # stabilizeRecommendationWithBehaviors: the current count, raised to the lowest
    # recommendation of the scale-up window and lowered to the highest of the scale-down
    # window (each window counting this recommendation too).
    up_cut, down_cut = now - up_window, now - down_window
    up_limit = min([desired] + [r for r, t in history.recommendations if t > up_cut])
    down_limit = max([desired] + [r for r, t in history.recommendations if t > down_cut])
    stabilized = min(max(current, up_limit), down_limit)
    _record(history, desired, now, min(up_cut, down_cut))
    if stabilized == desired:
        able = _READY
    elif desired >= current:
        able = ("ScaleUpStabilized", "recent recommendations were lower than current one, "
                "applying the lowest recent recommendation")
    else:
        able = ("ScaleDownStabilized", "recent recommendations were higher than current one, "
                "applying the highest recent recommendation")
    # convertDesiredReplicasWithBehaviorRate
    out, why = stabilized, _WITHIN
    if stabilized > current:
        limit = max(scale_up_limit(current, history.scale_up, up, now), current)
        if max_replicas > limit:
            top, reason = limit, ("ScaleUpLimit", "the desired replica count is increasing faster than "
                                                  "the maximum scale rate")
        else:
            top, reason = max_replicas, ("TooManyReplicas", "the desired replica count is more than the "
                                                            "maximum replica count")
        if stabilized > top:
            out, why = top, reason
    elif stabilized < current:
        limit = min(scale_down_limit(current, history.scale_down, down, now), current)
        if min_replicas < limit:
            bottom, reason = limit, ("ScaleDownLimit", "the desired replica count is decreasing faster "
                                                       "than the maximum scale rate")
        else:
            bottom, reason = min_replicas, ("TooFewReplicas", "the desired replica count is less than the "
                                                              "minimum replica count")
        if stabilized < bottom:
            out, why = bottom, reason
    return Normalized(out, *able, out != stabilized, *why)


def record_scale_event(history: History, behavior: dict | None, previous: int, new: int, now: float) -> None:
    """storeScaleEvent: remember a rescale for the policies' periods (only with `behavior`);
    an event older than the longest policy period of its direction is reused."""
    if behavior is None:
        return
    rules = behavior.get("scaleUp" if new > previous else "scaleDown") or {}
    events = history.scale_up if new > previous else history.scale_down
    longest = max([p.get("periodSeconds", 0) for p in rules.get("policies") or []] or [0])
    event = (abs(new - previous), now)
    for i, (_, t) in enumerate(events):
        if t < now - longest:
            events[i] = event
            return
    events.append(event)
