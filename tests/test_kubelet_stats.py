"""The kubelet's resource statistics: `/stats/summary` and `/metrics/resource` on a real
kubelet running a pod that burns CPU (cgroup v1 on this machine, read from the pod's
real cgroups), on the fake runtime's nodes (usage set by the pod annotation
`fake.minik8s.io/usage`, reached at each Node's InternalIP and kubelet port), cgroup v2
files read from a directory laid out as cgroup2 presents them, the exposition text as the
kubelet's collector writes it, and who the endpoint lets in (401 without a credential,
403 for a user the API server does not authorize for nodes/metrics and nodes/stats).
"""
from __future__ import annotations

import json
import os
import re
import ssl
import uuid

import httpx
import pytest

from kubelet import stats
from kubelet.runtime import Usage
from kubelet.runtime.linux.cgroups import Cgroup
from tests.procs import Component, root_ca_configmap, session_pki, wait_for

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
TOKEN = "stats-test-token-" + uuid.uuid4().hex


# -- exposition and parsing, no processes ----------------------------------------------

def test_values_are_formatted_as_gos_shortest_g():
    cases = [(10, "10"), (1000, "1000"), (123456, "123456"), (1e6, "1e+06"), (67108864, "6.7108864e+07"),
             (0.25, "0.25"), (0.0001, "0.0001"), (0.00001, "1e-05"), (1624396248.3020916, "1.6243962483020916e+09"),
             (0, "0"), (-2.5, "-2.5")]
    assert [stats.go_float(v) for v, _ in cases] == [want for _, want in cases]


def test_resource_metrics_render_as_the_kubelets_collector():
    """The kubelet's own test case (resource_metrics_test.go), in its sorted exposition."""
    t = 1624396278.302091597
    usage = Usage(t, 10_000_000_000, 2000, 1000, 0)
    s = stats.Summarizer().summary(node_name="n", node_start=0, node=usage, pods=[
        stats.PodReading("pod_a", "namespace_a", "u1", t - 60, usage, [
            stats.ContainerReading("container_a", t - 30, usage),
            stats.ContainerReading("container_b", t - 120, usage)]),
        stats.PodReading("pod_b", "namespace_b", "u2", t - 60, None, [
            stats.ContainerReading("container_a", t - 600, usage)])])
    text = stats.resource_metrics(s)
    assert text.startswith(
        "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in "
        "core-seconds\n# TYPE container_cpu_usage_seconds_total counter\n"
        'container_cpu_usage_seconds_total{container="container_a",namespace="namespace_a",pod="pod_a"} '
        "10 1624396278302\n"
        'container_cpu_usage_seconds_total{container="container_a",namespace="namespace_b",pod="pod_b"} '
        "10 1624396278302\n"
        'container_cpu_usage_seconds_total{container="container_b",namespace="namespace_a",pod="pod_a"} '
        "10 1624396278302\n")
    assert ('container_start_time_seconds{container="container_a",namespace="namespace_a",pod="pod_a"} '
            "1.6243962483020916e+09\n") in text
    assert "node_cpu_usage_seconds_total 10 1624396278302\n" in text
    assert "node_memory_working_set_bytes 1000 1624396278302\n" in text
    assert 'pod_memory_working_set_bytes{namespace="namespace_a",pod="pod_a"} 1000 1624396278302\n' in text
    assert 'pod="pod_b"' not in "".join(x for x in text.splitlines() if x.startswith("pod_"))
    assert text.endswith("# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, "
                         "0 otherwise\n# TYPE scrape_error gauge\nscrape_error 0\n")
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names == sorted(names)
    assert "scrape_error 1\n" in stats.resource_metrics(None)


def test_usage_nano_cores_is_the_rate_since_the_previous_reading():
    s = stats.Summarizer()
    first = s.summary(node_name="n", node_start=0, node=Usage(100.0, 5_000_000_000, 1, 1, 1), pods=[])
    assert "usageNanoCores" not in first["node"]["cpu"]
    second = s.summary(node_name="n", node_start=0, node=Usage(102.0, 6_000_000_000, 1, 1, 1), pods=[])
    assert second["node"]["cpu"]["usageNanoCores"] == 500_000_000
    js = stats.to_json(second)
    assert js["node"]["cpu"]["time"] == "1970-01-01T00:01:42Z"


def test_cgroup_v2_usage_from_files_laid_out_as_cgroup2(tmp_path):
    d = tmp_path / "kubepods" / "pod1" / "c1"
    d.mkdir(parents=True)
    (d / "cgroup.controllers").write_text("cpu memory pids\n")
    (d / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
                                "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n")
    (d / "memory.current").write_text("73400320\n")
    (d / "memory.stat").write_text("anon 41943040\nfile 31457280\nkernel 0\nactive_file 10485760\n"
                                   "inactive_file 20971520\npgfault 1234\npgmajfault 5\n")
    u = Cgroup([str(d)], v2=True).usage()
    assert u == {"cpu_ns": 2_500_000_000, "memory": 73400320, "working_set": 73400320 - 20971520,
                 "rss": 41943040, "pgfault": 1234, "pgmajfault": 5}
    (d / "memory.stat").write_text("anon 1\ninactive_file 99999999999\n")
    assert Cgroup([str(d)], v2=True).usage()["working_set"] == 0  # never below zero, as cadvisor
    # The v2 root has no memory.current: its memory is /proc/meminfo's, as runc reads it.
    root = tmp_path / "root"
    root.mkdir()
    (root / "cpu.stat").write_text("usage_usec 7\n")
    (root / "memory.stat").write_text("anon 1\n")
    u = Cgroup([str(root)], v2=True).usage()
    meminfo = {line.split()[0]: int(line.split()[1]) for line in open("/proc/meminfo")}
    assert u["cpu_ns"] == 7000 and 0 < u["working_set"] <= u["memory"] <= meminfo["MemTotal:"] * 1024
    assert Cgroup([str(tmp_path / "gone")], v2=True).usage() is None


def test_cgroup_v1_usage_of_the_machine():
    from kubelet.runtime.linux import cgroups
    if cgroups.is_v2():
        pytest.skip("this machine has cgroup v2 (v1 is read from real pods where it is mounted)")
    a = cgroups.root().usage()
    assert a is not None and a["cpu_ns"] > 0 and 0 < a["working_set"] <= a["memory"]


# -- the fake runtime --------------------------------------------------------------------

def _client(cert: str | None = None) -> httpx.Client:
    """A client of a kubelet endpoint with a self-signed serving certificate, presenting
    the session PKI's `cert` (admin, scheduler...) if given."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if cert:
        pki = session_pki()
        ctx.load_cert_chain(os.path.join(pki, f"{cert}.crt"), os.path.join(pki, f"{cert}.key"))
    return httpx.Client(verify=ctx, timeout=10)


def _endpoint(http, node: str) -> str:
    st = http.get(f"/api/v1/nodes/{node}").json()["status"]
    ip = next(a["address"] for a in st["addresses"] if a["type"] == "InternalIP")
    return f"{ip}:{st['daemonEndpoints']['kubeletEndpoint']['Port']}"


def _sample(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    m = re.search(rf"^{name}{{{re.escape(want)}}} (\S+) \d+$" if labels else rf"^{name} (\S+) \d+$", text, re.M)
    return float(m.group(1)) if m else None


@pytest.fixture
def fake_nodes(apiserver, kubeconfig, http, tmp_path):
    """Three fake nodes whose endpoint is HTTPS (a self-signed certificate from --cert-dir),
    knows callers by certificates of the session CA, and asks the API server (Webhook)."""
    prefix = "fks-" + uuid.uuid4().hex[:6]
    kubelet = Component("kubelet", "--kubeconfig", kubeconfig, "--runtime", "fake", "--nodes", "3",
                        "--node-name", prefix, "--healthz-port", "0", "--cert-dir", str(tmp_path / "pki"),
                        "--client-ca-file", os.path.join(session_pki(), "ca.crt"),
                        "--authorization-mode", "Webhook").start()
    names = [f"{prefix}-{i}" for i in range(3)]
    try:
        wait_for(lambda: all(http.get(f"/api/v1/nodes/{n}").status_code == 200 for n in names)
                 or not kubelet.alive(), what="the fake nodes")
        assert kubelet.alive(), kubelet.log()
        yield names
    finally:
        kubelet.stop()
        for name in names:
            http.delete(f"{LEASES}/{name}")
            http.delete(f"/api/v1/nodes/{name}")


def test_fake_nodes_serve_the_usage_their_pods_annotation_sets(fake_nodes, http, ns):
    n0, n1, _ = fake_nodes
    addr0, addr1 = _endpoint(http, n0), _endpoint(http, n1)
    assert addr0.startswith("127.127.") and addr0 != addr1 and addr0.split(":")[1] == addr1.split(":")[1]
    usage = {"app": {"cpu": "500m", "memory": "64Mi"}, "side": {"memory": "1Mi"}}
    r = http.post(f"/api/v1/namespaces/{ns}/pods", json={
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "busy", "annotations": {"fake.minik8s.io/usage": json.dumps(usage)}},
        "spec": {"nodeName": n0, "containers": [{"name": "app", "image": "x"}, {"name": "side", "image": "x"}]}})
    assert r.status_code == 201, r.text
    with _client("admin") as c:
        def metrics(addr: str) -> str:
            r = c.get(f"https://{addr}/metrics/resource")
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            return r.text
        key = {"container": "app", "namespace": ns, "pod": "busy"}
        text = wait_for(lambda: t if _sample(t := metrics(addr0), "container_cpu_usage_seconds_total", **key)
                        is not None else None, what="the pod's metrics")
        assert _sample(text, "container_memory_working_set_bytes", **key) == 64 * 2**20
        assert "container_memory_working_set_bytes{container=\"app\",namespace=\"%s\",pod=\"busy\"} " \
               "6.7108864e+07 " % ns in text
        assert _sample(text, "pod_memory_working_set_bytes", namespace=ns, pod="busy") == 65 * 2**20
        assert _sample(text, "node_memory_working_set_bytes") == 65 * 2**20
        assert _sample(text, "container_cpu_usage_seconds_total", container="side", namespace=ns, pod="busy") == 0
        assert _sample(text, "scrape_error") is None and "\nscrape_error 0\n" in text
        first = _sample(text, "container_cpu_usage_seconds_total", **key)
        wait_for(lambda: _sample(metrics(addr0), "container_cpu_usage_seconds_total", **key) > first + 0.05,
                 what="the CPU counter to grow")
        assert 'pod="busy"' not in metrics(addr1)  # the other node runs nothing of it

        summary = c.get(f"https://{addr0}/stats/summary").json()
        assert summary["node"]["nodeName"] == n0
        (pod,) = summary["pods"]
        assert pod["podRef"]["name"] == "busy" and pod["podRef"]["namespace"] == ns
        app = next(x for x in pod["containers"] if x["name"] == "app")
        assert app["memory"]["workingSetBytes"] == 64 * 2**20 and app["cpu"]["usageCoreNanoSeconds"] > 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", app["cpu"]["time"])
        again = c.get(f"https://{addr0}/stats/summary").json()
        rate = next(x for x in again["pods"][0]["containers"] if x["name"] == "app")["cpu"]["usageNanoCores"]
        assert rate == pytest.approx(500_000_000, rel=0.01)

        # The rate changes from the annotation's update on: at 0 the counter stops.
        r = http.patch(f"/api/v1/namespaces/{ns}/pods/busy", headers={"Content-Type": "application/merge-patch+json"},
                       json={"metadata": {"annotations": {"fake.minik8s.io/usage": json.dumps(
                           {"app": {"cpu": "0", "memory": "8Mi"}})}}})
        assert r.status_code == 200, r.text
        wait_for(lambda: _sample(metrics(addr0), "container_memory_working_set_bytes", **key) == 8 * 2**20,
                 what="the new usage")
        stopped = _sample(metrics(addr0), "container_cpu_usage_seconds_total", **key)
        assert stopped >= first
        assert _sample(metrics(addr0), "container_cpu_usage_seconds_total", **key) == stopped

        # A deleted pod is gone from the metrics; the node's CPU time keeps what it used.
        node_cpu = _sample(metrics(addr0), "node_cpu_usage_seconds_total")
        assert http.delete(f"/api/v1/namespaces/{ns}/pods/busy").status_code == 200
        wait_for(lambda: 'pod="busy"' not in metrics(addr0), what="the pod to leave the metrics")
        assert _sample(metrics(addr0), "node_cpu_usage_seconds_total") >= node_cpu


def test_fake_endpoint_refuses_as_the_kubelet_does(fake_nodes, http):
    addr = _endpoint(http, fake_nodes[0])
    with _client() as anonymous:
        for path in ("/metrics/resource", "/stats/summary"):
            r = anonymous.get(f"https://{addr}{path}")
            assert (r.status_code, r.json()["reason"]) == (401, "Unauthorized")
    with _client("scheduler") as scheduler:  # RBAC gives it nothing of nodes/metrics or nodes/stats
        r = scheduler.get(f"https://{addr}/metrics/resource")
        assert r.status_code == 403
        assert r.json()["message"] == ("Forbidden (user=system:kube-scheduler, verb=get, resource=nodes, "
                                       "subresource=metrics)")
        r = scheduler.get(f"https://{addr}/stats/summary")
        assert r.status_code == 403 and r.json()["message"].endswith("subresource=stats)")
    with _client("admin") as admin:
        assert admin.get(f"https://{addr}/containerLogs/a/b/c").status_code == 404
        assert admin.get(f"https://{addr}/healthz").text == "ok"


# -- a real kubelet ----------------------------------------------------------------------

@pytest.fixture
def real_node(apiserver, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("runs real pods: needs root")
    from tests.test_kubelet_e2e import KubeletNode
    n = KubeletNode(apiserver, tmp_path)
    try:
        yield n.start()
    finally:
        n.cleanup()


def test_real_kubelet_reports_a_pod_burning_cpu_from_its_cgroups(real_node, http, ns):
    from tests.test_kubelet_e2e import TOKEN as NODE_TOKEN
    from tests.test_kubelet_e2e import container, create, make_pod, running, wait_pod
    root_ca_configmap(http, ns)  # the token volume projects it
    create(http, ns, make_pod("burn", real_node, container("spin", ["sh", "-c", "while :; do :; done"]),
                              container("idle", ["sleep", "infinity"])))
    try:
        wait_pod(http, ns, "burn", lambda p: running("spin")(p) and running("idle")(p), "both running", timeout=60)
    except AssertionError:
        raise AssertionError(real_node.proc.log()) from None
    auth = {"Authorization": f"Bearer {NODE_TOKEN}"}

    def pod_stats() -> dict | None:
        r = httpx.get(real_node.url + "/stats/summary", headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        return next((p for p in r.json()["pods"] if p["podRef"] == {
            "name": "burn", "namespace": ns, "uid": p["podRef"]["uid"]}), None)

    def spin(p: dict) -> dict:
        return next(c for c in p["containers"] if c["name"] == "spin")
    first = wait_for(lambda: (p := pod_stats()) and len(p["containers"]) == 2 and p, what="the pod's stats")
    cpu0 = spin(first)["cpu"]["usageCoreNanoSeconds"]
    # A busy loop's cumulative CPU time rises by whole tenths of a second, read from its cgroup.
    later = wait_for(lambda: (p := pod_stats()) and spin(p)["cpu"]["usageCoreNanoSeconds"] > cpu0 + 200_000_000
                     and p, what="the busy loop's CPU time to rise")
    assert spin(later)["memory"]["workingSetBytes"] > 0
    assert spin(later)["cpu"]["usageNanoCores"] > 0  # a rate against the previous reading
    idle = next(c for c in later["containers"] if c["name"] == "idle")
    assert idle["cpu"]["usageCoreNanoSeconds"] < spin(later)["cpu"]["usageCoreNanoSeconds"]
    assert later["cpu"]["usageCoreNanoSeconds"] >= spin(later)["cpu"]["usageCoreNanoSeconds"]
    assert later["memory"]["workingSetBytes"] >= spin(later)["memory"]["workingSetBytes"]

    r = httpx.get(real_node.url + "/metrics/resource", headers=auth, timeout=10)
    assert r.status_code == 200 and "\nscrape_error 0\n" in r.text
    key = {"container": "spin", "namespace": ns, "pod": "burn"}
    assert _sample(r.text, "container_cpu_usage_seconds_total", **key) > 0.2
    assert _sample(r.text, "container_memory_working_set_bytes", **key) > 0
    assert _sample(r.text, "pod_cpu_usage_seconds_total", namespace=ns, pod="burn") > 0.2
    assert _sample(r.text, "node_cpu_usage_seconds_total") > 0
    assert re.search(rf'^container_start_time_seconds{{container="spin",namespace="{ns}",pod="burn"}} \S+$',
                     r.text, re.M)

    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        for path in ("/stats/summary", "/metrics/resource"):
            r = httpx.get(real_node.url + path, headers=headers, timeout=10)
            assert (r.status_code, r.json()["reason"]) == (401, "Unauthorized")
