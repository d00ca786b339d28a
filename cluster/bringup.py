"""The supervisor process of a local cluster: bring-up, supervision, teardown.

`minik8s up` starts this as a detached process (`minik8s supervise`, not meant to be
typed) and reads its progress from a pipe until the cluster is ready or has failed. The
supervisor then stays, restarting components that die (cluster/supervisor.py), until
SIGTERM (`minik8s down`), when it stops them all and removes what it made.

Its contract with the other commands is files in <state>/run/:
    supervisor.lock   flock'ed for the supervisor's lifetime: held = the cluster runs
    status.json       the supervisor's pid and every component's state (written on change)
    desired.json      {"stopped": [component, ...]}: what `minik8s node stop` wants down;
                      the supervisor rereads it on SIGHUP
So a command never needs the supervisor to answer: it writes what it wants, signals,
and watches status.json, and after a crash of the supervisor `down` can still clean up
from cluster.json alone (`cleanup`).

The cluster it starts is secure unless `up --plain-http` said otherwise (see
`component_specs`): the PKI `up` made, kubeconfigs written here with one certificate
each, TLS between every two components. The supervisor itself reaches etcd with
kubeadm's healthcheck-client certificate and the API server with the user's (admin)
kubeconfig.

Its own log (<state>/logs/supervisor.log) is klog-like, as the components' are
(machinery.klog; `-v N`, `--logging-format=json` on `minik8s supervise`).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import signal
import ssl
import sys
import time

import httpx

from cluster import addons, host, metricsaddon
from cluster.state import KUBELET_PREFIX, ROUTE_SYNCER, ClusterConfig, kubelet_component
from cluster.supervisor import Spec, Supervisor
from machinery import klog, times

log = logging.getLogger("minik8s.up")

START_TIMEOUT = 60.0        # etcd or the API server not ready by then: give up
NODES_READY_TIMEOUT = 120.0


class Progress:
    """JSON lines to the `minik8s up` that started us (a pipe; gone once it exits)."""

    def __init__(self, fd: int | None):
        self.f = os.fdopen(fd, "w", buffering=1) if fd is not None else None

    def _send(self, **msg) -> None:
        log.info("%s", msg.get("msg") or msg.get("error") or msg)
        if self.f is None:
            return
        try:
            self.f.write(json.dumps(msg) + "\n")
        except (BrokenPipeError, OSError):
            self.f = None  # the user's `up` went away; carry on regardless

    def step(self, component: str, text: str) -> None:
        self._send(msg=f"{component:<19} {text}")

    def ready(self, **facts) -> None:
        self._send(ready=True, **facts)
        self.close()

    def error(self, text: str, *, fatal: bool = True) -> None:
        """fatal: the supervisor undoes everything and exits; else the cluster runs on."""
        self._send(error=text, fatal=fatal)
        self.close()

    def close(self) -> None:
        if self.f is not None:
            try:
                self.f.close()
            except OSError:
                pass
            self.f = None


# -- locking and control files ---------------------------------------------------------

def lock_path(cfg: ClusterConfig) -> str:
    return os.path.join(cfg.run_dir, "supervisor.lock")


def status_path(cfg: ClusterConfig) -> str:
    return os.path.join(cfg.run_dir, "status.json")


def desired_path(cfg: ClusterConfig) -> str:
    return os.path.join(cfg.run_dir, "desired.json")


def running_pid(cfg: ClusterConfig) -> int | None:
    """The supervisor's pid if one holds the lock, else None."""
    try:
        fd = os.open(lock_path(cfg), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            with open(lock_path(cfg)) as f:
                text = f.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def stopped_components(cfg: ClusterConfig) -> set[str]:
    return set(read_json(desired_path(cfg)).get("stopped", []))


def set_stopped(cfg: ClusterConfig, component: str, stopped: bool) -> None:
    """Record in desired.json that a component should (not) run; atomic under a lock."""
    with open(os.path.join(cfg.run_dir, "desired.lock"), "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        names = stopped_components(cfg)
        (names.add if stopped else names.discard)(component)
        write_json(desired_path(cfg), {"stopped": sorted(names)})


# -- what runs ----------------------------------------------------------------------

def _minik8s(*args: str) -> list[str]:
    return [sys.executable, "-m", "cluster.cli", *args]


SA_ISSUER = "https://kubernetes.default.svc.cluster.local"   # kubeadm's default issuer


# etcd's settings for a cluster at Kubernetes' limits (5,000 nodes, 150,000 pods; issue 20,
# measured in bench/RESULTS.md). The backend quota: etcd's default is 2 GiB, and 150,000
# pods written three or four times each within one compaction window (the API server
# compacts every 5 minutes, as kube-apiserver does, so etcd's own auto-compaction stays
# off) can pass it; 8 GiB is etcd's documented maximum suggested quota. etcd maps the
# file, it does not reserve the quota. snapshot-count: kubeadm's 10,000 (etcd 3.4's
# default, 100,000, keeps ten times as many raft entries in memory between snapshots).
ETCD_QUOTA_BACKEND_BYTES = 8 * 2**30
ETCD_SIZE_FLAGS = ("--quota-backend-bytes", str(ETCD_QUOTA_BACKEND_BYTES), "--snapshot-count", "10000")


def component_specs(cfg: ClusterConfig, *, etcd_port: int, etcd_peer_port: int,
                    cgroup_dirs=lambda sub: [], metrics_port: int = 0) -> list[Spec]:
    """Every component of the cluster, in start order.

    Secure (the default): etcd serves TLS on loopback and asks every client for a
    certificate of its CA; the API server serves TLS, authenticates client certificates
    and ServiceAccount tokens and authorizes with Node,RBAC; every other component has
    its own kubeconfig and certificate, so it holds only what the bootstrap roles grant
    its user (kubeadm's layout). `plain_http`: none of that, as before."""
    extra = lambda name: list(cfg.extra_args.get(name, []))  # noqa: E731
    pki = lambda *parts: os.path.join(cfg.pki_dir, *parts)  # noqa: E731
    secure = not cfg.plain_http
    etcd_url = f"{cfg.scheme}://127.0.0.1:{etcd_port}"
    peer = f"{cfg.scheme}://127.0.0.1:{etcd_peer_port}"
    binds = "127.0.0.1" + (f",{cfg.host_ip}" if cfg.runtime == "linux" else "")
    cp = cgroup_dirs("control-plane")
    etcd_security = ["--cert-file", pki("etcd", "server.crt"), "--key-file", pki("etcd", "server.key"),
                "--client-cert-auth", "--trusted-ca-file", pki("etcd", "ca.crt"),
                "--peer-cert-file", pki("etcd", "peer.crt"), "--peer-key-file", pki("etcd", "peer.key"),
                "--peer-client-cert-auth", "--peer-trusted-ca-file", pki("etcd", "ca.crt")] if secure else []
    apiserver_security = [
        "--tls-cert-file", pki("apiserver.crt"), "--tls-private-key-file", pki("apiserver.key"),
        "--client-ca-file", pki("ca.crt"),
        "--etcd-cafile", pki("etcd", "ca.crt"), "--etcd-certfile", pki("apiserver-etcd-client.crt"),
        "--etcd-keyfile", pki("apiserver-etcd-client.key"),
        "--service-account-key-file", pki("sa.pub"),
        "--service-account-signing-key-file", pki("sa.key"),
        "--service-account-issuer", SA_ISSUER,
        "--authorization-mode", "Node,RBAC",
        "--kubelet-client-certificate", pki("apiserver-kubelet-client.crt"),
        "--kubelet-client-key", pki("apiserver-kubelet-client.key"),
        "--kubelet-certificate-authority", pki("ca.crt"),
        *_aggregation_flags(pki()),
    ] if secure else ["--plain-http"]
    kubeconfig_of = (lambda c: cfg.component_kubeconfig(c)) if secure else (lambda c: cfg.kubeconfig)
    specs = [
        Spec("etcd", [shutil.which("etcd") or "etcd", "--name", "minik8s",
                      "--data-dir", cfg.path("etcd", "data"),
                      "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                      "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                      "--initial-cluster", f"minik8s={peer}", *etcd_security,
                      # one member: nothing to wait for before it leads itself
                      "--heartbeat-interval", "10", "--election-timeout", "100",
                      *ETCD_SIZE_FLAGS, *extra("etcd")],
             cfg.log_path("etcd"), cgroup_dirs=cp),
        # Plain HTTP: the token the API server presents to kubelets (for logs and exec),
        # as the kubelet expects it. Secure: its kubelet-client certificate instead.
        Spec("apiserver", _minik8s("apiserver", "--etcd-servers", etcd_url, "--bind-address", binds,
                                   "--secure-port", str(cfg.port), *apiserver_security,
                                   *extra("apiserver")),
             cfg.log_path("apiserver"), cgroup_dirs=cp,
             env={"MINIK8S_KUBELET_TOKEN": _read_token(cfg)} if not secure else {}),
        # One replica of each under a supervisor that restarts it only after it has
        # exited: there is never a second instance to elect against, and a restarted
        # one acts at once instead of waiting out the dead one's Lease.
        Spec("controller-manager", _minik8s("controller-manager",
                                            "--kubeconfig", kubeconfig_of("controller-manager"),
                                            "--controllers", "*", "--leader-elect=false",
                                            # kubeadm's: the CA every namespace's kube-root-ca.crt
                                            # publishes, which pods' token volumes carry
                                            *(["--root-ca-file", pki("ca.crt")] if secure else []),
                                            *(["--allocate-node-cidrs=true", "--cluster-cidr", cfg.cluster_cidr]
                                              if cfg.runtime == "linux" else []),
                                            "--secure-port", "0",  # no /metrics: clusters side by side
                                            *extra("controller-manager")),
             cfg.log_path("controller-manager"), cgroup_dirs=cp),
        Spec("scheduler", _minik8s("scheduler", "--kubeconfig", kubeconfig_of("scheduler"),
                                   "--leader-elect=false",
                                   "--secure-port", "0",  # no /metrics: clusters side by side
                                   *extra("scheduler")),
             cfg.log_path("scheduler"), cgroup_dirs=cp),
    ]
    if secure and metrics_port:
        # metrics-server, as a process beside the control plane (cluster/metricsaddon.py);
        # an aggregated API server needs the front proxy's certificates, so not in plain HTTP
        specs.append(Spec(metricsaddon.NAME, _minik8s("metrics-server", *metricsaddon.args(
            cfg, metrics_port, kubeconfig_of(metricsaddon.NAME)), *extra(metricsaddon.NAME)),
            cfg.log_path(metricsaddon.NAME), cgroup_dirs=cp))
    if cfg.runtime == "linux":
        specs.append(Spec(ROUTE_SYNCER, _minik8s("route-syncer", "--state-dir", cfg.state_dir,
                                                 *extra(ROUTE_SYNCER)),
                          cfg.log_path(ROUTE_SYNCER), cgroup_dirs=cp))
        from cluster.network import netns_path
        for node in cfg.node_names():
            kubelet = os.path.join("kubelets", node)
            # kubelet's own flags, set as kubeadm's KubeletConfiguration sets them: it
            # serves TLS with its certificate, knows callers by a certificate of the
            # cluster CA or a token the API server vouches for, and lets in whom the API
            # server authorizes (Webhook).
            kubelet_security = [
                "--tls-cert-file", pki(kubelet, "kubelet.crt"), "--tls-private-key-file", pki(kubelet, "kubelet.key"),
                "--client-ca-file", pki("ca.crt"), "--authentication-token-webhook",
                "--authorization-mode", "Webhook",
            ] if secure else ["--token-file", cfg.kubelet_token]
            specs.append(Spec(
                kubelet_component(node),
                _minik8s("kubelet", "--kubeconfig", cfg.node_kubeconfig(node),
                         "--node-name", node, "--root-dir", os.path.join(cfg.node_dir(node), "root"),
                         "--address", cfg.node_ip(node), *kubelet_security,
                         # one content store for the host, shared by every node's kubelet
                         "--image-store-dir", cfg.path("images"),
                         # its pod CIDR comes from the controller manager's node IPAM, which
                         # may still be starting: wait for it rather than take a default
                         "--pod-cidr-timeout", "300", "--runtime", "linux",
                         *(["--registry-config", cfg.registry_config] if cfg.registry_config else []),
                         *addons.kubelet_flags(addons.cluster_dns_of(cfg)),
                         *extra("kubelet")),
                cfg.log_path(kubelet_component(node)), netns=netns_path(cfg.netns(node)),
                cgroup_dirs=cgroup_dirs(f"{node}/kubelet")))
            # The node's service proxy (kube-proxy), in the node's namespace, programming
            # its netfilter: as its own user (system:kube-proxy), not the kubelet's.
            specs.append(Spec(
                proxy_component(node),
                _minik8s("proxy", "--kubeconfig", cfg.component_kubeconfig("kube-proxy"),
                         "--hostname-override", node, "--cluster-cidr", cfg.cluster_cidr,
                         *extra("kube-proxy")),
                cfg.log_path(proxy_component(node)), netns=netns_path(cfg.netns(node)),
                cgroup_dirs=cgroup_dirs(f"{node}/kube-proxy")))
    else:
        # The fake runtime's one process acts for every simulated node, which no single
        # node identity may do (the Node authorizer): it runs as the admin. Its nodes'
        # endpoint (their stats) lets callers in as a real kubelet's does.
        fake_security = [
            "--cert-dir", cfg.path("nodes", "fake", "pki"), "--client-ca-file", pki("ca.crt"),
            "--authentication-token-webhook", "--authorization-mode", "Webhook",
        ] if secure else ["--token-file", cfg.kubelet_token]
        specs.append(Spec(
            "kubelet", _minik8s("kubelet", "--kubeconfig", cfg.kubeconfig, "--node-name", "node",
                                "--nodes", str(cfg.nodes), "--runtime", "fake", *fake_security,
                                *extra("kubelet")),
            cfg.log_path("kubelet")))
    return specs


PROXY_PREFIX = "kube-proxy-"


def proxy_component(node: str) -> str:
    """The supervisor's name for a node's service proxy (its log: logs/kube-proxy-<node>.log)."""
    return PROXY_PREFIX + node


def _read_token(cfg: ClusterConfig) -> str:
    """The shared kubelet token of plain-HTTP mode, made on first use (0600)."""
    if not os.path.exists(cfg.kubelet_token):
        import secrets
        fd = os.open(cfg.kubelet_token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    with open(cfg.kubelet_token) as f:
        return f.read().strip()


def pki_facts(cfg: ClusterConfig):
    """What the cluster's certificates must name: every address the API server listens
    on, and each node with the address its kubelet serves on."""
    import ipaddress

    from cluster import addons, pki
    linux = cfg.runtime == "linux"
    # Pods reach the API server at the `kubernetes` Service's ClusterIP (in-cluster
    # config), so its certificate names that address too, as kubeadm's does.
    cidr = addons.service_cidr(list(cfg.extra_args.get("apiserver", [])))
    return pki.ClusterFacts(
        apiserver_ips=("127.0.0.1", *((cfg.host_ip,) if linux else ())),
        apiserver_dns_names=("localhost",),
        service_ip=str(ipaddress.ip_network(cidr, strict=False)[1]),
        nodes=tuple(pki.Node(n, cfg.node_ip(n)) for n in cfg.node_names()) if linux else ())


def ensure_pki(cfg: ClusterConfig) -> list:
    """cluster.pki.ensure on <state>/pki: what is still good is kept, the rest made.
    PKIError (one line) if the PKI on disk cannot be used."""
    from cluster import pki
    return pki.ensure(cfg.pki_dir, pki_facts(cfg))


def write_kubeconfigs(cfg: ClusterConfig) -> None:
    """The user's kubeconfig and, when secure, one per component, each with its own
    certificate embedded (0600). Secure mode ensures the PKI first."""
    from client.kubeconfig import KubeConfig

    if cfg.plain_http:
        def write(path: str, server: str, user: str) -> None:
            kc = KubeConfig()
            kc.set_cluster(cfg.context_name, server=server)
            kc.set_user(user)
            kc.set_context(cfg.context_name, cluster=cfg.context_name, user=user, namespace="default")
            kc.current_context = cfg.context_name
            kc.save(path)
        write(cfg.kubeconfig, cfg.api_url, "admin")
        if cfg.runtime == "linux":
            for node in cfg.node_names():
                write(cfg.node_kubeconfig(node), cfg.node_api_url, f"system:node:{node}")
            write(cfg.component_kubeconfig("kube-proxy"), cfg.node_api_url, "system:kube-proxy")
        return

    from cluster import pki
    ensure_pki(cfg)

    def write_secure(path: str, leaf: str, server: str) -> None:
        # kubeadm names the context <user>@<cluster>; the user's keeps the name it has
        # always had here (`minik8s`, or `minik8s-<id>`), which --merge-kubeconfig uses.
        kc = pki.kubeconfig(cfg.pki_dir, leaf, cluster_name=cfg.context_name, server=server,
                            namespace="default")
        if leaf == "admin":
            kc.contexts = {cfg.context_name: kc.contexts[kc.current_context]}
            kc.current_context = cfg.context_name
        kc.save(path)
    write_secure(cfg.kubeconfig, "admin", cfg.api_url)
    for component in ("scheduler", "controller-manager", metricsaddon.NAME):
        write_secure(cfg.component_kubeconfig(component), component, cfg.api_url)
    if cfg.runtime == "linux":
        for node in cfg.node_names():
            write_secure(cfg.node_kubeconfig(node), f"kubelets/{node}/kubelet-client", cfg.node_api_url)
        write_secure(cfg.component_kubeconfig("kube-proxy"), "kube-proxy", cfg.node_api_url)


# -- health ---------------------------------------------------------------------------

def _get(url: str, timeout: float = 2.0, verify: ssl.SSLContext | bool = True) -> httpx.Response:
    return httpx.get(url, timeout=timeout, verify=verify)


def admin_tls(cfg: ClusterConfig) -> ssl.SSLContext | bool:
    """What the supervisor and the commands trust and present to the API server: the
    user's kubeconfig (the admin certificate and the cluster CA)."""
    if cfg.plain_http:
        return True
    from client import kubeconfig
    # polled every 0.1 s while nodes come up: made once per version of the file
    key = (cfg.kubeconfig, os.stat(cfg.kubeconfig).st_mtime_ns)
    if key not in _admin_tls:
        _admin_tls.clear()
        _admin_tls[key] = kubeconfig.load(cfg.kubeconfig).connection().ssl_context()
    return _admin_tls[key]


_admin_tls: dict[tuple[str, int], ssl.SSLContext | bool] = {}


def etcd_tls(cfg: ClusterConfig) -> ssl.SSLContext | bool:
    """etcd's CA and kubeadm's healthcheck-client certificate: etcd asks every client
    for a certificate, its /health included."""
    if cfg.plain_http:
        return True
    ctx = ssl.create_default_context(cafile=os.path.join(cfg.pki_dir, "etcd", "ca.crt"))
    ctx.load_cert_chain(os.path.join(cfg.pki_dir, "etcd", "healthcheck-client.crt"),
                        os.path.join(cfg.pki_dir, "etcd", "healthcheck-client.key"))
    return ctx


def node_ready(node: dict) -> bool:
    for c in (node.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def internal_ip(node: dict) -> str | None:
    return next((a.get("address") for a in (node.get("status") or {}).get("addresses") or ()
                 if a.get("type") == "InternalIP"), None)


def _parse_time(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return times.parse(value)
    except ValueError:
        return 0.0


def renewed_since(cfg: ClusterConfig, since: float, timeout: float = 5.0) -> set[str]:
    """Nodes whose Lease (their kubelet's heartbeat) was renewed after `since` (epoch
    seconds). A Node's Ready condition alone may be left over from before a restart."""
    r = _get(cfg.api_url + "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", timeout,
             admin_tls(cfg))
    r.raise_for_status()
    return {lease["metadata"]["name"] for lease in r.json()["items"]
            if _parse_time((lease.get("spec") or {}).get("renewTime")) >= since}


def list_nodes(cfg: ClusterConfig, timeout: float = 5.0) -> list[dict]:
    r = _get(cfg.api_url + "/api/v1/nodes", timeout, admin_tls(cfg))
    r.raise_for_status()
    return r.json()["items"]


def log_tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 8192))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


# -- the supervisor process -------------------------------------------------------------

def supervise(state: str, progress_fd: int | None) -> int:
    progress = Progress(progress_fd)
    cfg = ClusterConfig.load(state)
    if cfg is None:
        progress.error(f"no cluster.json in {state}")
        return 1
    os.makedirs(cfg.run_dir, exist_ok=True)
    lock = open(lock_path(cfg), "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        progress.error(f"a supervisor already runs for {state} (pid {running_pid(cfg)})")
        return 1
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()

    stopping = []
    reload = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    signal.signal(signal.SIGHUP, lambda *_: reload.append(1))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    sup = None
    try:
        sup = _bring_up(cfg, progress, stopping)
        if sup is not None:
            while not stopping:
                if reload:
                    reload.clear()
                    _apply_desired(cfg, sup)
                sup.tick()
                time.sleep(0.1)
    except Exception as e:  # noqa: BLE001 - reported to `up`, then everything is undone
        log.exception("supervisor failed")
        progress.error(f"{type(e).__name__}: {e}")
    finally:
        progress.close()
        log.info("stopping the cluster")
        if sup is not None:
            sup.info["phase"] = "stopping"
            sup.stop_all([n for n in sup.procs if n.startswith((KUBELET_PREFIX, PROXY_PREFIX)) or n == "kubelet"]
                         + [ROUTE_SYNCER, "scheduler", "controller-manager", "apiserver", "etcd"])
        removed = cleanup(cfg)
        if removed:
            log.info("removed %s", ", ".join(removed))
        for name in ("status.json", "desired.json"):
            try:
                os.unlink(os.path.join(cfg.run_dir, name))
            except FileNotFoundError:
                pass
        log.info("cluster stopped")
    return 0


def _apply_desired(cfg: ClusterConfig, sup: Supervisor) -> None:
    stopped = stopped_components(cfg)
    for name in sup.procs:
        if name.startswith(KUBELET_PREFIX):
            sup.want(name, "stopped" if name in stopped else "running")


def _bring_up(cfg: ClusterConfig, progress: Progress, stopping: list) -> Supervisor | None:
    t0 = time.monotonic()
    write_json(desired_path(cfg), {"stopped": []})  # a new `up` runs every node
    cgroup_dirs = lambda sub: []  # noqa: E731
    if cfg.runtime == "linux":
        from cluster import network
        from cluster.cgroups import ClusterCgroups
        network.ensure_network(cfg)
        progress.step("network", f"bridge {cfg.bridge} {cfg.host_ip}/{cfg.node_net.prefixlen}; "
                      + ", ".join(f"{n} {cfg.node_ip(n)}" for n in cfg.node_names()))
        cg = ClusterCgroups(cfg.cgroup_name)
        cgroup_dirs = cg.ensure
    etcd_port, etcd_peer_port = host.free_port(), host.free_port()
    metrics_port = host.free_port()
    specs = component_specs(cfg, etcd_port=etcd_port, etcd_peer_port=etcd_peer_port,
                            cgroup_dirs=cgroup_dirs, metrics_port=metrics_port)
    sup = Supervisor(specs, status_path=status_path(cfg))
    etcd_url = f"{cfg.scheme}://127.0.0.1:{etcd_port}"
    sup.info.update(phase="starting", runtime=cfg.runtime, nodes=cfg.nodes, api=cfg.api_url,
                    node_api=cfg.node_api_url, etcd=etcd_url, secure=not cfg.plain_http)
    write_kubeconfigs(cfg)      # `up` made the PKI; a restarted supervisor checks it again

    def start_and_wait(name: str, url: str, what: str, verify: ssl.SSLContext | bool) -> bool:
        sup.want(name, "running")
        crashing = lambda: sup.procs[name].restarts >= 3  # noqa: E731
        ok = sup.wait(lambda: stopping or crashing() or _get(url, 1, verify).status_code == 200,
                      START_TIMEOUT)
        if stopping:
            return False
        if not ok or crashing():
            why = "keeps exiting" if crashing() else f"did not become ready within {START_TIMEOUT:.0f}s"
            progress.error(f"{name} {why}; its log ({cfg.log_path(name)}) ends:\n"
                           f"{log_tail(cfg.log_path(name))}")
            return False
        progress.step(name, what)
        return True

    tls = "" if cfg.plain_http else ", TLS, client certificates only"
    if not start_and_wait("etcd", f"{etcd_url}/health",
                          f"ready on 127.0.0.1:{etcd_port}{tls} (data in {cfg.path('etcd', 'data')})",
                          etcd_tls(cfg)):
        return None
    api_where = cfg.api_url + (f" and {cfg.node_api_url}" if cfg.node_api_url != cfg.api_url else "")
    api_how = " (plain HTTP: no authentication, no authorization)" if cfg.plain_http else \
        " (TLS; authorization Node,RBAC)"
    if not start_and_wait("apiserver", cfg.api_url + "/readyz", f"ready on {api_where}{api_how}",
                          admin_tls(cfg)):
        return None
    if cfg.runtime == "linux":  # kubeadm's addon phase; not waited for (cluster/addons.py)
        progress.step("coredns", addons.ensure_for(cfg, admin_tls(cfg)))
        progress.step("local-path", addons.ensure_storage_for(cfg, admin_tls(cfg)))
    if metricsaddon.NAME in sup.procs:  # its objects first: it reads the auth ConfigMap as its user
        progress.step(metricsaddon.NAME, metricsaddon.ensure_for(cfg, admin_tls(cfg), metrics_port))
    kubelets = [n for n in sup.procs if n.startswith(KUBELET_PREFIX) or n == "kubelet"]
    for name in sup.procs:
        if name not in ("etcd", "apiserver"):
            sup.want(name, "running")
            if name not in kubelets:
                progress.step(name, f"started (pid {sup.procs[name].popen.pid if sup.procs[name].popen else '-'})")
    progress.step("kubelet", f"{cfg.nodes} node{'s' * (cfg.nodes != 1)} starting"
                  + (" (in one process)" if cfg.runtime == "fake" else ", each in its own network namespace"))
    all_ready = _wait_nodes(cfg, sup, progress, stopping, kubelets)
    sup.info["phase"] = "running"
    sup.write_status()
    if all_ready and not stopping:
        progress.ready(seconds=round(time.monotonic() - t0, 1))
    return sup


def _wait_nodes(cfg: ClusterConfig, sup: Supervisor, progress: Progress, stopping: list,
                kubelets: list[str]) -> bool:
    seen: set[str] = set()
    verbose = cfg.nodes <= 10
    last_count = [0.0]
    since = time.time() - 1  # the kubelets were started just now; allow for clock steps

    def check():
        if stopping:
            return True
        nodes = list_nodes(cfg)
        fresh = renewed_since(cfg, since)
        for n in nodes:
            name = n["metadata"]["name"]
            if name not in seen and name in fresh and node_ready(n):
                seen.add(name)
                if verbose:
                    progress.step(name, f"Ready ({internal_ip(n) or '?'}, pod CIDR "
                                        f"{(n.get('spec') or {}).get('podCIDR') or 'none'})")
        if not verbose and time.monotonic() - last_count[0] > 2:
            last_count[0] = time.monotonic()
            progress.step("nodes", f"{len(seen)}/{cfg.nodes} Ready")
        return len(seen) >= cfg.nodes
    if not sup.wait(check, NODES_READY_TIMEOUT, interval=0.1):
        progress.error(f"only {len(seen)} of {cfg.nodes} nodes became Ready within "
                       f"{NODES_READY_TIMEOUT:.0f}s; see `minik8s status` and `minik8s logs "
                       f"{kubelets[0]}`; the cluster is still running (`minik8s down` stops it)",
                       fatal=False)
        return False
    if not verbose:
        progress.step("nodes", f"{cfg.nodes}/{cfg.nodes} Ready")
    return True


# -- teardown -----------------------------------------------------------------------------

def cleanup(cfg: ClusterConfig) -> list[str]:
    """Remove everything a cluster made on the host, whether or not its supervisor is
    alive: leftover component processes, and for the linux runtime every process in its
    cgroup tree (pods included), mounts under its node dirs, its network namespaces,
    links and routes, its cgroups and the nodes' root dirs. Idempotent; keeps etcd's
    data, the logs and the configuration, so `minik8s up` brings the same cluster back."""
    removed = []
    st = read_json(status_path(cfg))
    for name, c in (st.get("components") or {}).items():
        if host.kill(c.get("pid"), c.get("start"), signal.SIGKILL):
            removed.append(f"process {name} ({c['pid']})")
    if cfg.runtime == "linux" and os.geteuid() == 0:
        from cluster import network
        from cluster.cgroups import ClusterCgroups
        cg = ClusterCgroups(cfg.cgroup_name)
        if cg.exists():
            n = cg.kill_all()
            cg.remove()
            removed.append(f"cgroup {cfg.cgroup_name}" + (f" ({n} processes killed)" if n else ""))
        removed += [f"mount {m}" for m in host.unmount_all(cfg.path("nodes"))]
        removed += network.teardown(cfg)
    for node in (os.listdir(cfg.path("nodes")) if os.path.isdir(cfg.path("nodes")) else ()):
        root = os.path.join(cfg.path("nodes"), node, "root")
        if os.path.isdir(root) and not host.mounts_under(root):
            shutil.rmtree(root, ignore_errors=True)
    fake_root = cfg.path("nodes", "fake")
    if os.path.isdir(fake_root):
        shutil.rmtree(fake_root, ignore_errors=True)
    return removed


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minik8s supervise",
                                description="bring up, supervise and tear down a local cluster "
                                            "(started by `minik8s up`, not meant to be typed)")
    p.add_argument("state_dir", metavar="STATE_DIR")
    p.add_argument("progress_fd", metavar="PROGRESS_FD", type=int, nargs="?",
                   help="a pipe to report progress to, as JSON lines")
    klog.add_flags(p)
    return p


def main(argv: list[str]) -> int:
    """`minik8s supervise STATE_DIR [PROGRESS_FD] [-v N] [--logging-format text|json]`."""
    args = parser().parse_args(argv)
    klog.setup_from_args(args)
    return supervise(args.state_dir, args.progress_fd)


def _aggregation_flags(directory: str) -> list[str]:
    from cluster import pki as cluster_pki  # loaded only where an API server is started
    return cluster_pki.aggregation_flags(directory)
