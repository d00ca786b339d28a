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

log = logging.getLogger("minik8s.proxy.conntrack")


@dataclass(frozen=True)
class StaleFlow:
    """Flows of one Service port to an endpoint that went away: original destination
    one of `vips` at `port`, or any local address at `node_port` (when set)."""
    vips: tuple[str, ...]
    port: int
    node_port: int
    endpoint_ip: str
    endpoint_port: int


def clear_udp(stale: list[StaleFlow]) -> int:
    """Delete the UDP entries `stale` describes; how many went."""
    if not stale:
        return 0
    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    by_endpoint: dict[tuple[str, int], list[StaleFlow]] = {}
    for s in stale:
        by_endpoint.setdefault((s.endpoint_ip, s.endpoint_port), []).append(s)
    removed = 0
    ct = Conntrack()
    try:
        for (ip, port), flows in by_endpoint.items():
            reply = NFCTAttrTuple(proto=socket.IPPROTO_UDP, saddr=ip, sport=port)
            for entry in list(ct.dump_entries(tuple_reply=reply)):
                orig = entry.tuple_orig
                if not any((orig.daddr in f.vips and orig.dport == f.port)
                           or (f.node_port and orig.dport == f.node_port) for f in flows):
                    continue
                try:
                    ct.entry("del", tuple_orig=orig)
                    removed += 1
                except Exception as e:  # noqa: BLE001 - already gone (it expired meanwhile)
                    log.debug("deleting conntrack entry %s: %s", orig, e)
    finally:
        ct.close()
    return removed
