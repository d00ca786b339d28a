"""Authentication against a real API server over HTTPS (apiserver/serving.py,
apiserver/auth/authn.py): x509 client certificates, bootstrap tokens, anonymous, and
what bad credentials and plain HTTP get. The server runs with --authorization-mode=RBAC,
as a secure cluster does."""
from __future__ import annotations

import base64
import importlib.util
import socket
import ssl
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from machinery import times
from tests.secure import SecureCluster

pytestmark = pytest.mark.kubectl


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = SecureCluster(str(tmp_path_factory.mktemp("secure")), "--authorization-mode", "RBAC",
                      "--enable-bootstrap-token-auth").start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def admin(cluster):
    with cluster.client(cluster.admin) as c:
        yield c


def unauthorized(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


def test_kubectl_and_the_official_client_work_with_the_admin_certificate(cluster):
    kc = cluster.kubeconfig("admin", cluster.admin)
    out = cluster.kubectl(kc, "get", "namespaces", "-o", "name")
    assert out.returncode == 0, out.stderr
    assert "namespace/kube-system" in out.stdout.split()
    out = cluster.kubectl(kc, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} "
                                                 "{.status.userInfo.groups}")
    assert out.returncode == 0, out.stderr
    assert out.stdout == 'kubernetes-admin ["system:masters","system:authenticated"]'

    from kubernetes import client, config
    api = client.CoreV1Api(config.new_client_from_config(config_file=kc))
    name = "py-" + uuid.uuid4().hex[:8]
    api.create_namespaced_config_map("default", {"metadata": {"name": name}})
    assert name in [cm.metadata.name for cm in api.list_namespaced_config_map("default").items]


def test_a_certificates_cn_and_o_are_the_user_and_groups(cluster):
    kc = cluster.kubeconfig("jane", cluster.user("jane", "devs", "ops"))
    out = cluster.kubectl(kc, "auth", "whoami", "-o", "json")
    assert out.returncode == 0, out.stderr
    import json
    info = json.loads(out.stdout)
    assert info["kind"] == "SelfSubjectReview"
    assert info["status"]["userInfo"] == {"username": "jane",
                                          "groups": ["devs", "ops", "system:authenticated"]}


def test_anonymous_may_see_version_and_health_but_no_resource(cluster):
    with cluster.client() as anon:
        assert anon.get("/version").status_code == 200
        assert anon.get("/healthz").status_code == 200
        r = anon.get("/api/v1/namespaces/default/pods")
        assert r.status_code == 403
        assert r.json()["message"] == ('pods is forbidden: User "system:anonymous" cannot list '
                                       'resource "pods" in API group "" in the namespace "default"')
        assert r.json()["reason"] == "Forbidden"
        # discovery is for authenticated users only (system:discovery)
        r = anon.get("/apis")
        assert r.status_code == 403
        assert r.json()["message"] == 'forbidden: User "system:anonymous" cannot get path "/apis"'


def test_a_bad_token_is_401_and_changes_nothing(cluster, admin):
    name = "cm-" + uuid.uuid4().hex[:8]
    with cluster.client(token="not-a-real-token") as c:
        unauthorized(c.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": name}}))
        unauthorized(c.get("/version"))  # a presented credential never falls back to anonymous
    with cluster.client(token="abcdef.0123456789abcdef") as c:  # a bootstrap token with no Secret
        unauthorized(c.get("/api/v1/namespaces"))
    assert admin.get(f"/api/v1/namespaces/default/configmaps/{name}").status_code == 404


def test_a_certificate_from_another_ca_fails_the_handshake_and_changes_nothing(cluster, admin):
    # kube-apiserver requests client certificates without requiring them and lets its x509
    # authenticator refuse one it cannot verify (401). Python's ssl can only ask for an
    # optional certificate that it verifies, so the handshake fails instead: nothing is
    # served to that client either way.
    other = cluster.user("mallory", "system:masters", ca="other")
    name = "cm-" + uuid.uuid4().hex[:8]
    # (TLS 1.3 clients learn of it when they read the answer: the server's alert.)
    with cluster.client(other) as c:
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)):
            c.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": name}})
    assert admin.get(f"/api/v1/namespaces/default/configmaps/{name}").status_code == 404
    assert admin.get("/readyz").status_code == 200
    assert "Traceback" not in cluster.server.log()


def _raw(cluster, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", cluster.server.port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


def test_plain_http_to_the_https_port_is_answered_400_as_kube_apiserver_does(cluster, admin):
    answer = _raw(cluster, b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert answer == b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    r = httpx.get(cluster.url.replace("https:", "http:") + "/version", timeout=10)
    assert r.status_code == 400
    assert r.text == "Client sent an HTTP request to an HTTPS server.\n"
    assert _raw(cluster, b"\x00\x01garbage") == b""  # neither TLS nor HTTP: closed
    assert admin.get("/readyz").status_code == 200
    assert "Traceback" not in cluster.server.log()


def test_tls_serves_only_tls12_or_newer_with_the_serving_certificate(cluster):
    ctx = ssl.create_default_context(cafile=cluster.ca)
    with socket.create_connection(("127.0.0.1", cluster.server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="kubernetes.default.svc") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")


def _bootstrap_secret(token_id: str, secret: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
            "data": {k.replace("_", "-"): base64.b64encode(v.encode()).decode() for k, v in
                     {"token_id": token_id, "token_secret": secret, **data}.items()}}


def test_bootstrap_tokens(cluster, admin):
    later = times.rfc3339(time.time() + 3600)
    extra = "system:bootstrappers:kubeadm:default-node-token"
    good = _bootstrap_secret("abc123", "0123456789abcdef", expiration=later,
                             usage_bootstrap_authentication="true", auth_extra_groups=extra)
    expired = _bootstrap_secret("exp123", "0123456789abcdef", expiration=times.rfc3339(time.time() - 60),
                                usage_bootstrap_authentication="true")
    unusable = _bootstrap_secret("nou123", "0123456789abcdef", usage_bootstrap_authentication="false")
    for s in (good, expired, unusable):
        r = admin.post("/api/v1/namespaces/kube-system/secrets", json=s)
        assert r.status_code == 201, r.text

    kc = cluster.kubeconfig("bootstrap", token="abc123.0123456789abcdef")
    out = cluster.kubectl(kc, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} "
                                                 "{.status.userInfo.groups}")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f'system:bootstrap:abc123 ["system:bootstrappers","{extra}","system:authenticated"]'
    for token in ("abc123.0123456789abcdee",   # wrong secret
                  "exp123.0123456789abcdef",   # expired
                  "nou123.0123456789abcdef"):  # not for authentication
        with cluster.client(token=token) as c:
            unauthorized(c.get("/version"))

    # TokenReview answers the same (what a kubelet's webhook authentication asks)
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
              "spec": {"token": "abc123.0123456789abcdef"}}
    r = admin.post("/apis/authentication.k8s.io/v1/tokenreviews", json=review)
    assert r.status_code == 201, r.text
    assert r.json()["status"]["authenticated"] is True
    assert r.json()["status"]["user"]["username"] == "system:bootstrap:abc123"
    review["spec"]["token"] = "exp123.0123456789abcdef"
    status = admin.post("/apis/authentication.k8s.io/v1/tokenreviews", json=review).json()["status"]
    assert status == {"authenticated": False, "error": "invalid bearer token"}


def _exits(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", "apiserver",
                           "--etcd-servers", "http://127.0.0.1:1", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_server_refuses_to_start_insecure_or_misconfigured(cluster):
    out = _exits()
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: --tls-cert-file and --tls-private-key-file are required (or --plain-http, for an "
        "insecure local server)"]
    out = _exits("--plain-http", "--authorization-mode", "RBAC,Magic")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        'error: --authorization-mode: unknown authorization mode "Magic" (one of AlwaysAllow, '
        'AlwaysDeny, Node, RBAC)']
    if importlib.util.find_spec("apiserver.auth.node") is None:  # until the Node authorizer exists
        out = _exits("--plain-http", "--authorization-mode", "Node,RBAC")
        assert out.returncode == 1
        assert out.stderr.strip().splitlines() == [
            "error: --authorization-mode=Node: this build has no Node authorizer"]
    out = _exits("--tls-cert-file", "/nonexistent.crt", "--tls-private-key-file", "/nonexistent.key")
    assert out.returncode == 1
    assert out.stderr.startswith("error: cannot load the serving certificate:")
    assert len(out.stderr.strip().splitlines()) == 1


def test_without_anonymous_auth_a_request_with_no_credentials_is_401(tmp_path):
    c = SecureCluster(str(tmp_path), "--anonymous-auth=false").start()
    try:
        with c.client() as anon:
            unauthorized(anon.get("/version"))
        with c.client(c.admin) as admin:
            assert admin.get("/version").status_code == 200
    finally:
        c.stop()


def test_etcd_over_tls_with_the_apiserver_etcd_client_certificate(tmp_path):
    c = SecureCluster(str(tmp_path), etcd_tls=True).start()
    try:
        with c.client(c.admin) as admin:
            r = admin.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "over-tls"}})
            assert r.status_code == 201, r.text
            assert admin.get("/readyz/etcd").status_code == 200
        # etcd itself refuses a client without a certificate of its CA
        anonymous = ssl.create_default_context(cafile=str(tmp_path / "pki" / "etcd" / "ca.crt"))
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)):
            httpx.get(c.etcd.url + "/health", verify=anonymous, timeout=10)
    finally:
        c.stop()
