"""A CRD's openAPIV3Schema as Kubernetes uses it: structural checks, pruning, defaulting
and validation of custom resources. Pure functions over JSON values; no I/O, no locks.

- `structural_errors(schema, path)`: the schema rules of apiextensions-apiserver's
  ValidateCustomResourceDefinitionOpenAPISchema (forbidden keywords, list and map types,
  rule text) and of pkg/apiserver/schema's ValidateStructural (types everywhere,
  metadata, embedded resources, value validations), plus CEL rules that do not compile,
  worded as Kubernetes words them, as `validation.Cause` dicts. Empty when acceptable.
- `compile_schema(schema)`: a `Structural` tree, built once per CRD version (CEL rules
  compiled then) and afterwards read-only, so any number of threads may share it.
- `Structural.prune(obj)` and `.default(obj)` change `obj` in place, as Kubernetes
  prunes and defaults. apiVersion, kind and metadata at the root and in embedded
  resources are kept; values of the wrong type are left for validation to report.
  `prune` returns the paths it dropped (`spec.foo`), for fieldValidation=Warn|Strict.
- `Structural.validate(obj, old)`: every problem, not only the first, as Kubernetes
  reports them: the OpenAPI checks with kube-openapi's messages and paths
  (`spec.ports[0].port in body must be of type integer: "string"`), embedded
  resources, list-type set/map uniqueness, then the CEL rules (paths `spec.labels[app]`)
  unless a type error blocks them, as kube-apiserver does. `old` is the stored object
  on update (transition rules read `oldSelf`); None on create.

Not enforced, as in Kubernetes: integer formats int32/int64 (kube-openapi checks only
the JSON type), unknown fields (pruned, not rejected). jsonschema is not used here:
Kubernetes' messages and the x-kubernetes-* extensions are what this module is about,
and a walk over the tree gives both in one pass.
"""
from __future__ import annotations

import base64
import binascii
import copy
import datetime
import ipaddress
import json
import math
import re
import uuid
from typing import Any, Iterator

from apiserver.apiextensions import cel

Cause = dict[str, str]

_TYPES = ("array", "boolean", "integer", "number", "object", "string")
_META = ("apiVersion", "kind", "metadata")
_BLOCKING = ('some validation rules were not checked because the object was invalid; '
             'correct the existing errors to complete validation')


# --- causes, worded as Kubernetes' field errors ----------------------------------------

def _show(v: Any) -> str:
    """A bad value as Go's field.Error prints it: %v for numbers and booleans, %q for
    strings, JSON otherwise."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _num(v)
    return json.dumps(v, separators=(",", ":"), default=str)


def _num(v: Any) -> str:
    """A number as Go's %v prints a float64: 10, 1.5, 1e+21."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    f = float(v)
    if f.is_integer() and abs(f) < 1e21:
        return str(int(f))
    s = repr(f)
    if "e" in s:
        mant, exp = s.split("e")
        sign = "-" if exp.startswith("-") else "+"
        s = f"{mant}e{sign}{exp.lstrip('+-').rjust(2, '0')}"
    return s


def _cause(reason: str, field: str, message: str) -> Cause:
    return {"reason": reason, "message": message, "field": field}


def _required(field: str, detail: str = "") -> Cause:
    return _cause("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def _forbidden(field: str, detail: str) -> Cause:
    return _cause("FieldValueForbidden", field, f"Forbidden: {detail}")


def _invalid(field: str, value: Any, detail: str, *, omit: bool = False) -> Cause:
    shown = "" if omit else f": {_show(value)}"
    return _cause("FieldValueInvalid", field, f"Invalid value{shown}: {detail}")


def _type_invalid(field: str, value: Any, detail: str) -> Cause:
    return _cause("FieldValueTypeInvalid", field, f"Invalid value: {_show(value)}: {detail}")


def _not_supported(field: str, value: Any, allowed: list) -> Cause:
    vals = ", ".join(json.dumps(a if isinstance(a, str) else _show(a)) for a in allowed)
    return _cause("FieldValueNotSupported", field,
                  f"Unsupported value: {_show(value)}: supported values: {vals}")


def _duplicate(field: str, value: Any) -> Cause:
    return _cause("FieldValueDuplicate", field, f"Duplicate value: {_show(value)}")


def _too_many(field: str, actual: int, limit: int) -> Cause:
    return _cause("FieldValueTooMany", field,
                  f"Too many: {actual}: must have at most {limit} item{'' if limit == 1 else 's'}")


def _too_long(field: str, limit: int) -> Cause:
    return _cause("FieldValueTooLong", field,
                  f"Too long: may not be more than {limit} byte{'' if limit == 1 else 's'}")


# --- paths --------------------------------------------------------------------------
# A path is a tuple of segments: str for a property, ("k", key) for a map key, int for
# a list index. kube-openapi writes map keys like properties (`spec.labels.app`); the
# CEL validator and field.Path write them as `spec.labels[app]`.

Seg = str | int | tuple[str, str]


def _openapi_path(path: tuple[Seg, ...]) -> str:
    out = ""
    for s in path:
        if isinstance(s, int):
            out += f"[{s}]"
        else:
            name = s[1] if isinstance(s, tuple) else s
            out += f".{name}" if out else name
    return out


def _field_path(path: tuple[Seg, ...]) -> str:
    out = ""
    for s in path:
        if isinstance(s, int):
            out += f"[{s}]"
        elif isinstance(s, tuple):
            out += f"[{s[1]}]"
        else:
            out += f".{s}" if out else s
    return out


def _child(field: str, name: str) -> str:
    return f"{field}.{name}" if field else name


# --- structural schema rules ----------------------------------------------------------

def structural_errors(schema: dict, path: str) -> list[Cause]:
    """The reasons `schema` (an openAPIV3Schema) is not a schema Kubernetes accepts;
    `path` is where it sits in the CRD, e.g. `spec.versions[0].schema.openAPIV3Schema`,
    and prefixes every cause's field. The causes come sorted as Kubernetes sorts
    ValidateStructural's."""
    if not isinstance(schema, dict):
        return [_required(path, "")]
    out: list[Cause] = []
    _openapi_rules(schema, path, out, root=True, in_meta=False, defaults="")
    structural: list[Cause] = []
    _invariants(schema, path, structural, level="root")
    structural.sort(key=lambda c: f'{c["field"]}: {c["message"]}')
    return out + structural


def _openapi_rules(s: Any, f: str, out: list[Cause], *, root: bool, in_meta: bool,
                   defaults: str) -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema: keywords CRDs do not support, and
    the x-kubernetes-* extensions' own consistency. `defaults` is why a default is
    forbidden here ("" where it is allowed)."""
    if not isinstance(s, dict):
        return
    t = s.get("type")
    if t not in (None, "") and t not in _TYPES:
        if t == "null":
            out.append(_forbidden(_child(f, "type"),
                                  "type cannot be set to null, use nullable as an alternative"))
        else:
            out.append(_not_supported(_child(f, "type"), t, list(_TYPES)))
    if "default" in s and defaults:
        out.append(_forbidden(_child(f, "default"), f"must not be set {defaults}".rstrip()))
    for key, detail in (("id", "id is not supported"), ("$schema", "$schema is not supported"),
                        ("additionalItems", "additionalItems is not supported"),
                        ("patternProperties", "patternProperties is not supported"),
                        ("definitions", "definitions is not supported"),
                        ("dependencies", "dependencies is not supported"),
                        ("$ref", "$ref is not supported")):
        if s.get(key) not in (None, "", {}):
            out.append(_forbidden(_child(f, key), detail))
    if isinstance(s.get("items"), list):
        out.append(_forbidden(_child(f, "items"), "items must be a schema object and not an array"))
    if in_meta and s.get("x-kubernetes-embedded-resource"):
        out.append(_forbidden(_child(f, "x-kubernetes-embedded-resource"),
                              "must not be used inside of resource meta"))
    if s.get("uniqueItems") is True:
        out.append(_forbidden(_child(f, "uniqueItems"),
                              "uniqueItems cannot be set to true since the runtime complexity becomes quadratic"))
    ap = s.get("additionalProperties")
    props = s.get("properties") if isinstance(s.get("properties"), dict) else {}
    if ap is not None:
        if props and (ap is False or isinstance(ap, dict)):
            out.append(_forbidden(_child(f, "additionalProperties"),
                                  "additionalProperties and properties are mutual exclusive"))
        sub_defaults = defaults
        if in_meta:
            sub_defaults = "inside additionalProperties applying to object metadata"
        _openapi_rules(ap, _child(f, "additionalProperties"), out, root=False, in_meta=in_meta,
                       defaults=sub_defaults)
    for k, sub in props.items():
        sub_meta, sub_defaults = in_meta, defaults
        if (root or s.get("x-kubernetes-embedded-resource")) and k in _META:
            sub_meta = True
            if root:
                sub_defaults = f"in top-level {k}"
        _openapi_rules(sub, f"{_child(f, 'properties')}[{k}]", out, root=False, in_meta=sub_meta,
                       defaults=sub_defaults)
    _openapi_rules(s.get("not"), _child(f, "not"), out, root=False, in_meta=in_meta,
                   defaults=defaults)
    for kw in ("allOf", "oneOf", "anyOf"):
        for i, sub in enumerate(s.get(kw) or []):
            _openapi_rules(sub, f"{_child(f, kw)}[{i}]", out, root=False, in_meta=in_meta,
                           defaults=defaults)
    if isinstance(s.get("items"), dict):
        _openapi_rules(s["items"], _child(f, "items"), out, root=False, in_meta=in_meta,
                       defaults=defaults)
    if s.get("x-kubernetes-preserve-unknown-fields") is False:
        out.append(_invalid(_child(f, "x-kubernetes-preserve-unknown-fields"), False,
                            "must be true or undefined"))
    _list_map_rules(s, f, out)
    _rule_text_rules(s, f, out, root=root)


def _list_map_rules(s: dict, f: str, out: list[Cause]) -> None:
    t = s.get("type") or ""
    mt, lt, keys = s.get("x-kubernetes-map-type"), s.get("x-kubernetes-list-type"), \
        s.get("x-kubernetes-list-map-keys") or []
    if mt is not None and t != "object":
        detail = "must be object if x-kubernetes-map-type is specified"
        out.append(_invalid(_child(f, "type"), t, detail) if t else _required(_child(f, "type"), detail))
    if mt is not None and mt not in ("atomic", "granular"):
        out.append(_not_supported(_child(f, "x-kubernetes-map-type"), mt, ["atomic", "granular"]))
    items = s.get("items") if isinstance(s.get("items"), dict) else None
    if lt is not None and t != "array":
        detail = "must be array if x-kubernetes-list-type is specified"
        out.append(_invalid(_child(f, "type"), t, detail) if t else _required(_child(f, "type"), detail))
    elif lt == "set" and items is not None:
        it = items.get("type")
        if it == "array" and items.get("x-kubernetes-list-type", "atomic") != "atomic":
            out.append(_invalid(_child(f, "items.x-kubernetes-list-type"), items.get("x-kubernetes-list-type"),
                                "must be atomic as item of a list with x-kubernetes-list-type=set"))
        if it == "object" and items.get("x-kubernetes-map-type") != "atomic":
            out.append(_invalid(_child(f, "items.x-kubernetes-map-type"), lt,
                                "must be atomic as item of a list with x-kubernetes-list-type=set"))
    if lt is not None and lt not in ("atomic", "set", "map"):
        out.append(_not_supported(_child(f, "x-kubernetes-list-type"), lt, ["atomic", "set", "map"]))
    if keys:
        if lt is None:
            out.append(_required(_child(f, "x-kubernetes-list-type"),
                                 "must be map if x-kubernetes-list-map-keys is non-empty"))
        elif lt != "map":
            out.append(_invalid(_child(f, "x-kubernetes-list-type"), lt,
                                "must be map if x-kubernetes-list-map-keys is non-empty"))
    if lt == "map":
        if not keys:
            out.append(_required(_child(f, "x-kubernetes-list-map-keys"),
                                 "must not be empty if x-kubernetes-list-type is map"))
        if items is None:
            out.append(_required(_child(f, "items"), "must have a schema if x-kubernetes-list-type is map"))
        elif items.get("type") != "object":
            out.append(_invalid(_child(f, "items.type"), items.get("type", ""),
                                "must be object if parent array's x-kubernetes-list-type is map"))
        else:
            iprops = items.get("properties") or {}
            seen: set[str] = set()
            for k in keys:
                p = iprops.get(k)
                if p is None:
                    out.append(_invalid(_child(f, "x-kubernetes-list-map-keys"), keys,
                                        "entries must all be names of item properties"))
                elif p.get("type") in ("array", "object"):
                    out.append(_invalid(f"{f}.items.properties[{k}].type", "object",
                                        "must be a scalar type if parent array's x-kubernetes-list-type is map"))
                if k in seen:
                    out.append(_invalid(_child(f, "x-kubernetes-list-map-keys"), keys,
                                        "must not contain duplicate entries"))
                seen.add(k)
    if lt in ("set", "map") and items is not None:
        if items.get("nullable"):
            out.append(_forbidden(_child(f, "items.nullable"),
                                  f"cannot be nullable when x-kubernetes-list-type is {lt}"))
        if lt == "map":
            required = set(items.get("required") or [])
            for k in keys:
                p = (items.get("properties") or {}).get(k)
                if not isinstance(p, dict):
                    continue
                if k not in required and "default" not in p:
                    out.append(_required(f"{f}.items.properties[{k}].default",
                                         "this property is in x-kubernetes-list-map-keys, so it must have "
                                         "a default or be a required property"))
                if p.get("nullable"):
                    out.append(_forbidden(f"{f}.items.properties[{k}].nullable",
                                          "this property is in x-kubernetes-list-map-keys, so it cannot be nullable"))


def _rule_text_rules(s: dict, f: str, out: list[Cause], *, root: bool) -> None:
    rules = s.get("x-kubernetes-validations")
    if not rules:
        return
    for i, r in enumerate(rules):
        rf = f"{_child(f, 'x-kubernetes-validations')}[{i}]"
        rule = str((r or {}).get("rule") or "").strip()
        raw_msg = (r or {}).get("message") or ""
        msg = str(raw_msg).strip()
        if not rule:
            out.append(_required(f"{rf}.rule", "rule is not specified"))
        elif raw_msg and not msg:
            out.append(_invalid(f"{rf}.message", raw_msg, "message must be non-empty if specified"))
        elif re.search(r"[\n\r]", msg):
            out.append(_invalid(f"{rf}.message", raw_msg, "message must not contain line breaks"))
        elif re.search(r"[\n\r]", rule) and not msg:
            out.append(_required(f"{rf}.message", "message must be specified if rule contains line breaks"))
    _, errors = cel.compile_rules([r for r in rules if isinstance(r, dict)], f, root=root,
                                  schema=s)
    out.extend(errors)


def _invariants(s: Any, f: str, out: list[Cause], *, level: str) -> None:
    """ValidateStructural's invariants (pkg/apiserver/schema/validation.go)."""
    if not isinstance(s, dict):
        return
    t = s.get("type") or ""
    items = s.get("items")
    if t == "array" and not isinstance(items, dict):
        out.append(_required(_child(f, "items"), "must be specified"))
    if isinstance(items, dict):
        _invariants(items, _child(f, "items"), out, level="item")
    props = s.get("properties") if isinstance(s.get("properties"), dict) else {}
    for k, v in props.items():
        _invariants(v, f"{_child(f, 'properties')}[{k}]", out, level="field")
    ap = s.get("additionalProperties")
    if ap is not None and ap is not False:
        if level == "root":
            out.append(_forbidden(_child(f, "additionalProperties"), "must not be used at the root"))
        if isinstance(ap, dict):
            _invariants(ap, _child(f, "additionalProperties"), out, level="field")
    ios = bool(s.get("x-kubernetes-int-or-string"))
    puf = bool(s.get("x-kubernetes-preserve-unknown-fields"))
    emb = bool(s.get("x-kubernetes-embedded-resource"))
    if ios and puf:
        out.append(_invalid(_child(f, "x-kubernetes-preserve-unknown-fields"), True,
                            "must be false if x-kubernetes-int-or-string is true"))
    if ios and emb:
        out.append(_invalid(_child(f, "x-kubernetes-embedded-resource"), True,
                            "must be false if x-kubernetes-int-or-string is true"))
    _value_validation(s, f, out, skip_any_of=_int_or_string_any_of(s.get("anyOf")),
                      skip_first_all_of=_int_or_string_all_of(s))
    if emb and t != "object":
        detail = "must be object if x-kubernetes-embedded-resource is true"
        out.append(_invalid(_child(f, "type"), t, detail) if t else _required(_child(f, "type"), detail))
    elif not t and not ios and not puf:
        detail = {"root": "must not be empty at the root",
                  "item": "must not be empty for specified array items",
                  "field": "must not be empty for specified object fields"}[level]
        out.append(_required(_child(f, "type"), detail))
    if emb and ap is not None:
        out.append(_forbidden(_child(f, "additionalProperties"),
                              "must not be used if x-kubernetes-embedded-resource is set"))
    if level == "root" and t and t != "object":
        out.append(_invalid(_child(f, "type"), t, "must be object at the root"))
    check_meta = level == "root" or emb
    for k in ("kind", "apiVersion"):
        if k in props and check_meta and (props[k] or {}).get("type") != "string":
            out.append(_invalid(f"{_child(f, 'properties')}[{k}].type",
                                (props[k] or {}).get("type", ""), "must be string"))
    if "metadata" in props:
        m, mf = props["metadata"] or {}, f"{_child(f, 'properties')}[metadata]"
        if check_meta and m.get("type") != "object":
            out.append(_invalid(_child(mf, "type"), m.get("type", ""), "must be object"))
        if level == "root":
            extra = set(m) - {"type", "properties", "default"}
            mprops = m.get("properties") or {}
            if extra or not set(mprops) <= {"name", "generateName"}:
                out.append(_forbidden(mf, "must not specify anything other than name and generateName, "
                                          "but metadata is implicitly specified"))
    if emb and not puf and not props:
        out.append(_required(_child(f, "properties"), "must not be empty if x-kubernetes-embedded-resource "
                                                      "is true without x-kubernetes-preserve-unknown-fields"))


def _int_or_string_any_of(any_of: Any) -> bool:
    return (isinstance(any_of, list) and len(any_of) == 2
            and any_of[0] == {"type": "integer"} and any_of[1] == {"type": "string"})


def _int_or_string_all_of(s: dict) -> bool:
    all_of = s.get("allOf")
    return (isinstance(all_of, list) and len(all_of) >= 1 and isinstance(all_of[0], dict)
            and _int_or_string_any_of(all_of[0].get("anyOf")))


def _value_validation(s: dict, f: str, out: list[Cause], *, skip_any_of: bool,
                      skip_first_all_of: bool) -> None:
    if not skip_any_of:
        for i, sub in enumerate(s.get("anyOf") or []):
            _nested(sub, f"{_child(f, 'anyOf')}[{i}]", out, skip_any_of=False)
    for i, sub in enumerate(s.get("allOf") or []):
        _nested(sub, f"{_child(f, 'allOf')}[{i}]", out, skip_any_of=skip_first_all_of and i == 0)
    for i, sub in enumerate(s.get("oneOf") or []):
        _nested(sub, f"{_child(f, 'oneOf')}[{i}]", out, skip_any_of=False)
    if isinstance(s.get("not"), dict):
        _nested(s["not"], _child(f, "not"), out, skip_any_of=False)
    pattern = s.get("pattern")
    if isinstance(pattern, str) and pattern:
        try:
            re.compile(pattern)
        except re.error as e:
            out.append(_invalid(_child(f, "pattern"), pattern,
                                f"must be a valid regular expression, but isn't: {e}"))


_NESTED_FORBIDDEN = (
    ("type", "must be empty to be structural"),
    ("additionalProperties", "must be undefined to be structural"),
    ("default", "must be undefined to be structural"),
    ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"),
    ("nullable", "must be false to be structural"),
    ("externalDocs", "must be undefined to be structural"),
    ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
    ("x-kubernetes-embedded-resource", "must be false to be structural"),
    ("x-kubernetes-int-or-string", "must be false to be structural"),
    ("x-kubernetes-list-map-keys", "must be empty to be structural"),
    ("x-kubernetes-list-type", "must be undefined to be structural"),
    ("x-kubernetes-map-type", "must be undefined to be structural"),
    ("x-kubernetes-validations", "must be empty to be structural"),
)


def _nested(s: Any, f: str, out: list[Cause], *, skip_any_of: bool) -> None:
    """A schema under allOf/anyOf/oneOf/not may only validate values, not say what they
    are (that is the structural part's job)."""
    if not isinstance(s, dict):
        return
    _value_validation(s, f, out, skip_any_of=skip_any_of, skip_first_all_of=False)
    if isinstance(s.get("items"), dict):
        _nested(s["items"], _child(f, "items"), out, skip_any_of=False)
    for k, v in (s.get("properties") or {}).items():
        _nested(v, f"{_child(f, 'properties')}[{k}]", out, skip_any_of=False)
    for key, detail in _NESTED_FORBIDDEN:
        v = s.get(key)
        if v not in (None, False, "", [], {}) or (key == "additionalProperties" and v is False):
            out.append(_forbidden(_child(f, key), detail))
    if "metadata" in (s.get("properties") or {}):
        out.append(_forbidden(f"{_child(f, 'properties')}[metadata]", "must not be specified in a nested context"))


# --- formats ---------------------------------------------------------------------------

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d|w))+$|^\d+ ?(ns|us|ms|s|m|h|d|w|"
                       r"nanoseconds?|microseconds?|milliseconds?|seconds?|minutes?|hours?|days?|weeks?)$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HOSTNAME = re.compile(r"^(?=.{1,255}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
_HEXCOLOR = re.compile(r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_RGBCOLOR = re.compile(r"^rgb\(\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*\)$")
_BSON = re.compile(r"^[0-9a-fA-F]{24}$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S*$")


def _is_date_time(v: str) -> bool:
    if not _DATE_TIME.match(v):
        return False
    try:
        datetime.datetime.fromisoformat(v.replace("z", "Z").replace("Z", "+00:00").replace("t", "T"))
    except ValueError:
        return False
    return True


def _is_date(v: str) -> bool:
    try:
        datetime.date.fromisoformat(v)
    except ValueError:
        return False
    return len(v) == 10


def _is_ip(v: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(v).version == version
    except ValueError:
        return False


def _is_cidr(v: str) -> bool:
    try:
        ipaddress.ip_network(v, strict=False)
    except ValueError:
        return False
    return "/" in v


def _is_uuid(v: str, version: int | None = None) -> bool:
    if not re.match(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$", v):
        return False
    return version is None or uuid.UUID(v).version == version


def _is_byte(v: str) -> bool:
    try:
        base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


# The formats kube-openapi's strfmt.Default knows; any other format is not checked, as
# Kubernetes strips unknown formats before it validates.
_FORMATS: dict[str, Any] = {
    "date-time": _is_date_time, "datetime": _is_date_time, "date": _is_date,
    "duration": lambda v: bool(_DURATION.match(v)),
    "byte": _is_byte, "password": lambda v: True,
    "email": lambda v: bool(_EMAIL.match(v)), "hostname": lambda v: bool(_HOSTNAME.match(v)),
    "ipv4": lambda v: _is_ip(v, 4), "ipv6": lambda v: _is_ip(v, 6), "cidr": _is_cidr,
    "mac": lambda v: bool(_MAC.match(v)), "uri": lambda v: bool(_URI.match(v)),
    "uuid": _is_uuid, "uuid3": lambda v: _is_uuid(v, 3), "uuid4": lambda v: _is_uuid(v, 4),
    "uuid5": lambda v: _is_uuid(v, 5), "hexcolor": lambda v: bool(_HEXCOLOR.match(v)),
    "rgbcolor": lambda v: bool(_RGBCOLOR.match(v)), "bsonobjectid": lambda v: bool(_BSON.match(v)),
}


# --- the tree ---------------------------------------------------------------------------

def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _canon(v: Any) -> str:
    """A JSON value's identity for enum, set and key comparison: 1 and 1.0 are one
    number, true is not 1."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


class Structural:
    """One node of a structural schema: what the value here must be, what is kept of it
    when pruning, what it defaults to, and its compiled CEL rules. Build with
    `compile_schema`; never mutated afterwards."""

    def __init__(self, raw: dict):
        self.raw = raw
        self.type: str = raw.get("type") or ""
        self.format: str = raw.get("format") or ""
        self.nullable: bool = bool(raw.get("nullable"))
        self.preserve_unknown: bool = bool(raw.get("x-kubernetes-preserve-unknown-fields"))
        self.embedded: bool = bool(raw.get("x-kubernetes-embedded-resource"))
        self.int_or_string: bool = bool(raw.get("x-kubernetes-int-or-string"))
        self.has_default = "default" in raw
        self.default_value: Any = raw.get("default")
        self.properties: dict[str, Structural] = {
            k: Structural(v) for k, v in (raw.get("properties") or {}).items()
            if isinstance(v, dict)}
        items = raw.get("items")
        self.items: Structural | None = Structural(items) if isinstance(items, dict) else None
        ap = raw.get("additionalProperties")
        self.additional: Structural | None = Structural(ap) if isinstance(ap, dict) else None
        # additionalProperties: true keeps every key, as preserve-unknown-fields does
        self.additional_any: bool = ap is True
        self.required: list[str] = [r for r in raw.get("required") or [] if isinstance(r, str)]
        self.enum: list | None = raw.get("enum") if isinstance(raw.get("enum"), list) else None
        self._enum_set = {_canon(e) for e in self.enum} if self.enum is not None else set()
        self.list_type: str = raw.get("x-kubernetes-list-type") or ""
        self.list_map_keys: list[str] = list(raw.get("x-kubernetes-list-map-keys") or [])
        self.map_atomic = raw.get("x-kubernetes-map-type") == "atomic"
        pattern = raw.get("pattern")
        try:
            self.pattern = re.compile(pattern) if isinstance(pattern, str) and pattern else None
        except re.error:
            self.pattern = None
        self.all_of = [Structural(x) for x in raw.get("allOf") or [] if isinstance(x, dict)]
        self.any_of = [Structural(x) for x in raw.get("anyOf") or [] if isinstance(x, dict)]
        self.one_of = [Structural(x) for x in raw.get("oneOf") or [] if isinstance(x, dict)]
        self.not_ = Structural(raw["not"]) if isinstance(raw.get("not"), dict) else None
        self.rules: list[cel.Rule] = []
        self._has_rules_below = False

    def _compile_rules(self, *, root: bool) -> bool:
        """Compile every node's x-kubernetes-validations; True if any node has rules."""
        below = False
        for sub in self._children():
            below = sub._compile_rules(root=False) or below
        rules = self.raw.get("x-kubernetes-validations") or []
        if rules:
            self.rules, _ = cel.compile_rules([r for r in rules if isinstance(r, dict)], "",
                                              root=root, schema=self.raw)
        self._has_rules_below = below or bool(self.rules)
        return self._has_rules_below

    def _children(self) -> Iterator[Structural]:
        yield from self.properties.values()
        if self.items is not None:
            yield self.items
        if self.additional is not None:
            yield self.additional

    def _sub(self, k: str) -> Structural | None:
        return self.properties.get(k) or self.additional

    # --- pruning --------------------------------------------------------------------

    def prune(self, obj: Any) -> list[str]:
        """Drop, in place, every field the schema does not specify, unless a node says
        x-kubernetes-preserve-unknown-fields. At the root and in an embedded resource
        apiVersion, kind and metadata are kept. Returns the dropped fields' paths."""
        dropped: list[str] = []
        self._prune(obj, (), dropped, meta=True)
        return dropped

    def _prune(self, v: Any, path: tuple[Seg, ...], dropped: list[str], *, meta: bool) -> None:
        if isinstance(v, dict):
            keep_meta = meta or self.embedded
            for k in list(v):
                if keep_meta and k in _META and k not in self.properties:
                    continue
                sub = self.properties.get(k)
                if sub is not None:
                    sub._prune(v[k], path + (k,), dropped, meta=False)
                elif self.additional is not None:
                    self.additional._prune(v[k], path + (("k", k),), dropped, meta=False)
                elif not (self.preserve_unknown or self.additional_any):
                    del v[k]
                    dropped.append(_openapi_path(path + (k,)))
        elif isinstance(v, list) and self.items is not None:
            for i, x in enumerate(v):
                self.items._prune(x, path + (i,), dropped, meta=False)

    # --- defaulting -----------------------------------------------------------------

    def default(self, obj: Any) -> None:
        """Set, in place, every absent field that has a `default` (a null counts as
        absent unless the field is nullable), and defaults inside defaults; then drop
        nulls a non-nullable field without a default holds. Kubernetes does this on
        every request and on every read from storage."""
        self._default(obj)

    def _default(self, v: Any) -> None:
        if isinstance(v, dict):
            for k, sub in self.properties.items():
                if sub.has_default and (k not in v or (v[k] is None and not sub.nullable)):
                    v[k] = copy.deepcopy(sub.default_value)
            if self.additional is not None and self.additional.has_default:
                for k, x in v.items():
                    if x is None and not self.additional.nullable:
                        v[k] = copy.deepcopy(self.additional.default_value)
            for k in list(v):
                sub = self._sub(k)
                if sub is None:
                    continue
                if v[k] is None and not sub.nullable and not sub.has_default:
                    del v[k]
                    continue
                sub._default(v[k])
        elif isinstance(v, list) and self.items is not None:
            for i, x in enumerate(v):
                if x is None and self.items.has_default and not self.items.nullable:
                    v[i] = copy.deepcopy(self.items.default_value)
                self.items._default(v[i])

    # --- validation -----------------------------------------------------------------

    def validate(self, obj: Any, old: dict | None = None) -> list[Cause]:
        """Every way `obj` fails the schema and its CEL rules (transition rules compare
        with `old`), as Kubernetes reports them. Empty when valid."""
        out: list[Cause] = []
        self._check(obj, (), out, root=True)
        if self._has_rules_below:
            if any(c["reason"] == "FieldValueTypeInvalid" for c in out):
                out.append(_invalid("<nil>", None, _BLOCKING))
            else:
                self._rules(obj, old, (), out)
        return out

    def _check(self, v: Any, path: tuple[Seg, ...], out: list[Cause], *, root: bool = False) -> None:
        name = _openapi_path(path)
        field = name
        if v is None:
            if not self.nullable and (self.type or self.int_or_string):
                types = "integer,string" if self.int_or_string else self.type
                out.append(_type_invalid(field, "null", f'{name} in body must be of type {types}: "null"'))
            return
        jt = _json_type(v)
        if self.int_or_string:
            if jt not in ("integer", "string") and not (jt == "number" and float(v).is_integer()):
                out.append(_type_invalid(field, jt, f'{name} in body must be of type integer,string: "{jt}"'))
                return
        elif self.type:
            ok = jt == self.type or (self.type == "number" and jt == "integer") or \
                (self.type == "integer" and jt == "number" and float(v).is_integer())
            if not ok:
                out.append(_type_invalid(field, jt, f'{name} in body must be of type {self.type}: "{jt}"'))
                return
        if isinstance(v, str) and self.format in _FORMATS and not _FORMATS[self.format](v):
            out.append(_type_invalid(field, v, f"{name} in body must be of type {self.format}: {json.dumps(v)}"))
        if self.enum is not None and _canon(v) not in self._enum_set:
            out.append(_not_supported(field, v, self.enum))
        if jt in ("integer", "number"):
            self._check_number(v, name, out)
        elif jt == "string":
            self._check_string(v, name, out)
        elif jt == "array":
            self._check_array(v, path, name, out)
        elif jt == "object":
            self._check_object(v, path, name, out)
        for s in self.all_of:
            s._check(v, path, out)
        if self.any_of and not any(not s._errors(v, path) for s in self.any_of):
            out.append(_invalid(field, v, f"{name} in body must validate at least one schema (anyOf)",
                                omit=jt in ("object", "array")))
        if self.one_of and sum(1 for s in self.one_of if not s._errors(v, path)) != 1:
            out.append(_invalid(field, v, f"{name} in body must validate one and only one schema (oneOf)",
                                omit=jt in ("object", "array")))
        if self.not_ is not None and not self.not_._errors(v, path):
            out.append(_invalid(field, v, f"{name} in body must not validate the schema (not)",
                                omit=jt in ("object", "array")))

    def _errors(self, v: Any, path: tuple[Seg, ...]) -> list[Cause]:
        out: list[Cause] = []
        self._check(v, path, out)
        return out

    def _check_number(self, v: float, name: str, out: list[Cause]) -> None:
        r = self.raw
        mx, mn, mo = r.get("maximum"), r.get("minimum"), r.get("multipleOf")
        if isinstance(mx, (int, float)):
            if r.get("exclusiveMaximum") and v >= mx:
                out.append(_invalid(name, v, f"{name} in body should be less than {_num(mx)}"))
            elif v > mx:
                out.append(_invalid(name, v, f"{name} in body should be less than or equal to {_num(mx)}"))
        if isinstance(mn, (int, float)):
            if r.get("exclusiveMinimum") and v <= mn:
                out.append(_invalid(name, v, f"{name} in body should be greater than {_num(mn)}"))
            elif v < mn:
                out.append(_invalid(name, v, f"{name} in body should be greater than or equal to {_num(mn)}"))
        if isinstance(mo, (int, float)) and mo > 0:
            q = v / mo
            if not math.isclose(q, round(q), rel_tol=0, abs_tol=1e-9):
                out.append(_invalid(name, v, f"{name} in body should be a multiple of {_num(mo)}"))

    def _check_string(self, v: str, name: str, out: list[Cause]) -> None:
        r = self.raw
        if isinstance(r.get("maxLength"), int) and len(v) > r["maxLength"]:
            out.append(_too_long(name, r["maxLength"]))
        if isinstance(r.get("minLength"), int) and len(v) < r["minLength"]:
            out.append(_invalid(name, v, f"{name} in body should be at least {r['minLength']} chars long"))
        if self.pattern is not None and not self.pattern.search(v):
            out.append(_invalid(name, v, f"{name} in body should match '{self.pattern.pattern}'"))

    def _check_array(self, v: list, path: tuple[Seg, ...], name: str, out: list[Cause]) -> None:
        r = self.raw
        if self.items is not None:
            for i, x in enumerate(v):
                self.items._check(x, path + (i,), out)
        if isinstance(r.get("minItems"), int) and len(v) < r["minItems"]:
            out.append(_invalid(name, len(v), f"{name} in body should have at least {r['minItems']} items"))
        if isinstance(r.get("maxItems"), int) and len(v) > r["maxItems"]:
            out.append(_too_many(name, len(v), r["maxItems"]))
        if r.get("uniqueItems") and len({_canon(x) for x in v}) != len(v):
            out.append(_invalid(name, "", f"{name} in body shouldn't contain duplicates"))
        if self.list_type == "set":
            seen: set[str] = set()
            for i, x in enumerate(v):
                c = _canon(x)
                if c in seen:
                    out.append(_duplicate(_field_path(path + (i,)), x))
                seen.add(c)
        elif self.list_type == "map" and self.list_map_keys:
            seen = set()
            for i, x in enumerate(v):
                if not isinstance(x, dict):
                    continue
                key = {k: self._map_key(x, k) for k in self.list_map_keys}
                c = _canon(key)
                if c in seen:
                    out.append(_duplicate(_field_path(path + (i,)),
                                          {k: kv for k, kv in key.items() if kv is not None}))
                seen.add(c)

    def _map_key(self, item: dict, k: str) -> Any:
        if k in item:
            return item[k]
        sub = self.items.properties.get(k) if self.items is not None else None
        return sub.default_value if sub is not None and sub.has_default else None

    def _check_object(self, v: dict, path: tuple[Seg, ...], name: str, out: list[Cause]) -> None:
        r = self.raw
        if isinstance(r.get("maxProperties"), int) and len(v) > r["maxProperties"]:
            out.append(_too_many(name, r["maxProperties"], r["maxProperties"]))
        if isinstance(r.get("minProperties"), int) and len(v) < r["minProperties"]:
            out.append(_invalid(name, r["minProperties"],
                                f"{name} in body should have at least {r['minProperties']} properties"))
        for k in self.required:
            if k not in v:
                out.append(_required(_openapi_path(path + (k,))))
        for k, x in v.items():
            sub = self.properties.get(k)
            if sub is not None:
                sub._check(x, path + (k,), out)
            elif self.additional is not None:
                self.additional._check(x, path + (("k", k),), out)
        if self.embedded:
            _embedded_meta(v, _field_path(path), out)

    # --- CEL ----------------------------------------------------------------------

    def _rules(self, v: Any, old: Any, path: tuple[Seg, ...], out: list[Cause]) -> None:
        if not self._has_rules_below or v is None:
            return
        if self.rules:
            out.extend(cel.run(self.rules, v, old, field=_field_path(path), schema=self,
                               has_old=old is not None))
        if isinstance(v, dict):
            olds = old if isinstance(old, dict) and not self.map_atomic else {}
            for k, x in v.items():
                sub = self.properties.get(k)
                if sub is not None:
                    sub._rules(x, olds.get(k), path + (k,), out)
                elif self.additional is not None:
                    self.additional._rules(x, olds.get(k), path + (("k", k),), out)
        elif isinstance(v, list) and self.items is not None:
            correlate = self._old_items(old)
            for i, x in enumerate(v):
                self.items._rules(x, correlate(x), path + (i,), out)

    def _old_items(self, old: Any):
        """Old list items correlate with new ones by their map keys (list-type map) or
        their value (set); atomic lists do not correlate, as in Kubernetes."""
        if not isinstance(old, list) or self.list_type not in ("map", "set"):
            return lambda x: None
        if self.list_type == "set":
            olds = {_canon(o) for o in old}
            return lambda x: x if _canon(x) in olds else None
        by_key = {_canon({k: self._map_key(o, k) for k in self.list_map_keys}): o
                  for o in old if isinstance(o, dict)}
        return lambda x: by_key.get(_canon({k: self._map_key(x, k) for k in self.list_map_keys})) \
            if isinstance(x, dict) else None


def _embedded_meta(v: dict, f: str, out: list[Cause]) -> None:
    """An x-kubernetes-embedded-resource object must say what it is, as
    pkg/apiserver/schema/objectmeta's validateEmbeddedResource requires."""
    if "apiVersion" not in v:
        out.append(_required(_child(f, "apiVersion"), "must not be empty"))
    if "kind" not in v:
        out.append(_required(_child(f, "kind"), "must not be empty"))
    av, kind = v.get("apiVersion"), v.get("kind")
    if "apiVersion" in v:
        if not isinstance(av, str):
            out.append(_invalid(_child(f, "apiVersion"), av, "must be a string"))
        elif not av:
            out.append(_invalid(_child(f, "apiVersion"), av, "must not be empty"))
        elif av.count("/") > 1 or av.startswith("/") or av.endswith("/"):
            out.append(_invalid(_child(f, "apiVersion"), av, f"unexpected GroupVersion string: {av}"))
    if "kind" in v:
        if not isinstance(kind, str):
            out.append(_invalid(_child(f, "kind"), kind, "must be a string"))
        elif not kind:
            out.append(_invalid(_child(f, "kind"), kind, "must not be empty"))
        elif not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", kind.lower()) or len(kind) > 63:
            out.append(_invalid(_child(f, "kind"), kind, "may have mixed case, but should otherwise match: "
                                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                                "start with an alphabetic character, and end with an alphanumeric character "
                                "(e.g. 'my-name',  or 'abc-123', regex used for validation is "
                                "'[a-z]([-a-z0-9]*[a-z0-9])?')"))
    md = v.get("metadata")
    if "metadata" in v and md is not None:
        if not isinstance(md, dict):
            out.append(_invalid(_child(f, "metadata"), md, "must be an object"))
        else:
            from apiserver import validation  # the API server's ObjectMeta rules
            meta = dict(md)
            meta.setdefault("name", "fakename")  # as Kubernetes: an embedded name is optional
            out.extend(validation._metadata(meta, _child(f, "metadata"), name_check=_path_segment_name,
                                            namespaced=True if meta.get("namespace") else None))


def _path_segment_name(name: str) -> str | None:
    """apimachinery's path.ValidatePathSegmentName, the rule for an embedded name."""
    if name in (".", ".."):
        return f'may not be \'{name}\''
    for bad in ("/", "%"):
        if bad in name:
            return f"may not contain '{bad}'"
    return None


def compile_schema(schema: dict) -> Structural:
    """The structural tree of a schema that passed `structural_errors`, with its CEL
    rules compiled (once: share the result)."""
    s = Structural(schema)
    s._compile_rules(root=True)
    return s
