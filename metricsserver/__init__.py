"""The metrics server (kubernetes-sigs/metrics-server): scrapes every kubelet's
`/metrics/resource` and serves `metrics.k8s.io/v1beta1` behind the aggregation layer."""
