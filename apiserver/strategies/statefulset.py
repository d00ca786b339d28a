"""apps/v1 StatefulSet: Kubernetes 1.32's strategy (pkg/registry/apps/statefulset/strategy.go)
and validation (pkg/apis/apps/validation: ValidateStatefulSetSpec, ValidateStatefulSetUpdate,
ValidateStatefulSetStatus), with its field paths and messages.

- The template is a valid pod spec once the claim templates are among its volumes (its
  containers mount claims by the template's name). The selector must be non-empty and
  select the template's labels; the template's restartPolicy must be Always and it may
  not set activeDeadlineSeconds.
- podManagementPolicy is OrderedReady or Parallel; updateStrategy is RollingUpdate
  (partition >= 0, maxUnavailable a positive integer or a percent up to 100%) or OnDelete
  (no rollingUpdate); the PVC retention policy's whenDeleted and whenScaled are Retain or
  Delete; replicas, minReadySeconds and ordinals.start are not negative; each
  volumeClaimTemplate has a name (a DNS subdomain, unique) and resources.requests.storage.
- An update may change replicas, ordinals, template, updateStrategy,
  revisionHistoryLimit, persistentVolumeClaimRetentionPolicy and minReadySeconds only;
  anything else (the selector, serviceName, podManagementPolicy, volumeClaimTemplates)
  is refused with Kubernetes' message.
- The status counters are not negative, and readyReplicas, availableReplicas,
  currentReplicas and updatedReplicas are at most replicas.

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

_POLICIES = ["OrderedReady", "Parallel"]
_RETENTION = ["Retain", "Delete"]
_PERCENT = re.compile(r"^[0-9]+%$")
_PERCENT_MESSAGE = ("a valid percent string must be a numeric string followed by an ending '%' "
                    "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")
UPDATE_FORBIDDEN = ("updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
                    "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and "
                    "'minReadySeconds' are forbidden")
_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "revisionHistoryLimit",
            "persistentVolumeClaimRetentionPolicy", "minReadySeconds")


def _semantic(value: Any) -> Any:
    """Empty maps, lists and nulls dropped, as apiequality.Semantic ignores them."""
    if isinstance(value, dict):
        out = {k: _semantic(x) for k, x in value.items()}
        return {k: x for k, x in out.items() if x not in (None, {}, [])}
    if isinstance(value, list):
        return [_semantic(x) for x in value]
    return value


def _max_unavailable(value: Any, f: str) -> list[Cause]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [v._invalid(f, value, "must be greater than 0")] if value <= 0 else []
    if isinstance(value, str):
        if not _PERCENT.match(value):
            return [v._invalid(f, value, _PERCENT_MESSAGE)]
        if int(value[:-1]) > 100:
            return [v._invalid(f, value, "must not be greater than 100%")]
        if int(value[:-1]) == 0:
            return [v._invalid(f, value, "must be greater than 0")]
    return []


def _update_strategy(spec: dict) -> list[Cause]:
    strategy, out = v._m(spec.get("updateStrategy")), []
    kind = strategy.get("type")
    rolling = strategy.get("rollingUpdate")
    if not kind:
        out.append(v._required("spec.updateStrategy", ""))
    elif kind == "OnDelete":
        if rolling is not None:
            out.append(v._invalid("spec.updateStrategy.rollingUpdate", rolling,
                                  "only allowed for updateStrategy 'RollingUpdate'"))
    elif kind != "RollingUpdate":
        out.append(v._invalid("spec.updateStrategy", kind,
                              "must be 'RollingUpdate' or 'OnDelete'"))
    if kind == "RollingUpdate" and isinstance(rolling, dict):
        p = "spec.updateStrategy.rollingUpdate"
        out += v._minimum(rolling, "partition", f"{p}.partition")
        if rolling.get("maxUnavailable") is not None:
            out += _max_unavailable(rolling["maxUnavailable"], f"{p}.maxUnavailable")
    return out


def _claim_templates(spec: dict) -> list[Cause]:
    out, seen = [], set()
    for i, t in v._each(spec.get("volumeClaimTemplates")):
        p = f"spec.volumeClaimTemplates[{i}]"
        name = v._m(t.get("metadata")).get("name")
        if not name:
            out.append(v._required(f"{p}.metadata.name", "name or generateName is required"))
        elif isinstance(name, str):
            if msg := v._dns1123_subdomain(name):
                out.append(v._invalid(f"{p}.metadata.name", name, msg))
            if name in seen:
                out.append(v._duplicate(f"{p}.metadata.name", name))
            seen.add(name)
        tspec = v._m(t.get("spec"))
        if not tspec.get("accessModes"):
            out.append(v._required(f"{p}.spec.accessModes", "at least 1 access mode is required"))
        if not v._m(v._m(tspec.get("resources")).get("requests")).get("storage"):
            out.append(v._required(f"{p}.spec.resources[storage]", ""))
    return out


def validate_statefulset(sts: dict) -> list[Cause]:
    spec, out = v._m(sts.get("spec")), []
    policy = spec.get("podManagementPolicy")
    if not policy:
        out.append(v._required("spec.podManagementPolicy", ""))
    elif policy not in _POLICIES:
        out.append(v._invalid("spec.podManagementPolicy", policy, "must be 'OrderedReady' or 'Parallel'"))
    out += _update_strategy(spec)
    retention = spec.get("persistentVolumeClaimRetentionPolicy")
    if isinstance(retention, dict):
        for key in ("whenDeleted", "whenScaled"):
            if retention.get(key) not in _RETENTION:
                out.append(v._not_supported(f"spec.persistentVolumeClaimRetentionPolicy.{key}",
                                            retention.get(key), _RETENTION))
    out += v._minimum(spec, "replicas", "spec.replicas")
    out += v._minimum(spec, "minReadySeconds", "spec.minReadySeconds")
    out += v._minimum(v._m(spec.get("ordinals")), "start", "spec.ordinals.start")
    template = v._m(spec.get("template"))
    tmd = v._m(template.get("metadata"))
    sel = spec.get("selector")
    if not isinstance(sel, dict):
        out.append(v._required("spec.selector", ""))
    else:
        sel_causes = v._selector(sel, "spec.selector")
        if not sel.get("matchLabels") and not sel.get("matchExpressions"):
            out.append(v._invalid("spec.selector", sel, "empty selector is invalid for statefulset"))
        elif not sel_causes and not v._selector_matches(sel, v._m(tmd.get("labels"))):
            out.append(v._invalid("spec.template.metadata.labels", tmd.get("labels") or {},
                                  "`selector` does not match template `labels`"))
        out += sel_causes
    out += v._metadata(tmd, "spec.template.metadata", name_check=None, namespaced=None)
    tspec = v._m(template.get("spec"))
    # Containers mount the claims by their template's name, which the controller turns
    # into a pod volume: the template is checked with those volumes present.
    declared = {x.get("name") for _, x in v._each(tspec.get("volumes"))}
    claims = [{"name": n, "persistentVolumeClaim": {"claimName": n}}
              for _, t in v._each(spec.get("volumeClaimTemplates"))
              if isinstance(n := v._m(t.get("metadata")).get("name"), str) and n not in declared]
    if claims:
        tspec = {**tspec, "volumes": [*(tspec.get("volumes") or []), *claims]}
    out += v._pod_spec(tspec, "spec.template.spec")
    rp = tspec.get("restartPolicy")
    if rp is not None and rp != "Always" and rp in v._RESTART_POLICIES:
        out.append(v._not_supported("spec.template.spec.restartPolicy", rp, ["Always"]))
    if tspec.get("activeDeadlineSeconds") is not None:
        out.append(v._forbidden("spec.template.spec.activeDeadlineSeconds",
                                "activeDeadlineSeconds in StatefulSet is not Supported"))
    out += _claim_templates(spec)
    return out


def validate_statefulset_status(sts: dict) -> list[Cause]:
    status, out = v._m(sts.get("status")), []
    counters = ("replicas", "readyReplicas", "currentReplicas", "updatedReplicas", "availableReplicas",
                "observedGeneration", "collisionCount")
    for key in counters:
        out += v._minimum(status, key, f"status.{key}")
    replicas = status.get("replicas")
    if v._int(replicas):
        for key in ("readyReplicas", "currentReplicas", "updatedReplicas", "availableReplicas"):
            got = status.get(key)
            if v._int(got) and got > replicas:
                out.append(v._invalid(f"status.{key}", got, "cannot be greater than status.replicas"))
    return out


def validate_statefulset_update(old: dict, new: dict) -> list[Cause]:
    o, n = v._m(old.get("spec")), v._m(new.get("spec"))
    rest_old = {k: x for k, x in o.items() if k not in _MUTABLE}
    rest_new = {k: x for k, x in n.items() if k not in _MUTABLE}
    if _semantic(rest_old) != _semantic(rest_new):
        return [v._forbidden("spec", UPDATE_FORBIDDEN)]
    return []


class StatefulSetStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(generation=True, status_subresource=True)

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        causes = super().validate(rt, obj, old) + validate_statefulset(obj) + validate_statefulset_status(obj)
        if old is not None:
            causes += validate_statefulset_update(old, obj)
        return causes
