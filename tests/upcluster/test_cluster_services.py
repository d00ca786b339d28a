"""Services that route, end to end on `minik8s up --nodes 3` (root): ClusterIP and DNS
names from a pod, NodePorts and LoadBalancer addresses (Cluster and Local policy) from
the host, scaling, headless Services, session affinity, the blue-green and canary
releases of manifests/releases/, the `kubernetes` Service from a pod, and a proxy
restart under an open connection.

The cluster is the package's (tests/upcluster/conftest.py); the tests of this module
run in file order, each makes its own objects and leaves the others' alone. The host is
not a node (the nodes are network namespaces), so from
the host a Service is reached by its node ports and load balancer addresses; ClusterIPs
and DNS names are reached from a client pod on node-1, through `kubectl-lite exec`.

Everything the proxy and DNS do is eventually true, so every check polls with a
timeout that only catches a hang; nothing sleeps.
"""
import http.client
import json
import os
import signal
import socket
import threading
import time

import pytest
import yaml

from cluster import host
from tests.procs import wait_for
from tests.test_cluster import KUBECTL_LITE, Cluster, dump_logs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASES = os.path.join(ROOT, "manifests", "releases")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the linux runtime needs root"),
    pytest.mark.skipif(not os.path.exists(KUBECTL_LITE), reason=f"kubectl-lite is not installed ({KUBECTL_LITE})"),
]

NS = "/api/v1/namespaces/default"
APPS = "/apis/apps/v1/namespaces/default"


def _server_container(version: str) -> dict:
    """The release manifests' version-reporting server, as a container spec."""
    with open(os.path.join(RELEASES, "blue-green", "blue.yaml")) as f:
        c = yaml.safe_load(f)["spec"]["template"]["spec"]["containers"][0]
    c["env"] = [{"name": "VERSION", "value": version}]
    return c


# Run inside the client pod: N requests to a URL, one connection each; prints the
# answering pod's name (or the error) for each.
FETCH = """
import json, sys, urllib.request
out = []
for _ in range(int(sys.argv[2])):
    try:
        out.append(urllib.request.urlopen(sys.argv[1], timeout=15).read().decode().split()[3])
    except Exception as e:
        out.append("error: %r" % (e,))
print(json.dumps(out))
"""
RESOLVE = """
import json, socket, sys
print(json.dumps(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80, proto=socket.IPPROTO_TCP)})))
"""


class Services(Cluster):
    def exec(self, pod: str, *argv: str) -> str:
        return self.kubectl("exec", pod, "--", *argv, binary=KUBECTL_LITE).stdout

    def fetch_in_pod(self, url: str, n: int = 1) -> list[str]:
        return json.loads(self.exec("client", "python3", "-c", FETCH, url, str(n)))

    def resolve_in_pod(self, name: str) -> list[str]:
        r = self.kubectl("exec", "client", "--", "python3", "-c", RESOLVE, name, binary=KUBECTL_LITE, check=False)
        return json.loads(r.stdout) if r.returncode == 0 else []

    def create(self, path: str, obj: dict) -> dict:
        r = self.api.post(path, json=obj)
        assert r.status_code == 201, r.text
        return r.json()

    def service(self, name: str) -> dict:
        return self.api.get(f"{NS}/services/{name}").json()

    def node_ips(self) -> list[str]:
        return [self.cfg.node_ip(n) for n in self.cfg.node_names()]

    def ready_pods(self, selector: str) -> list[dict]:
        return self.running(selector)


def get(host_: str, port: int, timeout: float = 5) -> str:
    """One request on a new connection, from the host; the answer's body."""
    conn = http.client.HTTPConnection(host_, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200, body
        return body
    finally:
        conn.close()


def pod_of(body: str) -> str:
    return body.split()[3]   # "version <V> pod <name>"


def version_of(body: str) -> str:
    return body.split()[1]


class RequestLoop:
    """Requests from the host in a thread, one connection each, until stopped:
    (monotonic time, body or None, error or None) for each."""

    def __init__(self, host_: str, port: int):
        self.host, self.port = host_, port
        self.results: list[tuple[float, str | None, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.results.append((time.monotonic(), get(self.host, self.port), None))
            except Exception as e:  # noqa: BLE001 - every failure is a result to report
                self.results.append((time.monotonic(), None, repr(e)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def errors(self) -> list[str]:
        return [e for _, _, e in self.results if e is not None]

    def bodies_since(self, t: float) -> list[str]:
        return [b for when, b, _ in self.results if when >= t and b is not None]


@pytest.fixture(scope="module")
def cluster(upcluster, tmp_path_factory):
    """The package's three-node cluster (tests/upcluster/conftest.py) with the module's
    shared pieces: echo-2 and echo-3 pinned to node-2 and node-3 behind Service echo (a
    NodePort), and a client pod on node-1; removed at the end."""
    c = Services(upcluster.cfg, str(tmp_path_factory.mktemp("kubectl-cache")))
    try:
        for n in (2, 3):
            c.create(f"{NS}/pods", {"apiVersion": "v1", "kind": "Pod",
                                    "metadata": {"name": f"echo-{n}", "labels": {"app": "echo"}},
                                    "spec": {"nodeName": f"node-{n}", "containers": [_server_container("echo")]}})
        c.create(f"{NS}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
                                    "spec": {"type": "NodePort", "selector": {"app": "echo"},
                                             "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
        c.create(f"{NS}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
                                "spec": {"nodeName": "node-1", "containers": [{
                                    "name": "client", "image": "minik8s.local/host-root",
                                    "command": ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]}]}})
        wait_for(lambda: len(c.ready_pods("app=echo")) == 2, timeout=120, what="echo-2 and echo-3 ready")
        wait_for(lambda: c.api.get(f"{NS}/pods/client").json()["status"].get("phase") == "Running",
                 timeout=120, what="the client pod running")
        yield c
    finally:
        if os.environ.get("MINIK8S_KEEP_LOGS"):
            print(dump_logs(upcluster.cfg))
        for path in ("pods/echo-2", "pods/echo-3", "pods/client", "services/echo"):
            c.api.delete(f"{NS}/{path}")
        c.api.close()


def test_every_node_runs_a_proxy_and_the_cluster_dns_has_its_service(cluster):
    components = cluster.status()["components"]
    for node in cluster.cfg.node_names():
        assert components[f"kube-proxy-{node}"]["state"] == "running", components.keys()
    dns = cluster.api.get("/api/v1/namespaces/kube-system/services/kube-dns").json()
    assert dns["spec"]["clusterIP"] == "10.96.0.10", dns


def test_a_pod_on_node_1_reaches_pods_on_node_2_and_3_by_cluster_ip_and_dns_name(cluster):
    cluster_ip = cluster.service("echo")["spec"]["clusterIP"]
    seen: set[str] = set()

    def both_answer(url):
        seen.update(a for a in cluster.fetch_in_pod(url, 10) if not a.startswith("error"))
        return seen == {"echo-2", "echo-3"}
    wait_for(lambda: both_answer(f"http://{cluster_ip}/"), timeout=60, what=f"both pods via {cluster_ip}")
    # Once programmed, nothing fails.
    assert set(cluster.fetch_in_pod(f"http://{cluster_ip}/", 20)) <= {"echo-2", "echo-3"}
    for name in ("echo.default.svc.cluster.local", "echo"):   # the FQDN, and through the search path
        assert wait_for(lambda name=name: cluster.resolve_in_pod(name) == [cluster_ip], timeout=60,
                        what=f"{name} resolving to {cluster_ip}")
    seen.clear()
    wait_for(lambda: both_answer("http://echo.default.svc.cluster.local/"), timeout=60,
             what="both pods via the DNS name")
    assert set(cluster.fetch_in_pod("http://echo/", 20)) <= {"echo-2", "echo-3"}


def test_a_node_port_answers_from_the_host_on_every_nodes_address(cluster):
    port = cluster.service("echo")["spec"]["ports"][0]["nodePort"]
    for ip in cluster.node_ips():
        body = wait_for(lambda ip=ip: get(ip, port), timeout=60, what=f"{ip}:{port}")
        assert pod_of(body) in ("echo-2", "echo-3")


def test_scaling_changes_where_connections_go_and_none_lands_on_a_deleted_pod(cluster):
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "scaled"},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "scaled"}},
                           "template": {"metadata": {"labels": {"app": "scaled"}},
                                        "spec": {"containers": [_server_container("1")]}}}}
    cluster.create(f"{APPS}/deployments", deployment)
    svc = cluster.create(f"{NS}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "scaled"},
                                            "spec": {"type": "NodePort", "selector": {"app": "scaled"},
                                                     "ports": [{"port": 80, "targetPort": "http"}]}})
    port, node_ip = svc["spec"]["ports"][0]["nodePort"], cluster.node_ips()[0]
    wait_for(lambda: len(cluster.ready_pods("app=scaled")) == 1, timeout=120, what="1 scaled pod ready")
    first = cluster.ready_pods("app=scaled")[0]["metadata"]["name"]
    assert pod_of(wait_for(lambda: get(node_ip, port), timeout=60, what="the scaled service")) == first

    cluster.kubectl("scale", "deployment", "scaled", "--replicas=4", binary=KUBECTL_LITE)
    wait_for(lambda: len(cluster.ready_pods("app=scaled")) == 4, timeout=120, what="4 scaled pods ready")
    four = {p["metadata"]["name"] for p in cluster.ready_pods("app=scaled")}
    seen: set[str] = set()

    def all_answer():
        seen.update(pod_of(get(node_ip, port)) for _ in range(20))
        return seen == four
    wait_for(all_answer, timeout=60, what="connections reaching all 4 pods")

    with RequestLoop(node_ip, port) as loop:
        cluster.kubectl("scale", "deployment", "scaled", "--replicas=1", binary=KUBECTL_LITE)
        gone_at: dict[str, float] = {}

        def three_gone():
            names = {p["metadata"]["name"] for p in cluster.pods("app=scaled")}
            for name in four - names:
                gone_at.setdefault(name, time.monotonic())
            return len(gone_at) == 3
        wait_for(three_gone, timeout=120, what="3 scaled pods deleted")
        last = max(gone_at.values())
        wait_for(lambda: len(loop.bodies_since(last)) >= 50, timeout=60, what="50 requests after the deletions")
    for when, body, _ in loop.results:
        if body is not None and pod_of(body) in gone_at:
            assert when < gone_at[pod_of(body)], f"{pod_of(body)} answered after it was deleted"
    assert loop.errors() == [], loop.errors()[:5]
    survivor = {p["metadata"]["name"] for p in cluster.pods("app=scaled")}
    assert {pod_of(b) for b in loop.bodies_since(last)} == survivor
    cluster.api.delete(f"{APPS}/deployments/scaled")
    cluster.api.delete(f"{NS}/services/scaled")


def test_a_headless_service_resolves_to_its_pod_ips(cluster):
    cluster.create(f"{NS}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo-headless"},
                                      "spec": {"clusterIP": "None", "selector": {"app": "echo"},
                                               "ports": [{"port": 80, "targetPort": "http"}]}})
    ips = sorted(p["status"]["podIP"] for p in cluster.ready_pods("app=echo"))
    wait_for(lambda: cluster.resolve_in_pod("echo-headless.default.svc.cluster.local") == ips,
             timeout=60, what=f"echo-headless resolving to {ips}")


def test_session_affinity_holds_a_client_to_one_pod(cluster):
    svc = cluster.create(f"{NS}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sticky"},
                                            "spec": {"selector": {"app": "echo"}, "sessionAffinity": "ClientIP",
                                                     "ports": [{"port": 80, "targetPort": "http"}]}})
    url = f"http://{svc['spec']['clusterIP']}/"
    wait_for(lambda: not cluster.fetch_in_pod(url)[0].startswith("error"), timeout=60,
             what="the sticky service answering")   # refused until its rules are in
    answers = cluster.fetch_in_pod(url, 30)
    assert len(set(answers)) == 1 and answers[0] in ("echo-2", "echo-3"), answers
    # The same client keeps its pod on later connections too.
    assert set(cluster.fetch_in_pod(url, 30)) == set(answers)


def _apply(cluster, *paths):
    cluster.kubectl("apply", *[a for p in paths for a in ("-f", os.path.join(RELEASES, p))], binary=KUBECTL_LITE)


def test_load_balancer_external_ip_is_a_node_address_and_answers(cluster):
    _apply(cluster, "blue-green/blue.yaml", "blue-green/service.yaml")
    wait_for(lambda: len(cluster.ready_pods("app=checkout,version=blue")) == 3, timeout=120, what="3 blue pods")

    def ingress():
        return [i["ip"] for i in (cluster.service("checkout").get("status") or {})
                .get("loadBalancer", {}).get("ingress") or ()]
    ips = wait_for(lambda: sorted(ingress()) == sorted(cluster.node_ips()) and ingress(), timeout=60,
                   what="the LoadBalancer's ingress: every node's address")
    out = cluster.kubectl("get", "service", "checkout", binary=KUBECTL_LITE).stdout
    assert "LoadBalancer" in out and ",".join(sorted(ips)) in out, out
    for ip in ips:
        body = wait_for(lambda ip=ip: get(ip, 80), timeout=60, what=f"the load balancer at {ip}:80")
        assert version_of(body) == "blue", body


def test_a_local_load_balancer_gets_only_the_nodes_with_its_pods(cluster):
    cluster.create(f"{NS}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo-local"},
                                      "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                                               "selector": {"app": "echo"},
                                               "ports": [{"port": 8081, "targetPort": "http"}]}})
    pods = {cluster.cfg.node_ip(f"node-{n}"): f"echo-{n}" for n in (2, 3)}   # where echo-2 and echo-3 run
    want = sorted(pods)

    def ingress():
        status = cluster.service("echo-local").get("status") or {}
        return sorted(i["ip"] for i in (status.get("loadBalancer") or {}).get("ingress") or ())
    wait_for(lambda: ingress() == want, timeout=60, what=f"the Local load balancer at {want}")
    for ip, pod in pods.items():   # each node answers with its own pod
        assert pod_of(wait_for(lambda ip=ip: get(ip, 8081), timeout=60, what=f"{ip}:8081")) == pod
    cluster.api.delete(f"{NS}/services/echo-local")


def test_a_blue_green_switch_loses_no_request(cluster):
    _apply(cluster, "blue-green/green.yaml")
    wait_for(lambda: len(cluster.ready_pods("app=checkout,version=green")) == 3, timeout=120, what="3 green pods")
    node_ip = cluster.node_ips()[1]
    assert version_of(wait_for(lambda: get(node_ip, 30081), timeout=60, what="the node port")) == "blue"
    with RequestLoop(node_ip, 30081) as loop:
        wait_for(lambda: len(loop.results) >= 20, timeout=60, what="requests before the switch")
        asked = time.monotonic()
        cluster.kubectl("patch", "service", "checkout", "-p", '{"spec":{"selector":{"version":"green"}}}',
                        binary=KUBECTL_LITE)
        switched = time.monotonic()   # the Service is switched; the proxies follow

        def all_green():
            later = loop.bodies_since(switched)
            return len(later) >= 20 and all(version_of(b) == "green" for b in later[-20:])
        wait_for(all_green, timeout=60, what="every request answered by green")
    assert loop.errors() == [], loop.errors()[:5]
    before = [b for when, b, _ in loop.results if when < asked and b]
    assert before and all(version_of(b) == "blue" for b in before)
    cluster.kubectl("delete", "-f", os.path.join(RELEASES, "blue-green"), binary=KUBECTL_LITE)


def test_a_canary_at_one_of_ten_replicas_gets_a_tenth_of_the_traffic(cluster):
    _apply(cluster, "canary")
    wait_for(lambda: len(cluster.ready_pods("app=catalog")) == 10, timeout=180, what="10 catalog pods ready")
    pods = {p["metadata"]["name"] for p in cluster.ready_pods("app=catalog")}
    node_ip = cluster.node_ips()[2]
    seen: set[str] = set()

    def all_ten():   # every node's proxy has all ten endpoints before counting
        seen.update(pod_of(get(ip, 30082)) for ip in cluster.node_ips() for _ in range(10))
        return seen == pods
    wait_for(all_ten, timeout=60, what="all 10 catalog pods answering")
    versions = [version_of(get(node_ip, 30082)) for _ in range(1000)]
    share = versions.count("2") / len(versions)
    assert 0.06 <= share <= 0.14, f"canary share {share:.3f}"
    cluster.kubectl("delete", "-f", os.path.join(RELEASES, "canary"), binary=KUBECTL_LITE)


def test_the_kubernetes_service_works_from_a_pod(cluster):
    """By ClusterIP and by name, with the pod's ServiceAccount token and CA, as an
    in-cluster client connects."""
    script = """
import json, ssl, sys, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
out = {}
for host in sys.argv[1:]:
    req = urllib.request.Request("https://%s/version" % host,
                                 headers={"Authorization": "Bearer " + open(sa + "/token").read()})
    out[host] = json.loads(urllib.request.urlopen(req, context=ctx, timeout=10).read())["gitVersion"]
print(json.dumps(out))
"""
    cluster_ip = cluster.service("kubernetes")["spec"]["clusterIP"]
    hosts = (cluster_ip, "kubernetes.default.svc")

    last: list[str] = []

    def versions():
        r = cluster.kubectl("exec", "client", "--", "python3", "-c", script, *hosts, binary=KUBECTL_LITE,
                            check=False)
        last[:] = [r.stdout + r.stderr]
        return json.loads(r.stdout) if r.returncode == 0 else None
    try:
        got = wait_for(versions, timeout=60, what="the API server's /version through the kubernetes Service")
    except TimeoutError as e:
        raise AssertionError(f"{e}; the last try said: {last}") from None
    want = cluster.api.get("/version").json()["gitVersion"]
    assert got == {h: want for h in hosts}, got


ECHO_LINES = ("import socketserver\n"
              "class H(socketserver.StreamRequestHandler):\n"
              "    def handle(self):\n"
              "        for line in self.rfile:\n"
              "            self.wfile.write(line)\n"
              "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
              "socketserver.ThreadingTCPServer(('', 7000), H).serve_forever()\n")


def test_restarting_the_proxy_keeps_an_established_connection(cluster):
    cluster.create(f"{NS}/pods", {"apiVersion": "v1", "kind": "Pod",
                                  "metadata": {"name": "lines", "labels": {"app": "lines"}},
                                  "spec": {"nodeName": "node-3", "terminationGracePeriodSeconds": 1,
                                           "containers": [{"name": "lines", "image": "minik8s.local/host-root",
                                                           "command": ["python3", "-c", ECHO_LINES],
                                                           "ports": [{"containerPort": 7000}]}]}})
    svc = cluster.create(f"{NS}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lines"},
                                            "spec": {"type": "NodePort", "selector": {"app": "lines"},
                                                     "ports": [{"port": 7000, "targetPort": 7000}]}})
    port, node_ip = svc["spec"]["ports"][0]["nodePort"], cluster.node_ips()[0]

    def connect():
        s = socket.create_connection((node_ip, port), timeout=5)
        s.sendall(b"hello\n")
        if s.makefile("rb").readline() == b"hello\n":
            return s
        s.close()
        return None
    sock = wait_for(connect, timeout=90, what="a connection through the node port")
    lines = sock.makefile("rb")
    before = cluster.status()["components"]
    proxies = [f"kube-proxy-{n}" for n in cluster.cfg.node_names()]
    for name in proxies:
        assert host.kill(before[name]["pid"], before[name]["start"], signal.SIGKILL), name

    def restarted():
        now = cluster.status()["components"]
        return all(now[n]["state"] == "running" and now[n]["pid"] != before[n]["pid"] for n in proxies)
    wait_for(restarted, timeout=60, what="the proxies restarted")
    for word in (b"still\n", b"here\n"):
        sock.sendall(word)
        assert lines.readline() == word
    sock.close()
    # and new connections are served by the rebuilt rules
    fresh = wait_for(connect, timeout=60, what="a new connection after the restart")
    fresh.close()
    cluster.api.delete(f"{NS}/services/lines")
    cluster.api.delete(f"{NS}/pods/lines")
