"""`minik8s join`: a worker host joins a cluster made by `minik8s init`, as `kubeadm join`.

    minik8s join HOST:PORT --token T --discovery-token-ca-cert-hash sha256:H
                 [--node-name N] [--advertise-address IP] [--discovery-timeout 5m]
                 [--tls-bootstrap-timeout 5m]
                 [--control-plane --certificate-key K [--apiserver-advertise-address IP]
                  [--apiserver-bind-port 6443]]             (the control-plane form: h-ha)

What it does, in kubeadm's phases:
- preflight: root; the host is not already initialised or joined (any of kubelet.conf,
  bootstrap-kubelet.conf, admin.conf, config.yaml, pki/ca.crt, an installed unit); the
  kubelet's port 10250 is free; --advertise-address is an address of this host.
- discovery (cluster.discovery): cluster-info, its JWS for the token, the CA pinned by
  its hash, and a second fetch verified with it.
- with the bootstrap token: kube-system/kubeadm-config's ClusterConfiguration (pod and
  service subnets, our networkBackend), and kubeadm's check that no Ready Node already
  has this name.
- kubelet-start: /etc/minik8s/pki/ca.crt, /etc/minik8s/bootstrap-kubelet.conf (the token,
  kubeadm's user `tls-bootstrap-token-user`), /etc/minik8s/config.yaml (what was
  decided), and the worker units through cluster/units.py: the kubelet with
  --bootstrap-kubeconfig (its TLS bootstrap writes /etc/minik8s/kubelet.conf), and
  kube-proxy and podnet with that kubelet.conf. It then waits for kubelet.conf and for
  the Node to be Ready, and prints kubeadm's closing text.

Every user mistake is one line on stderr, `error: <cause>; <fix>`, exit code 1. A join that
fails after it has started writing undoes itself: the units it installed are removed and
every file and directory it (or the kubelet it started) made is deleted, and so are the
kubelet's pods, bridge and cgroup (`minik8s-<node>`), so the host is as it was and the
same join can be run again.

The worker's kubeconfigs name `cluster.discovery.node_api_server(join address)`.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx
import yaml

from client.kubeconfig import Connection, KubeConfig
from client.rest import Client
from cluster import discovery, lab, units
from cluster import layout as layouts
from cluster.discovery import DiscoveryError
from machinery import errors, flags

TLS_BOOTSTRAP_USER = "tls-bootstrap-token-user"  # kubeadm's
DEFAULT_CLUSTER_NAME = "kubernetes"              # kubeadm's, when cluster-info names none
DEFAULT_TLS_BOOTSTRAP_TIMEOUT = 300.0            # kubeadm's timeouts.tlsBootstrap (5m)
WORKER_UNITS = ("apiserver-lb", "kubelet", "kube-proxy", "podnet")
KUBEADM_CONFIG = "kubeadm-config"
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class JoinError(Exception):
    """One line: `cause; fix`."""

    def __init__(self, cause: str, fix: str):
        super().__init__(f"{cause}; {fix}")


@dataclass(frozen=True)
class ClusterConfiguration:
    """What join reads of kube-system/kubeadm-config."""
    control_plane_endpoint: str = ""
    pod_subnet: str = ""
    service_subnet: str = "10.96.0.0/12"
    network_backend: str = "host-gw"
    # controllerManager.extraArgs (the control-plane join's controller manager runs with them)
    controller_manager_extra_args: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> ClusterConfiguration:
        doc = yaml.safe_load(text) or {}
        if not isinstance(doc, dict):
            raise ValueError("ClusterConfiguration is not a mapping")
        net = doc.get("networking") or {}
        return cls(control_plane_endpoint=str(doc.get("controlPlaneEndpoint") or ""),
                   pod_subnet=str(net.get("podSubnet") or ""),
                   service_subnet=str(net.get("serviceSubnet") or cls.service_subnet),
                   network_backend=str(doc.get("networkBackend") or cls.network_backend),
                   controller_manager_extra_args=_extra_args(doc.get("controllerManager")))


def _extra_args(cm) -> tuple[tuple[str, str], ...]:
    from cluster.lab import parse_extra_args
    return tuple(parse_extra_args((cm or {}).get("extraArgs") if isinstance(cm, dict) else cm,
                                  "controllerManager.extraArgs").items())


# -- the command line -------------------------------------------------------------------------

def add_parser(sub) -> None:
    p = sub.add_parser("join", help="join this host to a cluster made by `minik8s init` (kubeadm join)",
                       description="Join this host to a cluster as a worker (or, with --control-plane, "
                                   "as another control-plane host).")
    p.add_argument("endpoint", nargs="?", metavar="HOST:PORT", help="the control plane's API server")
    p.add_argument("--token", default="", help="the bootstrap token (for discovery and TLS bootstrap)")
    p.add_argument("--discovery-token", default="", help="the token for discovery (default --token)")
    p.add_argument("--tls-bootstrap-token", default="", help="the token for the kubelet's TLS bootstrap "
                   "(default --token)")
    p.add_argument("--discovery-token-ca-cert-hash", action="append", default=[], metavar="sha256:HEX",
                   help="the hash of the cluster CA's public key, as `minik8s init` prints it (repeatable)")
    p.add_argument("--discovery-timeout", type=flags.duration, default=discovery.DEFAULT_TIMEOUT,
                   metavar="DURATION", help="how long to try discovery (default 5m)")
    p.add_argument("--tls-bootstrap-timeout", type=flags.duration, default=DEFAULT_TLS_BOOTSTRAP_TIMEOUT,
                   metavar="DURATION", help="how long to wait for the kubelet's TLS bootstrap and the Node "
                   "to be Ready (default 5m)")
    p.add_argument("--node-name", default="", help="the Node's name (default: this host's name)")
    p.add_argument("--advertise-address", default="", metavar="IP",
                   help="this node's address (the kubelet's; default: the default route's)")
    cp = p.add_argument_group("control-plane join")
    cp.add_argument("--control-plane", action="store_true",
                    help="join as a control-plane host (with --certificate-key)")
    cp.add_argument("--certificate-key", default="", metavar="HEX",
                    help="the key that decrypts the certificates `init --upload-certs` uploaded")
    cp.add_argument("--apiserver-advertise-address", default="", metavar="IP")
    cp.add_argument("--apiserver-bind-port", type=int, default=layouts.API_PORT, metavar="PORT")


@dataclass
class Request:
    endpoint: str
    discovery_token: str
    tls_bootstrap_token: str
    ca_hashes: list[str]
    node_name: str
    advertise_address: str
    discovery_timeout: float
    tls_bootstrap_timeout: float


def request_of(args: argparse.Namespace) -> Request:
    """The worker join's inputs, checked before anything touches the host or the network."""
    if not args.endpoint:
        raise JoinError("no API server endpoint given",
                        "run the join command `minik8s init` printed: minik8s join HOST:PORT --token ...")
    discovery.split_endpoint(args.endpoint)
    dtoken = args.discovery_token or args.token
    ttoken = args.tls_bootstrap_token or args.token
    if not dtoken or not ttoken:
        raise JoinError("no --token given", "pass the token `minik8s init` or `minik8s token create` printed")
    discovery.parse_token(dtoken)
    discovery.parse_token(ttoken)
    discovery.parse_ca_hashes(args.discovery_token_ca_cert_hash)
    node_name = args.node_name or socket.gethostname().lower()
    if len(node_name) > 253 or not _DNS1123_SUBDOMAIN.match(node_name):
        raise JoinError(f"invalid node name {node_name!r}: a lowercase RFC 1123 subdomain is needed",
                        "pass --node-name with lowercase letters, digits, '-' and '.'")
    if args.advertise_address:
        try:
            ipaddress.ip_address(args.advertise_address)
        except ValueError:
            raise JoinError(f"--advertise-address {args.advertise_address!r} is not an IP address",
                            "pass this host's address, e.g. 192.168.1.21") from None
    for name in ("discovery_timeout", "tls_bootstrap_timeout"):
        if getattr(args, name) <= 0:
            raise JoinError(f"--{name.replace('_', '-')} must be positive", "pass a duration such as 5m")
    return Request(args.endpoint, dtoken, ttoken, list(args.discovery_token_ca_cert_hash), node_name,
                   args.advertise_address, args.discovery_timeout, args.tls_bootstrap_timeout)


def run(args: argparse.Namespace, *, out=sys.stdout) -> int:
    try:
        if args.control_plane:  # cluster/joincp.py's (the CLI sends it there)
            raise JoinError("--control-plane is handled by cluster.joincp", "run it through `minik8s join`")
        req = request_of(args)
        return asyncio.run(join(req, layouts.current(), out=out))
    except (JoinError, DiscoveryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the host refused a write (a read-only /etc, a full disk): undone already
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; fix that, then run the same join again", file=sys.stderr)
        return 1


# -- preflight -----------------------------------------------------------------------------

def preflight(req: Request, lay: layouts.Layout) -> None:
    if os.geteuid() != 0:
        raise JoinError("user is not running as root", "run `minik8s join` as root (sudo)")
    for path in (lay.kubelet_conf, lay.bootstrap_kubelet_conf, lay.admin_conf, lay.config_yaml,
                 os.path.join(lay.pki, "ca.crt")):
        if os.path.exists(path):
            raise JoinError(f"this host is already initialised or joined ({path} exists)",
                            "run `minik8s reset` first")
    have = units.installed(lay)
    if have:
        raise JoinError(f"this host already runs minik8s units ({', '.join(sorted(have))})",
                        "run `minik8s reset` first")
    with socket.socket(socket.AF_INET6 if ":" in (req.advertise_address or "") else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", layouts.KUBELET_PORT))
        except OSError:
            raise JoinError(f"port {layouts.KUBELET_PORT} is in use (a kubelet already runs here?)",
                            "stop what listens there, or run `minik8s reset`") from None
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((layouts.LB_ADDRESS, layouts.LB_PORT))
        except OSError:
            raise JoinError(f"port {layouts.LB_PORT} on {layouts.LB_ADDRESS} is in use (the API load balancer's)",
                            "stop what listens there, or run `minik8s reset`") from None
    if req.advertise_address:
        with socket.socket(socket.AF_INET6 if ":" in req.advertise_address else socket.AF_INET) as s:
            try:
                s.bind((req.advertise_address, 0))
            except OSError:
                raise JoinError(f"--advertise-address {req.advertise_address} is not an address of this host",
                                "pass one of this host's addresses (`ip -brief address`)") from None


# -- talking to the cluster with the bootstrap token ---------------------------------------------

def bootstrap_connection(server: str, ca_pem: bytes, token: str) -> Connection:
    return Connection(server=server, ca_data=ca_pem, token=token)


async def read_cluster_configuration(client: Client) -> ClusterConfiguration:
    fix_rbac = "check that the cluster was made by `minik8s init` (its kubeadm:nodes-kubeadm-config Role)"
    try:
        cm = await client.get("configmaps", KUBEADM_CONFIG, namespace="kube-system")
    except errors.Unauthorized:
        raise JoinError("the API server refused the bootstrap token (401 Unauthorized)",
                        f"the token may not be usable for authentication or has just expired; "
                        f"{discovery.TOKEN_CREATE}") from None
    except errors.Forbidden as exc:
        raise JoinError(f"the bootstrap token may not read kube-system/{KUBEADM_CONFIG} ({exc.message})",
                        fix_rbac) from None
    except errors.NotFound:
        raise JoinError(f"the cluster has no kube-system/{KUBEADM_CONFIG} ConfigMap", fix_rbac) from None
    except errors.APIError as exc:
        raise JoinError(f"reading kube-system/{KUBEADM_CONFIG} failed: {exc.message}", "try again") from None
    text = (cm.get("data") or {}).get("ClusterConfiguration", "")
    try:
        return ClusterConfiguration.parse(text)
    except (yaml.YAMLError, ValueError) as exc:
        raise JoinError(f"kube-system/{KUBEADM_CONFIG} holds no valid ClusterConfiguration ({exc})",
                        "run `minik8s init` again on the control plane") from None


async def check_node_name(client: Client, name: str, *, warn=None) -> None:
    """kubeadm's check: no Node of this name is Ready (a NotReady one, say a host being
    rebuilt, may be taken over)."""
    try:
        node = await client.get("nodes", name)
    except errors.NotFound:
        return
    except errors.Forbidden:
        # kubeadm grants bootstrappers `get nodes` (ClusterRole kubeadm:get-nodes); a
        # cluster without it cannot be asked, and the kubelet's registration decides.
        if warn:
            warn(f"[preflight] WARNING: could not check whether a Node named {name!r} already exists "
                 "(the bootstrap token may not get nodes)")
        return
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            raise JoinError(f"a Node with name {name!r} and status \"Ready\" already exists in the cluster",
                            "delete the existing Node (`kubectl delete node "
                            f"{name}`) or pass another --node-name")


# -- what join writes ------------------------------------------------------------------------------

def bootstrap_kubeconfig(server: str, cluster_name: str, ca_pem: bytes, token: str) -> KubeConfig:
    """kubeadm's bootstrap-kubelet.conf: the CA inline, the token as user tls-bootstrap-token-user."""
    kc = KubeConfig()
    kc.set_cluster(cluster_name, server=server, certificate_authority_data=ca_pem)
    kc.set_user(TLS_BOOTSTRAP_USER, token=token)
    context = f"{TLS_BOOTSTRAP_USER}@{cluster_name}"
    kc.set_context(context, cluster=cluster_name, user=TLS_BOOTSTRAP_USER)
    kc.current_context = context
    return kc


def kubelet_bootstrap_flags(lay: layouts.Layout) -> list[str]:
    """What a joining worker's kubelet adds to init's kubelet unit: its TLS bootstrap."""
    return ["--bootstrap-kubeconfig", lay.bootstrap_kubelet_conf, "--cert-dir", lay.kubelet_pki,
            "--rotate-certificates"]


def host_config(req: Request, config: ClusterConfiguration, advertise_address: str) -> lab.HostConfig:
    """config.yaml of a worker: what join decided and what the cluster said."""
    return lab.HostConfig(nodeName=req.node_name, advertiseAddress=advertise_address, role="worker",
                          controlPlaneEndpoint=config.control_plane_endpoint or req.endpoint,
                          podSubnet=config.pod_subnet or lab.DEFAULT_POD_CIDR,
                          serviceSubnet=config.service_subnet, networkBackend=config.network_backend)


def apiserver_lb_unit(lay: layouts.Layout, seed: str) -> units.Unit:
    """The node-local API load balancer (cluster/apiserverlb.py) on 127.0.0.1:6444, seeded
    with the control-plane endpoint, following the API servers with kubelet.conf once
    the kubelet's TLS bootstrap has written it."""
    return units.Unit("apiserver-lb", lab.minik8s(
        "apiserver-lb", "--listen", f"{layouts.LB_ADDRESS}:{layouts.LB_PORT}", "--servers", seed,
        "--kubeconfig", lay.kubelet_conf))


def worker_units(lay: layouts.Layout, cfg: lab.HostConfig) -> list[units.Unit]:
    """The node-local API load balancer, then init's node units (cluster/lab.py): the
    kubelet, TLS-bootstrapping with bootstrap-kubelet.conf, and kube-proxy and podnet with
    the kubelet.conf it writes; all of them reach the API through the balancer."""
    return [apiserver_lb_unit(lay, cfg.endpoint),
            *lab.node_units(lay, cfg, kubelet_extra=kubelet_bootstrap_flags(lay))]


def source_address(endpoint: str) -> str:
    """The address this host reaches the control plane from (a UDP connect sends nothing):
    the node's address when --advertise-address is not given."""
    host, port = discovery.split_endpoint(endpoint)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(infos[0][4])
            return str(s.getsockname()[0])
    except OSError as exc:
        raise JoinError(f"cannot tell this host's address toward {endpoint} ({exc.strerror or exc})",
                        "pass --advertise-address") from None


@dataclass
class Undo:
    """What join made on the host, to take back if it fails."""
    lay: layouts.Layout
    dirs: list[str] = field(default_factory=list)     # made by join: removed whole
    files: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    keep_log: str = ""  # where the kubelet's log is kept (outside the layout) for the user
    node_name: str = ""  # whose kubelet's pods, bridge and cgroup go too

    def makedirs(self, path: str, mode: int = 0o755) -> None:
        missing = []
        p = path
        while not os.path.exists(p):
            missing.append(p)
            p = os.path.dirname(p)
        os.makedirs(path, mode=mode, exist_ok=True)
        self.dirs.extend(reversed(missing))

    def write(self, path: str, data: bytes, mode: int) -> None:
        self.makedirs(os.path.dirname(path))
        self.files.append(path)
        tmp = f"{path}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def rollback(self) -> list[str]:
        """Undo everything; the problems met (an undo goes as far as it can)."""
        problems = []
        if self.units:
            try:
                units.remove(self.units, self.lay)
            except units.UnitError as exc:
                problems.append(str(exc))
        if self.keep_log and os.path.exists(self.lay.log("kubelet")):
            try:
                shutil.copyfile(self.lay.log("kubelet"), self.keep_log)
            except OSError as exc:
                problems.append(f"keeping the kubelet's log: {exc.strerror}")
        if self.node_name:
            # Before its root goes: what the kubelet made outside the layout, the cgroup
            # parent `minik8s-<node>` above all, which no later `minik8s reset` could find
            # once the host's config is gone.
            try:
                _reset_kubelet(self.lay, self.node_name)
            except OSError as exc:
                problems.append(f"the kubelet's pods, bridge and cgroup: {exc.strerror or exc}")
        # The kubelet writes under dirs join made (its kubeconfig, certificates); files it
        # wrote elsewhere are the ones named here.
        for path in [*self.files, self.lay.kubelet_conf]:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror}")
        for d in sorted(self.dirs, key=len, reverse=True):
            shutil.rmtree(d, ignore_errors=True)
        return problems


def _reset_kubelet(lay: layouts.Layout, node_name: str) -> list[str]:
    """What the kubelet of `node_name` made outside the layout's files, removed as
    `minik8s reset` removes it (cluster/reset.py): its pods, its bridge, its cgroup
    parent `minik8s-<node>`."""
    if os.geteuid() != 0 or not os.path.isdir(lay.kubelet_dir):
        return []
    from kubelet.main import default_bridge
    from kubelet.runtime.linux.runtime import reset_node
    return reset_node(lay.kubelet_dir, bridge=default_bridge(node_name), cgroup_parent=f"minik8s-{node_name}")


def _track_unit_dirs(undo: Undo) -> None:
    """Directories the unit machinery and the kubelet will make (logs, /run, the kubelet's
    root), claimed now if absent so that a rollback removes them."""
    for d in (undo.lay.units, undo.lay.logs, undo.lay.run, undo.lay.kubelet_dir):
        undo.makedirs(d)


async def join(req: Request, lay: layouts.Layout, *, out=sys.stdout) -> int:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say("[preflight] Running pre-flight checks")
    preflight(req, lay)
    say(f"[discovery] Requesting cluster-info from https://{req.endpoint} and checking it against the token "
        "and the CA hash")
    info = await discovery.discover(req.endpoint, req.discovery_token, req.ca_hashes, timeout=req.discovery_timeout)
    server = discovery.node_api_server(req.endpoint)
    address = req.advertise_address or source_address(req.endpoint)
    say(f"[discovery] Cluster info signature and contents are valid and TLS certificate validates against "
        f"pinned roots, will use API Server \"{discovery.https_url(req.endpoint)}\"")
    say("[preflight] Reading configuration from the cluster...")
    try:
        # Until the node-local load balancer runs, the join address itself.
        async with Client(bootstrap_connection(discovery.https_url(req.endpoint), info.ca_pem,
                                               req.tls_bootstrap_token),
                          user_agent="minik8s-join", max_retries=2) as client:
            config = await read_cluster_configuration(client)
            await check_node_name(client, req.node_name, warn=say)
    except (httpx.HTTPError, OSError) as exc:
        raise JoinError(f"lost the control plane at {discovery.https_url(req.endpoint)} after discovery "
                        f"({str(exc) or type(exc).__name__})",
                        "check that it is up, then run the same join again") from None
    undo = Undo(lay, keep_log="" if units.systemd_runs(lay) else kept_kubelet_log(req.node_name),
                node_name=req.node_name)
    try:
        cluster_name = info.cluster_name or DEFAULT_CLUSTER_NAME
        say(f"[kubelet-start] Writing the CA to {os.path.join(lay.pki, 'ca.crt')} and the bootstrap "
            f"kubeconfig to {lay.bootstrap_kubelet_conf}")
        undo.write(os.path.join(lay.pki, "ca.crt"), info.ca_pem, 0o644)
        kc = bootstrap_kubeconfig(server, cluster_name, info.ca_pem, req.tls_bootstrap_token)
        undo.write(lay.bootstrap_kubelet_conf, kc.dumps().encode(), 0o600)
        cfg = host_config(req, config, address)
        undo.write(lay.config_yaml, yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False).encode(), 0o644)
        _track_unit_dirs(undo)
        # The kubelet's self-signed serving certificate, as init makes its own.
        lab.write_kubelet_serving(lay, req.node_name, address)
        wanted = worker_units(lay, cfg)
        say(f"[kubelet-start] Starting the node's units: {', '.join(u.name for u in wanted)}")
        undo.units = [u.name for u in wanted]
        try:
            units.install(wanted, lay)
        except units.UnitError as exc:
            raise JoinError(f"the node's units could not be started: {exc}",
                            "fix that, then run the same join again") from None
        say("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap")
        await wait_joined(req, lay, server, info.ca_pem)
    except BaseException:
        # In a thread: the kubelet's reset speaks netlink through pyroute2's own event loop.
        problems = await asyncio.to_thread(undo.rollback)
        for p in problems:
            print(f"warning: undoing the join: {p}", file=sys.stderr)
        raise
    say("\nThis node has joined the cluster:\n"
        "* Certificate signing request was sent to apiserver and a response was received.\n"
        "* The Kubelet was informed of the new secure connection details.\n\n"
        "Run 'kubectl get nodes' on the control-plane to see this node join the cluster.\n")
    return 0


def kept_kubelet_log(node_name: str) -> str:
    """Where a failed join leaves the kubelet's log: the rollback removes the layout's."""
    return os.path.join(tempfile.gettempdir(), f"minik8s-join-{node_name}-kubelet.log")


def _kubelet_log(lay: layouts.Layout, node_name: str) -> str:
    if units.systemd_runs(lay):
        return "`journalctl -u minik8s-kubelet`"
    return kept_kubelet_log(node_name)


async def wait_joined(req: Request, lay: layouts.Layout, server: str, ca_pem: bytes) -> None:
    """Until the kubelet has written kubelet.conf (its TLS bootstrap) and, with those
    credentials, its Node reads Ready; JoinError naming the kubelet's log at the timeout."""
    deadline = time.monotonic() + req.tls_bootstrap_timeout
    fix = f"see the kubelet's log ({_kubelet_log(lay, req.node_name)})"
    while not os.path.exists(lay.kubelet_conf):
        if time.monotonic() >= deadline:
            raise JoinError(f"the kubelet did not complete its TLS bootstrap (no {lay.kubelet_conf}) within "
                            f"{req.tls_bootstrap_timeout:g}s", fix)
        await asyncio.sleep(0.5)
    from client import kubeconfig
    last = "not registered yet"
    while True:
        try:
            conn = kubeconfig.load(lay.kubelet_conf).connection()
            async with Client(conn, user_agent="minik8s-join", max_retries=0, timeout=10) as client:
                node = await client.get("nodes", req.node_name)
            ready = [c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
            if ready and ready[0].get("status") == "True":
                return
            last = (f"Ready is {ready[0].get('status')}: {ready[0].get('message', '')}" if ready
                    else "no Ready condition")
        except errors.NotFound:
            last = "not registered yet"
        except (errors.APIError, OSError, ValueError) as exc:
            last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - httpx's errors; the kubelet may be rewriting its files
            last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if time.monotonic() >= deadline:
            raise JoinError(f"Node {req.node_name!r} did not become Ready within {req.tls_bootstrap_timeout:g}s "
                            f"({last})", fix)
        await asyncio.sleep(1.0)
