"""The cluster DNS server: UDP and TCP on one address, the cluster zone answered from
the informers' caches, every other name forwarded (CoreDNS: kubernetes, then forward).

Guarantees:
- A packet that does not parse as one DNS query (bad wire format, no question, more
  than one, an opcode other than QUERY) gets FORMERR (NOTIMP for other opcodes) with
  the query's id when its 12-byte header is there; a shorter packet is dropped, as
  CoreDNS's server drops it. Nothing a client sends ends the server.
- A UDP answer larger than the client's limit (512 bytes, or its EDNS payload size)
  goes out truncated with TC set, so the client retries over TCP.
- TCP: each message is length-prefixed (RFC 1035 4.2.2); several queries may share a
  connection; an idle or broken connection is closed, not waited on forever.

One asyncio loop. A UDP query the cluster zone answers is answered inside the datagram
callback (no task: the zone only reads caches); one to forward, and every TCP query,
is answered in its own task, concurrently.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from clusterdns import metrics

from clusterdns.forward import Forwarder
from clusterdns.kubernetes import Zone

log = logging.getLogger("minik8s.clusterdns")

TCP_IDLE_TIMEOUT = 10.0  # CoreDNS's read timeout on TCP connections


def _error(wire: bytes, rcode: dns.rcode.Rcode) -> bytes | None:
    """A bare response echoing the header's id and opcode, or None without a header."""
    if len(wire) < 12:
        return None
    qid, flags = struct.unpack("!HH", wire[:4])
    flags = (flags & 0x7900) | 0x8000 | int(rcode)  # keep opcode and RD, set QR
    return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)


class DNSServer:
    def __init__(self, zone: Zone, forwarder: Forwarder):
        self.zone, self.forwarder = zone, forwarder
        self._transport: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, wire: bytes, *, max_size: int | None) -> bytes | None:
        """The response to one query's wire form; max_size None: TCP (65535)."""
        start = time.perf_counter()
        query, out, qtype = self._parse(wire)
        plugin = ""
        if query is not None:
            resp, plugin = self._local(query)
            if resp is None:
                resp, plugin = await self._forward(query, tcp=max_size is None)
            out = self._finish(query, resp, max_size=max_size)
        self._record(start, max_size, out, qtype, plugin)
        return out

    def _answer_now(self, wire: bytes, *, max_size: int) -> tuple[dns.message.Message | None, bytes | None]:
        """The UDP fast path, without a task per datagram: (None, response or None) when
        no upstream is needed (most queries in a cluster); (the query, None) when it
        must be forwarded (then `_forward_udp`)."""
        start = time.perf_counter()
        query, out, qtype = self._parse(wire)
        plugin = ""
        if query is not None:
            resp, plugin = self._local(query)
            if resp is None:
                return query, None
            out = self._finish(query, resp, max_size=max_size)
        self._record(start, max_size, out, qtype, plugin)
        return None, out

    async def _forward_udp(self, query: dns.message.Message, addr: Any) -> None:
        start = time.perf_counter()
        resp, plugin = await self._forward(query, tcp=False)
        out = self._finish(query, resp, max_size=512)
        self._record(start, 512, out, metrics.type_label(dns.rdatatype.to_text(query.question[0].rdtype)), plugin)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(out, addr)

    @staticmethod
    def _record(start: float, max_size: int | None, out: bytes | None, qtype: str, plugin: str) -> None:
        metrics.REQUESTS.labels("udp" if max_size is not None else "tcp", qtype).inc()
        if out is not None:
            rcode = dns.rcode.to_text(dns.rcode.from_flags(int.from_bytes(out[2:4], "big"), 0))
            metrics.RESPONSES.labels(rcode, plugin).inc()
        metrics.DURATION.labels(qtype).observe(time.perf_counter() - start)

    @staticmethod
    def _parse(wire: bytes) -> tuple[dns.message.Message | None, bytes | None, str]:
        """(query, None, its type's metric label), or (None, the error response or None
        to stay silent, "other") for what is not one answerable query."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - dnspython raises more than DNSException on hostile input
            return None, _error(wire, dns.rcode.FORMERR), "other"
        if query.flags & dns.flags.QR:
            return None, None, "other"  # a response sent to us: never answer one (no loops)
        if query.opcode() != dns.opcode.QUERY:
            return None, _error(wire, dns.rcode.NOTIMP), "other"
        if len(query.question) != 1:
            return None, _error(wire, dns.rcode.FORMERR), "other"
        return query, None, metrics.type_label(dns.rdatatype.to_text(query.question[0].rdtype))

    def _local(self, query: dns.message.Message) -> tuple[dns.message.Message | None, str]:
        try:
            resp = self.zone.answer(query)
        except Exception:  # noqa: BLE001 - a bug here must cost one answer, not the server
            log.exception("answering %s", query.question[0])
            return self._servfail(query), ""
        if resp is None:
            return None, "forward"
        resp.flags |= dns.flags.RA
        return resp, "kubernetes"

    async def _forward(self, query: dns.message.Message, *, tcp: bool) -> tuple[dns.message.Message, str]:
        try:
            resp, cached = await self.forwarder.resolve(query, tcp=tcp)
        except Exception:  # noqa: BLE001 - as above
            log.exception("forwarding %s", query.question[0])
            return self._servfail(query), ""
        return resp, "cache" if cached else "forward"

    @staticmethod
    def _servfail(query: dns.message.Message) -> dns.message.Message:
        resp = dns.message.make_response(query)
        resp.set_rcode(dns.rcode.SERVFAIL)
        return resp

    @staticmethod
    def _finish(query: dns.message.Message, resp: dns.message.Message, *, max_size: int | None) -> bytes:
        if query.edns >= 0:
            resp.use_edns(0, payload=1232)
        if max_size is None:
            return resp.to_wire(max_size=65535)
        limit = max(512, min(query.payload, 65535)) if query.edns >= 0 else 512
        try:
            return resp.to_wire(max_size=limit)
        except dns.exception.TooBig:
            resp.answer, resp.authority, resp.additional = [], [], []
            resp.flags |= dns.flags.TC
            return resp.to_wire(max_size=limit)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def start(self, host: str, port: int) -> int:
        """Serve UDP and TCP; port 0 picks a free one (the same for both). Returns it."""
        loop = asyncio.get_running_loop()
        server = self

        class UDP(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                forward, out = server._answer_now(data, max_size=512)
                if forward is not None:
                    server._spawn(server._forward_udp(forward, addr))
                elif out is not None and server._transport is not None:
                    server._transport.sendto(out, addr)

            def error_received(self, exc: Exception) -> None:
                log.debug("udp: %s", exc)

        self._transport, _ = await loop.create_datagram_endpoint(UDP, local_addr=(host, port))
        port = self._transport.get_extra_info("sockname")[1]
        self._tcp = await asyncio.start_server(self._tcp_conn, host, port)
        return int(port)

    async def _tcp_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                    (n,) = struct.unpack("!H", head)
                    data = await asyncio.wait_for(reader.readexactly(n), TCP_IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                out = await self.handle(data, max_size=None)
                if out is None:
                    return
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._tcp is not None:
            self._tcp.close()
            # wait_closed would wait for idle client connections too (until 3.12.1)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
