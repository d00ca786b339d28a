"""A highly available control plane for real, on lab hosts (tests/labhost.py: a network
and a mount namespace each, their files under MINIK8S_ROOTs of their own) linked by a
bridge: `init --upload-certs` on host a; a control-plane join on host c whose API server
cannot start, rolled back to an etcd of one member and an empty host (its kubelet's
cgroup gone too); a control-plane
join on host b giving etcd two healthy members and two API servers; host a's API
server hung (SIGSTOP, by PID) while host b's serves reads and writes and the
`default/kubernetes` Endpoints drop a; then `reset` on b leaving etcd with one member.
The tests run in file order on one module-wide cluster."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from cluster import units
from cluster.layout import Layout
from kubelet.runtime.linux.cgroups import Hierarchies
from tests.labhost import LabHost, minik8s
from tests.procs import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, kubelets)")

TAG = f"{os.getpid() % 100000}"
IPS = {"a": "10.252.0.1", "b": "10.252.0.2", "c": "10.252.0.3"}
JOIN_CP = re.compile(r"minik8s join (\S+) --token (\S+) \\\n\t--discovery-token-ca-cert-hash (\S+) \\\n\t"
                     r"--control-plane --certificate-key ([0-9a-f]{64})")
MEMBERS = """
import asyncio, json, os
from cluster import etcdmembers
pki = os.environ["MINIK8S_ROOT"] + "/etc/minik8s/pki"
ms = etcdmembers.run(etcdmembers.list_members(["https://127.0.0.1:2379"], etcdmembers.TLS.from_pki(pki)))
print(json.dumps(sorted([m.name, m.is_learner] for m in ms)))
"""


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Hosts a, b and c; a's namespace holds the bridge the other two are plugged into."""
    hosts: dict[str, LabHost] = {}
    try:
        for i, name in enumerate("abc"):
            root = str(tmp_path_factory.mktemp(f"ha-{name}"))
            h = LabHost(f"10.253.{i}.1/24", root=root).start()
            h.layout, h.name, h.ip, h.node = Layout(root), name, IPS[name], f"ha-{name}-{TAG}"
            hosts[name] = h
        a = hosts["a"]
        assert a.run(["ip", "link", "add", "br0", "type", "bridge"]).returncode == 0
        for name in "bc":
            outer, inner = f"ha{name}{TAG}", f"ha{name}p{TAG}"
            _sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            _sh("ip", "link", "set", outer, "netns", str(a.holder.pid))
            _sh("ip", "link", "set", inner, "netns", str(hosts[name].holder.pid))
            for argv in (["ip", "link", "set", outer, "master", "br0"], ["ip", "link", "set", outer, "up"]):
                assert a.run(argv).returncode == 0
            h = hosts[name]
            for argv in (["ip", "link", "set", inner, "name", "lab0"],
                         ["ip", "addr", "add", f"{h.ip}/24", "dev", "lab0"], ["ip", "link", "set", "lab0", "up"]):
                assert h.run(argv).returncode == 0, argv
        for argv in (["ip", "addr", "add", f"{a.ip}/24", "dev", "br0"], ["ip", "link", "set", "br0", "up"]):
            assert a.run(argv).returncode == 0
        yield hosts
    finally:
        for h in reversed(list(hosts.values())):
            h.run(minik8s("reset", "--force"), timeout=180)
            h.stop()


def kubectl(h, *args: str, server: str | None = None):
    extra = ["--server", server] if server else []
    return h.run(["kubectl", "--kubeconfig", h.layout.admin_conf, *extra, *args], timeout=60)


def members(h) -> list[list]:
    r = h.run([sys.executable, "-c", MEMBERS], timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def tree(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)


def join_cp(lab, h):
    server, token, ca_hash, key = lab["a"].join
    return h.run(minik8s("join", server, "--token", token, "--discovery-token-ca-cert-hash", ca_hash,
                         "--control-plane", "--certificate-key", key, "--node-name", h.node,
                         "--apiserver-advertise-address", h.ip), timeout=600)


def test_init_uploads_the_certificates(lab):
    a = lab["a"]
    r = a.run(minik8s("init", "--advertise-address", a.ip, "--node-name", a.node, "--upload-certs"), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = JOIN_CP.search(r.stdout)
    assert m, r.stdout[-2000:]
    a.join = m.groups()
    assert a.join[0] == f"{a.ip}:6443"
    r = kubectl(a, "get", "secret", "-n", "kube-system", "kubeadm-certs", "-o", "json")
    assert r.returncode == 0, r.stderr
    owner = json.loads(r.stdout)["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Secret" and owner["name"].startswith("bootstrap-token-")
    assert members(a) == [[a.node, False]]


def test_a_control_plane_join_that_fails_after_member_add_rolls_back(lab):
    """c's API server cannot start (an IPv6 Service range, which it refuses): the join
    fails once the unit keeps exiting, after c was added to etcd, and takes it all back."""
    a, c = lab["a"], lab["c"]
    r = kubectl(a, "get", "configmap", "-n", "kube-system", "kubeadm-config", "-o", "json")
    cm = json.loads(r.stdout)
    good = cm["data"]["ClusterConfiguration"]
    cm["data"]["ClusterConfiguration"] = good.replace("serviceSubnet: 10.96.0.0/12", "serviceSubnet: fd00::/108")
    assert cm["data"]["ClusterConfiguration"] != good
    assert a.run(["kubectl", "--kubeconfig", a.layout.admin_conf, "replace", "-f", "-"],
                 input=json.dumps(cm)).returncode == 0
    before = tree(c.root)
    try:
        r = join_cp(lab, c)
    finally:
        cm = json.loads(kubectl(a, "get", "configmap", "-n", "kube-system", "kubeadm-config", "-o", "json").stdout)
        cm["data"]["ClusterConfiguration"] = good
        assert a.run(["kubectl", "--kubeconfig", a.layout.admin_conf, "replace", "-f", "-"],
                     input=json.dumps(cm)).returncode == 0
    assert r.returncode == 1, r.stdout[-3000:]
    assert "[etcd] Adding this host to etcd" in r.stdout
    errs = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errs) == 1 and "kube-apiserver keeps exiting" in errs[0], r.stderr
    assert "[rollback] removed etcd member" in r.stderr
    assert members(a) == [[a.node, False]]
    assert kubectl(a, "get", "node", c.node).returncode != 0  # the Node its kubelet registered is gone
    assert tree(c.root) == before
    # nor the cgroup parent its kubelet made for pods, which no later reset could find
    assert not [d for d in Hierarchies(f"minik8s-{c.node}").dirs if os.path.isdir(d)]
    assert units.supervisor_pid(c.layout) is None
    assert kubectl(a, "get", "--raw", "/readyz").returncode == 0


def test_a_second_control_plane_joins_etcd_and_serves(lab):
    a, b = lab["a"], lab["b"]
    r = join_cp(lab, b)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "A new etcd member was added" in r.stdout
    assert members(a) == sorted([[a.node, False], [b.node, False]])
    assert members(b) == members(a)
    # b's own certificates name b; the CAs are a's
    with open(os.path.join(a.layout.pki, "ca.crt")) as f1, open(os.path.join(b.layout.pki, "ca.crt")) as f2:
        assert f1.read() == f2.read()
    r = b.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
               os.path.join(b.layout.pki, "apiserver.crt")])
    assert f"IP Address:{b.ip}" in r.stdout and "IP Address:127.0.0.1" in r.stdout
    nodes = json.loads(kubectl(b, "get", "nodes", "-o", "json", server=f"https://{b.ip}:6443").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(by_name) == {a.node, b.node}
    assert "node-role.kubernetes.io/control-plane" in by_name[b.node]["metadata"]["labels"]

    def both():
        ep = json.loads(kubectl(a, "get", "endpoints", "kubernetes", "-o", "json").stdout)
        return sorted(x["ip"] for s in ep["subsets"] for x in s["addresses"]) == [a.ip, b.ip]
    wait_for(both, timeout=60, interval=0.5, what="both API servers in the kubernetes Endpoints")


def test_a_hung_api_server_leaves_the_other_serving(lab, tmp_path):
    """Also through a node-local balancer on host c, as a worker reaches the API: seeded
    with a alone, it learns b from the Endpoints and carries on through b."""
    a, b, c = lab["a"], lab["b"], lab["c"]
    with open(b.layout.admin_conf) as f:
        kc = tmp_path / "lb.conf"
        kc.write_text(re.sub(r"server: https://\S+", "server: https://127.0.0.1:6444", f.read()))
    lb = subprocess.Popen(c.command(minik8s("apiserver-lb", "--servers", f"{a.ip}:6443", "--kubeconfig", str(kc))),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=c.env())

    def through_lb(*args: str):
        return c.run(["kubectl", "--kubeconfig", str(kc), "--request-timeout", "5s", *args], timeout=60)
    wait_for(lambda: through_lb("get", "--raw", "/readyz").returncode == 0, timeout=60, what="c's balancer")
    pid = units.status(a.layout)["components"]["kube-apiserver"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        b_api = f"https://{b.ip}:6443"
        r = kubectl(b, "create", "configmap", f"ha-{TAG}", "--from-literal=k=v", server=b_api)
        assert r.returncode == 0, r.stderr
        r = kubectl(b, "get", "configmap", f"ha-{TAG}", "-o", "jsonpath={.data.k}", server=b_api)
        assert r.stdout == "v"

        def only_b():
            ep = json.loads(kubectl(b, "get", "endpoints", "kubernetes", "-o", "json", server=b_api).stdout)
            return [x["ip"] for s in ep["subsets"] for x in s["addresses"]] == [b.ip]
        # a's lease (15 s) runs out: the node-local balancers stop sending clients to it
        wait_for(only_b, timeout=60, interval=0.5, what="the Endpoints without the hung server")
        wait_for(lambda: through_lb("get", "configmap", f"ha-{TAG}", "-o", "jsonpath={.data.k}").stdout == "v",
                 timeout=60, interval=0.5, what="a read through c's balancer")
        # (a write that went to a before the balancer saw it hang is not lost: it is
        # applied when a resumes, so a retry may find it there)
        wait_for(lambda: (r := through_lb("create", "configmap", f"ha-lb-{TAG}", "--from-literal=k=v")).returncode
                 == 0 or "AlreadyExists" in r.stderr, timeout=60, interval=0.5, what="a write through c's balancer")
    finally:
        os.kill(pid, signal.SIGCONT)
        lb.terminate()
        lb.wait(15)
        lb.stderr.close()


def test_reset_on_a_control_plane_host_leaves_etcd(lab):
    a, b = lab["a"], lab["b"]
    r = b.run(minik8s("reset", "--force"), timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "WARNING: leaving the etcd cluster" not in r.stdout, r.stdout
    assert members(a) == [[a.node, False]]
    assert kubectl(a, "get", "--raw", "/readyz").returncode == 0
