"""The service proxy on a real node (root): a network namespace with a pod bridge, pods
in namespaces of their own running a tiny TCP/UDP server, `minik8s proxy` in the node's
namespace against a real API server, Services and EndpointSlices made through the API,
and connections through the ClusterIPs and NodePorts it programs.

    root netns:  the API server on 127.0.0.1 (reached from the node through a socket
                 this test opens inside the node's namespace and forwards)
    node netns:  bridge 10.A.B.1/24 (the pod CIDR); eth-out 192.168.C.1/24 to `out`
    pods:        p1 .11, p2 .12, p3 .13 (servers), c .20 (a client), on the bridge
    out:         192.168.C.2: another host, for NodePorts

Everything made here is removed at the end, even when a test fails.
"""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from cluster.host import setns
from kubelet.runtime.linux import netlink
from machinery import times
from tests.procs import wait_for

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, nftables)"),
              pytest.mark.skipif(not os.path.exists("/usr/sbin/nft"), reason="needs nft (Debian's nftables)")]

NODE = "node-a"
SERVER = r"""
import socket, socketserver, sys, threading
name = sys.argv[1]
class TCP(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(f"{name} {self.client_address[0]}\n".encode())
class UDP(socketserver.BaseRequestHandler):
    def handle(self):
        self.request[1].sendto(f"{name} {self.client_address[0]}".encode(), self.client_address)
for cls, handler in ((socketserver.ThreadingTCPServer, TCP), (socketserver.ThreadingUDPServer, UDP)):
    cls.allow_reuse_address = True
    cls.daemon_threads = True
    s = cls(("0.0.0.0", 8080), handler)
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


def in_netns(name: str, fn, *args):
    """fn(*args) in a thread inside network namespace `name`; its result or exception."""
    out: list = []

    def run():
        try:
            setns(f"/run/netns/{name}")
            out.append((True, fn(*args)))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            out.append((False, e))
    t = threading.Thread(target=run)
    t.start()
    t.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value


def _hairpin(port: str) -> None:
    with netlink.Netlink() as nl:
        nl.set_hairpin(netlink.ifindex(port))


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


class Net:
    def __init__(self):
        self.id = uuid.uuid4().hex[:5]
        a, b, c = random.randrange(100, 200), random.randrange(0, 256), random.randrange(0, 256)
        self.cluster_cidr = f"10.{a}.0.0/16"
        self.pod_net = f"10.{a}.{b}"
        self.node_ip = f"192.168.{c}.1"
        self.out_ip = f"192.168.{c}.2"
        self.node = f"mkp{self.id}-node"
        self.out = f"mkp{self.id}-out"
        self.pods = {"p1": 11, "p2": 12, "p3": 13, "c": 20}
        self.servers: list[subprocess.Popen] = []
        self.made: list[str] = []

    def ns(self, pod: str) -> str:
        return f"mkp{self.id}-{pod}"

    def ip(self, pod: str) -> str:
        return f"{self.pod_net}.{self.pods[pod]}"

    def up(self) -> None:
        for name in (self.node, self.out, *map(self.ns, self.pods)):
            sh("ip", "netns", "add", name)
            self.made.append(name)
        n = ["ip", "-n", self.node]
        sh(*n, "link", "set", "lo", "up")
        sh(*n, "link", "add", "br0", "type", "bridge")
        sh(*n, "addr", "add", f"{self.pod_net}.1/24", "dev", "br0")
        sh(*n, "link", "set", "br0", "up")
        sh("ip", "netns", "exec", self.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for i, (pod, last) in enumerate(self.pods.items()):
            p = ["ip", "-n", self.ns(pod)]
            sh(*n, "link", "add", f"veth{i}", "type", "veth", "peer", "name", "eth0", "netns", self.ns(pod))
            sh(*n, "link", "set", f"veth{i}", "master", "br0", "up")
            # hairpin, as the kubelet sets its pods' bridge ports (with its own code): a pod
            # may reach itself through its Service
            in_netns(self.node, _hairpin, f"veth{i}")
            sh(*p, "link", "set", "lo", "up")
            sh(*p, "addr", "add", f"{self.pod_net}.{last}/24", "dev", "eth0")
            sh(*p, "link", "set", "eth0", "up")
            sh(*p, "route", "add", "default", "via", f"{self.pod_net}.1")
        sh(*n, "link", "add", "eth-out", "type", "veth", "peer", "name", "eth0", "netns", self.out)
        sh(*n, "addr", "add", f"{self.node_ip}/24", "dev", "eth-out")
        sh(*n, "link", "set", "eth-out", "up")
        o = ["ip", "-n", self.out]
        sh(*o, "link", "set", "lo", "up")
        sh(*o, "addr", "add", f"{self.out_ip}/24", "dev", "eth0")
        sh(*o, "link", "set", "eth0", "up")
        sh(*n, "route", "add", "default", "via", self.out_ip)  # as a node has: ClusterIPs route somewhere
        for pod in ("p1", "p2", "p3"):
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns(pod), sys.executable, "-c", SERVER, pod],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.servers.append(proc)
            assert proc.stdout.readline().strip() == "ready"

    def down(self) -> None:
        for p in self.servers:
            p.kill()
            p.wait()
        for name in self.made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Forwarder:
    """A listening socket made inside the node's namespace at 127.0.0.1:`port`, whose
    connections are piped to 127.0.0.1:`port` here: the proxy in the node reaches the
    test's API server at the address its kubeconfig names."""

    def __init__(self, netns: str, port: int):
        self.port = port
        self.sock = in_netns(netns, self._listen)
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _listen(self) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        return s

    def _accept(self) -> None:
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.port))
            except OSError:
                c.close()
                continue
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped = True
        self.sock.close()


class Proxy:
    def __init__(self, net: Net, kubeconfig: str, log_path: str):
        self.net, self.kubeconfig, self.log_path = net, kubeconfig, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proxy":
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.net.node, sys.executable, "-m", "cluster.cli", "proxy",
             "--kubeconfig", self.kubeconfig, "--hostname-override", NODE,
             "--cluster-cidr", self.net.cluster_cidr, "--min-sync-period", "0", "--sync-period", "2s", "-v", "2"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: self.get("/healthz").status_code == 200, what="proxy synced", timeout=30)
        return self

    def get(self, path: str, port: int = 10249) -> httpx.Response:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"proxy exited: {self.log()}")

        def get():
            try:
                return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
            except httpx.TransportError:
                return httpx.Response(599)
        return in_netns(self.net.node, get)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:  # never leave it running: the test's own process
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()[-3000:]


@pytest.fixture(scope="module")
def node(apiserver, kubeconfig, tmp_path_factory):
    net = Net()
    fwd = proxy = None
    try:
        net.up()
        fwd = Forwarder(net.node, apiserver.port)
        proxy = Proxy(net, kubeconfig, str(tmp_path_factory.mktemp("proxy") / "proxy.log")).start()
        yield net, proxy
    finally:
        if proxy is not None:
            proxy.stop()
        if fwd is not None:
            fwd.close()
        net.down()


# -- helpers -------------------------------------------------------------------------------

def ask(net: Net, src: str, ip: str, port: int, *, proto: str = "tcp", sport: int = 0) -> str:
    """The server's answer through ip:port from namespace src: `<pod> <client ip>`."""
    def run():
        if proto == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", sport))
            s.settimeout(1)
            try:
                s.sendto(b"hi", (ip, port))
                return s.recv(100).decode()
            finally:
                s.close()
        with socket.create_connection((ip, port), timeout=3) as s:
            s.sendall(b"hi\n")
            return s.makefile().readline().strip()
    return in_netns(net.ns(src) if src in net.pods else src, run)


def refused(net: Net, src: str, ip: str, port: int) -> bool:
    def run():
        try:
            socket.create_connection((ip, port), timeout=3).close()
        except ConnectionRefusedError:
            return True
        return False
    return in_netns(net.ns(src) if src in net.pods else src, run)


def service(http, ns: str, name: str, *, ports=None, **spec) -> dict:
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": ports or [{"name": "http", "port": 80, "targetPort": 8080}], **spec}}
    r = http.post(f"/api/v1/namespaces/{ns}/services", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def endpoints(net: Net, *pods, node: str = NODE, **conditions) -> list[dict]:
    return [{"addresses": [net.ip(p) if p in net.pods else p], "nodeName": node,
             "conditions": {"ready": True, **conditions}} for p in pods]


def put_slice(http, ns: str, svc: str, eps: list[dict], *, name: str | None = None,
              ports=None) -> None:
    name = name or f"{svc}-abc"
    body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc},
                         # as the EndpointSlice controller marks the change it makes
                         "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": times.rfc3339_micro()}},
            "ports": ports or [{"name": "http", "port": 8080, "protocol": "TCP"}], "endpoints": eps}
    base = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
    current = http.get(f"{base}/{name}")
    if current.status_code == 200:
        body["metadata"]["resourceVersion"] = current.json()["metadata"]["resourceVersion"]
        r = http.put(f"{base}/{name}", json=body)
        assert r.status_code == 200, r.text
    else:
        r = http.post(base, json=body)
        assert r.status_code == 201, r.text


def hits(net: Net, src: str, ip: str, port: int, n: int = 20, **kw) -> set[str]:
    return {ask(net, src, ip, port, **kw).split()[0] for _ in range(n)}


def until(net: Net, src: str, ip: str, port: int, want: set[str], **kw) -> None:
    """Connections through ip:port reach exactly the pods `want` (once the proxy has
    caught up): polled, since the rules follow the API asynchronously."""
    def ok():
        try:
            return hits(net, src, ip, port, 12, **kw) == want
        except OSError:
            return False
    wait_for(ok, what=f"{ip}:{port} reaching {sorted(want)}", timeout=20)


# -- tests ---------------------------------------------------------------------------------

def test_cluster_ip_spreads_over_ready_endpoints_and_follows_changes(node, http, ns):
    net, proxy = node
    ip = service(http, ns, "web")["spec"]["clusterIP"]
    put_slice(http, ns, "web", endpoints(net, "p1", "p2"))
    until(net, "c", ip, 80, {"p1", "p2"})             # both get hit: random, equal odds
    # the server saw the pod's own address: pod-to-Service traffic is not masqueraded
    assert ask(net, "c", ip, 80).split()[1] == net.ip("c")
    put_slice(http, ns, "web", endpoints(net, "p3"))  # endpoint removal changes the target
    until(net, "c", ip, 80, {"p3"})
    # from the node itself (a host-network client) too
    assert ask(net, net.node, ip, 80).split()[0] == "p3"


def test_services_another_proxy_claims_are_left_alone(node, http, ns):
    net, proxy = node
    body = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "theirs", "labels": {"service.kubernetes.io/service-proxy-name": "other"}},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    r = http.post(f"/api/v1/namespaces/{ns}/services", json=body)
    assert r.status_code == 201, r.text
    theirs = r.json()["spec"]["clusterIP"]
    ip = service(http, ns, "ours")["spec"]["clusterIP"]
    put_slice(http, ns, "theirs", endpoints(net, "p1"))
    put_slice(http, ns, "ours", endpoints(net, "p1"))
    until(net, "c", ip, 80, {"p1"})     # synced after both: "theirs" has no rules
    table = subprocess.run(["ip", "netns", "exec", net.node, "nft", "list", "table", "ip", "minik8s-proxy"],
                           capture_output=True, text=True, timeout=10).stdout
    assert ip in table and theirs not in table


def test_no_endpoints_rejects_at_once(node, http, ns):
    net, proxy = node
    ip = service(http, ns, "empty")["spec"]["clusterIP"]
    wait_for(lambda: refused(net, "c", ip, 80), what="connection refused", timeout=20)
    t0 = time.monotonic()
    assert refused(net, "c", ip, 80)
    assert time.monotonic() - t0 < 2.5  # refused, not a 3 s connect timeout
    # a port the Service does not have is refused too
    put_slice(http, ns, "empty", endpoints(net, "p1"))
    until(net, "c", ip, 80, {"p1"})
    assert refused(net, "c", ip, 81)


def test_node_port_from_another_host_and_session_affinity(node, http, ns):
    net, proxy = node
    svc = service(http, ns, "np", type="NodePort", sessionAffinity="ClientIP")
    node_port = svc["spec"]["ports"][0]["nodePort"]
    put_slice(http, ns, "np", endpoints(net, "p1", "p2", "p3"))
    wait_for(lambda: _try(lambda: ask(net, net.out, net.node_ip, node_port)), what="NodePort answers",
             timeout=20)
    first = ask(net, net.out, net.node_ip, node_port).split()
    # externalTrafficPolicy Cluster: masqueraded (the pod sees the node, not the client)
    assert first[1] == f"{net.pod_net}.1"
    # ClientIP affinity: the same client lands on the same pod, over the ClusterIP too
    assert hits(net, net.out, net.node_ip, node_port, 10) == {first[0]}
    chosen = ask(net, "c", svc["spec"]["clusterIP"], 80).split()[0]
    assert hits(net, "c", svc["spec"]["clusterIP"], 80, 10) == {chosen}


def test_external_traffic_policy_local_keeps_the_client_address_and_reports_health(node, http, ns):
    net, proxy = node
    svc = service(http, ns, "lb", type="LoadBalancer", externalTrafficPolicy="Local")
    node_port, health_port = svc["spec"]["ports"][0]["nodePort"], svc["spec"]["healthCheckNodePort"]
    put_slice(http, ns, "lb", endpoints(net, "p1") + endpoints(net, "10.255.255.1", node="node-b"))

    def health():
        return in_netns(net.out, lambda: httpx.get(f"http://{net.node_ip}:{health_port}/", timeout=2))
    wait_for(lambda: health().status_code == 200, what="health check node port", timeout=20)
    assert health().json()["localEndpoints"] == 1
    # from outside: only this node's endpoint, and the client's own address is kept
    assert {ask(net, net.out, net.node_ip, node_port) for _ in range(8)} == {f"p1 {net.out_ip}"}
    # the load balancer's ingress IP (here the node's own, as k3s's ServiceLB hands out)
    # at the Service's port, handled like the NodePort
    current = http.get(f"/api/v1/namespaces/{ns}/services/lb").json()
    current["status"] = {"loadBalancer": {"ingress": [{"ip": net.node_ip}]}}
    r = http.put(f"/api/v1/namespaces/{ns}/services/lb/status", json=current)
    assert r.status_code == 200, r.text
    wait_for(lambda: ask(net, net.out, net.node_ip, 80) == f"p1 {net.out_ip}", what="LB IP", timeout=20)
    put_slice(http, ns, "lb", endpoints(net, "10.255.255.1", node="node-b"))
    wait_for(lambda: health().status_code == 503, what="no local endpoint reported", timeout=20)


def test_terminating_endpoints_only_when_no_ready_one(node, http, ns):
    net, proxy = node
    ip = service(http, ns, "term")["spec"]["clusterIP"]
    put_slice(http, ns, "term", endpoints(net, "p1", ready=False, serving=True, terminating=True)
              + endpoints(net, "p2"))
    until(net, "c", ip, 80, {"p2"})
    put_slice(http, ns, "term", endpoints(net, "p1", ready=False, serving=True, terminating=True)
              + endpoints(net, "p3", ready=False, serving=False, terminating=True))
    until(net, "c", ip, 80, {"p1"})


def test_internal_traffic_policy_local_and_hairpin(node, http, ns):
    net, proxy = node
    ip = service(http, ns, "itp", internalTrafficPolicy="Local")["spec"]["clusterIP"]
    # 10.255.255.1 "on another node" does not exist: a connection sent there would hang
    put_slice(http, ns, "itp", endpoints(net, "p1", "p2") + endpoints(net, "10.255.255.1", node="node-b"))
    until(net, "c", ip, 80, {"p1", "p2"})
    # hairpin: p1 reaches its own Service, lands on itself, masqueraded so the reply returns
    put_slice(http, ns, "itp", endpoints(net, "p1"))
    until(net, "p1", ip, 80, {"p1"})
    assert ask(net, "p1", ip, 80).split()[1] == f"{net.pod_net}.1"


def test_udp_flows_leave_a_removed_endpoint(node, http, ns):
    net, proxy = node
    ip = service(http, ns, "dns", ports=[{"name": "dns", "port": 53, "targetPort": 8080,
                                          "protocol": "UDP"}])["spec"]["clusterIP"]
    ports = [{"name": "dns", "port": 8080, "protocol": "UDP"}]
    put_slice(http, ns, "dns", endpoints(net, "p1"), ports=ports)
    until(net, "c", ip, 53, {"p1"}, proto="udp", sport=40053)
    # the same flow (same source port) keeps its conntrack entry until the proxy removes it
    put_slice(http, ns, "dns", endpoints(net, "p2"), ports=ports)
    until(net, "c", ip, 53, {"p2"}, proto="udp", sport=40053)


def test_restart_keeps_established_connections_and_rebuilds_rules(node, http, ns):
    net, proxy = node
    ip = service(http, ns, "keep")["spec"]["clusterIP"]
    put_slice(http, ns, "keep", endpoints(net, "p1"))
    until(net, "c", ip, 80, {"p1"})

    def conversation():
        s = socket.create_connection((ip, 80), timeout=5)
        s.sendall(b"1\n")
        f = s.makefile()
        return s, f, f.readline().split()[0]
    s, f, first = in_netns(net.ns("c"), conversation)
    text = proxy.get("/metrics").text
    for name in ("kubeproxy_sync_proxy_rules_duration_seconds_count",
                 "kubeproxy_network_programming_duration_seconds_count",
                 "kubeproxy_sync_proxy_rules_last_timestamp_seconds"):
        assert any(line.startswith(name + " ") and float(line.split()[1]) > 0 for line in text.splitlines()), name
    try:
        proxy.stop()
        put_slice(http, ns, "keep", endpoints(net, "p2"))  # changed while the proxy is down
        proxy.start()
        s.sendall(b"2\n")
        assert f.readline().split()[0] == first == "p1"   # the old connection lives on
        until(net, "c", ip, 80, {"p2"})                    # new ones follow the API
    finally:
        s.close()


def test_the_periodic_resync_repairs_a_deleted_table(node, http, ns):
    net, proxy = node
    ip = service(http, ns, "repair")["spec"]["clusterIP"]
    put_slice(http, ns, "repair", endpoints(net, "p2"))
    until(net, "c", ip, 80, {"p2"})
    sh("ip", "netns", "exec", net.node, "nft", "delete", "table", "ip", "minik8s-proxy")
    until(net, "c", ip, 80, {"p2"})        # --sync-period 2s: found missing, rewritten
    # and only this proxy's table is ever touched
    other = subprocess.run(["ip", "netns", "exec", net.node, "nft", "list", "tables"], capture_output=True,
                           text=True, timeout=10).stdout.split()
    assert other == ["table", "ip", "minik8s-proxy"]


def _try(fn) -> bool:
    try:
        fn()
        return True
    except OSError:
        return False


def test_proxy_flags_are_checked(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "proxy", "--proxy-mode", "iptables",
                        "--kubeconfig", str(tmp_path / "none")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "nftables only" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "proxy", "--nodeport-addresses", "10.0.0.0/33"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "invalid CIDR" in r.stderr

