"""What the proxy reads out of Services and EndpointSlices (kube-proxy's ServicePort,
Endpoint and CategorizeEndpoints, pkg/proxy).

Pure functions over API objects (dicts); nothing here does I/O.

- `service_ports(svc)`: one `ServicePort` per port of a Service that has an IPv4
  ClusterIP. Headless (`clusterIP: None`) and ExternalName Services have none: the proxy
  leaves them to DNS, as kube-proxy does.
- `endpoints_for(port, slices, hostname)`: the endpoints of one ServicePort, merged from
  every IPv4 EndpointSlice of the Service (by `kubernetes.io/service-name`) whose port
  has the same name and protocol; one per ip:port, the first address of each endpoint.
- `categorize(port, endpoints)`: kube-proxy's CategorizeEndpoints: the endpoints
  Cluster-policy and Local-policy traffic may use. Ready endpoints first; serving but
  terminating ones only when no ready one exists (KEP-1669).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
DEFAULT_AFFINITY_TIMEOUT = 10800  # ServiceSpec.sessionAffinityConfig.clientIP.timeoutSeconds


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    name: str
    port_name: str
    protocol: str                       # "tcp", "udp" or "sctp"
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    lb_ips: tuple[str, ...] = ()
    affinity_timeout: int = 0           # seconds; 0: no ClientIP affinity
    internal_local: bool = False        # internalTrafficPolicy: Local
    external_local: bool = False        # externalTrafficPolicy: Local (and externally reachable)
    health_check_node_port: int = 0

    @property
    def service(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def key(self) -> str:
        """kube-proxy's ServicePortName string: `ns/name:port` (or `ns/name` unnamed)."""
        return f"{self.service}:{self.port_name}" if self.port_name else self.service

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.external_ips or self.lb_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        # External traffic needs the Cluster endpoints even under a Local policy: pods
        # and the node itself are short-circuited to them.
        return not self.internal_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_local or (self.externally_accessible and self.external_local)


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    local: bool = False

    @property
    def usable_terminating(self) -> bool:
        return self.serving and self.terminating


def _ipv4(value: Any) -> str | None:
    try:
        ip = ipaddress.ip_address(str(value))
    except ValueError:
        return None
    return str(ip) if ip.version == 4 else None


def service_ports(svc: dict[str, Any]) -> list[ServicePort]:
    spec = svc.get("spec") or {}
    md = svc["metadata"]
    if spec.get("type") == "ExternalName":
        return []
    cluster_ip = _ipv4(spec.get("clusterIP"))
    if cluster_ip is None:  # headless, not yet allocated, or IPv6
        return []
    svc_type = spec.get("type") or "ClusterIP"
    external_ips = tuple(ip for ip in map(_ipv4, spec.get("externalIPs") or ()) if ip)
    lb_ips: tuple[str, ...] = ()
    if svc_type == "LoadBalancer":
        # ipMode Proxy: the load balancer proxies to the nodes itself, so its IP must not
        # be captured here (KEP-1860), as kube-proxy does.
        lb_ips = tuple(ip for ip in (_ipv4(i.get("ip")) for i in
                                     ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
                                     if i.get("ipMode") != "Proxy") if ip)
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    out = []
    for p in spec.get("ports") or ():
        node_port = int(p.get("nodePort") or 0) if svc_type in ("NodePort", "LoadBalancer") else 0
        external = bool(node_port or external_ips or lb_ips)
        out.append(ServicePort(
            namespace=md.get("namespace") or "default", name=md["name"], port_name=p.get("name") or "",
            protocol=(p.get("protocol") or "TCP").lower(), cluster_ip=cluster_ip, port=int(p["port"]),
            node_port=node_port, external_ips=external_ips, lb_ips=lb_ips, affinity_timeout=affinity,
            internal_local=spec.get("internalTrafficPolicy") == "Local",
            external_local=external and spec.get("externalTrafficPolicy") == "Local",
            health_check_node_port=int(spec.get("healthCheckNodePort") or 0)
            if external and spec.get("externalTrafficPolicy") == "Local" else 0))
    return out


def slice_service(slc: dict[str, Any]) -> str | None:
    """`ns/name` of the Service an EndpointSlice belongs to, or None."""
    name = (slc["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{slc['metadata'].get('namespace') or 'default'}/{name}" if name else None


def endpoints_for(port: ServicePort, slices: Iterable[dict[str, Any]], hostname: str) -> list[Endpoint]:
    seen: dict[tuple[str, int], Endpoint] = {}
    for slc in sorted(slices, key=lambda s: s["metadata"]["name"]):
        if slc.get("addressType", "IPv4") != "IPv4":
            continue
        target = next((p.get("port") for p in slc.get("ports") or ()
                       if (p.get("name") or "") == port.port_name
                       and (p.get("protocol") or "TCP").lower() == port.protocol), None)
        if not target:
            continue
        for ep in slc.get("endpoints") or ():
            addrs = ep.get("addresses") or ()
            ip = _ipv4(addrs[0]) if addrs else None
            if ip is None or (ip, int(target)) in seen:
                continue
            cond = ep.get("conditions") or {}
            # EndpointConditions: a missing `ready` means ready, a missing `serving`
            # means what `ready` says, a missing `terminating` means not terminating.
            ready = cond.get("ready") is not False
            serving = cond.get("serving") if cond.get("serving") is not None else ready
            seen[(ip, int(target))] = Endpoint(
                ip=ip, port=int(target), ready=ready, serving=bool(serving),
                terminating=bool(cond.get("terminating")), local=ep.get("nodeName") == hostname)
    return list(seen.values())


@dataclass(frozen=True)
class Categorized:
    cluster: tuple[Endpoint, ...]       # for Cluster traffic policy
    local: tuple[Endpoint, ...]         # for Local traffic policy
    reachable: tuple[Endpoint, ...]     # every endpoint some rule may send to
    has_endpoints: bool                 # usable endpoints anywhere in the cluster


def _usable(endpoints: list[Endpoint]) -> tuple[Endpoint, ...]:
    ready = tuple(e for e in endpoints if e.ready)
    return ready or tuple(e for e in endpoints if e.usable_terminating)


def categorize(port: ServicePort, endpoints: list[Endpoint]) -> Categorized:
    cluster: tuple[Endpoint, ...] = ()
    has = False
    if port.uses_cluster_endpoints:
        cluster = _usable(endpoints)
        has = bool(cluster)
    if not port.uses_local_endpoints:
        return Categorized(cluster, (), cluster, has)
    local = _usable([e for e in endpoints if e.local])
    if not port.uses_cluster_endpoints:
        has = bool(local) or any(e.ready or e.usable_terminating for e in endpoints)
        return Categorized((), local, local, has)
    reachable = cluster + tuple(e for e in local if e not in cluster)
    return Categorized(cluster, local, reachable, has)
