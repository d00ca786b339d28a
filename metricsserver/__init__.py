"""The metrics server (kubernetes-sigs/metrics-server): scrapes every kubelet's
`/metrics/resource` and serves `metrics.k8s.io/v1beta1` behind the aggregation layer.

    scraper.py  every node's kubelet, at once, over HTTPS with the process's credentials
    storage.py  the last two points per node and container; usage computed from them
    api.py      discovery, NodeMetrics and PodMetrics (objects, lists, Tables, errors)
    main.py     `minik8s metrics-server`: flags, the scrape loop, health, the HTTPS server
    metrics.py  its own Prometheus metrics

`minik8s up` runs it and registers it (cluster/metricsaddon.py); tests start one with
tests/metrics_pipeline.py.
"""
