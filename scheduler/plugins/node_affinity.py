"""NodeAffinity: spec.nodeSelector and requiredDuringScheduling node affinity must both
match the node (filter); preferredDuringScheduling terms add their weights (score).

Matching follows component-helpers/scheduling/corev1/nodeaffinity: terms are ORed, the
expressions and fields within a term ANDed; an empty term, an empty term list or a term
that does not parse matches nothing. `In`/`NotIn`/`Exists`/`DoesNotExist` on labels
(`NotIn` and `DoesNotExist` match a node without the key); `Gt`/`Lt` compare the label
and the single value as integers; matchFields supports `metadata.name` with `In`/`NotIn`.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping

from scheduler.framework import (NODE, SKIP, ActionType, ClusterEvent, CycleState, Status,
                                 default_normalize_score, plugin_args)
from scheduler.types import NodeInfo, PodInfo

NAME = "NodeAffinity"
ERR_REASON_POD = "node(s) didn't match Pod's node affinity/selector"
_INT = re.compile(r"[+-]?[0-9]+")

Predicate = Callable[[Mapping[str, str], str], bool]  # (labels, node name) -> bool


def _requirement(expr: Mapping, fields: bool) -> Predicate:
    key, op = expr.get("key") or "", expr.get("operator")
    values = tuple(expr.get("values") or ())
    if fields:
        if key != "metadata.name" or op not in ("In", "NotIn") or len(values) != 1:
            raise ValueError(f"unsupported field selector requirement: {expr}")
        want = values[0]
        return ((lambda labels, name: name == want) if op == "In"
                else (lambda labels, name: name != want))
    if op == "In":
        if not values:
            raise ValueError("values must be non-empty for In")
        vs = frozenset(values)
        return lambda labels, name: key in labels and labels[key] in vs
    if op == "NotIn":
        if not values:
            raise ValueError("values must be non-empty for NotIn")
        vs = frozenset(values)
        return lambda labels, name: key not in labels or labels[key] not in vs
    if op in ("Exists", "DoesNotExist"):
        if values:
            raise ValueError(f"values must be empty for {op}")
        return ((lambda labels, name: key in labels) if op == "Exists"
                else (lambda labels, name: key not in labels))
    if op in ("Gt", "Lt"):
        if len(values) != 1 or not _INT.fullmatch(values[0]):
            raise ValueError(f"{op} needs one integer value")
        bound = int(values[0])

        def compare(labels: Mapping[str, str], name: str) -> bool:
            v = labels.get(key)
            if v is None or not _INT.fullmatch(v):
                return False
            return int(v) > bound if op == "Gt" else int(v) < bound
        return compare
    raise ValueError(f"{op!r} is not a valid node selector operator")


def compile_term(term: Mapping | None) -> Predicate | None:
    """One NodeSelectorTerm as a predicate; None for a term that matches nothing."""
    term = term or {}
    try:
        reqs = ([_requirement(e, False) for e in term.get("matchExpressions") or ()]
                + [_requirement(e, True) for e in term.get("matchFields") or ()])
    except ValueError:
        return None
    if not reqs:
        return None
    if len(reqs) == 1:
        return reqs[0]
    return lambda labels, name: all(r(labels, name) for r in reqs)


class RequiredAffinity:
    """nodeSelector AND (any required term). `sig` identifies it across pods (memo key)."""

    __slots__ = ("selector", "terms", "sig")

    def __init__(self, selector: Mapping[str, str], terms: list[Predicate | None] | None, sig: str):
        self.selector = tuple(selector.items())
        self.terms = None if terms is None else [t for t in terms if t is not None]
        self.sig = sig

    def matches(self, node: NodeInfo) -> bool:
        labels = node.labels
        for k, v in self.selector:
            if labels.get(k) != v:
                return False
        if self.terms is None:
            return True
        return any(t(labels, node.name) for t in self.terms)


def _node_affinity(pod: PodInfo) -> Mapping:
    return ((pod.pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}


def required_affinity(pod: PodInfo) -> RequiredAffinity | None:
    """The pod's required node constraints (GetRequiredNodeAffinity); None when it has none."""
    cached = pod.cache.get(NAME, False)
    if cached is not False:
        return cached
    selector = (pod.pod.get("spec") or {}).get("nodeSelector") or {}
    required = _node_affinity(pod).get("requiredDuringSchedulingIgnoredDuringExecution")
    result = None
    if selector or required is not None:
        terms = None if required is None else [
            compile_term(t) for t in required.get("nodeSelectorTerms") or ()]
        sig = json.dumps([selector, required], sort_keys=True)
        result = RequiredAffinity(selector, terms, sig)
    pod.cache[NAME] = result
    return result


def preferred_terms(pod: PodInfo) -> tuple[list[tuple[int, Predicate]], str] | None:
    key = NAME + "/preferred"
    cached = pod.cache.get(key, False)
    if cached is not False:
        return cached
    raw = _node_affinity(pod).get("preferredDuringSchedulingIgnoredDuringExecution") or []
    terms = []
    for t in raw:
        weight = t.get("weight") or 0
        pred = compile_term(t.get("preference"))
        if weight and pred is not None:
            terms.append((weight, pred))
    result = (terms, json.dumps(raw, sort_keys=True)) if terms else None
    pod.cache[key] = result
    return result


class NodeAffinity:
    NAME = NAME
    EVENTS = (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_LABEL),)

    def pre_filter(self, state: CycleState, pod: PodInfo) -> Status | None:
        return None if required_affinity(pod) is not None else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        req = required_affinity(pod)
        if req is None or req.matches(node):
            return None
        return Status.unresolvable(ERR_REASON_POD)

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        req = required_affinity(pod)
        if req is None:
            return nodes
        snap = state.snapshot
        ok = snap.memo((NAME, req.sig), lambda: frozenset(
            n.index for n in snap.nodes if req.matches(n)))
        return [j for j in nodes if j in ok]

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> Status | None:
        return None if preferred_terms(pod) is not None else SKIP

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        pref = preferred_terms(pod)
        if pref is None:
            return 0
        return sum(w for w, pred in pref[0] if pred(node.labels, node.name))

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[int]) -> list[int]:
        pref = preferred_terms(pod)
        if pref is None:
            return [0] * len(nodes)
        snap = state.snapshot
        per_node: list[Any] = snap.memo((NAME, "preferred", pref[1]), lambda: [
            self.score(state, pod, n) for n in snap.nodes])
        return [per_node[j] for j in nodes]

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int]) -> None:
        default_normalize_score(scores, reverse=False)


def new(args: dict, handle) -> NodeAffinity:
    if plugin_args(args, "addedAffinity").get("addedAffinity"):
        raise ValueError("NodeAffinity addedAffinity is not supported by minik8s")
    return NodeAffinity()
