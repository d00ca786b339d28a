"""Prometheus metrics for every component, through the well-kept `prometheus_client`.

Guarantees
- `REGISTRY` is the process's one registry (prometheus_client's default, as Kubernetes'
  legacyregistry is): it already holds the process collector
  (`process_cpu_seconds_total`, `process_resident_memory_bytes`, open fds, start time),
  and every metric that client/, the scheduler and the other components define at import
  registers there. A component's /metrics is `exposition(accept)` of it.
- No `_created` series are exposed (Kubernetes' metrics have none).
- `exposition(accept)` -> (body, content type): the Prometheus text format 0.0.4, or
  OpenMetrics when the scraper's Accept asks for it (prometheus_client's negotiation).
- `exponential_buckets(start, factor, count)` is Go's `prometheus.ExponentialBuckets`,
  so histograms keep Kubernetes' bucket boundaries.
"""
from __future__ import annotations

import prometheus_client
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

__all__ = ["REGISTRY", "exposition", "exponential_buckets"]


def exposition(accept: str | None = None, registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(start * factor ** i for i in range(count))
