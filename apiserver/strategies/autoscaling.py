"""autoscaling/v2 HorizontalPodAutoscaler: Kubernetes 1.32's strategy
(pkg/registry/autoscaling/horizontalpodautoscaler/strategy.go), defaults
(pkg/apis/autoscaling/v2/defaults.go) and validation (pkg/apis/autoscaling/validation),
with their field paths and messages.

- Defaults (`default_hpa`): minReplicas 1; no metrics means one Resource metric, cpu at
  80% average utilization; a `behavior` that is present gets every unset rule filled:
  scaleUp stabilization 0 s, selectPolicy Max, policies Pods 4 per 15 s and Percent 100
  per 15 s; scaleDown selectPolicy Max, policies Percent 100 per 15 s, and no
  stabilization window (the controller then uses its
  --horizontal-pod-autoscaler-downscale-stabilization, 300 s). An HPA without
  `behavior` keeps none, as in Kubernetes, and the controller applies its own defaults.
- Validation: minReplicas >= 1 (HPAScaleToZero is off), maxReplicas >= 1 and >=
  minReplicas, scaleTargetRef kind and name set and valid path segments, each metric's
  type one of the five with exactly its own source populated and a sound target, and
  the behavior's windows and policies in Kubernetes' bounds.
- The status is written only through /status (a create drops it); its replica counts
  are non-negative.
- autoscaling/v1 is served from the same stored (v2) object, converted as Kubernetes
  converts (pkg/apis/autoscaling/v1/conversion.go): a cpu Utilization metric is
  targetCPUUtilizationPercentage (its status currentCPUUtilizationPercentage), and what
  v1 cannot say (other metrics and their statuses, behavior, conditions) rides in the
  `autoscaling.alpha.kubernetes.io/{metrics,current-metrics,behavior,conditions}`
  annotations as JSON, in v1's (v2beta1-shaped) form, and comes back from them.

Pure functions over private copies, as every strategy (see the package docstring).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from apiserver import validation as v
from apiserver.strategies.generic import Strategy

if TYPE_CHECKING:
    from apiserver.registry import ResourceType

Cause = dict[str, str]

DEFAULT_CPU_UTILIZATION = 80
METRIC_TYPES = ["ContainerResource", "External", "Object", "Pods", "Resource"]
_SOURCE_FIELD = {"ContainerResource": "containerResource", "External": "external", "Object": "object",
                 "Pods": "pods", "Resource": "resource"}
TARGET_TYPES = ("Utilization", "Value", "AverageValue")
SELECT_POLICIES = ["Disabled", "Max", "Min"]
POLICY_TYPES = ["Percent", "Pods"]
MAX_PERIOD_SECONDS = 1800
MAX_STABILIZATION_WINDOW_SECONDS = 3600


def scale_up_rules() -> dict:
    return {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                         {"type": "Percent", "value": 100, "periodSeconds": 15}]}


def scale_down_rules() -> dict:
    return {"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


def _fill_rules(given: Any, defaults: dict) -> dict:
    """copyHPAScalingRules: the given rule's set fields over the defaults."""
    if isinstance(given, dict):
        for k in ("selectPolicy", "stabilizationWindowSeconds", "policies"):
            if given.get(k) is not None:
                defaults[k] = given[k]
        for k, x in given.items():  # unknown fields stay for strict validation to report
            defaults.setdefault(k, x)
    return defaults


def default_hpa(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if spec.get("minReplicas") is None:
        spec["minReplicas"] = 1
    if obj.get("apiVersion") == "autoscaling/v1":
        return  # v1's SetDefaults sets only minReplicas
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}}]
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        behavior["scaleUp"] = _fill_rules(behavior.get("scaleUp"), scale_up_rules())
        behavior["scaleDown"] = _fill_rules(behavior.get("scaleDown"), scale_down_rules())


# --- validation ------------------------------------------------------------------------

def _path_segment(value: str, f: str) -> list[Cause]:
    """IsValidPathSegmentName."""
    if value in (".", ".."):
        return [v._invalid(f, value, f"may not be '{value}'")]
    return [v._invalid(f, value, f"may not contain '{c}'") for c in ("/", "%") if c in value]


def _reference(ref: Any, f: str) -> list[Cause]:
    ref, out = v._m(ref), []
    for key in ("kind", "name"):
        if not ref.get(key):
            out.append(v._required(f"{f}.{key}"))
        elif isinstance(ref[key], str):
            out += _path_segment(ref[key], f"{f}.{key}")
    return out


def _positive_quantity(q: Any, f: str) -> list[Cause]:
    parsed = v.parse_quantity(q) if q is not None else None
    if q is not None and (parsed is None or parsed <= 0):
        return [v._invalid(f, q, "must be positive")]
    return []


def _target(t: Any, f: str) -> list[Cause]:
    """validateMetricTarget."""
    t, out = v._m(t), []
    if not t.get("type"):
        out.append(v._required(f"{f}.type", "must specify a metric target type"))
    if t.get("type") not in TARGET_TYPES:
        out.append(v._invalid(f"{f}.type", t.get("type", ""), "must be either Utilization, Value, or AverageValue"))
    out += _positive_quantity(t.get("value"), f"{f}.value")
    out += _positive_quantity(t.get("averageValue"), f"{f}.averageValue")
    util = t.get("averageUtilization")
    if v._int(util) and util < 1:
        out.append(v._invalid(f"{f}.averageUtilization", util, "must be greater than 0"))
    return out


def _metric_id(m: Any, f: str) -> list[Cause]:
    m = v._m(m)
    out = [] if m.get("name") else [v._required(f"{f}.name", "must specify a metric name")]
    if isinstance(m.get("selector"), dict):
        out += v._selector(m["selector"], f"{f}.selector")
    return out


def _source(kind: str, src: dict, f: str) -> list[Cause]:
    target = v._m(src.get("target"))
    out: list[Cause] = []
    if kind in ("Resource", "ContainerResource"):
        if not src.get("name"):
            out.append(v._required(f"{f}.name", "must specify a resource name"))
        if kind == "ContainerResource" and not src.get("container"):
            out.append(v._required(f"{f}.container", "must specify a container"))
        out += _target(target, f"{f}.target")
        if target.get("averageUtilization") is None and target.get("averageValue") is None:
            out.append(v._required(f"{f}.target.averageUtilization",
                                   "must set either a target raw value or a target utilization"))
        if target.get("averageUtilization") is not None and target.get("averageValue") is not None:
            out.append(v._forbidden(f"{f}.target.averageValue",
                                    "may not set both a target raw value and a target utilization"))
    elif kind == "Pods":
        out += _metric_id(src.get("metric"), f"{f}.metric") + _target(target, f"{f}.target")
        if target.get("averageValue") is None:
            out.append(v._required(f"{f}.target.averageValue", "must specify a positive target averageValue"))
    elif kind == "Object":
        out += _reference(src.get("describedObject"), f"{f}.describedObject")
        out += _metric_id(src.get("metric"), f"{f}.metric") + _target(target, f"{f}.target")
        if target.get("value") is None and target.get("averageValue") is None:
            out.append(v._required(f"{f}.target.averageValue", "must set either a target value or averageValue"))
    elif kind == "External":
        out += _metric_id(src.get("metric"), f"{f}.metric") + _target(target, f"{f}.target")
        if target.get("value") is None and target.get("averageValue") is None:
            out.append(v._required(f"{f}.target.averageValue",
                                   "must set either a target value for metric or a per-pod target"))
        if target.get("value") is not None and target.get("averageValue") is not None:
            out.append(v._forbidden(f"{f}.target.value",
                                    "may not set both a target value for metric and a per-pod target"))
    return out


def _metric(m: dict, f: str) -> list[Cause]:
    """validateMetricSpec."""
    out: list[Cause] = []
    kind = m.get("type") or ""
    if not kind:
        out.append(v._required(f"{f}.type", "must specify a metric source type"))
    if kind not in METRIC_TYPES:
        out.append(v._not_supported(f"{f}.type", kind, METRIC_TYPES))
    present = [t for t in METRIC_TYPES if m.get(_SOURCE_FIELD[t]) is not None]
    if present:
        first = present[0]
        out += _source(first, v._m(m.get(_SOURCE_FIELD[first])), f"{f}.{_SOURCE_FIELD[first]}")
    expected = _SOURCE_FIELD.get(kind, str(kind).lower())
    if kind not in present:
        out.append(v._required(f"{f}.{expected}", "must populate information for the given metric source"))
    if len(present) != 1:
        for t in present:
            if t != kind:
                out.append(v._forbidden(f"{f}.{_SOURCE_FIELD[t]}", "must populate the given metric source only"))
    return out


def _rules(rules: Any, f: str) -> list[Cause]:
    """validateScalingRules."""
    if not isinstance(rules, dict):
        return []
    out: list[Cause] = []
    window = rules.get("stabilizationWindowSeconds")
    if v._int(window) and window < 0:
        out.append(v._invalid(f"{f}.stabilizationWindowSeconds", window, "must be greater than or equal to zero"))
    if v._int(window) and window > MAX_STABILIZATION_WINDOW_SECONDS:
        out.append(v._invalid(f"{f}.stabilizationWindowSeconds", window,
                              f"must be less than or equal to {MAX_STABILIZATION_WINDOW_SECONDS}"))
    select = rules.get("selectPolicy")
    if select is not None and select not in SELECT_POLICIES:
        out.append(v._not_supported(f"{f}.selectPolicy", select, SELECT_POLICIES))
    policies = rules.get("policies")
    if not policies:
        out.append(v._required(f"{f}.policies", "must specify at least one Policy"))
    for i, p in v._each(policies):
        pf = f"{f}.policies[{i}]"
        if p.get("type") not in POLICY_TYPES:
            out.append(v._not_supported(f"{pf}.type", p.get("type", ""), POLICY_TYPES))
        if v._int(p.get("value")) and p["value"] <= 0:
            out.append(v._invalid(f"{pf}.value", p["value"], "must be greater than zero"))
        period = p.get("periodSeconds")
        if v._int(period) and period <= 0:
            out.append(v._invalid(f"{pf}.periodSeconds", period, "must be greater than zero"))
        if v._int(period) and period > MAX_PERIOD_SECONDS:
            out.append(v._invalid(f"{pf}.periodSeconds", period, f"must be less than or equal to {MAX_PERIOD_SECONDS}"))
    return out


def validate_hpa(hpa: dict) -> list[Cause]:
    spec, out = v._m(hpa.get("spec")), []
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    if v._int(low) and low < 1:
        out.append(v._invalid("spec.minReplicas", low, "must be greater than or equal to 1"))
    if v._int(high) and high < 1:
        out.append(v._invalid("spec.maxReplicas", high, "must be greater than 0"))
    if v._int(low) and v._int(high) and high < low:
        out.append(v._invalid("spec.maxReplicas", high, "must be greater than or equal to `minReplicas`"))
    out += _reference(spec.get("scaleTargetRef"), "spec.scaleTargetRef")
    for i, m in v._each(spec.get("metrics")):
        out += _metric(m, f"spec.metrics[{i}]")
    behavior = v._m(spec.get("behavior"))
    out += _rules(behavior.get("scaleUp"), "spec.behavior.scaleUp")
    out += _rules(behavior.get("scaleDown"), "spec.behavior.scaleDown")
    status = v._m(hpa.get("status"))
    out += v._minimum(status, "currentReplicas", "status.currentReplicas")
    out += v._minimum(status, "desiredReplicas", "status.desiredReplicas")
    return out


# --- autoscaling/v1 <-> v2 ------------------------------------------------------------------

V1, V2 = "autoscaling/v1", "autoscaling/v2"
METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/metrics"
CURRENT_METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/current-metrics"
BEHAVIOR_ANNOTATION = "autoscaling.alpha.kubernetes.io/behavior"
CONDITIONS_ANNOTATION = "autoscaling.alpha.kubernetes.io/conditions"
_ANNOTATIONS = (METRICS_ANNOTATION, CURRENT_METRICS_ANNOTATION, BEHAVIOR_ANNOTATION, CONDITIONS_ANNOTATION)


def _drop_none(d: dict) -> dict:
    return {k: x for k, x in d.items() if x is not None}


def _v1_metric(m: dict, *, status: bool) -> dict:
    """A v2 MetricSpec (or MetricStatus) in v1's form."""
    t = m.get("type", "")
    pre, value = ("current", "current") if status else ("target", "target")
    if t in ("Resource", "ContainerResource"):
        key = "resource" if t == "Resource" else "containerResource"
        src = m.get(key) or {}
        v = src.get(value) or {}
        return {"type": t, key: _drop_none({
            "name": src.get("name"), "container": src.get("container"),
            f"{pre}AverageUtilization": v.get("averageUtilization"),
            f"{pre}AverageValue": v.get("averageValue")})}
    if t == "Pods":
        src = m.get("pods") or {}
        metric, v = src.get("metric") or {}, src.get(value) or {}
        return {"type": t, "pods": _drop_none({"metricName": metric.get("name"), "selector": metric.get("selector"),
                                               f"{pre}AverageValue": v.get("averageValue")})}
    if t == "Object":
        src = m.get("object") or {}
        metric, v = src.get("metric") or {}, src.get(value) or {}
        return {"type": t, "object": _drop_none({
            "target": src.get("describedObject"), "metricName": metric.get("name"),
            "selector": metric.get("selector"), f"{pre}Value": v.get("value"),
            "averageValue": v.get("averageValue")})}
    if t == "External":
        src = m.get("external") or {}
        metric, v = src.get("metric") or {}, src.get(value) or {}
        return {"type": t, "external": _drop_none({
            "metricName": metric.get("name"), "metricSelector": metric.get("selector"),
            f"{pre}Value": v.get("value"), f"{pre}AverageValue": v.get("averageValue")})}
    return dict(m)


def _v2_metric(m: dict, *, status: bool) -> dict:
    """A v1 (annotation) MetricSpec or MetricStatus in v2's form."""
    t = m.get("type", "")
    pre, value = ("current", "current") if status else ("target", "target")

    def target(utilization: Any = None, average: Any = None, plain: Any = None) -> dict:
        out = _drop_none({"averageUtilization": utilization, "averageValue": average, "value": plain})
        if not status:
            out["type"] = "Utilization" if utilization is not None else "AverageValue" if average is not None \
                else "Value"
        return out
    if t in ("Resource", "ContainerResource"):
        key = "resource" if t == "Resource" else "containerResource"
        src = m.get(key) or {}
        return {"type": t, key: _drop_none({"name": src.get("name"), "container": src.get("container"),
                                            value: target(src.get(f"{pre}AverageUtilization"),
                                                          src.get(f"{pre}AverageValue"))})}
    if t == "Pods":
        src = m.get("pods") or {}
        return {"type": t, "pods": {"metric": _drop_none({"name": src.get("metricName"),
                                                          "selector": src.get("selector")}),
                                    value: target(average=src.get(f"{pre}AverageValue"))}}
    if t == "Object":
        src = m.get("object") or {}
        return {"type": t, "object": {"describedObject": src.get("target") or {},
                                      "metric": _drop_none({"name": src.get("metricName"),
                                                            "selector": src.get("selector")}),
                                      value: target(average=src.get("averageValue"),
                                                    plain=src.get(f"{pre}Value"))}}
    if t == "External":
        src = m.get("external") or {}
        return {"type": t, "external": {"metric": _drop_none({"name": src.get("metricName"),
                                                              "selector": src.get("metricSelector")}),
                                        value: target(average=src.get(f"{pre}AverageValue"),
                                                      plain=src.get(f"{pre}Value"))}}
    return dict(m)


def _is_cpu_utilization(m: dict, *, status: bool) -> bool:
    src = m.get("resource") or {}
    v = src.get("current" if status else "target") or {}
    return m.get("type") == "Resource" and src.get("name") == "cpu" and v.get("averageUtilization") is not None \
        and (status or v.get("type") == "Utilization")


def to_v1(obj: dict) -> dict:
    out = json.loads(json.dumps(obj))
    out["apiVersion"] = V1
    spec, status = out.get("spec") or {}, out.get("status")
    annotations = dict((out.get("metadata") or {}).get("annotations") or {})
    metrics = spec.pop("metrics", None) or []
    others = []
    for m in metrics:
        if _is_cpu_utilization(m, status=False) and "targetCPUUtilizationPercentage" not in spec:
            spec["targetCPUUtilizationPercentage"] = m["resource"]["target"]["averageUtilization"]
        else:
            others.append(_v1_metric(m, status=False))
    if others:
        annotations[METRICS_ANNOTATION] = json.dumps(others, separators=(",", ":"))
    behavior = spec.pop("behavior", None)
    if behavior:
        annotations[BEHAVIOR_ANNOTATION] = json.dumps(behavior, separators=(",", ":"))
    if isinstance(status, dict):
        current = status.pop("currentMetrics", None) or []
        rest = []
        for m in current:
            if _is_cpu_utilization(m, status=True) and "currentCPUUtilizationPercentage" not in status:
                status["currentCPUUtilizationPercentage"] = m["resource"]["current"]["averageUtilization"]
            elif m.get("type"):
                rest.append(_v1_metric(m, status=True))
        if rest:
            annotations[CURRENT_METRICS_ANNOTATION] = json.dumps(rest, separators=(",", ":"))
        conditions = status.pop("conditions", None)
        if conditions:
            annotations[CONDITIONS_ANNOTATION] = json.dumps(conditions, separators=(",", ":"))
    if annotations:
        out.setdefault("metadata", {})["annotations"] = annotations
    return out


def to_v2(obj: dict) -> dict:
    out = json.loads(json.dumps(obj))
    out["apiVersion"] = V2
    md = out.get("metadata") or {}
    annotations = dict(md.get("annotations") or {})
    spec = out.setdefault("spec", {}) if isinstance(out.get("spec", {}), dict) else {}

    def load(key: str) -> Any:
        try:
            return json.loads(annotations.pop(key, "null"))
        except ValueError:
            return None
    metrics = []
    cpu = spec.pop("targetCPUUtilizationPercentage", None)
    if cpu is not None:
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": cpu}}})
    metrics += [_v2_metric(m, status=False) for m in load(METRICS_ANNOTATION) or [] if isinstance(m, dict)]
    if metrics:
        spec["metrics"] = metrics
    behavior = load(BEHAVIOR_ANNOTATION)
    if isinstance(behavior, dict):
        spec["behavior"] = behavior
    status = out.get("status")
    current_metrics = load(CURRENT_METRICS_ANNOTATION)
    conditions = load(CONDITIONS_ANNOTATION)
    if isinstance(status, dict):
        current = []
        util = status.pop("currentCPUUtilizationPercentage", None)
        if util is not None:
            current.append({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": util}}})
        current += [_v2_metric(m, status=True) for m in current_metrics or [] if isinstance(m, dict)]
        if current:
            status["currentMetrics"] = current
        if isinstance(conditions, list):
            status["conditions"] = conditions
    for key in _ANNOTATIONS:
        annotations.pop(key, None)
    if "annotations" in md:
        if annotations:
            md["annotations"] = annotations
        else:
            del md["annotations"]
    return out


class HorizontalPodAutoscalerStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(status_subresource=True)

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        v2 = to_v2(obj) if obj.get("apiVersion") == V1 else obj
        return super().validate(rt, obj, old) + validate_hpa(v2)

    def convert(self, obj: dict, api_version: str) -> dict:
        if obj.get("apiVersion") == api_version:
            return obj
        return to_v1(obj) if api_version == V1 else to_v2(obj)
