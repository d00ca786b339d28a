"""Field ownership: `metadata.managedFields` and server-side apply.

What it guarantees (a small version of Kubernetes' structured-merge-diff):
- A field set is a set of paths to leaves, in FieldsV1 notation: `f:<field>` for a
  struct field or map key, `k:{"name":"nginx"}` for an element of an associative list
  (`x-kubernetes-list-type: map`, keyed by `x-kubernetes-list-map-keys`), `v:<json>` for
  an element of a set. Atomic lists and atomic maps (`x-kubernetes-map-type: atomic`,
  e.g. label selectors) are single leaves, as is an empty map. An element of an
  associative list is itself a member (FieldsV1 `.`). List and map types come from the
  1.32 schemas (`apiserver.openapi.definitions`); where there is no schema, maps are
  granular and lists atomic.
- Tracked: everything but `apiVersion`, `kind`, and of `metadata` only `labels`,
  `annotations`, `finalizers`, `ownerReferences`. For kinds with a status subresource,
  writes to the main resource own no `status` fields and writes to `/status` own only
  those.
- `record_update`: a create/update/patch by manager M takes every field it added or
  changed (Operation `Update`); fields it changed or removed leave every other manager.
- `apply`: server-side apply of a configuration by manager M (Operation `Apply`):
  the configuration is merged into the live object (maps by key, associative lists by
  their keys, sets by value, everything else replaced); a field the merge changes that
  another manager owns is a conflict (409, one cause per field) unless `force`, which
  moves the field to M; fields M applied before and no longer applies are removed
  unless another manager owns them (or something under them); M then owns exactly the
  configuration's fields.
Simplified against Kubernetes: no per-version conversion of field sets (each kind has
one version here), null values in a configuration are ignored rather than owned, and an
element key missing from a configuration is defaulted only for `protocol` (TCP).

Pure functions over plain dicts, safe from any task; nothing here does I/O.
"""
from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from apiserver import openapi
from apiserver.registry import ResourceType
from machinery import errors

Path = tuple[str, ...]
_MISSING = object()
_ELEMENT = object()  # the value recorded for a list element that is itself a member
_TRACKED_META = ("labels", "annotations", "finalizers", "ownerReferences")
# Kubernetes defaults these list-map keys before it computes a key (containerPort+protocol).
_KEY_DEFAULTS = {"protocol": "TCP"}


# -- schemas ---------------------------------------------------------------------------

# Every schema node handled here is part of `openapi.definitions()` or a result cached
# below, all kept for the life of the process and never changed: their ids are stable
# cache keys, and the caches hold at most one entry per schema node.
_RESOLVED: dict[int, dict | None] = {}
_CHILDREN: dict[tuple[int, str], dict | None] = {}


def _resolve(s: dict | None) -> dict | None:
    """A property schema with its `$ref` followed; the property's own keys win."""
    if s is None:
        return None
    found = _RESOLVED.get(id(s), _MISSING)
    if found is _MISSING:
        found = s
        while found is not None and (name := openapi.ref_name(found)) is not None:
            target = openapi.definitions().get(name)
            found = None if target is None else \
                {**target, **{k: v for k, v in found.items() if k != "$ref"}}
        _RESOLVED[id(s)] = found
    return found


def _child(schema: dict | None, key: str) -> dict | None:
    if schema is None:
        return None
    found = _CHILDREN.get((id(schema), key), _MISSING)
    if found is _MISSING:
        prop = (schema.get("properties") or {}).get(key)
        if prop is None:
            prop = schema.get("additionalProperties")
        found = _CHILDREN[(id(schema), key)] = _resolve(prop) if isinstance(prop, dict) else None
    return found


def kind_schema(rt: ResourceType) -> dict | None:
    name = openapi.kind_definition(rt.group, rt.version, rt.kind)
    if name is None:  # a custom resource: its CRD's schema (kept for the process's life)
        return rt.extra.get("schema") or None
    return openapi.definitions().get(name)


def _list_type(schema: dict | None) -> str:
    return (schema or {}).get("x-kubernetes-list-type") or "atomic"


def _element_key(item: dict, keys: list[str]) -> str:
    values = {k: item.get(k, _KEY_DEFAULTS.get(k)) for k in keys}
    return "k:" + json.dumps({k: v for k, v in values.items() if v is not None},
                             sort_keys=True, separators=(",", ":"))


def _value_key(item: Any) -> str:
    return "v:" + json.dumps(item, sort_keys=True, separators=(",", ":"))


# -- field sets ------------------------------------------------------------------------

def _tracked(obj: dict, rt: ResourceType, subresource: str | None) -> dict:
    """The part of an object whose fields have owners."""
    if subresource in ("status", "approval"):  # a CSR's approval writes its status' conditions
        return {"status": obj["status"]} if obj.get("status") is not None else {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    if rt.status_subresource:
        out.pop("status", None)
    md = obj.get("metadata") or {}
    meta = {k: md[k] for k in _TRACKED_META if md.get(k) is not None}
    if meta:
        out["metadata"] = meta
    return out


def flatten(value: Any, schema: dict | None, path: Path = (),
            out: dict | None = None) -> dict[Path, Any]:
    """Every owned path of `value` -> the value there (`_ELEMENT` for a list element)."""
    out = {} if out is None else out
    if isinstance(value, dict) and value and (schema or {}).get("x-kubernetes-map-type") != "atomic":
        for k, v in value.items():
            if v is not None:
                flatten(v, _child(schema, k), path + ("f:" + k,), out)
    elif isinstance(value, list) and value and _list_type(schema) in ("map", "set") \
            and (_list_type(schema) == "set" or all(isinstance(x, dict) for x in value)):
        items = _resolve(schema.get("items"))
        keys = schema.get("x-kubernetes-list-map-keys") or []
        for item in value:
            if _list_type(schema) == "set":
                out[path + (_value_key(item),)] = item
            else:
                p = path + (_element_key(item, keys),)
                out[p] = _ELEMENT
                flatten(item, items, p, out)
    elif path:  # an empty object at the root owns nothing
        out[path] = value
    return out


def _same(a: Any, b: Any) -> bool:
    # Exact types: Python's True == 1 would hide a change from 1 to true.
    return type(a) is type(b) and a == b


def _changed(before: dict[Path, Any], after: dict[Path, Any]) -> set[Path]:
    return {p for p, v in after.items() if not _same(before.get(p, _MISSING), v)}


def fields_v1(paths: set[Path]) -> dict:
    """A field set as FieldsV1 JSON: nested `{"f:spec": {"f:replicas": {}}}`, `.` for
    a member that also has members below it."""
    root: dict = {}
    for p in sorted(paths):
        node = root
        for pe in p:
            node = node.setdefault(pe, {})
        node["."] = {}

    def clean(node: dict) -> dict:
        if list(node) == ["."]:
            return {}
        return {k: clean(v) for k, v in node.items()}
    return clean(root)


@functools.lru_cache(maxsize=4096)  # the same few keys (containers, ports...) recur
def _normalize(pe: str) -> str:
    if pe[:2] in ("k:", "v:"):
        try:
            return pe[:2] + json.dumps(json.loads(pe[2:]), sort_keys=True, separators=(",", ":"))
        except ValueError:
            return pe
    return pe


def _parse_fields_v1(fields: Any) -> set[Path]:
    """parse_fields_v1, remembered by the field set's JSON: a ReplicaSet's pods, and
    the writes to one object, carry the same field sets over and over."""
    try:
        return set(_parse_serialized(orjson.dumps(fields)))
    except (TypeError, orjson.JSONEncodeError):
        return parse_fields_v1(fields)


@functools.lru_cache(maxsize=1024)
def _parse_serialized(raw: bytes) -> frozenset[Path]:
    return frozenset(parse_fields_v1(orjson.loads(raw)))


def parse_fields_v1(fields: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(fields, dict):
        return out
    for k, v in fields.items():
        if k == ".":
            out.add(prefix)
        elif isinstance(v, dict) and v:
            out |= parse_fields_v1(v, prefix + (_normalize(k),))
        else:
            out.add(prefix + (_normalize(k),))
    return out


def path_string(p: Path) -> str:
    """`.spec.containers[name="nginx"].image`, as Kubernetes prints a field path."""
    out = ""
    for pe in p:
        kind, body = pe[:2], pe[2:]
        if kind == "f:":
            out += "." + body
        elif kind == "k:":
            try:
                keys = json.loads(body)
                out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
            except ValueError:
                out += f"[{body}]"
        else:
            out += f"[={body}]"
    return out


# -- managers --------------------------------------------------------------------------

@dataclass
class Manager:
    manager: str
    operation: str
    subresource: str = ""
    api_version: str = ""
    time: str = ""
    fields: set[Path] = field(default_factory=set)

    @property
    def id(self) -> tuple[str, str, str]:
        return self.manager, self.operation, self.subresource

    def describe(self) -> str:
        """How a conflict names this manager, as Kubernetes' printManager does."""
        s = json.dumps(self.manager)
        if self.subresource:
            s += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            s += f" using {self.api_version}"
        return s


def parse_managers(managed: Any) -> list[Manager]:
    """Entries that are not well-formed are dropped, as Kubernetes resets bad managedFields."""
    out = []
    for e in managed if isinstance(managed, list) else ():
        if not isinstance(e, dict) or not isinstance(e.get("manager"), str) \
                or e.get("operation") not in ("Apply", "Update"):
            continue
        out.append(Manager(e["manager"], e["operation"], e.get("subresource") or "",
                           e.get("apiVersion") or "", e.get("time") or "",
                           _parse_fields_v1(e.get("fieldsV1"))))
    return out


def render_managers(managers: list[Manager]) -> list[dict]:
    out = []
    for m in managers:
        if not m.fields:
            continue
        e = {"manager": m.manager, "operation": m.operation, "apiVersion": m.api_version,
             "time": m.time, "fieldsType": "FieldsV1", "fieldsV1": fields_v1(m.fields)}
        if m.subresource:
            e["subresource"] = m.subresource
        out.append(e)
    return out


def _entry(managers: list[Manager], manager: str, operation: str, subresource: str) -> Manager:
    for m in managers:
        if m.id == (manager, operation, subresource):
            return m
    m = Manager(manager, operation, subresource)
    managers.append(m)
    return m


# -- operations ------------------------------------------------------------------------

def record_update(old: dict | None, new: dict, rt: ResourceType, *, manager: str,
                  subresource: str | None, now: str) -> None:
    """Give `manager` the fields this write added or changed (sets new's managedFields)."""
    schema = kind_schema(rt)
    tracked_old, tracked_new = (_tracked(old, rt, subresource) if old else {}), _tracked(new, rt, subresource)
    if tracked_old == tracked_new:
        return  # the common no-op or status-only write: nothing changes hands
    before, after = flatten(tracked_old, schema), flatten(tracked_new, schema)
    changed = _changed(before, after)
    lost = changed | (before.keys() - after.keys())
    if not lost:
        return
    managers = parse_managers(new["metadata"].get("managedFields"))
    for m in managers:
        m.fields -= lost
    if changed:  # the entry's time says when its manager last changed something
        me = _entry(managers, manager, "Update", subresource or "")
        me.fields |= changed
        me.api_version, me.time = rt.api_version, now
    new["metadata"]["managedFields"] = render_managers(managers)


def apply(live: dict | None, config: dict, rt: ResourceType, *, manager: str, force: bool,
          subresource: str | None, now: str) -> dict:
    """The object after `manager` applies `config` to `live` (None: to be created), with
    its managedFields. Raises Conflict naming every contested field and its owner."""
    schema = kind_schema(rt)
    cfg = _tracked(config, rt, subresource)
    applied = flatten(cfg, schema)
    if live is None:
        merged = copy.deepcopy(config)
        managers: list[Manager] = []
    else:
        merged = copy.deepcopy(live)
        managers = parse_managers(live["metadata"].get("managedFields"))
        meta = cfg.pop("metadata", None)
        for k, v in cfg.items():
            merged[k] = _merge(merged.get(k), v, _child(schema, k))
        if meta:
            md = merged["metadata"]
            for k, v in meta.items():
                md[k] = _merge(md.get(k), v, _child(_child(schema, "metadata"), k))
    me = _entry(managers, manager, "Apply", subresource or "")
    others = [m for m in managers if m is not me]
    if live is not None:
        before = flatten(_tracked(live, rt, subresource), schema)
        changed = _changed(before, flatten(_tracked(merged, rt, subresource), schema)) & applied.keys()
        conflicts = [(p, m) for m in others for p in sorted(m.fields & changed)]
        if conflicts and not force:
            raise _conflict_error(conflicts)
        for p, m in conflicts:
            m.fields.discard(p)
        dropped = me.fields - applied.keys()
        if dropped:
            kept = {p[:i] for m in others for p in m.fields for i in range(1, len(p) + 1)}
            _remove(merged, [p for p in dropped if p not in kept])
    if live is None or merged != live or not me.time:
        me.time = now  # an apply that changes nothing keeps the object as it was
    me.fields = set(applied)
    me.api_version = rt.api_version
    merged.setdefault("metadata", {})["managedFields"] = render_managers(managers)
    return merged


def _merge(live: Any, cfg: Any, schema: dict | None) -> Any:
    """`cfg` merged into `live` (which the caller owns and may be changed)."""
    if cfg is None:
        return live
    if isinstance(cfg, dict) and isinstance(live, dict) \
            and (schema or {}).get("x-kubernetes-map-type") != "atomic":
        for k, v in cfg.items():
            if v is not None:
                live[k] = _merge(live.get(k), v, _child(schema, k))
        return live
    kind = _list_type(schema)
    if isinstance(cfg, list) and isinstance(live, list) and kind == "set":
        return live + [copy.deepcopy(x) for x in cfg if x not in live]
    if isinstance(cfg, list) and isinstance(live, list) and kind == "map" \
            and all(isinstance(x, dict) for x in live + cfg):
        keys = schema.get("x-kubernetes-list-map-keys") or []
        items = _resolve(schema.get("items"))
        index = {_element_key(x, keys): i for i, x in enumerate(live)}
        for item in cfg:
            i = index.get(_element_key(item, keys))
            if i is None:
                index[_element_key(item, keys)] = len(live)
                live.append(copy.deepcopy(item))
            else:
                live[i] = _merge(live[i], item, items)
        return live
    return copy.deepcopy(cfg)


def _step(node: Any, pe: str) -> tuple[Any, Any]:
    """(container, key or index) of path element `pe` in `node`, or (None, None)."""
    kind, body = pe[:2], pe[2:]
    if kind == "f:" and isinstance(node, dict) and body in node:
        return node, body
    if kind in ("k:", "v:") and isinstance(node, list):
        want = json.loads(body)
        for i, item in enumerate(node):
            if kind == "v:" and item == want:
                return node, i
            if kind == "k:" and isinstance(item, dict) and all(
                    item.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in want.items()):
                return node, i
    return None, None


def _remove(obj: dict, paths: list[Path]) -> None:
    """Remove each path; a map or list it leaves empty goes too (as Go's omitempty)."""
    for p in sorted(paths, key=len):  # parents first: an element is found by its key fields
        chain, node = [], obj
        for pe in p:
            container, key = _step(node, pe)
            if container is None:
                break
            chain.append((container, key))
            node = container[key]
        else:
            while chain:
                container, key = chain.pop()
                del container[key]
                if container or not chain:
                    break


def _conflict_error(conflicts: list[tuple[Path, Manager]]) -> errors.Conflict:
    causes = [{"type": "FieldManagerConflict", "message": f"conflict with {m.describe()}",
               "field": path_string(p)} for p, m in conflicts]
    if len(conflicts) == 1:
        p, m = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {m.describe()}: {path_string(p)}"
    else:
        lines = []
        for who in sorted({m.describe() for _, m in conflicts}):
            lines.append(f"conflicts with {who}:")
            lines += [f"- {path_string(p)}" for p, m in conflicts if m.describe() == who]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return errors.Conflict(message, causes=causes)
