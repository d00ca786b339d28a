"""The CustomResourceDefinition kind (apiextensions.k8s.io/v1): its validation, its
strategy and its status conditions. What a CRD serves is apiserver/apiextensions/crd.py.

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

Pure: no I/O here, and no import of the registry (whose table holds this strategy).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from apiserver import validation
from apiserver.apiextensions import schema as schemas
from apiserver.strategies import Strategy
from apiserver.timestamps import now

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
    if spec.get("preserveUnknownFields") is True:
        out.append(_invalid("spec.preserveUnknownFields", True, "cannot set to true, set "
                            "x-kubernetes-preserve-unknown-fields to true in "
                            "spec.versions[*].schema instead"))
    strategy = _m(spec.get("conversion")).get("strategy", "None")
    if strategy != "None":
        # Only `None` conversion is served here (no conversion webhooks): refused rather
        # than served with a conversion the CRD did not ask for.
        out.append(_cause("FieldValueNotSupported", "spec.conversion.strategy",
                          f'Unsupported value: {validation._show(strategy)}: supported values: "None"'))
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
        causes = validation.semantic_causes(obj, kind="", namespaced=False)
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
    """SetDefaults_CustomResourceDefinitionSpec: singular and listKind from kind, `None`
    conversion."""
    spec = crd.get("spec")
    if isinstance(spec, dict) and not spec.get("conversion"):
        spec["conversion"] = {"strategy": "None"}
    names = _m(_m(spec).get("names"))
    kind = names.get("kind")
    if isinstance(kind, str) and kind:
        if not names.get("singular"):
            names["singular"] = kind.lower()
        if not names.get("listKind"):
            names["listKind"] = kind + "List"
