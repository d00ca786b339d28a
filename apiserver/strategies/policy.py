"""policy/v1 PodDisruptionBudget: Kubernetes 1.32's strategy
(pkg/registry/policy/poddisruptionbudget/strategy.go) and validation
(pkg/apis/policy/validation: ValidatePodDisruptionBudgetSpec and its status), with its
field paths and messages.

- `spec.minAvailable` and `spec.maxUnavailable` are each an integer >= 0 or a percent
  string ("50%", at most 100%), and not both set.
- `spec.unhealthyPodEvictionPolicy`, when set, is IfHealthyBudget or AlwaysAllow (unset
  means IfHealthyBudget, as the eviction subresource reads it).
- The spec may change after creation (since Kubernetes 1.15); a spec change bumps the
  generation, and the status (written only through /status) starts empty at creation.
- The status counters are non-negative (disruptionsAllowed too).

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

UNHEALTHY_POLICIES = ["IfHealthyBudget", "AlwaysAllow"]
_PERCENT = re.compile(r"^[0-9]+%$")
_PERCENT_MESSAGE = ("a valid percent string must be a numeric string followed by an ending '%' "
                    "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")


def _int_or_percent(value: Any, f: str) -> list[Cause]:
    """ValidatePositiveIntOrPercent, then IsNotMoreThan100Percent."""
    if isinstance(value, bool):
        return []  # the schema reports the type
    if isinstance(value, int):
        return [v._invalid(f, value, "must be greater than or equal to 0")] if value < 0 else []
    if isinstance(value, str):
        if not _PERCENT.match(value):
            return [v._invalid(f, value, _PERCENT_MESSAGE)]
        if int(value[:-1]) > 100:
            return [v._invalid(f, value, "must not be greater than 100%")]
    return []


def validate_pdb(pdb: dict) -> list[Cause]:
    spec, out = v._m(pdb.get("spec")), []
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        out.append(v._invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set"))
    for key in ("minAvailable", "maxUnavailable"):
        if spec.get(key) is not None:
            out += _int_or_percent(spec[key], f"spec.{key}")
    if isinstance(spec.get("selector"), dict):
        out += v._selector(spec["selector"], "spec.selector")
    policy = spec.get("unhealthyPodEvictionPolicy")
    if policy is not None and policy not in UNHEALTHY_POLICIES:
        out.append(v._not_supported("spec.unhealthyPodEvictionPolicy", policy, UNHEALTHY_POLICIES))
    status = v._m(pdb.get("status"))
    for key in ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"):
        out += v._minimum(status, key, f"status.{key}")
    return out


class PodDisruptionBudgetStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(generation=True, status_subresource=True)

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        return super().validate(rt, obj, old) + validate_pdb(obj)
