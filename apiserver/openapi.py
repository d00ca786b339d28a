"""OpenAPI v3 and v2 documents for the served kinds, generated from Kubernetes' own 1.32 schemas.

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

`/openapi/v2` is one Swagger 2.0 document with the same definitions (no paths), as
JSON or as gnostic's protobuf `openapi.v2.Document`, which is all kubectl reads: it is
what kubectl validates a `kind: List` against (see the v2 section below).

`definitions()` and `kind_definition()` also serve `apiserver.apply`, which reads list
and map types from the same schemas.

Everything is built on first use and cached until the served kinds change
(`registry.generation()`: a CustomResourceDefinition was established or removed); a
document's content hash is in the index, so clients may cache each document forever.
Building the three documents takes tens of milliseconds.
"""
from __future__ import annotations

import copy
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
_CR_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                   "application/apply-patch+yaml")


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
    if rt.verbs == ("create",):  # the review kinds: POST of the collection only
        return paths
    subs = {"": (kind_def, gvk)}
    for sub in ("status", "approval"):
        if sub in rt.subresources:
            subs[sub] = (kind_def, gvk)
    if "scale" in rt.subresources:
        subs["scale"] = ("io.k8s.api.autoscaling.v1.Scale",
                         {"group": "autoscaling", "version": "v1", "kind": "Scale"})
    for sub, (schema, kind) in subs.items():
        suffix = sub.capitalize()
        types = _PATCH_TYPES[1:] if sub == "scale" else _PATCH_TYPES  # no apply to /scale
        if rt.extra.get("crd"):  # no strategic merge patch: apiextensions' builder lists these
            types = _CR_PATCH_TYPES
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


def custom_definitions(rt: registry.ResourceType) -> dict[str, dict]:
    """A custom resource's definitions, named as Kubernetes names them (the group reversed:
    `com.example.v1.Widget` and `...WidgetList`): its CRD schema with apiVersion, kind and
    metadata, and its list. Empty for a kind that is not a custom resource."""
    if not rt.extra.get("crd"):
        return {}
    prefix = ".".join(reversed(rt.group.split("."))) + f".{rt.version}."
    gvk = [{"group": rt.group, "version": rt.version, "kind": rt.kind}]
    kind = copy.deepcopy(rt.extra.get("schema") or {"type": "object"})
    props = kind.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string", "description": "APIVersion defines the versioned "
                                    "schema of this representation of an object."})
    props.setdefault("kind", {"type": "string", "description": "Kind is a string value representing "
                              "the REST resource this object represents."})
    props["metadata"] = {"$ref": _REF + _META + "ObjectMeta"}
    kind["x-kubernetes-group-version-kind"] = gvk
    list_kind = {"type": "object", "required": ["items"],
                 "description": f"{rt.kind}List is a list of {rt.kind}",
                 "properties": {"apiVersion": props["apiVersion"], "kind": props["kind"],
                                "items": {"type": "array", "items": {"$ref": _REF + prefix + rt.kind}},
                                "metadata": {"$ref": _REF + _META + "ListMeta"}},
                 "x-kubernetes-group-version-kind": [{**gvk[0], "kind": rt.list_kind}]}
    return {prefix + rt.kind: kind, prefix + rt.list_kind: list_kind}


def _group_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def documents() -> dict[str, tuple[bytes, str]]:
    """'api/v1' / 'apis/apps/v1' -> (the serialized OpenAPI document, its hash)."""
    return _documents(registry.generation())


@functools.lru_cache(maxsize=2)
def _documents(generation: int) -> dict[str, tuple[bytes, str]]:
    out = {}
    for group, versions in registry.groups().items():
        for version in versions:
            paths, roots = {}, list(_COMMON)
            custom: dict[str, dict] = {}
            for rt in registry.served():
                if (rt.group, rt.version) != (group, version):
                    continue
                if own := custom_definitions(rt):
                    custom.update(own)
                    kind_def, list_def = list(own)
                    roots += [_META + "ObjectMeta", _META + "ListMeta"]
                    if "scale" in rt.subresources:
                        roots.append("io.k8s.api.autoscaling.v1.Scale")
                    paths.update(_paths(rt, kind_def, list_def))
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
                   "components": {"schemas": {**{n: _convert(defs[n]) for n in _closure(roots)},
                                              **custom}}}
            body = orjson.dumps(doc)
            out[_group_path(group, version)] = (body, hashlib.sha512(body).hexdigest().upper())
    return out


def index() -> bytes:
    return _index(registry.generation())


@functools.lru_cache(maxsize=2)
def _index(generation: int) -> bytes:
    paths = {p: {"serverRelativeURL": f"/openapi/v3/{p}?hash={h}"}
             for p, (_, h) in documents().items()}
    return orjson.dumps({"paths": paths})


# -- OpenAPI v2 (Swagger 2.0) -------------------------------------------------------------
#
# kubectl's client-side validation (`apply` of a `kind: List`, or of any kind the v3
# document cannot vouch for: --validate=strict then checks locally) reads
# `/openapi/v2`, and only as protobuf: client-go sends `Accept: <V2_PROTOBUF>` and
# parses the answer as gnostic's `openapi.v2.Document`, whatever its content type.
# So the document is served as that message, and as JSON to anyone else. It carries
# the definitions the served kinds reach (kubectl looks kinds up by their
# `x-kubernetes-group-version-kind`, and validates fields, types and `required`);
# the paths are left to v3, which serves them with their parameters.

V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
# What kube-apiserver answers with: '@' is no token character, so Go's
# mime.ParseMediaType (which client-go runs on every answer) rejects the other spelling.
V2_PROTOBUF_ANSWER = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_V2_REF = "#/definitions/"


def _convert_v2(s: Any) -> Any:
    """One JSON Schema (2020-12, nullable types) node as a Swagger 2.0 schema."""
    if isinstance(s, list):
        return [_convert_v2(x) for x in s]
    if not isinstance(s, dict):
        return s
    if "oneOf" in s:
        # Only int-or-string and quantities (string or number) are unions; Kubernetes'
        # v2 spells them as strings, and kubectl accepts any scalar for a string.
        out = {"type": "string"}
        if s.get("description"):
            out["description"] = s["description"]
        if all("integer" in (alt.get("type") or ()) or "string" in (alt.get("type") or ())
               for alt in s["oneOf"]) and len(s["oneOf"]) == 2:
            out["format"] = "int-or-string"
        return out
    out: dict[str, Any] = {}
    for k, v in s.items():
        if k == "$ref":
            out[k] = _V2_REF + v.rsplit("/", 1)[1]
        elif k == "type" and isinstance(v, list):
            types = [t for t in v if t != "null"]
            out[k] = types[0] if len(types) == 1 else types
        elif k == "properties":
            out[k] = {name: _convert_v2(p) for name, p in v.items()}
        elif k in ("enum", "required", "default", "x-kubernetes-list-map-keys",
                   "x-kubernetes-group-version-kind", "x-kubernetes-unions"):
            out[k] = v
        else:
            out[k] = _convert_v2(v)
    return out


def v2_document() -> dict:
    return _v2_document(registry.generation())


@functools.lru_cache(maxsize=2)
def _v2_document(generation: int) -> dict:
    roots = list(_COMMON)
    custom: dict[str, dict] = {}
    for rt in registry.served():
        if own := custom_definitions(rt):
            custom.update({n: _v2_refs(d) for n, d in own.items()})
            roots += [_META + "ObjectMeta", _META + "ListMeta"]
            continue
        for kind in (rt.kind, rt.list_kind):
            name = kind_definition(rt.group, rt.version, kind)
            if name is not None:
                roots.append(name)
        if "scale" in rt.subresources:
            roots.append("io.k8s.api.autoscaling.v1.Scale")
    defs = definitions()
    return {"swagger": "2.0",
            "info": {"title": "Kubernetes", "version": f"{_SCHEMA_VERSION}-minik8s"},
            "paths": {},
            "definitions": {**{n: _convert_v2(defs[n]) for n in _closure(roots)}, **custom}}


def _v2_refs(s: Any) -> Any:
    """An OpenAPI v3 schema's references as Swagger 2.0's."""
    if isinstance(s, list):
        return [_v2_refs(x) for x in s]
    if not isinstance(s, dict):
        return s
    return {k: (_V2_REF + v[len(_REF):] if k == "$ref" and isinstance(v, str) and v.startswith(_REF)
                else _v2_refs(v)) for k, v in s.items()}


def v2_json() -> tuple[bytes, str]:
    return _v2_json(registry.generation())


@functools.lru_cache(maxsize=2)
def _v2_json(generation: int) -> tuple[bytes, str]:
    body = orjson.dumps(v2_document())
    return body, hashlib.sha512(body).hexdigest().upper()


def v2_protobuf() -> tuple[bytes, str]:
    """The v2 document as gnostic's `openapi.v2.Document` message (OpenAPIv2.proto)."""
    return _v2_protobuf(registry.generation())


@functools.lru_cache(maxsize=2)
def _v2_protobuf(generation: int) -> tuple[bytes, str]:
    doc = v2_document()
    info = _pb_str(1, doc["info"]["title"]) + _pb_str(2, doc["info"]["version"])
    defs = b"".join(_pb_msg(1, _pb_str(1, name) + _pb_msg(2, _schema_pb(schema)))
                    for name, schema in doc["definitions"].items())
    body = (_pb_str(1, doc["swagger"]) + _pb_msg(2, info) + _pb_msg(8, b"")
            + _pb_msg(9, defs))
    return body, hashlib.sha512(body).hexdigest().upper()


def _schema_pb(s: dict) -> bytes:
    """openapi.v2.Schema: the fields these definitions use, by their numbers there."""
    out = bytearray()
    for key, number in (("$ref", 1), ("format", 2), ("title", 3), ("description", 4)):
        if isinstance(s.get(key), str):
            out += _pb_str(number, s[key])
    if "default" in s:
        out += _pb_msg(5, _pb_any(s["default"]))
    for name in s.get("required") or ():
        out += _pb_str(19, name)
    for value in s.get("enum") or ():
        out += _pb_msg(20, _pb_any(value))
    extra = s.get("additionalProperties")
    if isinstance(extra, dict):
        out += _pb_msg(21, _pb_msg(1, _schema_pb(extra)))
    elif isinstance(extra, bool):
        out += _pb_msg(21, _pb_varint_field(2, int(extra)))
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        out += _pb_msg(22, b"".join(_pb_str(1, t) for t in types))
    if isinstance(s.get("items"), dict):
        out += _pb_msg(23, _pb_msg(1, _schema_pb(s["items"])))
    for sub in s.get("allOf") or ():
        out += _pb_msg(24, _schema_pb(sub))
    if "properties" in s:
        out += _pb_msg(25, b"".join(_pb_msg(1, _pb_str(1, name) + _pb_msg(2, _schema_pb(p)))
                                    for name, p in s["properties"].items()))
    for key, value in s.items():
        if key.startswith("x-"):
            out += _pb_msg(31, _pb_str(1, key) + _pb_msg(2, _pb_any(value)))
    return bytes(out)


def _pb_any(value: Any) -> bytes:
    # openapi.v2.Any carries a value as YAML text; JSON is YAML, and what Go's
    # yaml.Unmarshal reads back is the same value.
    return _pb_str(2, orjson.dumps(value).decode())


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_varint_field(number: int, value: int) -> bytes:
    return _pb_varint(number << 3) + _pb_varint(value)


def _pb_msg(number: int, payload: bytes) -> bytes:
    return _pb_varint(number << 3 | 2) + _pb_varint(len(payload)) + payload


def _pb_str(number: int, text: str) -> bytes:
    return _pb_msg(number, text.encode())


async def v2_endpoint(request: Any) -> Any:
    """GET /openapi/v2: protobuf if the client asks for it (client-go asks only for it),
    else JSON; an ETag lets clients revalidate instead of downloading it again."""
    from starlette.responses import Response
    accept = request.headers.get("accept", "")
    proto = "com.github.proto-openapi.spec.v2" in accept and "application/json" not in accept
    body, digest = v2_protobuf() if proto else v2_json()
    etag = f'"{digest}"'
    headers = {"Etag": etag, "Cache-Control": "no-cache, private", "Vary": "Accept"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=V2_PROTOBUF_ANSWER if proto else "application/json",
                    headers=headers)
