"""`minik8s secrets-encrypt reencrypt`: re-write every Secret through the API so that
etcd holds it under the API server's current first encryption provider.

This is Kubernetes' documented rotation step, `kubectl get secrets -A -o json | kubectl
replace -f -`, as one command (k3s names its family `secrets-encrypt`; `reencrypt` is
its step of the same meaning). A rotation is: add the new key second in the
EncryptionConfiguration and restart every API server (each can now read it); move it
first and restart (each now writes with it); run this command; then the old key may be
dropped. The server reads its configuration only at start (there is no
--encryption-provider-config-automatic-reload), so each step is a restart.

Every object is listed (in pages of 500, across all namespaces) and PUT back unchanged
with its resourceVersion. The server re-writes an unchanged object when storage says it
was read with a key that no longer writes (apiserver/storage/encryption.py, "stale"),
and only then, so an object already under the current key is left as is and keeps its
resourceVersion. A 409 means someone wrote the object meanwhile, which stored it under
the current key already; a 404, that it is gone: both are done. Any other error is
reported and the command exits 1 after trying every object; running it again is safe.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys

from client import kubeconfig
from client.rest import Client
from machinery import errors

PAGE = 500
CONFIG_NAME = "encryption-config.yaml"


def config_path(state_dir: str) -> str:
    return os.path.join(state_dir, CONFIG_NAME)


def ensure_encryption_config(state_dir: str) -> str:
    """`minik8s up --secrets-encryption` (k3s' flag): the path of the cluster's
    EncryptionConfiguration, made on first use with a random 32-byte aescbc key for
    Secrets and identity second (so Secrets written before still read), readable by its
    owner only. An existing file is kept as it is: its keys are what etcd holds."""
    path = config_path(state_dir)
    if os.path.exists(path):
        return path
    key = base64.b64encode(os.urandom(32)).decode()
    text = ("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
            "resources:\n- resources: [secrets]\n  providers:\n"
            f"  - aescbc:\n      keys:\n      - name: aescbckey\n        secret: {key}\n"
            "  - identity: {}\n")
    os.makedirs(state_dir, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def add_parser(sub) -> None:
    p = sub.add_parser("secrets-encrypt", help="encryption at rest: re-write Secrets under the current key")
    ssub = p.add_subparsers(dest="secrets_command", required=True, metavar="COMMAND")
    r = ssub.add_parser("reencrypt", help="re-write every Secret (and --resources) through the API, "
                        "so each is stored under the API server's current first provider")
    r.add_argument("--kubeconfig", help="the kubeconfig to use (default $KUBECONFIG or ~/.kube/config)")
    r.add_argument("--resources", default="secrets",
                   help="comma-separated resources to re-write (default secrets), e.g. secrets,configmaps")


async def reencrypt(client: Client, resources: list[str], *, out=sys.stdout) -> int:
    """Re-write every object of `resources`; the number of failures."""
    failures = 0
    for name in resources:
        r = client.resources.get(name)
        api_version = f"{r.group}/{r.version}" if r.group else r.version
        seen = rewritten = 0
        cont: str | None = None
        while True:
            page = await client.list(r, namespace="", limit=PAGE, continue_=cont)
            for obj in page.get("items") or []:
                obj["apiVersion"], obj["kind"] = api_version, r.kind
                md = obj["metadata"]
                seen += 1
                try:
                    new = await client.update(obj, namespace=md.get("namespace", ""))
                except (errors.Conflict, errors.NotFound):
                    continue  # written meanwhile (under the current key), or gone
                except errors.APIError as e:
                    where = f'{md.get("namespace")}/{md["name"]}' if md.get("namespace") else md["name"]
                    print(f"error: {r.plural} {where}: {e}", file=sys.stderr)
                    failures += 1
                    continue
                if new["metadata"].get("resourceVersion") != md.get("resourceVersion"):
                    rewritten += 1
            cont = (page.get("metadata") or {}).get("continue") or None
            if cont is None:
                break
        print(f"{r.plural}: {rewritten} of {seen} re-written", file=out)
    return failures


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.resources.split(",") if n.strip()]
    try:
        conn = kubeconfig.load(args.kubeconfig).connection()
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot load the kubeconfig: {e}", file=sys.stderr)
        return 1

    async def main() -> int:
        async with Client(conn) as client:
            for n in names:
                client.resources.get(n)  # every name checked before anything is written
            return await reencrypt(client, names)
    try:
        return 1 if asyncio.run(main()) else 0
    except errors.APIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
