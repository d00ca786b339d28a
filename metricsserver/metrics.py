"""metrics-server's own metrics (pkg/scraper, pkg/storage, pkg/server), in
machinery.metrics.REGISTRY:

- `metrics_server_kubelet_request_total{success}`, `metrics_server_kubelet_request_duration_seconds{node}`
  and `metrics_server_kubelet_last_request_time_seconds{node}`: one per node per scrape;
- `metrics_server_manager_tick_duration_seconds`: one whole scrape cycle;
- `metrics_server_storage_points{type}`: node and container points that can be served.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from machinery.metrics import REGISTRY, exponential_buckets

KUBELET_REQUESTS = Counter("metrics_server_kubelet_request_total",
                           "Number of requests sent to Kubelet API", ["success"], registry=REGISTRY)
KUBELET_DURATION = Histogram("metrics_server_kubelet_request_duration_seconds",
                             "Duration of requests to Kubelet API in seconds", ["node"],
                             buckets=exponential_buckets(0.005, 2, 12), registry=REGISTRY)
KUBELET_LAST = Gauge("metrics_server_kubelet_last_request_time_seconds",
                     "Time of last request performed to Kubelet API since unix epoch in seconds", ["node"],
                     registry=REGISTRY)
TICK_DURATION = Histogram("metrics_server_manager_tick_duration_seconds",
                          "The total time spent collecting and storing metrics in seconds",
                          buckets=exponential_buckets(0.005, 2, 14), registry=REGISTRY)
STORAGE_POINTS = Gauge("metrics_server_storage_points", "Number of metrics points stored.", ["type"],
                       registry=REGISTRY)
