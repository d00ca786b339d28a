"""The cluster DNS's metrics, named as CoreDNS's prometheus, cache and forward plugins
name them, in machinery.metrics.REGISTRY. The label sets are smaller than CoreDNS's
(one server and one zone set here, so no `server`, `zone`, `view` labels):

- `coredns_dns_requests_total{proto,type}`: queries received (`udp`/`tcp`; the query
  type, or `other` for types CoreDNS does not name; malformed packets are `other`);
- `coredns_dns_responses_total{rcode,plugin}`: responses sent, by rcode name and who
  answered (`kubernetes`, `forward`, `cache`, or empty for errors);
- `coredns_dns_request_duration_seconds{type}`: from receipt to the response's wire
  form, CoreDNS's buckets (0.25 ms doubling, 16 of them);
- `coredns_cache_hits_total`, `coredns_cache_misses_total`: the forwarder's cache;
- `coredns_forward_requests_total{to}`: queries sent upstream (a TCP retry is one more).
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram

from machinery.metrics import REGISTRY, exponential_buckets

# CoreDNS's plugin/pkg/dnstest monitored types; any other type is `other`.
KNOWN_TYPES = frozenset({"A", "AAAA", "NS", "PTR", "SOA", "CNAME", "MX", "TXT", "SRV", "NAPTR", "DS",
                         "DNSKEY", "RRSIG", "NSEC", "NSEC3", "HINFO", "IXFR", "AXFR", "ANY", "HTTPS",
                         "SVCB", "CAA"})

REQUESTS = Counter("coredns_dns_requests_total", "Counter of DNS requests made per protocol and type.",
                   ["proto", "type"], registry=REGISTRY)
RESPONSES = Counter("coredns_dns_responses_total", "Counter of response status codes.",
                    ["rcode", "plugin"], registry=REGISTRY)
DURATION = Histogram("coredns_dns_request_duration_seconds", "Histogram of the time (in seconds) each "
                     "request took.", ["type"], buckets=exponential_buckets(0.00025, 2, 16), registry=REGISTRY)
CACHE_HITS = Counter("coredns_cache_hits_total", "The count of cache hits.", registry=REGISTRY)
CACHE_MISSES = Counter("coredns_cache_misses_total", "The count of cache misses.", registry=REGISTRY)
FORWARD_REQUESTS = Counter("coredns_forward_requests_total", "Counter of requests made per upstream.",
                           ["to"], registry=REGISTRY)


def type_label(name: str) -> str:
    return name if name in KNOWN_TYPES else "other"
