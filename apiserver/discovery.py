"""API discovery: the aggregated v2 documents kubectl prefers and the plain fallback.

Both are generated from the registry table, plus the groups of APIServices that name a
Service (`remote`, apiserver/aggregator/): listed after the built-in groups by
groupPriorityMinimum and versionPriority, their aggregated documents converted from the
APIResourceList the extension server last served (freshness Stale when the last fetch
failed). kubectl only accepts the aggregated form if the Content-Type is exactly the
one it asked for (see shared/KUBECTL.md).
"""
from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from typing import Protocol

from apiserver import registry
from machinery import errors


class Remote(Protocol):
    """The aggregated groups (apiserver/aggregator/)."""

    def remote_groups(self) -> list[tuple[str, list[str]]]: ...

    def resource_list(self, group: str, version: str) -> tuple[dict, bool] | None: ...

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_SUB_VERBS = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"],
              "approval": ["get", "patch", "update"],
              "binding": ["create"], "log": ["get"], "exec": ["create", "get"],
              "portforward": ["create", "get"],
              "eviction": ["create"], "finalize": ["update"], "token": ["create"]}


def _sub_kind(sub: str, group: str, version: str, kind: str) -> tuple[str, str, str]:
    """(group, version, kind) of what a subresource takes and returns."""
    return {"scale": ("autoscaling", "v1", "Scale"), "binding": ("", "v1", "Binding"),
            "eviction": ("policy", "v1", "Eviction"),
            "token": ("authentication.k8s.io", "v1", "TokenRequest")}.get(sub, (group, version, kind))


def _resource_list(group: str, version: str) -> dict:
    resources = []
    for r in registry.served():
        if r.group != group or r.version != version:
            continue
        entry = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                 "kind": r.kind, "verbs": list(r.verbs)}
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        resources.append(entry)
        for sub in r.subresources:
            sub_group, sub_version, kind = _sub_kind(sub, group, version, r.kind)
            entry = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced}
            if (sub_group, sub_version) != (group, version):  # as Kubernetes says it, and
                entry.update(group=sub_group, version=sub_version)  # `drain` needs it
            resources.append({**entry, "kind": kind, "verbs": _SUB_VERBS[sub]})
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


def _aggregated_group(group: str, versions: list[str]) -> dict:
    out_versions = []
    for v in versions:
        resources = []
        for r in registry.served():
            if r.group != group or r.version != v:
                continue
            res = {"resource": r.plural, "responseKind": {"group": group, "version": v, "kind": r.kind},
                   "scope": "Namespaced" if r.namespaced else "Cluster", "singularResource": r.singular,
                   "verbs": list(r.verbs)}
            if r.short_names:
                res["shortNames"] = list(r.short_names)
            if r.categories:
                res["categories"] = list(r.categories)
            subs = []
            for sub in r.subresources:
                kind = _sub_kind(sub, group, v, r.kind)
                subs.append({"subresource": sub, "responseKind": dict(zip(("group", "version", "kind"), kind)),
                             "verbs": _SUB_VERBS[sub]})
            if subs:
                res["subresources"] = subs
            resources.append(res)
        out_versions.append({"version": v, "resources": resources, "freshness": "Current"})
    item = {"metadata": {"creationTimestamp": None}, "versions": out_versions}
    if group:
        item["metadata"]["name"] = group
    return item


def _remote_group(remote: Remote, group: str, versions: list[str]) -> dict | None:
    """An aggregated APIGroupDiscovery converted from the remote APIResourceLists."""
    out_versions = []
    for v in versions:
        found = remote.resource_list(group, v)
        if found is None:
            continue
        rlist, fresh = found
        resources: dict[str, dict] = {}
        for r in rlist.get("resources") or []:
            name = r.get("name") or ""
            base, _, sub = name.partition("/")
            kind = {"group": r.get("group", group), "version": r.get("version", v), "kind": r.get("kind", "")}
            if not sub:
                res = {"resource": base, "responseKind": kind,
                       "scope": "Namespaced" if r.get("namespaced") else "Cluster",
                       "singularResource": r.get("singularName") or "", "verbs": list(r.get("verbs") or [])}
                for key in ("shortNames", "categories"):
                    if r.get(key):
                        res[key] = list(r[key])
                resources[base] = {**res, **({"subresources": resources[base]["subresources"]}
                                             if "subresources" in resources.get(base, {}) else {})}
            else:
                parent = resources.setdefault(base, {"resource": base})
                parent.setdefault("subresources", []).append(
                    {"subresource": sub, "responseKind": kind, "verbs": list(r.get("verbs") or [])})
        out_versions.append({"version": v, "resources": list(resources.values()),
                             "freshness": "Current" if fresh else "Stale"})
    if not out_versions:
        return None
    return {"metadata": {"name": group, "creationTimestamp": None}, "versions": out_versions}


def _json(body: dict, ctype: str = "application/json") -> Response:
    return Response(orjson.dumps(body), media_type=None, headers={"Content-Type": ctype})


def handle(request: Request, remote: Remote | None = None) -> Response:
    parts = [p for p in request.url.path.split("/") if p]
    groups = registry.groups()
    remote_groups = [(g, vs) for g, vs in (remote.remote_groups() if remote is not None else ())
                     if g not in groups]
    accept = request.headers.get("accept", "")
    aggregated = "apidiscovery.k8s.io" in accept and "as=APIGroupDiscoveryList" in accept
    if parts == ["api"]:
        if aggregated:
            return _json({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
                          "metadata": {}, "items": [_aggregated_group("", groups[""])]}, AGGREGATED)
        return _json({"kind": "APIVersions", "versions": groups[""],
                      "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                      "serverAddress": request.url.netloc}]})
    if parts == ["apis"]:
        named = {g: v for g, v in groups.items() if g}
        if aggregated:
            items = [_aggregated_group(g, v) for g, v in named.items()]
            if remote is not None:
                items += [x for g, vs in remote_groups if (x := _remote_group(remote, g, vs)) is not None]
            return _json({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
                          "metadata": {}, "items": items}, AGGREGATED)
        return _json({"kind": "APIGroupList", "apiVersion": "v1",
                      "groups": [_group(g, v) for g, v in [*named.items(), *remote_groups]]})
    if len(parts) == 2 and parts[0] == "api" and parts[1] in groups[""]:
        return _json(_resource_list("", parts[1]))
    if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups and parts[1]:
        return _json({"kind": "APIGroup", "apiVersion": "v1", **_group(parts[1], groups[parts[1]])})
    for g, vs in remote_groups:
        if parts == ["apis", g]:
            return _json({"kind": "APIGroup", "apiVersion": "v1", **_group(g, vs)})
    if len(parts) == 3 and parts[0] == "apis" and parts[2] in groups.get(parts[1], ()) and parts[1]:
        return _json(_resource_list(parts[1], parts[2]))
    raise errors.NotFound("the server could not find the requested resource")


def _group(name: str, versions: list[str]) -> dict:
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": vs, "preferredVersion": vs[0]}
