"""The cluster network on one host: a bridge, and one network namespace per node.

    host:     bridge mk-<id>  (host address .1 of the node CIDR)
                 |-- veth mk-<id>-1 <==> eth0 in netns minik8s-<id>-node-1 (address .2)
                 |-- veth mk-<id>-2 <==> eth0 in netns minik8s-<id>-node-2 (address .3)
    node netns:  lo, eth0 with the node's address, default route via the host address,
                 IP forwarding on (the node forwards between eth0 and its pods' bridge,
                 which its kubelet makes), and one route per other node's pod CIDR via
                 that node's address (programmed by the route syncer, cluster/routes.py).

So the nodes are separate hosts on one L2 network, the API server (on the host
address) is reachable from every node, and a packet from a pod on node-1 to a pod on
node-3 leaves node-1 through eth0, crosses the bridge and enters node-3's eth0.

Everything here is idempotent (`ensure_*` makes what is missing and leaves what is
there), so a restarted supervisor picks up a half-made network. Routes the cluster
programs carry their own protocol number (RTPROT_MINIK8S), so syncing them never
touches routes someone else made. Netlink through pyroute2; blocking calls.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import threading
from typing import Callable, NamedTuple

from pyroute2 import IPRoute, NetlinkError, config, netns

from cluster.host import setns
from cluster.state import ClusterConfig

# pyroute2 reaches into a namespace (IPRoute(netns=...), netns.create) from a forked
# child of this process. In its default "fork" mode that child runs pyroute2's wrapper,
# whose last step, sending its answer, raises if the parent gave up on it meanwhile (a
# busy machine): the exception skips the child's os._exit, and the fork carries on as a
# second copy of this process (seen in the test suite: forked pytest workers, each in a
# node's network namespace, running tests of their own). multiprocessing's fork always
# ends in os._exit, whatever its target raised.
config.child_process_mode = "mp"

RTPROT_MINIK8S = 77  # marks routes the route syncer owns (a number /etc/iproute2/rt_protos leaves unnamed)
NETNS_DIR = "/run/netns"


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def _in_netns(path: str, fn) -> None:
    """Run fn in a thread inside the namespace (setns is per thread, so the caller's
    own namespace never changes)."""
    errors = []

    def run():
        try:
            setns(path)
            fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)
    t = threading.Thread(target=run)
    t.start()
    t.join()
    if errors:
        raise errors[0]


def _ignore(code: int, fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except NetlinkError as e:
        if e.code != code:
            raise


def _ensure_addr(ipr: IPRoute, index: int, address: str, prefixlen: int) -> None:
    _ignore(errno.EEXIST, ipr.addr, "add", index=index, address=address, prefixlen=prefixlen)


# -- bring-up ------------------------------------------------------------------------

def ensure_bridge(cfg: ClusterConfig) -> None:
    net = cfg.node_net
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=cfg.bridge):
            _ignore(errno.EEXIST, ipr.link, "add", ifname=cfg.bridge, kind="bridge")
        idx = ipr.link_lookup(ifname=cfg.bridge)[0]
        _ensure_addr(ipr, idx, cfg.host_ip, net.prefixlen)
        ipr.link("set", index=idx, state="up")


def ensure_node(cfg: ClusterConfig, node: str) -> None:
    """The node's namespace, its link to the bridge, address, default route, forwarding."""
    name, host_end = cfg.netns(node), cfg.host_veth(node)
    if name not in netns.listnetns():
        try:
            netns.create(name)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
    path = netns_path(name)
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=host_end):
            with IPRoute(netns=path) as ns:   # a stale eth0 would block the new pair
                for idx in ns.link_lookup(ifname="eth0"):
                    ns.link("del", index=idx)
            ipr.link("add", ifname=host_end, kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
        bridge = ipr.link_lookup(ifname=cfg.bridge)[0]
        ipr.link("set", index=ipr.link_lookup(ifname=host_end)[0], master=bridge, state="up")
    with IPRoute(netns=path) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        eth0 = ns.link_lookup(ifname="eth0")[0]
        _ensure_addr(ns, eth0, cfg.node_ip(node), cfg.node_net.prefixlen)
        ns.link("set", index=eth0, state="up")
        _ignore(errno.EEXIST, ns.route, "add", dst="default", gateway=cfg.host_ip)

    def forwarding():
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
    _in_netns(path, forwarding)


def ensure_network(cfg: ClusterConfig) -> None:
    ensure_bridge(cfg)
    for node in cfg.node_names():
        ensure_node(cfg, node)


# -- routes between nodes ----------------------------------------------------------

class Route(NamedTuple):
    """How a destination is reached: `gateway` (an address), out of interface `oif` (an
    index; None: wherever the kernel finds the gateway), `onlink` (the gateway is taken to
    be on that link even with no address of its subnet there: a VXLAN peer's VTEP)."""
    gateway: str
    oif: int | None = None
    onlink: bool = False


RTNH_F_ONLINK = 4


def sync_routes(want: dict[str, str | Route], *, netns_file: str | None = None,
                device: str | tuple[str, ...] | None = None,
                on_error: Callable[[str, OSError], None] | None = None) -> tuple[int, int]:
    """Make the routes we own in one namespace (None: the host's) exactly `want`
    ({destination CIDR: gateway or Route}). Ours are those marked RTPROT_MINIK8S and,
    with `device` (a name or names), going out of one of those devices: on a host where
    other clusters may have routes of their own, only routes through our links are ours.
    A route the kernel refuses (e.g. an unreachable gateway) raises, or with `on_error`
    is reported there and the others are still made. Returns (added or changed, removed)."""
    changed = removed = 0
    with IPRoute(**({"netns": netns_file} if netns_file else {})) as ipr:
        oifs = None
        if device:
            names = (device,) if isinstance(device, str) else device
            oifs = {i for name in names for i in ipr.link_lookup(ifname=name)}
            if not oifs:
                return 0, 0  # no device (yet): no route through it can work
        have: dict[str, Route] = {}
        for r in ipr.get_routes(family=2, proto=RTPROT_MINIK8S):
            if oifs is not None and r.get("oif") not in oifs:
                continue
            dst = f"{r.get('dst')}/{r['dst_len']}"
            have[dst] = Route(r.get("gateway"), r.get("oif"), bool(r["flags"] & RTNH_F_ONLINK))
        for dst in have.keys() - want.keys():
            _ignore(errno.ESRCH, ipr.route, "del", dst=dst, proto=RTPROT_MINIK8S)
            removed += 1
        for dst, route in want.items():
            route = Route(route) if isinstance(route, str) else route
            now = have.get(dst)
            if now is not None and now.gateway == route.gateway and route.oif in (None, now.oif) \
                    and now.onlink == route.onlink:
                continue
            kw: dict = {"oif": route.oif} if route.oif is not None else {}
            if route.onlink:
                kw["flags"] = RTNH_F_ONLINK
            try:
                ipr.route("replace", dst=dst, gateway=route.gateway, proto=RTPROT_MINIK8S, **kw)
            except OSError as e:  # NetlinkError is an OSError
                if on_error is None:
                    raise
                on_error(dst, e)
                continue
            changed += 1
    return changed, removed


def node_addresses(node: dict) -> tuple[str, str] | None:
    """(pod CIDR, InternalIP) of a Node object, or None while it lacks either (or they
    are not addresses)."""
    cidr = (node.get("spec") or {}).get("podCIDR")
    ip = next((a.get("address") for a in (node.get("status") or {}).get("addresses") or ()
               if a.get("type") == "InternalIP"), None)
    if not cidr or not ip:
        return None
    try:
        ipaddress.ip_address(ip)
        return str(ipaddress.ip_network(cidr, strict=False)), ip
    except ValueError:
        return None


def desired_routes(cfg: ClusterConfig, nodes: list[dict]) -> dict[str | None, dict[str, str]]:
    """{node name (None: the host): {pod CIDR: gateway}} from Node objects: each node
    reaches every other node's pod CIDR through that node's InternalIP; the host reaches
    all of them. Nodes without a pod CIDR or an address on the node network are left out
    (they get routes once they have both)."""
    net = cfg.node_net
    cidrs: dict[str, tuple[str, str]] = {}
    for node in nodes:
        found = node_addresses(node)
        if found is None or ipaddress.ip_address(found[1]) not in net:
            continue
        cidrs[node["metadata"]["name"]] = found
    out: dict[str | None, dict[str, str]] = {None: {c: ip for c, ip in cidrs.values()}}
    for name in cfg.node_names():
        out[name] = {c: ip for other, (c, ip) in cidrs.items() if other != name}
    return out


# -- teardown --------------------------------------------------------------------------

def teardown(cfg: ClusterConfig) -> list[str]:
    """Remove every namespace and link of this cluster (routes go with their links).
    Returns what was removed, for the report."""
    removed = []
    for name in netns.listnetns():
        if name.startswith(cfg.netns_prefix):
            try:
                netns.remove(name)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
            removed.append(f"netns {name}")
    with IPRoute() as ipr:
        for link in ipr.get_links():
            ifname = link.get("ifname")
            if ifname == cfg.bridge or ifname.startswith(cfg.bridge + "-"):
                _ignore(errno.ENODEV, ipr.link, "del", index=link["index"])
                removed.append(f"link {ifname}")
        # Routes we own outlive nothing: they went with the bridge. Any left (e.g. via a
        # link someone else re-used) point into this cluster's pod CIDRs: remove them too.
        for r in ipr.get_routes(family=2, proto=RTPROT_MINIK8S):
            gw = r.get("gateway")
            if gw and ipaddress.ip_address(gw) in cfg.node_net:
                _ignore(errno.ESRCH, ipr.route, "del", dst=f"{r.get('dst')}/{r['dst_len']}",
                        proto=RTPROT_MINIK8S)
                removed.append(f"route {r.get('dst')}/{r['dst_len']}")
    return removed


def leftovers(cfg: ClusterConfig) -> list[str]:
    """What of this cluster's network is still on the host (empty after `down`)."""
    out = [f"netns {n}" for n in netns.listnetns() if n.startswith(cfg.netns_prefix)]
    with IPRoute() as ipr:
        out += [f"link {link.get('ifname')}" for link in ipr.get_links()
                if link.get("ifname") == cfg.bridge or link.get("ifname", "").startswith(cfg.bridge + "-")]
        out += [f"route {r.get('dst')}/{r['dst_len']}" for r in ipr.get_routes(family=2)
                if r.get("gateway") and ipaddress.ip_address(r.get("gateway")) in cfg.node_net]
    return out


def overlapping_routes(*cidrs: str, ignore_link: str | None = None) -> list[str]:
    """Host routes (other than the default route and those on ignore_link) overlapping
    any of cidrs: a cluster there would make pods or nodes unreachable."""
    nets = [ipaddress.ip_network(c) for c in cidrs]
    out = []
    with IPRoute() as ipr:
        skip = set(ipr.link_lookup(ifname=ignore_link)) if ignore_link else set()
        names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
        for r in ipr.get_routes(family=2, table=254):
            if r["dst_len"] == 0 or r.get("oif") in skip:
                continue
            dst = ipaddress.ip_network(f"{r.get('dst')}/{r['dst_len']}", strict=False)
            for n in nets:
                if dst.overlaps(n):
                    out.append(f"{dst} (dev {names.get(r.get('oif'), '?')}) overlaps {n}")
    return out
