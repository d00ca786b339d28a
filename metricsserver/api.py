"""`metrics.k8s.io/v1beta1` as metrics-server serves it (pkg/api): discovery, NodeMetrics
and PodMetrics, read from the storage and the node and pod informers' caches.

Guarantees
- Discovery: `/apis` (APIGroupList), `/apis/metrics.k8s.io` (APIGroup),
  `/apis/metrics.k8s.io/v1beta1` (APIResourceList: `nodes` NodeMetrics cluster-scoped,
  `pods` PodMetrics namespaced, verbs get and list).
- `nodes`, `nodes/<name>`, `pods`, `namespaces/<ns>/pods`, `namespaces/<ns>/pods/<name>`:
  objects with the node's or pod's name, namespace and labels, `timestamp` (the last
  point's, RFC 3339), `window` (between the two points, a Go duration string) and usage
  (`cpu` in cores, canonical: `250m`, `123456n`; `memory` in bytes, canonical: `64Mi`).
  Lists take `labelSelector` and `fieldSelector` (metadata.name, metadata.namespace), are
  sorted by namespace and name, and leave out objects without metrics (yet).
- A get of a node or pod that does not exist is its own NotFound (`node "x" not found`,
  `pods "x" not found`, as metrics-server's listers answer); of one that exists without
  metrics (too new, or its kubelet did not answer the last scrape), NotFound for
  `nodemetrics.metrics.k8s.io "x"` / `podmetrics.metrics.k8s.io "ns/x"`.
- A client asking for a Table (`Accept: ...;as=Table`, kubectl get) gets metrics-server's
  columns: Name, cpu, memory (a pod's containers summed), Window.
- A bad selector is 400; a watch, or any verb but GET, is 405; an unknown path 404:
  all `kind: Status`.
"""
from __future__ import annotations

import time
from fractions import Fraction
from typing import Any, Callable

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from machinery import errors, fields, labels
from machinery.duration import go_string as go_duration
from machinery.quantity import BINARY_SI, DECIMAL_SI, format_quantity, parse_quantity
from machinery.times import rfc3339
from metricsserver.storage import Storage, Usage

GROUP, VERSION = "metrics.k8s.io", "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
PREFIX = f"/apis/{GROUP_VERSION}"

RESOURCE_LIST = {
    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
    "resources": [
        {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "NodeMetrics",
         "verbs": ["get", "list"]},
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "PodMetrics",
         "verbs": ["get", "list"]},
    ]}
_GV = {"groupVersion": GROUP_VERSION, "version": VERSION}
API_GROUP = {"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [_GV],
             "preferredVersion": _GV}
API_GROUP_LIST = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [API_GROUP]}

def usage_of(u: Usage) -> dict[str, str]:
    return {"cpu": format_quantity(Fraction(u.cpu_nanocores, 10**9), DECIMAL_SI),
            "memory": format_quantity(u.memory_bytes, BINARY_SI)}


def _json(obj: Any, code: int = 200) -> Response:
    return Response(orjson.dumps(obj), code, media_type="application/json")


def _wants_table(request: Request) -> bool:
    return any("as=Table" in part for part in request.headers.get("accept", "").split(","))


def _table(items: list[dict[str, Any]], include: str) -> dict[str, Any]:
    """metrics-server's ConvertToTable: Name, cpu, memory (a pod's containers summed) and
    Window; each row's object as `includeObject` asks (Metadata by default)."""
    rows = []
    for obj in items:
        usages = [obj["usage"]] if "usage" in obj else [c["usage"] for c in obj.get("containers") or []]
        cpu = sum((parse_quantity(u.get("cpu", "0")) for u in usages), Fraction(0))
        mem = sum((parse_quantity(u.get("memory", "0")) for u in usages), Fraction(0))
        row: dict[str, Any] = {"cells": [obj["metadata"]["name"], format_quantity(cpu, DECIMAL_SI),
                                         format_quantity(mem, BINARY_SI), obj["window"]]}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
            "columnDefinitions": [
                {"name": "Name", "type": "string", "format": "name", "description": "Name of the resource",
                 "priority": 0},
                {"name": "cpu", "type": "string", "format": "quantity", "description": "", "priority": 0},
                {"name": "memory", "type": "string", "format": "quantity", "description": "", "priority": 0},
                {"name": "Window", "type": "string", "format": "duration", "description": "", "priority": 0}],
            "rows": rows}


def _answer(request: Request, obj: dict[str, Any]) -> Response:
    """The object or list, or its Table when the client asks for one (kubectl get)."""
    if _wants_table(request):
        items = obj["items"] if "items" in obj else [obj]
        return _json(_table(items, request.query_params.get("includeObject", "Metadata")))
    return _json(obj)


def _error(err: errors.APIError) -> Response:
    return _json(err.to_status(), err.code)


def _selectors(request: Request, resource: str) -> tuple[labels.Selector, fields.FieldSelector]:
    q = request.query_params
    if q.get("watch", "").lower() in ("1", "true"):
        # metrics-server's storage is no Watcher: k8s.io/apiserver's list handler refuses
        raise errors.MethodNotAllowed(f'watch is not supported on resources of kind "{resource}.{GROUP}"',
                                      kind=resource, group=GROUP)
    try:
        ls = labels.parse(q.get("labelSelector", ""))
    except ValueError as e:
        raise errors.BadRequest(f"unable to parse requested label selector: {e}") from None
    try:
        fs = fields.parse(q.get("fieldSelector", ""))
    except ValueError as e:
        raise errors.BadRequest(f"unable to parse requested field selector: {e}") from None
    return ls, fs


class MetricsAPI:
    """The ASGI app. `nodes()` and `pods()` give the informers' cached objects; `now`
    stamps creationTimestamp as metrics-server does (the time of the answer)."""

    def __init__(self, storage: Storage, *, nodes: Callable[[], list[dict[str, Any]]],
                 node: Callable[[str], dict[str, Any] | None],
                 pods: Callable[[str], list[dict[str, Any]]],
                 pod: Callable[[str, str], dict[str, Any] | None],
                 extra_routes: list[Route] | None = None, now: Callable[[], float] = time.time):
        self.storage, self.now = storage, now
        self._nodes, self._node, self._pods, self._pod = nodes, node, pods, pod
        routes = [
            Route("/apis", self._static(API_GROUP_LIST), methods=["GET"]),
            Route(f"/apis/{GROUP}", self._static(API_GROUP), methods=["GET"]),
            Route(PREFIX, self._static(RESOURCE_LIST), methods=["GET"]),
            Route(f"{PREFIX}/nodes", self.list_nodes, methods=["GET"]),
            Route(f"{PREFIX}/nodes/{{name}}", self.get_node, methods=["GET"]),
            Route(f"{PREFIX}/pods", self.list_pods, methods=["GET"]),
            Route(f"{PREFIX}/namespaces/{{namespace}}/pods", self.list_pods, methods=["GET"]),
            Route(f"{PREFIX}/namespaces/{{namespace}}/pods/{{name}}", self.get_pod, methods=["GET"]),
            *(extra_routes or []),
        ]
        self.app = Starlette(routes=routes, exception_handlers={404: self._not_found, 405: self._not_allowed})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    @staticmethod
    def _static(obj: dict[str, Any]) -> Callable[[Request], Any]:
        body = orjson.dumps(obj)

        async def handler(request: Request) -> Response:
            return Response(body, media_type="application/json")
        return handler

    @staticmethod
    async def _not_found(request: Request, exc: Any) -> Response:
        return _error(errors.NotFound("the server could not find the requested resource"))

    @staticmethod
    async def _not_allowed(request: Request, exc: Any) -> Response:
        return _error(errors.MethodNotAllowed("the server does not allow this method on the requested "
                                              "resource"))

    # -- objects ---------------------------------------------------------------------

    def node_metrics(self, node: dict[str, Any]) -> dict[str, Any] | None:
        u = self.storage.node_metrics(node["metadata"]["name"])
        if u is None:
            return None
        md = {"name": node["metadata"]["name"], "creationTimestamp": rfc3339(self.now())}
        if node["metadata"].get("labels"):
            md["labels"] = dict(node["metadata"]["labels"])
        return {"kind": "NodeMetrics", "apiVersion": GROUP_VERSION, "metadata": md,
                "timestamp": rfc3339(u.timestamp), "window": go_duration(u.window), "usage": usage_of(u)}

    def pod_metrics(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        m = pod["metadata"]
        got = self.storage.pod_metrics(m.get("namespace", ""), m["name"])
        if got is None:
            return None
        ts, window, containers = got
        md = {"name": m["name"], "namespace": m.get("namespace", ""), "creationTimestamp": rfc3339(self.now())}
        if m.get("labels"):
            md["labels"] = dict(m["labels"])
        # the pod's own container order, as the kubelet lists them
        order = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        names = sorted(containers, key=lambda n: (order.index(n) if n in order else len(order), n))
        return {"kind": "PodMetrics", "apiVersion": GROUP_VERSION, "metadata": md,
                "timestamp": rfc3339(ts), "window": go_duration(window),
                "containers": [{"name": n, "usage": usage_of(containers[n])} for n in names]}

    # -- handlers --------------------------------------------------------------------

    async def list_nodes(self, request: Request) -> Response:
        try:
            ls, fs = _selectors(request, "nodes")
        except errors.APIError as e:
            return _error(e)
        items = []
        for node in sorted(self._nodes(), key=lambda n: n["metadata"]["name"]):
            md = node["metadata"]
            if not ls.matches(md.get("labels")) or not fs.matches({"metadata.name": md["name"]}):
                continue
            obj = self.node_metrics(node)
            if obj is not None:
                items.append(obj)
        return _answer(request, {"kind": "NodeMetricsList", "apiVersion": GROUP_VERSION, "metadata": {},
                                 "items": items})

    async def get_node(self, request: Request) -> Response:
        name = request.path_params["name"]
        node = self._node(name)
        if node is None:
            return _error(errors.not_found("node", name))
        obj = self.node_metrics(node)
        if obj is None:
            return _error(errors.not_found("nodemetrics", name, GROUP))
        return _answer(request, obj)

    async def list_pods(self, request: Request) -> Response:
        try:
            ls, fs = _selectors(request, "pods")
        except errors.APIError as e:
            return _error(e)
        items = []
        pods = self._pods(request.path_params.get("namespace", ""))
        for pod in sorted(pods, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"])):
            md = pod["metadata"]
            if not ls.matches(md.get("labels")):
                continue
            if not fs.empty and not fs.matches({"metadata.name": md["name"],
                                                "metadata.namespace": md.get("namespace", "")}):
                continue
            obj = self.pod_metrics(pod)
            if obj is not None:
                items.append(obj)
        return _answer(request, {"kind": "PodMetricsList", "apiVersion": GROUP_VERSION, "metadata": {},
                                 "items": items})

    async def get_pod(self, request: Request) -> Response:
        ns, name = request.path_params["namespace"], request.path_params["name"]
        pod = self._pod(ns, name)
        if pod is None:
            return _error(errors.not_found("pods", name))
        obj = self.pod_metrics(pod)
        if obj is None:
            return _error(errors.not_found("podmetrics", f"{ns}/{name}", GROUP))
        return _answer(request, obj)
