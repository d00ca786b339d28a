"""The cluster DNS addon on a `minik8s up` cluster (root): kubeadm's CoreDNS objects in
kube-system (cluster/addons.py), the `coredns` Deployment becoming ready with its
ServiceAccount's in-cluster configuration, and a DNS pod answering, from inside a node,
the name of the `kubernetes` Service. Kubelets give ClusterFirst pods the cluster DNS
address. (Reaching the DNS through the kube-dns ClusterIP needs the service proxy.)"""
import os
import subprocess
import sys

import pytest

from cluster import addons, bringup
from cluster.network import netns_path
from cluster.state import ClusterConfig
from kubelet.images import HOST_ROOT_IMAGE
from tests.procs import free_port, wait_for
from tests.test_cluster import COMPONENT_MODULES, Cluster, dump_logs
from tests.test_cluster_cli import minik8s
from tests.test_cluster_network import unique_cidrs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the linux runtime needs root"),
    pytest.mark.skipif(any(__import__("importlib").util.find_spec(m) is None for m in COMPONENT_MODULES),
                       reason="a component is missing"),
]

QUERY = """
import sys, dns.message, dns.query, dns.rdatatype
q = dns.message.make_query(sys.argv[2], "A")
r = dns.query.udp(q, sys.argv[1], timeout=5)
print(dns.rcode.to_text(r.rcode()), " ".join(sorted(rd.address for rrs in r.answer for rd in rrs
                                                    if rrs.rdtype == dns.rdatatype.A)))
"""


def _up(tmp_path_factory, *flags: str):
    state = str(tmp_path_factory.mktemp("cluster"))
    node_cidr, cluster_cidr = unique_cidrs()
    r = minik8s("up", "--state-dir", state, "--port", str(free_port()),
                "--node-cidr", node_cidr, "--cluster-cidr", cluster_cidr, *flags, timeout=240)
    cfg = ClusterConfig.load(state)
    try:
        assert r.returncode == 0, r.stdout + r.stderr + (dump_logs(cfg) if cfg else "")
        c = Cluster(cfg, str(tmp_path_factory.mktemp("kubectl-cache")))
        c.up_output = r.stdout
        yield c
    finally:
        if cfg is not None:
            minik8s("down", "--state-dir", state, timeout=180)
            bringup.cleanup(cfg)


@pytest.fixture(scope="module")
def cluster(upcluster):
    """The package's three-node cluster (tests/upcluster/conftest.py)."""
    return upcluster


def wait_coredns_ready(cluster) -> list[dict]:
    """The coredns pods, once the Deployment has all its replicas ready."""
    api = cluster.api

    def ready():
        d = api.get("/apis/apps/v1/namespaces/kube-system/deployments/coredns").json()
        return (d.get("status") or {}).get("readyReplicas") == addons.REPLICAS
    pods = lambda: api.get("/api/v1/namespaces/kube-system/pods",  # noqa: E731
                           params={"labelSelector": "k8s-app=kube-dns"}).json()["items"]
    try:
        wait_for(ready, timeout=180, what="coredns ready")
    except TimeoutError:
        logs = [api.get(f"/api/v1/namespaces/kube-system/pods/{p['metadata']['name']}/log").text[-2000:]
                for p in pods()]
        raise AssertionError(f"{[p.get('status') for p in pods()]}\n{logs}\n{dump_logs(cluster.cfg)}") from None
    return pods()


def ask(cluster, node: str, server: str, name: str) -> list[str]:
    """A query from inside the node's network namespace: [rcode, addresses...]."""
    r = subprocess.run(["nsenter", f"--net={netns_path(cluster.cfg.netns(node))}", sys.executable, "-c",
                        QUERY, server, name], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_up_creates_the_dns_addon_objects(cluster):
    assert "coredns" in cluster.up_output and "10.96.0.10" in cluster.up_output
    api = cluster.api
    svc = api.get("/api/v1/namespaces/kube-system/services/kube-dns").json()
    assert svc["spec"]["clusterIP"] == "10.96.0.10"
    assert [(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]] == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]
    assert svc["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert api.get("/api/v1/namespaces/kube-system/serviceaccounts/coredns").status_code == 200
    role = api.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/system:coredns").json()
    assert {"endpoints", "services", "pods", "namespaces", "endpointslices"} == {
        r for rule in role["rules"] for r in rule["resources"]}
    binding = api.get("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:coredns").json()
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]
    spec = api.get("/apis/apps/v1/namespaces/kube-system/deployments/coredns").json()["spec"]["template"]["spec"]
    assert spec["dnsPolicy"] == "Default" and spec["serviceAccountName"] == "coredns"
    assert spec["containers"][0]["image"] == HOST_ROOT_IMAGE


def test_coredns_becomes_ready_and_answers_from_a_node(cluster):
    for p in wait_coredns_ready(cluster):
        ip, node = p["status"]["podIP"], p["spec"]["nodeName"]
        # from the other node too: pods are reached across nodes by their IP
        for n in cluster.cfg.node_names():
            assert ask(cluster, n, ip, "kubernetes.default.svc.cluster.local.") == ["NOERROR", "10.96.0.1"], (node, n)
        assert ask(cluster, node, ip, "nothing-here.default.svc.cluster.local.") == ["NXDOMAIN"]


def test_the_addon_phase_is_idempotent_and_repairs_drift(cluster):
    cfg, api = cluster.cfg, cluster.api
    tls = bringup.admin_tls(cfg)
    assert addons.ensure_dns(cfg.api_url, tls, "10.96.0.10") == []  # as `up` left it: nothing to do
    r = api.patch("/apis/apps/v1/namespaces/kube-system/deployments/coredns", json={"spec": {"replicas": 1}},
                  headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert addons.ensure_dns(cfg.api_url, tls, "10.96.0.10") == ["deployment/coredns updated"]
    d = api.get("/apis/apps/v1/namespaces/kube-system/deployments/coredns").json()
    assert d["spec"]["replicas"] == addons.REPLICAS
    wait_coredns_ready(cluster)


def test_cluster_first_pods_get_the_cluster_dns(cluster):
    api = cluster.api
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "resolv"},
           "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": HOST_ROOT_IMAGE, "command": ["cat", "/etc/resolv.conf"]}]}}
    assert api.post("/api/v1/namespaces/default/pods", json=pod).status_code == 201

    def done():
        p = api.get("/api/v1/namespaces/default/pods/resolv").json()
        return (p.get("status") or {}).get("phase") == "Succeeded"
    wait_for(done, timeout=90, what="the pod to finish")
    log = api.get("/api/v1/namespaces/default/pods/resolv/log").text
    assert log == ("search default.svc.cluster.local svc.cluster.local cluster.local"
                   + "".join(" " + s for s in _host_searches()) + "\nnameserver 10.96.0.10\noptions ndots:5\n")
    api.delete("/api/v1/namespaces/default/pods/resolv")


def _host_searches() -> list[str]:
    from kubelet.dns import parse_resolv_conf
    with open("/etc/resolv.conf") as f:
        return [s for s in parse_resolv_conf(f.read()).searches
                if s not in ("default.svc.cluster.local", "svc.cluster.local", "cluster.local")]


def test_minik8s_dns_outside_a_pod_says_it_is_not_in_a_cluster():
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "dns"], capture_output=True, text=True,
                       timeout=30, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("error: in-cluster configuration: unable to load in-cluster configuration, "
                                "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined")


def test_a_plain_http_cluster_runs_the_dns_from_a_node_kubeconfig(tmp_path_factory):
    for cluster in _up(tmp_path_factory, "--nodes", "1", "--plain-http"):
        [p] = wait_coredns_ready(cluster)[:1] or [None]
        assert ask(cluster, "node-1", p["status"]["podIP"], "kubernetes.default.svc.cluster.local.") == [
            "NOERROR", "10.96.0.1"]


def test_a_checkout_under_tmp_is_bound_into_the_dns_pods(monkeypatch):
    """Every container has a /tmp of its own, so the host-root DNS pods would not find a
    checkout or venv under /tmp (a CI clone): they are bound in at the same path."""
    def deployment():
        (d,) = [o for o in addons.dns_objects("10.96.0.10") if o["kind"] == "Deployment"]
        return d["spec"]["template"]["spec"]
    monkeypatch.setattr(addons, "CHECKOUT", "/tmp/ci-clone")
    monkeypatch.setattr(sys, "prefix", "/tmp/ci-clone/.venv")
    spec = deployment()
    assert spec["volumes"] == [{"name": "host-code-0", "hostPath": {"path": "/tmp/ci-clone", "type": "Directory"}}]
    assert spec["containers"][0]["volumeMounts"] == [{"name": "host-code-0", "mountPath": "/tmp/ci-clone",
                                                      "readOnly": True}]
    monkeypatch.setattr(addons, "CHECKOUT", "/srv/minik8s")
    monkeypatch.setattr(sys, "prefix", "/srv/minik8s/.venv")
    assert "volumes" not in deployment()
