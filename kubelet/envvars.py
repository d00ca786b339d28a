"""A container's environment, command and args as the kubelet computes them
(kubelet_pods.go makeEnvironmentVariables, third_party/forked/golang/expansion).

`envFrom` sources first, then `env` entries in order; a value may refer to variables
defined before it as `$(NAME)` (`$$` is a literal `$`; an undefined reference is left as
written). `valueFrom` reads a ConfigMap or Secret key, a pod field (fieldRef) or a
container resource (resourceFieldRef). The command and args are expanded with the final
environment. A reference that cannot be resolved (a missing object or key that is not
optional) raises `ConfigError`, which the kubelet reports as CreateContainerConfigError.
Service variables (`service_env`, as getServiceEnvVarMap and envvars.FromServices):
for each Service with a cluster IP (headless and ExternalName ones have none) in the
pod's namespace when `enableServiceLinks` is true, and always for the master Service
`default/kubernetes`: `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT` (the first port),
`<NAME>_SERVICE_PORT_<PORTNAME>` per named port, and Docker's link variables
`<NAME>_PORT` and `<NAME>_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}` (NAME upper-cased,
`-` -> `_`). They come last, unless the container defines the same name, and `$(...)`
references may use them, as upstream's.
Pure: objects are read through the `get_object(kind, namespace, name)` callable.
"""
from __future__ import annotations

import base64
import collections
import math
import re
from typing import Callable, Mapping

from machinery.quantity import bytes_value, cpu_millis, parse_quantity

GetObject = Callable[[str, str, str], "dict | None"]
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class ConfigError(Exception):
    """The container's configuration refers to something that does not exist."""


def expand(text: str, env: Mapping[str, str]) -> str:
    out, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                close = text.find(")", i + 2)
                if close == -1:  # an incomplete reference stays as written
                    out.append(text[i:])
                    break
                name = text[i + 2:close]
                out.append(env[name] if name in env else f"$({name})")
                i = close + 1
                continue
            out.append(ch + nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _data(kind: str, obj: dict) -> dict[str, str]:
    if kind == "secrets":
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})


def object_refs(pod: dict) -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of every ConfigMap and Secret the pod's volumes and
    containers refer to."""
    ns, spec = pod["metadata"].get("namespace", "default"), pod.get("spec") or {}
    refs = set()
    for v in spec.get("volumes") or []:
        if "configMap" in v and (v["configMap"] or {}).get("name"):
            refs.add(("configmaps", ns, v["configMap"]["name"]))
        if "secret" in v and (v["secret"] or {}).get("secretName"):
            refs.add(("secrets", ns, v["secret"]["secretName"]))
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for src in c.get("envFrom") or []:
            for key, kind in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
                if (src.get(key) or {}).get("name"):
                    refs.add((kind, ns, src[key]["name"]))
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            for key, kind in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
                if (vf.get(key) or {}).get("name"):
                    refs.add((kind, ns, vf[key]["name"]))
    return refs


def kubernetes_service_env(host: str, port: int) -> dict[str, str]:
    """The variables the `kubernetes` Service gives every container (envvars.FromServices
    for a Service with one port named https)."""
    url = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
    link = f"KUBERNETES_PORT_{port}_TCP"
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port), "KUBERNETES_PORT": url, link: url,
            f"{link}_PROTO": "tcp", f"{link}_PORT": str(port), f"{link}_ADDR": host}


def _env_name(name: str) -> str:
    return name.replace("-", "_").upper()


def from_services(services: list[dict]) -> dict[str, str]:
    """envvars.FromServices: the variables of each Service whose cluster IP is set."""
    out: dict[str, str] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        ip, ports = spec.get("clusterIP"), spec.get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        prefix = _env_name(svc["metadata"]["name"])
        out[f"{prefix}_SERVICE_HOST"] = ip
        out[f"{prefix}_SERVICE_PORT"] = str(ports[0].get("port"))
        for sp in ports:
            if sp.get("name"):
                out[f"{prefix}_SERVICE_PORT_{_env_name(sp['name'])}"] = str(sp.get("port"))
        for i, sp in enumerate(ports):
            proto, port = (sp.get("protocol") or "TCP").upper(), sp.get("port")
            url = f"{proto.lower()}://" + (f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
            if i == 0:  # Docker special-cases the first port
                out[f"{prefix}_PORT"] = url
            link = f"{prefix}_PORT_{port}_{proto}"
            out.update({link: url, f"{link}_PROTO": proto.lower(), f"{link}_PORT": str(port),
                        f"{link}_ADDR": ip})
    return out


MASTER_SERVICES = ("kubernetes",)


def service_env(services: list[dict], namespace: str, *, enable_service_links: bool,
                master_override: Mapping[str, str] | None = None) -> dict[str, str]:
    """getServiceEnvVarMap over every Service the kubelet knows. A Service of the pod's
    namespace wins over a master Service of the same name. `master_override`: the
    variables to give for the `kubernetes` master Service instead of its own."""
    chosen: dict[str, dict] = {}
    for svc in services:
        spec, md = svc.get("spec") or {}, svc.get("metadata") or {}
        if spec.get("clusterIP") in (None, "", "None"):
            continue
        name, ns = md.get("name", ""), md.get("namespace", "")
        if ns == "default" and name in MASTER_SERVICES:
            chosen.setdefault(name, svc)
        elif ns == namespace and enable_service_links:
            chosen[name] = svc
    master = chosen.get("kubernetes")
    use_override = master_override is not None and (
        master is None or (master["metadata"].get("namespace") == "default"))
    if use_override:
        chosen.pop("kubernetes", None)
    out = from_services([chosen[k] for k in sorted(chosen)])
    if use_override and master_override:
        out.update(master_override)
    return out


def field_value(pod: dict, path: str, *, pod_ip: str | None, host_ip: str | None) -> str:
    md, spec = pod["metadata"], pod.get("spec") or {}
    m = _SUBSCRIPT.match(path)
    if m:
        return (md.get(m[1]) or {}).get(m[2], "")
    values = {"metadata.name": md.get("name", ""), "metadata.namespace": md.get("namespace", ""),
              "metadata.uid": md.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
              "spec.serviceAccountName": spec.get("serviceAccountName", ""),
              "status.hostIP": host_ip or "", "status.hostIPs": host_ip or "",
              "status.podIP": pod_ip or "", "status.podIPs": pod_ip or ""}
    if path not in values:
        raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")
    return values[path]


def resource_value(container: dict, ref: dict, node_allocatable: Mapping[str, str]) -> str:
    """resourceFieldRef: a limit that is not set reads the node's allocatable amount."""
    res = ref.get("resource", "")
    kind, _, name = res.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ConfigError(f"unsupported resourceFieldRef resource {res!r}")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = ((container.get("resources") or {}).get("limits") or {}).get(name)
    if value is None:
        value = node_allocatable.get(name, "0") if kind == "limits" else "0"
    divisor = parse_quantity(ref.get("divisor") or "1")
    if name == "cpu":  # rounded up to whole divisors, as Kubernetes does
        return str(math.ceil(cpu_millis(value) / (divisor * 1000)))
    return str(math.ceil(bytes_value(value) / divisor))


def resolve(container: dict, pod: dict, *, get_object: GetObject, pod_ip: str | None,
            host_ip: str | None, node_allocatable: Mapping[str, str] | None = None,
            service_env: Mapping[str, str] | None = None
            ) -> tuple[dict[str, str], list[str], list[str]]:
    """-> (env, command, args), expanded."""
    services = service_env or {}
    ns = pod["metadata"].get("namespace", "default")
    env: dict[str, str] = {}

    def fetch(kind: str, name: str, optional: bool) -> dict | None:
        obj = get_object(kind, ns, name)
        if obj is None and not optional:
            raise ConfigError(f'{kind[:-1]} "{name}" not found')
        return obj

    for src in container.get("envFrom") or []:
        for key, kind in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
            if key in src:
                ref = src[key] or {}
                obj = fetch(kind, ref.get("name", ""), bool(ref.get("optional")))
                for k, v in (_data(kind, obj) if obj else {}).items():
                    env[src.get("prefix", "") + k] = v
    for e in container.get("env") or []:
        name, vf = e.get("name", ""), e.get("valueFrom")
        if not vf:
            env[name] = expand(e.get("value", ""), collections.ChainMap(env, services))
            continue
        if "fieldRef" in vf:
            env[name] = field_value(pod, vf["fieldRef"].get("fieldPath", ""), pod_ip=pod_ip,
                                    host_ip=host_ip)
        elif "resourceFieldRef" in vf:
            env[name] = resource_value(container, vf["resourceFieldRef"], node_allocatable or {})
        else:
            for key, kind, label in (("configMapKeyRef", "configmaps", "ConfigMap"),
                                     ("secretKeyRef", "secrets", "Secret")):
                if key in vf:
                    ref = vf[key] or {}
                    optional = bool(ref.get("optional"))
                    obj = fetch(kind, ref.get("name", ""), optional)
                    data = _data(kind, obj) if obj else {}
                    if ref.get("key") in data:
                        env[name] = data[ref["key"]]
                    elif obj is not None and not optional:
                        raise ConfigError(f"couldn't find key {ref.get('key')} in {label} "
                                          f"{ns}/{ref.get('name')}")
    for k, v in services.items():
        env.setdefault(k, v)
    command = [expand(x, env) for x in container.get("command") or []]
    args = [expand(x, env) for x in container.get("args") or []]
    return env, command, args
