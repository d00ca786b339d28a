"""apps/v1 ControllerRevision and DaemonSet, and core/v1 ReplicationController: Kubernetes
1.32's strategies (pkg/registry/apps/{controllerrevision,daemonset}/strategy.go,
pkg/registry/core/replicationcontroller/strategy.go) and their validation
(pkg/apis/apps/validation, pkg/apis/core/validation), with its field paths and messages.

- A ControllerRevision must carry `data` ("data is mandatory"); `revision` is not
  negative; `data` never changes after creation ("field is immutable"), `revision` may.
- A DaemonSet's selector must be non-empty and select its template's labels, and is
  immutable; the template's restartPolicy must be Always and it may not set
  activeDeadlineSeconds; updateStrategy is RollingUpdate (exactly one of maxUnavailable
  and maxSurge non-zero, neither above 100%) or OnDelete. Its template generation lives
  in apps/v1 as the `deprecated.daemonset.template.generation` annotation, as
  Kubernetes' conversion puts it there: 1 at creation, +1 (with the generation) on every
  template change, and no client can set it on update.
- A ReplicationController's selector is a plain, non-empty label map that selects its
  template's labels; replicas and minReadySeconds are not negative; the template's
  restartPolicy must be Always.

Pure functions over private copies, as every strategy (see the package docstring).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from apiserver import validation as v
from apiserver.strategies.generic import Strategy

if TYPE_CHECKING:
    from apiserver.registry import ResourceType

Cause = dict[str, str]

TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"
_DS_STRATEGIES = ["OnDelete", "RollingUpdate"]


def _spec(obj: dict) -> dict:
    return v._m(obj.get("spec"))


def _semantic(value: Any) -> Any:
    """Empty maps, lists and nulls dropped, as apiequality.Semantic ignores them."""
    if isinstance(value, dict):
        out = {k: _semantic(x) for k, x in value.items()}
        return {k: x for k, x in out.items() if x not in (None, {}, [])}
    if isinstance(value, list):
        return [_semantic(x) for x in value]
    return value


def _template_causes(template: dict, p: str, owner: str) -> list[Cause]:
    """ValidatePodTemplateSpec plus what every long-running workload adds."""
    out = v._metadata(v._m(template.get("metadata")), f"{p}.metadata", name_check=None, namespaced=None)
    tspec = v._m(template.get("spec"))
    out += v._pod_spec(tspec, f"{p}.spec")
    rp = tspec.get("restartPolicy")
    if rp is not None and rp != "Always" and rp in v._RESTART_POLICIES:
        out.append(v._not_supported(f"{p}.spec.restartPolicy", rp, ["Always"]))
    if tspec.get("activeDeadlineSeconds") is not None:
        if owner == "DaemonSet":
            out.append(v._invalid(f"{p}.spec.activeDeadlineSeconds", tspec["activeDeadlineSeconds"],
                                  "activeDeadlineSeconds in DaemonSet is not Supported"))
        else:
            out.append(v._forbidden(f"{p}.spec.activeDeadlineSeconds",
                                    f"activeDeadlineSeconds in {owner} is not Supported"))
    return out


# --- ControllerRevision ------------------------------------------------------------------

def validate_controller_revision(cr: dict) -> list[Cause]:
    out = []
    if cr.get("data") is None:
        out.append(v._required("data", "data is mandatory"))
    out += v._minimum(cr, "revision", "revision")
    return out


class ControllerRevisionStrategy(Strategy):
    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        causes = super().validate(rt, obj, old) + validate_controller_revision(obj)
        if old is not None and old.get("data") != obj.get("data"):
            causes.append(v._invalid("data", obj.get("data"), "field is immutable"))
        return causes


# --- DaemonSet ---------------------------------------------------------------------------

def _int_or_percent(value: Any, f: str) -> tuple[list[Cause], int]:
    """ValidatePositiveIntOrPercent and IsNotMoreThan100Percent -> (causes, its value)."""
    if value is None:
        return [], 0
    if v._int(value):
        return ([v._invalid(f, value, "must be greater than or equal to 0")] if value < 0 else []), value
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]+%", value):
            return [v._invalid(f, value, "a valid percent string must be a numeric string followed "
                               "by an ending '%' (regex used for validation is '[0-9]+%')")], 0
        pct = int(value[:-1])
        return ([v._invalid(f, value, "must not be greater than 100%")] if pct > 100 else []), pct
    return [], 0


def _update_strategy(strategy: dict, p: str) -> list[Cause]:
    stype = strategy.get("type")
    if stype == "OnDelete":
        return []
    if stype != "RollingUpdate":
        return [v._not_supported(p, strategy, _DS_STRATEGIES)]
    ru = strategy.get("rollingUpdate")
    if not isinstance(ru, dict):
        return [v._required(f"{p}.rollingUpdate")]
    out, unavailable = _int_or_percent(ru.get("maxUnavailable"), f"{p}.rollingUpdate.maxUnavailable")
    surge_causes, surge = _int_or_percent(ru.get("maxSurge"), f"{p}.rollingUpdate.maxSurge")
    out += surge_causes
    if unavailable and surge:
        out.append(v._invalid(f"{p}.rollingUpdate.maxSurge", ru.get("maxSurge"),
                              "may not be set when maxUnavailable is non-zero"))
    elif not unavailable and not surge:
        out.append(v._required(f"{p}.rollingUpdate.maxUnavailable", "cannot be 0 when maxSurge is 0"))
    return out


def validate_daemonset(ds: dict) -> list[Cause]:
    spec = _spec(ds)
    template = v._m(spec.get("template"))
    labels = v._m(v._m(template.get("metadata")).get("labels"))
    out: list[Cause] = []
    sel = spec.get("selector")
    if isinstance(sel, dict):
        sel_causes = v._selector(sel, "spec.selector")
        if not sel_causes and not v._selector_matches(sel, labels):
            out.append(v._invalid("spec.template.metadata.labels", labels,
                                  "`selector` does not match template `labels`"))
        if not sel.get("matchLabels") and not sel.get("matchExpressions"):
            out.append(v._invalid("spec.selector", sel, "empty selector is invalid for daemonset"))
        out += sel_causes
    out += _template_causes(template, "spec.template", "DaemonSet")
    out += v._minimum(spec, "minReadySeconds", "spec.minReadySeconds")
    out += v._minimum(spec, "revisionHistoryLimit", "spec.revisionHistoryLimit")
    out += _update_strategy(v._m(spec.get("updateStrategy")), "spec.updateStrategy")
    status = v._m(ds.get("status"))
    for key in ("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled",
                "numberReady", "observedGeneration", "updatedNumberScheduled", "numberAvailable",
                "numberUnavailable", "collisionCount"):
        out += v._minimum(status, key, f"status.{key}")
    return out


def _template_generation(ds: dict) -> int:
    try:
        return int(v._m(v._m(ds.get("metadata")).get("annotations")).get(TEMPLATE_GENERATION, 0))
    except (TypeError, ValueError):
        return 0


class DaemonSetStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(generation=True, status_subresource=True)

    def prepare_for_create(self, obj: dict) -> None:
        super().prepare_for_create(obj)
        md = obj["metadata"]
        if _template_generation(obj) < 1:
            md["annotations"] = {**(md.get("annotations") or {}), TEMPLATE_GENERATION: "1"}

    def prepare_for_update(self, new: dict, old: dict) -> None:
        super().prepare_for_update(new, old)
        generation = _template_generation(old) or 1
        if _semantic(_spec(old).get("template")) != _semantic(_spec(new).get("template")):
            generation += 1
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        md = new["metadata"]
        md["annotations"] = {**(md.get("annotations") or {}), TEMPLATE_GENERATION: str(generation)}

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        causes = super().validate(rt, obj, old) + validate_daemonset(obj)
        if old is not None:
            osel, nsel = _spec(old).get("selector"), _spec(obj).get("selector")
            if osel != nsel:
                causes.append(v._invalid("spec.selector", nsel, "field is immutable"))
        return causes


# --- ReplicationController -------------------------------------------------------------

def validate_replicationcontroller(rc: dict) -> list[Cause]:
    spec = _spec(rc)
    out = v._minimum(spec, "minReadySeconds", "spec.minReadySeconds")
    sel = v._m(spec.get("selector"))
    if not sel:
        out.append(v._required("spec.selector"))
    out += v._labels(sel, "spec.selector")
    out += v._minimum(spec, "replicas", "spec.replicas")
    template = spec.get("template")
    if not isinstance(template, dict):
        out.append(v._required("spec.template"))
        return out
    labels = v._m(v._m(template.get("metadata")).get("labels"))
    if sel and any(labels.get(k) != x for k, x in sel.items()):
        out.append(v._invalid("spec.template.metadata.labels", labels,
                              "`selector` does not match template `labels`"))
    out += _template_causes(template, "spec.template", "ReplicationController")
    status = v._m(rc.get("status"))
    for key in ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas",
                "observedGeneration"):
        out += v._minimum(status, key, f"status.{key}")
    return out


class ReplicationControllerStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(generation=True, status_subresource=True)

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        return super().validate(rt, obj, old) + validate_replicationcontroller(obj)
