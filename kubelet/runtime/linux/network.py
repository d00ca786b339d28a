"""Pod networking on one node: a bridge, a veth pair per pod, an IP per pod.

The bridge (e.g. `mk8s0`) holds the gateway address, the first address of the node's
pod CIDR, so the node routes the CIDR to it. A pod's veth pair has one end on the
bridge (named from the pod uid) and the other, `eth0`, in the pod's network namespace
with the pod's IP and a default route via the gateway; `lo` is brought up. The bridge
port is in hairpin mode, so a pod can reach itself through a Service. Pods on the
node reach each other over the bridge, and the node reaches them through it. (Routes
between nodes and NAT to the outside are not set up here.)

MTU: a pod's veth pair gets the MTU the pod network agent (`minik8s podnet`, which makes
the routes between hosts) wrote as MINIK8S_MTU in its subnet file, read at each attach as
flannel's CNI plugin reads /run/flannel/subnet.env: with VXLAN it is the underlying
interface's MTU - 50, so full-size packets fit in the tunnel. No file (no agent, as
under `minik8s up`): the kernel's default.

IP allocation is persisted as one file per address under <state dir>/ipam, containing
the owner's uid; creating it with O_EXCL is the allocation, so two allocators (threads or
kubelet processes) can never hand out the same address, and a restarted kubelet sees
every address in use. Addresses are handed out round robin (the last one is
remembered), so a freed address is not reused at once.

Netlink: a pod's own plumbing through kubelet/runtime/linux/netlink.py (a few syscalls per pod), the
rarer node-wide listings and sweeps through pyroute2. Methods are safe to call from
several threads.
"""
from __future__ import annotations

import errno
import hashlib
import ipaddress
import os

from pyroute2 import IPRoute

from kubelet.runtime.linux import kernel, netlink
from kubelet.runtime import ContainerRuntimeError


def veth_name(uid: str) -> str:
    """The node end of a pod's veth pair: stable per pod, at most 15 characters."""
    return "mk" + hashlib.sha1(uid.encode()).hexdigest()[:11]


class PodNetwork:
    def __init__(self, *, bridge: str, cidr: str, state_dir: str, subnet_file: str | None = None):
        if len(bridge) > 15:
            raise ValueError(f"bridge name {bridge!r} is longer than 15 characters")
        self.bridge = bridge
        self.net = ipaddress.ip_network(cidr, strict=False)
        if self.net.version != 4 or self.net.num_addresses < 4:
            raise ValueError(f"pod CIDR {cidr} must be IPv4 with room for pods")
        self.gateway = self.net.network_address + 1
        self.ipam_dir = os.path.join(state_dir, "ipam")
        os.makedirs(self.ipam_dir, exist_ok=True)
        self.subnet_file = subnet_file

    def mtu(self) -> int | None:
        """MINIK8S_MTU of the subnet file, or None (no file, or no such line)."""
        if not self.subnet_file:
            return None
        try:
            with open(self.subnet_file) as f:
                for line in f:
                    key, _, value = line.strip().partition("=")
                    if key == "MINIK8S_MTU" and value.isdigit():
                        return int(value)
        except FileNotFoundError:
            pass
        return None

    # -- the bridge ------------------------------------------------------------------
    def ensure_bridge(self, nl: netlink.Netlink) -> int:
        """The bridge, made if missing, with the gateway address and up; its index."""
        idx = netlink.ifindex(self.bridge)
        if idx is None:
            try:
                nl.add_bridge(self.bridge)
            except netlink.NetlinkError as e:
                if e.errno != errno.EEXIST:  # another kubelet thread made it meanwhile
                    raise
            idx = netlink.ifindex(self.bridge)
        try:
            nl.add_address(idx, str(self.gateway), self.net.prefixlen)
        except netlink.NetlinkError as e:
            if e.errno != errno.EEXIST:
                raise
        nl.set_up(idx)
        return idx

    def delete_bridge(self) -> None:
        with netlink.Netlink() as nl:
            nl.delete_link(self.bridge)

    # -- pods ------------------------------------------------------------------------
    def attach(self, uid: str, netns_pid: int) -> str:
        """Plug the network namespace of process netns_pid into the bridge; its IP."""
        ip = self.allocate(uid)
        host = veth_name(uid)
        mtu = self.mtu()
        try:
            with netlink.Netlink() as nl:
                bridge = self.ensure_bridge(nl)
                nl.delete_link(host)  # left from an earlier sandbox of this pod
                nl.add_veth(host, peer="eth0", peer_netns_pid=netns_pid, master=bridge, mtu=mtu)
                nl.set_hairpin(netlink.ifindex(host))  # so the pod reaches itself through a Service

            def inside():
                with netlink.Netlink() as ns:
                    ns.set_up(netlink.ifindex("lo"))
                    eth0 = netlink.ifindex("eth0")
                    ns.add_address(eth0, ip, self.net.prefixlen)
                    ns.set_up(eth0)
                    ns.add_default_route(str(self.gateway))
            # A thread that enters the pod's namespace (see kernel.in_netns): no fork.
            kernel.in_netns(f"/proc/{netns_pid}/ns/net", inside)
        except OSError as e:
            self.detach(uid)
            raise ContainerRuntimeError(f"pod network setup failed: {e}",
                                        reason="NetworkNotReady") from e
        return ip

    def detach(self, uid: str) -> None:
        """Remove the pod's veth (if its namespace still exists) and free its IP."""
        with netlink.Netlink() as nl:
            nl.delete_link(veth_name(uid))
        for ip, owner in self.allocations().items():
            if owner == uid:
                self.release(ip, uid)

    def pod_veths(self) -> list[str]:
        """Names of the veths plugged into our bridge."""
        with IPRoute() as ipr:
            bridge = ipr.link_lookup(ifname=self.bridge)
            if not bridge:
                return []
            return [link.get("ifname") for link in ipr.get_links()
                    if link.get("master") == bridge[0]]

    def delete_veth(self, name: str) -> None:
        with netlink.Netlink() as nl:
            nl.delete_link(name)

    # -- IP allocation -----------------------------------------------------------------
    def allocations(self) -> dict[str, str]:
        out = {}
        for name in os.listdir(self.ipam_dir):
            if name.startswith("last"):
                continue
            try:  # raw reads: one allocation reads every address's file
                fd = os.open(os.path.join(self.ipam_dir, name), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                out[name] = os.read(fd, 4096).decode().strip()
            finally:
                os.close(fd)
        return out

    def allocate(self, uid: str) -> str:
        for ip, owner in self.allocations().items():
            if owner == uid:
                return ip
        # The hosts after the gateway, as integers: no list of every address per call.
        first = int(self.gateway) + 1
        count = int(self.net.broadcast_address) - first
        last_file = os.path.join(self.ipam_dir, "last_reserved")
        try:
            with open(last_file) as f:
                last = int(ipaddress.IPv4Address(f.read().strip())) - first
            start = last + 1 if 0 <= last < count else 0
        except (FileNotFoundError, ValueError):
            start = 0
        for i in range(count):
            ip = str(ipaddress.IPv4Address(first + (start + i) % count))
            try:
                fd = os.open(os.path.join(self.ipam_dir, ip), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(uid)
            # Only a hint where to start next time, rewritten in place: one write of a
            # fixed length, so concurrent writers leave one whole address.
            fd = os.open(last_file, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, ip.ljust(15).encode(), 0)
            finally:
                os.close(fd)
            return ip
        raise ContainerRuntimeError(f"no free IP address in {self.net}", reason="NetworkNotReady")

    def release(self, ip: str, uid: str) -> None:
        path = os.path.join(self.ipam_dir, ip)
        try:
            with open(path) as f:
                if f.read().strip() != uid:
                    return
            os.unlink(path)
        except FileNotFoundError:
            pass


def node_ip() -> str | None:
    """The node's primary IPv4 address: the first one on the default route's device."""
    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=2):
            oif = route.get("oif")
            for addr in ipr.get_addr(family=2, index=oif):
                return addr.get("address")
    return None
