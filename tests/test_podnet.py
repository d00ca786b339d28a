"""The pod network across hosts (`minik8s podnet`, root): three "hosts" as network
namespaces, A and B on one bridge subnet, C on a second subnet behind a router namespace
(forwarding on), so only VXLAN reaches C from A. In each host, a pod network made by the
kubelet's own code (kubelet/runtime/linux/network.PodNetwork: the bridge with the podCIDR
gateway, a pod namespace on a veth pair with the MTU of the agent's subnet file). Nodes
are real objects in a real API server; each host runs a real `minik8s podnet` process with
its node's own credentials, reaching the API server through a relay that listens on
127.0.0.1 inside the host namespace. Everything made is removed, even when a test fails.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid

import pytest

from cluster import network
from cluster import pki as cluster_pki
from cluster.network import RTPROT_MINIK8S
from cluster.podnet import peer_of
from kubelet.runtime.linux.network import PodNetwork
from tests.procs import APIServer, Etcd, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, netlink)")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODES = ("pn-a", "pn-b", "pn-c")


# -- the API server, reachable from inside the hosts --------------------------------------

def start_server(pki_dir: str) -> tuple[Etcd, APIServer]:
    """An etcd and API server of their own, with a PKI (made in pki_dir) holding each
    node's client certificate, and the binding `minik8s init` makes so that nodes may list
    and watch Nodes."""
    cluster_pki.ensure(pki_dir, cluster_pki.ClusterFacts(
        control_plane_name="localhost", nodes=tuple(cluster_pki.Node(n) for n in NODES)))
    e = Etcd().start()
    try:
        s = APIServer(e.url, pki_dir=pki_dir).start()
    except BaseException:
        e.stop()
        raise
    with s.client() as c:
        r = c.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json={
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "minik8s:node-proxier"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:node-proxier"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]})
        assert r.status_code == 201, r.text
    return e, s


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    e, s = start_server(str(tmp_path_factory.mktemp("pki")))
    yield s
    s.stop()
    e.stop()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class Relay:
    """127.0.0.1:<port> inside a network namespace, spliced to 127.0.0.1:<port> here: the
    listening socket is made in the namespace (by a thread that enters it); the upstream
    connections are made by threads that never leave this one."""

    def __init__(self, netns_path: str, port: int):
        self.port = port
        made: list[socket.socket] = []

        def listen() -> None:
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            s.listen(16)
            made.append(s)
        network._in_netns(netns_path, listen)
        self.listener = made[0]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.port))
            except OSError:
                conn.close()
                continue
            self.conns += [conn, up]
            threading.Thread(target=_pump, args=(conn, up), daemon=True).start()
            threading.Thread(target=_pump, args=(up, conn), daemon=True).start()

    def close(self) -> None:
        self.listener.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


# -- the hosts ------------------------------------------------------------------------------

def ip(*argv: str) -> str:
    r = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"ip {' '.join(argv)}: {r.stderr}"
    return r.stdout


def in_ns(ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)


class Host:
    def __init__(self, lab: Lab, node: str, ns: str, addr: str, pod_cidr: str):
        self.lab, self.node, self.ns, self.addr, self.pod_cidr = lab, node, ns, addr, pod_cidr
        self.dir = os.path.join(lab.dir, node)
        os.makedirs(self.dir)
        self.subnet_file = os.path.join(self.dir, "subnet.env")
        self.agent: subprocess.Popen | None = None
        self.pod_ns = f"{ns}-pod"
        self.pod_proc: subprocess.Popen | None = None
        self.pod_ip: str | None = None
        self.log = os.path.join(self.dir, "podnet.log")

    @property
    def path(self) -> str:
        return network.netns_path(self.ns)

    def start_agent(self, backend: str, *extra: str) -> None:
        kubeconfig = self.lab.server.write_kubeconfig(os.path.join(self.dir, "kubeconfig"),
                                                      f"kubelets/{self.node}/kubelet-client")
        with open(self.log, "ab") as out:
            self.agent = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "cluster.cli", "podnet",
                 "--kubeconfig", kubeconfig, "--node-name", self.node, "--backend", backend,
                 "--subnet-file", self.subnet_file, "-v", "2", *extra],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    def agent_log(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()[-4000:]

    def stop_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()

    def cleanup_agent(self) -> subprocess.CompletedProcess:
        return in_ns(self.ns, sys.executable, "-m", "cluster.cli", "podnet", "--cleanup",
                     "--subnet-file", self.subnet_file)

    def add_pod(self) -> str:
        """A pod: a namespace holding a sleeping process, plugged in by PodNetwork (the
        kubelet's code) from inside the host."""
        ip("netns", "add", self.pod_ns)
        self.pod_proc = subprocess.Popen(["ip", "netns", "exec", self.pod_ns, "sleep", "600"])
        want = os.stat(network.netns_path(self.pod_ns)).st_ino
        wait_for(lambda: os.stat(f"/proc/{self.pod_proc.pid}/ns/net").st_ino == want, what="pod process")
        pods = PodNetwork(bridge="mkpods", cidr=self.pod_cidr, state_dir=self.dir, subnet_file=self.subnet_file)
        got: list[str] = []
        network._in_netns(self.path, lambda: got.append(pods.attach(uuid.uuid4().hex, self.pod_proc.pid)))
        self.pod_ip = got[0]
        return self.pod_ip

    def pod(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return in_ns(self.pod_ns, *argv, timeout=timeout)

    def routes(self) -> dict[str, str]:
        """Our routes here: {dst: 'via GW dev DEV [onlink]'}."""
        out = {}
        for line in ip("-n", self.ns, "-4", "route", "show", "proto", str(RTPROT_MINIK8S)).splitlines():
            dst, _, rest = line.strip().partition(" ")
            out[dst] = rest.strip()
        return out

    def fdb(self) -> str:
        r = subprocess.run(["bridge", "-n", self.ns, "fdb", "show", "dev", "minik8s.1"],
                           capture_output=True, text=True)
        return r.stdout

    def neigh(self) -> str:
        r = subprocess.run(["ip", "-n", self.ns, "neigh", "show", "dev", "minik8s.1"],
                           capture_output=True, text=True)
        return r.stdout

    def remove_pod(self) -> None:
        if self.pod_proc is not None:
            self.pod_proc.kill()
            self.pod_proc.wait()
            self.pod_proc = self.pod_ip = None
        subprocess.run(["ip", "netns", "del", self.pod_ns], capture_output=True)

    def remove(self) -> None:
        self.stop_agent()
        self.remove_pod()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


class Lab:
    """A router namespace holding the bridge of subnet 1 (A at .2, B at .3) and a veth to
    subnet 2 (C at .2), each host with a default route via the router's .1."""

    def __init__(self, server: APIServer):
        self.server = server
        self.id = uuid.uuid4().hex[:6]
        self.dir = tempfile.mkdtemp(prefix="minik8s-podnet-")
        x, y = random.sample(range(100, 250), 2)     # distinct: the hosts' subnets and the pods'
        self.subnet1, self.subnet2 = f"10.{x}.1", f"10.{x}.2"
        self.cluster = f"10.{y}"
        self.router = f"pn{self.id}-r"
        self.hosts: dict[str, Host] = {}
        self.relays: list[Relay] = []

    def build(self) -> Lab:
        r = self.router
        ip("netns", "add", r)
        ip("-n", r, "link", "set", "lo", "up")
        ip("-n", r, "link", "add", "br0", "type", "bridge")
        ip("-n", r, "addr", "add", f"{self.subnet1}.1/24", "dev", "br0")
        ip("-n", r, "link", "set", "br0", "up")
        assert in_ns(r, "sysctl", "-qw", "net.ipv4.ip_forward=1").returncode == 0
        plan = [("pn-a", "a", f"{self.subnet1}.2", 1), ("pn-b", "b", f"{self.subnet1}.3", 1),
                ("pn-c", "c", f"{self.subnet2}.2", 2)]
        for i, (node, short, addr, subnet) in enumerate(plan, 1):
            ns = f"pn{self.id}-{short}"
            host = self.hosts[short] = Host(self, node, ns, addr, f"{self.cluster}.{i}.0/24")
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{short}", "netns", r)
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            if subnet == 1:
                ip("-n", r, "link", "set", f"v{short}", "master", "br0", "up")
                gw = f"{self.subnet1}.1"
            else:
                ip("-n", r, "addr", "add", f"{self.subnet2}.1/24", "dev", f"v{short}")
                ip("-n", r, "link", "set", f"v{short}", "up")
                gw = f"{self.subnet2}.1"
            ip("-n", ns, "route", "add", "default", "via", gw)
            self.relays.append(Relay(host.path, self.server.port))
        return self

    def create_node(self, host: Host, *, pod_cidr: bool = True) -> None:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": host.node},
                "spec": {"podCIDR": host.pod_cidr} if pod_cidr else {},
                "status": {"addresses": [{"type": "InternalIP", "address": host.addr}]}}
        with self.server.client() as c:
            r = c.post("/api/v1/nodes", json=node)
            assert r.status_code == 201, r.text
            if not r.json().get("status", {}).get("addresses"):
                r = c.patch(f"/api/v1/nodes/{host.node}/status", json={"status": node["status"]},
                            headers={"content-type": "application/merge-patch+json"})
                assert r.status_code == 200, r.text

    def get_node(self, name: str) -> dict:
        with self.server.client() as c:
            r = c.get(f"/api/v1/nodes/{name}")
            assert r.status_code == 200, r.text
            return r.json()

    def delete_node(self, name: str) -> None:
        with self.server.client() as c:
            r = c.delete(f"/api/v1/nodes/{name}")
            assert r.status_code in (200, 404), r.text

    def teardown(self) -> None:
        for relay in self.relays:
            relay.close()
        for host in self.hosts.values():
            host.remove()
        subprocess.run(["ip", "netns", "del", self.router], capture_output=True)
        for name in NODES:
            self.delete_node(name)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def lab(server):
    lab = Lab(server)
    try:
        yield lab.build()
    finally:
        lab.teardown()


def start(lab: Lab, backend: str, *extra: str, pods: bool = True) -> None:
    """Nodes, one agent per host, then (once each agent wrote its subnet file) a pod each."""
    for host in lab.hosts.values():
        lab.create_node(host)
        host.start_agent(backend, *extra)
    for host in lab.hosts.values():
        wait_for(lambda h=host: os.path.exists(h.subnet_file) or h.agent.poll() is not None,
                 what=f"{host.node}'s subnet file")
        assert host.agent.poll() is None, host.agent_log()
        if pods:
            host.add_pod()


# ping(8) by hand (the test machine has no ping): one ICMP echo of SIZE payload bytes with
# Don't Fragment set, so a reply proves a packet of SIZE + 28 bytes went through whole.
PING = """
import os, socket, struct, sys
dst, size = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER, IP_PMTUDISC_DO: Don't Fragment
s.settimeout(1)
ident, payload = os.getpid() & 0xFFFF, b"x" * size
def checksum(b):
    b += b"\\0" * (len(b) % 2)
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    n = (n >> 16) + (n & 0xFFFF)
    return ~(n + (n >> 16)) & 0xFFFF
head = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
s.sendto(struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, 1) + payload, (dst, 0))
while True:
    data, (src, _) = s.recvfrom(65535)
    if src == dst and data[20] == 0 and struct.unpack("!H", data[24:26])[0] == ident:
        sys.exit(0 if len(data) - 28 == size else 2)
"""


def ping(src: Host, dst_ip: str, size: int = 56) -> bool:
    """An ICMP echo from src's pod to dst_ip, with Don't Fragment, answered within 1 s."""
    return src.pod(sys.executable, "-c", PING, dst_ip, str(size)).returncode == 0


def reaches(src: Host, dst: Host) -> bool:
    return ping(src, dst.pod_ip)


# A receiver that answers with the number of bytes it got, and a sender of N bytes in
# full-size writes: with the wrong MTU in a tunnel, large segments would be lost.
RECEIVE = ("import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
           "s.bind((sys.argv[1], 9000)); s.listen(); print('listening', flush=True); c, _ = s.accept(); n = 0\n"
           "while (d := c.recv(65536)): n += len(d)\n"
           "c.close(); print(n, flush=True)")
SEND = ("import socket, sys; s = socket.create_connection((sys.argv[1], 9000), timeout=10); "
        "s.sendall(b'x' * int(sys.argv[2])); s.close()")


def tcp_transfer(src: Host, dst: Host, size: int) -> int:
    rx = subprocess.Popen(["ip", "netns", "exec", dst.pod_ns, sys.executable, "-c", RECEIVE, dst.pod_ip],
                          stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "listening"
        r = src.pod(sys.executable, "-c", SEND, dst.pod_ip, str(size))
        assert r.returncode == 0, r.stderr
        return int(rx.stdout.readline().strip())
    finally:
        rx.kill()
        rx.wait()


# -- tests -----------------------------------------------------------------------------------

def test_vxlan_reaches_a_host_behind_a_router(lab):
    a, b, c = lab.hosts["a"], lab.hosts["b"], lab.hosts["c"]
    start(lab, "vxlan")
    # Each agent publishes its VTEP on its Node, with flannel's annotation names.
    for host in (a, b, c):
        wait_for(lambda h=host: "minik8s.io/backend-data" in (lab.get_node(h.node)["metadata"].get("annotations")
                                                              or {}),
                 what=f"{host.node}'s annotations")
        ann = lab.get_node(host.node)["metadata"]["annotations"]
        assert ann["minik8s.io/backend-type"] == "vxlan"
        assert ann["minik8s.io/public-ip"] == host.addr
        mac = json.loads(ann["minik8s.io/backend-data"])["VtepMAC"]
        link = ip("-n", host.ns, "-d", "link", "show", "minik8s.1")
        assert mac in link and "mtu 1450" in link, link
        assert "vxlan id 1" in link and f"local {host.addr}" in link and "dstport 8472" in link, link
        assert "nolearning" in link, link
        assert f"{host.pod_cidr.split('/')[0]}/32" in ip("-n", host.ns, "-4", "addr", "show", "minik8s.1")
        assert in_ns(host.ns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
        with open(host.subnet_file) as f:
            assert "MINIK8S_MTU=1450" in f.read()
        # the pod got the tunnel's MTU from the subnet file, through the kubelet's code
        assert "mtu 1450" in host.pod("ip", "link", "show", "eth0").stdout
    c_vtep = c.pod_cidr.split("/")[0]
    c_mac = json.loads(lab.get_node(c.node)["metadata"]["annotations"]["minik8s.io/backend-data"])["VtepMAC"]
    wait_for(lambda: c.pod_cidr in a.routes(), what="A's route to C's pods")
    assert a.routes()[c.pod_cidr] == f"via {c_vtep} dev minik8s.1 onlink", a.routes()
    assert f"{c_mac} dst {c.addr}" in a.fdb()
    assert f"{c_vtep} lladdr {c_mac} PERMANENT" in a.neigh()
    # A's pod reaches C's pod behind the router, by pod IP, with full-size packets
    wait_for(lambda: reaches(a, c), timeout=20, what="ping from A's pod to C's pod")
    assert ping(a, c.pod_ip, 1450 - 28)
    assert tcp_transfer(a, c, 4 << 20) == 4 << 20
    assert reaches(b, c) and reaches(c, a)
    # A Node deleted: its route, FDB and neighbour entries vanish on the others.
    lab.delete_node(c.node)
    for host in (a, b):
        wait_for(lambda h=host: c.pod_cidr not in h.routes() and c_mac not in h.fdb() and c_vtep not in h.neigh(),
                 what=f"{host.node} forgetting {c.node}")
    assert not reaches(a, c)
    assert b.pod_cidr in a.routes()  # the others stay
    # A Node (re)created: its agent publishes again, and the others route to it again.
    lab.create_node(c)
    wait_for(lambda: c.pod_cidr in a.routes() and c.pod_cidr in b.routes(), what="routes to the new node")
    wait_for(lambda: reaches(a, c), timeout=20, what="ping after the node came back")
    # --cleanup removes the device, our routes and the subnet file; a second time does nothing.
    a.stop_agent()
    r = a.cleanup_agent()
    assert r.returncode == 0, r.stderr
    assert "minik8s.1" not in ip("-n", a.ns, "link")
    assert a.routes() == {} and not os.path.exists(a.subnet_file)
    assert f"default via {lab.subnet1}.1" in ip("-n", a.ns, "route")  # not ours: kept
    assert a.cleanup_agent().returncode == 0


def test_host_gw_routes_between_hosts_on_one_link(lab):
    a, b, c = lab.hosts["a"], lab.hosts["b"], lab.hosts["c"]
    # B forwards nothing by default (Docker's policy): its agent accepts its pods' traffic.
    assert in_ns(b.ns, "iptables", "-w", "-P", "FORWARD", "DROP").returncode == 0
    start(lab, "host-gw")
    for host in (a, b, c):
        with open(host.subnet_file) as f:
            assert "MINIK8S_MTU=1500" in f.read()
        assert "minik8s.1" not in ip("-n", host.ns, "link")
    wait_for(lambda: b.pod_cidr in a.routes() and a.pod_cidr in b.routes(), what="host-gw routes")
    assert a.routes()[b.pod_cidr] == f"via {b.addr} dev eth0", a.routes()
    assert reaches(a, b) and reaches(b, a)
    assert tcp_transfer(b, a, 1 << 20) == 1 << 20
    rules = in_ns(b.ns, "iptables", "-w", "-S", "FORWARD").stdout
    assert f"-A FORWARD -d {b.pod_cidr}" in rules and f"-A FORWARD -s {b.pod_cidr}" in rules, rules
    assert "-A FORWARD" not in in_ns(a.ns, "iptables", "-w", "-S", "FORWARD").stdout  # no DROP there: nothing added
    # C is behind a router: refused, with a log line and a Warning event on the Node.
    wait_for(lambda: f"node {c.node} refused" in a.agent_log(), what="A refusing C")
    assert c.pod_cidr not in a.routes() and a.pod_cidr not in c.routes()
    with lab.server.client() as cl:
        def refusal() -> list:
            events = cl.get("/api/v1/namespaces/default/events").json()["items"]
            return [e for e in events if e["involvedObject"]["name"] == a.node and e["reason"] == "PeerNotRoutable"
                    and c.node in e["message"]]
        wait_for(refusal, what="the PeerNotRoutable event")
        assert "use --backend vxlan" in refusal()[0]["message"]
    # B goes away: A's route to it goes; a route someone else made stays.
    ip("-n", a.ns, "route", "add", "192.0.2.0/24", "via", b.addr)
    lab.delete_node(b.node)
    wait_for(lambda: b.pod_cidr not in a.routes(), what="A forgetting B")
    assert "192.0.2.0/24 via" in ip("-n", a.ns, "route")

    # --cleanup on B removes its FORWARD rules (the policy is not ours: it stays).
    b.stop_agent()
    assert b.cleanup_agent().returncode == 0
    rules = in_ns(b.ns, "iptables", "-w", "-S", "FORWARD").stdout
    assert "-A FORWARD" not in rules and "-P FORWARD DROP" in rules, rules
    assert not reaches(a, b)


def test_vxlan_direct_routing_uses_the_shared_link(lab):
    a, b, c = lab.hosts["a"], lab.hosts["b"], lab.hosts["c"]
    port = 10200 + random.randrange(500)
    lab.create_node(a)
    a.start_agent("vxlan", "--direct-routing", "--healthz-bind-address", f"127.0.0.1:{port}")
    lab.create_node(b)
    b.start_agent("vxlan", "--direct-routing")
    # C's Node has no pod CIDR yet: its agent waits for node IPAM to give it one.
    lab.create_node(c, pod_cidr=False)
    c.start_agent("vxlan", "--direct-routing")
    wait_for(lambda: "to get a spec.podCIDR" in c.agent_log(), what="C's agent waiting")
    assert not os.path.exists(c.subnet_file) and "minik8s.1" not in ip("-n", c.ns, "link")
    with lab.server.client() as cl:
        r = cl.patch(f"/api/v1/nodes/{c.node}", json={"spec": {"podCIDR": c.pod_cidr}},
                     headers={"content-type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text
    for host in (a, b, c):
        wait_for(lambda h=host: os.path.exists(h.subnet_file), what=f"{host.node}'s subnet file")
        host.add_pod()
    wait_for(lambda: b.pod_cidr in a.routes() and c.pod_cidr in a.routes(), what="A's routes")
    assert a.routes()[b.pod_cidr] == f"via {b.addr} dev eth0", a.routes()  # same link: host-gw
    assert a.routes()[c.pod_cidr] == f"via {c.pod_cidr.split('/')[0]} dev minik8s.1 onlink", a.routes()
    b_mac = json.loads(lab.get_node(b.node)["metadata"]["annotations"]["minik8s.io/backend-data"])["VtepMAC"]
    assert b_mac not in a.fdb() and c.addr in a.fdb()
    wait_for(lambda: reaches(a, b) and reaches(a, c) and reaches(c, b), timeout=20, what="pods reaching each other")
    health = ("import sys, urllib.request; print(urllib.request.urlopen("
              "'http://127.0.0.1:%s/healthz?verbose').read().decode())" % port)
    r = in_ns(a.ns, sys.executable, "-c", health)
    assert r.returncode == 0 and "[+]podnet ok" in r.stdout, r.stdout + r.stderr
    metrics = health.replace("/healthz?verbose", "/metrics")
    r = in_ns(a.ns, sys.executable, "-c", metrics)
    assert 'podnet_peers{state="routed"} 2.0' in r.stdout and 'podnet_syncs_total{result="success"}' in r.stdout, \
        r.stdout[-2000:] + r.stderr
    # C's device deleted behind its agent's back: the next sync (here on a Node change)
    # makes it again, publishes its new VTEP MAC, and A's FDB follows.
    old_mac = json.loads(lab.get_node(c.node)["metadata"]["annotations"]["minik8s.io/backend-data"])["VtepMAC"]
    ip("-n", c.ns, "link", "del", "minik8s.1")
    with lab.server.client() as cl:
        r = cl.patch(f"/api/v1/nodes/{b.node}", json={"metadata": {"labels": {"poke": "1"}}},
                     headers={"content-type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text

    def new_mac() -> str | None:
        data = lab.get_node(c.node)["metadata"]["annotations"]["minik8s.io/backend-data"]
        mac = json.loads(data)["VtepMAC"]
        return mac if mac != old_mac else None
    mac = wait_for(new_mac, what="C's new VTEP MAC")
    wait_for(lambda: f"{mac} dst {c.addr}" in a.fdb(), what="A's FDB entry for C's new VTEP")
    wait_for(lambda: reaches(a, c), timeout=20, what="A's pod reaching C's pod again")


def test_bad_flags_are_one_line_errors(server, tmp_path):
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", "kubelets/pn-a/kubelet-client")
    for argv, want in [
        (["--kubeconfig", kubeconfig, "--node-name", "pn-a", "--iface", "nosuch0"],
         "error: --iface nosuch0: no such interface or address on this host"),
        (["--kubeconfig", str(tmp_path / "missing"), "--node-name", "pn-a"], "error: kubeconfig "),
        (["--node-name", "pn-a"], "error: --kubeconfig and --node-name are required"),
    ]:
        r = subprocess.run([sys.executable, "-m", "cluster.cli", "podnet", *argv], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stderr.startswith(want) and len(r.stderr.splitlines()) == 1, r.stderr
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "podnet", "--backend", "udp"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "invalid choice: 'udp'" in r.stderr


@pytest.mark.parametrize("node, want", [
    ({"metadata": {"name": "n", "annotations": {
        "minik8s.io/public-ip": "192.0.2.7", "minik8s.io/backend-type": "vxlan",
        "minik8s.io/backend-data": '{"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"}'}},
      "spec": {"podCIDR": "10.244.3.0/24"},
      "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.3"}]}},
     ("n", "10.244.3.0/24", "192.0.2.7", "vxlan", "aa:bb:cc:dd:ee:ff")),
    # no agent there yet: its InternalIP, no backend, no VTEP
    ({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.3.0/24"},
      "status": {"addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "10.0.0.3"}]}},
     ("n", "10.244.3.0/24", "10.0.0.3", None, None)),
    # garbage in backend-data is no VTEP, not a crash
    ({"metadata": {"name": "n", "annotations": {"minik8s.io/backend-data": "{not json"}},
      "spec": {"podCIDR": "10.244.3.0/24"}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.3"}]}},
     ("n", "10.244.3.0/24", "10.0.0.3", None, None)),
    ({"metadata": {"name": "n"}, "spec": {}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.3"}]}},
     None),  # no pod CIDR yet
    ({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.3.0/24"}}, None),  # no address
    ({"metadata": {"name": "n", "annotations": {"minik8s.io/public-ip": "not-an-ip"}},
      "spec": {"podCIDR": "10.244.3.0/24"}}, None),
])
def test_peer_of_reads_what_agents_publish(node, want):
    got = peer_of(node)
    assert (tuple(got) if got else None) == want
