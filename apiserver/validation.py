"""Admission validation: structure from Kubernetes' own JSON schemas, semantics in code.

Contract: every function returns a list of causes, `{"reason", "message", "field"}` as
in a Kubernetes `Status`, empty when the object is acceptable; each lists every problem
it finds, not only the first, and none raises on malformed input (a wrong type is the
schema's cause to report; the semantic checks skip values of the wrong type). The
server turns a non-empty list into one 422 with `machinery.errors.invalid`. Fields use
Kubernetes' notation: `spec.containers[0].image`, map keys as `metadata.labels[app]`.

- `schema_causes`: the Kubernetes 1.32 schemas shipped by `kubernetes-validate`; with
  `strict` they reject unknown fields (message `unknown field "spec.foo"`, which the
  server keys on to prune or warn under `fieldValidation=Ignore|Warn`). Null counts
  as absent, as in Kubernetes. Their `required` lists are enforced only where
  Kubernetes' validation code rejects the field's absence (`_NOT_ENFORCED` lists the
  rest): kube-apiserver does not apply OpenAPI `required` to built-in kinds, so e.g. a
  container status without `imageID` (as KWOK and kubemark write) is accepted.
- `semantic_causes`: what the schemas cannot say (names, labels, container rules, ...),
  for objects that have been defaulted (`apiserver.defaults`) first.
- `update_causes`: immutable fields, comparing the stored object with the defaulted new one.

Speed: jsonschema takes 0.6-1.1 ms for a typical pod, so each schema is also compiled
into a plain-Python predicate that answers "valid?" in ~25 us; only an object it
rejects pays for jsonschema's `iter_errors`, which produces the causes. Both
are built lazily, once per (kind, apiVersion, strict), and cached for the process; a
race between threads at most builds one twice.
"""
from __future__ import annotations

import base64
import binascii
import importlib.resources
import ipaddress
import json
import re
from fractions import Fraction
from typing import Any, Callable

import jsonschema
from referencing import Registry, Resource

from machinery import quantity
from machinery.labels import (validate_dns1123_label as _dns1123_label,
                              validate_dns1123_subdomain as _dns1123_subdomain,
                              validate_label_key as _qualified_name,
                              validate_label_value as _label_value)

Cause = dict[str, str]

# --- structure: the JSON schemas ------------------------------------------------------

_SCHEMA_VERSION = "v1.32.0"
_ANNOTATION_KEYS = {"description", "format", "$schema", "$id", "$defs"}
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "null": (type(None),), "integer": (int,), "number": (int, float)}


# OpenAPI `required` fields whose absence Kubernetes 1.32 accepts: its validation code
# (pkg/apis/core/validation/validation.go, pkg/apis/apps/validation/validation.go,
# apimachinery's ValidateObjectMeta) never checks them, and decoding into the Go types
# gives a zero value instead. Everything else the schemas require is rejected when
# absent, as Kubernetes' validation rejects it (with `Required value`, or as an invalid
# empty name, port or IP). Status fields a kubelet writes are the main case: Kubernetes
# validates a pod status update only for IPs, state transitions and a few fields.
_NOT_ENFORCED: dict[str, set[str]] = {
    # List kinds are never written.
    **{f"io.k8s.api.{g}.{k}List": {"items"} for g, k in (
        ("apps.v1", "Deployment"), ("apps.v1", "ReplicaSet"), ("coordination.v1", "Lease"),
        ("core.v1", "ConfigMap"), ("core.v1", "Endpoints"), ("core.v1", "Event"),
        ("core.v1", "Namespace"), ("core.v1", "Node"), ("core.v1", "Pod"),
        ("core.v1", "Secret"), ("core.v1", "ServiceAccount"), ("core.v1", "Service"),
        ("discovery.v1", "EndpointSlice"))},
    # CertificateSigningRequests: validateCertificateSigningRequest reports these itself
    # (an absent request as one that is not PEM, as the decoded empty value is).
    "io.k8s.api.certificates.v1.CertificateSigningRequestSpec": {"request", "signerName"},
    "io.k8s.api.certificates.v1.CertificateSigningRequestCondition": {"type", "status"},
    # ValidateEndpointSlice accepts a slice without endpoints (the controller's
    # placeholder for a Service with none is one).
    "io.k8s.api.discovery.v1.EndpointSlice": {"endpoints"},
    # Pod status: ValidatePodStatusUpdate checks none of these.
    "io.k8s.api.core.v1.ContainerStatus": {"name", "ready", "restartCount", "image", "imageID"},
    "io.k8s.api.core.v1.ContainerStateTerminated": {"exitCode"},
    "io.k8s.api.core.v1.VolumeMountStatus": {"name", "mountPath"},
    "io.k8s.api.core.v1.LinuxContainerUser": {"uid", "gid"},
    "io.k8s.api.core.v1.ResourceHealth": {"resourceID"},
    # validatePodConditions checks only the type (a qualified name).
    "io.k8s.api.core.v1.PodCondition": {"status"},
    # Conditions of other kinds are not validated at all.
    "io.k8s.api.core.v1.NodeCondition": {"type", "status"},
    "io.k8s.api.core.v1.NamespaceCondition": {"type", "status"},
    "io.k8s.api.apps.v1.DeploymentCondition": {"type", "status"},
    "io.k8s.api.apps.v1.ReplicaSetCondition": {"type", "status"},
    "io.k8s.apimachinery.pkg.apis.meta.v1.Condition": {
        "type", "status", "lastTransitionTime", "reason", "message"},
    # Node status: ValidateNode checks addresses only for duplicates.
    "io.k8s.api.core.v1.NodeSystemInfo": {
        "machineID", "systemUUID", "bootID", "kernelVersion", "osImage",
        "containerRuntimeVersion", "kubeletVersion", "kubeProxyVersion", "operatingSystem",
        "architecture"},
    "io.k8s.api.core.v1.NodeAddress": {"type", "address"},
    "io.k8s.api.core.v1.AttachedVolume": {"name", "devicePath"},
    "io.k8s.api.core.v1.DaemonEndpoint": {"Port"},
    "io.k8s.api.apps.v1.ReplicaSetStatus": {"replicas"},
    # ValidateEvent compares involvedObject's namespace with the event's; an absent
    # involvedObject is an empty one.
    "io.k8s.api.core.v1.Event": {"metadata", "involvedObject"},
    # Zero is a valid value: ISCSI LUN 0; a sleep of 0 s; an empty preference term.
    "io.k8s.api.core.v1.ISCSIVolumeSource": {"lun"},
    "io.k8s.api.core.v1.SleepAction": {"seconds"},
    "io.k8s.api.core.v1.PreferredSchedulingTerm": {"preference"},
    # validateHTTPHeaders and validateSysctls check the name only.
    "io.k8s.api.core.v1.HTTPHeader": {"value"},
    "io.k8s.api.core.v1.Sysctl": {"value"},
}


def _enforced_required(name: str, schema: dict) -> dict:
    drop = _NOT_ENFORCED.get(name)
    if drop and "required" in schema:
        schema = dict(schema)
        kept = [f for f in schema.pop("required") if f not in drop]
        if kept:
            schema["required"] = kept
    return schema


class _SchemaSet:
    """One directory of schemas (`-local` or `-local-strict`) and what is built from it."""

    def __init__(self, strict: bool):
        self.dir = (importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
                    / f"{_SCHEMA_VERSION}-local{'-strict' if strict else ''}")
        defs = json.loads((self.dir / "_definitions.json").read_text())
        defs["$defs"] = {n: _enforced_required(n, d) for n, d in defs["$defs"].items()}
        self.defs = defs["$defs"]
        self.registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
        self.checks: dict[str, Callable[[Any], bool]] = {}
        self.kinds: dict[tuple[str, str], tuple[Callable, jsonschema.Validator] | None] = {}

    def for_kind(self, kind: str, api_version: str):
        key = (kind, api_version)
        if key not in self.kinds:
            # "apps/v1" -> "apps-v1", "coordination.k8s.io/v1" -> "coordination-v1", "v1" -> "v1"
            group, _, version = api_version.rpartition("/")
            suffix = f"{group.split('.')[0]}-{version}" if group else version
            path = self.dir / f"{kind.lower()}-{suffix}.json"
            if not path.is_file():
                self.kinds[key] = None
            else:
                schema = json.loads(path.read_text())
                gvk = (schema.get("x-kubernetes-group-version-kind") or [{}])[0]
                schema = _enforced_required(_definition_of(gvk), schema)
                registry = self.registry.with_resource(schema["$id"],
                                                       Resource.from_contents(schema))
                self.kinds[key] = (self.compile(schema),
                                   jsonschema.Draft202012Validator(schema, registry=registry))
        return self.kinds[key]

    def ref(self, ref: str) -> Callable[[Any], bool]:
        base, _, name = ref.partition("#/$defs/")
        if base not in ("", "/api/_definitions.json") or name not in self.defs:
            raise ValueError(f"unsupported $ref {ref!r}")
        if name not in self.checks:
            # A recursive definition meets this stand-in while it compiles.
            self.checks[name] = lambda v: self.checks[name](v)
            self.checks[name] = self.compile(self.defs[name])
        return self.checks[name]

    def compile(self, s: dict) -> Callable[[Any], bool]:
        """A predicate equal to jsonschema's verdict on the null-stripped value, for the
        keywords these schemas use; any other keyword fails loudly here, at build time."""
        keys = {k for k in s if k not in _ANNOTATION_KEYS and not k.startswith("x-")}
        if keys - {"type", "enum", "required", "properties", "additionalProperties", "items",
                   "oneOf", "$ref"}:
            raise ValueError(f"unsupported schema keywords {sorted(keys)}")
        if keys == {"$ref"}:
            return self.ref(s["$ref"])
        names = [s["type"]] if isinstance(s.get("type"), str) else s.get("type")
        types = tuple(t for n in names for t in _PY_TYPES[n]) if names is not None else None
        # jsonschema counts 2.0 as an integer; bool is never a number (exact types below).
        float_ints = names is not None and "integer" in names and "number" not in names
        props = {k: self.compile(v) for k, v in s.get("properties", {}).items()}
        extra = s.get("additionalProperties", True)
        extra = extra if isinstance(extra, bool) else self.compile(extra)
        required = tuple(s.get("required", ()))
        items = self.compile(s["items"]) if "items" in s else None
        enum = s.get("enum")
        one_of = [self.compile(x) for x in s.get("oneOf", ())]
        ref = self.ref(s["$ref"]) if "$ref" in s else None

        def check(v: Any) -> bool:
            t = type(v)
            if types is not None and t not in types and not (
                    t is float and float_ints and v.is_integer() and -2 ** 63 <= v < 2 ** 63):
                return False
            if t is dict:
                for k in required:
                    if v.get(k) is None:
                        return False
                for k, x in v.items():
                    if x is None:
                        continue
                    c = props.get(k)
                    if c is not None:
                        if not c(x):
                            return False
                    elif extra is not True and (extra is False or not extra(x)):
                        return False
            elif t is list and items is not None:
                for x in v:
                    if not items(x):
                        return False
            if enum is not None and v not in enum:
                return False
            if one_of and sum(1 for c in one_of if c(v)) != 1:
                return False
            return ref is None or ref(v)
        return check


def _definition_of(gvk: dict) -> str:
    """The definition name of a kind file's top-level schema, by its group-version-kind."""
    group = gvk.get("group", "")
    prefix = "io.k8s.api.core" if not group else "io.k8s.api." + group.split(".")[0]
    return f"{prefix}.{gvk.get('version')}.{gvk.get('kind')}"


_SETS: dict[bool, _SchemaSet] = {}


def _schema_set(strict: bool) -> _SchemaSet:
    if strict not in _SETS:
        _SETS[strict] = _SchemaSet(strict)
    return _SETS[strict]


def schema_causes(obj: dict, *, strict: bool) -> list[Cause]:
    """Structural problems of `obj` against the 1.32 schema of its kind and apiVersion."""
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if not isinstance(kind, str) or not kind or not isinstance(api_version, str) or not api_version:
        return [_required(f) for f, v in (("apiVersion", api_version), ("kind", kind))
                if not isinstance(v, str) or not v]
    found = _schema_set(strict).for_kind(kind, api_version)
    if found is None:
        return [_not_supported("kind", kind, [], detail=f"no {api_version} schema for this kind")]
    fast, validator = found
    if fast(obj):
        return []
    causes: list[Cause] = []
    for err in validator.iter_errors(strip_nulls(obj)):
        for c in _causes_from(err):
            if c not in causes:
                causes.append(c)
    return causes


def strip_nulls(v: Any) -> Any:
    """A copy without null map values: Kubernetes reads null as absent."""
    if isinstance(v, dict):
        return {k: strip_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [strip_nulls(x) for x in v]
    return v


def _causes_from(err: jsonschema.ValidationError) -> list[Cause]:
    field, kw, inst = _field_of(err), err.validator, err.instance
    if kw == "additionalProperties" and err.validator_value is False:
        known = err.schema.get("properties", {})
        return [_cause("FieldValueInvalid", f, f'unknown field "{f}"')
                for f in (_join(field, k) for k in inst if k not in known)]
    if kw == "required":
        return [_required(_join(field, k)) for k in err.validator_value
                if isinstance(inst, dict) and k not in inst]
    if kw == "type":
        return [_type_invalid(field, inst, [err.validator_value])]
    if kw == "enum":
        return [_not_supported(field, inst, err.validator_value)]
    if kw == "oneOf" and err.context and all(c.validator == "type" for c in err.context):
        return [_type_invalid(field, inst, [c.validator_value for c in err.context])]
    return [_invalid(field, inst, err.message)]


def _field_of(err: jsonschema.ValidationError) -> str:
    """Kubernetes' field path, read off the schema path: it tells a property (`.name`)
    from a map key or a list index (`[key]`, `[0]`), which the instance path cannot."""
    out, inst, toks = "", iter(err.absolute_path), iter(err.absolute_schema_path)
    for tok in toks:
        if tok == "properties":
            next(toks, None)
            out += f".{next(inst, '')}"
        elif tok in ("items", "additionalProperties"):
            key = next(inst, None)
            if key is None:  # the error is about this object itself
                break
            out += f"[{key}]"
        elif tok == "oneOf":
            next(toks, None)
    return out.lstrip(".")


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _type_invalid(field: str, value: Any, type_lists: list) -> Cause:
    names = []
    for ts in type_lists:
        names += [t for t in ([ts] if isinstance(ts, str) else ts) if t != "null"]
    return _cause("FieldValueTypeInvalid", field,
                  f"Invalid value: {_show(value)}: must be of type {' or '.join(names)}")


# --- causes, worded as Kubernetes' field errors ---------------------------------------

def _show(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), default=str)


def _cause(reason: str, field: str, message: str) -> Cause:
    return {"reason": reason, "message": message, "field": field}


def _required(field: str, detail: str = "") -> Cause:
    return _cause("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def _invalid(field: str, value: Any, detail: str) -> Cause:
    return _cause("FieldValueInvalid", field, f"Invalid value: {_show(value)}: {detail}")


def _not_supported(field: str, value: Any, allowed: list, detail: str = "") -> Cause:
    detail = detail or "supported values: " + ", ".join(_show(a) for a in allowed)
    return _cause("FieldValueNotSupported", field, f"Unsupported value: {_show(value)}: {detail}")


def _duplicate(field: str, value: Any) -> Cause:
    return _cause("FieldValueDuplicate", field, f"Duplicate value: {_show(value)}")


def _forbidden(field: str, detail: str) -> Cause:
    return _cause("FieldValueForbidden", field, f"Forbidden: {detail}")


def _not_found(field: str, value: Any) -> Cause:
    return _cause("FieldValueNotFound", field, f"Not found: {_show(value)}")


def _too_long(field: str, limit: int) -> Cause:
    return _cause("FieldValueTooLong", field, f"Too long: must have at most {limit} bytes")


# --- names and quantities beyond machinery.labels ------------------------------------

_DNS1035_RE = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_ENV_RE = r"[-._a-zA-Z][-._a-zA-Z0-9]*"
_CONFIG_KEY_RE = r"[-._a-zA-Z0-9]+"
_QUANTITY_RE = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"


def _regex_error(value: str, regex: str, max_len: int, what: str) -> str | None:
    if len(value) > max_len:
        return f"must be no more than {max_len} characters"
    if not re.fullmatch(regex, value):
        return f"{what} (regex used for validation is '{regex}')"
    return None


def _dns1035_label(v: str) -> str | None:
    return _regex_error(v, _DNS1035_RE, 63, "a DNS-1035 label must consist of lower case "
                        "alphanumeric characters or '-', start with an alphabetic character, "
                        "and end with an alphanumeric character")


def _iana_svc_name(v: str) -> str | None:
    """Port names (IANA service names): what a named targetPort or probe port refers to."""
    if len(v) > 15:
        return "must be no more than 15 characters"
    if not re.fullmatch(r"[-a-z0-9]+", v):
        return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    if "--" in v:
        return "must not contain consecutive hyphens"
    if not re.search(r"[a-z]", v):
        return "must contain at least one letter (a-z)"
    if v[0] == "-" or v[-1] == "-":
        return "must not begin or end with a hyphen"
    return None


def parse_quantity(q: Any) -> Fraction | None:
    """`100m` -> 1/10, `1Gi` -> 1073741824; None when `q` is not a quantity."""
    try:
        return quantity.parse_quantity(q)
    except ValueError:
        return None


# --- semantics ------------------------------------------------------------------------

def _m(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _each(v: Any) -> list[tuple[int, dict]]:
    return [(i, x) for i, x in enumerate(v) if isinstance(x, dict)] if isinstance(v, list) else []


def _int(v: Any) -> bool:
    # An integral float passes the schema as an integer (80.0), so it meets the same bounds.
    return type(v) is int or (type(v) is float and v.is_integer())


def _minimum(d: dict, key: str, field: str, *, positive: bool = False) -> list[Cause]:
    v = d.get(key)
    if _int(v) and (v <= 0 if positive else v < 0):
        return [_invalid(field, v, "must be greater than 0" if positive
                         else "must be greater than or equal to 0")]
    return []


def _port_range(v: Any, field: str) -> list[Cause]:
    if _int(v) and not 1 <= v <= 65535:
        return [_invalid(field, v, "must be between 1 and 65535, inclusive")]
    return []


def _labels(labels: Any, field: str) -> list[Cause]:
    out = []
    for k, v in _m(labels).items():
        if msg := _qualified_name(k):
            out.append(_invalid(field, k, msg))
        if isinstance(v, str) and (msg := _label_value(v)):
            out.append(_invalid(field, v, msg))
    return out


_MAX_ANNOTATIONS = 256 * 1024
_STANDARD_FINALIZERS = ("kubernetes", "orphan", "foregroundDeletion")


def _metadata(md: dict, path: str, *, name_check: Callable[[str], str | None] | None,
              namespaced: bool | None) -> list[Cause]:
    """ObjectMeta rules; a template's metadata (no name_check) only has its maps checked."""
    out = []
    if name_check is not None:
        name = md.get("name")
        if not name:
            out.append(_required(f"{path}.name", "name or generateName is required"))
        elif isinstance(name, str) and (msg := name_check(name)):
            out.append(_invalid(f"{path}.name", name, msg))
        ns = md.get("namespace")
        if namespaced and not ns:
            out.append(_required(f"{path}.namespace"))
        elif namespaced and isinstance(ns, str) and (msg := _dns1123_label(ns)):
            out.append(_invalid(f"{path}.namespace", ns, msg))
        elif namespaced is False and ns:
            out.append(_forbidden(f"{path}.namespace", "not allowed on this type"))
    out += _labels(md.get("labels"), f"{path}.labels")
    size = 0
    for k, v in _m(md.get("annotations")).items():
        if msg := _qualified_name(k.lower()):
            out.append(_invalid(f"{path}.annotations", k, msg))
        size += len(k.encode()) + (len(v.encode()) if isinstance(v, str) else 0)
    if size > _MAX_ANNOTATIONS:
        out.append(_too_long(f"{path}.annotations", _MAX_ANNOTATIONS))
    if sum(1 for _, r in _each(md.get("ownerReferences")) if r.get("controller") is True) > 1:
        out.append(_invalid(f"{path}.ownerReferences", "", "Only one reference can have "
                            "Controller set to true"))
    finalizers = md.get("finalizers")
    for i, f in enumerate(finalizers if isinstance(finalizers, list) else []):
        if not isinstance(f, str):
            continue
        if msg := _qualified_name(f):
            out.append(_invalid(f"{path}.finalizers[{i}]", f, msg))
        elif "/" not in f and f not in _STANDARD_FINALIZERS:
            out.append(_invalid(f"{path}.finalizers[{i}]", f, "name is neither a standard "
                                "finalizer name nor is it fully qualified"))
    return out


_RESTART_POLICIES = ["Always", "OnFailure", "Never"]
_DNS_POLICIES = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]
_PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
_PROTOCOLS = ["SCTP", "TCP", "UDP"]


def _pod_spec(spec: dict, p: str) -> list[Cause]:
    out = []
    volumes: set[str] = set()
    for i, v in _each(spec.get("volumes")):
        name, f = v.get("name"), f"{p}.volumes[{i}].name"
        if not name:
            out.append(_required(f))
        elif isinstance(name, str):
            if msg := _dns1123_label(name):
                out.append(_invalid(f, name, msg))
            elif name in volumes:
                out.append(_duplicate(f, name))
            volumes.add(name)
    if not spec.get("containers"):
        out.append(_required(f"{p}.containers"))
    names: set[str] = set()  # one namespace for containers and init containers
    for key in ("containers", "initContainers"):
        for i, c in _each(spec.get(key)):
            out += _container(c, f"{p}.{key}[{i}]", names, volumes)
    for key, allowed in (("restartPolicy", _RESTART_POLICIES), ("dnsPolicy", _DNS_POLICIES)):
        v = spec.get(key)
        if v is not None and v not in allowed:
            out.append(_not_supported(f"{p}.{key}", v, allowed))
    out += _pod_dns(spec, p)
    node = spec.get("nodeName")
    if isinstance(node, str) and node and (msg := _dns1123_subdomain(node)):
        out.append(_invalid(f"{p}.nodeName", node, msg))
    ads = spec.get("activeDeadlineSeconds")
    if _int(ads) and ads < 1:
        out.append(_invalid(f"{p}.activeDeadlineSeconds", ads,
                            "must be between 1 and 2147483647, inclusive"))
    return out


# The resolver's limits (validation.go MaxDNSNameservers, MaxDNSSearchPaths,
# MaxDNSSearchListChars), which the kubelet applies again to what it merges (kubelet/dns.py).
MAX_DNS_NAMESERVERS, MAX_DNS_SEARCH_PATHS, MAX_DNS_SEARCH_LIST_CHARS = 3, 32, 2048


def _pod_dns(spec: dict, p: str) -> list[Cause]:
    """validatePodDNSConfig: dnsPolicy None needs a dnsConfig with a nameserver; the
    config's nameservers are IPs (3 at most), its searches subdomains (32, 2048 chars)."""
    cfg, f = spec.get("dnsConfig"), f"{p}.dnsConfig"
    if spec.get("dnsPolicy") == "None":
        if not isinstance(cfg, dict):
            return [_required(f, "must provide `dnsConfig` when `dnsPolicy` is None")]
        if not cfg.get("nameservers"):
            return [_required(f"{f}.nameservers", "must provide at least one DNS nameserver when `dnsPolicy` is None")]
    if not isinstance(cfg, dict):
        return []
    out = []
    servers = [s for s in cfg.get("nameservers") or [] if isinstance(s, str)]
    if len(servers) > MAX_DNS_NAMESERVERS:
        out.append(_invalid(f"{f}.nameservers", servers, f"must not have more than {MAX_DNS_NAMESERVERS} nameservers"))
    for i, s in enumerate(servers):
        try:
            ipaddress.ip_address(s)
        except ValueError:
            out.append(_invalid(f"{f}.nameservers[{i}]", s,
                                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
    searches = [s for s in cfg.get("searches") or [] if isinstance(s, str)]
    if len(searches) > MAX_DNS_SEARCH_PATHS:
        out.append(_invalid(f"{f}.searches", searches, f"must not have more than {MAX_DNS_SEARCH_PATHS} search paths"))
    if len(" ".join(searches)) > MAX_DNS_SEARCH_LIST_CHARS:
        out.append(_invalid(f"{f}.searches", searches, f"must not have more than {MAX_DNS_SEARCH_LIST_CHARS} "
                            "characters (including spaces) in the search list"))
    for i, s in enumerate(searches):
        s = s.removesuffix(".")  # a trailing dot is fine
        if msg := _dns1123_subdomain(s):
            out.append(_invalid(f"{f}.searches[{i}]", s, msg))
    for i, o in _each(cfg.get("options")):
        if not o.get("name"):
            out.append(_required(f"{f}.options[{i}]", "must not be empty"))
    return out


def _container(c: dict, f: str, names: set[str], volumes: set[str]) -> list[Cause]:
    out = []
    name = c.get("name")
    if not name:
        out.append(_required(f"{f}.name"))
    elif isinstance(name, str):
        if msg := _dns1123_label(name):
            out.append(_invalid(f"{f}.name", name, msg))
        elif name in names:
            out.append(_duplicate(f"{f}.name", name))
        names.add(name)
    if not c.get("image"):
        out.append(_required(f"{f}.image"))
    ipp = c.get("imagePullPolicy")
    if ipp is not None and ipp not in _PULL_POLICIES:
        out.append(_not_supported(f"{f}.imagePullPolicy", ipp, _PULL_POLICIES))
    port_names: set[str] = set()
    for j, port in _each(c.get("ports")):
        pf = f"{f}.ports[{j}]"
        out += _port_range(port.get("containerPort"), f"{pf}.containerPort")
        if port.get("hostPort"):  # 0 means "no host port"
            out += _port_range(port["hostPort"], f"{pf}.hostPort")
        pname = port.get("name")
        if isinstance(pname, str) and pname:
            if msg := _iana_svc_name(pname):
                out.append(_invalid(f"{pf}.name", pname, msg))
            elif pname in port_names:
                out.append(_duplicate(f"{pf}.name", pname))
            port_names.add(pname)
        proto = port.get("protocol")
        if proto is not None and proto not in _PROTOCOLS:
            out.append(_not_supported(f"{pf}.protocol", proto, _PROTOCOLS))
    for j, e in _each(c.get("env")):
        n = e.get("name")
        if not n:
            out.append(_required(f"{f}.env[{j}].name"))
        elif isinstance(n, str) and not re.fullmatch(_ENV_RE, n):
            out.append(_invalid(f"{f}.env[{j}].name", n, "a valid environment variable name "
                                "must consist of alphabetic characters, digits, '_', '-', or "
                                f"'.', and must not start with a digit (regex used for "
                                f"validation is '{_ENV_RE}')"))
    for j, vm in _each(c.get("volumeMounts")):
        n = vm.get("name")
        if not n:
            out.append(_required(f"{f}.volumeMounts[{j}].name"))
        elif isinstance(n, str) and n not in volumes:
            out.append(_not_found(f"{f}.volumeMounts[{j}].name", n))
        if not vm.get("mountPath"):
            out.append(_required(f"{f}.volumeMounts[{j}].mountPath"))
    return out + _resources(_m(c.get("resources")), f"{f}.resources")


def _resources(r: dict, f: str) -> list[Cause]:
    out, parsed = [], {"limits": {}, "requests": {}}
    for part, values in parsed.items():
        for k, q in _m(r.get(part)).items():
            if not isinstance(q, (str, int, float)) or isinstance(q, bool):
                continue  # the schema reports the type
            value = parse_quantity(q)
            if value is None:
                out.append(_invalid(f"{f}.{part}[{k}]", q, "quantities must match the "
                                    f"regular expression '{_QUANTITY_RE}'"))
            elif value < 0:
                out.append(_invalid(f"{f}.{part}[{k}]", q, "must be greater than or equal to 0"))
            else:
                values[k] = (value, q)
    for k, (value, q) in parsed["requests"].items():
        if k in parsed["limits"] and value > parsed["limits"][k][0]:
            out.append(_invalid(f"{f}.requests", q, f"must be less than or equal to {k} limit "
                                f"of {parsed['limits'][k][1]}"))
    return out


def _pod(obj: dict) -> list[Cause]:
    return _pod_spec(_m(obj.get("spec")), "spec")


_OPERATORS = ["In", "NotIn", "Exists", "DoesNotExist"]


def _selector(sel: dict, f: str) -> list[Cause]:
    out = _labels(sel.get("matchLabels"), f"{f}.matchLabels")
    for i, e in _each(sel.get("matchExpressions")):
        ef, op = f"{f}.matchExpressions[{i}]", e.get("operator")
        if isinstance(e.get("key"), str) and (msg := _qualified_name(e["key"])):
            out.append(_invalid(f"{ef}.key", e["key"], msg))
        if op in ("In", "NotIn") and not e.get("values"):
            out.append(_required(f"{ef}.values",
                                 "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist") and e.get("values"):
            out.append(_forbidden(f"{ef}.values", "may not be specified when `operator` is "
                                  "'Exists' or 'DoesNotExist'"))
        elif op not in _OPERATORS:
            out.append(_not_supported(f"{ef}.operator", op, _OPERATORS))
    return out


def _selector_matches(sel: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in _m(sel.get("matchLabels")).items()):
        return False
    for _, e in _each(sel.get("matchExpressions")):
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if not isinstance(key, str) or not isinstance(values, list):
            continue  # malformed: the schema reports it
        present = key in labels
        if not {"In": present and labels[key] in values,
                "NotIn": not present or labels[key] not in values,
                "Exists": present, "DoesNotExist": not present}.get(op, False):
            return False
    return True


def _workload(obj: dict) -> list[Cause]:
    """Deployment and ReplicaSet: a selector that selects the template's pods."""
    kind, spec = obj.get("kind", ""), _m(obj.get("spec"))
    out = _minimum(spec, "replicas", "spec.replicas")
    out += _minimum(spec, "minReadySeconds", "spec.minReadySeconds")
    template = _m(spec.get("template"))
    tmd = _m(template.get("metadata"))
    sel = spec.get("selector")
    if not isinstance(sel, dict):
        out.append(_required("spec.selector"))
    else:
        sel_causes = _selector(sel, "spec.selector")
        if not sel.get("matchLabels") and not sel.get("matchExpressions"):
            out.append(_invalid("spec.selector", sel, f"empty selector is invalid for "
                                f"{kind.lower() or 'this kind'}"))
        elif not sel_causes and not _selector_matches(sel, _m(tmd.get("labels"))):
            out.append(_invalid("spec.template.metadata.labels", tmd.get("labels") or {},
                                "`selector` does not match template `labels`"))
        out += sel_causes
    out += _metadata(tmd, "spec.template.metadata", name_check=None, namespaced=None)
    tspec = _m(template.get("spec"))
    out += _pod_spec(tspec, "spec.template.spec")
    rp = tspec.get("restartPolicy")
    if rp is not None and rp != "Always" and rp in _RESTART_POLICIES:
        out.append(_not_supported("spec.template.spec.restartPolicy", rp, ["Always"]))
    if kind == "Deployment":
        out += _deployment(spec)
    return out


def _deployment(spec: dict) -> list[Cause]:
    out = _minimum(spec, "revisionHistoryLimit", "spec.revisionHistoryLimit")
    pds, mrs = spec.get("progressDeadlineSeconds"), spec.get("minReadySeconds")
    if _int(pds) and pds <= (mrs if _int(mrs) else 0):
        out.append(_invalid("spec.progressDeadlineSeconds", pds,
                            "must be greater than minReadySeconds"))
    strategy = _m(spec.get("strategy"))
    stype, ru = strategy.get("type"), strategy.get("rollingUpdate")
    if stype is not None and stype not in ("Recreate", "RollingUpdate"):
        out.append(_not_supported("spec.strategy.type", stype, ["Recreate", "RollingUpdate"]))
    if stype == "Recreate" and ru is not None:
        out.append(_forbidden("spec.strategy.rollingUpdate",
                              "may not be specified when strategy `type` is 'Recreate'"))
    elif isinstance(ru, dict):
        zero = []
        for key in ("maxUnavailable", "maxSurge"):
            v, f = ru.get(key), f"spec.strategy.rollingUpdate.{key}"
            if _int(v) and v < 0:
                out.append(_invalid(f, v, "must be greater than or equal to 0"))
            elif isinstance(v, str) and not re.fullmatch(r"[0-9]+%", v):
                out.append(_invalid(f, v, "a valid percent string must be a numeric string "
                                    "followed by an ending '%' (regex used for validation is "
                                    "'[0-9]+%')"))
            elif key == "maxUnavailable" and isinstance(v, str) and int(v[:-1]) > 100:
                out.append(_invalid(f, v, "must not be greater than 100%"))
            zero.append(v in (0, "0%"))
        if all(zero):
            out.append(_invalid("spec.strategy.rollingUpdate.maxUnavailable",
                                ru.get("maxUnavailable"), "may not be 0 when `maxSurge` is 0"))
    return out


_SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]


def _service(obj: dict) -> list[Cause]:
    spec, out = _m(obj.get("spec")), []
    stype = spec.get("type") or "ClusterIP"
    if stype not in _SERVICE_TYPES:
        out.append(_not_supported("spec.type", stype, _SERVICE_TYPES))
    cluster_ip = spec.get("clusterIP")
    if isinstance(cluster_ip, str) and cluster_ip not in ("", "None"):
        try:
            ipaddress.ip_address(cluster_ip)
        except ValueError:
            out.append(_invalid("spec.clusterIP", cluster_ip, "must be a valid IP address, "
                                "(e.g. 10.9.8.7 or 2001:db8::ffff)"))
    if cluster_ip == "None" and stype in ("NodePort", "LoadBalancer"):
        out.append(_invalid("spec.clusterIPs[0]", "None", f"may not be set to 'None' for {stype} services"))
    ports = spec.get("ports")
    if stype == "ExternalName":
        if not spec.get("externalName"):
            out.append(_required("spec.externalName"))
    elif not ports and cluster_ip != "None":  # a headless service may have no ports
        out.append(_required("spec.ports"))
    names: set[str] = set()
    for i, port in _each(ports):
        f, name = f"spec.ports[{i}]", port.get("name")
        if not name:
            if len(ports) > 1:
                out.append(_required(f"{f}.name"))
        elif isinstance(name, str):
            if msg := _dns1123_label(name):
                out.append(_invalid(f"{f}.name", name, msg))
            elif name in names:
                out.append(_duplicate(f"{f}.name", name))
            names.add(name)
        out += _port_range(port.get("port"), f"{f}.port")
        target = port.get("targetPort")
        if isinstance(target, str) and (msg := _iana_svc_name(target)):
            out.append(_invalid(f"{f}.targetPort", target, msg))
        out += _port_range(target, f"{f}.targetPort")
        proto = port.get("protocol")
        if proto is not None and proto not in _PROTOCOLS:
            out.append(_not_supported(f"{f}.protocol", proto, _PROTOCOLS))
    affinity = spec.get("sessionAffinity")
    if affinity is not None and affinity not in ("ClientIP", "None"):
        out.append(_not_supported("spec.sessionAffinity", affinity, ["ClientIP", "None"]))
    return out + _labels(spec.get("selector"), "spec.selector")


_MAX_CONFIG_SIZE = 1024 * 1024


def _config_key(k: str) -> str | None:
    if k in (".", ".."):
        return f"must not be '{k}'"
    if k.startswith(".."):
        return "must not start with '..'"
    return _regex_error(k, _CONFIG_KEY_RE, 253, "a valid config key must consist of "
                        "alphanumeric characters, '-', '_' or '.'")


def _data_maps(obj: dict, parts: tuple[str, ...], encoded: tuple[str, ...]) -> list[Cause]:
    """ConfigMap data/binaryData and Secret data: keys, base64 where it applies, size."""
    out, seen, size = [], set(), 0
    for part in parts:
        for k, v in _m(obj.get(part)).items():
            if msg := _config_key(k):
                out.append(_invalid(f"{part}[{k}]", k, msg))
            elif k in seen:
                out.append(_invalid(f"{part}[{k}]", k, "duplicate of key present in data"))
            seen.add(k)
            if not isinstance(v, str):
                continue
            if part in encoded:
                try:
                    size += len(base64.b64decode(v, validate=True))
                except (binascii.Error, ValueError):
                    out.append(_cause("FieldValueInvalid", f"{part}[{k}]",
                                      "illegal base64 data"))  # never echo secret data
            else:
                size += len(v.encode())
    if size > _MAX_CONFIG_SIZE:
        out.append(_too_long(parts[0], _MAX_CONFIG_SIZE))
    return out


def _configmap(obj: dict) -> list[Cause]:
    return _data_maps(obj, ("data", "binaryData"), ("binaryData",))


def _secret(obj: dict) -> list[Cause]:
    return _data_maps(obj, ("data",), ("data",))


def _lease(obj: dict) -> list[Cause]:
    spec = _m(obj.get("spec"))
    return (_minimum(spec, "leaseDurationSeconds", "spec.leaseDurationSeconds", positive=True)
            + _minimum(spec, "leaseTransitions", "spec.leaseTransitions"))


def _event(obj: dict) -> list[Cause]:
    # Kubernetes' legacyValidateEvent: an event without an involved object's namespace
    # (or without an involved object) may live only in "default" (or "kube-system" for
    # one with an eventTime), for old clients' sake.
    ns = _m(obj.get("metadata")).get("namespace") or ""
    ref_ns = _m(obj.get("involvedObject")).get("namespace") or ""
    allowed = ("", "default") if not obj.get("eventTime") else ("default", "kube-system")
    if (ref_ns and ref_ns != ns) or (not ref_ns and ns not in allowed):
        return [_invalid("involvedObject.namespace", ref_ns, "does not match event.namespace")]
    return []


def _endpoints(obj: dict) -> list[Cause]:
    out = []
    for i, subset in _each(obj.get("subsets")):
        for key in ("addresses", "notReadyAddresses"):
            for j, a in _each(subset.get(key)):
                ip = a.get("ip")
                try:
                    ipaddress.ip_address(ip if isinstance(ip, str) else "")
                except ValueError:
                    out.append(_invalid(f"subsets[{i}].{key}[{j}].ip", ip,
                                        "must be a valid IP address"))
        for j, port in _each(subset.get("ports")):
            out += _port_range(port.get("port"), f"subsets[{i}].ports[{j}].port")
    return out


# --- EndpointSlice (pkg/apis/discovery/validation) ------------------------------------

_ADDRESS_TYPES = ["FQDN", "IPv4", "IPv6"]
# Ports: 20,000 since Kubernetes 1.21 (the API's doc comment still says 100), so that a
# Service with many ports gets its slices.
_MAX_SLICE_ENDPOINTS, _MAX_SLICE_PORTS, _MAX_ADDRESSES, _MAX_TOPOLOGY, _MAX_HINTS = 1000, 20000, 100, 16, 8


def _too_many(field: str, n: int, limit: int) -> Cause:
    return _cause("FieldValueTooMany", field, f"Too many: {n}: must have at most {limit} items")


def _special_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """ValidateEndpointIP: an endpoint must be an address another host can reach."""
    if ip.is_unspecified:
        return f"may not be unspecified ({ip})"
    if ip.is_loopback:
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if ip.is_link_local:
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    if ip in ipaddress.ip_network("224.0.0.0/24") or ip in ipaddress.ip_network("ff02::/16"):
        return "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
    return None


def _slice_address(address: Any, address_type: Any, f: str) -> list[Cause]:
    if not isinstance(address, str):
        return []  # the schema's
    if address_type in ("IPv4", "IPv6"):
        version = 4 if address_type == "IPv4" else 6
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        if ip is None or ip.version != version:
            return [_invalid(f, address, f"must be a valid {address_type} address")]
        return [_invalid(f, address, msg)] if (msg := _special_ip(ip)) else []
    if address_type == "FQDN":
        name = address.lower().removesuffix(".")
        if name.count(".") < 1:
            return [_invalid(f, address, "should be a domain with at least two segments separated by dots")]
        if msg := _dns1123_subdomain(name):
            return [_invalid(f, address, msg)]
    return []  # an unknown type's addresses are not checked (addressType reports it)


def _slice_endpoint(e: dict, address_type: Any, f: str) -> list[Cause]:
    out, addresses = [], e.get("addresses")
    if isinstance(addresses, list):
        if not addresses:
            out.append(_required(f"{f}.addresses", "must contain at least 1 address"))
        elif len(addresses) > _MAX_ADDRESSES:
            out.append(_too_many(f"{f}.addresses", len(addresses), _MAX_ADDRESSES))
        for i, a in enumerate(addresses):
            out += _slice_address(a, address_type, f"{f}.addresses[{i}]")
    node = e.get("nodeName")
    if isinstance(node, str) and (msg := _dns1123_subdomain(node)):
        out.append(_invalid(f"{f}.nodeName", node, msg))
    topology = e.get("deprecatedTopology")
    if isinstance(topology, dict) and len(topology) > _MAX_TOPOLOGY:
        out.append(_too_many(f"{f}.deprecatedTopology", len(topology), _MAX_TOPOLOGY))
    out += _labels(topology, f"{f}.deprecatedTopology")
    hostname = e.get("hostname")
    if isinstance(hostname, str) and (msg := _dns1123_label(hostname)):
        out.append(_invalid(f"{f}.hostname", hostname, msg))
    zones = _m(e.get("hints")).get("forZones")
    if isinstance(zones, list) and len(zones) > _MAX_HINTS:
        out.append(_too_many(f"{f}.hints.forZones", len(zones), _MAX_HINTS))
    else:
        seen: set[str] = set()
        for i, z in _each(zones):
            name, zf = z.get("name"), f"{f}.hints.forZones[{i}].name"
            if not isinstance(name, str):
                continue
            if name in seen:
                out.append(_duplicate(zf, name))
            seen.add(name)
            if msg := _label_value(name):
                out.append(_invalid(zf, name, msg))
    return out


def _slice_ports(ports: Any) -> list[Cause]:
    if isinstance(ports, list) and len(ports) > _MAX_SLICE_PORTS:
        return [_too_many("ports", len(ports), _MAX_SLICE_PORTS)]
    out, names = [], set()
    for i, p in _each(ports):
        f, name = f"ports[{i}]", p.get("name")
        if isinstance(name, str):
            if name and (msg := _dns1123_label(name)):
                out.append(_invalid(f"{f}.name", name, msg))
            if name in names:
                out.append(_duplicate(f"{f}.name", name))
            names.add(name)
        proto = p.get("protocol")
        if proto is None:
            out.append(_required(f"{f}.protocol"))
        elif proto not in _PROTOCOLS:
            out.append(_not_supported(f"{f}.protocol", proto, _PROTOCOLS))
        app = p.get("appProtocol")
        if isinstance(app, str) and (msg := _qualified_name(app)):
            out.append(_invalid(f"{f}.appProtocol", app, msg))
    return out


def _endpointslice(obj: dict) -> list[Cause]:
    """ValidateEndpointSlice. (Kubernetes also lets an update keep the deprecated
    addressType `IP`, which only a pre-1.17 server wrote: none here.)"""
    out, address_type = [], obj.get("addressType")
    if not address_type:
        out.append(_required("addressType"))
    elif address_type not in _ADDRESS_TYPES:
        out.append(_not_supported("addressType", address_type, _ADDRESS_TYPES))
    endpoints = obj.get("endpoints")
    if isinstance(endpoints, list) and len(endpoints) > _MAX_SLICE_ENDPOINTS:
        out.append(_too_many("endpoints", len(endpoints), _MAX_SLICE_ENDPOINTS))
    else:
        for i, e in _each(endpoints):
            out += _slice_endpoint(e, address_type, f"endpoints[{i}]")
    return out + _slice_ports(obj.get("ports"))


def _scale(obj: dict) -> list[Cause]:
    return _minimum(_m(obj.get("spec")), "replicas", "spec.replicas")


def _binding(obj: dict) -> list[Cause]:
    target, out = _m(obj.get("target")), []
    if not target.get("name"):
        out.append(_required("target.name"))
    if target.get("kind") not in (None, "", "Node"):
        out.append(_not_supported("target.kind", target.get("kind"), ["Node"]))
    return out


# --- RBAC (pkg/apis/rbac/validation) -------------------------------------------------

_RBAC_GROUP = "rbac.authorization.k8s.io"
_SUBJECT_KINDS = ["ServiceAccount", "User", "Group"]


def _path_segment_name(name: str) -> str | None:
    """RBAC objects are named by any valid path segment (`system:node` included)."""
    if name in (".", ".."):
        return f"may not be '{name}'"
    for bad in ("/", "%"):
        if bad in name:
            return f"may not contain '{bad}'"
    return None


def _policy_rule(rule: dict, f: str, *, namespaced: bool) -> list[Cause]:
    out = []
    if not rule.get("verbs"):
        out.append(_required(f"{f}.verbs", "verbs must contain at least one value"))
    urls = rule.get("nonResourceURLs")
    if urls:
        if namespaced:
            out.append(_invalid(f"{f}.nonResourceURLs", urls,
                                "namespaced rules cannot apply to non-resource URLs"))
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            out.append(_invalid(f"{f}.nonResourceURLs", urls, "rules cannot apply to both "
                                "regular resources and non-resource URLs"))
        return out
    if not rule.get("apiGroups"):
        out.append(_required(f"{f}.apiGroups", "resource rules must supply at least one api group"))
    if not rule.get("resources"):
        out.append(_required(f"{f}.resources", "resource rules must supply at least one resource"))
    return out


def _rules(obj: dict, *, namespaced: bool) -> list[Cause]:
    return [c for i, r in _each(obj.get("rules"))
            for c in _policy_rule(r, f"rules[{i}]", namespaced=namespaced)]


def _role(obj: dict) -> list[Cause]:
    return _rules(obj, namespaced=True)


def _cluster_role(obj: dict) -> list[Cause]:
    out = _rules(obj, namespaced=False)
    agg = obj.get("aggregationRule")
    if isinstance(agg, dict):
        f = "aggregationRule.clusterRoleSelectors"
        if not agg.get("clusterRoleSelectors"):
            out.append(_required(f, "at least one clusterRoleSelector required if "
                                    "aggregationRule is non-nil"))
        for i, sel in _each(agg.get("clusterRoleSelectors")):
            out += _selector(sel, f"{f}[{i}]")
    return out


def _subject(subject: dict, f: str, *, namespaced: bool) -> list[Cause]:
    out, kind, name = [], subject.get("kind"), subject.get("name")
    group = subject.get("apiGroup") or ""
    if not name:
        out.append(_required(f"{f}.name"))
    if kind == "ServiceAccount":
        if isinstance(name, str) and name and (msg := _dns1123_subdomain(name)):
            out.append(_invalid(f"{f}.name", name, msg))
        if group:
            out.append(_not_supported(f"{f}.apiGroup", group, [""]))
        if not namespaced and not subject.get("namespace"):
            out.append(_required(f"{f}.namespace"))
    elif kind in ("User", "Group"):
        if group != _RBAC_GROUP:
            out.append(_not_supported(f"{f}.apiGroup", group, [_RBAC_GROUP]))
    else:
        out.append(_not_supported(f"{f}.kind", kind, _SUBJECT_KINDS))
    return out


def _binding_of(kinds: list[str], *, namespaced: bool) -> Callable[[dict], list[Cause]]:
    def check(obj: dict) -> list[Cause]:
        ref, out = _m(obj.get("roleRef")), []
        if ref.get("apiGroup") != _RBAC_GROUP:
            out.append(_not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), [_RBAC_GROUP]))
        if ref.get("kind") not in kinds:
            out.append(_not_supported("roleRef.kind", ref.get("kind", ""), kinds))
        name = ref.get("name")
        if not name:
            out.append(_required("roleRef.name"))
        elif isinstance(name, str) and (msg := _path_segment_name(name)):
            out.append(_invalid("roleRef.name", name, msg))
        for i, subject in _each(obj.get("subjects")):
            out += _subject(subject, f"subjects[{i}]", namespaced=namespaced)
        return out
    return check


_NAME_CHECKS: dict[str, Callable[[str], str | None]] = {
    "Namespace": _dns1123_label, "Service": _dns1035_label, "Role": _path_segment_name,
    "ClusterRole": _path_segment_name, "RoleBinding": _path_segment_name,
    "ClusterRoleBinding": _path_segment_name}
_SEMANTICS: dict[str, Callable[[dict], list[Cause]]] = {
    "Pod": _pod, "Deployment": _workload, "ReplicaSet": _workload, "Service": _service,
    "ConfigMap": _configmap, "Secret": _secret, "Lease": _lease, "Event": _event,
    "Endpoints": _endpoints, "EndpointSlice": _endpointslice, "Scale": _scale, "Binding": _binding, "Role": _role,
    "ClusterRole": _cluster_role,
    "RoleBinding": _binding_of(["Role", "ClusterRole"], namespaced=True),
    "ClusterRoleBinding": _binding_of(["ClusterRole"], namespaced=False)}


def semantic_causes(obj: dict, *, kind: str, namespaced: bool) -> list[Cause]:
    """Rules beyond the schema: names (DNS-1123 subdomain by default; Namespace a DNS-1123
    label; Service a DNS-1035 label, as in Kubernetes), labels, annotations, and each
    kind's own rules. A missing name is reported: the caller resolves generateName first."""
    out = _metadata(_m(obj.get("metadata")), "metadata",
                    name_check=_NAME_CHECKS.get(kind, _dns1123_subdomain), namespaced=namespaced)
    check = _SEMANTICS.get(kind)
    return out + check(obj) if check else out


# --- updates --------------------------------------------------------------------------

_POD_UPDATE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)")


def _pod_update(old: dict, new: dict) -> list[Cause]:
    # As Kubernetes does: copy what may change from new into old, then all else must match.
    o, n, out = dict(_m(old.get("spec"))), _m(new.get("spec")), []
    for key in ("containers", "initContainers"):
        oc, nc = o.get(key), n.get(key)
        if isinstance(oc, list) and isinstance(nc, list) and len(oc) == len(nc):
            o[key] = [{**x, "image": y.get("image")} if isinstance(x, dict) and isinstance(y, dict)
                      else x for x, y in zip(oc, nc)]
    old_ads, new_ads = o.get("activeDeadlineSeconds"), n.get("activeDeadlineSeconds")
    if _int(old_ads) and new_ads is None:
        out.append(_invalid("spec.activeDeadlineSeconds", None,
                            "must not update from a positive integer to nil value"))
    elif _int(old_ads) and _int(new_ads) and new_ads > old_ads:
        out.append(_invalid("spec.activeDeadlineSeconds", new_ads,
                            "must be less than or equal to previous value"))
    o["activeDeadlineSeconds"] = new_ads
    old_tol, new_tol = o.get("tolerations") or [], n.get("tolerations") or []
    if isinstance(old_tol, list) and isinstance(new_tol, list) and all(
            t in new_tol for t in old_tol):
        o["tolerations"] = n.get("tolerations")
    old_grace = o.get("terminationGracePeriodSeconds")
    if _int(old_grace) and old_grace < 0 and n.get("terminationGracePeriodSeconds") == 1:
        o["terminationGracePeriodSeconds"] = 1
    if not o.get("nodeName"):  # set once, by the binding
        o["nodeName"] = n.get("nodeName")
    # Both are defaulted, so nulls are gone except where this function put them.
    o, n = ({k: v for k, v in d.items() if v is not None} for d in (o, n))
    if o != n:
        changed = sorted(k for k in set(o) | set(n) if o.get(k) != n.get(k))
        out.append(_forbidden("spec", f"{_POD_UPDATE_MESSAGE}; changed: "
                              + ", ".join(f"spec.{k}" for k in changed)))
    return out


def _selector_update(old: dict, new: dict) -> list[Cause]:
    osel, nsel = _m(old.get("spec")).get("selector"), _m(new.get("spec")).get("selector")
    return [] if osel == nsel else [_invalid("spec.selector", nsel, "field is immutable")]


def _service_update(old: dict, new: dict) -> list[Cause]:
    ospec, nspec = _m(old.get("spec")), _m(new.get("spec"))
    # validateUpgradeDowngradeClusterIPs: an address is kept for the Service's life,
    # unless it becomes or stops being an ExternalName (which releases or allocates one).
    if "ExternalName" in (ospec.get("type"), nspec.get("type")):
        return []
    old_ips, new_ips = ospec.get("clusterIPs") or [], nspec.get("clusterIPs") or []
    if not isinstance(old_ips, list) or not isinstance(new_ips, list):
        return []
    return [_invalid(f"spec.clusterIPs[{i}]", new_ips, "may not change once set")
            for i, ip in enumerate(old_ips) if i < len(new_ips) and new_ips[i] != ip]


def _immutable(old: dict, new: dict, parts: tuple[str, ...]) -> list[Cause]:
    if old.get("immutable") is not True:
        return []
    why = "field is immutable when `immutable` is set"
    out = [] if new.get("immutable") is True else [_forbidden("immutable", why)]
    return out + [_forbidden(p, why) for p in parts if (old.get(p) or {}) != (new.get(p) or {})]


def _configmap_update(old: dict, new: dict) -> list[Cause]:
    return _immutable(old, new, ("data", "binaryData"))


def _secret_update(old: dict, new: dict) -> list[Cause]:
    out = _immutable(old, new, ("data",))
    if old.get("type") != new.get("type"):
        out.append(_invalid("type", new.get("type"), "field is immutable"))
    return out


def _role_ref_update(old: dict, new: dict) -> list[Cause]:
    # A binding's meaning is its role: changing it would re-grant without the checks a
    # new binding gets, so Kubernetes makes roleRef immutable.
    ref = new.get("roleRef")
    return [] if old.get("roleRef") == ref else [_invalid("roleRef", ref, "cannot change roleRef")]


def _endpointslice_update(old: dict, new: dict) -> list[Cause]:
    t = new.get("addressType")
    return [] if old.get("addressType") == t else [_invalid("addressType", t, "field is immutable")]


_UPDATES: dict[str, Callable[[dict, dict], list[Cause]]] = {
    "Pod": _pod_update, "Deployment": _selector_update, "ReplicaSet": _selector_update,
    "Service": _service_update, "ConfigMap": _configmap_update, "Secret": _secret_update,
    "RoleBinding": _role_ref_update, "ClusterRoleBinding": _role_ref_update,
    "EndpointSlice": _endpointslice_update}


def update_causes(old: dict, new: dict, *, kind: str) -> list[Cause]:
    """What an update may not change. Both objects are defaulted; `new` has been merged
    with what the endpoint carries over (status, server-set metadata)."""
    omd, nmd, out = _m(old.get("metadata")), _m(new.get("metadata")), []
    for key in ("name", "namespace", "uid"):
        if omd.get(key) != nmd.get(key):
            out.append(_invalid(f"metadata.{key}", nmd.get(key), "field is immutable"))
    check = _UPDATES.get(kind)
    return out + check(old, new) if check else out
