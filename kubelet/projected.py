"""The files of projected and downwardAPI volumes, as the kubelet computes them
(pkg/volume/projected, pkg/volume/downwardapi, pkg/fieldpath).

`downward_payload` and `projected_payload` turn a volume's spec and the pod into
`{relative path: (content, mode)}`, which the runtime writes with the atomic `..data`
swap (kubelet/runtime/linux/volumes.py). Pure: ConfigMaps and Secrets are read through
`get_object(kind, namespace, name)`, ServiceAccount tokens are passed in already
requested (kubelet/token.py), keyed by the source's index in `sources`.

Modes: an item's `mode`, else the volume's `defaultMode`, else 0644 (Kubernetes'
DefaultMode). A downwardAPI label or annotation map is `key="value"` lines in key order
(fieldpath.FormatMap). Only the fields Kubernetes allows in volumes are accepted
(metadata.name, namespace, uid, labels, annotations and one label or annotation by key);
anything else, a missing object or key that is not optional, or an item path that is
absolute or climbs with `..`, raises VolumeError, which the kubelet reports as
FailedMount.
"""
from __future__ import annotations

import base64
import os
import re
from typing import Callable, Mapping

from kubelet import envvars
from kubelet.runtime import VolumeError

DEFAULT_MODE = 0o644
DEFAULT_TOKEN_EXPIRATION = 3600  # seconds: the API's default for serviceAccountToken sources

Payload = dict[str, tuple[bytes, int]]
GetObject = Callable[[str, str, str], "dict | None"]
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def _check_path(rel: str, what: str) -> str:
    if not rel or os.path.isabs(rel) or ".." in rel.split("/"):
        raise VolumeError(f"{what} item path {rel!r} must be relative and not contain '..'")
    return rel


def format_map(m: Mapping[str, str]) -> str:
    """fieldpath.FormatMap: `key="value"` per line, keys sorted, Go-quoted values."""
    return "\n".join(f"{k}={_go_quote(m[k])}" for k in sorted(m))


def _go_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _field(pod: dict, path: str) -> str:
    md = pod.get("metadata") or {}
    m = _SUBSCRIPT.match(path)
    if m:
        return (md.get(m[1]) or {}).get(m[2], "")
    if path in ("metadata.labels", "metadata.annotations"):
        return format_map(md.get(path.split(".")[1]) or {})
    simple = {"metadata.name": "name", "metadata.namespace": "namespace", "metadata.uid": "uid"}
    if path not in simple:
        raise VolumeError(f"downwardAPI: fieldPath {path!r} is not supported in volumes")
    return str(md.get(simple[path], ""))


def downward_payload(items: list[dict], pod: dict, *, default_mode: int,
                     node_allocatable: Mapping[str, str]) -> Payload:
    out: Payload = {}
    containers = (pod.get("spec") or {}).get("containers") or []
    containers = containers + ((pod.get("spec") or {}).get("initContainers") or [])
    for item in items:
        rel = _check_path(item.get("path", ""), "downwardAPI")
        mode = item.get("mode", default_mode)
        if item.get("fieldRef"):
            value = _field(pod, (item["fieldRef"] or {}).get("fieldPath", ""))
        elif item.get("resourceFieldRef"):
            ref = item["resourceFieldRef"] or {}
            name = ref.get("containerName", "")
            container = next((c for c in containers if c.get("name") == name), None)
            if container is None:
                raise VolumeError(f"downwardAPI: resourceFieldRef containerName {name!r} is not a "
                                  "container of the pod")
            try:
                value = envvars.resource_value(container, ref, node_allocatable)
            except envvars.ConfigError as e:
                raise VolumeError(f"downwardAPI: {e}") from None
        else:
            raise VolumeError(f"downwardAPI item {rel!r}: needs fieldRef or resourceFieldRef")
        out[rel] = (value.encode(), mode)
    return out


def _object_items(kind: str, spec: dict, obj: dict | None, *, default_mode: int) -> Payload:
    label = "configmap" if kind == "configmaps" else "secret"
    if obj is None:
        if spec.get("optional"):
            return {}
        raise VolumeError(f'{label} "{spec.get("name", "")}" not found')
    data: dict[str, bytes] = {}
    if kind == "secrets":
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    else:
        data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    items = spec.get("items")
    if items is None:
        items = [{"key": k, "path": k} for k in sorted(data)]
    out: Payload = {}
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if spec.get("optional"):
                continue
            raise VolumeError(f"{label} references non-existent key {key!r}")
        out[_check_path(item.get("path", ""), label)] = (data[key], item.get("mode", default_mode))
    return out


def token_sources(volume: dict) -> list[tuple[int, str, int]]:
    """(index in sources, audience, expirationSeconds) of a projected volume's
    serviceAccountToken sources."""
    out = []
    for i, src in enumerate(((volume.get("projected") or {}).get("sources")) or []):
        tok = (src or {}).get("serviceAccountToken")
        if tok is not None:
            out.append((i, tok.get("audience") or "",
                        int(tok.get("expirationSeconds") or DEFAULT_TOKEN_EXPIRATION)))
    return out


def projected_payload(spec: dict, pod: dict, *, get_object: GetObject, tokens: Mapping[int, str],
                      node_allocatable: Mapping[str, str]) -> Payload:
    """The files of a projected volume; `tokens` holds the token of every
    serviceAccountToken source by index. Later sources win a path, as upstream's
    collectData (the API server refuses duplicates, so this only matters for old data)."""
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    default_mode = spec.get("defaultMode", DEFAULT_MODE)
    out: Payload = {}
    for i, src in enumerate(spec.get("sources") or []):
        src = src or {}
        if "configMap" in src:
            ref = src["configMap"] or {}
            out.update(_object_items("configmaps", ref, get_object("configmaps", ns, ref.get("name", "")),
                                     default_mode=default_mode))
        elif "secret" in src:
            ref = src["secret"] or {}
            out.update(_object_items("secrets", ref, get_object("secrets", ns, ref.get("name", "")),
                                     default_mode=default_mode))
        elif "downwardAPI" in src:
            out.update(downward_payload((src["downwardAPI"] or {}).get("items") or [], pod,
                                        default_mode=default_mode, node_allocatable=node_allocatable))
        elif "serviceAccountToken" in src:
            rel = _check_path((src["serviceAccountToken"] or {}).get("path", ""), "serviceAccountToken")
            if i not in tokens:
                raise VolumeError(f"serviceAccountToken {rel!r}: no token")
            out[rel] = (tokens[i].encode(), default_mode)
        elif "clusterTrustBundle" in src or "podCertificate" in src:
            raise VolumeError("projected volume: clusterTrustBundle and podCertificate sources are "
                              "not supported")
    return out


def object_refs(pod: dict) -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of the ConfigMaps and Secrets the pod's projected volumes read."""
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    refs = set()
    for v in (pod.get("spec") or {}).get("volumes") or []:
        for src in ((v.get("projected") or {}).get("sources")) or []:
            for key, kind in (("configMap", "configmaps"), ("secret", "secrets")):
                name = ((src or {}).get(key) or {}).get("name")
                if name:
                    refs.add((kind, ns, name))
    return refs
