"""Real processes for tests: an etcd on a free loopback port and the API server.

Both are started as child processes and stopped by PID; readiness is polled, never
slept for.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=30.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = cond()
        except Exception:  # noqa: BLE001 - a poll target may not be up yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


class Etcd:
    """etcd on free loopback ports; with `pki_dir` (a cluster.pki directory) it serves
    clients over TLS with etcd/server.crt and requires client certificates of etcd/ca."""

    def __init__(self, pki_dir: str | None = None):
        self.dir = tempfile.mkdtemp(prefix="minik8s-etcd-")
        self.port = free_port()
        self.peer_port = free_port()
        self.pki_dir = pki_dir
        self.url = f"{'https' if pki_dir else 'http'}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def _tls(self) -> list[str]:
        if not self.pki_dir:
            return []
        etcd = os.path.join(self.pki_dir, "etcd")
        return ["--cert-file", os.path.join(etcd, "server.crt"), "--key-file", os.path.join(etcd, "server.key"),
                "--client-cert-auth", "--trusted-ca-file", os.path.join(etcd, "ca.crt")]

    def client_tls(self) -> ssl.SSLContext | bool:
        """What etcd's own health check client presents (etcd/healthcheck-client)."""
        if not self.pki_dir:
            return True
        etcd = os.path.join(self.pki_dir, "etcd")
        ctx = ssl.create_default_context(cafile=os.path.join(etcd, "ca.crt"))
        ctx.load_cert_chain(os.path.join(etcd, "healthcheck-client.crt"),
                            os.path.join(etcd, "healthcheck-client.key"))
        return ctx

    def start(self):
        etcd = shutil.which("etcd")
        if etcd is None:
            raise RuntimeError("etcd is not on PATH: run hack/setup.sh")
        self.log = open(os.path.join(self.dir, "etcd.log"), "ab")
        self.proc = subprocess.Popen(
            [etcd, "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
             "--initial-cluster", f"default=http://127.0.0.1:{self.peer_port}",
             "--heartbeat-interval", "10", "--election-timeout", "100",
             "--unsafe-no-fsync", *self._tls()],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: httpx.get(self.url + "/health", timeout=1,
                                   verify=self.client_tls()).status_code == 200, what="etcd")
        return self

    def kill(self):
        """Kill etcd as a crash would, keeping its data dir and ports: start() brings it
        back with its data."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

def compact_etcd(url: str) -> int:
    """Compact etcd's history up to its current revision (what the server's compactor does)."""
    import asyncio

    from apiserver.storage import EtcdStore

    async def run():
        store = EtcdStore([url])
        await store.open()
        try:
            rev = await store.current_revision()
            await store.compact(rev)
            return rev
        finally:
            await store.close()
    return asyncio.run(run())


class Component:
    """Any `minik8s <component> ...` as a child process, logging to a temp file."""

    def __init__(self, *args: str):
        self.args = list(args)
        self.proc: subprocess.Popen | None = None
        self.logfile = tempfile.NamedTemporaryFile(prefix=f"minik8s-{args[0]}-", suffix=".log",
                                                   delete=False)

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", *self.args],
                                     stdout=self.logfile, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        with open(self.logfile.name, errors="replace") as f:
            return f.read()[-5000:]

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class APIServer(Component):
    """`minik8s apiserver` as a child process on a free port; `start` waits for /readyz.

    By default it serves plain HTTP (`--plain-http`). With `pki_dir` (a cluster.pki
    directory) it serves HTTPS with that directory's serving certificate and client CA
    (`url` is then https://), and `--plain-http` is not passed."""

    def __init__(self, etcd_url: str, *extra: str, port: int | None = None,
                 pki_dir: str | None = None):
        self.etcd_url = etcd_url
        self.port = port or free_port()
        self.pki_dir = pki_dir
        self.url = f"{'https' if pki_dir else 'http'}://127.0.0.1:{self.port}"
        self.extra = list(extra)
        security = ["--plain-http"] if pki_dir is None else [
            "--tls-cert-file", os.path.join(pki_dir, "apiserver.crt"),
            "--tls-private-key-file", os.path.join(pki_dir, "apiserver.key"),
            "--client-ca-file", os.path.join(pki_dir, "ca.crt")]
        super().__init__("apiserver", "--etcd-servers", etcd_url, "--bind-address", "127.0.0.1",
                         "--port", str(self.port), *security, *extra)

    @property
    def ca_file(self) -> str | None:
        return os.path.join(self.pki_dir, "ca.crt") if self.pki_dir else None

    def admin_tls(self) -> ssl.SSLContext | bool:
        """With a PKI: a client context trusting its CA and presenting its admin certificate."""
        if not self.pki_dir:
            return True
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki_dir, "ca.crt"))
        ctx.load_cert_chain(os.path.join(self.pki_dir, "admin.crt"), os.path.join(self.pki_dir, "admin.key"))
        return ctx

    def client(self, **kw) -> httpx.Client:
        """An httpx client for this server as its admin: what tests use instead of
        building one from `url`, so they work whether the server is plain or secure."""
        kw.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, verify=self.admin_tls(), **kw)

    def async_client(self, **kw) -> httpx.AsyncClient:
        kw.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=self.url, verify=self.admin_tls(), **kw)

    def start(self):
        super().start()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"apiserver exited: {self.log()}")
            return httpx.get(self.url + "/readyz", timeout=1, verify=self.admin_tls()).status_code == 200
        wait_for(ready, what="apiserver")
        return self
