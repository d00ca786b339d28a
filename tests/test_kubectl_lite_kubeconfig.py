"""kubectl-lite with everything a kubeconfig can carry, against a real API server on TLS
(client certificates, Node,RBAC, bootstrap tokens): client certificates and keys as files
and as data, tokens and token files, the CA as a file and as data,
insecure-skip-tls-verify, tls-server-name, exec credentials, and kubectl's flags that
override them. Who the server saw is read back from its 403 messages, which name the
user, so each case shows which credential was sent.

The API server's certificate names 10.255.255.1 and `kubernetes` but not 127.0.0.1,
where it listens: reaching it by address fails verification unless tls-server-name (or
insecure-skip-tls-verify) says otherwise.
"""
import base64
import datetime
import json
import os
import subprocess
import sys
import textwrap

import httpx
import pytest

from client.kubeconfig import KubeConfig
from cluster import pki as cluster_pki
from machinery import pki
from tests.procs import Component, Etcd, free_port, wait_for

KUBECTL_LITE = os.path.join(os.path.dirname(sys.executable), "kubectl-lite")
TOKEN_ID, TOKEN_SECRET = "abcdef", "0123456789abcdef"
TOKEN = f"{TOKEN_ID}.{TOKEN_SECRET}"


class Server:
    def __init__(self, pki_dir: str, url: str):
        self.pki_dir, self.url = pki_dir, url
        self.ca_file = os.path.join(pki_dir, "ca.crt")

    def file(self, name: str) -> str:
        return os.path.join(self.pki_dir, name)

    def read(self, name: str) -> bytes:
        with open(self.file(name), "rb") as f:
            return f.read()


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    cluster_pki.ensure(d, cluster_pki.ClusterFacts(apiserver_ips=("10.255.255.1",)),
                       key_algorithm="ECDSA-P256")
    _sign(d, "jane", ("dev",))
    return d


@pytest.fixture(scope="module")
def server(pki_dir):
    d = pki_dir
    etcd = Etcd().start()
    port = free_port()
    api = Component("apiserver", "--etcd-servers", etcd.url, "--bind-address", "127.0.0.1",
                    "--secure-port", str(port), "--tls-cert-file", os.path.join(d, "apiserver.crt"),
                    "--tls-private-key-file", os.path.join(d, "apiserver.key"),
                    "--client-ca-file", os.path.join(d, "ca.crt"),
                    "--service-account-key-file", os.path.join(d, "sa.pub"),
                    "--service-account-signing-key-file", os.path.join(d, "sa.key"),
                    "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
                    "--authorization-mode", "Node,RBAC", "--enable-bootstrap-token-auth").start()
    s = Server(d, f"https://127.0.0.1:{port}")
    admin = _ctx(s, "admin")
    try:
        def ready():
            assert api.alive(), api.log()
            return httpx.get(s.url + "/readyz", verify=admin, timeout=2).status_code == 200
        wait_for(ready, timeout=60, what="the API server on TLS")
        expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
                  "metadata": {"name": f"bootstrap-token-{TOKEN_ID}", "namespace": "kube-system"},
                  "stringData": {"token-id": TOKEN_ID, "token-secret": TOKEN_SECRET,
                                 "usage-bootstrap-authentication": "true",
                                 "expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}}
        r = httpx.post(s.url + "/api/v1/namespaces/kube-system/secrets", json=secret, verify=admin, timeout=10)
        assert r.status_code == 201, r.text
        yield s
    finally:
        api.stop()
        etcd.stop()


def _sign(d: str, user: str, groups: tuple[str, ...]) -> None:
    ca_cert = pki.load_cert(open(os.path.join(d, "ca.crt"), "rb").read())
    ca_key = pki.load_key(open(os.path.join(d, "ca.key"), "rb").read())
    key = pki.new_key("ECDSA-P256")
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = pki.sign(pki.CertSpec(user, groups), key.public_key(), ca_cert=ca_cert, ca_key=ca_key,
                    now=now, validity=datetime.timedelta(days=1))
    with open(os.path.join(d, f"{user}.crt"), "wb") as f:
        f.write(pki.cert_pem(cert))
    with open(os.path.join(d, f"{user}.key"), "wb") as f:
        f.write(pki.key_pem(key))


def _ctx(s: Server, user: str):
    import ssl
    ctx = ssl.create_default_context(cafile=s.ca_file)
    ctx.check_hostname = False      # 127.0.0.1 is deliberately not in its certificate
    ctx.load_cert_chain(s.file(f"{user}.crt"), s.file(f"{user}.key"))
    return ctx


def write(tmp_path, *, cluster: dict, user: dict, name: str = "config") -> str:
    kc = KubeConfig()
    kc.clusters["c"] = cluster
    kc.users["u"] = user
    kc.set_context("ctx", cluster="c", user="u", namespace="default")
    kc.current_context = "ctx"
    path = str(tmp_path / name)
    kc.save(path)
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubectl_lite(path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECTL_LITE, "--kubeconfig", path, *args], capture_output=True, text=True,
                          timeout=60)


def forbidden_user(r: subprocess.CompletedProcess) -> str:
    """The user a 403 names (`... User "jane" cannot ...`)."""
    assert r.returncode == 1 and "(Forbidden)" in r.stderr, r.stdout + r.stderr
    return r.stderr.split('User "', 1)[1].split('"', 1)[0]


def named(s: Server, **cluster) -> dict:
    """A cluster entry reaching the server by address, verifying the name `kubernetes`."""
    return {"server": s.url, "tls-server-name": "kubernetes", **cluster}


def test_client_certificate_and_key_as_data(server, tmp_path):
    path = write(tmp_path, cluster=named(server, **{"certificate-authority-data": b64(server.read("ca.crt"))}),
                 user={"client-certificate-data": b64(server.read("admin.crt")),
                       "client-key-data": b64(server.read("admin.key"))})
    r = kubectl_lite(path, "get", "namespaces", "kube-system", "-o", "name")
    assert r.returncode == 0 and r.stdout.strip() == "namespace/kube-system", r.stderr


def test_client_certificate_and_key_as_files_relative_to_the_kubeconfig(server, tmp_path):
    for name in ("ca.crt", "jane.crt", "jane.key"):
        (tmp_path / name).write_bytes(server.read(name))
    path = write(tmp_path, cluster=named(server, **{"certificate-authority": "ca.crt"}),
                 user={"client-certificate": "jane.crt", "client-key": "jane.key"})
    r = kubectl_lite(path, "get", "pods")
    assert forbidden_user(r) == "jane"
    assert 'pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the ' \
           'namespace "default"' in r.stderr


def test_token_and_token_file(server, tmp_path):
    cluster = named(server, **{"certificate-authority": server.ca_file})
    path = write(tmp_path, cluster=cluster, user={"token": TOKEN})
    assert forbidden_user(kubectl_lite(path, "get", "pods")) == f"system:bootstrap:{TOKEN_ID}"
    (tmp_path / "token").write_text(TOKEN + "\n")
    path = write(tmp_path, cluster=cluster, user={"tokenFile": str(tmp_path / "token")}, name="file")
    assert forbidden_user(kubectl_lite(path, "get", "pods")) == f"system:bootstrap:{TOKEN_ID}"
    # a token that is not the server's: 401, in kubectl's words
    path = write(tmp_path, cluster=cluster, user={"token": f"{TOKEN_ID}.ffffffffffffffff"}, name="bad")
    r = kubectl_lite(path, "get", "pods")
    assert r.returncode == 1 and r.stderr.startswith("error: You must be logged in to the server"), r.stderr


def test_the_ca_decides_whom_to_trust(server, tmp_path):
    user = {"client-certificate-data": b64(server.read("admin.crt")),
            "client-key-data": b64(server.read("admin.key"))}
    # no CA: the system's trust store, which does not know the cluster's CA
    path = write(tmp_path, cluster=named(server), user=user)
    r = kubectl_lite(path, "get", "namespaces")
    assert r.returncode == 1 and "Unable to connect to the server" in r.stderr and "certificate" in r.stderr, r.stderr
    # another CA (etcd's): refused as well
    path = write(tmp_path, cluster=named(server, **{"certificate-authority": server.file("etcd/ca.crt")}),
                 user=user, name="other-ca")
    r = kubectl_lite(path, "get", "namespaces")
    assert r.returncode == 1 and "certificate" in r.stderr, r.stderr
    # insecure-skip-tls-verify: the server is not checked at all (no CA, no name)
    path = write(tmp_path, cluster={"server": server.url, "insecure-skip-tls-verify": True}, user=user,
                 name="insecure")
    r = kubectl_lite(path, "get", "namespaces", "default", "-o", "name")
    assert r.returncode == 0 and r.stdout.strip() == "namespace/default", r.stderr


def test_tls_server_name_is_the_name_verified(server, tmp_path):
    user = {"client-certificate-data": b64(server.read("admin.crt")),
            "client-key-data": b64(server.read("admin.key"))}
    ca = {"certificate-authority-data": b64(server.read("ca.crt"))}
    # 127.0.0.1 is not in the server's certificate
    path = write(tmp_path, cluster={"server": server.url, **ca}, user=user)
    r = kubectl_lite(path, "get", "namespaces")
    assert r.returncode == 1 and "Unable to connect to the server" in r.stderr, r.stderr
    path = write(tmp_path, cluster={"server": server.url, "tls-server-name": "kubernetes.default.svc", **ca},
                 user=user, name="named")
    assert kubectl_lite(path, "get", "namespaces").returncode == 0
    # the flag does the same for a kubeconfig that has no tls-server-name
    r = subprocess.run([KUBECTL_LITE, "--kubeconfig", str(tmp_path / "config"), "--tls-server-name",
                        "kubernetes", "get", "namespaces"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_kubectls_flags_override_the_kubeconfig(server, tmp_path):
    # a kubeconfig with jane inline; the flags name the admin's files and the CA
    path = write(tmp_path, cluster={"server": server.url, "tls-server-name": "kubernetes"},
                 user={"client-certificate-data": b64(server.read("jane.crt")),
                       "client-key-data": b64(server.read("jane.key"))})
    r = subprocess.run([KUBECTL_LITE, "--kubeconfig", path, "--certificate-authority", server.ca_file,
                        "--client-certificate", server.file("admin.crt"), "--client-key", server.file("admin.key"),
                        "get", "pods"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # --server with the flags alone, no kubeconfig at all
    r = subprocess.run([KUBECTL_LITE, "--server", server.url, "--certificate-authority", server.ca_file,
                        "--tls-server-name", "kubernetes", "--client-certificate", server.file("jane.crt"),
                        "--client-key", server.file("jane.key"), "get", "pods"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "KUBECONFIG": "/nonexistent"})
    assert forbidden_user(r) == "jane"
    r = subprocess.run([KUBECTL_LITE, "--server", server.url, "--insecure-skip-tls-verify", "--token", TOKEN,
                        "get", "pods"], capture_output=True, text=True, timeout=60)
    assert forbidden_user(r) == f"system:bootstrap:{TOKEN_ID}"


def test_server_flag_keeps_the_kubeconfigs_ca_and_user(server, tmp_path):
    """kubectl's --server replaces the context's server only: the CA and the client
    certificate still come from the kubeconfig (a lab's admin.conf aimed at another
    control-plane host)."""
    path = write(tmp_path, cluster={"server": "https://127.0.0.1:1", "tls-server-name": "kubernetes",
                                    "certificate-authority-data": b64(server.read("ca.crt"))},
                 user={"client-certificate-data": b64(server.read("jane.crt")),
                       "client-key-data": b64(server.read("jane.key"))})
    r = subprocess.run([KUBECTL_LITE, "--kubeconfig", path, "--server", server.url, "get", "pods"],
                       capture_output=True, text=True, timeout=60)
    assert forbidden_user(r) == "jane"


def test_exec_credentials_with_a_client_certificate(server, tmp_path):
    plugin = tmp_path / "plugin.py"
    status = {"clientCertificateData": server.read("jane.crt").decode(),
              "clientKeyData": server.read("jane.key").decode()}
    plugin.write_text(textwrap.dedent(f"""\
        import json
        print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                          "status": {json.dumps(status)}}}))
        """))
    path = write(tmp_path, cluster=named(server, **{"certificate-authority": server.ca_file}),
                 user={"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                                "args": [str(plugin)], "interactiveMode": "Never"}})
    assert forbidden_user(kubectl_lite(path, "get", "pods")) == "jane"


def test_exec_credentials_with_a_token(server, tmp_path):
    path = write(tmp_path, cluster=named(server, **{"certificate-authority": server.ca_file}),
                 user={"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "sh",
                                "args": ["-c", 'echo \'{"apiVersion": "client.authentication.k8s.io/v1", '
                                               '"kind": "ExecCredential", "status": {"token": "' + TOKEN + '"}}\''],
                                "interactiveMode": "Never"}})
    assert forbidden_user(kubectl_lite(path, "get", "pods")) == f"system:bootstrap:{TOKEN_ID}"


@pytest.mark.parametrize("user, message", [
    ({"client-certificate": "/nonexistent/me.crt", "client-key": "/nonexistent/me.key"},
     "error: unable to read client-cert /nonexistent/me.crt for user due to open /nonexistent/me.crt: "
     "no such file or directory"),
    ({"client-key": "KEY"}, "error: client-cert-data or client-cert must be specified for the user to use "
                            "the clientCert authentication method."),
    ({"client-certificate": "CERT"}, "error: client-key-data or client-key must be specified for the user to "
                                     "use the clientCert authentication method."),
    ({"client-certificate": "CERT", "client-key": "OTHER"}, "error: unable to use the TLS material of the "
                                                            "kubeconfig: KEY_VALUES_MISMATCH"),
])
def test_bad_tls_material_is_one_line(pki_dir, tmp_path, user, message):
    """Found before any request: no server is needed (nothing listens on port 1)."""
    server = Server(pki_dir, "https://127.0.0.1:1")
    (tmp_path / "other.key").write_bytes(pki.key_pem(pki.new_key("ECDSA-P256")))
    subst = {"KEY": server.file("jane.key"), "CERT": server.file("jane.crt"), "OTHER": str(tmp_path / "other.key")}
    user = {k: subst.get(v, v) for k, v in user.items()}
    path = write(tmp_path, cluster=named(server, **{"certificate-authority": server.ca_file}), user=user)
    r = kubectl_lite(path, "get", "pods")
    assert r.returncode == 1 and r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_a_missing_ca_file_is_one_line_from_the_kubeconfig_or_the_flag(pki_dir, tmp_path):
    server = Server(pki_dir, "https://127.0.0.1:1")
    path = write(tmp_path, cluster={"server": server.url, "certificate-authority": str(tmp_path / "no-ca.crt")},
                 user={})
    r = kubectl_lite(path, "get", "pods")
    assert r.returncode == 1 and r.stderr == (f"error: unable to read certificate-authority {tmp_path}/no-ca.crt "
                                              f"for cluster due to open {tmp_path}/no-ca.crt: no such file or "
                                              "directory\n"), r.stderr
    path = write(tmp_path, cluster={"server": server.url, "certificate-authority": server.ca_file}, user={},
                 name="good")
    r = kubectl_lite(path, "--certificate-authority", "/nonexistent/ca.crt", "get", "pods")
    assert r.returncode == 1 and r.stderr.startswith("error: unable to read certificate-authority "
                                                     "/nonexistent/ca.crt"), r.stderr

