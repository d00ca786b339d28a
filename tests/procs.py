"""Real processes for tests: an etcd on a free loopback port and the API server.

Both are started as child processes and stopped by PID; readiness is polled, never
slept for.

The API server is secure by default, as `minik8s up` runs it: HTTPS with the test
session's cluster PKI (made once per process by cluster.pki, see `session_pki`), x509
client certificates and ServiceAccount tokens authenticated, `Node,RBAC` authorization,
anonymous requests allowed (as kube-apiserver's default). Tests reach it as its admin
(`kubernetes-admin`, group system:masters) through `client()`, `async_client()`,
`connection()`, `write_kubeconfig()` and `ws_url()`/`ws_ssl()`, never by building a
client from `url`; only tests about plain-HTTP mode ask for `plain=True`.
"""
from __future__ import annotations

import asyncio
import atexit
import functools
import inspect
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import httpx

from client.kubeconfig import Connection, KubeConfig
from cluster import pki as cluster_pki

# What `minik8s up` passes as --service-account-issuer (cluster.bringup.SA_ISSUER, kubeadm's).
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

_session_pki: str | None = None
_pki_lock = threading.Lock()


def session_pki() -> str:
    """The directory of this test process's cluster PKI (cluster.pki's layout: ca, apiserver
    for 127.0.0.1, admin, scheduler, controller-manager, sa.key/sa.pub, etcd), made on first
    use and removed at exit. One per session: making keys is the slow part."""
    global _session_pki
    with _pki_lock:
        if _session_pki is None:
            d = tempfile.mkdtemp(prefix="minik8s-test-pki-")
            cluster_pki.ensure(d, cluster_pki.ClusterFacts(control_plane_name="localhost"))
            atexit.register(shutil.rmtree, d, True)
            _session_pki = d
        return _session_pki


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=30.0, interval=0.02, what="condition"):
    """cond()'s first truthy value; TimeoutError naming `what` and what cond() last gave
    (its value or exception), so a timeout in CI says where it stood."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = last = cond()
        except Exception as e:  # noqa: BLE001 - a poll target may not be up yet
            value, last = None, e
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what} (last: {last!r:.500})")
        time.sleep(interval)


async def eventually(cond, timeout: float = 30.0, what: str = "condition", interval: float = 0.02):
    """wait_for for async tests: `cond` may return a value or an awaitable; the timeout
    only catches hangs."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def default_service_account(http, namespace: str) -> None:
    """Make `namespace`'s `default` ServiceAccount, as the serviceaccount controller would
    for an API server no controller manager serves: without it the ServiceAccount
    admission refuses pods there."""
    r = http.post(f"/api/v1/namespaces/{namespace}/serviceaccounts",
                  json={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
    assert r.status_code in (201, 409), r.text


def root_ca_configmap(http, namespace: str, *, ca_file: str | None = None) -> None:
    """Make `namespace`'s `kube-root-ca.crt` ConfigMap of `ca_file` (default the session
    PKI's CA), as root-ca-cert-publisher would: pods' token volumes project it, so a
    kubelet cannot start them without it."""
    with open(ca_file or os.path.join(session_pki(), "ca.crt")) as f:
        ca = f.read()
    r = http.post(f"/api/v1/namespaces/{namespace}/configmaps",
                  json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"},
                        "data": {"ca.crt": ca}})
    assert r.status_code in (201, 409), r.text


class Etcd:
    """etcd on free loopback ports; with `pki_dir` (a cluster.pki directory) it serves
    clients over TLS with etcd/server.crt and requires client certificates of etcd/ca."""

    def __init__(self, pki_dir: str | None = None, *, args: tuple[str, ...] = ()):
        self.dir = tempfile.mkdtemp(prefix="minik8s-etcd-")
        self.args = args  # extra etcd flags, e.g. ("--quota-backend-bytes", "...")
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
             "--unsafe-no-fsync", *self._tls(), *self.args],
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

    Secure unless `plain=True` (see the module docstring): HTTPS with `pki_dir` (default
    the session's PKI) and the security flags of `minik8s up` (cluster.bringup): the
    serving certificate, --client-ca-file, the ServiceAccount key pair and issuer,
    `--authorization-mode Node,RBAC` and the kubelet client certificate (unless
    `kubelet_tls=False`: kubelets in the shared-token mode, $MINIK8S_KUBELET_TOKEN). A
    flag given in `extra` replaces its default here. `plain=True` passes `--plain-http` (no TLS, no
    authentication, AlwaysAllow): only for tests about that mode."""

    def __init__(self, etcd_url: str, *extra: str, port: int | None = None,
                 pki_dir: str | None = None, plain: bool = False, kubelet_tls: bool = True):
        self.etcd_url = etcd_url
        self.port = port or free_port()
        self.plain = plain
        self.pki_dir = None if plain else (pki_dir or session_pki())
        self.url = f"{'http' if plain else 'https'}://127.0.0.1:{self.port}"
        self.extra = list(extra)
        security = ["--plain-http"] if self.pki_dir is None else \
            self._security(self.pki_dir, self.extra, kubelet_tls=kubelet_tls)
        super().__init__("apiserver", "--etcd-servers", etcd_url, "--bind-address", "127.0.0.1",
                         "--port", str(self.port), *security, *extra)

    @staticmethod
    def _security(d: str, extra: list[str], *, kubelet_tls: bool) -> list[str]:
        given = {a.split("=", 1)[0] for a in extra if a.startswith("--")}
        defaults = {
            "--tls-cert-file": os.path.join(d, "apiserver.crt"),
            "--tls-private-key-file": os.path.join(d, "apiserver.key"),
            "--client-ca-file": os.path.join(d, "ca.crt"),
            "--service-account-key-file": os.path.join(d, "sa.pub"),
            "--service-account-signing-key-file": os.path.join(d, "sa.key"),
            "--service-account-issuer": SA_ISSUER,
            "--authorization-mode": "Node,RBAC",
        }
        if kubelet_tls:
            defaults.update({
                "--kubelet-client-certificate": os.path.join(d, "apiserver-kubelet-client.crt"),
                "--kubelet-client-key": os.path.join(d, "apiserver-kubelet-client.key"),
                "--kubelet-certificate-authority": os.path.join(d, "ca.crt"),
            })
        # The aggregation layer's flags, as `minik8s up` passes them (cluster.pki.aggregation_flags).
        agg = cluster_pki.aggregation_flags(d)
        defaults.update({f: v for f, v in zip(agg[::2], agg[1::2]) if not f.startswith("--enable-")})
        return [x for flag, value in defaults.items() if flag not in given for x in (flag, value)]

    @property
    def ca_file(self) -> str | None:
        return os.path.join(self.pki_dir, "ca.crt") if self.pki_dir else None

    def admin_tls(self) -> ssl.SSLContext | bool:
        """With a PKI: a client context trusting its CA and presenting its admin certificate."""
        return self.tls("admin")

    def tls(self, user: str | None = "admin") -> ssl.SSLContext | bool:
        """With a PKI: a client context trusting its CA, presenting `user`'s certificate (a
        leaf of the PKI, see `connection`), or none with user=None."""
        if not self.pki_dir:
            return True
        if user == "admin":
            return admin_context(self.pki_dir)
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki_dir, "ca.crt"))
        if user is not None:
            ctx.load_cert_chain(os.path.join(self.pki_dir, f"{user}.crt"), os.path.join(self.pki_dir, f"{user}.key"))
        return ctx

    def client(self, *, user: str | None = "admin", **kw) -> httpx.Client:
        """An httpx client for this server as its admin (or `user`, see `tls`; None: no
        certificate, so anonymous unless a token is sent): what tests use instead of
        building one from `url`, so they work whether the server is plain or secure."""
        kw.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, verify=self.tls(user), **kw)

    def async_client(self, *, user: str | None = "admin", **kw) -> httpx.AsyncClient:
        kw.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=self.url, verify=self.tls(user), **kw)

    def connection(self, user: str = "admin", **kw) -> Connection:
        """A client.kubeconfig.Connection to this server as `user` (a leaf of the PKI:
        "admin", "scheduler", "controller-manager", "kubelets/<node>/kubelet-client")."""
        if not self.pki_dir:
            return Connection(server=self.url, **kw)
        return Connection(server=self.url, ca_file=os.path.join(self.pki_dir, "ca.crt"),
                          cert_file=os.path.join(self.pki_dir, f"{user}.crt"),
                          key_file=os.path.join(self.pki_dir, f"{user}.key"), **kw)

    def kubeconfig(self, user: str = "admin", *, namespace: str | None = None) -> KubeConfig:
        """A kubeconfig reaching this server as `user` (see `connection`), naming the CA
        and the user's certificate and key as files."""
        kc = KubeConfig()
        if self.pki_dir:
            kc.set_cluster("minik8s", server=self.url, certificate_authority=os.path.join(self.pki_dir, "ca.crt"))
            kc.set_user(user, client_certificate=os.path.join(self.pki_dir, f"{user}.crt"),
                        client_key=os.path.join(self.pki_dir, f"{user}.key"))
        else:
            kc.set_cluster("minik8s", server=self.url)
            kc.set_user(user)
        kc.set_context("minik8s", cluster="minik8s", user=user, namespace=namespace)
        kc.current_context = "minik8s"
        return kc

    def write_kubeconfig(self, path, user: str = "admin", *, namespace: str | None = None) -> str:
        """`kubeconfig(...)` saved to `path`; the path, as a str."""
        self.kubeconfig(user, namespace=namespace).save(str(path))
        return str(path)

    def kubectl_flags(self) -> list[str]:
        """kubectl's flags reaching this server as its admin, without a kubeconfig."""
        if not self.pki_dir:
            return ["--server", self.url]
        return ["--server", self.url, "--certificate-authority", os.path.join(self.pki_dir, "ca.crt"),
                "--client-certificate", os.path.join(self.pki_dir, "admin.crt"),
                "--client-key", os.path.join(self.pki_dir, "admin.key")]

    def socket(self, timeout: float | None = 60) -> socket.socket:
        """A raw connection to this server (TLS as its admin when it is secure), for tests
        that speak HTTP by hand."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        tls = self.ws_ssl()
        return tls.wrap_socket(sock, server_hostname="127.0.0.1") if tls is not None else sock

    def ws_url(self, path: str) -> str:
        """The ws:// or wss:// URL of `path` on this server."""
        return ("ws" + self.url[len("http"):]) + path

    def ws_ssl(self) -> ssl.SSLContext | None:
        """What `websockets.connect(..., ssl=)` takes to reach this server as its admin."""
        return admin_context(self.pki_dir) if self.pki_dir else None

    def start(self):
        super().start()
        tls = self.admin_tls()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"apiserver exited: {self.log()}")
            return httpx.get(self.url + "/readyz", timeout=1, verify=tls).status_code == 200
        try:
            wait_for(ready, what="apiserver")
        except BaseException:
            self.stop()  # a server that never got ready is not left running
            raise
        return self


@functools.lru_cache(maxsize=None)
def admin_context(pki_dir: str) -> ssl.SSLContext:
    """One context per PKI for the admin: loading a CA and a key costs ~1 ms, and httpx
    clients made per test share it."""
    ctx = ssl.create_default_context(cafile=os.path.join(pki_dir, "ca.crt"))
    ctx.load_cert_chain(os.path.join(pki_dir, "admin.crt"), os.path.join(pki_dir, "admin.key"))
    return ctx
