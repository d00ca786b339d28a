"""The FlowSchemas and PriorityLevelConfigurations kube-apiserver 1.32 keeps at start-up
(k8s.io/apiserver/pkg/apis/flowcontrol/bootstrap/default.go), and `ensure`, which writes
them as its APF config-producer does.

- Mandatory objects (`exempt` and `catch-all`, each a level and a schema) are created if
  missing and their spec put back if changed.
- Suggested objects are created if missing, and their spec put back only while the object
  carries `apf.kubernetes.io/autoupdate-spec: "true"` (which the server sets on what it
  creates); an admin who sets it to "false" keeps their edits.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from machinery import errors

log = logging.getLogger("minik8s.apiserver.flowcontrol")

GROUP_VERSION = "flowcontrol.apiserver.k8s.io/v1"
AUTOUPDATE = "apf.kubernetes.io/autoupdate-spec"

_ALL_RESOURCES = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": True,
                   "namespaces": ["*"]}]
_ALL_NON_RESOURCES = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]


def _group(name: str) -> dict:
    return {"kind": "Group", "group": {"name": name}}


def _user(name: str) -> dict:
    return {"kind": "User", "user": {"name": name}}


def _kube_system_sa() -> dict:
    return {"kind": "ServiceAccount", "serviceAccount": {"namespace": "kube-system", "name": "*"}}


def _rule(verbs: list[str], groups: list[str], resources: list[str], namespaces: list[str],
          cluster: bool = False) -> dict:
    out: dict[str, Any] = {"verbs": verbs, "apiGroups": groups, "resources": resources, "namespaces": namespaces}
    if cluster:
        out["clusterScope"] = True
    return out


def _limited(shares: int, lendable: int, queues: int | None = None, hand: int = 6, length: int = 50) -> dict:
    response: dict[str, Any] = {"type": "Reject"}
    if queues is not None:
        response = {"type": "Queue", "queuing": {"queues": queues, "handSize": hand, "queueLengthLimit": length}}
    return {"type": "Limited", "limited": {"nominalConcurrencyShares": shares, "lendablePercent": lendable,
                                           "limitResponse": response}}


def _level(name: str, spec: dict) -> dict:
    return {"apiVersion": GROUP_VERSION, "kind": "PriorityLevelConfiguration",
            "metadata": {"name": name}, "spec": spec}


def _schema(name: str, level: str, precedence: int, distinguisher: str | None, *rules: dict) -> dict:
    spec: dict[str, Any] = {"priorityLevelConfiguration": {"name": level}, "matchingPrecedence": precedence,
                            "rules": list(rules)}
    if distinguisher:
        spec["distinguisherMethod"] = {"type": distinguisher}
    return {"apiVersion": GROUP_VERSION, "kind": "FlowSchema", "metadata": {"name": name}, "spec": spec}


def _everything(*subjects: dict) -> dict:
    return {"subjects": list(subjects), "resourceRules": _ALL_RESOURCES, "nonResourceRules": _ALL_NON_RESOURCES}


MANDATORY_LEVELS = [
    _level("exempt", {"type": "Exempt", "exempt": {"nominalConcurrencyShares": 0, "lendablePercent": 0}}),
    _level("catch-all", _limited(5, 0)),
]
MANDATORY_SCHEMAS = [
    _schema("exempt", "exempt", 1, None, _everything(_group("system:masters"))),
    _schema("catch-all", "catch-all", 10000, "ByUser",
            _everything(_group("system:unauthenticated"), _group("system:authenticated"))),
]
SUGGESTED_LEVELS = [
    _level("system", _limited(30, 33, 64)),
    _level("node-high", _limited(40, 25, 64)),
    _level("leader-election", _limited(10, 0, 16, 4)),
    _level("workload-high", _limited(40, 50, 128)),
    _level("workload-low", _limited(100, 90, 128)),
    _level("global-default", _limited(20, 50, 128)),
]
_LEADER_RULES = [_rule(["get", "create", "update"], ["coordination.k8s.io"], ["leases"], ["*"])]
SUGGESTED_SCHEMAS = [
    _schema("probes", "exempt", 2, None,
            {"subjects": [_group("system:unauthenticated"), _group("system:authenticated")],
             "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/readyz", "/livez"]}]}),
    _schema("system-leader-election", "leader-election", 100, "ByUser",
            {"subjects": [_user("system:kube-controller-manager"), _user("system:kube-scheduler")],
             "resourceRules": _LEADER_RULES}),
    _schema("endpoint-controller", "workload-high", 150, "ByUser",
            {"subjects": [_user("system:kube-controller-manager"),
                          {"kind": "ServiceAccount",
                           "serviceAccount": {"namespace": "kube-system", "name": "endpoint-controller"}}],
             "resourceRules": [_rule(["get", "create", "update"], [""], ["endpoints"], ["*"])]}),
    _schema("workload-leader-election", "leader-election", 200, "ByUser",
            {"subjects": [_kube_system_sa()], "resourceRules": _LEADER_RULES}),
    _schema("system-node-high", "node-high", 400, "ByUser",
            {"subjects": [_group("system:nodes")],
             "resourceRules": [_rule(["*"], [""], ["nodes", "nodes/status"], [], cluster=True),
                               _rule(["*"], ["coordination.k8s.io"], ["leases"], ["*"])]}),
    _schema("system-nodes", "system", 500, "ByUser", _everything(_group("system:nodes"))),
    _schema("kube-controller-manager", "workload-high", 800, "ByNamespace",
            _everything(_user("system:kube-controller-manager"))),
    _schema("kube-scheduler", "workload-high", 800, "ByNamespace", _everything(_user("system:kube-scheduler"))),
    _schema("kube-system-service-accounts", "workload-high", 900, "ByNamespace", _everything(_kube_system_sa())),
    _schema("service-accounts", "workload-low", 9000, "ByUser", _everything(_group("system:serviceaccounts"))),
    _schema("global-default", "global-default", 9900, "ByUser",
            _everything(_group("system:unauthenticated"), _group("system:authenticated"))),
]


async def ensure(resources: Any) -> int:
    """Create what is missing and put back what drifted (see the module docstring);
    returns how many objects were written. `resources` is apiserver.resources.Resources."""
    from apiserver.registry import by_plural  # the registry imports the strategies
    from apiserver.defaults import apply_defaults
    written = 0

    async def one(plural: str, expected: dict, mandatory: bool) -> None:
        nonlocal written
        rt = by_plural(plural, "flowcontrol.apiserver.k8s.io")
        name = expected["metadata"]["name"]
        entry = resources.cache.get(rt, rt.key("", name))
        want = orjson.loads(orjson.dumps({**expected, "metadata": {"name": name,
                                                                    "annotations": {AUTOUPDATE: "true"}}}))
        try:
            if entry is None:
                await resources.create(rt, "", want)
                written += 1
                return
            current = entry.obj
            annotations = (current.get("metadata") or {}).get("annotations") or {}
            if not mandatory and annotations.get(AUTOUPDATE) != "true":
                return
            defaulted = orjson.loads(orjson.dumps(want))
            apply_defaults(defaulted, defaulted["kind"])
            if current.get("spec") == defaulted["spec"] and annotations.get(AUTOUPDATE) == "true":
                return
            md = dict(current["metadata"])
            md["annotations"] = {**annotations, AUTOUPDATE: "true"}
            await resources.update(rt, "", name, {**current, "metadata": md, "spec": want["spec"]})
            written += 1
        except (errors.AlreadyExists, errors.Conflict, errors.NotFound):
            pass  # another API server wrote it first

    await asyncio.gather(*(one("prioritylevelconfigurations", o, m)
                           for group, m in ((MANDATORY_LEVELS, True), (SUGGESTED_LEVELS, False)) for o in group))
    await asyncio.gather(*(one("flowschemas", o, m)
                           for group, m in ((MANDATORY_SCHEMAS, True), (SUGGESTED_SCHEMAS, False)) for o in group))
    if written:
        log.info("flowcontrol: wrote %d default FlowSchemas and PriorityLevelConfigurations", written)
    return written


STATUS_MANAGER = "api-priority-and-fairness-config-consumer-v1"


def dangling_condition(fs: dict, levels: set[str]) -> dict:
    """The `Dangling` condition kube-apiserver's APF controller keeps on a FlowSchema
    (without lastTransitionTime, which the writer stamps)."""
    name = ((fs.get("spec") or {}).get("priorityLevelConfiguration") or {}).get("name", "")
    if name in levels:
        return {"type": "Dangling", "status": "False", "reason": "Found",
                "message": f"This FlowSchema references the PriorityLevelConfiguration object named "
                           f"{name!r} and it exists"}
    return {"type": "Dangling", "status": "True", "reason": "NotFound",
            "message": f"This FlowSchema references the PriorityLevelConfiguration object named "
                       f"{name!r} but there is no such object"}


async def update_status(resources: Any) -> int:
    """Set every FlowSchema's Dangling condition that is not what it should be; returns
    how many were written."""
    from apiserver.registry import by_plural
    from apiserver.resources import WriteOptions
    from apiserver.timestamps import now
    fs_rt = by_plural("flowschemas", "flowcontrol.apiserver.k8s.io")
    pl_rt = by_plural("prioritylevelconfigurations", "flowcontrol.apiserver.k8s.io")
    levels = {e.obj["metadata"]["name"] for e in resources.cache.entries(pl_rt)}
    written = 0
    for entry in resources.cache.entries(fs_rt):
        fs = entry.obj
        want = dangling_condition(fs, levels)
        conditions = [c for c in (fs.get("status") or {}).get("conditions") or () if isinstance(c, dict)]
        have = next((c for c in conditions if c.get("type") == "Dangling"), None)
        if have is not None and all(have.get(k) == v for k, v in want.items()):
            continue
        want["lastTransitionTime"] = now()
        body = {**fs, "status": {**(fs.get("status") or {}),
                                 "conditions": [*(c for c in conditions if c.get("type") != "Dangling"), want]}}
        try:
            await resources.update(fs_rt, "", fs["metadata"]["name"], body,
                                   WriteOptions(field_manager=STATUS_MANAGER), subresource="status")
            written += 1
        except (errors.Conflict, errors.NotFound):
            pass  # changed meanwhile: the next pass sees it
    return written
