"""A secure API server of its own for tests: a real etcd, a cluster PKI made by cluster.pki
in a tmp dir, and `minik8s apiserver` serving HTTPS with it (tests/procs.py's APIServer
with `pki_dir`: `minik8s up`'s security flags, those given here replacing theirs). Users
are client certificates signed by the cluster CA (CN the user, O the groups), used
through httpx, the real kubectl and the official Python client. (Every tests/procs.py
APIServer is secure; this one is for tests that make users of their own CA, or etcd TLS.)
"""
from __future__ import annotations

import datetime
import os
import ssl
import subprocess
from dataclasses import dataclass

import httpx

from client.kubeconfig import KubeConfig
from cluster import pki as cluster_pki
from machinery import pki
from tests.procs import APIServer, Etcd


@dataclass
class Credentials:
    cert: str
    key: str


class SecureCluster:
    def __init__(self, directory: str, *server_flags: str, etcd_tls: bool = False):
        self.dir = directory
        self.pki_dir = os.path.join(directory, "pki")
        cluster_pki.ensure(self.pki_dir, cluster_pki.ClusterFacts())
        self.ca = os.path.join(self.pki_dir, "ca.crt")
        self.etcd = Etcd(self.pki_dir if etcd_tls else None).start()
        if etcd_tls:
            server_flags = ("--etcd-cafile", os.path.join(self.pki_dir, "etcd", "ca.crt"),
                            "--etcd-certfile", os.path.join(self.pki_dir, "apiserver-etcd-client.crt"),
                            "--etcd-keyfile", os.path.join(self.pki_dir, "apiserver-etcd-client.key"),
                            *server_flags)
        self.server = APIServer(self.etcd.url, *server_flags, pki_dir=self.pki_dir)
        self.url = self.server.url
        self.admin = Credentials(os.path.join(self.pki_dir, "admin.crt"),
                                 os.path.join(self.pki_dir, "admin.key"))

    def start(self) -> SecureCluster:
        try:
            self.server.start()
        except Exception:
            self.etcd.stop()
            raise
        return self

    def stop(self) -> None:
        self.server.stop()
        self.etcd.stop()

    def user(self, name: str, *groups: str, ca: str = "ca") -> Credentials:
        """A client certificate for `name` in `groups`, signed by the cluster CA (or, with
        ca="other", by a CA the server does not know)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        if ca == "ca":
            with open(self.ca, "rb") as f:
                ca_cert = pki.load_cert(f.read())
            with open(os.path.join(self.pki_dir, "ca.key"), "rb") as f:
                ca_key = pki.load_key(f.read())
        else:
            ca_key = pki.new_key()
            ca_cert = pki.new_ca("other-ca", ca_key, now=now)
        key = pki.new_key()
        cert = pki.sign(pki.CertSpec(name, tuple(groups)), key.public_key(), ca_cert=ca_cert,
                        ca_key=ca_key, now=now)
        base = os.path.join(self.dir, f"{name}-{ca}")
        with open(base + ".crt", "wb") as f:
            f.write(pki.cert_pem(cert))
        with open(base + ".key", "wb") as f:
            f.write(pki.key_pem(key))
        return Credentials(base + ".crt", base + ".key")

    def client(self, creds: Credentials | None = None, *, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return httpx.Client(base_url=self.url, verify=self.tls(creds), timeout=30, headers=headers)

    def tls(self, creds: Credentials | None = None) -> ssl.SSLContext:
        """A client context trusting the cluster CA, presenting `creds` if given. (httpx
        ignores its `cert=` when `verify` is a path.)"""
        ctx = ssl.create_default_context(cafile=self.ca)
        if creds is not None:
            ctx.load_cert_chain(creds.cert, creds.key)
        return ctx

    def kubeconfig(self, name: str, creds: Credentials | None = None, *,
                   token: str | None = None, namespace: str | None = None) -> str:
        kc = KubeConfig()
        kc.set_cluster("secure", server=self.url, certificate_authority=self.ca)
        if creds is not None:
            kc.set_user(name, client_certificate=creds.cert, client_key=creds.key)
        else:
            kc.set_user(name, token=token)
        kc.set_context("ctx", cluster="secure", user=name, namespace=namespace)
        kc.current_context = "ctx"
        path = os.path.join(self.dir, f"{name}.kubeconfig")
        kc.save(path)
        return path

    def kubectl(self, kubeconfig: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", "--kubeconfig", kubeconfig,
                               "--cache-dir", os.path.join(self.dir, "kubectl-cache"), *args],
                              capture_output=True, text=True, timeout=60)
