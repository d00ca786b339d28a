"""kubeadm's copycerts: the shared control-plane certificates, uploaded encrypted to the
cluster for a joining control-plane host to download.

    minik8s certs certificate-key                               a new key, 32 bytes as hex
    minik8s init phase upload-certs --upload-certs [--certificate-key K]

What is shared (kubeadm's list): the cluster CA, the service-account key pair, the
front-proxy CA when there is one, and etcd's CA, keys included: with them a joining host
makes its own leaf certificates. Each file is sealed with AES-256-GCM under the key
(cryptography's AESGCM; the 12-byte nonce prepended to the sealed bytes, as kubeadm's
cryptoutil does) into the Secret kube-system/kubeadm-certs, under kubeadm's names
("etcd/ca.crt" is "etcd-ca.crt").

Guarantees
- The Secret is owned (ownerReference, controller) by a bootstrap token Secret made for
  it with a 2 h TTL and no usages, so when the token cleaner deletes the expired token
  the garbage collector deletes the certificates with it, as kubeadm arranges.
- The Role and RoleBinding kubeadm:kubeadm-certs let the group
  system:bootstrappers:kubeadm:default-node-token get that one Secret, so a joining host
  downloads it with its bootstrap token.
- Uploading again replaces the Secret's contents (and its owner) whole.
- `download` decrypts everything before it writes anything: a wrong key or a missing
  or expired Secret is a `CopyCertsError` with one line naming the cause and the fix,
  and the directory is left as it was. Keys are written 0600, certificates 0644, each
  through a temporary file renamed into place.
"""
from __future__ import annotations

import base64
import datetime
import os
import secrets
import tempfile

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.rest import Client
from machinery import errors

SECRET = "kubeadm-certs"
NAMESPACE = "kube-system"
ROLE = "kubeadm:kubeadm-certs"
BOOTSTRAPPERS = "system:bootstrappers:kubeadm:default-node-token"
TOKEN_TTL = datetime.timedelta(hours=2)     # kubeadm's DefaultCertTokenDuration
KEY_BYTES = 32                              # AES-256
NONCE_BYTES = 12                            # GCM's standard nonce
# The files under the PKI dir that every control-plane host shares (kubeadm's certsToTransfer).
SHARED = ("ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key",
          "etcd/ca.crt", "etcd/ca.key")
REQUIRED = ("ca.crt", "ca.key", "sa.key", "sa.pub")


class CopyCertsError(Exception):
    """A one-line reason the certificates cannot be uploaded or downloaded."""


def certificate_key() -> str:
    """A new certificate key, as `kubeadm certs certificate-key` prints it."""
    return secrets.token_bytes(KEY_BYTES).hex()


def _key(hex_key: str) -> bytes:
    try:
        key = bytes.fromhex(hex_key)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise CopyCertsError(f"the certificate key must be {KEY_BYTES * 2} hex digits; "
                             "make one with `minik8s certs certificate-key`")
    return key


def encrypt(data: bytes, hex_key: str) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(_key(hex_key)).encrypt(nonce, data, None)


def decrypt(sealed: bytes, hex_key: str) -> bytes:
    key = _key(hex_key)
    if len(sealed) < NONCE_BYTES + 16:
        raise CopyCertsError("the uploaded certificates are damaged; upload them again with "
                             "`minik8s init phase upload-certs --upload-certs`")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], None)
    except InvalidTag:
        raise CopyCertsError("the certificate key does not decrypt the uploaded certificates; give the "
                             "key printed by `minik8s init phase upload-certs --upload-certs`") from None


def secret_name(path: str) -> str:
    """kubeadm's key in the Secret for a file: "etcd/ca.crt" is "etcd-ca.crt"."""
    return path.replace("/", "-")


def _token_secret(now: datetime.datetime) -> tuple[str, dict]:
    token_id = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(6))
    token_secret = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(16))
    expires = (now + TOKEN_TTL).astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return token_id, {
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": NAMESPACE},
        "stringData": {"token-id": token_id, "token-secret": token_secret, "expiration": expires,
                       "description": "Proxy for managing TTL for the kubeadm-certs secret"}}


async def _put(client: Client, obj: dict) -> dict:
    """Create, or replace what is there (kubeadm's CreateOrUpdate)."""
    kind = {"Secret": "secrets", "Role": "roles", "RoleBinding": "rolebindings"}[obj["kind"]]
    try:
        return await client.create(obj, namespace=NAMESPACE)
    except errors.AlreadyExists:
        have = await client.get(kind, obj["metadata"]["name"], namespace=NAMESPACE)
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": have["metadata"]["resourceVersion"]}}
        return await client.update(obj, namespace=NAMESPACE)


async def upload(client: Client, pki_dir: str, hex_key: str, *,
                 now: datetime.datetime | None = None) -> str:
    """Seal the shared files of `pki_dir` into kube-system/kubeadm-certs; the id of the
    bootstrap token that bounds its life."""
    _key(hex_key)
    files: dict[str, bytes] = {}
    for path in SHARED:
        full = os.path.join(pki_dir, path)
        if os.path.exists(full):
            with open(full, "rb") as f:
                files[path] = f.read()
        elif path in REQUIRED:
            raise CopyCertsError(f"{full} is missing; run this on a control-plane host initialised "
                                 "with `minik8s init`")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    token_id, token = _token_secret(now)
    owner = await client.create(token, namespace=NAMESPACE)
    data = {secret_name(p): base64.b64encode(encrypt(b, hex_key)).decode() for p, b in files.items()}
    await _put(client, {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET, "namespace": NAMESPACE, "ownerReferences": [{
            "apiVersion": "v1", "kind": "Secret", "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "data": data})
    await _put(client, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": ROLE, "namespace": NAMESPACE},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [SECRET], "verbs": ["get"]}]})
    await _put(client, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": ROLE, "namespace": NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": BOOTSTRAPPERS}]})
    return token_id


async def fetch(client: Client, hex_key: str) -> dict[str, bytes]:
    """The shared files, decrypted: {path under the PKI dir: bytes}."""
    _key(hex_key)
    try:
        secret = await client.get("secrets", SECRET, namespace=NAMESPACE)
    except errors.NotFound:
        raise CopyCertsError(f"secret {NAMESPACE}/{SECRET} not found (uploaded certificates expire after "
                             "2 hours); run `minik8s init phase upload-certs --upload-certs` on a "
                             "control-plane host and use the key it prints") from None
    except errors.Forbidden:
        raise CopyCertsError(f"not allowed to read {NAMESPACE}/{SECRET}; the token must be a bootstrap "
                             "token of `minik8s token create`") from None
    data = secret.get("data") or {}
    out = {p: decrypt(base64.b64decode(data[secret_name(p)]), hex_key)
           for p in SHARED if secret_name(p) in data}
    missing = [p for p in REQUIRED if p not in out]
    if missing:
        raise CopyCertsError(f"the uploaded certificates lack {', '.join(missing)}; upload them again with "
                             "`minik8s init phase upload-certs --upload-certs`")
    return out


def write(pki_dir: str, files: dict[str, bytes]) -> list[str]:
    """Write `files` under `pki_dir` (keys 0600); the paths written."""
    written = []
    for path, content in files.items():
        full = os.path.join(pki_dir, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(full), prefix=".tmp-")
        try:
            os.fchmod(fd, 0o600 if path.endswith(".key") else 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.rename(tmp, full)
        except BaseException:
            os.unlink(tmp)
            raise
        written.append(full)
    return written


async def download(client: Client, pki_dir: str, hex_key: str) -> list[str]:
    """Fetch, decrypt, and then write the shared files into `pki_dir`."""
    return write(pki_dir, await fetch(client, hex_key))


# -- the sync surface: init's hook and `minik8s init phase upload-certs` -------------------------

def upload_with_kubeconfig(kubeconfig_path: str, pki_dir: str, hex_key: str, *, server: str | None = None) -> str:
    """`upload` as the kubeconfig's user (to `server` if given); the token id."""
    import asyncio
    import dataclasses

    from client import kubeconfig

    conn = kubeconfig.load(kubeconfig_path).connection()
    if server:
        conn = dataclasses.replace(conn, server=server)

    async def run() -> str:
        async with Client(conn, user_agent="minik8s-upload-certs") as client:
            try:
                return await upload(client, pki_dir, hex_key)
            except errors.APIError as e:
                raise CopyCertsError(f"the API server refused the upload: {e.message}; run this as the "
                                     "cluster's admin (admin.conf)") from None
    return asyncio.run(run())


def init_hook(api, layout, hex_key: str | None) -> str:
    """cluster.lab's `upload_certs` hook for `init --upload-certs`: the key used."""
    key = hex_key or certificate_key()
    upload_with_kubeconfig(layout.admin_conf, layout.pki, key, server=api.server)
    return key


def main_phase(argv: list[str]) -> int:
    """`minik8s init phase upload-certs --upload-certs [--certificate-key K] [--kubeconfig F]`."""
    import argparse
    import sys

    from cluster.layout import current
    lay = current()
    p = argparse.ArgumentParser(prog="minik8s init phase upload-certs",
                                description="Upload the control-plane certificates, encrypted, to "
                                            "kube-system/kubeadm-certs for `minik8s join --control-plane`.")
    p.add_argument("--upload-certs", action="store_true", help="upload them (without it: nothing is done)")
    p.add_argument("--certificate-key", default="", metavar="HEX", help="the key (default: a new one)")
    p.add_argument("--kubeconfig", default=lay.admin_conf, help=f"the admin's kubeconfig (default {lay.admin_conf})")
    p.add_argument("--cert-dir", default=lay.pki, help=f"the certificates (default {lay.pki})")
    args = p.parse_args(argv)
    if not args.upload_certs:
        print("[upload-certs] Skipping phase. Please see --upload-certs")
        return 0
    key = args.certificate_key or certificate_key()
    try:
        _key(key)
        if not os.path.exists(args.kubeconfig):
            raise CopyCertsError(f"{args.kubeconfig} does not exist; run this on a control-plane host, "
                                 "or give --kubeconfig")
        upload_with_kubeconfig(args.kubeconfig, args.cert_dir, key)
    except CopyCertsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - httpx's connection errors, a broken kubeconfig
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: cannot reach the API server ({cause}); check that it runs and --kubeconfig", file=sys.stderr)
        return 1
    print(f'[upload-certs] Storing the certificates in Secret "{SECRET}" in the "{NAMESPACE}" Namespace')
    print("[upload-certs] Using certificate key:")
    print(key)
    return 0
