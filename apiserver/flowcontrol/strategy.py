"""flowcontrol.apiserver.k8s.io/v1 FlowSchema and PriorityLevelConfiguration: Kubernetes
1.32's strategies (pkg/registry/flowcontrol/*/strategy.go), defaults
(pkg/apis/flowcontrol/v1/defaults.go) and validation (pkg/apis/flowcontrol/validation),
with their field paths and messages.

- Both kinds count spec changes in metadata.generation and take status only through
  /status (a create drops it).
- Defaults: a Limited level's nominalConcurrencyShares 30 and lendablePercent 0; a Queue
  limitResponse's queuing 64 queues, handSize 8, queueLengthLimit 50; an Exempt level's
  nominalConcurrencyShares and lendablePercent 0.
- Names are path segments (`system:x` allowed), as for RBAC objects.

Pure functions over private copies, as every strategy (see the package docstring).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from apiserver import validation as v
from apiserver.strategies.generic import Strategy

if TYPE_CHECKING:
    from apiserver.registry import ResourceType

Cause = dict[str, str]

DISTINGUISHERS = ["ByNamespace", "ByUser"]
SUBJECT_KINDS = ["Group", "ServiceAccount", "User"]
LEVEL_TYPES = ["Exempt", "Limited"]
LIMIT_RESPONSES = ["Queue", "Reject"]
MAX_PRECEDENCE = 10000
MAX_HASH_BITS = 60  # shufflesharding.MaxHashBits


def default_priority_level(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    limited, exempt = spec.get("limited"), spec.get("exempt")
    if isinstance(limited, dict):
        limited.setdefault("nominalConcurrencyShares", 30)
        limited.setdefault("lendablePercent", 0)
        lr = limited.setdefault("limitResponse", {"type": "Reject"})
        if isinstance(lr, dict) and lr.get("type") == "Queue":
            q = lr.setdefault("queuing", {})
            if isinstance(q, dict):
                q.setdefault("queues", 64)
                q.setdefault("handSize", 8)
                q.setdefault("queueLengthLimit", 50)
    if isinstance(exempt, dict) or spec.get("type") == "Exempt":
        if not isinstance(exempt, dict):
            exempt = spec["exempt"] = {}
        exempt.setdefault("nominalConcurrencyShares", 0)
        exempt.setdefault("lendablePercent", 0)


def _star_list(values: Any, f: str, what: str, required: str) -> list[Cause]:
    if not isinstance(values, list) or not values:
        return [v._required(f, required)]
    if "*" in values and len(values) > 1:
        return [v._invalid(f, values, f"if '*' is present, must not specify other {what}")]
    return []


def _subject(s: dict, f: str) -> list[Cause]:
    kind = s.get("kind")
    if kind not in SUBJECT_KINDS:
        return [v._not_supported(f + ".kind", kind, SUBJECT_KINDS)]
    member = {"User": "user", "Group": "group", "ServiceAccount": "serviceAccount"}[kind]
    out = [v._forbidden(f"{f}.{other}", f"{other} is forbidden when subject kind is not '{k}'")
           for k, other in (("User", "user"), ("Group", "group"), ("ServiceAccount", "serviceAccount"))
           if other != member and s.get(other) is not None]
    body = s.get(member)
    if not isinstance(body, dict):
        return out + [v._required(f"{f}.{member}", f"{member} is required when subject kind is '{kind}'")]
    if not body.get("name"):
        what = {"user": "username", "group": "group name", "serviceAccount": "serviceaccount name"}[member]
        out.append(v._required(f"{f}.{member}.name", f"{what} is required"))
    if member == "serviceAccount" and not body.get("namespace"):
        out.append(v._required(f"{f}.serviceAccount.namespace", "serviceaccount namespace is required"))
    return out


def _flow_schema(obj: dict) -> list[Cause]:
    spec, out = v._m(obj.get("spec")), []
    name = v._m(obj.get("metadata")).get("name")
    mp = spec.get("matchingPrecedence")
    if mp is not None and (not v._int(mp) or not 1 <= mp <= MAX_PRECEDENCE):
        out.append(v._invalid("spec.matchingPrecedence", mp, f"must be between 1 and {MAX_PRECEDENCE}, inclusive"))
    elif mp == 1 and name != "exempt":
        out.append(v._invalid("spec.matchingPrecedence", mp,
                              "only the schema named 'exempt' may have matchingPrecedence 1"))
    dm = spec.get("distinguisherMethod")
    if isinstance(dm, dict) and dm.get("type") not in DISTINGUISHERS:
        out.append(v._not_supported("spec.distinguisherMethod.type", dm.get("type"), DISTINGUISHERS))
    pl = v._m(spec.get("priorityLevelConfiguration")).get("name")
    if not pl:
        out.append(v._required("spec.priorityLevelConfiguration.name", "must reference a priority level"))
    elif (msg := v._path_segment_name(pl)) is not None:
        out.append(v._invalid("spec.priorityLevelConfiguration.name", pl, msg))
    for i, rule in v._each(spec.get("rules")):
        f = f"spec.rules[{i}]"
        subjects = rule.get("subjects")
        if not isinstance(subjects, list) or not subjects:
            out.append(v._required(f + ".subjects", "subjects must contain at least one value"))
        for j, s in v._each(subjects):
            out += _subject(s, f"{f}.subjects[{j}]")
        rrs, nrrs = rule.get("resourceRules"), rule.get("nonResourceRules")
        if not rrs and not nrrs:
            out.append(v._required(f, "at least one of resourceRules and nonResourceRules has to be non-empty"))
        for j, rr in v._each(rrs):
            g = f"{f}.resourceRules[{j}]"
            out += _star_list(rr.get("verbs"), g + ".verbs", "verbs", "verbs must contain at least one value")
            out += _star_list(rr.get("apiGroups"), g + ".apiGroups", "api groups",
                              "resource rules must supply at least one api group")
            out += _star_list(rr.get("resources"), g + ".resources", "resources",
                              "resource rules must supply at least one resource")
            namespaces = rr.get("namespaces")
            if not namespaces:
                if not rr.get("clusterScope"):
                    out.append(v._required(g + ".namespaces",
                                           "resource rules that are not cluster scoped must supply at least "
                                           "one namespace"))
            elif "*" in namespaces and len(namespaces) > 1:
                out.append(v._invalid(g + ".namespaces", namespaces,
                                      "if '*' is present, must not specify other namespaces"))
        for j, nr in v._each(nrrs):
            g = f"{f}.nonResourceRules[{j}]"
            out += _star_list(nr.get("verbs"), g + ".verbs", "verbs", "verbs must contain at least one value")
            out += _star_list(nr.get("nonResourceURLs"), g + ".nonResourceURLs", "non-resource urls",
                              "nonResourceURLs must contain at least one value")
    return out


def _queuing(q: dict, f: str) -> list[Cause]:
    out = []
    for key in ("queueLengthLimit", "queues", "handSize"):
        x = q.get(key)
        if not v._int(x) or x <= 0:
            out.append(v._invalid(f"{f}.{key}", x, "must be positive"))
    queues, hand = q.get("queues"), q.get("handSize")
    if v._int(queues) and v._int(hand) and queues > 0 and hand > 0:
        if hand > queues:
            out.append(v._invalid(f + ".handSize", hand, f"should not be greater than queues ({queues})"))
        elif math.ceil(math.log2(math.comb(queues, hand)) if queues > 1 else 0) > MAX_HASH_BITS:
            out.append(v._invalid(f + ".handSize", hand,
                                  f"required entropy bits of deckSize {queues} and handSize {hand} "
                                  f"should not be greater than {MAX_HASH_BITS}"))
    return out


def _priority_level(obj: dict) -> list[Cause]:
    spec, out = v._m(obj.get("spec")), []
    name = v._m(obj.get("metadata")).get("name")
    t = spec.get("type")
    if t not in LEVEL_TYPES:
        return [v._not_supported("spec.type", t, LEVEL_TYPES)]
    if (name == "exempt") != (t == "Exempt"):
        out.append(v._invalid("spec.type", t, "type must be 'Exempt' if and only if name is 'exempt'"))
    limited, exempt = spec.get("limited"), spec.get("exempt")
    if t == "Limited":
        if exempt is not None:
            out.append(v._forbidden("spec.exempt", "must be nil if the type is Limited"))
        if not isinstance(limited, dict):
            return out + [v._required("spec.limited", "must not be empty when type is Limited")]
        ncs = limited.get("nominalConcurrencyShares")
        if ncs is not None and (not v._int(ncs) or ncs < 0):
            out.append(v._invalid("spec.limited.nominalConcurrencyShares", ncs, "must be a non-negative integer"))
        lp = limited.get("lendablePercent")
        if lp is not None and (not v._int(lp) or not 0 <= lp <= 100):
            out.append(v._invalid("spec.limited.lendablePercent", lp, "must be between 0 and 100, inclusive"))
        blp = limited.get("borrowingLimitPercent")
        if blp is not None and (not v._int(blp) or blp < 0):
            out.append(v._invalid("spec.limited.borrowingLimitPercent", blp,
                                  "if specified, must be a non-negative integer"))
        lr = v._m(limited.get("limitResponse"))
        lt = lr.get("type")
        if lt not in LIMIT_RESPONSES:
            out.append(v._not_supported("spec.limited.limitResponse.type", lt, LIMIT_RESPONSES))
        elif lt == "Reject" and lr.get("queuing") is not None:
            out.append(v._forbidden("spec.limited.limitResponse.queuing",
                                    "must be nil if limited.limitResponse.type is not Limited"))
        elif lt == "Queue":
            if not isinstance(lr.get("queuing"), dict):
                out.append(v._required("spec.limited.limitResponse.queuing",
                                       "must not be empty if limited.limitResponse.type is Limited"))
            else:
                out += _queuing(lr["queuing"], "spec.limited.limitResponse.queuing")
    else:
        if limited is not None:
            out.append(v._forbidden("spec.limited", "must be nil if the type is not Limited"))
        ex = v._m(exempt)
        ncs, lp = ex.get("nominalConcurrencyShares"), ex.get("lendablePercent")
        if ncs is not None and (not v._int(ncs) or ncs < 0):
            out.append(v._invalid("spec.exempt.nominalConcurrencyShares", ncs, "must be a non-negative integer"))
        if lp is not None and (not v._int(lp) or not 0 <= lp <= 100):
            out.append(v._invalid("spec.exempt.lendablePercent", lp, "must be between 0 and 100, inclusive"))
    return out


class _FlowControlStrategy(Strategy):
    check = staticmethod(_flow_schema)

    def __init__(self) -> None:
        super().__init__(generation=True, status_subresource=True)

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        causes = v._metadata(v._m(obj.get("metadata")), "metadata", name_check=v._path_segment_name,
                             namespaced=False)
        causes += type(self).check(obj)
        if old is not None:
            causes += v.update_causes(old, obj, kind=rt.kind)
        return causes


class FlowSchemaStrategy(_FlowControlStrategy):
    check = staticmethod(_flow_schema)


class PriorityLevelConfigurationStrategy(_FlowControlStrategy):
    check = staticmethod(_priority_level)
