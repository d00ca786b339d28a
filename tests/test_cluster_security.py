"""`minik8s up` is secure by default (root, linux runtime, two nodes): the cluster PKI,
etcd asking every client for a certificate of its CA, the API server on TLS with
Node,RBAC, and every component acting as its own identity with what the bootstrap roles
grant it; `up` again on the same state dir keeps every certificate; `--plain-http` is
the explicit way back to an open cluster.

One cluster is shared by the tests of this module (file order); it lives in a
temporary state dir with its own port and address ranges, and `minik8s down` runs at
the end whatever happens.
"""
import hashlib
import importlib.util
import os
import shutil
import ssl
import subprocess
import sys

import httpx
import pytest

from client import kubeconfig
from cluster import bringup
from cluster.state import ClusterConfig
from kubelet.images import HOST_ROOT_IMAGE
from tests.procs import free_port, wait_for
from tests.test_cluster import dump_logs, leftovers
from tests.test_cluster_cli import minik8s
from tests.test_cluster_network import unique_cidrs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the linux runtime needs root"),
]

KUBECTL_LITE = os.path.join(os.path.dirname(sys.executable), "kubectl-lite")


def tls(cfg: ClusterConfig, kubeconfig_path: str | None = None) -> ssl.SSLContext:
    """The cluster CA, and the client certificate of a kubeconfig if one is named."""
    if kubeconfig_path:
        ctx = kubeconfig.load(kubeconfig_path).connection().ssl_context()
        assert isinstance(ctx, ssl.SSLContext)
        return ctx
    return ssl.create_default_context(cafile=os.path.join(cfg.pki_dir, "ca.crt"))


def api(cfg: ClusterConfig, kubeconfig_path: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=cfg.api_url, timeout=30, verify=tls(cfg, kubeconfig_path))


def pki_digests(cfg: ClusterConfig) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(cfg.pki_dir):
        for name in files:
            if name != ".lock":
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, cfg.pki_dir)] = hashlib.sha256(f.read()).hexdigest()
    return out


def kubectl_lite(cfg: ClusterConfig, *args: str, kubeconfig_path: str | None = None):
    return subprocess.run([KUBECTL_LITE, "--kubeconfig", kubeconfig_path or cfg.kubeconfig, *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = str(tmp_path_factory.mktemp("secure-cluster"))
    node_cidr, cluster_cidr = unique_cidrs()
    r = minik8s("up", "--nodes", "2", "--state-dir", state, "--port", str(free_port()),
                "--node-cidr", node_cidr, "--cluster-cidr", cluster_cidr, timeout=240)
    cfg = ClusterConfig.load(state)
    try:
        assert r.returncode == 0, r.stdout + r.stderr + (dump_logs(cfg) if cfg else "")
        cfg.up_output = r.stdout
        yield cfg
    finally:
        if cfg is not None:
            minik8s("down", "--state-dir", state, timeout=180)
            bringup.cleanup(cfg)


def test_up_makes_the_pki_and_a_kubeconfig_per_component(cluster):
    assert "pki " in cluster.up_output and "TLS" in cluster.up_output, cluster.up_output
    for name in ("ca.crt", "apiserver.crt", "apiserver-kubelet-client.crt", "apiserver-etcd-client.crt",
                 "sa.key", "sa.pub", "etcd/ca.crt", "etcd/server.crt", "etcd/peer.crt",
                 "kubelets/node-1/kubelet.crt", "kubelets/node-2/kubelet-client.crt"):
        assert os.path.exists(os.path.join(cluster.pki_dir, name)), name
    keys = [p for p in pki_digests(cluster) if p.endswith(".key")]
    assert keys and all(os.stat(os.path.join(cluster.pki_dir, k)).st_mode & 0o077 == 0 for k in keys)
    assert cluster.api_url.startswith("https://")
    assert not os.path.exists(cluster.kubelet_token)      # no shared token to steal


def test_kubectl_lite_with_the_admin_kubeconfig_over_tls(cluster):
    r = kubectl_lite(cluster, "get", "nodes")
    assert r.returncode == 0 and r.stdout.count(" Ready ") == 2, r.stdout + r.stderr
    r = kubectl_lite(cluster, "get", "secrets", "-A")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.kubectl
def test_kubectl_with_the_admin_kubeconfig(cluster, tmp_path):
    r = subprocess.run(["kubectl", "--kubeconfig", cluster.kubeconfig, "--cache-dir", str(tmp_path),
                        "get", "nodes", "-o", "name"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and sorted(r.stdout.split()) == ["node/node-1", "node/node-2"], r.stderr


def test_a_request_without_credentials_is_anonymous(cluster):
    with api(cluster) as anonymous:
        r = anonymous.get("/api/v1/namespaces/default/pods")
        assert r.status_code == 403, r.text
        assert r.json()["kind"] == "Status" and r.json()["message"] == (
            'pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group "" '
            'in the namespace "default"')
        assert anonymous.get("/api/v1/secrets").status_code == 403
        assert anonymous.get("/version").status_code == 200     # system:public-info-viewer
    with pytest.raises(httpx.ConnectError):                      # the server's CA is not the system's
        httpx.get(cluster.api_url + "/version", timeout=10)


def test_etcd_refuses_a_client_without_a_certificate(cluster):
    etcd = bringup.read_json(bringup.status_path(cluster))["etcd"]
    assert etcd.startswith("https://127.0.0.1:")
    etcd_ca = os.path.join(cluster.pki_dir, "etcd", "ca.crt")
    # no certificate: the handshake fails
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(etcd + "/health", timeout=10, verify=ssl.create_default_context(cafile=etcd_ca))
    # a certificate of the cluster CA, not etcd's: refused too
    other = ssl.create_default_context(cafile=etcd_ca)
    other.load_cert_chain(os.path.join(cluster.pki_dir, "admin.crt"), os.path.join(cluster.pki_dir, "admin.key"))
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(etcd + "/health", timeout=10, verify=other)
    # plain HTTP on its port gets nothing from it
    plain = etcd.replace("https://", "http://")
    try:
        r = httpx.get(plain + "/health", timeout=10)
        assert r.status_code != 200
    except httpx.HTTPError:
        pass
    # the API server's etcd client certificate is let in
    ok = ssl.create_default_context(cafile=etcd_ca)
    ok.load_cert_chain(os.path.join(cluster.pki_dir, "apiserver-etcd-client.crt"),
                       os.path.join(cluster.pki_dir, "apiserver-etcd-client.key"))
    assert httpx.get(etcd + "/health", timeout=10, verify=ok).status_code == 200


def test_each_component_acts_as_itself(cluster):
    with api(cluster, cluster.component_kubeconfig("scheduler")) as scheduler:
        assert scheduler.get("/api/v1/pods").status_code == 200
        r = scheduler.get("/api/v1/namespaces/kube-system/secrets")
        assert r.status_code == 403 and 'User "system:kube-scheduler" cannot list resource "secrets"' \
            in r.json()["message"], r.text
        assert scheduler.delete("/api/v1/nodes/node-1").status_code == 403
    with api(cluster, cluster.component_kubeconfig("controller-manager")) as cm:
        assert cm.get("/apis/apps/v1/replicasets").status_code == 200
        r = cm.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json={
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "cm-takes-over"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "User", "name": "system:kube-controller-manager"}]})
        assert r.status_code == 403, r.text
    with api(cluster, cluster.node_kubeconfig("node-1")) as node1:
        assert node1.get("/api/v1/nodes/node-1").status_code == 200
        r = node1.patch("/api/v1/nodes/node-2", json={"metadata": {"labels": {"taken": "yes"}}},
                        headers={"content-type": "application/merge-patch+json"})
        # NodeRestriction's refusal, in its words
        assert r.status_code == 403 and r.json()["message"] == \
            'nodes "node-2" is forbidden: node "node-1" is not allowed to modify node "node-2"', r.text
        assert node1.get("/api/v1/namespaces/kube-system/secrets").status_code == 403
    with api(cluster, cluster.kubeconfig) as admin:
        assert "taken" not in (admin.get("/api/v1/nodes/node-2").json()["metadata"].get("labels") or {})


def test_logs_and_exec_go_to_the_kubelet_with_the_api_servers_certificate(cluster):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "talk"},
           "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": HOST_ROOT_IMAGE,
                                    "command": ["sh", "-c", "echo hello from talk; exec sleep 3600"]}]}}
    with api(cluster, cluster.kubeconfig) as admin:
        # the default ServiceAccount may still be being made: retry the create until it is
        wait_for(lambda: admin.post("/api/v1/namespaces/default/pods", json=pod).status_code in (201, 409),
                 timeout=60, what="the pod created")
        wait_for(lambda: admin.get("/api/v1/namespaces/default/pods/talk").json()["status"].get("phase")
                 == "Running", timeout=90, what="the pod Running")
        try:
            logs = wait_for(lambda: "hello from talk" in (r := kubectl_lite(cluster, "logs", "talk")).stdout and r,
                            timeout=30, what="the pod's log")
            assert logs.returncode == 0
            r = kubectl_lite(cluster, "exec", "talk", "--", "echo", "exec works")
            assert r.returncode == 0 and r.stdout.strip() == "exec works", r.stdout + r.stderr
            # The kubelet itself lets in only certificates of the cluster CA that the API
            # server authorizes: none, or another node's, is refused.
            kubelet = f"https://{cluster.node_ip('node-1')}:10250"
            logs_path = kubelet + "/containerLogs/default/talk/c"
            r = httpx.get(logs_path, timeout=10, verify=tls(cluster))
            assert r.status_code == 401 and "hello" not in r.text, r.text
            r = httpx.get(logs_path, timeout=10, verify=tls(cluster, cluster.node_kubeconfig("node-2")))
            assert r.status_code == 403 and "hello" not in r.text, r.text
            # the API server's kubelet-client certificate is let in
            api_client = tls(cluster)
            api_client.load_cert_chain(os.path.join(cluster.pki_dir, "apiserver-kubelet-client.crt"),
                                       os.path.join(cluster.pki_dir, "apiserver-kubelet-client.key"))
            r = httpx.get(logs_path, timeout=10, verify=api_client)
            assert r.status_code == 200 and "hello from talk" in r.text, r.text
        finally:
            admin.delete("/api/v1/namespaces/default/pods/talk")


def test_up_on_the_same_state_dir_keeps_every_certificate(cluster):
    before = pki_digests(cluster)
    with open(cluster.kubeconfig, "rb") as f:
        admin_before = f.read()
    assert minik8s("down", "--state-dir", cluster.state_dir, timeout=180).returncode == 0
    assert leftovers(cluster) == []
    r = minik8s("up", "--state-dir", cluster.state_dir, timeout=240)
    assert r.returncode == 0 and "Restarting" in r.stdout, r.stdout + r.stderr + dump_logs(cluster)
    assert "certificates and keys kept" in r.stdout, r.stdout
    assert pki_digests(cluster) == before
    with open(cluster.kubeconfig, "rb") as f:
        assert f.read() == admin_before
    # a kubeconfig handed out before the restart still works
    r = kubectl_lite(cluster, "get", "nodes")
    assert r.returncode == 0 and r.stdout.count(" Ready ") == 2, r.stdout + r.stderr


def test_a_broken_pki_stops_up_before_anything_starts(tmp_path):
    state = str(tmp_path / "state")
    os.makedirs(os.path.join(state, "pki"))
    with open(os.path.join(state, "pki", "ca.crt"), "w") as f:
        f.write("not a certificate\n")
    r = minik8s("up", "--runtime", "fake", "--nodes", "1", "--state-dir", state, "--port", str(free_port()),
                timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("minik8s: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "ca.crt" in r.stderr
    assert not os.path.exists(os.path.join(state, "logs", "etcd.log"))


def test_plain_http_is_the_explicit_open_mode(tmp_path):
    state = str(tmp_path / "plain")
    r = minik8s("up", "--runtime", "fake", "--nodes", "1", "--plain-http", "--state-dir", state,
                "--port", str(free_port()), timeout=180)
    cfg = ClusterConfig.load(state)
    try:
        assert r.returncode == 0 and "plain HTTP" in r.stdout, r.stdout + r.stderr
        assert cfg.plain_http and cfg.api_url.startswith("http://") and not os.path.exists(cfg.pki_dir)
        # no credentials at all, and everything allowed
        assert httpx.get(cfg.api_url + "/api/v1/namespaces/kube-system/secrets", timeout=10).status_code == 200
        # the running cluster's mode is not changed under it
        r = minik8s("up", "--runtime", "fake", "--state-dir", state, timeout=60)
        assert r.returncode == 1 and "plain HTTP" in r.stderr, r.stderr
    finally:
        minik8s("down", "--purge", "--state-dir", state, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


INCLUSTER = """\
import time
from kubernetes import client, config
config.load_incluster_config()
v1 = client.CoreV1Api()
while True:
    try:
        print("LISTED", len(v1.list_namespaced_pod("default").items), flush=True)
    except client.ApiException as e:
        print("STATUS", e.status, flush=True)
    time.sleep(0.5)
"""


@pytest.mark.skipif(importlib.util.find_spec("apiserver.auth.serviceaccount") is None,
                    reason="ServiceAccount tokens are not in this build")
@pytest.mark.skipif(importlib.util.find_spec("kubernetes") is None, reason="the official client is not installed")
def test_a_pod_calls_the_api_with_load_incluster_config_as_rbac_allows(cluster):
    """The official Python client in a pod: the ServiceAccount token, ca.crt and
    KUBERNETES_SERVICE_HOST/PORT the pod is given reach the API server over TLS, and the
    answer is RBAC's: 403 until a RoleBinding lets the ServiceAccount read pods."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "incluster"},
           "spec": {"nodeName": "node-2", "terminationGracePeriodSeconds": 1,
                    # the host's filesystem: this test's Python, with the official client
                    # A container's /tmp is its own tmpfs: a virtualenv under /tmp (as in CI)
                    # is mounted in where it is on the host.
                    "volumes": [{"name": "venv", "hostPath": {"path": sys.prefix}}],
                    "containers": [{"name": "c", "image": HOST_ROOT_IMAGE,
                                    "command": [sys.executable, "-c", INCLUSTER],
                                    "volumeMounts": [{"name": "venv", "mountPath": sys.prefix,
                                                      "readOnly": True}]}]}}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "default-reads", "namespace": "default"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
               "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]}
    with api(cluster, cluster.kubeconfig) as admin:
        # the token volume is added only once the namespace's default ServiceAccount exists
        wait_for(lambda: admin.get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200,
                 timeout=60, what="the default ServiceAccount")
        r = admin.post("/api/v1/namespaces/default/pods", json=pod)
        assert r.status_code == 201, r.text

        def log() -> str:
            return admin.get("/api/v1/namespaces/default/pods/incluster/log").text
        try:
            def events() -> str:
                items = admin.get("/api/v1/namespaces/default/events").json().get("items") or []
                return "; ".join(f'{e["reason"]}: {e["message"]}' for e in items
                                 if e["involvedObject"].get("name") == "incluster")
            try:
                wait_for(lambda: "STATUS 403" in log(), timeout=120, what="the pod refused")
            except TimeoutError as e:
                raise AssertionError(f"{e}: log {log()[-300:]!r}, events: {events()}") from None
            assert "LISTED" not in log()
            r = admin.post("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", json=binding)
            assert r.status_code == 201, r.text
            wait_for(lambda: "LISTED" in log(), timeout=60, what="the pod's list allowed")
        finally:
            admin.delete("/api/v1/namespaces/default/pods/incluster")
            admin.delete("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/default-reads")
