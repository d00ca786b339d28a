"""The kubelet's side of security, end to end: its HTTPS endpoint (client certificates
from the cluster CA, the API server's kubelet-client certificate, Webhook authorization
through SubjectAccessReviews), projected and downwardAPI volumes (ServiceAccount tokens
requested through TokenRequest and refreshed by the kubelet's token manager), and the
KUBERNETES_SERVICE_* variables every container gets.

Real parts only: the session's etcd, an API server of the module's own that dials
kubelets with the kubelet-client certificate of a cluster PKI made by cluster.pki, and
one `minik8s kubelet` serving HTTPS with that PKI's serving certificate for its node.
The token manager's refresh is driven through its own check with an injected clock
(TokenRequest's minimum lifetime is 600 s; nothing sleeps). Tests that need a piece of
the API server another branch adds (SubjectAccessReview, serviceaccounts/token) skip,
saying which, when the server does not serve it.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from client.clock import FakeClock
from client.rest import Client
from cluster import pki
from kubelet import auth as kauth
from kubelet import envvars, projected
from kubelet import main as kmain
from kubelet.runtime import VolumeError
from kubelet.runtime.linux.cgroups import Cgroup
from kubelet.token import TokenManager
from tests.procs import APIServer, default_service_account, root_ca_configmap, wait_for
from tests.secure import SecureCluster
from tests.test_kubelet_e2e import (SLEEP, KubeletNode, api_exec, container, create, make_pod,
                                    pod_log, running, wait_pod)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs real pods: needs root")


class TLSKubeletNode(KubeletNode):
    """A KubeletNode whose endpoint serves HTTPS with the node's certificate of `pki_dir`
    (made here, for the node's name), checking client certificates against its CA."""

    def __init__(self, api: APIServer, tmp: Path, pki_dir: Path, *extra: str):
        super().__init__(api, tmp, *extra)
        pki.ensure(str(pki_dir), pki.ClusterFacts(nodes=(pki.Node(self.name, "127.0.0.1"),)))
        self.pki = pki_dir
        if api.url.startswith("https://"):  # the kubelet is system:node:<name> by its certificate
            pki.write_kubeconfig(str(tmp / "kubeconfig"), str(pki_dir), f"kubelets/{self.name}/kubelet-client",
                                 cluster_name="kubernetes", server=api.url)
        base = pki_dir / "kubelets" / self.name / "kubelet"
        self.args += ["--tls-cert-file", f"{base}.crt", "--tls-private-key-file", f"{base}.key",
                      "--client-ca-file", str(pki_dir / "ca.crt")]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, cert: str | None = None) -> httpx.Client:
        """A client of the endpoint that verifies it against the cluster CA, presenting
        `cert` (a path in the PKI without .crt/.key) if given."""
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if cert:
            ctx.load_cert_chain(str(self.pki / f"{cert}.crt"), str(self.pki / f"{cert}.key"))
        return httpx.Client(base_url=self.url, verify=ctx, timeout=10)

    def start(self) -> "TLSKubeletNode":
        from tests.procs import Component
        self.proc = Component(*self.args).start()

        def up():
            if not self.proc.alive():
                raise RuntimeError(f"kubelet exited: {self.proc.log()}")
            node = api.get(f"/api/v1/nodes/{self.name}").json()
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in (node.get("status") or {}).get("conditions") or [])
            with self.client() as c:
                return ready and c.get("/healthz").status_code == 200
        try:
            with self.api.client() as api:  # one connection for the whole poll
                wait_for(up, what=f"kubelet {self.name}")
        except (TimeoutError, RuntimeError):
            raise RuntimeError(f"kubelet {self.name} did not come up: {self.proc.log()}") from None
        return self

    def cleanup(self) -> None:
        if self.proc:
            self.proc.stop()
        rt = self.runtime()
        for uid in os.listdir(rt.pods_dir):
            rt.remove_pod(uid)
        rt.cleanup_orphans(keep=[])
        rt.network.delete_bridge()
        Cgroup(rt.cgroups.dirs, v2=rt.cgroups.v2).remove()
        with self.api.client() as c:
            c.delete(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}")
            c.delete(f"/api/v1/nodes/{self.name}")


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def api(etcd, pki_dir):
    pki.ensure(str(pki_dir), pki.ClusterFacts())
    server = APIServer(etcd.url, "--kubelet-client-certificate", str(pki_dir / "apiserver-kubelet-client.crt"),
                       "--kubelet-client-key", str(pki_dir / "apiserver-kubelet-client.key"),
                       "--kubelet-certificate-authority", str(pki_dir / "ca.crt"), pki_dir=str(pki_dir))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http(api):
    with api.client(timeout=30) as c:
        yield c


@pytest.fixture
def ns(http, pki_dir):
    name = "t-" + uuid.uuid4().hex[:10]
    assert http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": name}}).status_code == 201
    default_service_account(http, name)
    root_ca_configmap(http, name, ca_file=str(pki_dir / "ca.crt"))
    return name


@pytest.fixture(scope="module")
def node(api, pki_dir, tmp_path_factory):
    n = TLSKubeletNode(api, tmp_path_factory.mktemp("kubelet"), pki_dir,
                       "--lease-renew-interval", "1", "--node-status-update-frequency", "1")
    try:
        yield n.start()
    finally:
        n.cleanup()


def serves(http, path: str, resource: str) -> bool:
    r = http.get(path)
    return r.status_code == 200 and any(x["name"] == resource for x in r.json()["resources"])


# -- the endpoint -----------------------------------------------------------------------------

def test_endpoint_refuses_a_client_without_a_certificate_and_the_shared_token(node):
    with node.client() as c:
        r = c.get("/metrics")
        assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"
        r = c.get("/metrics", headers={"authorization": "Bearer kubelet-test-token"})
        assert r.status_code == 401
        r = c.get("/containerLogs/default/nothing/c")
        assert r.status_code == 401


def test_endpoint_refuses_a_certificate_from_another_ca(node, tmp_path):
    other = tmp_path / "other-pki"
    pki.ensure(str(other), pki.ClusterFacts())
    ctx = ssl.create_default_context(cafile=str(node.pki / "ca.crt"))
    ctx.load_cert_chain(str(other / "admin.crt"), str(other / "admin.key"))
    with httpx.Client(base_url=node.url, verify=ctx, timeout=10) as c:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            c.get("/metrics")


def test_endpoint_accepts_the_api_servers_kubelet_client_certificate(node):
    with node.client("apiserver-kubelet-client") as c:
        r = c.get("/metrics")
        assert r.status_code == 200, r.text
        assert "kubelet_running_pods" in r.text


def test_logs_and_exec_through_the_api_server_over_https(node, api, http, ns):
    create(http, ns, make_pod("talker", node, container("c", ["sh", "-c", "echo hello-tls; exec sleep infinity"])))
    wait_pod(http, ns, "talker", running("c"), "talker running")
    wait_for(lambda: "hello-tls" in pod_log(http, ns, "talker", container="c"), what="the log over HTTPS")
    code, out, _err = api_exec(api, ns, "talker", ["sh", "-c", "echo exec-ok"])
    assert (code, out) == (0, b"exec-ok\n")


def test_request_attributes_follow_the_kubelets_paths():
    u = kauth.User("jane", ("g",))
    cases = [("GET", "/metrics", "get", "metrics"), ("GET", "/metrics/cadvisor", "get", "metrics"),
             ("GET", "/containerLogs/ns/p/c", "get", "proxy"), ("GET", "/exec/ns/p/c", "get", "proxy"),
             ("POST", "/exec/ns/p/c", "create", "proxy"), ("GET", "/logs/", "get", "log"),
             ("GET", "/stats/summary", "get", "stats"), ("GET", "/metricsx", "get", "proxy"),
             ("DELETE", "/pods", "delete", "proxy")]
    for method, path, verb, sub in cases:
        a = kauth.request_attributes(u, method, path, "n1")
        assert (a.verb, a.subresource, a.node) == (verb, sub, "n1"), (method, path)


def test_webhook_authorization_asks_the_api_server_and_caches_the_answer(api, http, pki_dir):
    if not serves(http, "/apis/authorization.k8s.io/v1", "subjectaccessreviews"):
        pytest.skip("the API server does not serve subjectaccessreviews yet (issue 14, h-authn)")
    clock = FakeClock(wall=time.time())

    async def run():
        async with Client(api.connection()) as client:
            webhook = kauth.Webhook(client, clock=clock)
            endpoint = kauth.EndpointAuth(node_name="n1", tls=True, authorizer=webhook)
            admin = {"subject": ((("organizationName", "system:masters"),), (("commonName", "kubernetes-admin"),))}
            assert await endpoint.check(method="GET", path="/metrics", headers={}, peer_cert=admin) is None
            assert webhook.reviews == 1
            assert await endpoint.check(method="GET", path="/metrics", headers={}, peer_cert=admin) is None
            assert webhook.reviews == 1  # cached
            clock.step(kauth.AUTHORIZED_TTL + 1)
            assert await endpoint.check(method="GET", path="/metrics", headers={}, peer_cert=admin) is None
            assert webhook.reviews == 2
    asyncio.run(run())


def test_webhook_mode_kubelet_lets_in_whom_the_api_server_allows(api, http, pki_dir, tmp_path):
    if not serves(http, "/apis/authorization.k8s.io/v1", "subjectaccessreviews"):
        pytest.skip("the API server does not serve subjectaccessreviews yet (issue 14, h-authn)")
    n = TLSKubeletNode(api, tmp_path, pki_dir, "--authorization-mode", "Webhook")
    try:
        n.start()
        with n.client("apiserver-kubelet-client") as c:  # system:masters: allowed
            r = c.get("/metrics")
            assert r.status_code == 200, r.text
        with n.client() as c:
            assert c.get("/metrics").status_code == 401
    finally:
        n.cleanup()


def test_token_webhook_knows_a_service_account_token_and_refuses_a_bad_one(api, http, ns):
    if not (serves(http, "/apis/authentication.k8s.io/v1", "tokenreviews")
            and serves(http, "/api/v1", "serviceaccounts/token")):
        pytest.skip("the API server does not serve tokenreviews and serviceaccounts/token yet "
                    "(issue 14, h-authn and h-sa)")
    http.post(f"/api/v1/namespaces/{ns}/serviceaccounts", json={
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})
    r = http.post(f"/api/v1/namespaces/{ns}/serviceaccounts/robot/token", json={
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
    assert r.status_code == 201, r.text
    token = r.json()["status"]["token"]

    async def run():
        async with Client(api.connection()) as client:
            endpoint = kauth.EndpointAuth(node_name="n1", tls=True, token_webhook=kauth.TokenWebhook(client))
            ok = await endpoint.check(method="GET", path="/metrics", peer_cert=None,
                                      headers={"authorization": f"Bearer {token}"})
            bad = await endpoint.check(method="GET", path="/metrics", peer_cert=None,
                                       headers={"authorization": "Bearer not-a-token"})
            user = await endpoint.token_webhook.authenticate(token)
            return ok, bad, user
    ok, bad, user = asyncio.run(run())
    assert ok is None and bad is not None and bad.code == 401
    assert user.name == f"system:serviceaccount:{ns}:robot"


def _secure_exec(cluster: SecureCluster, ns: str, pod: str, script: str) -> tuple[int, bytes]:
    """exec through the secure API server's WebSocket as the admin (v5.channel.k8s.io)."""
    from client.wsclient import connect
    url = cluster.url.replace("https://", "wss://") + (
        f"/api/v1/namespaces/{ns}/pods/{pod}/exec?command=sh&command=-c&command={quote(script, safe='')}"
        "&stdout=true&stderr=true")
    out, status = b"", None
    with connect(url, subprotocols=["v5.channel.k8s.io"], open_timeout=10,
                 ssl=cluster.tls(cluster.admin)) as ws:
        while True:
            try:
                frame = ws.recv(timeout=30)
            except Exception:  # noqa: BLE001 - closed: the command is over
                break
            if frame[0] in (1, 2):
                out += frame[1:]
            elif frame[0] == 3:
                status = json.loads(frame[1:])
    assert status is not None, out
    return (0 if status["status"] == "Success" else 1), out


def test_secure_cluster_kubelet_by_certificate_webhook_decisions_and_the_token_volume(tmp_path):
    """An HTTPS API server with RBAC; a kubelet known by its client certificate (kubeconfig),
    serving HTTPS with Webhook authorization; a pod with the ServiceAccount admission's
    token volume, reached through the API server's kubelet-client certificate."""
    d = tmp_path / "cluster"
    p = d / "pki"
    cluster = SecureCluster(str(d), "--authorization-mode", "RBAC",
                            "--kubelet-client-certificate", str(p / "apiserver-kubelet-client.crt"),
                            "--kubelet-client-key", str(p / "apiserver-kubelet-client.key"),
                            "--kubelet-certificate-authority", str(p / "ca.crt")).start()
    node = None
    try:
        admin = cluster.client(cluster.admin)
        # No Node authorizer in this build yet: nodes get system:node through RBAC, as
        # before Kubernetes 1.8.
        for obj in [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "nodes"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                        "kind": "ClusterRole", "name": "system:node"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "node-metrics"},
             "rules": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "bob-metrics"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                              "kind": "ClusterRole", "name": "node-metrics"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]},
        ]:
            plural = {"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings"}[obj["kind"]]
            r = admin.post(f"/apis/rbac.authorization.k8s.io/v1/{plural}", json=obj)
            assert r.status_code == 201, r.text
        (tmp_path / "node").mkdir(exist_ok=True)
        node = TLSKubeletNode(cluster.server, tmp_path / "node", p, "--authorization-mode", "Webhook")
        node.start()

        def get(cert: str, path: str) -> httpx.Response:
            ctx = ssl.create_default_context(cafile=str(p / "ca.crt"))
            ctx.load_cert_chain(cert + ".crt", cert + ".key")
            with httpx.Client(base_url=node.url, verify=ctx, timeout=10) as c:
                return c.get(path)
        bob, jane = cluster.user("bob"), cluster.user("jane")
        assert get(str(p / "apiserver-kubelet-client"), "/metrics").status_code == 200
        assert get(bob.cert[:-4], "/metrics").status_code == 200
        r = get(bob.cert[:-4], "/containerLogs/default/x/c")
        assert r.status_code == 403
        assert r.json()["message"] == "Forbidden (user=bob, verb=get, resource=nodes, subresource=proxy)"
        r = get(jane.cert[:-4], "/metrics")
        assert r.status_code == 403
        assert r.json()["message"] == "Forbidden (user=jane, verb=get, resource=nodes, subresource=metrics)"

        # A pod with the admission's token volume, through the secure API server.
        ns = "sec-" + uuid.uuid4().hex[:6]
        assert admin.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                      "metadata": {"name": ns}}).status_code == 201
        # What the ServiceAccount controller and the root-ca-cert-publisher make (neither runs here).
        admin.post(f"/api/v1/namespaces/{ns}/serviceaccounts", json={
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
        admin.post(f"/api/v1/namespaces/{ns}/configmaps", json={
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"},
            "data": {"ca.crt": (p / "ca.crt").read_text()}})
        r = admin.post(f"/api/v1/namespaces/{ns}/pods", json=make_pod(
            "app", node, container("c", ["sh", "-c", "echo started; exec sleep infinity"])))
        assert r.status_code == 201, r.text
        uid = r.json()["metadata"]["uid"]
        assert any("projected" in v for v in r.json()["spec"]["volumes"])

        def up():
            pod = admin.get(f"/api/v1/namespaces/{ns}/pods/app").json()
            return running("c")(pod)
        try:
            wait_for(up, timeout=60, what="the pod running")
        except TimeoutError:
            raise AssertionError(node.proc.log()) from None
        d_ = "/var/run/secrets/kubernetes.io/serviceaccount"
        code, out = _secure_exec(cluster, ns, "app", f"stat -L -c %a {d_}/token {d_}/ca.crt {d_}/namespace; "
                                 f"cat {d_}/namespace; echo; cat {d_}/token")
        assert code == 0, out
        lines = out.decode().splitlines()
        assert lines[:4] == ["644", "644", "644", ns]
        token = lines[4]
        claims = _jwt_claims(token)
        assert claims["sub"] == f"system:serviceaccount:{ns}:default"
        assert claims["kubernetes.io"]["pod"] == {"name": "app", "uid": uid}
        # The token is good at the API server: who it is shows in the 403.
        r = cluster.client(token=token).get(f"/api/v1/namespaces/{ns}/secrets")
        assert r.status_code == 403 and f"system:serviceaccount:{ns}:default" in r.json()["message"]
        wait_for(lambda: admin.get(f"/api/v1/namespaces/{ns}/pods/app/log").text == "started\n",
                 timeout=30, what="the log through the kubelet's HTTPS")
    finally:
        if node is not None:
            node.cleanup()
        cluster.stop()


# -- downwardAPI, projected volumes and the service variables --------------------------------

def sh(api, ns: str, pod: str, script: str) -> str:
    code, out, err = api_exec(api, ns, pod, ["sh", "-c", script])
    assert code == 0, (out, err)
    return out.decode()


def test_downward_api_volume_files_modes_and_updates(node, api, http, ns):
    pod = make_pod("dw", node, container("c", SLEEP, resources={"limits": {"memory": "64Mi"}},
                                         volumeMounts=[{"name": "info", "mountPath": "/info"}]),
                   volumes=[{"name": "info", "downwardAPI": {"defaultMode": 0o640, "items": [
                       {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                       {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}, "mode": 0o400},
                       {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                       {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                       {"path": "sub/tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
                       {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory",
                                                            "divisor": "1Mi"}}]}}])
    pod["metadata"]["labels"] = {"tier": "web", "app": "shop"}
    pod["metadata"]["annotations"] = {"note": 'say "hi"\nbye'}
    create(http, ns, pod)
    wait_pod(http, ns, "dw", running("c"), "dw running")
    assert sh(api, ns, "dw", "cat /info/name; echo; cat /info/ns; echo; cat /info/sub/tier; echo; cat /info/mem") \
        == f"dw\n{ns}\nweb\n64"
    assert sh(api, ns, "dw", "cat /info/labels") == 'app="shop"\ntier="web"'
    assert sh(api, ns, "dw", "cat /info/annotations") == 'note="say \\"hi\\"\\nbye"'
    assert sh(api, ns, "dw", "stat -L -c %a /info/name /info/ns") == "640\n400\n"
    assert sh(api, ns, "dw", "readlink /info/name") == "..data/name\n"
    r = http.patch(f"/api/v1/namespaces/{ns}/pods/dw", json={"metadata": {"labels": {"tier": "db"}}},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    wait_for(lambda: sh(api, ns, "dw", "cat /info/sub/tier") == "db", timeout=30, what="the label's update")


def test_every_container_gets_the_kubernetes_service_variables(node, api, http, ns):
    create(http, ns, make_pod("envs", node, container("c", SLEEP, env=[
        {"name": "URL", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"}])))
    wait_pod(http, ns, "envs", running("c"), "envs running")
    env = dict(line.split("=", 1) for line in sh(api, ns, "envs", "env").splitlines() if "=" in line)
    port = str(api.port)
    # The kubeconfig names 127.0.0.1, which a pod cannot reach: the node's address instead.
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1" and env["KUBERNETES_SERVICE_PORT"] == port
    assert env["KUBERNETES_PORT"] == f"tcp://127.0.0.1:{port}"
    assert env[f"KUBERNETES_PORT_{port}_TCP_ADDR"] == "127.0.0.1"
    assert env[f"KUBERNETES_PORT_{port}_TCP_PROTO"] == "tcp"
    assert env["URL"] == f"https://127.0.0.1:{port}"


def test_projected_volume_of_config_map_secret_and_downward_api(node, api, http, ns):
    http.post(f"/api/v1/namespaces/{ns}/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "root-ca"}, "data": {"ca.crt": "PEM-1"}})
    http.post(f"/api/v1/namespaces/{ns}/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "data": {"pw": base64.b64encode(b"hunter2").decode()}})
    create(http, ns, make_pod("proj", node, container("c", SLEEP, volumeMounts=[
        {"name": "all", "mountPath": "/all"}]), volumes=[{"name": "all", "projected": {
            "defaultMode": 0o440, "sources": [
                {"configMap": {"name": "root-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"secret": {"name": "s", "items": [{"key": "pw", "path": "creds/pw", "mode": 0o400}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}]))
    wait_pod(http, ns, "proj", running("c"), "proj running")
    assert sh(api, ns, "proj", "cat /all/ca.crt /all/creds/pw /all/namespace") == f"PEM-1hunter2{ns}"
    assert sh(api, ns, "proj", "stat -L -c %a /all/ca.crt /all/creds/pw /all/namespace") == "440\n400\n440\n"
    # An update reaches the file in place, through the ..data swap.
    r = http.patch(f"/api/v1/namespaces/{ns}/configmaps/root-ca", json={"data": {"ca.crt": "PEM-2"}},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    wait_for(lambda: sh(api, ns, "proj", "cat /all/ca.crt") == "PEM-2", timeout=30, what="the update")


def _jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_service_account_token_volume_holds_a_token_bound_to_the_pod(node, api, http, ns):
    if not serves(http, "/api/v1", "serviceaccounts/token"):
        pytest.skip("the API server does not serve serviceaccounts/token yet (issue 14, h-sa)")
    http.post(f"/api/v1/namespaces/{ns}/serviceaccounts", json={
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})
    http.post(f"/api/v1/namespaces/{ns}/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"},
        "data": {"ca.crt": (node.pki / "ca.crt").read_text()}})
    pod = make_pod("sa", node, container("c", SLEEP, volumeMounts=[
        {"name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}]),
        serviceAccountName="robot", automountServiceAccountToken=False,
        volumes=[{"name": "token", "projected": {"defaultMode": 0o644, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607, "audience": "api"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}}])
    created = create(http, ns, pod)
    wait_pod(http, ns, "sa", running("c"), "sa running")
    d = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert sh(api, ns, "sa", f"stat -L -c %a {d}/token {d}/ca.crt {d}/namespace") == "644\n644\n644\n"
    assert sh(api, ns, "sa", f"cat {d}/namespace") == ns
    assert "BEGIN CERTIFICATE" in sh(api, ns, "sa", f"cat {d}/ca.crt")
    claims = _jwt_claims(sh(api, ns, "sa", f"cat {d}/token"))
    assert claims["sub"] == f"system:serviceaccount:{ns}:robot"
    assert claims["aud"] in ("api", ["api"])
    k8s = claims["kubernetes.io"]
    assert k8s["pod"] == {"name": "sa", "uid": created["metadata"]["uid"]}
    assert claims["exp"] - claims["iat"] == 3607


def test_token_manager_refreshes_at_80_percent_of_the_lifetime(api, http, ns):
    if not serves(http, "/api/v1", "serviceaccounts/token"):
        pytest.skip("the API server does not serve serviceaccounts/token yet (issue 14, h-sa)")
    http.post(f"/api/v1/namespaces/{ns}/serviceaccounts", json={
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})
    pod = http.post(f"/api/v1/namespaces/{ns}/pods", json={
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"serviceAccountName": "robot", "automountServiceAccountToken": False,
                 "containers": [{"name": "c", "image": "x"}]}}).json()
    uid = pod["metadata"]["uid"]
    clock = FakeClock(wall=time.time())

    async def run():
        async with Client(api.connection()) as client:
            tm = TokenManager(client, clock=clock, jitter=lambda: 0.0)
            kw = dict(pod_name="p", pod_uid=uid, audience="", expiration_seconds=1000)
            first = await tm.get(ns, "robot", **kw)
            assert await tm.get(ns, "robot", **kw) == first and tm.requests == 1
            left = tm.refresh_in(ns, "robot", pod_uid=uid, audience="", expiration_seconds=1000)
            assert 790 <= left <= 800
            clock.step(left - 5)  # not yet
            assert await tm.get(ns, "robot", **kw) == first and tm.requests == 1
            clock.step(10)  # past 80 % of the lifetime
            second = await tm.get(ns, "robot", **kw)
            assert tm.requests == 2 and second != first
            # A new token (the server's clock is real: its exp may fall in the same second).
            assert _jwt_claims(second)["kubernetes.io"]["pod"]["uid"] == uid
            assert _jwt_claims(second)["exp"] >= _jwt_claims(first)["exp"]
            tm.forget_pod(uid)
            assert tm.refresh_in(ns, "robot", pod_uid=uid, audience="", expiration_seconds=1000) is None
    asyncio.run(run())


def test_downward_api_item_with_an_unsupported_field_is_a_failed_mount(node, http, ns):
    create(http, ns, make_pod("bad", node, container("c", SLEEP, volumeMounts=[
        {"name": "info", "mountPath": "/info"}]), volumes=[{"name": "info", "downwardAPI": {"items": [
            {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]}}]))

    def failed_mount():
        evs = http.get(f"/api/v1/namespaces/{ns}/events").json()["items"]
        return [e for e in evs if e.get("reason") == "FailedMount"]
    evs = wait_for(failed_mount, timeout=30, what="a FailedMount event")
    assert "status.podIP" in evs[0]["message"]
    pod = http.get(f"/api/v1/namespaces/{ns}/pods/bad").json()
    waiting = pod["status"]["containerStatuses"][0]["state"].get("waiting") if pod["status"].get(
        "containerStatuses") else {"reason": "ContainerCreating"}
    assert waiting["reason"] == "ContainerCreating"


# -- pure parts: the files of a volume, the variables, the flags -------------------------------

POD = {"metadata": {"name": "p", "namespace": "ns1", "uid": "u-1", "labels": {"b": "2", "a": "1"},
                    "annotations": {"q": 'x"y\\z'}},
       "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "250m"}}}]}}


def test_projected_payload_sources_modes_items_and_errors():
    objects = {("configmaps", "ns1", "cm"): {"data": {"k": "v", "other": "o"}},
               ("secrets", "ns1", "s"): {"data": {"pw": base64.b64encode(b"\x00bin").decode()}}}

    def get(kind, ns, name):
        return objects.get((kind, ns, name))
    spec = {"defaultMode": 0o600, "sources": [
        {"configMap": {"name": "cm", "items": [{"key": "k", "path": "dir/k", "mode": 0o444}]}},
        {"secret": {"name": "s"}},
        {"configMap": {"name": "missing", "optional": True}},
        {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                                   {"path": "cpu", "resourceFieldRef": {"containerName": "c",
                                                                        "resource": "requests.cpu",
                                                                        "divisor": "1m"}}]}},
        {"serviceAccountToken": {"path": "token"}}]}
    out = projected.projected_payload(spec, POD, get_object=get, tokens={4: "jwt"}, node_allocatable={})
    assert out == {"dir/k": (b"v", 0o444), "pw": (b"\x00bin", 0o600), "labels": (b'a="1"\nb="2"', 0o600),
                   "cpu": (b"250", 0o600), "token": (b"jwt", 0o600)}
    assert projected.token_sources({"projected": spec}) == [(4, "", 3600)]
    for bad, message in [
        ({"sources": [{"configMap": {"name": "missing"}}]}, 'configmap "missing" not found'),
        ({"sources": [{"configMap": {"name": "cm", "items": [{"key": "nope", "path": "x"}]}}]},
         "non-existent key 'nope'"),
        ({"sources": [{"configMap": {"name": "cm", "items": [{"key": "k", "path": "../x"}]}}]}, "'..'"),
        ({"sources": [{"downwardAPI": {"items": [{"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]}}]},
         "status.podIP"),
        ({"sources": [{"downwardAPI": {"items": [{"path": "m", "resourceFieldRef": {
            "containerName": "nope", "resource": "limits.memory"}}]}}]}, "'nope'"),
        ({"sources": [{"serviceAccountToken": {"path": "/abs"}}]}, "'/abs'"),
    ]:
        with pytest.raises(VolumeError, match=re.escape(message)):
            projected.projected_payload(bad, POD, get_object=get, tokens={}, node_allocatable={})


def test_downward_api_formats_maps_as_the_kubelet_does():
    out = projected.downward_payload([{"path": "a", "fieldRef": {"fieldPath": "metadata.annotations"}},
                                      {"path": "one", "fieldRef": {"fieldPath": "metadata.labels['b']"}},
                                      {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}}],
                                     POD, default_mode=0o644, node_allocatable={})
    assert out == {"a": (b'q="x\\"y\\\\z"', 0o644), "one": (b"2", 0o644), "uid": (b"u-1", 0o644)}


def test_service_variables_and_the_address_pods_reach():
    assert envvars.kubernetes_service_env("fd00::1", 6443)["KUBERNETES_PORT"] == "tcp://[fd00::1]:6443"
    env, command, _ = envvars.resolve({"name": "c", "command": ["echo", "$(KUBERNETES_SERVICE_PORT)"],
                                       "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "mine"}]},
                                      POD, get_object=lambda *a: None, pod_ip=None, host_ip=None,
                                      service_env=envvars.kubernetes_service_env("10.0.0.1", 443))
    assert env["KUBERNETES_SERVICE_HOST"] == "mine"  # the container's own wins
    assert env["KUBERNETES_PORT_443_TCP_ADDR"] == "10.0.0.1" and command == ["echo", "443"]
    assert kmain.api_endpoint("https://127.0.0.1:6443", "10.1.2.3") == ("10.1.2.3", 6443)
    assert kmain.api_endpoint("https://localhost", "10.1.2.3") == ("10.1.2.3", 443)
    assert kmain.api_endpoint("https://192.168.5.1:6443", "10.1.2.3") == ("192.168.5.1", 6443)


def test_bad_tls_flags_are_one_line_errors(tmp_path, pki_dir):
    pki.ensure(str(pki_dir), pki.ClusterFacts())
    for args, message in [
        (["kubelet", "--tls-cert-file", str(pki_dir / "ca.crt")], "go together"),
        (["kubelet", "--tls-cert-file", "/nope.crt", "--tls-private-key-file", "/nope.key"],
         "No such file or directory"),
        (["kubelet", "--authorization-mode", "Webhook"], "need --tls-cert-file"),
        (["apiserver", "--etcd-servers", "http://127.0.0.1:1", "--plain-http", "--kubelet-client-certificate",
          str(pki_dir / "apiserver-kubelet-client.crt")], "go together"),
        (["apiserver", "--etcd-servers", "http://127.0.0.1:1", "--plain-http", "--kubelet-client-certificate",
          str(pki_dir / "apiserver-kubelet-client.crt"), "--kubelet-client-key", str(pki_dir / "ca.crt")],
         "--kubelet-client-certificate/--kubelet-client-key"),
    ]:
        r = subprocess.run([sys.executable, "-m", "cluster.cli", *args, "--kubeconfig", "/dev/null"]
                           if args[0] == "kubelet" else [sys.executable, "-m", "cluster.cli", *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- the token's refresh by the kubelet itself, on an injected clock ---------------------------

async def _until(pred, timeout=30.0, what="condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_kubelet_rewrites_the_token_file_when_80_percent_of_its_life_has_passed(apiserver, http, ns, tmp_path):
    """An in-process kubelet (real runtime, real pod, the session's API server) on a fake
    clock: stepping the clock past 80 % of the token's 600 s makes the pod's worker sync
    and write a new token, atomically, into the same file."""
    from kubelet.kubelet import Kubelet
    from kubelet.runtime.linux.runtime import LinuxRuntime
    from tests.test_kubelet_runtime import free_cidr
    http.post(f"/api/v1/namespaces/{ns}/serviceaccounts", json={
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})
    tag = uuid.uuid4().hex[:8]
    rt = LinuxRuntime(str(tmp_path / "node"), pod_cidr=await asyncio.to_thread(free_cidr),
                      bridge=f"mk8st{tag}", cgroup_parent=f"minik8s-test-{tag}")
    client = Client(apiserver.connection())
    clock = FakeClock(start=1000.0, wall=time.time())
    kl = Kubelet(client, rt, node_name=f"tok-{tag}", node_ip="127.0.0.1", clock=clock, pleg_period=0.1)
    try:
        await kl.start()
        pod = await client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
                                   "spec": {"nodeName": kl.node_name, "serviceAccountName": "robot",
                                            "automountServiceAccountToken": False,
                                            "terminationGracePeriodSeconds": 0,
                                            "volumes": [{"name": "tok", "projected": {"sources": [
                                                {"serviceAccountToken": {"path": "token",
                                                                         "expirationSeconds": 600}}]}}],
                                            "containers": [{"name": "c", "image": "busybox", "command": SLEEP,
                                                            "volumeMounts": [{"name": "tok", "mountPath": "/t"}]}]}})
        uid = pod["metadata"]["uid"]
        path = Path(rt.pods_dir) / uid / "volumes" / "tok" / "token"

        async def token():
            return path.read_text() if path.exists() else None
        first = await _until(token, what="the token file")
        assert _jwt_claims(first)["kubernetes.io"]["pod"]["uid"] == uid
        assert kl.tokens.requests == 1
        clock.step(400)  # two thirds of its life: the same token
        (w,) = kl.workers.values()
        n = w.syncs
        w.wake.set()

        async def synced():
            return w.syncs > n
        await _until(synced, what="a sync")
        assert await token() == first and kl.tokens.requests == 1
        # Past 480 s of the token's life: the worker's own timer fires, it syncs and
        # refreshes, once (the new token is not due: no request on every sync).
        clock.step(100)

        async def refreshed():
            t = await token()
            return t if t and t != first else None
        second = await _until(refreshed, what="the refreshed token")
        assert kl.tokens.requests == 2
        assert _jwt_claims(second)["kubernetes.io"]["pod"]["uid"] == uid
        assert os.readlink(path.parent / "token") == "..data/token"
    finally:
        await kl.stop()
        await client.close()

        def clean():
            for u in os.listdir(rt.pods_dir):
                rt.remove_pod(u)
            rt.cleanup_orphans(keep=[])
            rt.network.delete_bridge()
            Cgroup(rt.cgroups.dirs, v2=rt.cgroups.v2).remove()
            rt.close()
        await asyncio.to_thread(clean)
