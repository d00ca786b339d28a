"""A pod's DNS configuration, as the kubelet's network/dns/dns.go forms it.

`Configurer.pod_dns(pod)` -> (servers, searches, options) for the pod's resolv.conf:
- dnsPolicy ClusterFirst (not hostNetwork) and ClusterFirstWithHostNet: the cluster
  DNS servers (--cluster-dns) only, search `<ns>.svc.<domain> svc.<domain> <domain>`
  followed by the node's search domains (duplicates dropped), options `ndots:5`.
  Without --cluster-dns it falls back to Default, with a MissingClusterDNS warning
  event on the node and on the pod.
- ClusterFirst on a hostNetwork pod, and Default: the node's resolv.conf
  (--resolv-conf), parsed (nameservers accumulate; the last `search` line wins; options
  merge, a later one replacing an earlier of the same name). --resolv-conf "" means
  nameserver 127.0.0.1 and search ".", as upstream.
- None: nothing but the pod's dnsConfig.
- Then spec.dnsConfig is appended: nameservers and searches after the policy's
  (duplicates dropped), options merged by name (the pod's value wins).
- Finally the resolver's limits: at most 3 nameservers, 32 search domains, no domain
  longer than 253 characters and a search line of at most 2048; what is cut is reported
  as a DNSConfigForming warning event on the pod, worded as the kubelet's.
Pure apart from reading --resolv-conf; events are returned, the caller records them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("minik8s.kubelet.dns")

MAX_NAMESERVERS, MAX_SEARCH_PATHS, MAX_SEARCH_LIST_CHARS = 3, 32, 2048
MAX_DOMAIN_LENGTH = 253     # DNS1123SubdomainMaxLength: glibc aborts on longer search paths
MAX_RESOLV_CONF_BYTES = 200 * 1024  # what the kubelet reads of it at most
DEFAULT_OPTIONS = ["ndots:5"]
POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")


@dataclass
class DNSConfig:
    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass
class Event:
    """A warning the caller records: on the pod, or on the node (`on_node`)."""
    reason: str
    message: str
    on_node: bool = False


def parse_resolv_conf(text: str) -> DNSConfig:
    """parseResolvConf: `nameserver` lines accumulate; the last `search` line wins (each
    domain without its trailing dot, "." dropped); `options` merge by name."""
    cfg = DNSConfig()
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        if fields[0] == "nameserver" and len(fields) >= 2:
            cfg.servers.append(fields[1])
        elif fields[0] == "search":
            cfg.searches = [s.removesuffix(".") for s in fields[1:] if s != "."]
        elif fields[0] == "options":
            cfg.options = _merge_options(cfg.options, fields[1:])
    return cfg


def _omit_duplicates(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _merge_options(existing: list[str], new: list[str]) -> list[str]:
    """By name, a later one replacing an earlier (mergeDNSOptions; upstream's order is a
    Go map's, random, so the first appearance's order is kept here)."""
    merged: dict[str, str] = {}
    for op in [*existing, *new]:
        name, _, value = op.partition(":")
        merged[name] = value
    return [f"{k}:{v}" if v else k for k, v in merged.items()]


def pod_dns_type(pod: dict) -> str:
    """getPodDNSType: "cluster", "host" or "none"."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "None":
        return "none"
    if policy == "ClusterFirstWithHostNet":
        return "cluster"
    if policy == "ClusterFirst":
        return "host" if spec.get("hostNetwork") else "cluster"
    if policy == "Default":
        return "host"
    # The API server rejects any other policy; upstream falls back to ClusterFirst.
    log.error("invalid dnsPolicy %r of pod %s; falling back to ClusterFirst", policy,
              (pod.get("metadata") or {}).get("name"))
    return "cluster"


class Configurer:
    def __init__(self, *, cluster_dns: list[str] | None = None, cluster_domain: str = "cluster.local",
                 resolv_conf: str = "/etc/resolv.conf", node_ips: list[str] | None = None):
        self.cluster_dns = list(cluster_dns or [])
        self.cluster_domain = cluster_domain.strip(".")
        self.resolv_conf = resolv_conf
        self.node_ips = list(node_ips or [])

    def host_dns(self) -> DNSConfig:
        if not self.resolv_conf:
            return DNSConfig()
        try:
            with open(self.resolv_conf, errors="replace") as f:
                return parse_resolv_conf(f.read(MAX_RESOLV_CONF_BYTES))
        except OSError as e:
            log.error("reading the node's resolv.conf %s: %s", self.resolv_conf, e)
            return DNSConfig()

    def cluster_searches(self, namespace: str, host_searches: list[str]) -> list[str]:
        if not self.cluster_domain:
            return host_searches
        d = self.cluster_domain
        return _omit_duplicates([f"{namespace}.svc.{d}", f"svc.{d}", d, *host_searches])

    def pod_dns(self, pod: dict) -> tuple[DNSConfig, list[Event]]:
        events: list[Event] = []
        md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        kind = pod_dns_type(pod)
        cfg = DNSConfig() if kind == "none" else self.host_dns()
        if kind == "cluster" and self.cluster_dns:
            # The cluster DNS is the only nameserver: it forwards what it cannot answer.
            cfg = DNSConfig(list(self.cluster_dns),
                            self.cluster_searches(md.get("namespace") or "default", cfg.searches),
                            list(DEFAULT_OPTIONS))
        elif kind == "cluster":
            msg = ('kubelet does not have ClusterDNS IP configured and cannot create Pod using '
                   '"ClusterFirst" policy. Falling back to "Default" policy.')
            events.append(Event("MissingClusterDNS", msg, on_node=True))
            events.append(Event("MissingClusterDNS",
                                f'pod: "{md.get("name")}_{md.get("namespace")}({md.get("uid")})". {msg}'))
            kind = "host"
        if kind == "host" and not self.resolv_conf:
            # No resolver file: the node's own resolver ("nameserver" unset means local).
            cfg.servers = ["::1" if ":" in ip else "127.0.0.1" for ip in self.node_ips] or ["127.0.0.1"]
            cfg.searches = ["."]
        extra = spec.get("dnsConfig")
        if isinstance(extra, dict):
            cfg.servers = _omit_duplicates([*cfg.servers, *(extra.get("nameservers") or [])])
            cfg.searches = _omit_duplicates([*cfg.searches, *(extra.get("searches") or [])])
            cfg.options = _merge_options(cfg.options, [
                o["name"] + (f":{o['value']}" if o.get("value") not in (None, "") else "")
                for o in extra.get("options") or [] if isinstance(o, dict) and o.get("name")])
        return self._fit_limits(cfg, events)

    def _fit_limits(self, cfg: DNSConfig, events: list[Event]) -> tuple[DNSConfig, list[Event]]:
        if len(cfg.servers) > MAX_NAMESERVERS:
            cfg.servers = cfg.servers[:MAX_NAMESERVERS]
            events.append(Event("DNSConfigForming", "Nameserver limits were exceeded, some nameservers have "
                                f"been omitted, the applied nameserver line is: {' '.join(cfg.servers)}"))
        searches, exceeded = cfg.searches, False
        if len(searches) > MAX_SEARCH_PATHS:
            searches, exceeded = searches[:MAX_SEARCH_PATHS], True
        kept = [s for s in searches if len(s) <= MAX_DOMAIN_LENGTH]
        exceeded |= len(kept) != len(searches)
        # Drop domains from the end until the line fits.
        while kept and len(" ".join(kept)) > MAX_SEARCH_LIST_CHARS:
            kept.pop()
            exceeded = True
        cfg.searches = kept
        if exceeded:
            events.append(Event("DNSConfigForming", "Search Line limits were exceeded, some search paths have "
                                f"been omitted, the applied search line is: {' '.join(kept)}"))
        return cfg, events
