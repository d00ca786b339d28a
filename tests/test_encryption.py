"""Encryption at rest (--encryption-provider-config), against a real etcd and API server.

The raw values are read from etcd with the aetcd client directly, not through the
server's storage layer, so what is asserted is what an attacker with etcd's data sees.
"""
from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import threading
import uuid

import aetcd
import httpx
import orjson
import pytest

from apiserver.storage import encryption
from apiserver.storage.encryption import ConfigError, parse_config
from tests.procs import APIServer, Component, Etcd, wait_for

KEY1 = base64.b64encode(b"k" * 32).decode()
KEY2 = base64.b64encode(os.urandom(32)).decode()
GCM_KEY = base64.b64encode(os.urandom(16)).decode()
BOX_KEY = base64.b64encode(os.urandom(32)).decode()
PLAIN = "s3cret-Value-7f2c1"
B64 = base64.b64encode(PLAIN.encode())  # how a Secret's data is stored


def config(resources: str, *providers: str) -> str:
    return ("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
            f"resources:\n- resources: [{resources}]\n  providers:\n"
            + "".join(f"  - {p}\n" for p in providers))


def aescbc(*keys: tuple[str, str]) -> str:
    return "aescbc: {keys: [" + ", ".join(f"{{name: {n}, secret: {s}}}" for n, s in keys) + "]}"


class Cluster:
    """One etcd; an API server restarted with whichever encryption config a step needs."""

    def __init__(self, etcd: Etcd, tmp):
        self.etcd, self.tmp = etcd, tmp
        self.server: APIServer | None = None

    def serve(self, text: str) -> httpx.Client:
        self.stop()
        path = self.tmp / f"enc-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(text)
        self.server = APIServer(self.etcd.url, "--encryption-provider-config", str(path)).start()
        self.kubeconfig = self.tmp / "kubeconfig"
        self.server.write_kubeconfig(self.kubeconfig)
        return self.server.client(timeout=30)

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None

    def raw(self, key: str) -> bytes:
        async def get() -> bytes:
            host, port = self.etcd.url.rsplit("//", 1)[1].split(":")
            async with aetcd.Client(host, int(port)) as c:
                kv = await c.get(key.encode())
                assert kv is not None, key
                return kv.value
        return asyncio.run(get())


@pytest.fixture
def cluster(tmp_path):
    """A fresh etcd per test: what one test leaves encrypted must not decide the next."""
    e = Etcd().start()
    c = Cluster(e, tmp_path)
    yield c
    c.stop()
    e.stop()


def namespace(http: httpx.Client) -> str:
    name = "enc-" + uuid.uuid4().hex[:8]
    r = http.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert r.status_code == 201, r.text
    return name


def secret(http: httpx.Client, ns: str, name: str, value: str = PLAIN) -> dict:
    r = http.post(f"/api/v1/namespaces/{ns}/secrets",
                  json={"metadata": {"name": name}, "stringData": {"password": value}})
    assert r.status_code == 201, r.text
    return r.json()


def reencrypt(cluster: Cluster, *extra: str) -> str:
    p = subprocess.run([sys.executable, "-m", "cluster.cli", "secrets-encrypt", "reencrypt",
                        "--kubeconfig", str(cluster.kubeconfig), *extra],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def assert_encrypted(raw: bytes, prefix: str) -> None:
    assert raw.startswith(prefix.encode()), raw[:40]
    assert PLAIN.encode() not in raw
    assert B64 not in raw


def test_secret_is_encrypted_in_etcd_and_plain_through_the_api(cluster):
    http = cluster.serve(config("secrets", aescbc(("key1", KEY1)), "identity: {}"))
    ns = namespace(http)
    created = secret(http, ns, "db")
    assert_encrypted(cluster.raw(f"/registry/secrets/{ns}/db"), "k8s:enc:aescbc:v1:key1:")
    got = http.get(f"/api/v1/namespaces/{ns}/secrets/db").json()
    assert base64.b64decode(got["data"]["password"]).decode() == PLAIN
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    listed = http.get(f"/api/v1/namespaces/{ns}/secrets").json()["items"]
    assert [base64.b64decode(s["data"]["password"]).decode() for s in listed] == [PLAIN]
    # A resource the config does not name stays as it was.
    r = http.post(f"/api/v1/namespaces/{ns}/configmaps",
                  json={"metadata": {"name": "cm"}, "data": {"k": PLAIN}})
    assert r.status_code == 201
    assert PLAIN.encode() in cluster.raw(f"/registry/configmaps/{ns}/cm")


def test_watch_events_carry_decrypted_objects(cluster):
    http = cluster.serve(config("secrets", aescbc(("key1", KEY1))))
    ns = namespace(http)
    rv = http.get(f"/api/v1/namespaces/{ns}/secrets").json()["metadata"]["resourceVersion"]
    events: list[dict] = []

    def watch():
        with cluster.server.client(timeout=30) as c:
            with c.stream("GET", f"/api/v1/namespaces/{ns}/secrets",
                          params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "20"}) as r:
                for line in r.iter_lines():
                    if line:
                        events.append(orjson.loads(line))
                    if len(events) >= 3:
                        return
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    secret(http, ns, "w")
    r = http.patch(f"/api/v1/namespaces/{ns}/secrets/w", json={"stringData": {"password": PLAIN + "2"}},
                   headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert http.delete(f"/api/v1/namespaces/{ns}/secrets/w").status_code == 200
    t.join(30)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    values = [base64.b64decode(e["object"]["data"]["password"]).decode() for e in events]
    assert values == [PLAIN, PLAIN + "2", PLAIN + "2"]


def test_each_provider_writes_its_prefix_and_reads_back(cluster):
    text = ("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
            f"- resources: [secrets]\n  providers: [{{{aescbc(('cbc', KEY1))}}}]\n"
            f"- resources: [configmaps]\n  providers: [{{aesgcm: {{keys: [{{name: gcm, secret: {GCM_KEY}}}]}}}}]\n"
            f"- resources: ['*.apps']\n  providers: [{{secretbox: {{keys: [{{name: box, secret: {BOX_KEY}}}]}}}}]\n")
    http = cluster.serve(text)
    ns = namespace(http)
    secret(http, ns, "s")
    assert http.post(f"/api/v1/namespaces/{ns}/configmaps",
                     json={"metadata": {"name": "c"}, "data": {"k": PLAIN}}).status_code == 201
    dep = {"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d"}}, "replicas": 0,
        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "env": [{"name": "X", "value": PLAIN}]}]}}}}
    r = http.post(f"/apis/apps/v1/namespaces/{ns}/deployments", json=dep)
    assert r.status_code == 201, r.text
    assert_encrypted(cluster.raw(f"/registry/secrets/{ns}/s"), "k8s:enc:aescbc:v1:cbc:")
    assert_encrypted(cluster.raw(f"/registry/configmaps/{ns}/c"), "k8s:enc:aesgcm:v1:gcm:")
    assert_encrypted(cluster.raw(f"/registry/deployments/{ns}/d"), "k8s:enc:secretbox:v1:box:")
    assert base64.b64decode(http.get(f"/api/v1/namespaces/{ns}/secrets/s").json()["data"]["password"]) \
        == PLAIN.encode()
    assert http.get(f"/api/v1/namespaces/{ns}/configmaps/c").json()["data"] == {"k": PLAIN}
    got = http.get(f"/apis/apps/v1/namespaces/{ns}/deployments/d").json()
    assert got["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == PLAIN


def test_rotation_rewrites_every_secret_under_the_new_first_key(cluster):
    http = cluster.serve(config("secrets", aescbc(("key1", KEY1))))
    nss = [namespace(http), namespace(http)]
    names = [(ns, f"s{i}") for ns in nss for i in range(3)]
    for ns, name in names:
        secret(http, ns, name)
    before = {k: http.get(f"/api/v1/namespaces/{k[0]}/secrets/{k[1]}").json() for k in names}
    # Step 1: the new key second. Both read; key1 still writes.
    http = cluster.serve(config("secrets", aescbc(("key1", KEY1), ("key2", KEY2))))
    for ns, name in names:
        assert cluster.raw(f"/registry/secrets/{ns}/{name}").startswith(b"k8s:enc:aescbc:v1:key1:")
    # Step 2: the new key first; old values still read.
    http = cluster.serve(config("secrets", aescbc(("key2", KEY2), ("key1", KEY1))))
    got = http.get(f"/api/v1/namespaces/{nss[0]}/secrets/s0").json()
    assert base64.b64decode(got["data"]["password"]).decode() == PLAIN
    out = reencrypt(cluster)
    assert "secrets: " in out
    for ns, name in names:
        assert_encrypted(cluster.raw(f"/registry/secrets/{ns}/{name}"), "k8s:enc:aescbc:v1:key2:")
        now = http.get(f"/api/v1/namespaces/{ns}/secrets/{name}").json()
        assert now["data"] == before[(ns, name)]["data"]
        assert now["metadata"]["uid"] == before[(ns, name)]["metadata"]["uid"]
        assert now["metadata"]["resourceVersion"] != before[(ns, name)]["metadata"]["resourceVersion"]
    # Again: nothing is stale any more, so nothing is written.
    rvs = {k: http.get(f"/api/v1/namespaces/{k[0]}/secrets/{k[1]}").json()["metadata"]["resourceVersion"]
           for k in names}
    reencrypt(cluster)
    for ns, name in names:
        assert http.get(f"/api/v1/namespaces/{ns}/secrets/{name}").json()["metadata"]["resourceVersion"] \
            == rvs[(ns, name)]
    # Step 3: key1 is gone from the config, and every secret still reads.
    http = cluster.serve(config("secrets", aescbc(("key2", KEY2))))
    for ns, name in names:
        assert http.get(f"/api/v1/namespaces/{ns}/secrets/{name}").status_code == 200


def test_turning_encryption_on_then_reencrypt_encrypts_what_was_plain(cluster):
    http = cluster.serve(config("secrets", "identity: {}"))
    ns = namespace(http)
    secret(http, ns, "before")
    assert B64 in cluster.raw(f"/registry/secrets/{ns}/before")
    # What `minik8s up --secrets-encryption` writes: the key first, identity to read the rest.
    http = cluster.serve(config("secrets", aescbc(("key1", KEY1)), "identity: {}"))
    assert B64 in cluster.raw(f"/registry/secrets/{ns}/before")  # nothing changes by itself
    out = reencrypt(cluster)
    assert_encrypted(cluster.raw(f"/registry/secrets/{ns}/before"), "k8s:enc:aescbc:v1:key1:")
    got = http.get(f"/api/v1/namespaces/{ns}/secrets/before").json()
    assert base64.b64decode(got["data"]["password"]).decode() == PLAIN
    # Every Secret was plain, so every one (the server may have made some of its own) is re-written.
    seen = int(out.split(" of ")[1].split()[0])
    assert out.strip() == f"secrets: {seen} of {seen} re-written"


def test_identity_first_reads_encrypted_values_and_decrypts_on_rewrite(cluster):
    http = cluster.serve(config("secrets", aescbc(("key1", KEY1))))
    ns = namespace(http)
    secret(http, ns, "old")
    http = cluster.serve(config("secrets", "identity: {}", aescbc(("key1", KEY1))))
    got = http.get(f"/api/v1/namespaces/{ns}/secrets/old").json()
    assert base64.b64decode(got["data"]["password"]).decode() == PLAIN
    secret(http, ns, "new")
    assert B64 in cluster.raw(f"/registry/secrets/{ns}/new")
    assert cluster.raw(f"/registry/secrets/{ns}/old").startswith(b"k8s:enc:aescbc:v1:key1:")
    reencrypt(cluster)
    assert B64 in cluster.raw(f"/registry/secrets/{ns}/old")


def test_a_value_no_provider_reads_stops_the_server_at_start_naming_the_key(cluster):
    """Ciphertext is never served as an object: at start the server reads every
    configured value once, and one that no configured key reads stops it, its log naming
    the key (kube-apiserver would keep running with that resource's cache failing)."""
    http = cluster.serve(config("secrets", aescbc(("key1", KEY1))))
    ns = namespace(http)
    secret(http, ns, "lost")
    cluster.stop()
    path = cluster.tmp / "identity.yaml"
    path.write_text(config("secrets", "identity: {}"))
    server = APIServer(cluster.etcd.url, "--encryption-provider-config", str(path))
    Component.start(server)  # not APIServer.start: it would wait for /readyz
    try:
        wait_for(lambda: server.proc.poll() is not None, what="the server to exit")
        assert server.proc.returncode != 0
        log = server.log()
        assert f"unable to read /registry/secrets/{ns}/lost: identity transformer tried to read " \
               "encrypted data" in log, log
    finally:
        server.stop()


# -- the providers and the config, without a server ------------------------------------------


@pytest.mark.parametrize("provider", [
    f"aescbc: {{keys: [{{name: a, secret: {KEY1}}}]}}",
    f"aescbc: {{keys: [{{name: a, secret: {base64.b64encode(b'x' * 16).decode()}}}]}}",
    f"aesgcm: {{keys: [{{name: a, secret: {GCM_KEY}}}]}}",
    f"aesgcm: {{keys: [{{name: a, secret: {KEY2}}}]}}",
    f"secretbox: {{keys: [{{name: a, secret: {BOX_KEY}}}]}}",
], ids=["aescbc-32", "aescbc-16", "aesgcm-16", "aesgcm-32", "secretbox"])  # the keys are random:
# ids that name them would differ between pytest-xdist's workers
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1000])
def test_provider_round_trips(provider, size):
    import yaml
    t = parse_config(yaml.safe_load(config("secrets", provider)))[0].transformer
    data = os.urandom(size)
    stored = t.to_storage(data, "/registry/secrets/ns/x")
    name = provider.split(":")[0]
    assert stored.startswith(f"k8s:enc:{name}:v1:a:".encode())
    assert stored != t.to_storage(data, "/registry/secrets/ns/x")  # a fresh IV or nonce each time
    assert t.from_storage(stored, "/registry/secrets/ns/x") == (data, False)
    tampered = stored[:-1] + bytes([stored[-1] ^ 1])
    if name != "aescbc":  # authenticated: any change is refused
        with pytest.raises(encryption.StorageError):
            t.from_storage(tampered, "/registry/secrets/ns/x")


def test_aesgcm_binds_the_value_to_its_etcd_key():
    import yaml
    gcm = f"aesgcm: {{keys: [{{name: a, secret: {GCM_KEY}}}]}}"
    t = parse_config(yaml.safe_load(config("secrets", gcm)))[0].transformer
    stored = t.to_storage(b"value", "/registry/secrets/ns/a")
    with pytest.raises(encryption.StorageError, match="authentication failed"):
        t.from_storage(stored, "/registry/secrets/ns/b")


def test_aescbc_stored_format_is_iv_then_pkcs7_cbc():
    """Independently of the module: decrypt what it stored with `cryptography` directly."""
    import yaml
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    t = parse_config(yaml.safe_load(config("secrets", aescbc(("k", KEY1)))))[0].transformer
    body = t.to_storage(b"0123456789", "/registry/secrets/ns/x")[len(b"k8s:enc:aescbc:v1:k:"):]
    assert len(body) == 32
    dec = Cipher(algorithms.AES(b"k" * 32), modes.CBC(body[:16])).decryptor()
    assert dec.update(body[16:]) + dec.finalize() == b"0123456789" + bytes([6] * 6)


def test_two_keys_of_one_name_are_both_tried():
    """As kube-apiserver's prefix transformers: a key that fails lets the next one with the
    same prefix try. (aesgcm, whose authentication makes a wrong key fail for sure; with
    aescbc a wrong key passes the padding check one time in ~256.)"""
    import yaml

    def gcm(*keys):
        return "aesgcm: {keys: [" + ", ".join(f"{{name: k, secret: {k}}}" for k in keys) + "]}"
    old = parse_config(yaml.safe_load(config("secrets", gcm(KEY1))))[0].transformer
    both = parse_config(yaml.safe_load(config("secrets", gcm(KEY2, KEY1))))[0].transformer
    key = "/registry/secrets/ns/x"
    assert both.from_storage(old.to_storage(b"v", key), key) == (b"v", True)


def test_stale_is_reported_for_every_reader_but_the_writer():
    import yaml
    old = parse_config(yaml.safe_load(config("secrets", aescbc(("k1", KEY1)))))[0].transformer
    both = config("secrets", aescbc(("k2", KEY2), ("k1", KEY1)), "identity: {}")
    new = parse_config(yaml.safe_load(both))[0].transformer
    key = "/registry/secrets/ns/x"
    assert new.from_storage(old.to_storage(b"v", key), key) == (b"v", True)
    assert new.from_storage(new.to_storage(b"v", key), key) == (b"v", False)
    assert new.from_storage(b"v", key) == (b"v", True)


def test_wildcards_and_exact_names_choose_the_transformer():
    import yaml
    doc = yaml.safe_load(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
        f"- resources: ['*.*']\n  providers: [{{{aescbc(('all', KEY1))}}}]\n"
        f"- resources: ['*.apps']\n  providers: [{{{aescbc(('apps', KEY1))}}}]\n"
        f"- resources: [secrets]\n  providers: [{{{aescbc(('sec', KEY1))}}}]\n"
        f"- resources: [secrets]\n  providers: [{{{aescbc(('masked', KEY1))}}}]\n")
    by = encryption.transformers_by_prefix(parse_config(doc), [
        ("", "secrets", "/registry/secrets/"), ("apps", "deployments", "/registry/deployments/"),
        ("", "pods", "/registry/pods/")])
    assert {p: t.writer.name for p, t in by.items()} == {
        "/registry/secrets/": "sec", "/registry/deployments/": "apps", "/registry/pods/": "all"}


BAD = [
    ("kind: Nope\n", "want kind \"EncryptionConfiguration\""),
    (config("secrets", "aescbc: {keys: []}"), "resources[0].providers[0].aescbc.keys: Required value"),
    (config("secrets", "aescbc: {keys: [{name: a, secret: c2hvcnQ=}]}"),
     "resources[0].providers[0].aescbc.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the "
     "expected length, got 5, expected one of [16 24 32]"),
    (config("secrets", f"secretbox: {{keys: [{{name: a, secret: {GCM_KEY}}}]}}"),
     "expected length, got 16, expected 32"),
    (config("secrets", "aesgcm: {keys: [{name: a, secret: '!!notbase64'}]}"), "not a valid base64 string"),
    (config("secrets, secrets", "identity: {}"), "the same resource cannot be specified multiple times"),
    (config("secrets, '*.'", "identity: {}"), "using overlapping resources such as 'secrets' and '*.'"),
    (config("'*'", "identity: {}"), "use '*.' to encrypt all the resources from core API group"),
    (config("'secrets.*'", "identity: {}"), "encrypting the same resource across groups is not supported"),
    (config("events.events.k8s.io", "identity: {}"), "Use 'events' instead in the config file"),
    (config("secrets", f"{{aescbc: {{keys: [{{name: a, secret: {KEY1}}}]}}, identity: {{}}}}"),
     "more than one provider specified in a single element"),
    (config("secrets", "rot13: {}"), "Unsupported value: \"rot13\""),
    (config("secrets", "kms: {name: x}"), "no KMS plugin"),
    (config("Secrets", "identity: {}"), "resource name should not contain capital letters"),
    ("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
     "- resources: [secrets]\n  providers: []\n", "resources[0].providers: Required value"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_configs_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "enc.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        encryption.load_config(str(path))
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert KEY1 not in str(e.value) and KEY2 not in str(e.value)


def test_a_bad_config_stops_the_server_with_one_line(cluster, tmp_path):
    path = tmp_path / "enc.yaml"
    path.write_text(config("secrets", "aescbc: {keys: [{name: a, secret: c2hvcnQ=}]}"))
    for arg in (str(path), str(tmp_path / "missing.yaml")):
        p = subprocess.run([sys.executable, "-m", "cluster.cli", "apiserver", "--etcd-servers",
                            cluster.etcd.url, "--port", "0", "--plain-http",
                            "--encryption-provider-config", arg],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 1
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
        assert arg in lines[0]


def test_reencrypt_rejects_an_unknown_resource_before_writing(cluster):
    cluster.serve(config("secrets", aescbc(("key1", KEY1))))
    p = subprocess.run([sys.executable, "-m", "cluster.cli", "secrets-encrypt", "reencrypt",
                        "--kubeconfig", str(cluster.kubeconfig), "--resources", "secrets,nosuch"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert p.stdout == ""
    assert p.stderr.strip() == 'error: the server doesn\'t have a resource type "nosuch"'



def test_up_secrets_encryption_makes_a_key_once_and_keeps_it_on(tmp_path):
    import argparse

    from cluster import commands
    parser = argparse.ArgumentParser()
    commands.add_parsers(parser.add_subparsers(dest="command"))
    state = str(tmp_path / "state")
    cfg, _ = commands._config_for_up(parser.parse_args(
        ["up", "--state-dir", state, "--runtime", "fake", "--secrets-encryption"]))
    path = os.path.join(state, "encryption-config.yaml")
    assert cfg.extra_args["apiserver"] == ["--encryption-provider-config", path]
    assert os.stat(path).st_mode & 0o777 == 0o600
    rules = encryption.load_config(path)
    assert rules[0].resources == ("secrets",)
    assert rules[0].transformer.writer.prefix == b"k8s:enc:aescbc:v1:aescbckey:"
    assert rules[0].transformer.identity  # Secrets written before still read
    first = open(path).read()
    # A refused `up` makes no key in a new state dir.
    other = str(tmp_path / "other")
    with pytest.raises(commands.Fail):
        commands._config_for_up(parser.parse_args(["up", "--state-dir", other, "--runtime", "fake",
                                                   "--nodes", "0", "--secrets-encryption"]))
    assert not os.path.exists(os.path.join(other, "encryption-config.yaml"))
    # A later `up` without the flag (and with other API server arguments) keeps it.
    cfg, _ = commands._config_for_up(parser.parse_args(
        ["up", "--state-dir", state, "--runtime", "fake", "--apiserver-args", "-v 2"]))
    assert cfg.extra_args["apiserver"] == ["-v", "2", "--encryption-provider-config", path]
    assert open(path).read() == first


def test_reencrypt_over_tls_with_the_admin_certificate_and_a_403_without(cluster, tmp_path):
    """As on a `minik8s up` cluster: HTTPS, RBAC, the admin's kubeconfig; anonymous may
    not list Secrets, and the command says so in one line."""
    import ssl

    from cluster import pki
    pki_dir = str(tmp_path / "pki")
    pki.ensure(pki_dir, pki.ClusterFacts())
    first, second = tmp_path / "one.yaml", tmp_path / "two.yaml"
    first.write_text(config("secrets", aescbc(("key1", KEY1))))
    second.write_text(config("secrets", aescbc(("key2", KEY2), ("key1", KEY1))))
    server = APIServer(cluster.etcd.url, "--authorization-mode", "RBAC",
                       "--encryption-provider-config", str(first), pki_dir=pki_dir).start()
    cluster.server = server  # stopped by the fixture
    ctx = ssl.create_default_context(cafile=server.ca_file)
    ctx.load_cert_chain(f"{pki_dir}/admin.crt", f"{pki_dir}/admin.key")
    with httpx.Client(base_url=server.url, verify=ctx, timeout=30) as c:
        secret(c, "default", "tls")
    server.stop()
    server = APIServer(cluster.etcd.url, "--authorization-mode", "RBAC",
                       "--encryption-provider-config", str(second), pki_dir=pki_dir).start()
    cluster.server = server
    admin_conf = tmp_path / "admin.conf"
    pki.write_kubeconfig(str(admin_conf), pki_dir, "admin", cluster_name="kubernetes", server=server.url)
    anonymous = tmp_path / "anonymous.conf"
    anonymous.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: c\n  cluster:\n    server: {server.url}\n"
        f"    certificate-authority: {server.ca_file}\n"
        "users:\n- name: u\n  user: {}\n"
        "contexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n")

    def run(conf):
        return subprocess.run([sys.executable, "-m", "cluster.cli", "secrets-encrypt", "reencrypt",
                               "--kubeconfig", str(conf)], capture_output=True, text=True, timeout=120)
    p = run(anonymous)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        'error: secrets is forbidden: User "system:anonymous" cannot list resource "secrets" in '
        'API group "" at the cluster scope']
    assert cluster.raw("/registry/secrets/default/tls").startswith(b"k8s:enc:aescbc:v1:key1:")
    p = run(admin_conf)
    assert p.returncode == 0, p.stderr
    assert_encrypted(cluster.raw("/registry/secrets/default/tls"), "k8s:enc:aescbc:v1:key2:")
