"""CustomResourceDefinitions (apiextensions.k8s.io/v1): the CRD's own strategy, and what
one CRD version becomes in the registry (a row serving its custom resources).

Guarantees
- A CRD is validated as apiextensions-apiserver validates it, with its wording: its name
  is `<plural>.<group>`, the group a domain with a dot, names DNS-1035 labels, exactly
  one storage version, at least one served version, unique version names, a
  structural schema (`schema.structural_errors`), and no version left out of
  spec.versions while status.storedVersions still names it.
- On create, status is reset and storedVersions is the storage version; an update that
  changes the storage version appends it to storedVersions (PrepareForCreate and
  PrepareForUpdate of its REST strategy).
- A first delete does not remove a CRD: it gains the
  `customresourcecleanup.apiextensions.k8s.io` finalizer and a Terminating condition
  (the CRD REST storage's Delete), which apiextensions/controller.py carries out.
- `resource_types(crd)` is one `registry.ResourceType` per served version: stored at the
  storage version under `/registry/<group>/<plural>/`, with the accepted names, the
  status and scale subresources, the printer columns, and a strategy that prunes,
  defaults and validates with the version's schema.

Pure: no I/O here.
"""
from __future__ import annotations

import copy
import json
import re
import time
from typing import TYPE_CHECKING, Any

from apiserver import tables, validation
from apiserver.apiextensions import schema as schemas
from apiserver.strategies import Strategy
from apiserver.timestamps import now
from machinery import errors, times
from machinery.duration import human_duration

if TYPE_CHECKING:
    from apiserver.registry import ResourceType

GROUP = "apiextensions.k8s.io"
FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                "start with an alphabetic character, and end with an alphanumeric character "
                f"(e.g. 'my-name',  or 'abc-123', regex used for validation is '{_DNS1035}')")


def _cause(reason: str, field: str, message: str) -> dict:
    return {"reason": reason, "message": message, "field": field}


def _invalid(field: str, value: Any, detail: str) -> dict:
    return _cause("FieldValueInvalid", field, f"Invalid value: {validation._show(value)}: {detail}")


def _required(field: str) -> dict:
    return _cause("FieldValueRequired", field, "Required value")


def _dns1035(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    return None if re.fullmatch(_DNS1035, value) else _DNS1035_MSG


def _m(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list:
    return v if isinstance(v, list) else []


# -- versions ------------------------------------------------------------------------

_KUBE_VERSION = re.compile(r"v(\d+)(?:(alpha|beta)(\d+))?")


def version_priority(name: str) -> tuple:
    """Sort key of Kubernetes' version priority: GA, then beta, then alpha (higher numbers
    first), then any other name alphabetically."""
    m = _KUBE_VERSION.fullmatch(name)
    if m is None:
        return (3, 0, 0, name)
    major, stage, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    return ({None: 0, "beta": 1, "alpha": 2}[stage], -major, -minor, name)


def storage_version(crd: dict) -> str:
    return next((v.get("name", "") for v in _l(_m(crd.get("spec")).get("versions"))
                 if _m(v).get("storage")), "")


def condition(crd: dict, type_: str) -> dict | None:
    return next((c for c in _l(_m(crd.get("status")).get("conditions"))
                 if _m(c).get("type") == type_), None)


def is_true(crd: dict, type_: str) -> bool:
    c = condition(crd, type_)
    return c is not None and c.get("status") == "True"


def set_condition(crd: dict, type_: str, status: str, reason: str, message: str, now: str) -> None:
    """Set a condition, keeping its lastTransitionTime unless its status changes."""
    conds = crd.setdefault("status", {}).setdefault("conditions", [])
    for c in conds:
        if c.get("type") == type_:
            if c.get("status") != status:
                c["lastTransitionTime"] = now
            c.update(status=status, reason=reason, message=message)
            return
    conds.append({"type": type_, "status": status, "lastTransitionTime": now,
                  "reason": reason, "message": message})


# -- the CRD kind ----------------------------------------------------------------------


def _names_causes(names: dict, path: str) -> list[dict]:
    out = []
    for key in ("plural", "singular"):
        v = names.get(key)
        if isinstance(v, str) and v and (msg := _dns1035(v)):
            out.append(_invalid(f"{path}.{key}", v, msg))
    for key in ("kind", "listKind"):
        v = names.get(key)
        if isinstance(v, str) and v and (msg := _dns1035(v.lower())):
            out.append(_invalid(f"{path}.{key}", v,
                                "may have mixed case, but should otherwise match: " + msg))
    for key in ("shortNames", "categories"):
        for i, v in enumerate(_l(names.get(key))):
            if not isinstance(v, str) or (msg := _dns1035(v)):
                out.append(_invalid(f"{path}.{key}[{i}]", v, msg or "must be a string"))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        out.append(_invalid(f"{path}.listKind", names["listKind"], "kind and listKind may not be the same"))
    return out


def _spec_causes(spec: dict) -> list[dict]:
    out: list[dict] = []
    group = spec.get("group")
    if not group:
        out.append(_required("spec.group"))
    elif not isinstance(group, str) or (msg := validation._dns1123_subdomain(group)):
        out.append(_invalid("spec.group", group, msg if isinstance(group, str) else "must be a string"))
    elif len(group.split(".")) < 2:
        out.append(_invalid("spec.group", group, "should be a domain with at least one dot"))
    scope = spec.get("scope")
    if not scope:
        out.append(_required("spec.scope"))
    elif scope not in ("Cluster", "Namespaced"):
        out.append(_cause("FieldValueNotSupported", "spec.scope",
                          f'Unsupported value: {validation._show(scope)}: supported values: '
                          '"Cluster", "Namespaced"'))
    versions = _l(spec.get("versions"))
    names_seen: set[str] = set()
    unique = True
    for i, v in enumerate(versions):
        v = _m(v)
        name = v.get("name") or ""
        if name in names_seen:
            unique = False
        names_seen.add(name)
        if not name:
            out.append(_required(f"spec.versions[{i}].name"))
        elif msg := _dns1035(name):
            out.append(_invalid(f"spec.versions[{i}].name", name, msg))
        schema = _m(_m(v.get("schema")).get("openAPIV3Schema"))
        path = f"spec.versions[{i}].schema.openAPIV3Schema"
        if not schema:
            out.append(_required(path))
        else:
            out += schemas.structural_errors(schema, path)
        scale = _m(_m(v.get("subresources")).get("scale"))
        if "scale" in _m(v.get("subresources")):
            for key in ("specReplicasPath", "statusReplicasPath"):
                p = scale.get(key)
                if not p:
                    out.append(_required(f"spec.versions[{i}].subresources.scale.{key}"))
                elif not isinstance(p, str) or not p.startswith("."):
                    out.append(_invalid(f"spec.versions[{i}].subresources.scale.{key}", p,
                                        "should be a json path under .spec" if key.startswith("spec")
                                        else "should be a json path under .status"))
        for j, col in enumerate(_l(v.get("additionalPrinterColumns"))):
            col = _m(col)
            cpath = f"spec.versions[{i}].additionalPrinterColumns[{j}]"
            for key in ("name", "type", "jsonPath"):
                if not col.get(key):
                    out.append(_required(f"{cpath}.{key}"))
            if col.get("type") and col["type"] not in ("integer", "number", "string", "boolean", "date"):
                out.append(_cause("FieldValueNotSupported", f"{cpath}.type",
                                  f'Unsupported value: {validation._show(col["type"])}: supported values: '
                                  '"boolean", "date", "integer", "number", "string"'))
    if not unique:
        out.append(_invalid("spec.versions", versions, "must contain unique version names"))
    if sum(1 for v in versions if _m(v).get("storage")) != 1:
        out.append(_invalid("spec.versions", versions, "must have exactly one version marked as storage version"))
    if versions and not any(_m(v).get("served") for v in versions):
        out.append(_invalid("spec.versions", versions, "must have at least one version marked as served"))
    names = _m(spec.get("names"))
    for key in ("plural", "singular", "kind", "listKind"):
        if not names.get(key):
            out.append(_required(f"spec.names.{key}"))
    out += _names_causes(names, "spec.names")
    return out


class CRDStrategy(Strategy):
    """The strategy of CustomResourceDefinitions."""

    status_on_create = True  # status is reset here, and storedVersions set

    def __init__(self) -> None:
        super().__init__(generation=True, status_subresource=True)

    def prepare_for_create(self, obj: dict) -> None:
        super().prepare_for_create(obj)
        stored = storage_version(obj)
        obj["status"] = {"acceptedNames": {"kind": "", "plural": ""}, "conditions": [],
                         "storedVersions": [stored] if stored else []}
        _default_names(obj)

    def prepare_for_update(self, new: dict, old: dict) -> None:
        _default_names(new)
        super().prepare_for_update(new, old)
        stored = storage_version(new)
        status = new.setdefault("status", {})
        versions = status.setdefault("storedVersions", [])
        if stored and stored not in versions:
            versions.append(stored)

    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
        md = _m(obj.get("metadata"))
        causes = [c for c in validation.semantic_causes(obj, kind="", namespaced=False)]
        spec = _m(obj.get("spec"))
        names = _m(spec.get("names"))
        required = f"{names.get('plural', '')}.{spec.get('group', '')}"
        if md.get("name") and md.get("name") != required:
            causes.append(_invalid("metadata.name", md["name"], 'must be spec.names.plural+"."+spec.group'))
        causes += _spec_causes(spec)
        causes += _names_causes(_m(_m(obj.get("status")).get("acceptedNames")), "status.acceptedNames")
        if old is not None:
            causes += validation.update_causes(old, obj, kind="")
            ospec = _m(old.get("spec"))
            for path, new_v, old_v in (("spec.group", spec.get("group"), ospec.get("group")),
                                       ("spec.names.plural", names.get("plural"),
                                        _m(ospec.get("names")).get("plural"))):
                if new_v != old_v:
                    causes.append(_invalid(path, new_v, "field is immutable"))
            if is_true(old, "Established"):
                for path, new_v, old_v in (("spec.scope", spec.get("scope"), ospec.get("scope")),
                                           ("spec.names.kind", names.get("kind"),
                                            _m(ospec.get("names")).get("kind"))):
                    if new_v != old_v:
                        causes.append(_invalid(path, new_v, "field is immutable"))
            served = {_m(v).get("name") for v in _l(spec.get("versions"))}
            stored = _l(_m(obj.get("status")).get("storedVersions"))
            for i, v in enumerate(stored):
                if v not in served:
                    causes.append(_invalid(f"status.storedVersions[{i}]", v, "must appear in spec.versions"))
        return causes

    def before_delete(self, obj: dict) -> bool:
        """The first delete marks the CRD and hands it to the finalizer controller."""
        md = obj["metadata"]
        if md.get("deletionTimestamp"):
            return False
        stamp = now()
        md["deletionTimestamp"] = stamp
        md.setdefault("deletionGracePeriodSeconds", 0)
        finalizers = md.setdefault("finalizers", [])
        if FINALIZER not in finalizers:
            finalizers.append(FINALIZER)
        set_condition(obj, "Terminating", "True", "InstanceDeletionPending",
                      "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
                      stamp)
        return True


def _default_names(crd: dict) -> None:
    """SetDefaults_CustomResourceDefinitionSpec: singular from kind, listKind from kind."""
    names = _m(_m(crd.get("spec")).get("names"))
    kind = names.get("kind")
    if isinstance(kind, str) and kind:
        if not names.get("singular"):
            names["singular"] = kind.lower()
        if not names.get("listKind"):
            names["listKind"] = kind + "List"


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


def _column(col: dict) -> tables.Col:
    path, ctype = col.get("jsonPath", ""), col.get("type", "string")

    def cell(obj: dict) -> Any:
        v = get_path(obj, path)
        if v is None:
            return None
        if ctype == "date" and isinstance(v, str):
            try:
                return human_duration(time.time() - times.parse(v))
            except ValueError:
                return v
        if ctype in ("string", "date") and not isinstance(v, str):
            return json.dumps(v)
        return v
    return (col.get("name", ""), ctype if ctype != "date" else "date", col.get("description", ""),
            int(col.get("priority") or 0), cell)


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
        self.terminating = bool(crd["metadata"].get("deletionTimestamp"))
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

    def prepare_for_status_update(self, new: dict, old: dict) -> dict:
        merged = super().prepare_for_status_update(new, old)
        self._shape(merged)
        return merged

    def schema_causes(self, rt: ResourceType, obj: dict) -> list[dict]:
        # The CRD's schema is checked by `validate`; here, the fields pruning dropped.
        held = self._dropped.pop(id(obj), None)
        if held is None or held[0] is not obj:
            return []
        return [_cause("FieldValueInvalid", f, f'unknown field "{f}"') for f in held[1]]

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


def resource_types(crd: dict) -> list[ResourceType]:
    """One row per served version of an Established CRD, in Kubernetes' version priority
    (the first is the group's preferred version in discovery)."""
    from apiserver.registry import ResourceType  # the registry imports this module
    spec = _m(crd.get("spec"))
    accepted = _m(_m(crd.get("status")).get("acceptedNames")) or _m(spec.get("names"))
    group, plural = spec["group"], accepted.get("plural") or _m(spec.get("names"))["plural"]
    stored = storage_version(crd)
    out = []
    versions = sorted((_m(v) for v in _l(spec.get("versions")) if _m(v).get("served")),
                      key=lambda v: version_priority(v.get("name", "")))
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
                   "schema": copy.deepcopy(_m(_m(v.get("schema")).get("openAPIV3Schema"))),
                   "terminating": bool(crd["metadata"].get("deletionTimestamp"))}))
    return out


def terminating_error(verb: str) -> errors.APIError:
    return errors.MethodNotAllowed(f"{verb} not allowed while custom resource definition is terminating")
