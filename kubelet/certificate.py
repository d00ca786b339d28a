"""The kubelet's credentials: TLS bootstrap, client certificate rotation, and the
self-signed serving certificate (the kubelet's pkg/kubelet/certificate and
client-go's util/certificate).

What it guarantees
- `bootstrap()` (--bootstrap-kubeconfig): when --kubeconfig holds no client certificate
  valid now, the kubelet makes an ECDSA P-256 key (kept in
  `<cert-dir>/kubelet-client.key.tmp` until it has a certificate, so a restart asks
  again with the same key), and, as the bootstrap kubeconfig's user, creates a
  CertificateSigningRequest named after a digest of the key, subject and usages
  (`node-csr-...`: a retry finds its own request) for the signer
  kubernetes.io/kube-apiserver-client-kubelet, CN `system:node:<node>`, O
  `system:nodes`, usages digital signature and client auth. Once it is issued, the
  certificate and key go to `<cert-dir>/kubelet-client-<timestamp>.pem`, the symlink
  `kubelet-client-current.pem` is switched to it atomically, and --kubeconfig is written
  (mode 0600) with the bootstrap kubeconfig's server and CA and that symlink as its
  client certificate and key, as the kubelet writes it. A denied or failed request is
  an error naming its reason; nothing is written then.
- `CertificateRotation` (--rotate-certificates) renews the client certificate at a
  random point between 70 % and 90 % of its lifetime (client-go's jitter), or at once
  if it is already past that point: a new key, a CSR (`csr-` + random) made as the node
  itself (so csrapproving approves it through selfnodeclient), the same store update,
  and then the live client presents the new certificate on every new connection (no
  restart). A failed attempt is retried with exponential back-off (1 s to 5 min).
- `serving_certificate()`: without --tls-cert-file the kubelet serves HTTPS with
  `<cert-dir>/kubelet.crt` and `kubelet.key`, made once (a CA of its own and a leaf for
  the node's host name and address, one year, as the kubelet's
  GenerateSelfSignedCertKey) and reused after.

Files are written to a temporary name and renamed, so no reader ever sees half a
certificate. One asyncio loop; the rotation is one task.
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import logging
import os
import random
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from client import kubeconfig
from client.rest import Client
from machinery import errors, pki

log = logging.getLogger("minik8s.kubelet.certificate")

SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
USAGES = ["digital signature", "client auth"]  # an ECDSA key: no key encipherment
PREFIX = "kubelet-client"
TMP_KEY = "kubelet-client.key.tmp"
WAIT_TIMEOUT = 3600.0  # how long the bootstrap waits for its certificate, as the kubelet


class BootstrapError(Exception):
    """The bootstrap cannot get a certificate: the message says why."""


def _write(path: str, data: bytes, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class FileStore:
    """client-go's certificate file store: `<dir>/<prefix>-<timestamp>.pem` files holding
    a certificate and its key, and `<prefix>-current.pem` pointing at the one in use."""

    def __init__(self, cert_dir: str, prefix: str = PREFIX):
        self.dir, self.prefix = cert_dir, prefix

    @property
    def current_path(self) -> str:
        return os.path.join(self.dir, f"{self.prefix}-current.pem")

    def current(self) -> tuple[x509.Certificate, pki.PrivateKey] | None:
        """The certificate and key in use, None if there is none that can be read."""
        try:
            with open(self.current_path, "rb") as f:
                data = f.read()
            return pki.load_cert(data), pki.load_key(data)
        except (OSError, ValueError):
            return None

    def update(self, cert_pem: bytes, key_pem: bytes) -> str:
        """Store a new pair and make it current; -> its path."""
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime())
        path = os.path.join(self.dir, f"{self.prefix}-{stamp}.pem")
        _write(path, cert_pem + key_pem)
        link = f"{self.current_path}.tmp-{os.getpid()}"
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.basename(path), link)
        os.replace(link, self.current_path)
        return path


def client_config_valid(path: str, *, now: float | None = None) -> bool:
    """isClientConfigStillValid: the kubeconfig at `path` can be read and names client
    certificates none of which has expired."""
    try:
        conn = kubeconfig.load(path).connection()
        data = conn.cert_data
        if data is None and conn.cert_file:
            with open(conn.cert_file, "rb") as f:
                data = f.read()
        certs = x509.load_pem_x509_certificates(data) if data else []
    except (OSError, ValueError):
        return False
    t = datetime.datetime.fromtimestamp(now if now is not None else time.time(), datetime.timezone.utc)
    return bool(certs) and all(c.not_valid_after_utc > t for c in certs)


def _digested_name(key_pem: bytes, common_name: str, orgs: list[str], usages: list[str]) -> str:
    """digestedName: the same key, subject and usages always make the same CSR name."""
    h = hashlib.sha512()
    for part in (key_pem, b"CN=" + common_name.encode(), *(b"O=" + o.encode() for o in orgs),
                 *(b"usage=" + u.encode() for u in usages)):
        h.update(part + b"\x00")
    return "node-csr-" + base64.urlsafe_b64encode(h.digest()).decode().rstrip("=")


async def request_certificate(client: Client, key: pki.PrivateKey, node_name: str, *,
                              name: str | None = None, timeout: float = WAIT_TIMEOUT,
                              poll: float = 0.5) -> bytes:
    """Create (or find, by `name`) the CSR for `key` as `system:node:<node_name>` and wait
    for its certificate; -> the certificate PEM. BootstrapError if it is denied or fails,
    or `timeout` passes."""
    request = pki.new_csr(key, common_name=f"system:node:{node_name}", organizations=("system:nodes",))
    meta: dict[str, Any] = {"name": name} if name else {"generateName": "csr-"}
    body = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": meta, "spec": {"request": base64.b64encode(request).decode(),
                                       "signerName": SIGNER, "usages": list(USAGES)}}
    try:
        created = await client.create(body)
    except errors.AlreadyExists:
        assert name is not None
        created = await client.get("certificatesigningrequests", name)
        # ensureCompatible: the same public key, so the certificate will be ours
        theirs = pki.load_csr(base64.b64decode(created["spec"]["request"])).public_key()
        if _spki(theirs) != _spki(key.public_key()):
            raise BootstrapError(f"certificate signing request {name} exists for another key") from None
    csr_name = created["metadata"]["name"]
    log.info("waiting for certificate signing request %s to be approved and issued", csr_name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    obj = created
    while True:
        status = obj.get("status") or {}
        for c in status.get("conditions") or []:
            if c.get("type") in ("Denied", "Failed") and c.get("status", "True") == "True":
                raise BootstrapError(f"certificate signing request {csr_name} is "
                                     f"{'denied' if c['type'] == 'Denied' else 'failed'}, "
                                     f"reason: {c.get('reason', '')}, message: {c.get('message', '')}")
        if status.get("certificate"):
            return base64.b64decode(status["certificate"])
        if loop.time() > deadline:
            raise BootstrapError(f"timed out waiting for certificate signing request {csr_name}")
        await asyncio.sleep(poll)
        obj = await client.get("certificatesigningrequests", csr_name)


def _spki(public: Any) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_or_make_key(path: str) -> tuple[pki.PrivateKey, bytes]:
    """keyutil.LoadOrGenerateKeyFile: the key kept from an earlier attempt, or a new one."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        return pki.load_key(data), data
    except (OSError, ValueError):
        key = pki.new_key("ECDSA-P256")
        data = pki.key_pem(key)
        _write(path, data)
        return key, data


async def bootstrap(*, kubeconfig_path: str, bootstrap_path: str, cert_dir: str, node_name: str,
                    user_agent: str | None = None) -> bool:
    """LoadClientCert: make --kubeconfig usable; -> whether a certificate was requested."""
    if client_config_valid(kubeconfig_path):
        return False
    log.info("no valid client certificate in %s: bootstrapping with %s", kubeconfig_path, bootstrap_path)
    try:
        boot = kubeconfig.load(bootstrap_path)
        conn = boot.connection()
    except (OSError, ValueError) as e:
        raise BootstrapError(f"bootstrap kubeconfig {bootstrap_path}: {getattr(e, 'strerror', None) or e}") from None
    os.makedirs(cert_dir, mode=0o755, exist_ok=True)
    store = FileStore(cert_dir)
    key_path = os.path.join(cert_dir, TMP_KEY)
    current = store.current()
    if current is not None:
        key, key_pem = current[1], pki.key_pem(current[1])
    else:
        key, key_pem = _load_or_make_key(key_path)
    name = _digested_name(key_pem, f"system:node:{node_name}", ["system:nodes"], USAGES)
    async with Client(conn, user_agent=user_agent) as client:
        cert_pem = await request_certificate(client, key, node_name, name=name)
    store.update(cert_pem, key_pem)
    try:
        os.unlink(key_path)
    except FileNotFoundError:
        pass
    write_kubeconfig(kubeconfig_path, conn, store.current_path)
    log.info("bootstrapped: %s now uses %s", kubeconfig_path, store.current_path)
    return True


def write_kubeconfig(path: str, bootstrap: kubeconfig.Connection, cert_path: str) -> None:
    """writeKubeconfigFromBootstrapping: the bootstrap kubeconfig's cluster, with the
    certificate file as the user's client certificate and key."""
    kc = kubeconfig.KubeConfig()
    kc.set_cluster("default-cluster", server=bootstrap.server,
                   certificate_authority=os.path.abspath(bootstrap.ca_file) if bootstrap.ca_file else None,
                   certificate_authority_data=bootstrap.ca_data,
                   insecure_skip_tls_verify=bootstrap.insecure or None)
    kc.set_user("default-auth", client_certificate=cert_path, client_key=cert_path)
    kc.set_context("default-context", cluster="default-cluster", user="default-auth",
                   namespace="default")
    kc.current_context = "default-context"
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    kc.save(path)


def rotation_deadline(cert: x509.Certificate, *, rng: random.Random | None = None) -> float:
    """nextRotationDeadline: not before + 70-90 % of the lifetime (epoch seconds)."""
    start = cert.not_valid_before_utc.timestamp()
    total = cert.not_valid_after_utc.timestamp() - start
    return start + total * (0.7 + 0.2 * (rng or random).random())


class CertificateRotation:
    """--rotate-certificates: keeps `client`'s certificate (the store's current one)
    renewed; see the module docstring."""

    def __init__(self, client: Client, store: FileStore, node_name: str):
        self.client, self.store, self.node_name = client, store, node_name
        self.rotations = 0

    async def run(self) -> None:
        backoff = 1.0
        while True:
            current = self.store.current()
            if current is None:
                raise BootstrapError(f"no client certificate in {self.store.current_path} to rotate")
            deadline = rotation_deadline(current[0])
            log.info("certificate rotation deadline is %s",
                     datetime.datetime.fromtimestamp(deadline, datetime.timezone.utc).isoformat())
            await asyncio.sleep(max(0.0, deadline - time.time()))
            try:
                await self.rotate()
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the old certificate is still good: try again
                log.warning("rotating the client certificate failed: %s; retrying in %.0fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 300.0)

    async def rotate(self) -> None:
        key = pki.new_key("ECDSA-P256")
        cert_pem = await request_certificate(self.client, key, self.node_name, timeout=900.0)
        pki.load_cert(cert_pem)
        self.store.update(cert_pem, pki.key_pem(key))
        self.client.use_client_certificate(self.store.current_path, self.store.current_path)
        self.rotations += 1
        log.info("rotated the client certificate (serial %x)", pki.load_cert(cert_pem).serial_number)


def serving_certificate(cert_dir: str, host: str, address: str) -> tuple[str, str]:
    """(kubelet.crt, kubelet.key) in `cert_dir`, made if missing: GenerateSelfSignedCertKey."""
    crt, key_path = os.path.join(cert_dir, "kubelet.crt"), os.path.join(cert_dir, "kubelet.key")
    if os.path.exists(crt) and os.path.exists(key_path):
        return crt, key_path
    os.makedirs(cert_dir, mode=0o755, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp = int(now.timestamp())
    ca_key = pki.new_key("RSA-2048")
    ca = pki.new_ca(f"{host}-ca@{stamp}", ca_key, now=now)
    key = pki.new_key("RSA-2048")
    ips = tuple(ip for ip in (address,) if ip)
    leaf = pki.sign(pki.CertSpec(f"{host}@{stamp}", dns_names=(host,), ips=ips, usages=(pki.SERVER,)),
                    key.public_key(), ca_cert=ca, ca_key=ca_key, now=now, validity=datetime.timedelta(days=365))
    _write(key_path, pki.key_pem(key))
    _write(crt, pki.cert_pem(leaf) + pki.cert_pem(ca), mode=0o644)
    log.info("made the self-signed serving certificate %s", crt)
    return crt, key_path
