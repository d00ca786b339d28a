"""The cluster zone, answered as CoreDNS's kubernetes plugin answers it (the Kubernetes
DNS-Based Service Discovery specification, schema 1.1.0), from informer caches.

Guarantees, for the zone `<domain>` (cluster.local by default):
- Endpoints come from the Service's EndpointSlices (those labelled
  `kubernetes.io/service-name: <svc>`, of address type IPv4 or IPv6), as CoreDNS reads
  them: an endpoint counts unless its `ready` condition is false (terminating and
  not-ready pods are not answered); each slice's ports are its endpoints' ports.
- `<svc>.<ns>.svc.<domain>` A/AAAA: the Service's clusterIP; for a headless Service
  (`clusterIP: None`) its ready endpoint addresses, and NXDOMAIN while it has none (as
  CoreDNS answers). ExternalName: a CNAME.
- `<host>.<svc>.<ns>.svc.<domain>`: a headless Service's endpoint, by its hostname or,
  without one, its dashed IP (what CoreDNS names it).
- SRV: `_<port>._<proto>.<svc>.<ns>.svc.<domain>` for named ports (and every port on a
  SRV query for the Service's own name): target the Service's name, or each endpoint's
  name for a headless Service, with their A records in the additional section.
- `<a-b-c-d>.<ns>.pod.<domain>`: the address read from the name (`pods insecure`).
- `dns-version.<domain>` TXT "1.1.0", as the specification asks.
- PTR for Service clusterIPs and headless endpoint addresses; any other reverse name is
  not ours (`fallthrough in-addr.arpa ip6.arpa`, as kubeadm's Corefile has it).
- A name that does not exist is NXDOMAIN; one that exists without the asked type is
  NOERROR with an empty answer (NODATA); both carry the zone's SOA in the authority
  section, as CoreDNS's do. `<ns>.svc.<domain>` exists while the namespace has a Service
  (no Namespace informer: CoreDNS checks the Namespace itself).
- Until the caches have synced, a name they do not have is SERVFAIL, not NXDOMAIN
  (CoreDNS's answer while its API connection has not synced).
- Every record has the plugin's default TTL, 5 s (kubeadm's Corefile sets 30: --ttl).

Reads only the caches; never blocks; one asyncio loop, not thread-safe.
"""
from __future__ import annotations

import ipaddress
import time
from typing import Any, Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from client.informer import IndexFunc, Indexer

SCHEMA_VERSION = "1.1.0"
CLUSTER_IP = "clusterIP"
ENDPOINT_IP = "endpointIP"
SERVICE = "service"  # an EndpointSlice's Service, namespace/name
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def _cluster_ips(svc: dict[str, Any]) -> list[str]:
    spec = svc.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [ip for ip in ips if ip and ip != "None"]


def _ready_endpoints(es: dict[str, Any]) -> list[dict[str, Any]]:
    """The endpoints CoreDNS answers with: `ready` not false (unset counts as ready), in
    a slice of IP addresses."""
    if es.get("addressType") not in ("IPv4", "IPv6"):
        return []
    return [e for e in es.get("endpoints") or () if isinstance(e, dict)
            and (e.get("conditions") or {}).get("ready") is not False]


def _endpoint_ips(es: dict[str, Any]) -> list[str]:
    return [a for e in _ready_endpoints(es) for a in e.get("addresses") or () if a]


def _service_of(es: dict[str, Any]) -> str | None:
    md = es.get("metadata") or {}
    name = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{md.get('namespace', '')}/{name}" if name else None


def _slice_service(es: dict[str, Any]) -> list[str]:
    key = _service_of(es)
    return [key] if key else []


INDEXERS: dict[str, IndexFunc] = {CLUSTER_IP: _cluster_ips}
# For the EndpointSlice informer (the name is kept from when it indexed Endpoints).
ENDPOINT_INDEXERS: dict[str, IndexFunc] = {ENDPOINT_IP: _endpoint_ips, SERVICE: _slice_service}


def _dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


def _undash(label: str) -> str | None:
    """The address a pod name's first label spells, or None."""
    for text in (label.replace("-", "."), label.replace("-", ":")):
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            continue
    return None


def _is_headless(svc: dict[str, Any]) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") == "None"


class Zone:
    """Answers queries for the cluster domain and for the reverse names it knows."""

    def __init__(self, services: Indexer, slices: Indexer, *, domain: str = "cluster.local",
                 ttl: int = 5, synced: Callable[[], bool] = lambda: True):
        """`slices`: an EndpointSlice cache with ENDPOINT_INDEXERS."""
        self.services, self.slices, self.ttl, self.synced = services, slices, ttl, synced
        self.origin = dns.name.from_text(domain)
        self.serial = int(time.time())

    def changed(self, *_: Any) -> None:
        """An informer handler: the SOA serial follows changes, as CoreDNS's does."""
        self.serial = int(time.time())

    # -- the answer ----------------------------------------------------------------

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        """The response, or None when the name is not ours (forward it)."""
        q = query.question[0]
        name = q.name
        if name.is_subdomain(self.origin):
            found = self._records(name)
        elif name.is_subdomain(dns.reversename.ipv4_reverse_domain) or \
                name.is_subdomain(dns.reversename.ipv6_reverse_domain):
            found = self._reverse(name)
            if found is None:
                return None  # fallthrough: not an address of this cluster
        else:
            return None
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        if found is None and not self.synced():
            # CoreDNS: a name not (yet) in caches that have not synced is SERVFAIL, not a
            # NXDOMAIN a client would cache as the truth
            resp.flags &= ~dns.flags.AA
            resp.set_rcode(dns.rcode.SERVFAIL)
            return resp
        if found is None:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        else:
            rrsets, extra = found
            resp.answer = [r for r in rrsets if q.rdclass == dns.rdataclass.IN and
                           (r.rdtype == q.rdtype or q.rdtype == dns.rdatatype.ANY or
                            (r.rdtype == dns.rdatatype.CNAME and q.rdtype != dns.rdatatype.CNAME))]
            if resp.answer and any(r.rdtype == dns.rdatatype.SRV for r in resp.answer):
                resp.additional = extra
        if not resp.answer:
            resp.authority = [self._soa()]
        return resp

    def _soa(self) -> dns.rrset.RRset:
        o = self.origin.to_text()
        return self._rrset(self.origin, "SOA", [f"ns.dns.{o} hostmaster.{o} {self.serial} 7200 1800 86400 {self.ttl}"])

    def _rrset(self, name: dns.name.Name, rdtype: str, texts: list[str]) -> dns.rrset.RRset:
        return dns.rrset.from_text_list(name, self.ttl, "IN", rdtype, texts)

    def _addr(self, name: dns.name.Name, ips: list[str]) -> list[dns.rrset.RRset]:
        v4 = [ip for ip in ips if ":" not in ip]
        v6 = [ip for ip in ips if ":" in ip]
        return ([self._rrset(name, "A", v4)] if v4 else []) + ([self._rrset(name, "AAAA", v6)] if v6 else [])

    Found = tuple[list[dns.rrset.RRset], list[dns.rrset.RRset]]

    def _records(self, name: dns.name.Name) -> Found | None:
        """Every record of `name` (and the SRV targets' addresses), or None: no such name."""
        labels = [lb.decode().lower() for lb in name.relativize(self.origin).labels]
        if name == self.origin:
            return [self._soa()], []
        if labels == ["dns-version"]:
            return [self._rrset(name, "TXT", [f'"{SCHEMA_VERSION}"'])], []
        if labels in (["svc"], ["pod"]):
            return [], []
        if len(labels) == 2 and labels[1] == "svc":
            return ([], []) if self.services.by_index("namespace", labels[0]) else None
        if len(labels) == 3 and labels[2] == "pod":
            ip = _undash(labels[0])
            return (self._addr(name, [ip]), []) if ip else None
        if len(labels) >= 3 and labels[-1] == "svc":
            return self._service_records(name, labels)
        return None

    def _service_records(self, name: dns.name.Name, labels: list[str]) -> Found | None:
        svc_name, ns = labels[-3], labels[-2]
        svc = self.services.get(f"{ns}/{svc_name}")
        if svc is None:
            return None
        spec = svc.get("spec") or {}
        svc_fqdn = dns.name.from_text(f"{svc_name}.{ns}.svc", self.origin)
        prefix = labels[:-3]
        if spec.get("type") == "ExternalName":
            if prefix:
                return None
            return [self._rrset(name, "CNAME", [dns.name.from_text(spec.get("externalName", "")).to_text()])], []
        headless = _is_headless(svc)
        # (address, its DNS name, endpoint ports) for every ready address, a slice's ports
        # being its endpoints'; a port without a number (all ports) has no SRV record
        members = []
        for es in sorted(self.slices.by_index(SERVICE, f"{ns}/{svc_name}"),
                         key=lambda es: es["metadata"].get("name", "")):
            ports = [p for p in es.get("ports") or () if isinstance(p, dict) and p.get("port") is not None]
            for e in _ready_endpoints(es):
                for ip in e.get("addresses") or ():
                    host = (e.get("hostname") or _dashed(ip)).lower()
                    members.append((ip, dns.name.from_text(host, svc_fqdn), ports))
        if not prefix:
            if headless:
                if not members:
                    return None  # CoreDNS: no ready endpoint, no name (errNoItems, NXDOMAIN)
                ips = sorted({ip for ip, _, _ in members})
                srv_ports = [(p.get("name", ""), p.get("protocol", "TCP"), p["port"], target, ip)
                             for ip, target, ports in members for p in ports]
            else:
                ips = _cluster_ips(svc)
                srv_ports = [(p.get("name", ""), p.get("protocol", "TCP"), p["port"], svc_fqdn, ip)
                             for p in spec.get("ports") or () for ip in ips[:1]]
            srv, extra = self._srv(name, srv_ports)
            return self._addr(name, ips) + srv, extra
        if len(prefix) == 1 and headless:
            ips = sorted({ip for ip, target, _ in members if target.labels[0].decode() == prefix[0]})
            return (self._addr(name, ips), []) if ips else None
        if len(prefix) == 2 and prefix[0].startswith("_") and prefix[1].startswith("_"):
            port_name, proto = prefix[0][1:], prefix[1][1:]
            if headless:
                cand = [(p.get("name", ""), p.get("protocol", "TCP"), p["port"], target, ip)
                        for ip, target, ports in members for p in ports]
            else:
                ips = _cluster_ips(svc)
                cand = [(p.get("name", ""), p.get("protocol", "TCP"), p["port"], svc_fqdn, ip)
                        for p in spec.get("ports") or () for ip in ips[:1]]
            cand = [c for c in cand if c[0] and c[0].lower() == port_name and c[1].lower() == proto]
            if not cand:
                return None
            return self._srv(name, cand)
        return None

    def _srv(self, name: dns.name.Name, ports: list[tuple[str, str, int, dns.name.Name, str]]
             ) -> Found:
        """SRV records at priority 0, the weight split evenly (CoreDNS: floor(100 / n))."""
        if not ports:
            return [], []
        weight = 100 // len(ports)
        srv = self._rrset(name, "SRV", [f"0 {weight} {port} {target}" for _, _, port, target, _ in ports])
        extra: dict[dns.name.Name, list[str]] = {}
        for _, _, _, target, ip in ports:
            extra.setdefault(target, []).append(ip)
        additional = [r for target, ips in extra.items() for r in self._addr(target, sorted(set(ips)))]
        return [srv], additional

    def _reverse(self, name: dns.name.Name) -> Found | None:
        try:
            ip = str(ipaddress.ip_address(dns.reversename.to_address(name)))
        except (dns.exception.SyntaxError, ValueError):
            return None
        ptrs = []
        for svc in self.services.by_index(CLUSTER_IP, ip):
            md = svc["metadata"]
            ptrs.append(dns.name.from_text(f"{md['name']}.{md['namespace']}.svc", self.origin).to_text())
        for es in self.slices.by_index(ENDPOINT_IP, ip):
            key = _service_of(es)
            owner = self.services.get(key) if key else None
            if owner is None or not _is_headless(owner):
                continue
            md = owner["metadata"]
            for e in _ready_endpoints(es):
                if ip in (e.get("addresses") or ()):
                    host = (e.get("hostname") or _dashed(ip)).lower()
                    ptrs.append(dns.name.from_text(f"{host}.{md['name']}.{md['namespace']}.svc",
                                                   self.origin).to_text())
        if not ptrs:
            return None
        return [self._rrset(name, "PTR", sorted(set(ptrs)))], []
