"""kube-proxy's metrics (pkg/proxy/metrics), in machinery.metrics.REGISTRY, under
kube-proxy's names and buckets:

- `kubeproxy_sync_proxy_rules_duration_seconds`: each sync (full or partial), from the
  start of rendering to the end of the nft transaction and conntrack clean-up;
- `kubeproxy_sync_full_proxy_rules_duration_seconds`, `..._partial_...`: the same, split;
- `kubeproxy_network_programming_duration_seconds`: for each EndpointSlice change a
  sync carried, from the change's trigger time (the slice's
  `endpoints.kubernetes.io/last-change-trigger-time`, set by the EndpointSlice
  controller) to the rules being in the kernel; Kubernetes' network programming SLI;
- `kubeproxy_sync_proxy_rules_last_timestamp_seconds`: when rules were last synced;
- `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds`: when a change last asked for one;
- `kubeproxy_sync_proxy_rules_endpoint_changes_total`, `..._service_changes_total`:
  changes seen (a slice or Service add, update or delete);
- `kubeproxy_sync_proxy_rules_endpoint_changes_pending`, `..._service_changes_pending`:
  changes seen since the last successful sync;
- `kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy}`: Services with a
  Local policy (`internal` or `external`) and endpoints, but none on this node;
- `kubeproxy_sync_proxy_rules_nftables_sync_failures_total`: transactions nft refused.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from machinery.metrics import REGISTRY, exponential_buckets


def _linear(start: float, width: float, count: int) -> tuple[float, ...]:
    return tuple(start + width * i for i in range(count))


SYNC_DURATION = Histogram(
    "kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds",
    buckets=exponential_buckets(0.001, 2, 15), registry=REGISTRY)
SYNC_FULL_DURATION = Histogram(
    "kubeproxy_sync_full_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for full resyncs",
    buckets=exponential_buckets(0.001, 2, 15), registry=REGISTRY)
SYNC_PARTIAL_DURATION = Histogram(
    "kubeproxy_sync_partial_proxy_rules_duration_seconds",
    "SyncProxyRules latency in seconds for partial resyncs",
    buckets=exponential_buckets(0.001, 2, 15), registry=REGISTRY)
NETWORK_PROGRAMMING = Histogram(
    "kubeproxy_network_programming_duration_seconds", "In Cluster Network Programming Latency in seconds",
    buckets=_linear(0.25, 0.25, 2) + _linear(1, 1, 59) + _linear(60, 5, 12) + _linear(120, 30, 7),
    registry=REGISTRY)
LAST_SYNC = Gauge(
    "kubeproxy_sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced",
    registry=REGISTRY)
LAST_QUEUED = Gauge(
    "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
    "The last time a sync of proxy rules was queued", registry=REGISTRY)
ENDPOINT_CHANGES = Counter(
    "kubeproxy_sync_proxy_rules_endpoint_changes_total", "Cumulative proxy rules Endpoint changes",
    registry=REGISTRY)
SERVICE_CHANGES = Counter(
    "kubeproxy_sync_proxy_rules_service_changes_total", "Cumulative proxy rules Service changes",
    registry=REGISTRY)
ENDPOINT_CHANGES_PENDING = Gauge(
    "kubeproxy_sync_proxy_rules_endpoint_changes_pending", "Pending proxy rules Endpoint changes",
    registry=REGISTRY)
SERVICE_CHANGES_PENDING = Gauge(
    "kubeproxy_sync_proxy_rules_service_changes_pending", "Pending proxy rules Service changes",
    registry=REGISTRY)
NO_LOCAL_ENDPOINTS = Gauge(
    "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
    "Number of services with a Local traffic policy and no endpoints", ["traffic_policy"], registry=REGISTRY)
SYNC_FAILURES = Counter(
    "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
    "Number of failures of nftables sync", registry=REGISTRY)
