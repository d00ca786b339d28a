"""Kubeconfig files: round trip, KUBECONFIG merging, path resolution, credentials."""
import base64
import os
import shutil
import ssl
import stat
import subprocess
import tempfile

import pytest
import yaml

from client import kubeconfig
from client.kubeconfig import Connection, KubeConfig
from client.rest import Client

FULL = """
apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority-data: {ca}
- name: lab
  cluster:
    server: https://lab:6443
    certificate-authority: certs/ca.crt
    insecure-skip-tls-verify: true
    proxy-url: http://proxy:3128
users:
- name: admin
  user:
    client-certificate: certs/admin.crt
    client-key: certs/admin.key
- name: robot
  user:
    tokenFile: token
contexts:
- name: prod-admin
  context: {{cluster: prod, user: admin, namespace: kube-system}}
- name: lab-robot
  context: {{cluster: lab, user: robot}}
current-context: prod-admin
preferences: {{}}
"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_round_trip_keeps_everything(tmp_path):
    src = write(str(tmp_path / "a" / "config"), FULL.format(ca=base64.b64encode(b"PEM").decode()))
    cfg = kubeconfig.load(src)
    assert cfg.current_context == "prod-admin"
    assert cfg.clusters["lab"]["certificate-authority"] == str(tmp_path / "a" / "certs" / "ca.crt")
    assert cfg.users["robot"]["tokenFile"] == str(tmp_path / "a" / "token")
    assert cfg.clusters["lab"]["proxy-url"] == "http://proxy:3128", "unknown fields are kept"
    out = str(tmp_path / "b" / "config")
    cfg.save(out)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    again = kubeconfig.load(out)
    assert again == cfg
    doc = yaml.safe_load(open(out))
    assert doc["kind"] == "Config" and [c["name"] for c in doc["contexts"]] == ["prod-admin", "lab-robot"]


def test_built_config_round_trips_and_resolves(tmp_path):
    cfg = KubeConfig()
    cfg.set_cluster("local", server="https://127.0.0.1:6443", certificate_authority_data=b"CA PEM")
    cfg.set_user("admin", token="s3cret")
    cfg.set_context("admin@local", cluster="local", user="admin", namespace="team-a")
    cfg.current_context = "admin@local"
    path = str(tmp_path / "kc")
    cfg.save(path)
    loaded = kubeconfig.load(path)
    assert loaded == cfg
    conn = loaded.connection()
    assert conn == Connection(server="https://127.0.0.1:6443", namespace="team-a", token="s3cret",
                              ca_data=b"CA PEM")
    assert loaded.connection(namespace="other").namespace == "other"


def test_kubeconfig_env_merges_first_definition_wins(tmp_path):
    one = write(str(tmp_path / "one"), """
clusters: [{name: c, cluster: {server: "http://first"}}]
users: [{name: u, user: {token: t1}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
""")
    two = write(str(tmp_path / "two"), """
clusters: [{name: c, cluster: {server: "http://second"}}, {name: d, cluster: {server: "http://d"}}]
users: [{name: u, user: {token: t2}}]
contexts: [{name: y, context: {cluster: d, user: u, namespace: ns-y}}]
current-context: y
""")
    env = {"KUBECONFIG": os.pathsep.join([one, str(tmp_path / "missing"), two])}
    cfg = kubeconfig.load(env=env)
    assert cfg.current_context == "y", "current-context comes from the first file that sets it"
    assert cfg.clusters["c"]["server"] == "http://first"
    assert cfg.users["u"]["token"] == "t1"
    conn = cfg.connection()
    assert (conn.server, conn.namespace, conn.token) == ("http://d", "ns-y", "t1")
    assert cfg.connection("x").namespace == "default"
    assert kubeconfig.load(str(two)).users["u"]["token"] == "t2", "an explicit path wins over the env"
    assert kubeconfig.load(env={"HOME": str(tmp_path / "nohome")}) == KubeConfig()


def test_token_file_and_errors(tmp_path):
    write(str(tmp_path / "token"), "from-file\n")
    cfg = kubeconfig.loads("""
clusters: [{name: c, cluster: {server: "http://s"}}]
users: [{name: u, user: {tokenFile: token}}]
contexts: [{name: x, context: {cluster: c, user: u}}, {name: broken, context: {cluster: nope, user: u}}]
""", base_dir=str(tmp_path))
    with pytest.raises(ValueError, match="current-context"):
        cfg.connection()
    assert cfg.connection("x").token == "from-file"
    with pytest.raises(ValueError, match="nope"):
        cfg.connection("broken")
    with pytest.raises(ValueError, match="missing"):
        cfg.connection("missing")


def _self_signed(tmp_path):
    """A throwaway certificate and key, made by the openssl command line."""
    crt, key = tmp_path / "c.crt", tmp_path / "c.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=admin", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    return crt.read_bytes(), key.read_bytes()


async def test_tls_material_reaches_the_http_client(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = _self_signed(tmp_path)
    before = set(os.listdir(tempfile.gettempdir()))
    cfg = KubeConfig()
    cfg.set_cluster("c", server="https://127.0.0.1:1", certificate_authority_data=cert)
    cfg.set_user("u", client_certificate_data=cert, client_key_data=key)
    cfg.set_context("x", cluster="c", user="u")
    conn = kubeconfig.loads(cfg.dumps()).connection("x")
    ctx = conn.ssl_context()
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.get_ca_certs()[0]["subject"] == ((("commonName", "admin"),),)
    leaked = set(os.listdir(tempfile.gettempdir())) - before
    assert not [f for f in leaked if f.startswith("minik8s-cred-")], "inline keys must not linger on disk"
    insecure = Connection(server="https://x", insecure=True).ssl_context()
    assert insecure.verify_mode == ssl.CERT_NONE
    assert Connection(server="http://x").ssl_context() is True
    async with Client(Connection(server="http://x", token="t")) as c:
        assert c._http.headers["authorization"] == "Bearer t"
