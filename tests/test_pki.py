"""The cluster PKI (cluster/pki.py on machinery/pki.py) and `minik8s certs`: what is made,
that it verifies (with `cryptography` and with `openssl verify`), that a rerun keeps what
is good byte for byte and remakes what is not, and that TLS works with it for real."""
from __future__ import annotations

import datetime
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading

import pytest
from cryptography import x509

from client import kubeconfig as kcfg
from cluster import pki
from machinery import pki as mpki

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOUR = datetime.timedelta(hours=1)

FACTS = pki.ClusterFacts(
    cluster_name="lab", apiserver_ips=("127.0.0.1", "10.250.0.1"), apiserver_dns_names=("api.lab.test",),
    service_ip="10.96.0.1", nodes=(pki.Node("node-1", "10.250.0.2"), pki.Node("node-2", "10.250.0.3")),
    control_plane_name="cp", etcd_ips=("10.250.0.1",))

# name -> (file, CA file, CN, O, DNS SANs, IP SANs, usages)
EXPECTED = {
    "apiserver": ("apiserver", "ca", "kube-apiserver", (),
                  {"cp", "api.lab.test", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local"}, {"10.96.0.1", "127.0.0.1", "10.250.0.1"}, {"server"}),
    "apiserver-kubelet-client": ("apiserver-kubelet-client", "ca", "kube-apiserver-kubelet-client",
                                 ("system:masters",), set(), set(), {"client"}),
    "apiserver-etcd-client": ("apiserver-etcd-client", "etcd/ca", "kube-apiserver-etcd-client", (),
                              set(), set(), {"client"}),
    "front-proxy-client": ("front-proxy-client", "front-proxy-ca", "front-proxy-client", (), set(), set(),
                           {"client"}),
    "etcd-server": ("etcd/server", "etcd/ca", "cp", (), {"cp", "localhost"}, {"10.250.0.1", "127.0.0.1", "::1"},
                    {"server", "client"}),
    "etcd-peer": ("etcd/peer", "etcd/ca", "cp", (), {"cp", "localhost"}, {"10.250.0.1", "127.0.0.1", "::1"},
                  {"server", "client"}),
    "etcd-healthcheck-client": ("etcd/healthcheck-client", "etcd/ca", "kube-etcd-healthcheck-client", (),
                                set(), set(), {"client"}),
    "admin": ("admin", "ca", "kubernetes-admin", ("system:masters",), set(), set(), {"client"}),
    "scheduler": ("scheduler", "ca", "system:kube-scheduler", (), set(), set(), {"client"}),
    "kube-proxy": ("kube-proxy", "ca", "system:kube-proxy", (), set(), set(), {"client"}),
    "metrics-server": ("metrics-server", "ca", "system:serviceaccount:kube-system:metrics-server",
                       ("system:serviceaccounts", "system:serviceaccounts:kube-system"), set(), set(), {"client"}),
    "controller-manager": ("controller-manager", "ca", "system:kube-controller-manager", (), set(), set(),
                           {"client"}),
    "kubelets/node-1/kubelet": ("kubelets/node-1/kubelet", "ca", "system:node:node-1", ("system:nodes",),
                                {"node-1"}, {"10.250.0.2"}, {"server"}),
    "kubelets/node-1/kubelet-client": ("kubelets/node-1/kubelet-client", "ca", "system:node:node-1",
                                       ("system:nodes",), set(), set(), {"client"}),
    "kubelets/node-2/kubelet": ("kubelets/node-2/kubelet", "ca", "system:node:node-2", ("system:nodes",),
                                {"node-2"}, {"10.250.0.3"}, {"server"}),
    "kubelets/node-2/kubelet-client": ("kubelets/node-2/kubelet-client", "ca", "system:node:node-2",
                                       ("system:nodes",), set(), set(), {"client"}),
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One PKI for the module (RSA keys take a moment); tests work on copies of it."""
    d = str(tmp_path_factory.mktemp("pki-made") / "pki")
    pki.ensure(d, FACTS)
    return d


@pytest.fixture
def d(made, tmp_path):
    out = str(tmp_path / "pki")
    shutil.copytree(made, out)   # copy2: modes kept
    return out


def cert(directory, path):
    with open(os.path.join(directory, path + ".crt"), "rb") as f:
        return mpki.load_cert(f.read())


def snapshot(directory):
    """Every file's bytes, by relative path."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, directory)] = f.read()
    return out


def made_names(outcomes):
    return sorted(o.name for o in outcomes if o.made)


# -- what is made --------------------------------------------------------------------------

def test_makes_kubeadms_files(made):
    for path in ("ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "apiserver-kubelet-client.crt",
                 "apiserver-kubelet-client.key", "apiserver-etcd-client.crt", "apiserver-etcd-client.key",
                 "sa.key", "sa.pub", "etcd/ca.crt", "etcd/ca.key", "etcd/server.crt", "etcd/server.key",
                 "etcd/peer.crt", "etcd/peer.key", "etcd/healthcheck-client.crt", "etcd/healthcheck-client.key"):
        assert os.path.isfile(os.path.join(made, path)), path


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_certificate_says_what_it_is_for_and_verifies(made, name):
    path, ca_path, cn, orgs, dns, ips, usages = EXPECTED[name]
    c, ca = cert(made, path), cert(made, ca_path)
    spec = mpki.spec_of(c)
    assert spec.common_name == cn
    assert sorted(spec.organizations) == sorted(orgs)
    assert set(spec.dns_names) == dns
    assert set(spec.ips) == ips
    assert set(spec.usages) == usages
    assert mpki.issued_by(c, ca)
    other_ca = cert(made, "etcd/ca" if ca_path == "ca" else "ca")
    assert not mpki.issued_by(c, other_ca)
    life = c.not_valid_after_utc - c.not_valid_before_utc
    assert datetime.timedelta(days=365) <= life <= datetime.timedelta(days=365, minutes=6)  # kubeadm: 1 year
    purpose = "sslserver" if usages == {"server"} else "sslclient"
    r = subprocess.run(["openssl", "verify", "-purpose", purpose, "-CAfile",
                        os.path.join(made, ca_path + ".crt"), os.path.join(made, path + ".crt")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith(": OK"), r.stdout + r.stderr
    # ... and not for the other purpose, unless it has both usages (etcd's).
    other = "sslserver" if purpose == "sslclient" else "sslclient"
    r = subprocess.run(["openssl", "verify", "-purpose", other, "-CAfile", os.path.join(made, ca_path + ".crt"),
                        os.path.join(made, path + ".crt")], capture_output=True, text=True)
    assert (r.returncode == 0) == (usages == {"server", "client"}), r.stdout + r.stderr


def test_cas_are_kubeadms(made):
    for path, cn in (("ca", "kubernetes"), ("etcd/ca", "etcd-ca"), ("front-proxy-ca", "front-proxy-ca")):
        ca = cert(made, path)
        assert mpki.spec_of(ca).common_name == cn
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        life = ca.not_valid_after_utc - ca.not_valid_before_utc
        assert datetime.timedelta(days=3650) <= life <= datetime.timedelta(days=3650, minutes=6)
        r = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(made, path + ".crt"),
                            os.path.join(made, path + ".crt")], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_keys_are_private_and_match_their_certificates(made):
    files = snapshot(made)
    keys = [p for p in files if p.endswith(".key")]
    assert len(keys) == 3 + 1 + len(EXPECTED)        # three CAs, sa.key, every leaf
    for p in files:
        mode = stat.S_IMODE(os.stat(os.path.join(made, p)).st_mode)
        if p.endswith(".key"):
            assert mode == 0o600, p
        elif p.endswith((".crt", ".pub")):
            assert mode == 0o644, p
    for path, *_ in EXPECTED.values():
        assert mpki.key_matches(cert(made, path), mpki.load_key(files[path + ".key"]))
    assert not [p for p in files if ".tmp-" in p]


def test_service_account_key_pair_is_rsa_and_matches(made):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    files = snapshot(made)
    key = mpki.load_key(files["sa.key"])
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert files["sa.key"].startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    pub = serialization.load_pem_public_key(files["sa.pub"])
    assert files["sa.pub"] == mpki.public_key_pem(key) and isinstance(pub, rsa.RSAPublicKey)


def test_without_a_service_ip_the_apiserver_names_only_its_addresses(tmp_path):
    d = str(tmp_path / "pki")
    pki.ensure(d, pki.ClusterFacts(apiserver_ips=("127.0.0.1", "::1"), control_plane_name="h"),
               key_algorithm="ECDSA-P256")
    spec = mpki.spec_of(cert(d, "apiserver"))
    assert set(spec.ips) == {"127.0.0.1", "::1"}
    assert "kubernetes.default.svc.cluster.local" in spec.dns_names
    assert not os.path.exists(os.path.join(d, "kubelets"))


@pytest.mark.parametrize("facts,error", [
    (pki.ClusterFacts(nodes=(pki.Node("../escape"),)), "node name '../escape': a lowercase RFC 1123 subdomain"),
    (pki.ClusterFacts(nodes=(pki.Node("Node_1"),)), "node name 'Node_1'"),
    (pki.ClusterFacts(nodes=(pki.Node("node-1", "10.0.0.300"),)), "'10.0.0.300' is not an IP address"),
    (pki.ClusterFacts(apiserver_ips=("localhost",)), "'localhost' is not an IP address"),
    (pki.ClusterFacts(service_ip="10.96.0.1/12"), "'10.96.0.1/12' is not an IP address"),
    (pki.ClusterFacts(apiserver_dns_names=("",)), "'' is not a DNS name"),
])
def test_facts_no_certificate_can_carry_are_an_error_before_anything_is_written(tmp_path, facts, error):
    with pytest.raises(pki.PKIError, match="^" + re.escape(error)):
        pki.ensure(str(tmp_path / "pki"), facts)
    assert os.listdir(tmp_path) == []


def test_unknown_key_algorithm_is_an_error_before_anything_is_written(tmp_path):
    with pytest.raises(pki.PKIError, match="unknown key algorithm 'DSA-1024'"):
        pki.ensure(str(tmp_path / "pki"), FACTS, key_algorithm="DSA-1024")
    assert os.listdir(tmp_path) == []


# -- reuse --------------------------------------------------------------------------------

def test_rerun_keeps_every_file_byte_for_byte(d):
    before = snapshot(d)
    outcomes = pki.ensure(d, FACTS)
    assert made_names(outcomes) == []
    assert snapshot(d) == before


def test_rerun_with_more_facts_makes_only_what_they_change(d):
    before = snapshot(d)
    facts = pki.ClusterFacts(**{**FACTS.__dict__, "apiserver_ips": (*FACTS.apiserver_ips, "192.168.1.10"),
                                "nodes": (*FACTS.nodes, pki.Node("node-3", "10.250.0.4"))})
    outcomes = pki.ensure(d, facts)
    assert made_names(outcomes) == ["apiserver", "kubelets/node-3/kubelet", "kubelets/node-3/kubelet-client"]
    assert "192.168.1.10" in {o.reason for o in outcomes if o.name == "apiserver"}.pop()
    after = snapshot(d)
    changed = sorted(p for p in before if after[p] != before[p])
    assert changed == ["apiserver.crt", "apiserver.key"]
    assert "192.168.1.10" in mpki.spec_of(cert(d, "apiserver")).ips
    assert mpki.issued_by(cert(d, "apiserver"), cert(d, "ca"))
    assert mpki.spec_of(cert(d, "kubelets/node-3/kubelet")).ips == ("10.250.0.4",)


def test_soon_expiring_and_expired_leaves_are_renewed_valid_ones_are_not(d):
    now = datetime.datetime.now(datetime.timezone.utc)
    pki.renew(d, ["apiserver"], validity=HOUR)                        # expires within the window
    pki.renew(d, ["admin"], now=now - 3 * HOUR, validity=HOUR)        # expired two hours ago
    assert cert(d, "admin").not_valid_after_utc < now
    before = snapshot(d)
    outcomes = {o.name: o for o in pki.ensure(d, FACTS)}
    assert made_names(outcomes.values()) == ["admin", "apiserver"]
    assert "renewal window" in outcomes["apiserver"].reason and "expired" in outcomes["admin"].reason
    after = snapshot(d)
    assert sorted(p for p in before if after[p] != before[p]) == [
        "admin.crt", "admin.key", "apiserver.crt", "apiserver.key"]
    for path in ("apiserver", "admin"):
        assert cert(d, path).not_valid_after_utc - now > datetime.timedelta(days=364)
    # With a window shorter than what is left, the one-hour certificate would have been kept.
    pki.renew(d, ["scheduler"], validity=2 * HOUR)
    assert made_names(pki.ensure(d, FACTS, renew_before=HOUR)) == []


def test_leaf_signed_by_another_ca_is_remade(d, tmp_path):
    other = str(tmp_path / "other")
    pki.ensure(other, FACTS, key_algorithm="ECDSA-P256")
    for ext in (".crt", ".key"):
        shutil.copy2(os.path.join(other, "apiserver" + ext), os.path.join(d, "apiserver" + ext))
    ca_before = snapshot(d)["ca.crt"]
    outcomes = {o.name: o for o in pki.ensure(d, FACTS)}
    assert made_names(outcomes.values()) == ["apiserver"]
    assert outcomes["apiserver"].reason == "not signed by ca"
    assert snapshot(d)["ca.crt"] == ca_before
    assert mpki.issued_by(cert(d, "apiserver"), cert(d, "ca"))


def test_a_leaf_whose_key_does_not_match_is_remade(d):
    shutil.copy2(os.path.join(d, "admin.key"), os.path.join(d, "scheduler.key"))
    outcomes = {o.name: o for o in pki.ensure(d, FACTS)}
    assert made_names(outcomes.values()) == ["scheduler"]
    assert outcomes["scheduler"].reason == "its key does not match"


def test_missing_ca_with_leaves_is_an_error_and_changes_nothing(d):
    for ext in (".crt", ".key"):
        os.unlink(os.path.join(d, "ca" + ext))
    before = snapshot(d)
    with pytest.raises(pki.PKIError, match=r"ca\.crt is missing but certificates it signed exist"):
        pki.ensure(d, FACTS)
    assert snapshot(d) == before


def test_a_refused_ca_writes_nothing_even_where_another_ca_would_be_made(d, tmp_path):
    lone = tmp_path / "lone"
    (lone / "etcd").mkdir(parents=True)
    shutil.copy2(os.path.join(d, "etcd", "server.crt"), lone / "etcd" / "server.crt")
    with pytest.raises(pki.PKIError, match=r"etcd/ca\.crt is missing but .*etcd/server\.crt"):
        pki.ensure(str(lone), FACTS)
    assert sorted(snapshot(str(lone))) == [".lock", "etcd/server.crt"]     # no ca.*, no sa.*


def test_ca_without_its_key_is_an_error(d):
    os.unlink(os.path.join(d, "etcd", "ca.key"))
    before = snapshot(d)
    with pytest.raises(pki.PKIError, match=r"etcd/ca\.crt exists but .*etcd/ca\.key does not"):
        pki.ensure(d, FACTS)
    assert snapshot(d) == before


def test_missing_sa_pub_is_derived_from_the_kept_sa_key(d):
    key = snapshot(d)["sa.key"]
    os.unlink(os.path.join(d, "sa.pub"))
    outcomes = {o.name: o for o in pki.ensure(d, FACTS)}
    assert made_names(outcomes.values()) == ["sa"]
    files = snapshot(d)
    assert files["sa.key"] == key and files["sa.pub"] == mpki.public_key_pem(mpki.load_key(key))


def test_unreadable_sa_key_is_an_error_not_replaced(d):
    with open(os.path.join(d, "sa.key"), "wb") as f:
        f.write(b"garbage")
    with pytest.raises(pki.PKIError, match="cannot read .*sa.key"):
        pki.ensure(d, FACTS)
    assert snapshot(d)["sa.key"] == b"garbage"


# -- renew ---------------------------------------------------------------------------------

def test_renew_keeps_subject_and_sans_under_the_same_ca_with_a_new_key(d):
    before = snapshot(d)
    old = cert(d, "apiserver")
    [(leaf, renewed)] = pki.renew(d, ["apiserver"])
    assert leaf.name == "apiserver" and renewed
    new = cert(d, "apiserver")
    assert mpki.spec_of(new) == mpki.spec_of(old)
    assert new.serial_number != old.serial_number
    assert mpki.issued_by(new, cert(d, "ca"))
    after = snapshot(d)
    assert sorted(p for p in before if after[p] != before[p]) == ["apiserver.crt", "apiserver.key"]


def test_renew_all_with_an_unreadable_certificate_changes_nothing(d):
    with open(os.path.join(d, "scheduler.crt"), "wb") as f:
        f.write(b"not a certificate")
    before = snapshot(d)
    with pytest.raises(pki.PKIError, match=r"cannot read .*scheduler\.crt"):
        pki.renew(d, ["all"])
    assert snapshot(d) == before


def test_renew_unknown_name_changes_nothing(d):
    before = snapshot(d)
    with pytest.raises(pki.PKIError, match="^nope is not a valid certificate for this cluster$"):
        pki.renew(d, ["nope"])
    assert snapshot(d) == before


# -- TLS, for real ---------------------------------------------------------------------------

class TLSServer:
    """A TLS server that demands a client certificate signed by `cafile` and answers each
    connection with the client's certificate CN."""

    def __init__(self, certfile, keyfile, cafile):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile, keyfile)
        self.ctx.load_verify_locations(cafile=cafile)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(10)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    subject = dict(x[0] for x in tls.getpeercert()["subject"])
                    tls.sendall(subject["commonName"].encode())
            except (ssl.SSLError, OSError) as e:
                self.errors.append(str(e))
                conn.close()

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)    # wakes the accept(); close() alone does not
        self.sock.close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def talk(ctx, port, server_hostname):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return tls.recv(100)


@pytest.fixture
def apiserver_tls(d):
    server = TLSServer(os.path.join(d, "apiserver.crt"), os.path.join(d, "apiserver.key"), os.path.join(d, "ca.crt"))
    yield server
    server.close()


@pytest.mark.parametrize("server_name", ["127.0.0.1", "kubernetes.default.svc", "api.lab.test"])
def test_tls_handshake_with_the_admin_kubeconfig(d, apiserver_tls, tmp_path, server_name):
    path = str(tmp_path / "admin.conf")
    pki.write_kubeconfig(path, d, "admin", cluster_name="lab", server=f"https://127.0.0.1:{apiserver_tls.port}")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    kc = kcfg.load(path)
    assert kc.current_context == "kubernetes-admin@lab"
    conn = kc.connection()
    assert conn.ca_data == snapshot(d)["ca.crt"] and conn.cert_data == snapshot(d)["admin.crt"]
    assert talk(conn.ssl_context(), apiserver_tls.port, server_name) == b"kubernetes-admin"


@pytest.mark.parametrize("server,ca,client,server_name,want", [
    ("kubelets/node-1/kubelet", "ca", "apiserver-kubelet-client", "node-1", b"kube-apiserver-kubelet-client"),
    ("kubelets/node-1/kubelet", "ca", "apiserver-kubelet-client", "10.250.0.2", b"kube-apiserver-kubelet-client"),
    ("apiserver", "ca", "kubelets/node-2/kubelet-client", "10.96.0.1", b"system:node:node-2"),
    ("apiserver", "ca", "scheduler", "kubernetes.default", b"system:kube-scheduler"),
    ("etcd/server", "etcd/ca", "apiserver-etcd-client", "localhost", b"kube-apiserver-etcd-client"),
    ("etcd/server", "etcd/ca", "etcd/healthcheck-client", "127.0.0.1", b"kube-etcd-healthcheck-client"),
    ("etcd/peer", "etcd/ca", "etcd/peer", "cp", b"cp"),
])
def test_tls_handshake_between_the_clusters_parts(d, server, ca, client, server_name, want):
    srv = TLSServer(os.path.join(d, server + ".crt"), os.path.join(d, server + ".key"), os.path.join(d, ca + ".crt"))
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(d, ca + ".crt"))
        ctx.load_cert_chain(os.path.join(d, client + ".crt"), os.path.join(d, client + ".key"))
        assert talk(ctx, srv.port, server_name) == want
    finally:
        srv.close()


def test_a_kubelet_serving_certificate_does_not_serve_another_node(d):
    srv = TLSServer(os.path.join(d, "kubelets/node-1/kubelet.crt"), os.path.join(d, "kubelets/node-1/kubelet.key"),
                    os.path.join(d, "ca.crt"))
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
        ctx.load_cert_chain(os.path.join(d, "apiserver-kubelet-client.crt"),
                            os.path.join(d, "apiserver-kubelet-client.key"))
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            talk(ctx, srv.port, "node-2")
    finally:
        srv.close()


def test_client_refuses_a_name_the_apiserver_certificate_lacks(d, apiserver_tls):
    ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
    ctx.load_cert_chain(os.path.join(d, "admin.crt"), os.path.join(d, "admin.key"))
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        talk(ctx, apiserver_tls.port, "evil.example")


def test_server_refuses_a_client_certificate_from_another_ca(d, apiserver_tls, tmp_path):
    other = str(tmp_path / "other")
    pki.ensure(other, FACTS, key_algorithm="ECDSA-P256")
    ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
    ctx.load_cert_chain(os.path.join(other, "admin.crt"), os.path.join(other, "admin.key"))
    # TLS 1.3: the client's handshake completes before the server has checked its
    # certificate; the refusal arrives as an alert on the first read.
    with pytest.raises(ssl.SSLError, match="alert"):
        talk(ctx, apiserver_tls.port, "kubernetes")
    _eventually(lambda: any("certificate verify failed" in e for e in apiserver_tls.errors))


def test_client_refuses_a_server_from_another_ca(d, tmp_path):
    other = str(tmp_path / "other")
    pki.ensure(other, FACTS, key_algorithm="ECDSA-P256")
    server = TLSServer(os.path.join(other, "apiserver.crt"), os.path.join(other, "apiserver.key"),
                       os.path.join(d, "ca.crt"))
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))
        ctx.load_cert_chain(os.path.join(d, "admin.crt"), os.path.join(d, "admin.key"))
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            talk(ctx, server.port, "kubernetes")
    finally:
        server.close()


def _eventually(cond, timeout=10.0):
    import time
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_etcd_serves_with_its_certificates_and_refuses_other_clients(d):
    """A real etcd with kubeadm's flags for the etcd certificates: client and peer TLS,
    client certificates required and checked against etcd's CA."""
    import httpx

    from tests.procs import Etcd, wait_for
    etcd = Etcd()
    client_url = f"https://127.0.0.1:{etcd.port}"
    peer_url = f"https://127.0.0.1:{etcd.peer_port}"
    e = lambda p: os.path.join(d, "etcd", p)  # noqa: E731
    log = open(os.path.join(etcd.dir, "etcd.log"), "ab")
    proc = subprocess.Popen(
        ["etcd", "--name", "cp", "--data-dir", os.path.join(etcd.dir, "data"),
         "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
         "--initial-cluster", f"cp={peer_url}",
         "--cert-file", e("server.crt"), "--key-file", e("server.key"),
         "--client-cert-auth", "--trusted-ca-file", e("ca.crt"),
         "--peer-cert-file", e("peer.crt"), "--peer-key-file", e("peer.key"),
         "--peer-client-cert-auth", "--peer-trusted-ca-file", e("ca.crt"),
         "--heartbeat-interval", "10", "--election-timeout", "100", "--unsafe-no-fsync"],
        stdout=log, stderr=subprocess.STDOUT)

    def client(cert):
        ctx = ssl.create_default_context(cafile=e("ca.crt"))
        if cert:
            ctx.load_cert_chain(os.path.join(d, cert + ".crt"), os.path.join(d, cert + ".key"))
        return httpx.Client(verify=ctx, timeout=5)
    try:
        with client("apiserver-etcd-client") as c:
            wait_for(lambda: c.get(client_url + "/health").json()["health"] == "true", what="etcd over TLS")
            r = c.post(client_url + "/v3/kv/put", json={"key": "YQ==", "value": "Yg=="})
            assert r.status_code == 200, r.text
        with client("etcd/healthcheck-client") as c:
            assert c.get(client_url + "/health").status_code == 200
        for cert in (None, "admin"):     # no certificate; one from the cluster CA, not etcd's
            with client(cert) as c, pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                c.post(client_url + "/v3/kv/range", json={"key": "YQ=="})
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        etcd.stop()


# -- the command ---------------------------------------------------------------------------

def minik8s(*args):
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_check_expiration_lists_every_certificate_and_ca(d):
    os.unlink(os.path.join(d, "scheduler.crt"))
    pki.renew(d, ["admin"], now=datetime.datetime.now(datetime.timezone.utc) - 3 * HOUR, validity=HOUR)
    r = minik8s("certs", "check-expiration", "--cert-dir", d)
    assert r.returncode == 0, r.stderr
    leaves_table, cas_table = r.stdout.split("\n\n")
    lines = leaves_table.splitlines()
    assert lines[0].split() == ["CERTIFICATE", "EXPIRES", "RESIDUAL", "TIME", "CERTIFICATE", "AUTHORITY"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows.pop("!MISSING!") == ["!MISSING!", "scheduler"]
    assert set(rows) == set(EXPECTED) - {"scheduler"}
    assert rows.pop("admin")[-2:] == ["<invalid>", "ca"]
    for name, row in rows.items():
        ca = {"etcd/ca": "etcd-ca", "front-proxy-ca": "front-proxy-ca"}.get(EXPECTED[name][1], "ca")
        assert row[-2:] == ["364d", ca], row            # EXPIRES: "Dec 05, 2027 05:11 UTC"
        assert row[-3] == "UTC" and len(row) == 8
    ca_lines = cas_table.splitlines()
    assert ca_lines[0].split() == ["CERTIFICATE", "AUTHORITY", "EXPIRES", "RESIDUAL", "TIME"]
    assert [(x.split()[0], x.split()[-1]) for x in ca_lines[1:]] == [("ca", "9y"), ("etcd-ca", "9y"),
                                                                     ("front-proxy-ca", "9y")]


def test_renew_command_renews_one_or_all(d):
    before = snapshot(d)
    r = minik8s("certs", "renew", "etcd-server", "--cert-dir", d)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("certificate for serving etcd renewed\n")
    after = snapshot(d)
    assert sorted(p for p in before if after[p] != before[p]) == ["etcd/server.crt", "etcd/server.key"]
    r = minik8s("certs", "renew", "all", "--cert-dir", d)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" renewed\n") == len(EXPECTED)
    final = snapshot(d)
    assert sorted(p for p in after if final[p] != after[p]) == sorted(
        f"{path}{ext}" for path, *_ in EXPECTED.values() for ext in (".crt", ".key"))
    assert made_names(pki.ensure(d, FACTS)) == []        # renewed ones are good for the same facts


def test_renew_command_unknown_name_is_one_line_and_changes_nothing(d):
    before = snapshot(d)
    r = minik8s("certs", "renew", "apiserver.conf", "--cert-dir", d)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "minik8s: error: apiserver.conf is not a valid certificate for this cluster\n"
    assert snapshot(d) == before


@pytest.mark.parametrize("command", [["check-expiration"], ["renew", "all"]])
def test_certs_command_without_a_pki_is_one_line(tmp_path, command):
    r = minik8s("certs", *command, "--state-dir", str(tmp_path))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == f"minik8s: error: no certificates in {tmp_path}/pki\n"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("seconds,want", [(-5, "<invalid>"), (-0.5, "0s"), (59, "59s"), (60, "1m"),
                                          (3599, "59m"), (3600, "1h"), (86399, "23h"), (86400, "1d"),
                                          (364 * 86400, "364d"), (365 * 86400, "1y"), (3650 * 86400, "10y")])
def test_short_human_duration_is_apimachinerys(seconds, want):
    assert pki.short_human_duration(datetime.timedelta(seconds=seconds)) == want



# -- machinery.pki.problems: why a certificate does not serve a spec ---------------------------

def test_problems_name_every_reason_a_certificate_does_not_serve_a_spec():
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    ca_key = mpki.new_key("ECDSA-P256")
    ca = mpki.new_ca("test-ca", ca_key, now=now)
    have = mpki.CertSpec("kube-apiserver", ("a",), dns_names=("x.test",), ips=("10.0.0.1",), usages=("server",))
    c = mpki.sign(have, mpki.new_key("ECDSA-P256").public_key(), ca_cert=ca, ca_key=ca_key, now=now, validity=HOUR)
    assert mpki.problems(c, have, now=now) == []
    # A certificate with more SANs than asked serves too.
    assert mpki.problems(c, mpki.CertSpec("kube-apiserver", ("a",), ips=("10.0.0.1",), usages=("server",)),
                         now=now) == []
    want = mpki.CertSpec("other", ("b",), dns_names=("x.test", "y.test"), ips=("10.0.0.1", "::1"),
                         usages=("server", "client"))
    assert mpki.problems(c, want, now=now) == [
        "its subject CN is 'kube-apiserver', not 'other'", "its subject O is ['a'], not ['b']",
        "its SANs lack y.test, ::1", "it is not for client auth"]
    assert mpki.problems(c, have, now=now - HOUR) == ["it is not valid before 2029-12-31 23:55 UTC"]
    assert mpki.problems(c, have, now=now + HOUR) == ["it expired at 2030-01-01 01:00 UTC"]
    assert mpki.problems(c, have, now=now, renew_before=2 * HOUR) == [
        "it expires at 2030-01-01 01:00 UTC, within the renewal window"]
    # A leaf never outlives its CA.
    short_ca = mpki.new_ca("short", ca_key, now=now, validity=HOUR)
    leaf = mpki.sign(have, ca_key.public_key(), ca_cert=short_ca, ca_key=ca_key, now=now)
    assert leaf.not_valid_after_utc == short_ca.not_valid_after_utc
