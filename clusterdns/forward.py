"""Forwarding to upstream resolvers, with a cache (CoreDNS's forward and cache plugins).

Guarantees:
- A query goes to the upstreams in turn (the first that answers wins) over the
  protocol it came in on, as CoreDNS's forward does; a truncated UDP answer (TC) is
  asked again over TCP, so the cache holds the whole answer (the client over UDP gets
  it truncated to its size, with TC, and retries over TCP from the cache).
- Answers are cached by (name, type, class) for the smallest TTL in them; negative
  answers (NXDOMAIN, NODATA) for the SOA's minimum, as RFC 2308 says. As CoreDNS's
  cache plugin: at least 5 s (MINTTL), at most 3600 s for answers and 1800 s for
  denials; at most `size` entries (the oldest goes first).
  SERVFAIL and timeouts are not cached. A cached answer goes out with its TTLs
  decreased by the time it has spent in the cache, and without AA.
- No upstream answering is SERVFAIL, never an exception.

One asyncio loop; not thread-safe.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from clusterdns import metrics

log = logging.getLogger("minik8s.clusterdns.forward")


def resolv_conf_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    servers = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    servers.append(parts[1])
    except OSError:
        pass
    return servers


def _ttl(resp: dns.message.Message) -> int:
    if resp.answer:
        return min(int(r.ttl) for r in resp.answer)
    for r in resp.authority:
        if r.rdtype == dns.rdatatype.SOA:
            return min(int(r.ttl), int(r[0].minimum))
    return 0


class Forwarder:
    def __init__(self, upstreams: list[tuple[str, int]], *, timeout: float = 2.0, size: int = 10000,
                 min_ttl: int = 5, max_ttl: int = 3600, max_denial_ttl: int = 1800):
        self.upstreams, self.timeout, self.size = upstreams, timeout, size
        self.min_ttl, self.max_ttl, self.max_denial_ttl = min_ttl, max_ttl, max_denial_ttl
        self._cache: OrderedDict[tuple[str, int, int], tuple[float, dns.message.Message]] = OrderedDict()
        self.upstream_queries = 0
        self.hits = 0

    async def resolve(self, query: dns.message.Message, *, tcp: bool = False
                      ) -> tuple[dns.message.Message, bool]:
        """The answer, and whether it came from the cache."""
        q = query.question[0]
        key = (q.name.to_text().lower(), q.rdtype, q.rdclass)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None:
            expires, hit = cached
            if expires > now:
                self.hits += 1
                metrics.CACHE_HITS.inc()
                return self._reply(query, hit, left=int(expires - now)), True
            del self._cache[key]
        metrics.CACHE_MISSES.inc()
        resp = await self._ask(query, tcp=tcp)
        if resp is None:
            out = dns.message.make_response(query)
            out.flags |= dns.flags.RA
            out.set_rcode(dns.rcode.SERVFAIL)
            return out, False
        denial = resp.rcode() == dns.rcode.NXDOMAIN or not resp.answer
        ttl = max(self.min_ttl, min(_ttl(resp), self.max_denial_ttl if denial else self.max_ttl))
        if resp.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) and not resp.flags & dns.flags.TC:
            self._cache[key] = (now + ttl, resp)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return self._reply(query, resp, left=None), False

    def _reply(self, query: dns.message.Message, resp: dns.message.Message, *, left: int | None
               ) -> dns.message.Message:
        out = dns.message.make_response(query)
        # The upstream's AA passes through; a cached answer is not authoritative (CoreDNS's
        # cache clears AA on what it serves).
        aa = resp.flags & dns.flags.AA if left is None else 0
        out.flags = (out.flags & ~dns.flags.AA) | aa | (resp.flags & dns.flags.RA) | (query.flags & dns.flags.RD)
        out.set_rcode(resp.rcode())
        for section in ("answer", "authority", "additional"):
            rrsets = [r.copy() for r in getattr(resp, section)]
            if left is not None:
                for r in rrsets:
                    r.ttl = min(r.ttl, left)
            setattr(out, section, rrsets)
        return out

    async def _ask(self, query: dns.message.Message, *, tcp: bool) -> dns.message.Message | None:
        q = query.question[0]
        up = dns.message.make_query(q.name, q.rdtype, q.rdclass, use_edns=True, payload=1232)
        for host, port in self.upstreams:
            self.upstream_queries += 1
            metrics.FORWARD_REQUESTS.labels(f"{host}:{port}").inc()
            try:
                if tcp:
                    return await dns.asyncquery.tcp(up, host, port=port, timeout=self.timeout)
                resp = await dns.asyncquery.udp(up, host, port=port, timeout=self.timeout)
                if resp.flags & dns.flags.TC:
                    self.upstream_queries += 1
                    metrics.FORWARD_REQUESTS.labels(f"{host}:{port}").inc()
                    resp = await dns.asyncquery.tcp(up, host, port=port, timeout=self.timeout)
                return resp
            except (dns.exception.DNSException, OSError) as e:
                log.info("upstream %s:%d failed for %s: %s", host, port, q.name, e)
        return None
