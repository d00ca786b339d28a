"""`minik8s kubelet --runtime fake --nodes N`: many simulated nodes in one process."""
import ipaddress
import json
import socket
import uuid

import httpx

from tests.procs import Component, free_port, wait_for

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


def test_fake_nodes_register_renew_leases_and_run_pods(apiserver, kubeconfig, http, ns):
    prefix, count = "fake-" + uuid.uuid4().hex[:6], 40
    names = [f"{prefix}-{i}" for i in range(count)]
    kubelet = Component("kubelet", "--kubeconfig", kubeconfig, "--runtime", "fake", "--nodes", str(count),
                        "--node-name", prefix, "--lease-renew-interval", "1", "--healthz-port", "0").start()
    try:
        def ours(path):
            return {o["metadata"]["name"]: o for o in http.get(path).json()["items"]
                    if o["metadata"]["name"].startswith(prefix + "-")}
        nodes = wait_for(lambda: len(n := ours("/api/v1/nodes")) == count and n, what="the fake nodes")
        assert set(nodes) == set(names)
        node = nodes[names[7]]
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
        # one endpoint port for every node, each at its own loopback address (the stats: test_kubelet_stats)
        assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
        assert {a["type"]: a["address"] for a in node["status"]["addresses"]}["InternalIP"] == "127.127.0.8"
        leases = wait_for(lambda: len(x := ours(LEASES)) == count and x, what="the leases")
        first = leases[names[0]]["spec"]["renewTime"]
        wait_for(lambda: http.get(f"{LEASES}/{names[0]}").json()["spec"]["renewTime"] != first,
                 what="a renewal")

        for i in range(10):
            r = http.post(f"/api/v1/namespaces/{ns}/pods", json={
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}"},
                "spec": {"nodeName": names[i % 3], "containers": [{"name": "c", "image": "nginx"}]}})
            assert r.status_code == 201, r.text

        def running():
            pods = http.get(f"/api/v1/namespaces/{ns}/pods").json()["items"]
            return len(pods) == 10 and all(p["status"].get("phase") == "Running" for p in pods) and pods
        pods = wait_for(running, what="the pods to run")
        ips = [p["status"]["podIP"] for p in pods]
        assert len(set(ips)) == 10 and all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.128.0.0/9")
                                           for ip in ips)
        assert all({c["type"]: c["status"] for c in p["status"]["conditions"]}["Ready"] == "True" for p in pods)
        assert all(p["status"]["containerStatuses"][0]["ready"] for p in pods)

        # Marked NotReady by another writer, as the node lifecycle controller does when a
        # lease is late: the fake kubelet writes its own status back.
        r = http.patch(f"/api/v1/namespaces/{ns}/pods/p1/status",
                       json={"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
                       headers={"Content-Type": "application/strategic-merge-patch+json"})
        assert r.status_code == 200, r.text

        def ready_again():
            conds = http.get(f"/api/v1/namespaces/{ns}/pods/p1").json()["status"]["conditions"]
            return {c["type"]: c["status"] for c in conds}["Ready"] == "True"
        wait_for(ready_again, what="p1 Ready again")

        r = http.delete(f"/api/v1/namespaces/{ns}/pods/p0")
        assert r.status_code == 200  # graceful: the fake kubelet confirms it
        wait_for(lambda: http.get(f"/api/v1/namespaces/{ns}/pods/p0").status_code == 404,
                 what="the deletion to be confirmed")
        assert kubelet.alive()
    finally:
        kubelet.stop()
        for name in names:
            http.delete(f"{LEASES}/{name}")
            http.delete(f"/api/v1/nodes/{name}")


def test_fake_kubelet_logs_json_serves_ping_only_and_stops_cleanly(apiserver, kubeconfig, http):
    prefix, port = "fakej-" + uuid.uuid4().hex[:6], free_port()
    kubelet = Component("kubelet", "--kubeconfig", kubeconfig, "--runtime", "fake", "--nodes", "2",
                        "--node-name", prefix, "--healthz-port", str(port), "--logging-format=json",
                        "-v", "2").start()

    def lines():
        return [json.loads(line) for line in kubelet.log().splitlines() if line.startswith("{")]
    try:
        line = wait_for(lambda: next((x for x in lines() if x["msg"].startswith("registered 2 fake nodes")),
                                     None), what="the registration's log line")
        assert line["v"] == 0 and line["caller"].startswith("fake.py:")
        r = httpx.get(f"http://127.0.0.1:{port}/healthz?verbose")
        assert (r.status_code, r.text.splitlines()) == (200, ["[+]ping ok", "healthz check passed"])
    finally:
        kubelet.stop()
        for i in range(2):
            http.delete(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{prefix}-{i}")
            http.delete(f"/api/v1/nodes/{prefix}-{i}")
    assert kubelet.proc.returncode == 0, kubelet.log()
    assert "SIGTERM: stopping (pods keep running)" in [x["msg"] for x in lines()]


def test_a_taken_healthz_port_is_logged_not_fatal(apiserver, kubeconfig, http):
    prefix = "fakep-" + uuid.uuid4().hex[:6]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        kubelet = Component("kubelet", "--kubeconfig", kubeconfig, "--runtime", "fake", "--nodes", "1",
                            "--node-name", prefix, "--healthz-port", str(port)).start()
        try:
            wait_for(lambda: http.get(f"/api/v1/nodes/{prefix}-0").status_code == 200, what="the fake node")
            wait_for(lambda: f"failed to serve healthz on 127.0.0.1:{port}" in kubelet.log(),
                     what="the bind error in the log")
            assert kubelet.alive()
        finally:
            kubelet.stop()
            http.delete(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{prefix}-0")
            http.delete(f"/api/v1/nodes/{prefix}-0")
