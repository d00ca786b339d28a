"""The metrics server (metricsserver/): its storage computes usage as metrics-server's
does (tables of points, no processes), and a real `minik8s metrics-server` scraping real
fake-runtime kubelets (usage set by the pods' `fake.minik8s.io/usage` annotation) serves
metrics.k8s.io/v1beta1 to whom the API server's RBAC allows it, with metrics-server's
answers for what has no metrics."""
from __future__ import annotations

import os
import uuid

import pytest

from metricsserver.api import go_duration
from metricsserver.storage import Batch, Point, Storage, decode
from tests.metrics_pipeline import API, LEASES, direct_client, make_pod, pipeline
from tests.procs import Component, session_pki, wait_for


# -- decoding and storage, no processes ------------------------------------------------

KUBELET_TEXT = """\
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="ns",pod="p"} 10 1700000000000
container_cpu_usage_seconds_total{container="idle",namespace="ns",pod="q"} 0 1700000000000
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",namespace="ns",pod="p"} 6.7108864e+07 1700000000000
container_memory_working_set_bytes{container="idle",namespace="ns",pod="q"} 1000 1700000000000
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="app",namespace="ns",pod="p"} 1.6999e+09
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 100.5 1700000000500
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 2e+09 1700000000500
# TYPE scrape_error gauge
scrape_error 0
"""


S = 1_000_000_000  # nanoseconds in a second: points keep integers, as metrics-server's


def test_decode_reads_the_kubelets_resource_metrics():
    b = decode(KUBELET_TEXT, "n1", 1.0)
    assert b.nodes == {"n1": Point(1700000000500 * 10**6, int(100.5 * S), 2_000_000_000)}
    assert b.pods[("ns", "p")] == {"app": Point(1700000000 * S, 10 * S, 67108864, int(1.6999e9 * S))}
    # a container with no CPU used is incomplete to metrics-server: its pod is left out
    assert ("ns", "q") not in b.pods


def test_decode_takes_the_scrape_time_for_samples_without_a_timestamp():
    b = decode("node_cpu_usage_seconds_total 3\nnode_memory_working_set_bytes 4\n", "n", 42.0)
    assert b.nodes["n"].timestamp == 42 * S


def _node_batch(ts: float, cpu: float, mem: int = 1 << 20) -> Batch:
    return Batch(nodes={"n": Point(int(ts * S), int(cpu * S), mem)})


def _pod_batch(ts: float, cpu: float, *, start: float = 0.0, mem: int = 1 << 20) -> Batch:
    return Batch(pods={("ns", "p"): {"c": Point(int(ts * S), int(cpu * S), mem, int(start * S))}})


def test_cpu_is_the_rate_between_the_last_two_points_and_memory_the_last():
    s = Storage(15)
    s.store(_node_batch(100, 10, mem=5))
    assert s.node_metrics("n") is None       # one point: no rate yet
    s.store(_node_batch(115, 13.75, mem=7))
    u = s.node_metrics("n")
    assert (u.cpu_nanocores, u.memory_bytes, u.timestamp, u.window) == (250_000_000, 7, 115, 15)


def test_windows_between_millisecond_timestamps_are_exact():
    s = Storage(15)
    s.store(decode("node_cpu_usage_seconds_total 1 1764945194123\nnode_memory_working_set_bytes 1 1764945194123\n",
                   "n", 0))
    s.store(decode("node_cpu_usage_seconds_total 2 1764945209128\nnode_memory_working_set_bytes 1 1764945209128\n",
                   "n", 0))
    assert go_duration(s.node_metrics("n").window) == "15.005s"


def test_a_point_no_newer_than_the_last_keeps_the_previous_one():
    s = Storage(15)
    s.store(_node_batch(100, 10))
    s.store(_node_batch(110, 11))
    s.store(_node_batch(110, 11))           # the kubelet answered the same reading again
    assert s.node_metrics("n").window == 10


def test_a_node_missing_from_a_scrape_has_no_metrics_from_then_on():
    s = Storage(15)
    s.store(_node_batch(100, 10))
    s.store(_node_batch(110, 11))
    assert s.ready() and s.node_metrics("n") is not None
    s.store(Batch())                        # its kubelet did not answer: its points are stale
    assert s.node_metrics("n") is None and not s.ready()


def test_a_restarted_container_starts_over():
    s = Storage(15)
    s.store(_pod_batch(100, 50, start=10))
    s.store(_pod_batch(115, 2, start=112))  # started after the stored point: a new run
    assert s.pod_metrics("ns", "p") is None
    s.store(_pod_batch(130, 5, start=112))
    ts, window, usage = s.pod_metrics("ns", "p")
    assert (ts, window, usage["c"].cpu_nanocores) == (130, 15, 200_000_000)


def test_a_fresh_container_gets_a_zero_point_at_its_start():
    s = Storage(15)
    s.store(_pod_batch(100, 3, start=88))   # 12 s old: within the resolution, at least 10 s
    ts, window, usage = s.pod_metrics("ns", "p")
    assert (window, usage["c"].cpu_nanocores) == (12, 250_000_000)


def test_a_pod_is_served_only_when_every_container_has_two_points():
    s = Storage(15)
    s.store(Batch(pods={("ns", "p"): {"a": Point(100 * S, S, 1)}}))
    s.store(Batch(pods={("ns", "p"): {"a": Point(110 * S, 2 * S, 1), "b": Point(110 * S, 2 * S, 1)}}))
    assert s.pod_metrics("ns", "p") is None


def test_windows_are_written_as_go_durations():
    assert [go_duration(x) for x in (15.002, 10, 60.5, 0.25, 3725.1)] == \
        ["15.002s", "10s", "1m0.5s", "250ms", "1h2m5.1s"]


# -- a real metrics server over real fake nodes ----------------------------------------

@pytest.fixture(scope="module")
def cluster(apiserver, tmp_path_factory):
    """Two fake nodes and a metrics server as its own user, scraping every 10 s; reached
    directly (the aggregation layer's own tests are elsewhere)."""
    with pipeline(apiserver, tmp_path_factory.mktemp("metrics")) as p:
        yield p


def test_serves_the_usage_the_kubelets_report(cluster, apiserver, ns):
    http, (n0, n1) = cluster["http"], cluster["nodes"]
    make_pod(http, ns, "web", n0, {"app": {"cpu": "250m", "memory": "64Mi"}, "side": {"cpu": "10m", "memory": "1Mi"}},
         {"app": "web"})
    make_pod(http, ns, "db", n1, {"db": {"cpu": "1", "memory": "256Mi"}}, {"app": "db"})
    url = cluster["url"]
    with direct_client("admin") as c:
        r = c.get(f"{url}{API}")
        assert r.status_code == 200, r.text
        assert {(x["name"], x["kind"], x["namespaced"]) for x in r.json()["resources"]} == \
            {("nodes", "NodeMetrics", False), ("pods", "PodMetrics", True)}

        def listed() -> dict | None:
            items = c.get(f"{url}{API}/namespaces/{ns}/pods").json()["items"]
            return {i["metadata"]["name"]: i for i in items} if len(items) == 2 else None
        pods = wait_for(listed, timeout=60, interval=0.5, what="both pods' metrics")
        web = pods["web"]
        assert web["kind"] == "PodMetrics" and web["apiVersion"] == "metrics.k8s.io/v1beta1"
        assert web["metadata"]["namespace"] == ns and web["metadata"]["labels"] == {"app": "web"}
        usage = {x["name"]: x["usage"] for x in web["containers"]}
        assert [x["name"] for x in web["containers"]] == ["app", "side"]
        assert usage["app"]["memory"] == "64Mi" and usage["side"]["memory"] == "1Mi"
        # the fake counter grows at the annotation's rate; the server's rate is taken
        # over its own window, so only rounding separates the two
        assert abs(int(usage["app"]["cpu"].rstrip("n")) - 250_000_000) < 5_000_000 \
            if usage["app"]["cpu"].endswith("n") else usage["app"]["cpu"] == "250m"
        assert web["window"].endswith("s") and web["timestamp"].endswith("Z")
        assert pods["db"]["containers"][0]["usage"]["memory"] == "256Mi"

        # selectors, by name, all namespaces
        only = c.get(f"{url}{API}/namespaces/{ns}/pods", params={"labelSelector": "app=db"}).json()["items"]
        assert [i["metadata"]["name"] for i in only] == ["db"]
        only = c.get(f"{url}{API}/pods", params={"fieldSelector": f"metadata.name=web,metadata.namespace={ns}"})
        assert [i["metadata"]["name"] for i in only.json()["items"]] == ["web"]
        one = c.get(f"{url}{API}/namespaces/{ns}/pods/db").json()
        assert one["kind"] == "PodMetrics" and one["metadata"]["name"] == "db"
        assert c.get(f"{url}{API}/namespaces/{ns}/pods",
                     params={"labelSelector": "app in (("}).status_code == 400

        table = c.get(f"{url}{API}/namespaces/{ns}/pods",
                      headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}).json()
        assert [col["name"] for col in table["columnDefinitions"]] == ["Name", "cpu", "memory", "Window"]
        assert {r["cells"][0]: r["cells"][2] for r in table["rows"]} == {"db": "256Mi", "web": "65Mi"}
        assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"

        node = wait_for(lambda: (r := c.get(f"{url}{API}/nodes/{n1}")).status_code == 200 and r.json(),
                        timeout=60, interval=0.5, what="the node's metrics")
        assert node["kind"] == "NodeMetrics" and node["usage"]["memory"] == "256Mi"
        names = [i["metadata"]["name"] for i in c.get(f"{url}{API}/nodes",
                                                     params={"fieldSelector": f"metadata.name={n0}"}).json()["items"]]
        assert names == [n0]


def test_missing_metrics_are_answered_as_metrics_server_answers(cluster, apiserver, ns):
    http, (n0, _) = cluster["http"], cluster["nodes"]
    url = cluster["url"]
    make_pod(http, ns, "quiet", n0, None)     # uses nothing: the kubelet's point is incomplete
    with direct_client("admin") as c:
        r = c.get(f"{url}{API}/namespaces/{ns}/pods/ghost")
        assert (r.status_code, r.json()["message"]) == (404, 'pods "ghost" not found')
        r = c.get(f"{url}{API}/namespaces/{ns}/pods/quiet")
        assert r.status_code == 404 and r.json()["reason"] == "NotFound"
        assert r.json()["message"] == f'podmetrics.metrics.k8s.io "{ns}/quiet" not found'
        r = c.get(f"{url}{API}/nodes/no-such-node")
        assert (r.status_code, r.json()["message"]) == (404, 'node "no-such-node" not found')
        assert c.get(f"{url}{API}/namespaces/{ns}/pods").json()["items"] == []
        r = c.get(f"{url}{API}/nodes", params={"watch": "1"})
        assert (r.status_code, r.json()["message"]) == (
            405, 'watch is not supported on resources of kind "nodes.metrics.k8s.io"')


def test_a_node_whose_kubelet_stops_answering_loses_its_metrics(cluster, apiserver, tmp_path, ns):
    """metrics-server keeps only what the last scrape brought: a kubelet that is gone
    leaves no stale point behind, and its node is NotFound as metrics-server answers."""
    http, url = cluster["http"], cluster["url"]
    name = "gone-" + uuid.uuid4().hex[:6]
    kubelet = Component("kubelet", "--kubeconfig", apiserver.write_kubeconfig(tmp_path / "kc"), "--runtime", "fake",
                        "--nodes", "1", "--node-name", name, "--healthz-port", "0", "--cert-dir", str(tmp_path / "k"),
                        "--client-ca-file", os.path.join(session_pki(), "ca.crt"),
                        "--authorization-mode", "Webhook").start()
    node = f"{name}-0"
    try:
        wait_for(lambda: http.get(f"/api/v1/nodes/{node}").status_code == 200, what="the node")
        make_pod(http, ns, "busy", node, {"c": {"cpu": "100m", "memory": "8Mi"}})
        with direct_client("admin") as c:
            wait_for(lambda: c.get(f"{url}{API}/nodes/{node}").status_code == 200, timeout=60, interval=0.5,
                     what="the node's metrics")
            kubelet.stop()
            r = wait_for(lambda: (r := c.get(f"{url}{API}/nodes/{node}")).status_code == 404 and r, timeout=60,
                         interval=0.5, what="the node's metrics to go")
            assert r.json()["message"] == f'nodemetrics.metrics.k8s.io "{node}" not found'
            r = c.get(f"{url}{API}/namespaces/{ns}/pods/busy")
            assert r.status_code == 404 and r.json()["message"] == f'podmetrics.metrics.k8s.io "{ns}/busy" not found'
    finally:
        kubelet.stop()
        http.delete(f"{LEASES}/{node}")
        http.delete(f"/api/v1/nodes/{node}")


def test_who_may_read_is_what_rbac_says(cluster, apiserver, http):
    url = cluster["url"]
    with direct_client(None) as anonymous:
        r = anonymous.get(f"{url}{API}/nodes")
        assert (r.status_code, r.json()["reason"]) == (401, "Unauthorized")
    with direct_client("scheduler") as scheduler:   # RBAC gives it nothing of metrics.k8s.io
        r = scheduler.get(f"{url}{API}/nodes")
        assert r.status_code == 403, r.text
        assert r.json()["message"] == ('nodes.metrics.k8s.io is forbidden: User "system:kube-scheduler" cannot '
                                       'list resource "nodes" in API group "metrics.k8s.io" at the cluster scope')
    binding = "test-metrics-reader-" + uuid.uuid4().hex[:6]
    r = http.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:aggregated-metrics-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": "system:kube-controller-manager"}]})
    assert r.status_code == 201, r.text
    try:
        with direct_client("controller-manager") as reader:
            wait_for(lambda: reader.get(f"{url}{API}/nodes").status_code == 200, what="the binding to apply")
            assert reader.get(f"{url}{API}/nodes").json()["kind"] == "NodeMetricsList"
    finally:
        http.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{binding}")


def test_health_and_metrics(cluster, apiserver, ns):
    url = cluster["url"]
    # Ready once some node has two complete points, and an idle fake node uses no CPU at
    # all (metrics-server drops a point without it): give one node a pod that does, so
    # the test stands alone and does not lean on an earlier test's pods.
    make_pod(cluster["http"], ns, "warm", cluster["nodes"][0], {"c": {"cpu": "10m", "memory": "1Mi"}})
    with direct_client("admin") as c:
        wait_for(lambda: c.get(f"{url}/readyz").status_code == 200, timeout=60, interval=0.5, what="readiness")
        assert "[+]metric-storage-ready ok" in c.get(f"{url}/readyz", params={"verbose": "1"}).text
        assert c.get(f"{url}/livez").status_code == 200
        text = c.get(f"{url}/metrics").text
        assert 'metrics_server_storage_points{type="node"}' in text
        assert "metrics_server_kubelet_request_total" in text


def test_bad_flags_are_one_line():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "metrics-server", "--metric-resolution", "5s"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "metric-resolution should be a time duration at least 10s" in r.stderr
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "metrics-server", "--kubeconfig", "/nonexistent"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stderr.startswith("error: kubeconfig /nonexistent") and "Traceback" not in r.stderr
