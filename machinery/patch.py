"""Patch application: JSON merge patch, JSON patch and strategic merge patch.

Guarantees:
- Every function returns a new object and never mutates its arguments; the result
  shares no mutable structure with them.
- `merge_patch` is RFC 7386. `json_patch` is RFC 6902: a malformed patch document
  raises BadRequest (400); an operation that cannot be applied (missing path, failed
  test, unknown op) raises Invalid (422), as the Kubernetes API server answers.
- `strategic_merge_patch` follows apimachinery's strategicpatch (patch.go) as the API
  server runs it (parallel lists merged, unmatched nulls ignored). Which lists merge,
  and by which key, comes from one table mirroring the `patchStrategy`/`patchMergeKey`
  struct tags of the Kubernetes types minik8s serves; any other list is replaced
  atomically and any map merged. Directives (`$patch`, `$retainKeys`,
  `$setElementOrder/`, `$deleteFromPrimitiveList/`) never reach the result.
- `three_way_strategic_patch` computes the patch `kubectl apply` (client side) sends.
- Pure functions over JSON-shaped data (the strategy table is read-only): no I/O, no
  shared mutable state; safe from any thread or task.
"""
from __future__ import annotations

import copy
from typing import Any, NamedTuple

import orjson

from machinery.errors import BadRequest, Invalid, TooLarge, UnsupportedMediaType

_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data: an orjson round trip is several times faster than
    copy.deepcopy on an API object. Anything else (dates from YAML, a non-string key, an
    int beyond 64 bits) is copied by copy.deepcopy."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    try:
        return orjson.loads(orjson.dumps(value, option=_PASSTHROUGH))
    except (TypeError, orjson.JSONEncodeError):
        return copy.deepcopy(value)


# --- RFC 7386 JSON merge patch --------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: null deletes, objects merge, anything else replaces."""
    if not isinstance(patch, dict):
        return _copy(patch)
    result = _copy(target) if isinstance(target, dict) else {}
    _merge_patch_into(result, patch)
    return result


def _merge_patch_into(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict):
            if not isinstance(target.get(k), dict):
                target[k] = {}
            _merge_patch_into(target[k], v)
        else:
            target[k] = _copy(v)


# --- RFC 6902 JSON patch ------------------------------------------------------------------

_OPS = {"add": ("value",), "remove": (), "replace": ("value",), "move": ("from",),
        "copy": ("from",), "test": ("value",)}


MAX_JSON_PATCH_OPERATIONS = 10000


def json_patch(target: Any, ops: Any) -> Any:
    """Apply an RFC 6902 patch (a list of operations) to a copy of `target`."""
    if not isinstance(ops, list):
        raise BadRequest("json patch must be a list of operations")
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:  # Kubernetes' maxJSONBytePatcherOperations
        raise TooLarge(f"Request entity too large: The allowed maximum operations in a JSON patch is "
                       f"{MAX_JSON_PATCH_OPERATIONS}, got {len(ops)}")
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise BadRequest(f"json patch operation {i} has no 'op' string: {op!r}")
        for member in ("path",) + _OPS.get(op["op"], ()):
            if member not in op or (member != "value" and not isinstance(op[member], str)):
                raise BadRequest(f"json patch operation {i} ({op['op']}) is missing "
                                 f"'{member}'")
    doc = _copy(target)
    for op in ops:
        doc = _apply_op(doc, op)
    return doc


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise Invalid(f"invalid JSON pointer {path!r}: must be empty or start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(token: str, size: int, path: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return size
    if not token.isdigit() or (token != "0" and token.startswith("0")) or not token.isascii():
        raise Invalid(f"invalid array index {token!r} in path {path!r}")
    i = int(token)
    if i > size or (i == size and not allow_end):
        raise Invalid(f"array index {i} out of bounds in path {path!r}")
    return i


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    """The container holding the last token of `path`, and that token."""
    tokens = _pointer(path)
    node = doc
    for t in tokens[:-1]:
        if isinstance(node, dict) and t in node:
            node = node[t]
        elif isinstance(node, list):
            node = node[_index(t, len(node), path, allow_end=False)]
        else:
            raise Invalid(f"doc is missing path: {path!r}")
    return node, tokens[-1]


def _get(doc: Any, path: str) -> Any:
    if path == "":
        return doc
    node, last = _parent(doc, path)
    if isinstance(node, dict) and last in node:
        return node[last]
    if isinstance(node, list):
        return node[_index(last, len(node), path, allow_end=False)]
    raise Invalid(f"doc is missing path: {path!r}")


def _add(doc: Any, path: str, value: Any) -> Any:
    if path == "":
        return value
    node, last = _parent(doc, path)
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list):
        node.insert(_index(last, len(node), path, allow_end=True), value)
    else:
        raise Invalid(f"doc is missing path: {path!r}")
    return doc


def _remove(doc: Any, path: str) -> Any:
    if path == "":
        raise Invalid("cannot remove the whole document")
    node, last = _parent(doc, path)
    if isinstance(node, dict) and last in node:
        return node.pop(last)
    if isinstance(node, list):
        return node.pop(_index(last, len(node), path, allow_end=False))
    raise Invalid(f"doc is missing path: {path!r}")


def _apply_op(doc: Any, op: dict[str, Any]) -> Any:
    name, path = op["op"], op["path"]
    if name == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    if name == "remove":
        _remove(doc, path)
        return doc
    if name == "replace":
        value = copy.deepcopy(op["value"])
        if path == "":
            return value
        node, last = _parent(doc, path)
        if isinstance(node, dict) and last in node:
            node[last] = value
        elif isinstance(node, list):
            node[_index(last, len(node), path, allow_end=False)] = value
        else:
            raise Invalid(f"doc is missing path: {path!r}")
        return doc
    if name == "move":
        src = op["from"]
        if path.startswith(src + "/"):
            raise Invalid(f"cannot move {src!r} into its own child {path!r}")
        if src == path:
            _get(doc, src)
            return doc
        return _add(doc, path, _remove(doc, src))
    if name == "copy":
        return _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
    if name == "test":
        if not _equal(_get(doc, path), op["value"]):
            raise Invalid(f"test operation failed: value at {path!r} is not "
                          f"{op['value']!r}")
        return doc
    raise Invalid(f"unknown json patch operation {name!r}")


def _jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true != 1."""
    if _jtype(a) != _jtype(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


# --- patch strategies (the struct tags of core/v1, apps/v1, meta/v1 types.go) --------------

class Field(NamedTuple):
    """How a field patches: `merge` lists merge (maps by `key`; scalars as a set)."""
    merge: bool = False
    key: str = ""
    retain_keys: bool = False
    sub: dict[str, Field] = {}


def _merge(key: str = "", sub: dict[str, Any] | None = None, *, retain: bool = False) -> Field:
    return Field(True, key, retain, {} if sub is None else sub)


def _struct(sub: dict[str, Any], *, retain: bool = False) -> Field:
    return Field(False, "", retain, sub)


_ATOMIC = Field()
_CONDITIONS = _merge("type")
_META = _struct({"ownerReferences": _merge("uid"), "finalizers": _merge()})
_CONTAINER = {"ports": _merge("containerPort"), "env": _merge("name"),
              "volumeMounts": _merge("mountPath"), "volumeDevices": _merge("devicePath")}
_POD_SPEC = _struct({
    "volumes": _merge("name", retain=True),
    "initContainers": _merge("name", _CONTAINER),
    "containers": _merge("name", _CONTAINER),
    "ephemeralContainers": _merge("name", _CONTAINER),
    "imagePullSecrets": _merge("name"),
    "hostAliases": _merge("ip"),
    "topologySpreadConstraints": _merge("topologyKey"),
    "schedulingGates": _merge("name"),
    "resourceClaims": _merge("name", retain=True),
})
_POD_STATUS = _struct({"conditions": _CONDITIONS, "podIPs": _merge("ip"),
                       "hostIPs": _merge("ip"),
                       "resourceClaimStatuses": _merge("name", retain=True)})
_TEMPLATE = _struct({"metadata": _META, "spec": _POD_SPEC})
_CONDITIONS_STATUS = _struct({"conditions": _CONDITIONS})


def _kind(**fields: Field) -> dict[str, Field]:
    return {"metadata": _META, **fields}


SCHEMAS: dict[tuple[str, str], dict[str, Field]] = {
    ("", "Pod"): _kind(spec=_POD_SPEC, status=_POD_STATUS),
    ("apps", "Deployment"): _kind(
        spec=_struct({"template": _TEMPLATE, "strategy": _struct({}, retain=True)}),
        status=_CONDITIONS_STATUS),
    ("apps", "ReplicaSet"): _kind(spec=_struct({"template": _TEMPLATE}),
                                  status=_CONDITIONS_STATUS),
    ("", "Service"): _kind(spec=_struct({"ports": _merge("port")}), status=_CONDITIONS_STATUS),
    ("", "Endpoints"): _kind(),  # subsets are atomic
    ("", "ConfigMap"): _kind(),
    ("", "Secret"): _kind(),
    ("", "Node"): _kind(spec=_struct({"podCIDRs": _merge()}),  # taints are atomic
                        status=_struct({"conditions": _CONDITIONS,
                                        "addresses": _merge("type")})),
    ("", "Namespace"): _kind(status=_CONDITIONS_STATUS),
    ("", "ServiceAccount"): _kind(secrets=_merge("name")),
    ("", "Event"): _kind(),
    ("events.k8s.io", "Event"): _kind(),
    ("coordination.k8s.io", "Lease"): _kind(),
    ("discovery.k8s.io", "EndpointSlice"): _kind(),  # endpoints and ports are atomic
    ("autoscaling", "Scale"): _kind(),
    # Rules, subjects and selectors carry no patch strategy in Go: atomic lists.
    ("rbac.authorization.k8s.io", "Role"): _kind(),
    ("rbac.authorization.k8s.io", "ClusterRole"): _kind(),
    ("rbac.authorization.k8s.io", "RoleBinding"): _kind(),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): _kind(),
    ("apps", "ControllerRevision"): _kind(),  # data is a RawExtension: replaced whole
    ("apps", "DaemonSet"): _kind(spec=_struct({"template": _TEMPLATE}),  # updateStrategy: no retainKeys
                                 status=_CONDITIONS_STATUS),
    ("", "ReplicationController"): _kind(spec=_struct({"template": _TEMPLATE}),
                                         status=_CONDITIONS_STATUS),
    ("batch", "Job"): _kind(spec=_struct({"template": _TEMPLATE}), status=_CONDITIONS_STATUS),
    ("batch", "CronJob"): _kind(spec=_struct({"jobTemplate": _struct({
        "metadata": _META, "spec": _struct({"template": _TEMPLATE})})})),  # status.active is atomic
    # Its conditions merge by type; the selector is atomic.
    ("policy", "PodDisruptionBudget"): _kind(status=_CONDITIONS_STATUS),
    # volumeClaimTemplates carry no patch strategy: atomic.
    ("apps", "StatefulSet"): _kind(spec=_struct({"template": _TEMPLATE}), status=_CONDITIONS_STATUS),
    # Access modes, mount options and allowed topologies carry no patch strategy: atomic.
    ("", "PersistentVolume"): _kind(),
    ("", "PersistentVolumeClaim"): _kind(status=_CONDITIONS_STATUS),
    ("storage.k8s.io", "StorageClass"): _kind(),
    # h-hpa (issue 18): metrics and the behavior's policies are atomic lists; conditions
    # merge by type (autoscaling/v2's tags; v1 has no lists).
    ("autoscaling", "HorizontalPodAutoscaler"): _kind(status=_CONDITIONS_STATUS),
}


def supports_strategic_merge(kind: str, group: str = "") -> bool:
    return (group, kind) in SCHEMAS


def _schema(kind: str, group: str) -> dict[str, Field]:
    try:
        return SCHEMAS[(group, kind)]
    except KeyError:
        # Kubernetes refuses strategic merge for kinds it has no struct tags for (CRDs).
        what = f"{kind}.{group}" if group else kind
        raise UnsupportedMediaType(
            f"strategic merge patch is not supported for {what}; use "
            "application/merge-patch+json or application/json-patch+json") from None


def _field(schema: dict[str, Field], key: str) -> Field:
    return schema.get(key, _ATOMIC)


# --- applying a strategic merge patch -----------------------------------------------------

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"


def strategic_merge_patch(original: dict[str, Any], patch: dict[str, Any], kind: str,
                          group: str = "") -> dict[str, Any]:
    """Apply a strategic merge patch to an object of `kind` in API `group`.

    Raises BadRequest for a malformed patch, Invalid when the patch contradicts its
    own `$retainKeys`, UnsupportedMediaType for kinds without patch strategies.
    """
    schema = _schema(kind, group)
    if not isinstance(patch, dict):
        raise BadRequest("strategic merge patch must be a JSON object")
    base = _copy(original) if isinstance(original, dict) else {}
    return _merge_map(base, _copy(patch), schema)


def _merge_map(orig: dict[str, Any], patch: dict[str, Any], schema: dict[str, Field]) -> dict[str, Any]:
    """Merge `patch` into `orig`; both are private copies and may be consumed."""
    directive = patch.pop(_DIRECTIVE, None)
    if directive == "replace":
        return _merge_map({}, patch, schema)
    if directive == "delete":
        return {}
    if directive not in (None, "merge"):
        raise BadRequest(f"unknown patch type: {directive!r} in map")
    if _RETAIN_KEYS in patch:
        _retain_keys(orig, patch)
    for k in [k for k in patch if k.startswith(_SET_ORDER)]:
        _set_element_order(orig, patch, k, schema)
    for k, pv in patch.items():
        if k.startswith(_DELETE_FROM):
            name = k[len(_DELETE_FROM):]
            if not isinstance(pv, list):
                raise BadRequest(f"{k} must be a list")
            if isinstance(orig.get(name), list):
                orig[name] = [v for v in orig[name] if not any(_equal(v, d) for d in pv)]
        elif k.startswith("$"):
            continue  # an unknown directive: like an unknown field, it is dropped
        elif pv is None:
            orig.pop(k, None)
        else:
            orig[k] = _merge_value(orig.get(k), pv, _field(schema, k))
    return orig


def _merge_value(ov: Any, pv: Any, field: Field) -> Any:
    # A value of another JSON type (or a missing one) is replaced: merge into an empty
    # container so that directives and nulls inside the patch value still disappear.
    if isinstance(pv, dict):
        return _merge_map(ov if isinstance(ov, dict) else {}, pv, field.sub)
    if isinstance(pv, list):
        if field.merge:
            return _merge_slice(ov if isinstance(ov, list) else [], pv, field)
        return _strip(pv)
    return pv


def _strip(v: Any) -> Any:
    """A patch value with directives and nulls removed (Kubernetes' removeDirectives)."""
    if isinstance(v, dict):
        return {k: _strip(x) for k, x in v.items() if x is not None and not k.startswith("$")}
    if isinstance(v, list):
        return [_strip(x) for x in v if not (isinstance(x, dict) and _DIRECTIVE in x)]
    return v


def _retain_keys(orig: dict[str, Any], patch: dict[str, Any]) -> None:
    keep = patch.pop(_RETAIN_KEYS)
    if not isinstance(keep, list):
        raise BadRequest("invalid patch: $retainKeys must be a list")
    for k, v in patch.items():
        if v is not None and not k.startswith("$") and k not in keep:
            raise BadRequest(f"invalid patch: field {k!r} is not listed in $retainKeys")
    for k in [k for k in orig if k not in keep]:
        del orig[k]


def _key_of(item: Any, key: str) -> Any:
    if not isinstance(item, dict) or key not in item:
        raise BadRequest(f"map {item!r} does not contain declared merge key: {key}")
    return item[key]


def _index_in(items: list[Any], item: Any, key: str) -> int:
    """Position of `item` in `items`, by merge key for maps and by value for scalars."""
    for i, x in enumerate(items):
        if _equal(x.get(key) if key and isinstance(x, dict) else x,
                  item.get(key) if key and isinstance(item, dict) else item):
            return i
    return -1


def _merge_list(orig: list[Any], patch: list[Any], field: Field) -> tuple[list[Any], list[Any], list[Any]]:
    """Merge a patch list into a list. Returns the merged list (new items appended, not
    yet ordered), the list after deletions only, and the server order Kubernetes sorts
    server-only items by when the patch carries $setElementOrder."""
    if all(not isinstance(x, (dict, list)) for x in orig + patch):
        merged: list[Any] = []
        for v in orig + patch:
            if not any(_equal(v, m) for m in merged):
                merged.append(v)
        return merged, orig, orig
    if not all(isinstance(x, dict) for x in orig + patch):
        raise BadRequest("a strategic merge list must hold only maps or only scalars")
    key = field.key
    if not key:
        raise BadRequest("cannot merge lists without merge key")
    plain, replace = [], False
    merged = list(orig)
    # Go deletes and appends in the original slice's backing array, and the caller's
    # view of that array (`view`, fixed length) is the order server-only items keep.
    view = list(orig)
    for item in patch:
        directive = item.get(_DIRECTIVE)
        if directive is None:
            _key_of(item, key)
            plain.append(item)
        elif directive == "delete":
            value = _key_of(item, key)
            merged = [o for o in merged if not _equal(o.get(key), value)]
            view[:len(merged)] = merged
        elif directive == "replace":
            replace = True
        else:
            raise BadRequest(f"unknown patch type: {directive!r} in list element")
    if replace:
        merged = [_merge_map({}, p, field.sub) for p in plain]
        return merged, merged, merged
    base = list(merged)
    for item in plain:
        i = _index_in(merged, item, key)
        if i >= 0:
            merged[i] = _merge_map(merged[i], item, field.sub)
        else:
            merged.append(_merge_map({}, item, field.sub))
            if len(merged) <= len(view):
                view[len(merged) - 1] = merged[-1]
    return merged, base, view


def _merge_slice(orig: list[Any], patch: list[Any], field: Field) -> list[Any]:
    """A merging list patched without $setElementOrder: patch items in patch order."""
    merged, base, _ = _merge_list(orig, patch, field)
    plain = [p for p in patch if not (isinstance(p, dict) and _DIRECTIVE in p)]
    key = field.key if any(isinstance(x, dict) for x in merged) else ""
    # Kubernetes sorts server-only items by the list after deletions, before appends.
    return _order(merged, plain, base, key)


def _order(merged: list[Any], patch_order: list[Any], server_order: list[Any], key: str) -> list[Any]:
    """Kubernetes' normalizeElementOrder: the patch's items in the patch's order, the
    server-only items in the server's order, interleaved where the server order allows."""
    in_patch = [x for x in merged if _index_in(patch_order, x, key) >= 0]
    server_only = [x for x in merged if _index_in(patch_order, x, key) < 0]
    in_patch.sort(key=lambda x: _index_in(patch_order, x, key))
    server_only.sort(key=lambda x: _index_in(server_order, x, key))

    def server_first(left: Any, right: Any) -> bool:
        li, ri = _index_in(server_order, left, key), _index_in(server_order, right, key)
        return 0 <= li < ri and ri >= 0

    out = []
    while server_only or in_patch:
        if in_patch and not (server_only and server_first(server_only[0], in_patch[0])):
            out.append(in_patch.pop(0))
        else:
            out.append(server_only.pop(0))
    return out


def _set_element_order(orig: dict[str, Any], patch: dict[str, Any], directive_key: str,
                       schema: dict[str, Field]) -> None:
    order = patch.pop(directive_key)
    name = directive_key[len(_SET_ORDER):]
    field = _field(schema, name)
    if not isinstance(order, list):
        raise BadRequest(f"invalid patch: {directive_key} must be a list")
    ov, pv = orig.get(name), patch.pop(name, None)
    if ov is not None and not isinstance(ov, list) or pv is not None and not isinstance(pv, list):
        raise BadRequest(f"invalid patch: {directive_key} applies to a field that is not a list")
    key = field.key if any(isinstance(x, dict) for x in (ov or []) + (pv or []) + order) else ""
    if key:
        for item in order:
            _key_of(item, key)
    _check_order(pv or [], order, key, directive_key)
    if pv is None:
        if ov is None:
            return
        merged = server = ov
    elif field.merge:
        merged, _, server = _merge_list(ov or [], pv, field)
    else:
        merged, server = _strip(pv), ov or []
    orig[name] = _order(merged, order, server, key)


def _check_order(items: list[Any], order: list[Any], key: str, directive_key: str) -> None:
    """Every (non-directive) patch item must appear in the order list, in that order."""
    pos = 0
    for item in items:
        if isinstance(item, dict) and _DIRECTIVE in item:
            continue
        while pos < len(order) and _index_in([order[pos]], item, key) < 0:
            pos += 1
        if pos == len(order):
            raise BadRequest(f"invalid patch: the order of the patch list does not match "
                             f"{directive_key}")
        pos += 1


# --- computing the client-side apply patch --------------------------------------------------


def three_way_strategic_patch(original: dict[str, Any] | None, modified: dict[str, Any],
                              current: dict[str, Any], kind: str,
                              group: str = "") -> dict[str, Any]:
    """The strategic merge patch `kubectl apply` sends (CreateThreeWayMergePatch).

    original: the last-applied configuration (None if the object never was applied);
    modified: the new manifest; current: the live object. The patch sets what differs
    between current and modified, and deletes what the last-applied configuration had
    and the manifest no longer has; fields only others set are left alone. kubectl also
    writes the new last-applied annotation into `modified` before diffing: that is the
    caller's job here. Returns {} when nothing needs to change.
    """
    schema = _schema(kind, group)
    delta = _diff_maps(current or {}, modified, schema, ignore_deletions=True)
    deletions = _diff_maps(original or {}, modified, schema, ignore_changes=True)
    return _merge_patches(deletions, delta, schema)


def _diff_maps(orig: dict[str, Any], mod: dict[str, Any], schema: dict[str, Field], *, retain: bool = False,
               ignore_deletions: bool = False, ignore_changes: bool = False) -> dict[str, Any]:
    opts = {"ignore_deletions": ignore_deletions, "ignore_changes": ignore_changes}
    patch: dict[str, Any] = {}
    for k, mv in mod.items():
        if k not in orig or _jtype(orig[k]) != _jtype(mv):
            if not ignore_changes:
                patch[k] = copy.deepcopy(mv)
            continue
        ov, field = orig[k], _field(schema, k)
        if isinstance(mv, dict):
            sub = _diff_maps(ov, mv, field.sub, retain=field.retain_keys, **opts)
            if sub:
                patch[k] = sub
        elif isinstance(mv, list) and field.merge:
            _diff_lists(k, ov, mv, field, patch, **opts)
        elif not ignore_changes and not _equal(ov, mv):
            patch[k] = copy.deepcopy(mv)
    if not ignore_deletions:
        patch.update({k: None for k in orig if k not in mod})
    if retain:
        keys = sorted(k for k, v in mod.items() if v is not None)
        extra = any(v is not None and k not in mod for k, v in orig.items())
        if keys and (patch or extra):
            patch[_RETAIN_KEYS] = keys
    return patch


def _diff_lists(name: str, orig: list[Any], mod: list[Any], field: Field, patch: dict[str, Any], *,
                ignore_deletions: bool, ignore_changes: bool) -> None:
    if not orig:
        if mod and not ignore_changes:
            patch[name] = copy.deepcopy(mod)
        return
    if any(isinstance(x, dict) for x in orig + mod):
        key = field.key
        items = []
        for m in mod:
            _key_of(m, key)
            i = _index_in(orig, m, key)
            if i >= 0:
                sub = _diff_maps(orig[i], m, field.sub, retain=field.retain_keys,
                                 ignore_deletions=ignore_deletions,
                                 ignore_changes=ignore_changes)
                if sub:
                    items.append({**sub, key: m[key]})
            elif not ignore_changes:
                items.append(copy.deepcopy(m))
        if not ignore_deletions:
            items += [{_DIRECTIVE: "delete", key: _key_of(o, key)} for o in orig
                      if _index_in(mod, o, key) < 0]
        same_order = [o.get(key) for o in orig] == [m.get(key) for m in mod]
        if items:
            patch[name] = items
        if mod and (items or (not ignore_changes and not same_order)):
            patch[_SET_ORDER + name] = [{key: m[key]} for m in mod]
        return
    added = [] if ignore_changes else [v for v in mod if not any(_equal(v, o) for o in orig)]
    deleted = [] if ignore_deletions else sorted(
        {str(v): v for v in orig if not any(_equal(v, m) for m in mod)}.values(), key=str)
    if added:
        patch[name] = added
    if deleted:
        patch[_DELETE_FROM + name] = deleted
    if mod and (deleted or (not ignore_changes and not _equal(orig, mod))):
        patch[_SET_ORDER + name] = copy.deepcopy(mod)


def _merge_patches(a: dict[str, Any], b: dict[str, Any], schema: dict[str, Field]) -> dict[str, Any]:
    """Combine the deletions patch `a` with the changes patch `b` (which never conflict:
    one only touches keys missing from the manifest, the other only keys in it)."""
    out = copy.deepcopy(a)
    for k, bv in b.items():
        av, field = out.get(k), _field(schema, k)
        if isinstance(av, dict) and isinstance(bv, dict):
            out[k] = _merge_patches(av, bv, field.sub)
        elif isinstance(av, list) and isinstance(bv, list) and field.merge and field.key \
                and not k.startswith("$"):
            merged = [x for x in av if _DIRECTIVE not in x]
            for item in bv:
                i = _index_in(merged, item, field.key)
                if i >= 0:
                    merged[i] = _merge_patches(merged[i], item, field.sub)
                else:
                    merged.append(copy.deepcopy(item))
            out[k] = merged + [x for x in av if _DIRECTIVE in x]
        elif isinstance(av, list) and isinstance(bv, list) and field.merge \
                and not k.startswith("$"):
            out[k] = av + [x for x in bv if not any(_equal(x, y) for y in av)]
        else:
            out[k] = copy.deepcopy(bv)
    return out
