"""`minik8s podnet`: the pod network across hosts, one agent per host (flannel's job).

    minik8s podnet --kubeconfig F --node-name N --backend host-gw|vxlan [--iface IFACE]
                   [--direct-routing] [--subnet-file F] [--healthz-bind-address IP:PORT] [-v N]
    minik8s podnet --cleanup [--iface IFACE] [--subnet-file F]

Each node's pods sit on the kubelet's bridge, which holds the first address of the node's
pod CIDR (spec.podCIDR, from the controller manager's node IPAM). This agent runs in its
host's network namespace and makes every other node's pod CIDR reachable from here:

- host-gw: one route per other node, `<podCIDR> via <its public IP> dev <iface>`. Only for
  peers on a link this host shares: a peer behind a router is refused (a log line and a
  Warning event `PeerNotOnLink` on this host's Node), as the kernel would refuse it.
- vxlan (flannel's vxlan backend): a device `minik8s.1` (VNI 1, UDP 8472, local = this
  host's public IP, learning off, MTU = the underlying interface's - 50) with the network
  address of this node's pod CIDR as a /32; per other node, `<podCIDR> via <its network
  address> dev minik8s.1 onlink`, a permanent neighbour entry (that address -> its VTEP
  MAC) and an FDB entry (that MAC -> its public IP). With --direct-routing, peers on a
  shared link get host-gw routes instead (flannel's DirectRouting).
A peer is known from its Node: spec.podCIDR, and the annotations its own agent wrote
(under `minik8s.io/`, flannel's names after the slash): `public-ip`, `backend-type`,
`backend-data` ({"VNI": 1, "VtepMAC": ...} with vxlan). Without `public-ip` its InternalIP
is used (host-gw); a vxlan peer without a VTEP MAC waits until its agent has written one.
A peer running another backend is refused: every host needs the same --backend.

Ownership: routes carry RTPROT_MINIK8S and go out of --iface or minik8s.1; only those are
ever changed or removed, and the neighbour and FDB entries are those of minik8s.1, a
device this agent owns. Level-based, as the route syncer of `minik8s up` (cluster/routes.py,
whose loop and route sync this shares): every Node change, and a resync every 30 s, makes
the whole desired state from the informer's cache and programs the difference, so entries
of a deleted Node vanish and a new Node's appear. The agent also turns on IPv4 forwarding,
and writes --subnet-file (flannel's subnet.env: MINIK8S_SUBNET, MINIK8S_MTU,
MINIK8S_BACKEND), from which the kubelet takes the pods' MTU. SIGTERM leaves everything in
place (pods keep their network while the agent restarts); `--cleanup` removes minik8s.1,
our routes, our FORWARD rules and the subnet file. Where iptables' FORWARD policy is DROP
(Docker's), this node's pod traffic is accepted there, as flannel does.

With --healthz-bind-address: /healthz (checks `informer-sync` and `podnet`: the last sync
succeeded) and /metrics (`podnet_peers{state}`, `podnet_syncs_total{result}`).

Credentials: the node's own (kubelet.conf) do: list/watch Nodes comes from
system:node-proxier (bound to system:nodes by init), patching its own Node and creating
events from the Node authorizer. Netlink through pyroute2 in worker threads.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from prometheus_client import Counter, Gauge
from pyroute2 import IPRoute, NetlinkError

from client import kubeconfig
from client.events import WARNING, EventRecorder
from client.informer import Informer
from client.rest import Client
from cluster import network
from cluster.network import Route
from cluster.routes import follow_nodes
from machinery import klog

log = logging.getLogger("minik8s.podnet")

BACKENDS = ("host-gw", "vxlan")
PREFIX = "minik8s.io/"
BACKEND_DATA, BACKEND_TYPE, PUBLIC_IP = PREFIX + "backend-data", PREFIX + "backend-type", PREFIX + "public-ip"
VNI, VXLAN_PORT = 1, 8472          # flannel's defaults (8472: the Linux kernel's historical VXLAN port)
VXLAN_OVERHEAD = 50                # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
DEVICE = f"minik8s.{VNI}"
DEFAULT_SUBNET_FILE = os.environ.get("MINIK8S_ROOT", "") + "/run/minik8s/subnet.env"
RESYNC = 30.0
NUD_PERMANENT, NTF_SELF = 0x80, 0x02

SYNCS = Counter("podnet_syncs_total", "Syncs of this host's routes, FDB and neighbour entries, by result.",
                ["result"])
PEERS = Gauge("podnet_peers", "Other nodes, by state: routed, refused, or pending (no VTEP published yet).",
              ["state"])


class ConfigError(Exception):
    """A user's mistake: one line, exit 1, nothing changed."""


class Underlay(NamedTuple):
    """The interface between hosts: its name, index, IPv4 address (our public IP), MTU."""
    name: str
    index: int
    ip: str
    mtu: int


def find_underlay(iface: str | None) -> Underlay:
    """--iface (a name or one of this host's addresses), else the default route's device
    (as flannel): ConfigError if there is none or it has no IPv4 address."""
    with IPRoute() as ipr:
        index = None
        if iface:
            try:
                ipaddress.ip_address(iface)
                found = [a["index"] for a in ipr.get_addr(family=2, address=iface)]
            except ValueError:
                found = ipr.link_lookup(ifname=iface)
            if not found:
                raise ConfigError(f"--iface {iface}: no such interface or address on this host")
            index = found[0]
        else:
            for r in ipr.get_default_routes(family=2):
                index = r.get("oif")
                break
            if index is None:
                raise ConfigError("no default route to pick the interface between hosts; give --iface")
        link = ipr.get_links(index)[0]
        addrs = [a.get("address") for a in ipr.get_addr(family=2, index=index)]
        if iface and iface in addrs:
            addrs = [iface]
        if not addrs:
            raise ConfigError(f"interface {link.get('ifname')} has no IPv4 address; give --iface")
        return Underlay(link.get("ifname"), index, addrs[0], link.get("mtu"))


class Peer(NamedTuple):
    name: str
    cidr: str
    public_ip: str
    backend: str | None
    vtep_mac: str | None


def peer_of(node: dict[str, Any]) -> Peer | None:
    """What another node's agent published (its public IP, else its InternalIP), or None
    while it has no pod CIDR or address."""
    md = node.get("metadata") or {}
    ann = md.get("annotations") or {}
    try:
        cidr = str(ipaddress.ip_network((node.get("spec") or {}).get("podCIDR") or "", strict=False))
        ip = ann.get(PUBLIC_IP) or next(a.get("address") for a in (node.get("status") or {}).get("addresses") or ()
                                        if a.get("type") == "InternalIP")
        ipaddress.ip_address(ip)
    except (ValueError, StopIteration):
        return None
    mac = None
    try:
        data = json.loads(ann.get(BACKEND_DATA) or "null")
        if isinstance(data, dict) and isinstance(data.get("VtepMAC"), str):
            mac = data["VtepMAC"]
    except ValueError:
        pass
    return Peer(md.get("name", ""), cidr, ip, ann.get(BACKEND_TYPE), mac)


def annotations(backend: str, public_ip: str, vtep_mac: str | None) -> dict[str, str]:
    """What this host's agent publishes on its Node."""
    data = json.dumps({"VNI": VNI, "VtepMAC": vtep_mac}) if backend == "vxlan" else "null"
    return {BACKEND_DATA: data, BACKEND_TYPE: backend, PUBLIC_IP: public_ip}


@dataclass
class Plan:
    """The desired state for this host: routes {CIDR: Route}, neighbours {VTEP address:
    MAC} and FDB entries {MAC: public IP} on minik8s.1, peers refused {name: why} and
    peers waiting for their agent."""
    routes: dict[str, Route] = field(default_factory=dict)
    neigh: dict[str, str] = field(default_factory=dict)
    fdb: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)


class Agent:
    """The blocking, netlink half: set this host up, then `sync(nodes)` as often as asked."""

    def __init__(self, *, node_name: str, backend: str, underlay: Underlay, direct_routing: bool = False,
                 subnet_file: str = DEFAULT_SUBNET_FILE):
        self.node_name, self.backend, self.underlay = node_name, backend, underlay
        self.direct_routing, self.subnet_file = direct_routing, subnet_file
        self.mtu = underlay.mtu - VXLAN_OVERHEAD if backend == "vxlan" else underlay.mtu
        self.cidr: str | None = None
        self.vtep_mac: str | None = None

    # -- set-up ------------------------------------------------------------------------

    def setup(self, cidr: str) -> None:
        """Forwarding on, minik8s.1 (vxlan) with this pod CIDR's network address, FORWARD
        rules where needed, the subnet file. Run before every sync, so whatever was undone
        behind the agent's back (the device deleted, forwarding turned off) is made again;
        a changed pod CIDR replaces the device's address and the rules."""
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        net = ipaddress.ip_network(cidr)
        if self.backend == "vxlan":
            self.vtep_mac = self._ensure_vxlan(str(net.network_address))
        else:  # left by an agent that ran vxlan here: the name is ours
            with IPRoute() as ipr:
                for index in ipr.link_lookup(ifname=DEVICE):
                    ipr.link("del", index=index)
        accept_forwarded(cidr, previous=self.cidr)
        self._write_subnet_file(net)
        self.cidr = cidr

    def _ensure_vxlan(self, address: str) -> str:
        u = self.underlay
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=DEVICE)
            if found:
                link = ipr.get_links(found[0])[0]
                info = link.get_attr("IFLA_LINKINFO")
                data = info.get_attr("IFLA_INFO_DATA") if info else None
                same = (info is not None and info.get_attr("IFLA_INFO_KIND") == "vxlan" and data is not None
                        and data.get_attr("IFLA_VXLAN_ID") == VNI and data.get_attr("IFLA_VXLAN_LOCAL") == u.ip
                        and data.get_attr("IFLA_VXLAN_PORT") == VXLAN_PORT
                        and data.get_attr("IFLA_VXLAN_LINK") == u.index
                        and not data.get_attr("IFLA_VXLAN_LEARNING"))
                if not same:  # made for another interface or address: as flannel, recreate it
                    log.info("%s does not match (VNI %d, local %s, port %d, learning off): recreating it",
                             DEVICE, VNI, u.ip, VXLAN_PORT)
                    ipr.link("del", index=found[0])
                    found = []
            if not found:
                try:
                    ipr.link("add", ifname=DEVICE, kind="vxlan", vxlan_id=VNI, vxlan_local=u.ip,
                             vxlan_port=VXLAN_PORT, vxlan_learning=0, vxlan_link=u.index)
                except NetlinkError as e:
                    if e.code != errno.EEXIST:
                        raise
                found = ipr.link_lookup(ifname=DEVICE)
            index = found[0]
            ipr.link("set", index=index, mtu=self.mtu, state="up")
            for a in ipr.get_addr(family=2, index=index):
                if (a.get("address"), a["prefixlen"]) != (address, 32):
                    ipr.addr("del", index=index, address=a.get("address"), prefixlen=a["prefixlen"])
            try:
                ipr.addr("add", index=index, address=address, prefixlen=32)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
            return ipr.get_links(index)[0].get("address")

    def _write_subnet_file(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        text = (f"MINIK8S_SUBNET={net.network_address + 1}/{net.prefixlen}\n"
                f"MINIK8S_MTU={self.mtu}\nMINIK8S_BACKEND={self.backend}\n")
        try:
            with open(self.subnet_file) as f:
                if f.read() == text:
                    return
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(self.subnet_file) or ".", exist_ok=True)
        tmp = self.subnet_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.subnet_file)  # a kubelet reading it sees the old or the new file

    def annotations(self) -> dict[str, str]:
        return annotations(self.backend, self.underlay.ip, self.vtep_mac)

    # -- peers -------------------------------------------------------------------------

    def _on_link(self, ipr: IPRoute, ip: str) -> str | None:
        """None if `ip` is reached directly on our interface, else why not."""
        try:
            r = ipr.route("get", dst=ip)[0]
        except NetlinkError as e:
            return f"no route to it ({e.args[1] if len(e.args) > 1 else e})"
        gw = r.get("gateway")
        if gw:
            return f"it is reached through the router {gw}"
        if r.get("oif") != self.underlay.index:
            return f"it is not on {self.underlay.name}"
        return None

    def plan(self, nodes: list[dict[str, Any]]) -> Plan:
        """What this host should have for these Node objects (asks the kernel only which
        peers are on a shared link)."""
        plan = Plan()
        with IPRoute() as ipr:
            for node in nodes:
                peer = peer_of(node)
                if peer is None or peer.name == self.node_name:
                    continue
                if peer.cidr == self.cidr:
                    plan.refused[peer.name] = f"its pod CIDR {peer.cidr} is this host's"
                    continue
                if peer.backend and peer.backend != self.backend:
                    plan.refused[peer.name] = (f"it runs the {peer.backend} backend and this host "
                                               f"{self.backend}: every host needs the same --backend")
                    continue
                if self.backend == "host-gw" or self.direct_routing:
                    why = self._on_link(ipr, peer.public_ip)
                    if why is None:
                        plan.routes[peer.cidr] = Route(peer.public_ip, self.underlay.index)
                        continue
                    if self.backend == "host-gw":
                        plan.refused[peer.name] = (
                            f"{peer.public_ip} is not on a link this host shares ({why}): host-gw "
                            "needs every host on one network; use --backend vxlan")
                        continue
                if peer.vtep_mac is None:
                    plan.pending.append(peer.name)  # its agent has not published its VTEP yet
                    continue
                vtep = str(ipaddress.ip_network(peer.cidr).network_address)
                plan.routes[peer.cidr] = Route(vtep, None, onlink=True)
                plan.neigh[vtep] = peer.vtep_mac
                plan.fdb[peer.vtep_mac] = peer.public_ip
        return plan

    # -- programming ---------------------------------------------------------------------

    def sync(self, nodes: list[dict[str, Any]]) -> Plan:
        """Program the plan for these Nodes; returns it, with the peers the kernel refused
        added to `refused`. Logs changes at V(0), a sync that changed nothing at V(2)."""
        plan = self.plan(nodes)
        by_cidr = {p.cidr: p.name for p in map(peer_of, nodes) if p is not None}
        vx = None
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=DEVICE)
            vx = found[0] if found else None
            fdb_changed = fdb_removed = neigh_changed = neigh_removed = 0
            if vx is not None:
                fdb_changed, fdb_removed = _sync_fdb(ipr, vx, plan.fdb)
                neigh_changed, neigh_removed = _sync_neigh(ipr, vx, plan.neigh)

        def refused(dst: str, e: OSError) -> None:
            name = by_cidr.get(dst, dst)
            plan.routes.pop(dst, None)
            plan.refused[name] = f"the kernel refused the route to {dst}: {e.strerror or e}"

        routes = {dst: (r._replace(oif=vx) if r.onlink else r) for dst, r in plan.routes.items()
                  if not r.onlink or vx is not None}
        changed, removed = network.sync_routes(routes, device=(self.underlay.name, DEVICE), on_error=refused)
        any_change = changed or removed or fdb_changed or fdb_removed or neigh_changed or neigh_removed
        level = logging.INFO if any_change else klog.V(2)
        if log.isEnabledFor(level):
            log.log(level, "routes: %d set, %d removed; fdb: %d set, %d removed; neighbours: %d set, %d removed; "
                    "now %s", changed, removed, fdb_changed, fdb_removed, neigh_changed, neigh_removed,
                    ", ".join(f"{c} via {r.gateway}{' onlink' if r.onlink else ''}"
                              for c, r in sorted(plan.routes.items())) or "no routes")
        return plan


def _sync_fdb(ipr: IPRoute, vx: int, want: dict[str, str]) -> tuple[int, int]:
    have = {(f.get("lladdr"), f.get("dst")) for f in ipr.fdb("dump", ifindex=vx)
            if f["ifindex"] == vx and f.get("dst")}
    wanted = set(want.items())
    for mac, dst in have - wanted:
        try:
            ipr.fdb("del", ifindex=vx, lladdr=mac, dst=dst, flags=NTF_SELF)
        except NetlinkError as e:
            if e.code != errno.ENOENT:
                raise
    for mac, dst in wanted - have:
        ipr.fdb("replace", ifindex=vx, lladdr=mac, dst=dst, flags=NTF_SELF, state=NUD_PERMANENT)
    return len(wanted - have), len(have - wanted)


def _sync_neigh(ipr: IPRoute, vx: int, want: dict[str, str]) -> tuple[int, int]:
    have = {(n.get("dst"), n.get("lladdr")) for n in ipr.get_neighbours(family=2, ifindex=vx)
            if n["state"] & NUD_PERMANENT}
    wanted = set(want.items())
    for ip, _mac in have - wanted:
        try:
            ipr.neigh("del", dst=ip, ifindex=vx)
        except NetlinkError as e:
            if e.code != errno.ENOENT:
                raise
    for ip, mac in wanted - have:
        ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=vx, state=NUD_PERMANENT)
    return len(wanted - have), len(have - wanted)


FORWARD_COMMENT = "minik8s podnet: pod traffic"


def _iptables(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", *argv], capture_output=True, text=True, timeout=30)


def accept_forwarded(cidr: str, *, previous: str | None = None) -> list[str]:
    """Where iptables' FORWARD policy is DROP (Docker sets it so), accept this node's pod
    traffic (to or from its pod CIDR) at the top of FORWARD, as flannel's FLANNEL-FWD rules
    do; anything else forwarded is left to that policy. Without such a policy (or without
    iptables) nothing is added: the kernel forwards, and the service proxy's nftables table
    drops nothing but packets to Service ports without endpoints. Returns the rules added."""
    if shutil.which("iptables") is None:
        return []
    listed = _iptables("-S", "FORWARD")
    if previous and previous != cidr:
        remove_forward_rules()
    if listed.returncode != 0 or "-P FORWARD DROP" not in listed.stdout.splitlines():
        return []
    added = []
    for flag in ("-s", "-d"):
        rule = ["FORWARD", flag, cidr, "-m", "comment", "--comment", FORWARD_COMMENT, "-j", "ACCEPT"]
        if _iptables("-C", *rule).returncode != 0:
            r = _iptables("-I", *rule)
            if r.returncode != 0:
                raise OSError(f"iptables -I {' '.join(rule)}: {r.stderr.strip()}")
            added.append(" ".join(rule))
            log.info("FORWARD's policy is DROP: accepting %s %s", "from" if flag == "-s" else "to", cidr)
    return added


def remove_forward_rules() -> list[str]:
    """Delete every FORWARD rule accept_forwarded made (by their comment)."""
    if shutil.which("iptables") is None:
        return []
    removed = []
    for line in _iptables("-S", "FORWARD").stdout.splitlines():
        if line.startswith("-A FORWARD ") and FORWARD_COMMENT in line:
            rule = shlex.split(line)[1:]  # -S quotes the comment as a shell would
            if _iptables("-D", *rule).returncode == 0:
                removed.append("iptables " + " ".join(rule))
    return removed


def cleanup(underlay: Underlay | None, subnet_file: str) -> list[str]:
    """Remove minik8s.1 (its routes, neighbours and FDB entries go with it), our routes out
    of the underlying interface, and the subnet file. Returns what was removed."""
    removed = []
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=DEVICE):
            ipr.link("del", index=index)
            removed.append(f"link {DEVICE}")
    if underlay is not None:
        with IPRoute() as ipr:
            before = {f"{r.get('dst')}/{r['dst_len']}" for r in ipr.get_routes(family=2, proto=network.RTPROT_MINIK8S)
                      if r.get("oif") == underlay.index}
        network.sync_routes({}, device=underlay.name)
        removed += [f"route {dst}" for dst in sorted(before)]
    removed += remove_forward_rules()
    try:
        os.unlink(subnet_file)
        removed.append(subnet_file)
    except FileNotFoundError:
        pass
    return removed


# -- the agent process ------------------------------------------------------------------

class Podnet:
    """The async half: the Node informer, this Node's annotations, events, health."""

    def __init__(self, client: Client, agent: Agent):
        self.client, self.agent = client, agent
        self.nodes = Informer(client, "nodes")
        self.recorder = EventRecorder(client, component="podnet", host=agent.node_name)
        self.refused: dict[str, str] = {}
        self.last_ok: bool | None = None
        self._waiting_logged = False

    async def sync(self, nodes: list[dict[str, Any]]) -> None:
        agent = self.agent
        me = next((n for n in nodes if (n.get("metadata") or {}).get("name") == agent.node_name), None)
        cidr = ((me or {}).get("spec") or {}).get("podCIDR")
        if not cidr:
            if not self._waiting_logged:
                log.info("waiting for node %s %s", agent.node_name,
                         "to exist" if me is None else "to get a spec.podCIDR (node IPAM: the controller "
                         "manager's --allocate-node-cidrs)")
                self._waiting_logged = True
            return
        try:
            before = (agent.cidr, agent.vtep_mac)
            await asyncio.to_thread(agent.setup, cidr)
            if (agent.cidr, agent.vtep_mac) != before:
                log.info("node %s: pod CIDR %s, backend %s on %s (%s), MTU %d%s", agent.node_name, cidr,
                         agent.backend, agent.underlay.name, agent.underlay.ip, agent.mtu,
                         f", VTEP {DEVICE} {agent.vtep_mac}" if agent.vtep_mac else "")
            assert me is not None
            want = agent.annotations()
            have = (me.get("metadata") or {}).get("annotations") or {}
            if any(have.get(k) != v for k, v in want.items()):
                await self.client.patch("nodes", agent.node_name, {"metadata": {"annotations": want}})
            plan = await asyncio.to_thread(agent.sync, nodes)
        except Exception as e:  # noqa: BLE001 - logged, and retried at the next sync
            log.error("sync failed: %s", e)
            self.last_ok = False
            SYNCS.labels("error").inc()
            return
        self.last_ok = True
        SYNCS.labels("success").inc()
        PEERS.labels("routed").set(len(plan.routes))
        PEERS.labels("refused").set(len(plan.refused))
        PEERS.labels("pending").set(len(plan.pending))
        for name, why in plan.refused.items():
            if self.refused.get(name) != why:
                log.warning("node %s refused: %s", name, why)
                self.recorder.event(_node_ref(me), WARNING, "PeerNotRoutable",
                                    f"no route to the pods of node {name}: {why}")
        for name in self.refused.keys() - plan.refused.keys():
            log.info("node %s is no longer refused", name)
        self.refused = plan.refused
        if plan.pending:
            log.log(klog.V(2), "waiting for the VTEP of %s", ", ".join(sorted(plan.pending)))

    async def run(self) -> None:
        await follow_nodes(self.nodes, self.sync, resync=RESYNC)

    def healthy(self) -> None:
        if self.last_ok is not True:
            raise RuntimeError("not synced yet" if self.last_ok is None else "the last sync failed")


def _node_ref(node: dict[str, Any]) -> dict[str, Any]:
    md = node.get("metadata") or {}
    # kubelet's node events refer to the Node by name, with the name as uid
    return {"kind": "Node", "apiVersion": "v1", "metadata": {"name": md.get("name"), "uid": md.get("name")}}


def _address(v: str) -> tuple[str, int] | None:
    if not v:
        return None
    host, sep, port = v.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        if not sep or not 0 < int(port) < 65536:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid address {v!r}: want IP:PORT") from None
    return host.strip("[]"), int(port)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minik8s podnet",
                                description="route pods across hosts (flannel's host-gw and vxlan backends)")
    p.add_argument("--kubeconfig", help="kubeconfig of the API server (the node's own credentials do)")
    p.add_argument("--node-name", help="this host's Node")
    p.add_argument("--backend", choices=BACKENDS, default="vxlan",
                   help="host-gw: routes via the other hosts (one shared network); vxlan: a tunnel (default)")
    p.add_argument("--iface", metavar="IFACE",
                   help="the interface (or address) between hosts (default: the default route's)")
    p.add_argument("--direct-routing", action="store_true",
                   help="vxlan: host-gw routes to hosts on a shared link, the tunnel to the others")
    p.add_argument("--subnet-file", default=DEFAULT_SUBNET_FILE, metavar="FILE",
                   help="where this node's pod subnet and MTU are written for the kubelet "
                   "(default $MINIK8S_ROOT/run/minik8s/subnet.env)")
    p.add_argument("--healthz-bind-address", type=_address, default=None, metavar="IP:PORT",
                   help="serve /healthz and /metrics there (default: off)")
    p.add_argument("--cleanup", action="store_true",
                   help=f"remove {DEVICE}, the agent's routes and the subnet file, and exit")
    klog.add_flags(p)
    return p


async def run(args: argparse.Namespace, conn: kubeconfig.Connection, agent: Agent) -> int:
    from client.componentserver import ComponentServer, informer_sync_check, run_until_signalled
    from machinery.healthz import named_check

    async with Client(conn, user_agent="minik8s-podnet") as client:
        podnet = Podnet(client, agent)
        server = None
        if args.healthz_bind_address:
            server = ComponentServer()
            server.health.add(informer_sync_check([podnet.nodes]))
            server.health.add(named_check("podnet", podnet.healthy))
            try:
                await server.start(*args.healthz_bind_address)
            except OSError as e:
                log.error("failed to serve on %s:%d: %s", *args.healthz_bind_address, e)
                return 1
        log.info("pod network agent of node %s: backend %s on %s (%s)", agent.node_name, agent.backend,
                 agent.underlay.name, agent.underlay.ip)
        code = await run_until_signalled(podnet.run(), "pod network agent")
        if server is not None:
            await server.stop()
        log.info("stopped; routes and %s stay in place", DEVICE if agent.backend == "vxlan" else "entries")
        return code


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    klog.setup_from_args(args)
    try:
        if args.cleanup:
            try:
                underlay: Underlay | None = find_underlay(args.iface)
            except ConfigError:
                underlay = None  # nothing to find our routes by: the device and the file still go
            for what in cleanup(underlay, args.subnet_file):
                log.info("removed %s", what)
            return 0
        if not args.kubeconfig or not args.node_name:
            raise ConfigError("--kubeconfig and --node-name are required")
        try:
            conn = kubeconfig.load(args.kubeconfig).connection()
            conn.ssl_context()
        except OSError as e:
            raise ConfigError(f"kubeconfig {args.kubeconfig}: {e.strerror or e}") from None
        except Exception as e:  # noqa: BLE001 - YAML errors, missing contexts, bad TLS data...
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"kubeconfig {args.kubeconfig}: {first}") from None
        underlay = find_underlay(args.iface)
        if args.backend == "vxlan" and underlay.mtu - VXLAN_OVERHEAD < 576:
            raise ConfigError(f"{underlay.name}'s MTU {underlay.mtu} leaves too little for VXLAN")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    agent = Agent(node_name=args.node_name, backend=args.backend, underlay=underlay,
                  direct_routing=args.direct_routing, subnet_file=args.subnet_file)
    try:
        return asyncio.run(run(args, conn, agent))
    except KeyboardInterrupt:
        return 0
