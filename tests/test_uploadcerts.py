"""kubeadm's copycerts (cluster.uploadcerts): the shared certificates sealed with
AES-256-GCM into kube-system/kubeadm-certs by an admin, fetched back with a bootstrap
token, and refused with a one-line error under a wrong key."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import os
import re
import stat
import subprocess
import sys

import pytest

from client.kubeconfig import Connection
from client.rest import Client
from cluster import uploadcerts
from cluster.uploadcerts import CopyCertsError
from machinery import errors
from tests.procs import APIServer, session_pki


@pytest.fixture(scope="module")
def server(etcd):
    s = APIServer(etcd.url, "--enable-bootstrap-token-auth").start()
    yield s
    s.stop()


def _bootstrap_token(http) -> str:
    """A join token as `minik8s token create` makes it (kubeadm's default group)."""
    tid, secret = os.urandom(3).hex(), os.urandom(8).hex()
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    r = http.post("/api/v1/namespaces/kube-system/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": f"bootstrap-token-{tid}"},
        "stringData": {"token-id": tid, "token-secret": secret, "expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
                       "auth-extra-groups": uploadcerts.BOOTSTRAPPERS}})
    assert r.status_code == 201, r.text
    return f"{tid}.{secret}"


def test_sealed_bytes_round_trip_with_the_nonce_first():
    key = uploadcerts.certificate_key()
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    a, b = uploadcerts.encrypt(b"secret", key), uploadcerts.encrypt(b"secret", key)
    assert a != b and len(a) == uploadcerts.NONCE_BYTES + len(b"secret") + 16
    assert uploadcerts.decrypt(a, key) == b"secret"
    with pytest.raises(CopyCertsError) as e:
        uploadcerts.decrypt(a, uploadcerts.certificate_key())
    assert "certificate key does not decrypt" in str(e.value) and "\n" not in str(e.value)
    for bad in ("", "zz" * 32, "ab" * 16):
        with pytest.raises(CopyCertsError, match="64 hex digits"):
            uploadcerts.encrypt(b"x", bad)


def test_upload_then_download_with_a_bootstrap_token(server, tmp_path):
    pki = session_pki()
    key = uploadcerts.certificate_key()
    with server.client() as http:
        token = _bootstrap_token(http)

    async def run():
        async with Client(server.connection()) as admin:
            token_id = await uploadcerts.upload(admin, pki, key)
            owner = await admin.get("secrets", f"bootstrap-token-{token_id}", namespace="kube-system")
            certs = await admin.get("secrets", "kubeadm-certs", namespace="kube-system")
        ref = certs["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == \
            ("Secret", owner["metadata"]["name"], owner["metadata"]["uid"], True)
        expiration = base64.b64decode(owner["data"]["expiration"]).decode()
        expires = datetime.datetime.fromisoformat(expiration.replace("Z", "+00:00"))
        left = expires - datetime.datetime.now(datetime.timezone.utc)
        assert datetime.timedelta(hours=1, minutes=50) < left <= datetime.timedelta(hours=2)
        assert set(certs["data"]) >= {"ca.crt", "ca.key", "sa.key", "sa.pub", "etcd-ca.crt", "etcd-ca.key"}
        with open(os.path.join(pki, "ca.key"), "rb") as f:
            assert f.read() not in base64.b64decode(certs["data"]["ca.key"])

        joiner = Connection(server=server.url, ca_file=os.path.join(pki, "ca.crt"), token=token)
        async with Client(joiner) as client:
            wrong = tmp_path / "wrong"
            with pytest.raises(CopyCertsError, match="does not decrypt"):
                await uploadcerts.download(client, str(wrong), uploadcerts.certificate_key())
            assert not wrong.exists()  # nothing written under a wrong key
            # The token reads that one Secret and nothing else in kube-system.
            with pytest.raises(errors.Forbidden):
                await client.get("secrets", f"bootstrap-token-{token_id}", namespace="kube-system")
            written = await uploadcerts.download(client, str(tmp_path / "pki"), key)
        for path in ("ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key",
                     "etcd/ca.crt", "etcd/ca.key"):
            with open(os.path.join(pki, path), "rb") as a, open(tmp_path / "pki" / path, "rb") as b:
                assert a.read() == b.read(), path
        assert stat.S_IMODE(os.stat(tmp_path / "pki" / "ca.key").st_mode) == 0o600
        assert len(written) == 8  # kubeadm's upload-certs set
    asyncio.run(run())


def test_a_missing_secret_says_how_to_upload_again(server, tmp_path):
    async def run():
        async with Client(server.connection()) as admin:
            with contextlib.suppress(errors.NotFound):  # not uploaded in this module yet
                await admin.delete("secrets", "kubeadm-certs", namespace="kube-system")
            with pytest.raises(CopyCertsError, match="upload-certs --upload-certs"):
                await uploadcerts.download(admin, str(tmp_path), uploadcerts.certificate_key())
    asyncio.run(run())


def test_certificate_key_command():
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "certs", "certificate-key"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"[0-9a-f]{64}\n", r.stdout)


def test_init_phase_upload_certs(server, tmp_path):
    kc = server.write_kubeconfig(tmp_path / "admin.conf")
    cmd = [sys.executable, "-m", "cluster.cli", "init", "phase", "upload-certs"]
    r = subprocess.run([*cmd, "--upload-certs", "--kubeconfig", kc, "--cert-dir", session_pki()],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    key = r.stdout.splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{64}", key) and 'Secret "kubeadm-certs"' in r.stdout

    async def fetch():
        async with Client(server.connection()) as admin:
            return await uploadcerts.fetch(admin, key)
    with open(os.path.join(session_pki(), "sa.key"), "rb") as f:
        assert asyncio.run(fetch())["sa.key"] == f.read()

    r = subprocess.run([*cmd, "--upload-certs", "--certificate-key", "nothex", "--kubeconfig", kc],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Skipping phase" in r.stdout
