"""Stale UDP conntrack entries, removed through pyroute2's conntrack (netlink) support.

UDP has no connection to close: while a conntrack entry lives, every datagram of a
flow keeps going to the endpoint it was first DNATed to, even after that endpoint is
gone. So when a UDP endpoint leaves a Service the proxy deletes the flows DNATed to it
through the Service's addresses (ClusterIP, external and load-balancer IPs) or its
NodePort, as kube-proxy's conntrack clean-up does. TCP entries are left alone: a
connection to a vanished endpoint fails by itself, and one still alive must survive
(a proxy restart flushes nothing).

Blocking calls: run them in a thread. The namespace is the calling process's.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("minik8s.proxy.conntrack")


@dataclass(frozen=True)
class StaleFlow:
    """UDP flows of one Service port: original destination one of `vips` at `port`, or
    any local address at `node_port` (when set); DNATed to `endpoint` (ip, port), or
    with `endpoint` None, the flows there that were not DNATed (made while the port had
    no endpoints, or before the proxy knew it: they went nowhere, or out of the default
    route, and would keep doing so). Flows DNATed to a live endpoint are kept, so a
    restarted proxy, which finds every port "new", cuts no UDP flow."""
    vips: tuple[str, ...]
    port: int
    node_port: int
    endpoint: tuple[str, int] | None


def _matches(f: StaleFlow, orig: Any, reply: Any) -> bool:
    """orig, reply: pyroute2 NFCTAttrTuples (saddr, sport, daddr, dport)."""
    if not ((orig.daddr in f.vips and orig.dport == f.port) or (f.node_port and orig.dport == f.node_port)):
        return False
    if f.endpoint is None:  # only flows that were not DNATed: a live one to an endpoint stays
        return bool(reply.saddr == orig.daddr)
    return (reply.saddr, reply.sport) == f.endpoint and orig.daddr != f.endpoint[0]


def clear_udp(stale: list[StaleFlow]) -> int:
    """Delete the UDP entries `stale` describes; how many went."""
    if not stale:
        return 0
    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    removed = 0
    ct = Conntrack()
    try:
        for entry in list(ct.dump_entries(tuple_orig=NFCTAttrTuple(proto=socket.IPPROTO_UDP))):
            if not any(_matches(f, entry.tuple_orig, entry.tuple_reply) for f in stale):
                continue
            try:
                ct.entry("del", tuple_orig=entry.tuple_orig)
                removed += 1
            except Exception as e:  # noqa: BLE001 - already gone (it expired meanwhile)
                log.debug("deleting conntrack entry %s: %s", entry.tuple_orig, e)
    finally:
        ct.close()
    return removed
