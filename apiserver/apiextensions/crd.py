"""What a CustomResourceDefinition serves: one `registry.ResourceType` per served version
(`resource_types(crd)`), stored at the storage version under `/registry/<group>/<plural>/`,
with the accepted names, the status and scale subresources, the printer columns, the
deprecation warning, and a strategy that prunes, defaults and validates custom
resources with the version's schema (apiserver/apiextensions/schema.py).

Pure: no I/O here.
"""
from __future__ import annotations

import copy
import time
from typing import Any

import orjson

from apiserver import registry, tables, validation
from apiserver.apiextensions import schema as schemas
from apiserver.apiextensions.definition import storage_version
from apiserver.registry import ResourceType
from apiserver.strategies import Strategy
from machinery import errors, times
from machinery.duration import human_duration


def _m(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list:
    return v if isinstance(v, list) else []


# -- one served version of a CRD -------------------------------------------------------


def _json_path(path: str) -> list[str | int]:
    """`.spec.replicas` or `.spec.items[0].name` as steps (what printer columns and the
    scale subresource's paths use)."""
    steps: list[str | int] = []
    for part in path.strip().strip("{}").lstrip(".").split("."):
        name, _, rest = part.partition("[")
        if name:
            steps.append(name)
        while rest:
            idx, _, rest = rest.partition("]")
            steps.append(int(idx) if idx.lstrip("-").isdigit() else idx.strip("'\""))
            rest = rest.lstrip("[")
    return steps


def get_path(obj: Any, path: str) -> Any:
    cur = obj
    for step in _json_path(path):
        if isinstance(step, int) and isinstance(cur, list) and -len(cur) <= step < len(cur):
            cur = cur[step]
        elif isinstance(step, str) and isinstance(cur, dict) and step in cur:
            cur = cur[step]
        else:
            return None
    return cur


def set_path(obj: dict, path: str, value: Any) -> None:
    steps = _json_path(path)
    cur = obj
    for step in steps[:-1]:
        nxt = cur.get(step) if isinstance(cur, dict) else None
        if not isinstance(nxt, dict):
            nxt = cur[step] = {}
        cur = nxt
    cur[steps[-1]] = value


def _cell(ctype: str, v: Any) -> Any:
    """A printer column's cell as Kubernetes' CRD table convertor makes it: the value if
    it has the column's type (a date as its age), else none."""
    if ctype == "integer" and isinstance(v, (int, float)) and not isinstance(v, bool):
        return int(v)
    if ctype == "number" and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if ctype == "boolean" and isinstance(v, bool):
        return v
    if ctype == "string" and isinstance(v, str):
        return v
    if ctype == "date" and isinstance(v, str):
        try:
            return human_duration(time.time() - times.parse(v))
        except ValueError:
            return "<invalid>"
    return None


def _column(col: dict) -> tables.Col:
    path, ctype = col.get("jsonPath", ""), col.get("type", "string")
    return (col.get("name", ""), ctype, col.get("description", ""), int(col.get("priority") or 0),
            lambda obj: _cell(ctype, get_path(obj, path)))


def _columns(version: dict) -> tuple[tables.Col, ...]:
    cols = _l(version.get("additionalPrinterColumns"))
    if not cols:
        return (tables.NAME, tables.AGE)
    return (tables.NAME, *(_column(c) for c in cols if isinstance(c, dict)))


class CustomResourceStrategy(Strategy):
    """Custom resources of one CRD version: pruned and defaulted by its schema on every
    write, then validated by it (apiextensions-apiserver's customresource strategy)."""

    def __init__(self, crd: dict, version: dict):
        subs = _m(version.get("subresources"))
        super().__init__(generation=True, status_subresource="status" in subs)
        self.crd_name = crd["metadata"]["name"]
        raw = _m(_m(version.get("schema")).get("openAPIV3Schema"))
        self.schema = schemas.compile_schema(raw) if raw else None
        self.scale = _m(subs.get("scale")) if "scale" in subs else None
        # id(object being written) -> (it, the paths pruning dropped); see `_shape`.
        self._dropped: dict[int, tuple[dict, list[str]]] = {}

    def _shape(self, obj: dict) -> None:
        """Prune and default `obj`, remembering what pruning dropped: `schema_causes`
        reports it as unknown fields (fieldValidation: warned by default, refused by
        Strict), as Kubernetes reports what it prunes while decoding."""
        if self.schema is not None:
            dropped = self.schema.prune(obj)
            if dropped:
                if len(self._dropped) > 1024:  # a write refused before validation left its entry
                    self._dropped.clear()
                self._dropped[id(obj)] = (obj, dropped)
            self.schema.default(obj)

    def prepare_for_create(self, obj: dict) -> None:
        super().prepare_for_create(obj)
        self._shape(obj)

    def prepare_for_update(self, new: dict, old: dict) -> None:
        self._shape(new)
        super().prepare_for_update(new, old)
        if not self.status_subresource and new.get("status") != old.get("status") \
                and new["metadata"].get("generation") == old["metadata"].get("generation"):
            # Without a status subresource any change but metadata's is a new generation.
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1

    def prepare_for_status_update(self, new: dict, old: dict) -> dict:
        merged = super().prepare_for_status_update(new, old)
        self._shape(merged)
        return merged

    def schema_causes(self, rt: ResourceType, obj: dict) -> list[dict]:
        # The CRD's schema is checked by `validate`; here, the fields pruning dropped.
        held = self._dropped.pop(id(obj), None)
        if held is None or held[0] is not obj:
            return []
        return [{"reason": "FieldValueInvalid", "field": f, "message": f'unknown field "{f}"'}
                for f in held[1]]

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        causes = validation.semantic_causes(obj, kind="", namespaced=rt.namespaced)
        if old is not None:
            causes += validation.update_causes(old, obj, kind="")
        if self.schema is not None:
            causes += self.schema.validate(obj, old)
        return causes

    def to_scale(self, obj: dict) -> dict:
        """autoscaling/v1 Scale of `obj` by the CRD's scale paths."""
        assert self.scale is not None
        md = obj["metadata"]
        status: dict[str, Any] = {"replicas": get_path(obj, self.scale.get("statusReplicasPath", "")) or 0}
        if self.scale.get("labelSelectorPath"):
            sel = get_path(obj, self.scale["labelSelectorPath"])
            if isinstance(sel, str) and sel:
                status["selector"] = sel
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                "creationTimestamp") if k in md},
                "spec": {"replicas": get_path(obj, self.scale.get("specReplicasPath", "")) or 0},
                "status": status}

    def set_replicas(self, obj: dict, replicas: int) -> None:
        assert self.scale is not None
        set_path(obj, self.scale["specReplicasPath"], replicas)


_SCHEMAS: dict[bytes, dict] = {}


def _interned(schema: dict) -> dict:
    """One object per distinct schema, never freed: server-side apply caches what it
    reads of a schema by the id of its nodes, which must therefore outlive the CRD."""
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    return _SCHEMAS.setdefault(key, copy.deepcopy(schema))


def _deprecation(crd: dict, version: dict) -> str:
    """The warning every request to a deprecated version gets (its own, else
    apiextensions-apiserver's default naming the newest served version not deprecated)."""
    if not version.get("deprecated"):
        return ""
    if version.get("deprecationWarning"):
        return str(version["deprecationWarning"])
    spec = crd["spec"]
    group, kind, name = spec["group"], spec["names"]["kind"], version["name"]
    msg = f"{group}/{name} {kind} is deprecated"
    newer = sorted((v["name"] for v in spec.get("versions") or [] if v.get("served") and not v.get("deprecated")
                    and registry.version_priority(v["name"]) < registry.version_priority(name)),
                   key=registry.version_priority)
    return msg + (f"; use {group}/{newer[0]} {kind}" if newer else "")


def resource_types(crd: dict) -> list[ResourceType]:
    """One row per served version of an Established CRD, in Kubernetes' version priority
    (the first is the group's preferred version in discovery)."""
    spec = _m(crd.get("spec"))
    accepted = _m(_m(crd.get("status")).get("acceptedNames")) or _m(spec.get("names"))
    group, plural = spec["group"], accepted.get("plural") or _m(spec.get("names"))["plural"]
    stored = storage_version(crd)
    out = []
    versions = sorted((_m(v) for v in _l(spec.get("versions")) if _m(v).get("served")),
                      key=lambda v: registry.version_priority(v.get("name", "")))
    for v in versions:
        subs = _m(v.get("subresources"))
        out.append(ResourceType(
            group=group, version=v["name"], kind=accepted.get("kind") or spec["names"]["kind"],
            plural=plural, namespaced=spec.get("scope") == "Namespaced",
            short_names=tuple(accepted.get("shortNames") or ()),
            subresources=tuple(s for s in ("status", "scale") if s in subs),
            categories=tuple(accepted.get("categories") or ()),
            columns=_columns(v), strategy=CustomResourceStrategy(crd, v),
            storage_version=stored, storage_root=f"/registry/{group}/{plural}/",
            extra={"crd": crd["metadata"]["name"], "list_kind": accepted.get("listKind"),
                   "schema": _interned(_m(_m(v.get("schema")).get("openAPIV3Schema"))),
                   "terminating": bool(crd["metadata"].get("deletionTimestamp")),
                   "deprecation": _deprecation(crd, v)}))
    return out


def terminating_error(verb: str) -> errors.APIError:
    return errors.MethodNotAllowed(f"{verb} not allowed while custom resource definition is terminating")
