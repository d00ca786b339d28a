"""Builders and runners for scheduler tests (kube-scheduler's pkg/scheduler/testing).

    make_pod("p").req(cpu="500m", memory="1Gi").toleration("k", "v").obj()
    make_node("n1").cap(cpu="4").label("zone", "a").taint("dedicated", "gpu").obj()

`run_filter` / `run_score` call a plugin the way the framework does, and check that the
plugin's columnar fast path agrees with its per-node method, so every table row tests
both.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping

from scheduler.cache import Cache
from scheduler.framework import (SKIP, CycleState, FilterNodes, PreFilterPlugin, PreScorePlugin,
                                 ScoreExtensions, ScoreNodes, Status)
from scheduler.types import PodInfo


class PodBuilder:
    def __init__(self, name: str = "pod", namespace: str = "default"):
        self._pod: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}"},
            "spec": {"containers": [{"name": "c", "image": "pause"}]}, "status": {}}

    @property
    def _spec(self) -> dict:
        return self._pod["spec"]

    def _container(self, init: bool = False) -> dict:
        if init:
            self._spec.setdefault("initContainers", []).append(
                {"name": f"init{len(self._spec.get('initContainers', []))}", "image": "pause"})
            return self._spec["initContainers"][-1]
        return self._spec["containers"][-1]

    def req(self, **resources: str) -> PodBuilder:
        """Requests on the current (last) container; `ephemeral_storage=` for the dash."""
        c = self._container()
        c.setdefault("resources", {}).setdefault("requests", {}).update(
            {k.replace("_", "-"): v for k, v in resources.items()})
        return self

    def container(self, image: str = "pause", **resources: str) -> PodBuilder:
        self._spec["containers"].append({"name": f"c{len(self._spec['containers'])}", "image": image})
        return self.req(**resources) if resources else self

    def init_req(self, *, sidecar: bool = False, **resources: str) -> PodBuilder:
        c = self._container(init=True)
        if sidecar:
            c["restartPolicy"] = "Always"
        c["resources"] = {"requests": {k.replace("_", "-"): v for k, v in resources.items()}}
        return self

    def overhead(self, **resources: str) -> PodBuilder:
        self._spec["overhead"] = {k.replace("_", "-"): v for k, v in resources.items()}
        return self

    def image(self, image: str) -> PodBuilder:
        self._container()["image"] = image
        return self

    def label(self, key: str, value: str) -> PodBuilder:
        self._pod["metadata"].setdefault("labels", {})[key] = value
        return self

    def node(self, name: str) -> PodBuilder:
        self._spec["nodeName"] = name
        return self

    def node_selector(self, selector: Mapping[str, str]) -> PodBuilder:
        self._spec["nodeSelector"] = dict(selector)
        return self

    def _node_affinity(self) -> dict:
        return self._spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})

    def node_affinity(self, *terms: list[dict], fields: list[dict] | None = None) -> PodBuilder:
        """Required terms, each a list of {key, operator, values} expressions (ORed)."""
        req = self._node_affinity().setdefault(
            "requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": []})
        for t in terms:
            req["nodeSelectorTerms"].append({"matchExpressions": list(t)})
        if fields:
            req["nodeSelectorTerms"].append({"matchFields": list(fields)})
        return self

    def node_affinity_in(self, key: str, values: Iterable[str]) -> PodBuilder:
        return self.node_affinity([{"key": key, "operator": "In", "values": list(values)}])

    def preferred(self, weight: int, *exprs: dict) -> PodBuilder:
        self._node_affinity().setdefault("preferredDuringSchedulingIgnoredDuringExecution", []).append(
            {"weight": weight, "preference": {"matchExpressions": list(exprs)}})
        return self

    def toleration(self, key: str = "", value: str = "", effect: str = "",
                   operator: str = "Equal") -> PodBuilder:
        t = {k: v for k, v in (("key", key), ("operator", operator), ("value", value),
                               ("effect", effect)) if v}
        self._spec.setdefault("tolerations", []).append(t)
        return self

    def host_port(self, port: int, protocol: str = "", ip: str = "") -> PodBuilder:
        p = {"containerPort": port, "hostPort": port}
        if protocol:
            p["protocol"] = protocol
        if ip:
            p["hostIP"] = ip
        self._container().setdefault("ports", []).append(p)
        return self

    def priority(self, value: int) -> PodBuilder:
        self._spec["priority"] = value
        return self

    def owner(self, uid: str, kind: str = "ReplicaSet", name: str = "rs") -> PodBuilder:
        self._pod["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": True}]
        return self

    def scheduler_name(self, name: str) -> PodBuilder:
        self._spec["schedulerName"] = name
        return self

    def phase(self, phase: str) -> PodBuilder:
        self._pod["status"]["phase"] = phase
        return self

    def terminating(self) -> PodBuilder:
        self._pod["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
        return self

    def obj(self) -> dict:
        return copy.deepcopy(self._pod)

    def info(self) -> PodInfo:
        return PodInfo(self.obj())


class NodeBuilder:
    def __init__(self, name: str = "node"):
        self._node: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110",
                                       "ephemeral-storage": "100Gi"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}

    def cap(self, **resources: str) -> NodeBuilder:
        """Set allocatable (and capacity) entries; `ephemeral_storage=` for the dash."""
        alloc = self._node["status"]["allocatable"]
        alloc.update({k.replace("_", "-"): str(v) for k, v in resources.items()})
        self._node["status"]["capacity"] = dict(alloc)
        return self

    def scalar(self, name: str, amount: str) -> NodeBuilder:
        self._node["status"]["allocatable"][name] = amount
        return self

    def label(self, key: str, value: str) -> NodeBuilder:
        self._node["metadata"]["labels"][key] = value
        return self

    def taint(self, key: str, value: str = "", effect: str = "NoSchedule") -> NodeBuilder:
        t = {"key": key, "effect": effect}
        if value:
            t["value"] = value
        self._node["spec"].setdefault("taints", []).append(t)
        return self

    def unschedulable(self) -> NodeBuilder:
        self._node["spec"]["unschedulable"] = True
        return self

    def ready(self, status: str | None = "True") -> NodeBuilder:
        """Ready condition status ('True', 'False', 'Unknown'), or None for no condition."""
        self._node["status"]["conditions"] = [] if status is None else [
            {"type": "Ready", "status": status}]
        return self

    def image(self, size: int, *names: str) -> NodeBuilder:
        self._node["status"].setdefault("images", []).append({"names": list(names), "sizeBytes": size})
        return self

    def obj(self) -> dict:
        return copy.deepcopy(self._node)


def make_pod(name: str = "pod", namespace: str = "default") -> PodBuilder:
    return PodBuilder(name, namespace)


def make_node(name: str = "node") -> NodeBuilder:
    return NodeBuilder(name)


def make_cache(nodes: Iterable[Mapping] = (), pods: Iterable[Mapping] = ()) -> Cache:
    cache = Cache()
    for n in nodes:
        cache.add_node(n)
    for p in pods:
        cache.add_pod(p)
    return cache


def _pod_info(pod: Mapping | PodInfo) -> PodInfo:
    return pod if isinstance(pod, PodInfo) else PodInfo(pod)


def run_filter(plugin: Any, pod: Mapping | PodInfo, node: Mapping,
               pods: Iterable[Mapping] = (), *, others: Iterable[Mapping] = ()) -> Status | None:
    """PreFilter then Filter of one plugin for `pod` on `node` (with `pods` bound in the
    cluster, `others` more nodes). A PreFilter Skip means the node passes. Asserts that
    the plugin's `filter_nodes` agrees with `filter`."""
    cache = make_cache([node, *others], pods)
    pi = _pod_info(pod)
    state = CycleState(cache)
    if isinstance(plugin, PreFilterPlugin):
        s = plugin.pre_filter(state, pi)
        if s is SKIP or (s is not None and s.code == SKIP.code):
            return None
        if s is not None:
            return s
    info = cache.get(node["metadata"]["name"])
    status = plugin.filter(state, pi, info)
    if isinstance(plugin, FilterNodes):
        fast = plugin.filter_nodes(state, pi, [info.index])
        assert fast == ([info.index] if status is None else []), (
            f"{plugin.NAME}: filter_nodes={fast} disagrees with filter={status}")
    return status


def run_score(plugin: Any, pod: Mapping | PodInfo, nodes: list[Mapping],
              pods: Iterable[Mapping] = (), *, normalize: bool = True) -> list[int] | None:
    """PreScore, Score and (optionally) NormalizeScore of one plugin over `nodes`; None if
    PreScore skipped. Asserts that `score_nodes` agrees with `score`."""
    cache = make_cache(nodes, pods)
    pi = _pod_info(pod)
    state = CycleState(cache)
    idx = [cache.get(n["metadata"]["name"]).index for n in nodes]
    if isinstance(plugin, PreScorePlugin):
        s = plugin.pre_score(state, pi, idx)
        if s is not None and s.code == SKIP.code:
            return None
    scores = [plugin.score(state, pi, cache.nodes[j]) for j in idx]
    if isinstance(plugin, ScoreNodes):
        fast = plugin.score_nodes(state, pi, idx)
        assert fast == scores, f"{plugin.NAME}: score_nodes={fast} disagrees with score={scores}"
    if normalize and isinstance(plugin, ScoreExtensions):
        plugin.normalize_score(state, pi, scores)
    return scores
