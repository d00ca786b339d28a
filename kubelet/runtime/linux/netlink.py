"""The few rtnetlink requests a pod's network needs, encoded with struct: no library.

Plugging a pod in is one request on the node (create the veth pair, its node end up
and on the bridge, its other end moved into the pod's namespace as eth0) and four in the
pod's namespace (lo up, the address, eth0 up, the default route). pyroute2 did the
same through an asyncio loop per call and a full link dump per name lookup, which made
networking the largest share of the kubelet's CPU per pod started; these calls cost a
few syscalls each. Names are turned into indexes by if_nametoindex(3).

A `Netlink` is one NETLINK_ROUTE socket, in the network namespace of the thread that
opened it (so open it inside `kernel.in_netns` to act in a pod's namespace). Requests
are sent one at a time and wait for the kernel's acknowledgement; a refusal raises
`NetlinkError` with the errno. Not thread-safe: one socket per thread. Stdlib only.
"""
from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_SETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 19, 20, 24
AF_BRIDGE, IFLA_PROTINFO, IFLA_BRPORT_MODE = 7, 12, 4
IFF_UP = 0x1
IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_PID = 3, 4, 10, 18, 19
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY = 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_HOST, RTN_UNICAST = 254, 3, 0, 254, 1
NLA_F_NESTED = 0x8000

_HDR = struct.Struct("=IHHII")      # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")   # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg


class NetlinkError(OSError):
    pass


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def _ifinfo(index: int = 0, *, up: bool = False) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP if up else 0)


def ifindex(name: str) -> int | None:
    """The interface's index in the calling thread's network namespace, or None."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


class Netlink:
    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, kind: int, body: bytes, flags: int = 0) -> None:
        self.seq += 1
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags,
                                 self.seq, 0) + body)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _HDR.size <= len(data):
                length, mtype, _flags, seq, _pid = _HDR.unpack_from(data, off)
                if mtype == NLMSG_ERROR and seq == self.seq:
                    (err,) = struct.unpack_from("=i", data, off + _HDR.size)
                    if err:
                        raise NetlinkError(-err, os.strerror(-err))
                    return
                off += (length + 3) & ~3 or len(data)

    # -- links -------------------------------------------------------------------------
    def add_bridge(self, name: str) -> None:
        """Create a bridge (EEXIST if there is one)."""
        info = _attr(IFLA_INFO_KIND, b"bridge")
        self.request(RTM_NEWLINK, _ifinfo() + _attr(IFLA_IFNAME, _name(name))
                     + _attr(IFLA_LINKINFO | NLA_F_NESTED, info), NLM_F_CREATE | NLM_F_EXCL)

    def add_veth(self, name: str, *, peer: str, peer_netns_pid: int, master: int,
                 mtu: int | None = None) -> None:
        """A veth pair: `name` here, up, on bridge `master` (an index); `peer` in the
        network namespace of process peer_netns_pid, down; both ends with `mtu` if given."""
        mtu_attr = _attr(IFLA_MTU, struct.pack("=I", mtu)) if mtu else b""
        peer_msg = _ifinfo() + _attr(IFLA_IFNAME, _name(peer)) + mtu_attr + _attr(
            IFLA_NET_NS_PID, struct.pack("=I", peer_netns_pid))
        info = _attr(IFLA_INFO_KIND, b"veth") + _attr(
            IFLA_INFO_DATA | NLA_F_NESTED, _attr(VETH_INFO_PEER | NLA_F_NESTED, peer_msg))
        self.request(RTM_NEWLINK, _ifinfo(up=True) + _attr(IFLA_IFNAME, _name(name)) + mtu_attr
                     + _attr(IFLA_MASTER, struct.pack("=I", master))
                     + _attr(IFLA_LINKINFO | NLA_F_NESTED, info), NLM_F_CREATE | NLM_F_EXCL)

    def set_up(self, index: int) -> None:
        self.request(RTM_NEWLINK, _ifinfo(index, up=True))

    def set_hairpin(self, index: int) -> None:
        """Hairpin mode on a bridge port (`bridge link set dev X hairpin on`): the bridge
        may send a frame back out of the port it came in on. A pod reaching its own
        Service is DNATed back to itself on the bridge (br_netfilter runs the node's
        nat rules on bridged frames), which needs it, as kubenet sets it."""
        self.request(RTM_SETLINK, _IFINFO.pack(AF_BRIDGE, 0, index, 0, 0)
                     + _attr(IFLA_PROTINFO | NLA_F_NESTED, _attr(IFLA_BRPORT_MODE, b"\x01")))

    def delete_link(self, name: str) -> bool:
        """Delete the interface if it exists; whether it did."""
        idx = ifindex(name)
        if idx is None:
            return False
        try:
            self.request(RTM_DELLINK, _ifinfo(idx))
        except NetlinkError as e:
            if e.errno != errno.ENODEV:  # gone meanwhile (with its namespace)
                raise
            return False
        return True

    # -- addresses and routes ---------------------------------------------------------------
    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        raw = socket.inet_aton(address)
        self.request(RTM_NEWADDR, _IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
                     + _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw), NLM_F_CREATE | NLM_F_EXCL)

    def add_default_route(self, gateway: str) -> None:
        self.request(RTM_NEWROUTE, _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                                               RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
                     + _attr(RTA_GATEWAY, socket.inet_aton(gateway)), NLM_F_CREATE | NLM_F_EXCL)
