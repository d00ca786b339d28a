"""The rule compiler: Services and their endpoints -> nftables JSON commands, in the
shape of kube-proxy's nftables proxier (pkg/proxy/nftables/proxier.go).

The table (`ip minik8s-proxy` by default) holds:

    base chains            hook         priority   jumps to
    filter-input/forward/  input/fwd/   dstnat-10  endpoints-check (ct state new);
      output                output                 filter-forward also cluster-ips-check
                                                   (forward comes after prerouting's DNAT)
    filter-output-post-dnat output      dstnat+10  cluster-ips-check (after output's DNAT)
    nat-prerouting,        prerouting/  dstnat     services
      nat-output            output
    nat-postrouting        postrouting  srcnat     masquerading

    services            ip daddr . l4proto . dport vmap @service-ips  (ClusterIP,
                        externalIPs, LoadBalancer ingress IPs); then NodePorts:
                        l4proto . dport vmap @service-nodeports on the node's local
                        addresses (fib daddr type local, not 127/8) or @nodeport-ips
                        (--nodeport-addresses)
    service-<svcport>   Cluster-policy endpoints: affinity matches, then
                        `numgen random mod N vmap {i: goto endpoint-...}`: each of N
                        endpoints with probability 1/N
    local-<svcport>     the same over this node's endpoints (traffic policy Local)
    external-<svcport>  NodePort/external/LB traffic: masquerade (policy Cluster), or for
                        Local keep the client's address (pods and the node itself are
                        short-circuited to the Cluster chain, as kube-proxy does)
    endpoint-<svcport>__<ip/port>   masquerade hairpin traffic (saddr is the endpoint),
                        record affinity, DNAT to ip:port
    affinity-<...>      a dynamic set of client addresses with timeout timeoutSeconds
    endpoints-check     reject (TCP reset / ICMP port-unreachable) what targets a Service
                        with no endpoints (@no-endpoint-services, @no-endpoint-nodeports),
                        drop what a Local policy cannot serve
    cluster-ips-check   reject what still targets a ClusterIP after DNAT: a port the
                        Service does not have
    mark-for-masquerade / masquerading   mark, then masquerade marked packets in
                        postrouting (fully random), clearing the mark

Masquerading: traffic from outside --cluster-cidr to a ClusterIP (or all with
--masquerade-all), NodePort/external traffic under externalTrafficPolicy Cluster, and
hairpin traffic (a pod reaching itself through its Service).

Guarantees
- `render(port, endpoints, config)` is pure: the same input gives the same `Rendered`,
  so comparing renders tells exactly which Services changed.
- `Plan` turns the applied state plus desired renders into one batch: a full sync
  re-creates every chain and element (and removes what the kernel holds that nothing
  wants); a partial sync touches only the chains, elements and sets of Services whose
  render changed. Affinity sets are never flushed by a sync (they hold live client
  state); one whose timeout changed is a new set (its name carries the timeout).
- Chains nothing uses any more are flushed at once and deleted by a later batch at
  least `STALE_CHAIN_DELAY` seconds on: kernels before 6.2 still count a reference from
  a map element deleted in the same transaction (kube-proxy does the same).
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

from proxy import nft
from proxy.model import Categorized, Endpoint, ServicePort, categorize
from proxy.nft import Rule, Table, concat, fib, goto, jump, match, meta, payload, prefix

TABLE = "minik8s-proxy"
MASQUERADE_MARK = 0x4000                  # kube-proxy's default --masquerade-bit 14
STALE_CHAIN_DELAY = 1.0

SERVICES, MASQUERADING, MARK_MASQ = "services", "masquerading", "mark-for-masquerade"
ENDPOINTS_CHECK, REJECT_CHAIN, CLUSTER_IPS_CHECK = "endpoints-check", "reject-chain", "cluster-ips-check"
SERVICE_IPS, SERVICE_NODEPORTS = "service-ips", "service-nodeports"
NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS = "no-endpoint-services", "no-endpoint-nodeports"
CLUSTER_IPS, NODEPORT_IPS = "cluster-ips", "nodeport-ips"
SERVICE_PREFIXES = ("service-", "local-", "external-", "endpoint-")
AFFINITY_PREFIX = "affinity-"

DSTNAT, SRCNAT = -100, 100
BASE_CHAINS = (  # name, type, hook, priority
    ("filter-input", "filter", "input", DSTNAT - 10),
    ("filter-forward", "filter", "forward", DSTNAT - 10),
    ("filter-output", "filter", "output", DSTNAT - 10),
    ("filter-output-post-dnat", "filter", "output", DSTNAT + 10),
    ("nat-prerouting", "nat", "prerouting", DSTNAT),
    ("nat-output", "nat", "output", DSTNAT),
    ("nat-postrouting", "nat", "postrouting", SRCNAT),
)
JUMPS = (  # from, extra match, to
    ("filter-input", True, ENDPOINTS_CHECK),
    ("filter-forward", True, ENDPOINTS_CHECK),
    ("filter-output", True, ENDPOINTS_CHECK),
    ("filter-forward", False, CLUSTER_IPS_CHECK),
    ("filter-output-post-dnat", False, CLUSTER_IPS_CHECK),
    ("nat-prerouting", False, SERVICES),
    ("nat-output", False, SERVICES),
    ("nat-postrouting", False, MASQUERADING),
)
FIXED_CHAINS = (SERVICES, MASQUERADING, MARK_MASQ, ENDPOINTS_CHECK, REJECT_CHAIN, CLUSTER_IPS_CHECK)
MAPS = {SERVICE_IPS: ["ipv4_addr", "inet_proto", "inet_service"],
        SERVICE_NODEPORTS: ["inet_proto", "inet_service"],
        NO_ENDPOINT_SERVICES: ["ipv4_addr", "inet_proto", "inet_service"],
        NO_ENDPOINT_NODEPORTS: ["inet_proto", "inet_service"]}

Verdict = dict[str, Any]
ElementKey = tuple[str, tuple[Any, ...]]   # (map, key)
DROP: Verdict = {"drop": None}
GOTO_REJECT: Verdict = goto(REJECT_CHAIN)


@dataclass(frozen=True)
class Config:
    hostname: str
    cluster_cidr: str | None = None        # --cluster-cidr: what counts as pod traffic
    nodeport_all: bool = True              # no --nodeport-addresses: every local address
    masquerade_all: bool = False
    table: str = TABLE


@dataclass
class Rendered:
    """One ServicePort's share of the table."""
    chains: dict[str, list[Rule]] = field(default_factory=dict)
    elements: dict[ElementKey, Verdict] = field(default_factory=dict)
    affinity_sets: dict[str, int] = field(default_factory=dict)     # name -> timeout seconds
    categorized: Categorized | None = None
    port: ServicePort | None = None


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:8]


def _name(prefix_: str, base: str, salt: str = "") -> str:
    # nft chain names may hold [A-Za-z0-9_./-]; namespaces, names, protocols and port
    # names are [a-z0-9-], and "/" separates them, so no two services share a name.
    # The hash makes similar names (two endpoints of one service) easy to tell apart.
    return f"{prefix_}{_hash(base + salt)}-{base}"


def render(sp: ServicePort, endpoints: list[Endpoint], cfg: Config) -> Rendered:
    cat = categorize(sp, endpoints)
    out = Rendered(categorized=cat, port=sp)
    base = f"{sp.namespace}/{sp.name}/{sp.protocol}/{sp.port_name}"
    cluster_chain, local_chain = _name("service-", base), _name("local-", base)
    external_chain = _name("external-", base)

    def ep_chain(ep: Endpoint) -> str:
        return _name("endpoint-", f"{base}__{ep.ip}/{ep.port}")

    def affinity_set(ep: Endpoint) -> str:
        return _name(AFFINITY_PREFIX, f"{base}__{ep.ip}/{ep.port}", f"@{sp.affinity_timeout}")

    uses_cluster_chain = bool(cat.cluster) and sp.uses_cluster_endpoints
    uses_local_chain = bool(cat.local) and sp.uses_local_endpoints
    internal_chain = local_chain if sp.internal_local else cluster_chain
    has_internal = cat.has_endpoints and (not sp.internal_local or bool(cat.local))
    external_policy_chain = local_chain if sp.external_local else cluster_chain
    has_external = cat.has_endpoints and (not sp.external_local or bool(cat.local))
    uses_external_chain = cat.has_endpoints and sp.externally_accessible

    if not cat.has_endpoints:
        internal_verdict = external_verdict = GOTO_REJECT
    else:
        internal_verdict = external_verdict = DROP

    def ip_key(ip: str) -> tuple[str, str, int]:
        return (ip, sp.protocol, sp.port)
    if has_internal:
        out.elements[(SERVICE_IPS, ip_key(sp.cluster_ip))] = goto(internal_chain)
    else:
        out.elements[(NO_ENDPOINT_SERVICES, ip_key(sp.cluster_ip))] = internal_verdict
    for ip in (*sp.external_ips, *sp.lb_ips):
        if uses_external_chain:
            out.elements[(SERVICE_IPS, ip_key(ip))] = goto(external_chain)
        if not has_external:
            out.elements[(NO_ENDPOINT_SERVICES, ip_key(ip))] = external_verdict
    if sp.node_port:
        if uses_external_chain:
            out.elements[(SERVICE_NODEPORTS, (sp.protocol, sp.node_port))] = goto(external_chain)
        if not has_external:
            out.elements[(NO_ENDPOINT_NODEPORTS, (sp.protocol, sp.node_port))] = external_verdict

    dport = payload(sp.protocol, "dport")
    saddr = payload("ip", "saddr")
    if uses_cluster_chain:
        out.chains[cluster_chain] = _balance(sp, list(cat.cluster), ep_chain, affinity_set)
    if uses_local_chain:
        out.chains[local_chain] = _balance(sp, list(cat.local), ep_chain, affinity_set)
    if has_internal and internal_chain in out.chains:
        # Traffic to the ClusterIP from outside the pod network (the node itself, or a
        # host routing the service range here) may reach an endpoint on another node,
        # whose reply must come back through this node to be un-DNATed.
        if cfg.masquerade_all:
            out.chains[internal_chain].insert(0, [match(payload("ip", "daddr"), sp.cluster_ip),
                                                  match(dport, sp.port), jump(MARK_MASQ)])
        elif cfg.cluster_cidr:
            out.chains[internal_chain].insert(0, [match(payload("ip", "daddr"), sp.cluster_ip),
                                                  match(dport, sp.port),
                                                  match(saddr, prefix(cfg.cluster_cidr), "!="), jump(MARK_MASQ)])
    if uses_external_chain:
        rules: list[Rule] = []
        if not sp.external_local:
            rules.append([jump(MARK_MASQ)])  # the endpoint may be on another node
        elif uses_cluster_chain:
            if cfg.cluster_cidr:
                # A pod reaching an external IP is treated as if it went out to the
                # load balancer and came back: no traffic policy applies.
                rules.append([match(saddr, prefix(cfg.cluster_cidr)), goto(cluster_chain)])
            # From the node itself the source is a local address (maybe the very IP
            # dialled): masquerade, and any endpoint will do.
            rules.append([match(fib("saddr"), "local"), jump(MARK_MASQ)])
            rules.append([match(fib("saddr"), "local"), goto(cluster_chain)])
        if has_external and external_policy_chain in out.chains:
            rules.append([goto(external_policy_chain)])
        out.chains[external_chain] = rules
    for ep in cat.reachable:
        rules = [[match(saddr, ep.ip), jump(MARK_MASQ)]]  # hairpin: make the reply come back here
        if sp.affinity_timeout:
            name = affinity_set(ep)
            out.affinity_sets[name] = sp.affinity_timeout
            rules.append([nft.update_set(name, saddr)])
        rules.append([match(meta("l4proto"), sp.protocol), nft.dnat(ep.ip, ep.port)])
        out.chains[ep_chain(ep)] = rules
    return out


def _balance(sp: ServicePort, endpoints: list[Endpoint], ep_chain: Callable[[Endpoint], str],
             affinity_set: Callable[[Endpoint], str]) -> list[Rule]:
    rules: list[Rule] = []
    if sp.affinity_timeout:
        for ep in endpoints:
            rules.append([match(payload("ip", "saddr"), f"@{affinity_set(ep)}"), goto(ep_chain(ep))])
    rules.append([nft.vmap(nft.numgen_random(len(endpoints)),
                           [(i, goto(ep_chain(ep))) for i, ep in enumerate(endpoints)])])
    return rules


# -- batches ------------------------------------------------------------------------

def _elem(key: tuple[Any, ...]) -> Any:
    return concat(*key) if len(key) > 1 else key[0]


@dataclass
class Applied:
    """What the kernel holds, as far as this process made it."""
    services: dict[str, Rendered] = field(default_factory=dict)
    cluster_ips: set[str] = field(default_factory=set)
    nodeport_ips: tuple[str, ...] = ()
    stale_chains: dict[str, float] = field(default_factory=dict)   # name -> when it went stale


@dataclass
class Plan:
    commands: list[dict[str, Any]]
    after: Applied


def base_commands(t: Table, cfg: Config, nodeport_ips: tuple[str, ...]) -> list[dict[str, Any]]:
    """The table, its base chains and fixed chains, re-made; maps and sets emptied."""
    cmds: list[dict[str, Any]] = [t.table("add")]
    for name, type_, hook, prio in BASE_CHAINS:
        cmds += [t.chain("add", name, hook=hook, type=type_, prio=prio), t.chain("flush", name)]
    for name in FIXED_CHAINS:
        cmds += [t.chain("add", name), t.chain("flush", name)]
    for name, key_type in MAPS.items():
        cmds += [t.map("add", name, key_type), t.map("flush", name)]
    cmds += [t.set("add", CLUSTER_IPS), t.set("flush", CLUSTER_IPS)]
    cmds += [t.set("add", NODEPORT_IPS), t.set("flush", NODEPORT_IPS)]
    if nodeport_ips:
        cmds.append(t.elements("add", NODEPORT_IPS, list(nodeport_ips)))
    for src, new_only, dst in JUMPS:
        cmds.append(t.rule(src, ([nft.ct_state("new")] if new_only else []) + [jump(dst)]))
    mark = MASQUERADE_MARK
    cmds.append(t.rule(MARK_MASQ, [nft.mark_or(mark)]))
    cmds.append(t.rule(MASQUERADING, [match(nft.mark_and(mark), 0), nft.RETURN]))
    cmds.append(t.rule(MASQUERADING, [nft.mark_xor(mark)]))  # so a re-encapsulated packet is not masqueraded twice
    cmds.append(t.rule(MASQUERADING, [nft.MASQUERADE_FULLY_RANDOM]))
    cmds.append(t.rule(REJECT_CHAIN, [match(meta("l4proto"), "tcp"), nft.REJECT_TCP_RESET]))
    cmds.append(t.rule(REJECT_CHAIN, [nft.REJECT_PORT_UNREACHABLE]))
    l4 = concat(meta("l4proto"), payload("th", "dport"))
    vip = concat(payload("ip", "daddr"), meta("l4proto"), payload("th", "dport"))
    local_dst = ([match(fib("daddr"), "local"), match(payload("ip", "daddr"), prefix("127.0.0.0/8"), "!=")]
                 if cfg.nodeport_all else [match(payload("ip", "daddr"), f"@{NODEPORT_IPS}")])
    cmds.append(t.rule(ENDPOINTS_CHECK, [nft.vmap(vip, f"@{NO_ENDPOINT_SERVICES}")]))
    cmds.append(t.rule(ENDPOINTS_CHECK, [*local_dst, nft.vmap(l4, f"@{NO_ENDPOINT_NODEPORTS}")]))
    cmds.append(t.rule(CLUSTER_IPS_CHECK, [match(payload("ip", "daddr"), f"@{CLUSTER_IPS}"),
                                           nft.REJECT_PORT_UNREACHABLE]))
    cmds.append(t.rule(SERVICES, [nft.vmap(vip, f"@{SERVICE_IPS}")]))
    cmds.append(t.rule(SERVICES, [*local_dst, nft.vmap(l4, f"@{SERVICE_NODEPORTS}")]))
    return cmds


def _chain_cmds(t: Table, name: str, rules: list[Rule]) -> list[dict[str, Any]]:
    """Flush and refill; the chain was added earlier in the batch, since a rule may
    only jump to a chain that exists."""
    return [t.chain("flush", name), *(t.rule(name, r) for r in rules)]


def _element_adds(t: Table, elements: dict[ElementKey, Verdict]) -> list[dict[str, Any]]:
    by_map: dict[str, list[Any]] = {}
    for (m, key), verdict in elements.items():
        by_map.setdefault(m, []).append([_elem(key), verdict])
    return [t.elements("add", m, elems) for m, elems in by_map.items()]


def _element_deletes(t: Table, keys: list[ElementKey]) -> list[dict[str, Any]]:
    by_map: dict[str, list[Any]] = {}
    for m, key in keys:
        by_map.setdefault(m, []).append(_elem(key))
    return [t.elements("delete", m, elems) for m, elems in by_map.items()]


def full_plan(t: Table, cfg: Config, applied: Applied, desired: dict[str, Rendered], *,
              cluster_ips: set[str], nodeport_ips: tuple[str, ...], existing_chains: set[str],
              existing_sets: set[str], now: float) -> Plan:
    """Everything re-made; `existing_*` (listed from the kernel) lets it remove what a
    previous run left that nothing wants now."""
    base = base_commands(t, cfg, nodeport_ips)
    creates: list[dict[str, Any]] = []
    cmds: list[dict[str, Any]] = []
    chains: set[str] = set()
    sets: dict[str, int] = {}
    elements: dict[ElementKey, Verdict] = {}
    for r in desired.values():
        for name, rules in r.chains.items():
            creates.append(t.chain("add", name))
            cmds += _chain_cmds(t, name, rules)
            chains.add(name)
        sets.update(r.affinity_sets)
        elements.update(r.elements)
    # An affinity set the kernel has is left as it is: the kernel marked it "dynamic"
    # when a rule first updated it, and adding it again without that flag (which nft's
    # JSON parser does not take) would be refused as a change of flags.
    creates += [t.set("add", name, timeout=timeout) for name, timeout in sets.items()
                if name not in existing_sets]
    cmds = base[:1] + creates + base[1:] + cmds + _element_adds(t, elements)
    if cluster_ips:
        cmds.append(t.elements("add", CLUSTER_IPS, sorted(cluster_ips)))
    stale = {n: since for n, since in applied.stale_chains.items() if n in existing_chains}
    for name in existing_chains - chains:
        if name.startswith(SERVICE_PREFIXES):
            cmds.append(t.chain("flush", name))
            stale.setdefault(name, now)
    for name in chains:
        stale.pop(name, None)
    for name in existing_sets - set(sets):
        if name.startswith(AFFINITY_PREFIX):
            cmds.append(t.set("delete", name))
    return Plan(cmds, Applied(dict(desired), set(cluster_ips), nodeport_ips, stale))


def partial_plan(t: Table, applied: Applied, changed: dict[str, Rendered | None], *,
                 cluster_ips: set[str], nodeport_ips: tuple[str, ...], now: float) -> Plan:
    """Only what differs between `applied` and `changed` (service-port key -> its new
    render, None when it is gone)."""
    creates: list[dict[str, Any]] = []
    rewrites: list[dict[str, Any]] = []
    deletes: list[ElementKey] = []
    adds: dict[ElementKey, Verdict] = {}
    gone_chains: set[str] = set()
    new_chains: set[str] = set()
    gone_sets: set[str] = set()
    services = dict(applied.services)
    for key, new in changed.items():
        old = applied.services.get(key) or Rendered()
        new_r = new or Rendered()
        for name, timeout in new_r.affinity_sets.items():
            if name not in old.affinity_sets:
                creates.append(t.set("add", name, timeout=timeout))
        gone_sets |= set(old.affinity_sets) - set(new_r.affinity_sets)
        for name, rules in new_r.chains.items():
            new_chains.add(name)
            if name not in old.chains:
                creates.append(t.chain("add", name))
            if old.chains.get(name) != rules:
                rewrites += _chain_cmds(t, name, rules)
        gone_chains |= set(old.chains) - set(new_r.chains)
        for ek, verdict in old.elements.items():
            if new_r.elements.get(ek) != verdict:
                deletes.append(ek)
        for ek, verdict in new_r.elements.items():
            if old.elements.get(ek) != verdict:
                adds[ek] = verdict
        if new is None:
            services.pop(key, None)
        else:
            services[key] = new
    gone_chains -= new_chains
    stale = dict(applied.stale_chains)
    cmds = creates + rewrites + _element_deletes(t, deletes) + _element_adds(t, adds)
    for name in sorted(gone_chains):
        cmds.append(t.chain("flush", name))
        stale[name] = now
    for name in new_chains:
        stale.pop(name, None)
    cmds += [t.set("delete", name) for name in sorted(gone_sets)]
    if cluster_ips != applied.cluster_ips:
        if applied.cluster_ips - cluster_ips:
            cmds.append(t.elements("delete", CLUSTER_IPS, sorted(applied.cluster_ips - cluster_ips)))
        if cluster_ips - applied.cluster_ips:
            cmds.append(t.elements("add", CLUSTER_IPS, sorted(cluster_ips - applied.cluster_ips)))
    if nodeport_ips != applied.nodeport_ips:
        cmds.append(t.set("flush", NODEPORT_IPS))
        if nodeport_ips:
            cmds.append(t.elements("add", NODEPORT_IPS, list(nodeport_ips)))
    return Plan(cmds, Applied(services, set(cluster_ips), nodeport_ips, stale))


def stale_chain_deletes(t: Table, applied: Applied, now: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Deletes for chains stale for at least STALE_CHAIN_DELAY, and their names."""
    names = sorted(n for n, since in applied.stale_chains.items() if now - since >= STALE_CHAIN_DELAY)
    return [t.chain("delete", n) for n in names], names
