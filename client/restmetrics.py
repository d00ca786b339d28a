"""The REST client's request counts, kept apart from prometheus_client.

`client.rest.Client` counts every request here in plain per-client dicts; client.metrics
hands them to prometheus_client as `rest_client_requests_total` and
`rest_client_request_duration_seconds` when a component's /metrics is scraped. Kept out
of client.metrics so that a program that serves no metrics (kubectl-lite) never imports
prometheus_client: ~8 ms of start-up, a sixth of `kubectl-lite version --client`.
"""
from __future__ import annotations

import bisect
import threading
import weakref

BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

# Counted in plain dicts per client and handed to prometheus_client when scraped: a
# Counter.inc plus a Histogram.observe cost ~1.7 us a request on the benchmark machine
# (their per-value locks and checks), ~5% of the lean transport's ~33 us; `result` plus
# `observe` cost ~0.4 us. A client is used from one event loop, so its dicts need no lock; a client that
# is garbage-collected hands its counts to `RETIRED`, so no counter ever goes down.
LOCK = threading.RLock()  # re-entered if a collection retires a client mid-merge
LIVE: weakref.WeakSet[RestClientMetrics] = weakref.WeakSet()
Counts = dict[tuple[str, ...], int]
Latency = dict[tuple[str, ...], list[float]]
RETIRED: tuple[Counts, Latency] = ({}, {})  # as RestClientMetrics' counts and latency


def merge(into: tuple[Counts, Latency], counts: Counts, latency: Latency) -> None:
    for k, n in list(counts.items()):
        into[0][k] = into[0].get(k, 0) + n
    for k, h in list(latency.items()):
        acc = into[1].setdefault(k, [0.0] * len(h))
        for i, v in enumerate(list(h)):
            acc[i] += v


def _retire(counts: Counts, latency: Latency) -> None:
    with LOCK:
        merge(RETIRED, counts, latency)


class RestClientMetrics:
    """One client's `rest_client_requests_total` and `rest_client_request_duration_seconds`
    (host = the server's host:port). Used from the client's event loop only."""

    __slots__ = ("host", "counts", "latency", "__weakref__")

    def __init__(self, host: str):
        self.host = host
        self.counts: Counts = {}     # (code, method, host) -> requests
        self.latency: Latency = {}  # (verb, host) -> bucket counts, +Inf, sum
        with LOCK:
            LIVE.add(self)
        weakref.finalize(self, _retire, self.counts, self.latency)

    def result(self, code: int | str, method: str) -> None:
        key = (str(code), method, self.host)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1

    def observe(self, verb: str, seconds: float) -> None:
        h = self.latency.get((verb, self.host))
        if h is None:
            h = self.latency[(verb, self.host)] = [0.0] * (len(BUCKETS) + 2)
        h[bisect.bisect_left(BUCKETS, seconds)] += 1  # the first bucket with seconds <= le
        h[-1] += seconds
