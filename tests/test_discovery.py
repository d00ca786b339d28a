"""kubeadm's token discovery (cluster.discovery) against a real secure API server whose
kube-public/cluster-info is signed by the real bootstrapsigner: the good case, and each
mistake a user makes giving its one-line error (wrong token, wrong secret, expired token,
wrong CA hash, unreachable address, malformed arguments), and the second, verified
fetch refusing a server the pinned CA does not vouch for."""
from __future__ import annotations

import datetime
import shutil
import socket
import subprocess

import pytest

from cluster import discovery
from cluster.discovery import DiscoveryError
from machinery import bootstraptoken as bt
from machinery import pki
from tests.clusterinfo import (SigningControlPlane, cluster_info_kubeconfig, free_endpoint, new_token,
                               publish_cluster_info, token_secret)
from tests.procs import wait_for

SHORT = 3.0  # --discovery-timeout for the cases that wait it out


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    p = SigningControlPlane(str(tmp_path_factory.mktemp("discovery"))).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def admin(plane):
    with plane.server.client() as c:
        publish_cluster_info(c, "https://" + plane.endpoint, plane.ca_pem)
        yield c


@pytest.fixture
def token(plane, admin):
    """A signing token whose signature is already published."""
    t = new_token()
    assert admin.post("/api/v1/namespaces/kube-system/secrets", json=token_secret(t)).status_code == 201
    plane.wait_signed(admin, bt.parse(t)[0])
    return t


@pytest.fixture
def ca_hash(plane):
    return discovery.ca_cert_hash(plane.ca_pem)


def one_line(exc: DiscoveryError) -> str:
    text = str(exc)
    assert "\n" not in text and "; " in text, text
    return text


async def test_a_good_token_and_hash_give_the_clusters_ca_and_server(plane, token, ca_hash):
    info = await discovery.discover(plane.endpoint, token, [ca_hash], timeout=30)
    assert info.ca_pem == plane.ca_pem
    assert info.server == "https://" + plane.endpoint
    assert info.cluster_name == ""


async def test_discovery_waits_for_a_new_tokens_signature(plane, admin, ca_hash):
    t = new_token()
    assert admin.post("/api/v1/namespaces/kube-system/secrets", json=token_secret(t)).status_code == 201
    info = await discovery.discover(plane.endpoint, t, [ca_hash], timeout=30)
    assert info.ca_pem == plane.ca_pem


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_ca_cert_hash_is_kubeadms_documented_openssl_pipeline(plane):
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=plane.ca_pem, capture_output=True,
                         check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True,
                         check=True).stdout
    import hashlib
    assert discovery.ca_cert_hash(plane.ca_pem) == "sha256:" + hashlib.sha256(der).hexdigest()


async def test_an_unknown_token_id_is_invalid_or_expired(plane, admin, ca_hash):
    t = new_token()
    with pytest.raises(DiscoveryError) as e:
        await discovery.discover(plane.endpoint, t, [ca_hash], timeout=SHORT)
    assert one_line(e.value) == (
        f"token id {bt.parse(t)[0]!r} is invalid for this cluster or it has expired; run `minik8s token create "
        "--print-join-command` on a control-plane host for a new one")


async def test_a_wrong_token_secret_fails_the_signature(plane, token, ca_hash):
    tid = bt.parse(token)[0]
    with pytest.raises(DiscoveryError) as e:
        await discovery.discover(plane.endpoint, f"{tid}.{'0' * 16}", [ca_hash], timeout=SHORT)
    assert one_line(e.value).startswith("failed to verify JWS signature of received cluster info object, "
                                        "can't trust this API Server; check the token")


async def test_an_expired_token_is_invalid_or_expired(plane, admin, ca_hash):
    t = new_token()
    tid = bt.parse(t)[0]
    assert admin.post("/api/v1/namespaces/kube-system/secrets", json=token_secret(t, ttl=2)).status_code == 201
    plane.wait_signed(admin, tid)
    plane.wait_signed(admin, tid, present=False)
    with pytest.raises(DiscoveryError) as e:
        await discovery.discover(plane.endpoint, t, [ca_hash], timeout=SHORT)
    assert one_line(e.value).startswith(f"token id {tid!r} is invalid for this cluster or it has expired; ")


async def test_a_wrong_ca_hash_names_the_hash_found(plane, token, ca_hash):
    wrong = "sha256:" + "ab" * 32
    with pytest.raises(DiscoveryError) as e:
        await discovery.discover(plane.endpoint, token, [wrong], timeout=SHORT)
    assert one_line(e.value).startswith(
        f"cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{ca_hash}\" are pinned; "
        "check --discovery-token-ca-cert-hash")


async def test_an_unreachable_address_times_out_naming_it():
    endpoint = free_endpoint()
    with pytest.raises(DiscoveryError) as e:
        await discovery.discover(endpoint, new_token(), ["sha256:" + "ab" * 32], timeout=SHORT)
    assert one_line(e.value).startswith(f"could not reach the control plane at {endpoint} within 3s (failed to "
                                        "request the cluster-info ConfigMap: ")


@pytest.mark.parametrize("endpoint,cause", [
    ("10.0.0.1", "invalid API server endpoint '10.0.0.1'"),
    ("https://10.0.0.1:6443", "invalid API server endpoint"),
    ("10.0.0.1:70000", "invalid port 70000"),
    ("[fd00::zz]:6443", "invalid API server endpoint"),
])
async def test_a_malformed_endpoint_is_refused(endpoint, cause):
    with pytest.raises(DiscoveryError) as e:
        await discovery.discover(endpoint, "abcdef.0123456789abcdef", ["sha256:" + "ab" * 32], timeout=SHORT)
    assert cause in one_line(e.value)


@pytest.mark.parametrize("token,hashes,cause", [
    ("abcdef", ["sha256:" + "ab" * 32], "the bootstrap token 'abcdef' was not of the form"),
    ("abcdef.0123456789abcdef", ["ab" * 32], "invalid hash"),
    ("abcdef.0123456789abcdef", ["md5:" + "ab" * 16], "unknown hash format 'md5'"),
    ("abcdef.0123456789abcdef", ["sha256:abc"], "expected a 32 byte SHA-256 hash"),
    ("abcdef.0123456789abcdef", [], "no --discovery-token-ca-cert-hash given"),
])
async def test_malformed_arguments_fail_before_connecting(token, hashes, cause):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        with pytest.raises(DiscoveryError) as e:
            await discovery.discover(f"127.0.0.1:{listener.getsockname()[1]}", token, hashes, timeout=SHORT)
        assert cause in one_line(e.value)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


async def test_the_verified_second_fetch_refuses_a_server_the_pinned_ca_does_not_vouch_for(plane, admin, token):
    """cluster-info naming another CA (pinned by the user, so the first, unverified fetch
    passes) cannot be confirmed: the server's certificate is not that CA's."""
    now = datetime.datetime.now(datetime.timezone.utc)
    other_key = pki.new_key()
    other = pki.cert_pem(pki.new_ca("other-ca", other_key, now=now))
    path = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
    tid, tsecret = bt.parse(token)
    original = admin.get(path).json()["data"]["kubeconfig"]

    def set_kubeconfig(text: str) -> None:
        cm = admin.get(path).json()
        cm["data"]["kubeconfig"] = text
        assert admin.put(path, json=cm).status_code == 200
        wait_for(lambda: bt.signature_is_valid(admin.get(path).json()["data"].get(bt.JWS_PREFIX + tid, ""),
                                               text, tid, tsecret), what="re-signed")
    set_kubeconfig(cluster_info_kubeconfig("https://" + plane.endpoint, other))
    try:
        with pytest.raises(DiscoveryError) as e:
            await discovery.discover(plane.endpoint, token, [discovery.ca_cert_hash(other)], timeout=SHORT)
        assert one_line(e.value).startswith(
            f"the API server at https://{plane.endpoint} does not present a certificate the pinned cluster CA "
            "verifies for that address (")
    finally:
        set_kubeconfig(original)


def test_node_api_server_is_the_node_local_balancer():
    assert discovery.node_api_server("10.0.0.1:6443") == "https://127.0.0.1:6444"
    assert discovery.node_api_server("[fd00::1]:6443") == "https://127.0.0.1:6444"
