"""The host plumbing of `minik8s up` (root): node network namespaces on a bridge, routes
between pod CIDRs, the cluster cgroup tree, mounts. No cluster components run here;
every test uses its own state dir, so its own bridge, namespace and cgroup names."""
import os
import random
import subprocess
import sys

import pytest
from pyroute2 import IPRoute

from cluster import host, network
from cluster.cgroups import ClusterCgroups
from cluster.state import ClusterConfig
from tests.procs import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, cgroups)")


def unique_cidrs() -> tuple[str, str]:
    """A node network and a cluster CIDR that nothing on this host uses."""
    for _ in range(100):
        a, b = random.randrange(100, 250), random.randrange(0, 256)
        node, cluster = f"10.{a}.{b}.0/24", f"172.{random.randrange(16, 32)}.0.0/16"
        if not network.overlapping_routes(node, cluster):
            return node, cluster
    raise RuntimeError("no free address range")


@pytest.fixture
def cfg(tmp_path):
    node_cidr, cluster_cidr = unique_cidrs()
    c = ClusterConfig(state_dir=str(tmp_path), nodes=3, node_cidr=node_cidr, cluster_cidr=cluster_cidr)
    yield c
    network.teardown(c)
    ClusterCgroups(c.cgroup_name).remove()


def in_ns(cfg, node, *argv, **kw):
    return subprocess.run(["ip", "netns", "exec", cfg.netns(node), *argv], capture_output=True,
                          text=True, timeout=30, **kw)


SERVE = ("import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
         "s.bind((sys.argv[1], 8080)); s.listen(); print('listening', flush=True); c, a = s.accept(); "
         "c.sendall(('hello from ' + sys.argv[1] + ' to ' + a[0]).encode()); c.close()")
CONNECT = ("import socket, sys; s = socket.create_connection((sys.argv[1], 8080), timeout=5); "
           "print(s.recv(100).decode())")


def serve(cfg, node, ip):
    p = subprocess.Popen(["ip", "netns", "exec", cfg.netns(node), sys.executable, "-c", SERVE, ip],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "listening"
    return p


def test_nodes_are_hosts_on_one_network(cfg):
    network.ensure_network(cfg)
    network.ensure_network(cfg)  # idempotent: a restarted supervisor finds it made
    for node in cfg.node_names():
        r = in_ns(cfg, node, "ip", "-4", "-o", "addr", "show", "eth0")
        assert f"{cfg.node_ip(node)}/24" in r.stdout
        assert in_ns(cfg, node, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
        assert f"default via {cfg.host_ip}" in in_ns(cfg, node, "ip", "route").stdout
    server = serve(cfg, "node-3", cfg.node_ip("node-3"))
    r = in_ns(cfg, "node-1", sys.executable, "-c", CONNECT, cfg.node_ip("node-3"))
    server.wait(10)
    assert r.stdout.strip() == f"hello from {cfg.node_ip('node-3')} to {cfg.node_ip('node-1')}", r.stderr
    # the host reaches the nodes on the bridge (the API server listens there)
    server = serve(cfg, "node-2", cfg.node_ip("node-2"))
    r = subprocess.run([sys.executable, "-c", CONNECT, cfg.node_ip("node-2")], capture_output=True, text=True)
    server.wait(10)
    assert r.stdout.strip() == f"hello from {cfg.node_ip('node-2')} to {cfg.host_ip}"


def _node(name, cidr, ip):
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def test_desired_routes_from_node_objects(cfg):
    pod = cfg.cluster_cidr.rsplit(".", 2)[0]
    nodes = [_node("node-1", f"{pod}.1.0/24", cfg.node_ip("node-1")),
             _node("node-2", None, cfg.node_ip("node-2")),                 # no CIDR yet
             _node("node-3", f"{pod}.3.0/24", cfg.node_ip("node-3")),
             _node("elsewhere", f"{pod}.9.0/24", "192.0.2.99")]            # not on our network
    want = network.desired_routes(cfg, nodes)
    assert want[None] == {f"{pod}.1.0/24": cfg.node_ip("node-1"), f"{pod}.3.0/24": cfg.node_ip("node-3")}
    assert want["node-1"] == {f"{pod}.3.0/24": cfg.node_ip("node-3")}
    assert want["node-2"] == want[None]
    assert want["node-3"] == {f"{pod}.1.0/24": cfg.node_ip("node-1")}


def test_pod_cidrs_are_routed_across_nodes(cfg):
    """A stand-in for node-3's pod bridge (a bridge holding an address of its pod
    CIDR) is reached from node-1 once routes are synced from the Node objects."""
    network.ensure_network(cfg)
    pod = cfg.cluster_cidr.rsplit(".", 2)[0]
    target = f"{pod}.3.1"
    with IPRoute(netns=network.netns_path(cfg.netns("node-3"))) as ns:
        ns.link("add", ifname="pods0", kind="bridge")
        idx = ns.link_lookup(ifname="pods0")[0]
        ns.addr("add", index=idx, address=target, prefixlen=24)
        ns.link("set", index=idx, state="up")
    nodes = [_node(n, f"{pod}.{cfg.node_index(n)}.0/24", cfg.node_ip(n)) for n in cfg.node_names()]
    from cluster.routes import sync
    sync(cfg, nodes)
    assert f"{pod}.3.0/24 via {cfg.node_ip('node-3')}" in in_ns(cfg, "node-1", "ip", "route").stdout
    assert f"{pod}.3.0/24 via" not in in_ns(cfg, "node-3", "ip", "route").stdout  # its own
    server = serve(cfg, "node-3", target)
    r = in_ns(cfg, "node-1", sys.executable, "-c", CONNECT, target)
    server.wait(10)
    assert r.stdout.strip() == f"hello from {target} to {cfg.node_ip('node-1')}", r.stderr
    # a node going away takes its routes with it; a route we do not own stays
    in_ns(cfg, "node-1", "ip", "route", "add", "192.0.2.128/25", "via", cfg.host_ip)
    sync(cfg, nodes[:2])
    routes = in_ns(cfg, "node-1", "ip", "route").stdout
    assert f"{pod}.3.0/24" not in routes and f"{pod}.2.0/24 via {cfg.node_ip('node-2')}" in routes
    assert "192.0.2.128/25" in routes
    with IPRoute() as ipr:
        mine = [r for r in ipr.get_routes(family=2, proto=network.RTPROT_MINIK8S)
                if r.get("gateway", "").startswith(cfg.node_cidr.rsplit(".", 1)[0] + ".")]
        assert sorted(r.get("dst") for r in mine) == [f"{pod}.1.0", f"{pod}.2.0"]


def test_teardown_leaves_nothing(cfg):
    network.ensure_network(cfg)
    from cluster.routes import sync
    pod = cfg.cluster_cidr.rsplit(".", 2)[0]
    sync(cfg, [_node(n, f"{pod}.{cfg.node_index(n)}.0/24", cfg.node_ip(n)) for n in cfg.node_names()])
    assert network.leftovers(cfg)
    network.teardown(cfg)
    assert network.leftovers(cfg) == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert cfg.bridge not in links
    assert not any(n.startswith(cfg.netns_prefix) for n in os.listdir(network.NETNS_DIR)) \
        if os.path.isdir(network.NETNS_DIR) else True


def test_overlapping_ranges_are_found(cfg):
    network.ensure_bridge(cfg)
    assert network.overlapping_routes(cfg.node_cidr)
    assert network.overlapping_routes(cfg.node_cidr, ignore_link=cfg.bridge) == []


def test_cgroup_tree_holds_and_kills_everything(cfg):
    cg = ClusterCgroups(cfg.cgroup_name)
    dirs = cg.ensure("node-1/kubelet")
    assert all(os.path.isdir(d) for d in dirs)
    from cluster import cgroups
    p = subprocess.Popen([sys.executable, "-c",
                          "import os, time; os.fork(); os.setsid(); time.sleep(600)"],
                         preexec_fn=lambda: cgroups.join(dirs))
    wait_for(lambda: len(cg.pids()) == 2, what="the process and its child in the tree")
    assert p.pid in cg.pids()
    assert cg.remove()
    p.wait(5)
    assert not cg.exists() and cg.pids() == []


def test_unmount_everything_under_a_dir(tmp_path):
    a, b = tmp_path / "nodes" / "a", tmp_path / "nodes" / "a" / "b"
    a.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "t1", str(a)], check=True)
    b.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "t2", str(b)], check=True)
    assert host.mounts_under(str(tmp_path / "nodes")) == [str(b), str(a)]
    host.unmount_all(str(tmp_path / "nodes"))
    assert host.mounts_under(str(tmp_path)) == []
