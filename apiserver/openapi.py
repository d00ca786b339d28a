"""OpenAPI v3 documents for the served kinds, generated from Kubernetes' own 1.32 schemas.

`/openapi/v3` is an index of group-versions; `/openapi/v3/api/v1` (and
`/openapi/v3/apis/<group>/<version>`) is one OpenAPI 3.0 document per group-version with:
- a path per resource, collection, item and status/scale subresource, whose operations
  carry `x-kubernetes-group-version-kind` and `x-kubernetes-action`; every `patch`
  declares the `fieldValidation` query parameter (so kubectl leaves validation to the
  server, with `fieldValidation=Strict`) and the four patch media types (so kubectl
  computes strategic merge patches);
- `components.schemas`: the definitions these kinds reach, converted from the JSON
  Schema that `kubernetes-validate` ships (nullable type lists become plain types,
  `$ref` with siblings becomes `allOf`), keeping Kubernetes' `x-kubernetes-*`
  extensions (`patch-merge-key`, `patch-strategy`, `list-type`, `list-map-keys`,
  `map-type`, `group-version-kind`).

`definitions()` and `kind_definition()` also serve `apiserver.apply`, which reads list
and map types from the same schemas.

Everything is built on first use and cached for the process (the documents are
immutable, so the index carries a content hash and clients may cache forever).
Building the three documents takes tens of milliseconds.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
from typing import Any

import orjson

from apiserver import registry

_SCHEMA_VERSION = "v1.32.0"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_REF = "#/components/schemas/"
# Definitions every document needs besides the kinds: operation bodies and answers.
_COMMON = (_META + "Status", _META + "DeleteOptions", _META + "Patch", _META + "WatchEvent")
_PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json",
                "application/merge-patch+json", "application/strategic-merge-patch+json")


@functools.cache
def definitions() -> dict[str, dict]:
    """The 1.32 JSON Schema definitions by name (`io.k8s.api.core.v1.Pod`), read-only."""
    path = (importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
            / f"{_SCHEMA_VERSION}-local" / "_definitions.json")
    return json.loads(path.read_text())["$defs"]


@functools.cache
def _by_gvk() -> dict[tuple[str, str, str], str]:
    out = {}
    for name, d in definitions().items():
        for gvk in d.get("x-kubernetes-group-version-kind") or ():
            out.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return out


def kind_definition(group: str, version: str, kind: str) -> str | None:
    """The definition name of a kind, e.g. ('apps', 'v1', 'Deployment') -> 'io.k8s.api.apps.v1.Deployment'."""
    return _by_gvk().get((group, version, kind))


def ref_name(schema: dict) -> str | None:
    """The definition a JSON Schema `$ref` points to, if any."""
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[1] if isinstance(ref, str) else None


def _convert(s: Any) -> Any:
    """One JSON Schema (2020-12, nullable types) node as an OpenAPI 3.0 schema."""
    if isinstance(s, list):
        return [_convert(x) for x in s]
    if not isinstance(s, dict):
        return s
    out: dict[str, Any] = {}
    for k, v in s.items():
        if k == "$ref":
            continue
        if k == "type" and isinstance(v, list):
            types = [t for t in v if t != "null"]
            out[k] = types[0] if len(types) == 1 else types
        elif k == "properties":
            out[k] = {name: _convert(p) for name, p in v.items()}
        elif k in ("enum", "required", "x-kubernetes-list-map-keys",
                   "x-kubernetes-group-version-kind", "x-kubernetes-unions"):
            out[k] = v
        else:
            out[k] = _convert(v)
    name = ref_name(s)
    if name is not None:
        ref = {"$ref": _REF + name}
        if not out:
            return ref
        out["allOf"] = [ref]  # as Kubernetes publishes a reference with a description
    return out


def _closure(roots: list[str]) -> list[str]:
    defs, seen, todo = definitions(), [], list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.append(name)
        stack = [defs[name]]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if (ref := ref_name(node)) is not None:
                    todo.append(ref)
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return sorted(seen)


def _param(name: str, where: str = "query", description: str = "", type_: str = "string",
           required: bool = False) -> dict:
    p = {"name": name, "in": where, "description": description, "schema": {"type": type_}}
    if required:
        p["required"] = True
    return p


_WRITE_PARAMS = [
    _param("dryRun", description="When present, indicates that modifications should not be "
           "persisted. Valid value: All"),
    _param("fieldManager", description="fieldManager is a name associated with the actor or "
           "entity that is making these changes."),
    _param("fieldValidation", description="fieldValidation instructs the server on how to "
           "handle objects in the request containing unknown or duplicate fields. Valid "
           "values: Ignore, Warn, Strict."),
]
_LIST_PARAMS = [_param(n) for n in ("labelSelector", "fieldSelector", "continue",
                                    "resourceVersion", "resourceVersionMatch")] + [
    _param("limit", type_="integer"), _param("timeoutSeconds", type_="integer"),
    _param("watch", type_="boolean"), _param("allowWatchBookmarks", type_="boolean")]
_DELETE_PARAMS = [_param("dryRun"), _param("gracePeriodSeconds", type_="integer"),
                  _param("propagationPolicy")]


def _body(schema_name: str, types=("application/json", "application/yaml")) -> dict:
    return {"content": {t: {"schema": {"$ref": _REF + schema_name}} for t in types},
            "required": True}


def _answer(schema_name: str, *codes: str) -> dict:
    content = {t: {"schema": {"$ref": _REF + schema_name}}
               for t in ("application/json", "application/yaml")}
    return {c: {"description": {"200": "OK", "201": "Created", "202": "Accepted"}[c],
                "content": content} for c in codes}


def _paths(rt: registry.ResourceType, kind_def: str, list_def: str | None) -> dict:
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    base = f"/api/{rt.version}" if not rt.group else f"/apis/{rt.group}/{rt.version}"
    scope = [_param("namespace", "path", "object name and auth scope", required=True)] \
        if rt.namespaced else []
    collection = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced \
        else f"{base}/{rt.plural}"
    camel = (rt.group.split(".")[0].capitalize() or "Core") + rt.version.capitalize()
    what = ("Namespaced" if rt.namespaced else "") + rt.kind

    def op(action: str, verb: str, params: list, responses: dict, body: dict | None = None,
           kind: dict = gvk, suffix: str = "") -> dict:
        o = {"operationId": f"{verb}{camel}{what}{suffix}", "parameters": params,
             "responses": responses, "x-kubernetes-action": action,
             "x-kubernetes-group-version-kind": kind}
        if body is not None:
            o["requestBody"] = body
        return o

    item_params = [_param("name", "path", f"name of the {rt.kind}", required=True), *scope]
    status = _META + "Status"
    ops = {"parameters": scope,
           "post": op("post", "create", _WRITE_PARAMS, _answer(kind_def, "200", "201", "202"),
                      _body(kind_def))}
    if "deletecollection" in rt.verbs:
        ops["delete"] = op("deletecollection", "deleteCollection", _LIST_PARAMS + _DELETE_PARAMS,
                           _answer(status, "200"), _body(_META + "DeleteOptions"))
    if list_def:
        ops["get"] = op("list", "list", _LIST_PARAMS, _answer(list_def, "200"))
    paths = {collection: ops}
    subs = {"": (kind_def, gvk)}
    if "status" in rt.subresources:
        subs["status"] = (kind_def, gvk)
    if "scale" in rt.subresources:
        subs["scale"] = ("io.k8s.api.autoscaling.v1.Scale",
                         {"group": "autoscaling", "version": "v1", "kind": "Scale"})
    for sub, (schema, kind) in subs.items():
        suffix = sub.capitalize()
        types = _PATCH_TYPES[1:] if sub == "scale" else _PATCH_TYPES  # no apply to /scale
        patch = op("patch", "patch", [*_WRITE_PARAMS, _param("force", type_="boolean")],
                   _answer(schema, "200", "201"), _body(_META + "Patch", types), kind, suffix)
        item = {"parameters": item_params,
                "get": op("get", "read", [], _answer(schema, "200"), kind=kind, suffix=suffix),
                "put": op("put", "replace", _WRITE_PARAMS, _answer(schema, "200", "201"),
                          _body(schema), kind, suffix),
                "patch": patch}
        if not sub:
            item["delete"] = op("delete", "delete", _DELETE_PARAMS,
                                _answer(kind_def if rt.plural == "pods" else status, "200", "202"),
                                _body(_META + "DeleteOptions"))
        paths[f"{collection}/{{name}}" + (f"/{sub}" if sub else "")] = item
    return paths


def _group_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


@functools.cache
def documents() -> dict[str, tuple[bytes, str]]:
    """'api/v1' / 'apis/apps/v1' -> (the serialized OpenAPI document, its hash)."""
    out = {}
    for group, versions in registry.groups().items():
        for version in versions:
            paths, roots = {}, list(_COMMON)
            for rt in registry.RESOURCES:
                if (rt.group, rt.version) != (group, version):
                    continue
                kind_def = kind_definition(rt.group, rt.version, rt.kind)
                if kind_def is None:
                    continue
                list_def = kind_definition(rt.group, rt.version, rt.list_kind)
                roots += [kind_def] + ([list_def] if list_def else [])
                if "scale" in rt.subresources:
                    roots.append("io.k8s.api.autoscaling.v1.Scale")
                paths.update(_paths(rt, kind_def, list_def))
            defs = definitions()
            doc = {"openapi": "3.0.0",
                   "info": {"title": "Kubernetes", "version": f"{_SCHEMA_VERSION}-minik8s"},
                   "paths": paths,
                   "components": {"schemas": {n: _convert(defs[n]) for n in _closure(roots)}}}
            body = orjson.dumps(doc)
            out[_group_path(group, version)] = (body, hashlib.sha512(body).hexdigest().upper())
    return out


@functools.cache
def index() -> bytes:
    paths = {p: {"serverRelativeURL": f"/openapi/v3/{p}?hash={h}"}
             for p, (_, h) in documents().items()}
    return orjson.dumps({"paths": paths})
