"""`minik8s kubelet`: run one node's pods for real, or simulate many nodes.

    minik8s kubelet --kubeconfig FILE --node-name N [--pod-cidr CIDR] [--subnet-file FILE] [--root-dir DIR]
                    [--address IP] [--port 10250] [--token-file FILE]
                    [--tls-cert-file F --tls-private-key-file F [--client-ca-file F]
                     [--authentication-token-webhook] [--authorization-mode AlwaysAllow|Webhook]]
                    [--bootstrap-kubeconfig FILE] [--cert-dir DIR] [--rotate-certificates]
                    [--image-store-dir DIR] [--max-parallel-image-pulls 5] [--host-root-images]
                    [--healthz-port 10248] [--healthz-bind-address 127.0.0.1]
                    [--cluster-dns IP[,IP]] [--cluster-domain cluster.local] [--resolv-conf FILE]
                    [-v N] [--logging-format text|json]
                    [--registry-config FILE] [--image-gc-high-threshold 85]
                    [--image-gc-low-threshold 80] [--minimum-image-ttl-duration 2m]
    minik8s kubelet --kubeconfig FILE --runtime fake --nodes 1000 [--node-name PREFIX] [--port P]
    minik8s kubelet --cleanup [--node-name N] [--root-dir DIR] [--bridge B] [--cgroup-parent C]

The Linux runtime: registers the Node, renews its Lease, runs the node's pods in
namespaces and cgroups (state under --root-dir), and serves logs and exec on
--address:--port. With --tls-cert-file and --tls-private-key-file the endpoint is HTTPS:
callers are known by a client certificate from --client-ca-file (or, with
--authentication-token-webhook, a bearer token the API server's TokenReview vouches for) and allowed by
--authorization-mode (AlwaysAllow, the default as the kubelet's, or Webhook: a
SubjectAccessReview to the API server; kubelet/auth.py); the shared token is not used.
Without them it is plain HTTP for callers presenting the shared token (--token-file,
else $MINIK8S_KUBELET_TOKEN, else one generated into <root-dir>/kubelet-token). Every
container gets KUBERNETES_SERVICE_HOST/PORT naming the API server of --kubeconfig (its
node address instead when that is a loopback one, which a pod cannot reach). The pod CIDR
is node.spec.podCIDR when set, else --pod-cidr, else (after waiting --pod-cidr-timeout for
a controller to allocate one) 10.244.0.0/24. Pods get the MTU the pod network agent
wrote in --subnet-file (MINIK8S_MTU; kubelet/runtime/linux/network.py). Images are pulled from registries into the
content store at --image-store-dir (/var/lib/minik8s/images: one per host, shared by
every kubelet on it), at most --max-parallel-image-pulls different images at once;
with --host-root-images every image name is the host's root and nothing is pulled (the
name minik8s.local/host-root means that in either mode). Each pod's resolv.conf follows
its dnsPolicy and dnsConfig as the kubelet's (kubelet/dns.py): ClusterFirst pods get
--cluster-dns, searching <ns>.svc.<--cluster-domain>. SIGTERM or SIGINT
stops the kubelet and leaves the pods running: a restarted kubelet adopts them.
`--cleanup` (with the flags that kubelet ran with) then removes its pods, bridge,
cgroups, mounts and runtime state from the host, and does nothing the second time.

TLS bootstrap and rotation (kubelet/certificate.py): with --bootstrap-kubeconfig and no
valid client certificate in --kubeconfig, the kubelet asks for one through a
CertificateSigningRequest (signer kubernetes.io/kube-apiserver-client-kubelet, CN
system:node:<node>, O system:nodes) as the bootstrap kubeconfig's user, keeps it in
--cert-dir (default <root-dir>/pki) as kubelet-client-<time>.pem behind the symlink
kubelet-client-current.pem, and writes --kubeconfig to use it; a denied request is
exit code 1. --rotate-certificates renews it at 70-90 % of its life, and the running
kubelet switches to the new one. With --cert-dir or --bootstrap-kubeconfig and no
--tls-cert-file, the endpoint serves HTTPS with a self-signed kubelet.crt/kubelet.key
made in --cert-dir. With --runtime fake these are for its one node, `<prefix>-0`
(--nodes 1).

Registries and image GC: --registry-config is a k3s registries.yaml (mirrors, per-host
CA, client certificate, credentials; kubelet/images/hosts.py); a bad one stops the
kubelet before it starts, with one line naming the file and key. Every 5 minutes, when
the image store's filesystem is at --image-gc-high-threshold percent or more, images no
container uses (and older than --minimum-image-ttl-duration) are removed, least
recently used first, until it is at --image-gc-low-threshold (kubelet/images/gc.py).

Health and metrics, as the kubelet's healthz server: on --healthz-bind-address
(127.0.0.1):--healthz-port (10248; 0 turns it off), plain HTTP and no credential,
`/healthz`, `/livez`, `/readyz` (`?verbose`, `/healthz/<check>`) with the checks `ping`
and `syncloop` (fails when the PLEG loop has not run for max(2 x --sync-frequency, 5
minutes)), and `/metrics` (kubelet/metrics.py, client/'s, the process's CPU and RSS).
The fake runtime serves `ping` only there; its nodes' endpoint (kubelet/fake.py: the
stats of each node at its 127.127.x.y InternalIP) listens on every address at --port (a
free one by default), with the TLS, authentication and authorization flags of the
real one (plain HTTP: the shared token of --token-file or $MINIK8S_KUBELET_TOKEN, else
nobody gets in). A port that cannot be bound is logged, not fatal.
The endpoint on --port serves `/metrics` too, to the callers it lets in. A task of the kubelet
that fails (the heartbeat, the endpoint) ends the process with exit code 1. Logs are
klog-like (machinery.klog): `-v N`, `--logging-format=json`.
"""
from __future__ import annotations

import argparse
import asyncio
import faulthandler
import hashlib
import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
from typing import Any, Coroutine

import httpx

from client import kubeconfig
from client.componentserver import ComponentServer
from client.rest import Client
from client.useragent import default_user_agent
from machinery import errors, flags, klog
from machinery.healthz import named_check

log = logging.getLogger("minik8s.kubelet")

DEFAULT_POD_CIDR = "10.244.0.0/24"
# Where `minik8s podnet` writes the MTU pods need (cluster/podnet.py: the same default).
DEFAULT_SUBNET_FILE = os.environ.get("MINIK8S_ROOT", "") + "/run/minik8s/subnet.env"
DEFAULT_IMAGE_STORE = "/var/lib/minik8s/images"
TOKEN_ENV = "MINIK8S_KUBELET_TOKEN"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="minik8s kubelet", description="Run a node's pods.")
    p.add_argument("--kubeconfig", default=None,
                   help="kubeconfig of the API server (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--node-name", default=None, help="the Node's name (default: the hostname); "
                   "with --runtime fake, the prefix of the fake nodes' names (default: fake-node)")
    p.add_argument("--pod-cidr", default=None, help="pod addresses when node.spec.podCIDR is not set")
    p.add_argument("--pod-cidr-timeout", type=float, default=10.0,
                   help="seconds to wait for node.spec.podCIDR when there is no --pod-cidr")
    p.add_argument("--root-dir", default=None, help="state directory (default /var/lib/minik8s/<node>)")
    p.add_argument("--address", default=None, help="the node's IP: InternalIP and where the "
                   "endpoint listens (default: the address of the default route's device)")
    p.add_argument("--port", type=int, default=None, help="the kubelet endpoint's port (default 10250; "
                   "with --runtime fake, a free one)")
    p.add_argument("--healthz-port", type=_port, default=HEALTHZ_PORT, metavar="PORT",
                   help=f"port of the health and metrics server ({HEALTHZ_PORT}; 0: off)")
    p.add_argument("--healthz-bind-address", default="127.0.0.1", metavar="IP",
                   help="address of the health and metrics server (127.0.0.1)")
    p.add_argument("--token-file", default=None, help=f"the token the API server presents (default ${TOKEN_ENV}); "
                   "plain HTTP only")
    p.add_argument("--tls-cert-file", default=None, metavar="FILE",
                   help="the endpoint's serving certificate: serve HTTPS (with --tls-private-key-file)")
    p.add_argument("--tls-private-key-file", default=None, metavar="FILE", help="its key")
    p.add_argument("--client-ca-file", default=None, metavar="FILE",
                   help="CA bundle that callers' client certificates must chain to")
    p.add_argument("--authentication-token-webhook", action="store_true",
                   help="on the HTTPS endpoint, also accept bearer tokens the API server's TokenReview "
                   "vouches for")
    p.add_argument("--authorization-mode", default="AlwaysAllow", choices=("AlwaysAllow", "Webhook"),
                   help="who may use the HTTPS endpoint: every authenticated caller (AlwaysAllow, "
                   "default), or as the API server's SubjectAccessReview says (Webhook)")
    _add_certificate_flags(p)
    p.add_argument("--bridge", default=None, help="the pods' bridge (default mk8s-<hash of the node name>)")
    p.add_argument("--subnet-file", default=DEFAULT_SUBNET_FILE, metavar="FILE",
                   help="the pod network agent's subnet file, whose MINIK8S_MTU is each new pod's MTU "
                   "(default $MINIK8S_ROOT/run/minik8s/subnet.env; missing: the kernel's default)")
    p.add_argument("--cgroup-parent", default=None, help="cgroup under which pods go (default minik8s-<node>)")
    p.add_argument("--node-labels", type=_labels, default={}, metavar="KEY=VALUE,...",
                   help="labels the kubelet registers its Node with (NodeRestriction keeps a node "
                        "from setting node-role.kubernetes.io/* itself: `minik8s init` labels it)")
    p.add_argument("--register-with-taints", type=_taints, default=[], metavar="KEY[=VALUE]:EFFECT,...",
                   help="taints the Node is created with (not changed on an existing Node)")
    p.add_argument("--cpu", default=None, help="cpu capacity to report (default: the host's)")
    p.add_argument("--memory", default=None, help="memory capacity to report (default: the host's)")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--node-lease-duration", type=int, default=40)
    p.add_argument("--lease-renew-interval", type=float, default=10.0, help="seconds between lease renewals")
    p.add_argument("--node-status-update-frequency", type=float, default=10.0)
    p.add_argument("--sync-frequency", type=float, default=60.0, help="seconds between resyncs of a quiet pod")
    p.add_argument("--cluster-dns", type=_ip_list, action="append", default=[], metavar="IP[,IP...]",
                   help="the cluster DNS servers ClusterFirst pods get (comma-separated, repeatable; "
                   "none: such pods fall back to Default, with a warning event)")
    p.add_argument("--cluster-domain", default="cluster.local", metavar="DOMAIN",
                   help="the cluster's DNS domain, searched by ClusterFirst pods (cluster.local)")
    p.add_argument("--resolv-conf", default="/etc/resolv.conf", metavar="FILE",
                   help="the node's resolver configuration, which Default pods get "
                   "(/etc/resolv.conf; \"\": none)")
    p.add_argument("--runtime", choices=("linux", "fake"), default="linux")
    p.add_argument("--nodes", type=int, default=1, help="with --runtime fake: how many nodes to simulate")
    p.add_argument("--image-store-dir", default=DEFAULT_IMAGE_STORE, metavar="DIR",
                   help=f"the host's content store of images, shared by every kubelet on it "
                   f"(default {DEFAULT_IMAGE_STORE})")
    p.add_argument("--max-parallel-image-pulls", type=_positive, default=5, metavar="N",
                   help="pulls of different images that may run at once (default 5; pulls of one "
                   "image share one pull)")
    p.add_argument("--host-root-images", action="store_true",
                   help="every image name is the host's root filesystem, nothing is pulled (for "
                   "tests and labs that need the host's tools; the image name "
                   "minik8s.local/host-root means that without this flag)")
    p.add_argument("--cleanup", action="store_true",
                   help="remove what a kubelet with the same --node-name, --root-dir, --bridge and "
                   "--cgroup-parent left on this host (its pods, bridge, cgroups, mounts and state) "
                   "and exit; the API is not contacted. Run it after stopping the kubelet")
    _add_image_flags(p)
    _add_eviction_flags(p)
    klog.add_flags(p)
    return p.parse_args(argv)


# --- the eviction manager (h-press) ------------------------------------------------------

def _add_eviction_flags(p: argparse.ArgumentParser) -> None:
    from kubelet import eviction
    p.add_argument("--eviction-hard", default=None, metavar="SIGNAL<VALUE,...",
                   help=f"thresholds that evict at once (default {eviction.DEFAULT_HARD.replace('%', '%%')}; "
                   "given, it replaces the default)")
    p.add_argument("--eviction-soft", default="", metavar="SIGNAL<VALUE,...",
                   help="thresholds that evict once met for their grace period")
    p.add_argument("--eviction-soft-grace-period", default="", metavar="SIGNAL=DURATION,...",
                   help="each soft threshold's grace period")
    p.add_argument("--eviction-minimum-reclaim", default="", metavar="SIGNAL=VALUE,...",
                   help="how far above its threshold a signal must come back before the threshold is cleared")
    p.add_argument("--eviction-max-pod-grace-period", type=int, default=0, metavar="SECONDS",
                   help="the longest grace period a soft eviction gives a pod")
    p.add_argument("--eviction-pressure-transition-period", type=flags.duration,
                   default=eviction.DEFAULT_PRESSURE_TRANSITION_PERIOD, metavar="DURATION",
                   help="how long a pressure condition stays after its last threshold was met (default 5m)")


def check_eviction_flags(args: argparse.Namespace) -> str | None:
    """Reads the eviction flags into `args.eviction_thresholds`; the one-line error, or None."""
    from kubelet import eviction
    try:
        args.eviction_thresholds = eviction.parse_thresholds(
            args.eviction_hard, args.eviction_soft, args.eviction_soft_grace_period,
            args.eviction_minimum_reclaim)
    except ValueError as e:
        return str(e)
    return None


# --- TLS bootstrap, certificate rotation, the self-signed serving certificate (h-csr) ---

def _add_certificate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap-kubeconfig", default=None, metavar="FILE",
                   help="when --kubeconfig has no valid client certificate, get one with this "
                   "kubeconfig's (bootstrap token) credential through a CertificateSigningRequest, and "
                   "write --kubeconfig to use it")
    p.add_argument("--cert-dir", default=None, metavar="DIR",
                   help="where the client certificates (kubelet-client-current.pem) and the "
                   "self-signed serving certificate (kubelet.crt, kubelet.key) go (default <root-dir>/pki); "
                   "given, or with --bootstrap-kubeconfig, the endpoint serves HTTPS with kubelet.crt "
                   "unless --tls-cert-file says otherwise")
    p.add_argument("--rotate-certificates", type=flags.boolean, nargs="?", const=True, default=False,
                   metavar="true|false", help="renew the client certificate through a "
                   "CertificateSigningRequest at 70-90%% of its life, without a restart")


def cert_dir(args: argparse.Namespace) -> str:
    return args.cert_dir or os.path.join(_node_paths(args)[1], "pki")


def credential_node(args: argparse.Namespace) -> str:
    """The node whose identity the client certificate carries: the node's name, or with
    --runtime fake the one fake node's (`<prefix>-0`)."""
    if args.runtime == "fake":
        return f"{args.node_name or 'fake-node'}-0"
    return _node_paths(args)[0]


def check_certificate_flags(args: argparse.Namespace) -> str | None:
    """The one-line error of the bootstrap and rotation flags, or None. Without
    --tls-cert-file, in --cert-dir mode, makes the self-signed serving certificate and
    points --tls-cert-file and --tls-private-key-file at it."""
    if args.bootstrap_kubeconfig and not args.kubeconfig:
        return "--bootstrap-kubeconfig needs --kubeconfig: the kubelet writes the credential it gets there"
    if (args.bootstrap_kubeconfig or args.rotate_certificates) and args.runtime == "fake" and args.nodes != 1:
        return "--bootstrap-kubeconfig and --rotate-certificates with --runtime fake need --nodes 1"
    if not args.tls_cert_file and not args.tls_private_key_file and (args.cert_dir or args.bootstrap_kubeconfig):
        from kubelet.certificate import serving_certificate
        name = _node_paths(args)[0] if args.runtime == "linux" else (args.node_name or "fake-node")
        try:
            args.tls_cert_file, args.tls_private_key_file = serving_certificate(
                cert_dir(args), name, args.address or "")
        except (OSError, ValueError) as e:
            return f"--cert-dir {cert_dir(args)}: {getattr(e, 'strerror', None) or e}"
    return None


async def _bootstrap(args: argparse.Namespace) -> str | None:
    """--bootstrap-kubeconfig: make --kubeconfig usable; the one-line error, or None."""
    from kubelet.certificate import BootstrapError, bootstrap
    try:
        await bootstrap(kubeconfig_path=args.kubeconfig, bootstrap_path=args.bootstrap_kubeconfig,
                        cert_dir=cert_dir(args), node_name=credential_node(args),
                        user_agent=default_user_agent("kubelet"))
    except BootstrapError as e:
        return f"bootstrap: {e}"
    except (OSError, errors.APIError, httpx.HTTPError) as e:
        return f"bootstrap: {getattr(e, 'message', None) or e}"
    return None


def _rotation(args: argparse.Namespace, client: Client) -> Any:
    """--rotate-certificates: the rotation of `client`'s certificate, or None. The store
    starts from --kubeconfig's certificate when --cert-dir has none yet (as client-go's
    file store falls back to it)."""
    from kubelet.certificate import CertificateRotation, FileStore
    if not args.rotate_certificates:
        return None
    store = FileStore(cert_dir(args))
    if store.current() is None:
        conn = client.connection
        if not (conn.cert_file and conn.key_file):
            log.warning("--rotate-certificates: no client certificate file to rotate")
            return None
        with open(conn.cert_file, "rb") as c, open(conn.key_file, "rb") as k:
            store.update(c.read(), k.read())
        client.use_client_certificate(store.current_path, store.current_path)
    return CertificateRotation(client, store, credential_node(args))


# --- registries and image GC (h-reg) ---------------------------------------------------

def _add_image_flags(p: argparse.ArgumentParser) -> None:
    from kubelet.images import gc
    p.add_argument("--registry-config", default=None, metavar="FILE",
                   help="registries.yaml, as k3s reads it: mirrors (with rewrites) and per-host "
                   "TLS and credentials (default: none)")
    p.add_argument("--image-gc-high-threshold", type=int, default=gc.DEFAULT_HIGH_THRESHOLD, metavar="PERCENT",
                   help="disk usage of the image store's filesystem at which image GC always runs "
                   f"(default {gc.DEFAULT_HIGH_THRESHOLD}; 100 turns image GC off)")
    p.add_argument("--image-gc-low-threshold", type=int, default=gc.DEFAULT_LOW_THRESHOLD, metavar="PERCENT",
                   help="disk usage image GC frees down to; less than the high threshold "
                   f"(default {gc.DEFAULT_LOW_THRESHOLD})")
    p.add_argument("--minimum-image-ttl-duration", type=flags.duration, default=gc.DEFAULT_MIN_AGE,
                   metavar="DURATION", help="minimum age of an unused image before image GC may remove it "
                   "(default 2m)")


def check_image_flags(args: argparse.Namespace) -> str | None:
    """Checks the image GC flags and reads --registry-config into `args.registries`
    (host -> RegistryHostConfig, for the image service); the one-line error, or None."""
    from kubelet.images import gc, hosts
    try:
        gc.check_thresholds(args.image_gc_high_threshold, args.image_gc_low_threshold)
    except ValueError as e:
        return str(e)
    args.registries = {}
    if args.registry_config:
        try:
            args.registries = hosts.load(args.registry_config)
        except hosts.RegistryConfigError as e:
            return str(e)
    return None


async def image_gc(args: argparse.Namespace, store: Any) -> None:
    """The image GC loop on the image service's content store (kubelet/images/gc.py)."""
    from kubelet.images import gc
    await gc.run(store, args.image_gc_high_threshold, args.image_gc_low_threshold,
                 min_age=args.minimum_image_ttl_duration)


HEALTHZ_PORT = 10248  # the kubelet's


def _positive(v: str) -> int:
    if not v.isdigit() or int(v) < 1:
        raise argparse.ArgumentTypeError(f"invalid value {v!r}: want a whole number of at least 1")
    return int(v)


def _ip_list(v: str) -> list[str]:
    out = []
    for ip in (x.strip() for x in v.split(",") if x.strip()):
        try:
            out.append(str(ipaddress.ip_address(ip)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid IP address {ip!r}") from None
    return out


def _labels(v: str) -> dict[str, str]:
    from machinery import labels
    out = {}
    for item in (x.strip() for x in v.split(",") if x.strip()):
        key, eq, value = item.partition("=")
        why = labels.validate_label_key(key) if eq else "want KEY=VALUE"
        if not why and value:
            why = labels.validate_label_value(value)
        if why:
            raise argparse.ArgumentTypeError(f"invalid node label {item!r}: {why}")
        out[key] = value
    return out


_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _taints(v: str) -> list[dict[str, str]]:
    """`key[=value]:Effect,...` as the kubelet's --register-with-taints reads them."""
    from machinery import labels
    out = []
    for item in (x.strip() for x in v.split(",") if x.strip()):
        kv, _, effect = item.rpartition(":")
        key, eq, value = kv.partition("=")
        why = (f"effect {effect!r} is not one of {', '.join(_EFFECTS)}" if effect not in _EFFECTS
               else labels.validate_label_key(key) or (value and labels.validate_label_value(value)))
        if why:
            raise argparse.ArgumentTypeError(f"invalid taint {item!r}: {why}")
        out.append({"key": key, **({"value": value} if eq else {}), "effect": effect})
    return out


def _port(v: str) -> int:
    if not v.isdigit() or int(v) > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {v!r}: want 0 to 65535")
    return int(v)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.port is None:
        args.port = 10250 if args.runtime == "linux" else 0
    if args.runtime == "linux" and args.nodes != 1:
        print("error: --nodes is for --runtime fake (one kubelet runs one real node)", file=sys.stderr)
        return 2
    if args.cleanup:
        return cleanup(args)
    if err := check_certificate_flags(args):
        print(f"error: {err}", file=sys.stderr)
        return 1
    if (err := (check_image_flags(args) if args.runtime == "linux" else None) or check_tls_flags(args)
            or check_eviction_flags(args)):
        print(f"error: {err}", file=sys.stderr)
        return 1
    klog.setup_from_args(args)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1` prints every thread's stack
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0


def default_bridge(node: str) -> str:
    return "mk8s-" + hashlib.sha1(node.encode()).hexdigest()[:8]


def _node_paths(args: argparse.Namespace) -> tuple[str, str, str, str]:
    """(node name, root dir, bridge, cgroup parent) from the flags and their defaults."""
    name = args.node_name or socket.gethostname().lower()
    return (name, args.root_dir or os.path.join("/var/lib/minik8s", name),
            args.bridge or default_bridge(name), args.cgroup_parent or f"minik8s-{name}")


def cleanup(args: argparse.Namespace) -> int:
    """`--cleanup`: take a stopped kubelet's pods and node plumbing off this host."""
    if args.runtime != "linux":
        print("error: --cleanup is for --runtime linux (the fake runtime leaves nothing on the host)",
              file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: --cleanup needs root (it removes network links, cgroups and mounts)", file=sys.stderr)
        return 1
    from kubelet.runtime.linux.runtime import reset_node
    _name, root_dir, bridge, cgroup_parent = _node_paths(args)
    try:
        removed = reset_node(root_dir, bridge=bridge, cgroup_parent=cgroup_parent)
    except (OSError, ValueError) as exc:
        print(f"error: cleanup: {exc}", file=sys.stderr)
        return 1
    for what in removed:
        print(f"removed {what}")
    if not removed:
        print("nothing to clean up")
    return 0


def check_tls_flags(args: argparse.Namespace) -> str | None:
    """The one-line error of the endpoint's TLS flags (files that go together, that
    cannot be read or are not PEM), or None."""
    import ssl
    if bool(args.tls_cert_file) != bool(args.tls_private_key_file):
        return "--tls-cert-file and --tls-private-key-file go together"
    if not args.tls_cert_file:
        if args.client_ca_file or args.authorization_mode != "AlwaysAllow":
            return "--client-ca-file and --authorization-mode need --tls-cert-file (the HTTPS endpoint)"
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(args.tls_cert_file, args.tls_private_key_file)
    except (OSError, ssl.SSLError) as e:
        return f"--tls-cert-file/--tls-private-key-file: {getattr(e, 'strerror', None) or e}"
    if args.client_ca_file:
        try:
            ctx.load_verify_locations(args.client_ca_file)
        except (OSError, ssl.SSLError) as e:
            return f"--client-ca-file {args.client_ca_file}: {getattr(e, 'strerror', None) or e}"
    return None


def _endpoint_auth(args: argparse.Namespace, client: Client, node: str) -> tuple[Any, Any]:
    """(EndpointAuth, TLSConfig) for the endpoint from the flags; (None, None) for the
    plain mode with the shared token."""
    from kubelet.auth import EndpointAuth, TokenWebhook, Webhook
    from kubelet.server import TLSConfig
    if not args.tls_cert_file:
        return None, None
    authorizer = Webhook(client) if args.authorization_mode == "Webhook" else None
    tokens = TokenWebhook(client) if args.authentication_token_webhook else None
    return (EndpointAuth(node_name=node, tls=True, authorizer=authorizer, token_webhook=tokens),
            TLSConfig(args.tls_cert_file, args.tls_private_key_file, args.client_ca_file))


def api_endpoint(server: str, node_address: str) -> tuple[str, int]:
    """(host, port) of the API server as pods reach it: the kubeconfig's server, except
    that a loopback host, the node's own, is the node's address from inside a pod."""
    import ipaddress
    from urllib.parse import urlsplit
    url = urlsplit(server)
    host = url.hostname or node_address
    try:
        if ipaddress.ip_address(host).is_loopback:
            host = node_address
    except ValueError:
        if host == "localhost":
            host = node_address
    return host, url.port or (443 if url.scheme == "https" else 80)


def load_token(args: argparse.Namespace, root_dir: str) -> str:
    if args.token_file:
        with open(args.token_file) as f:
            return f.read().strip()
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = os.path.join(root_dir, "kubelet-token")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    log.warning("no --token-file and no $%s: the endpoint accepts the token in %s "
                "(give it to the API server as $%s for logs and exec)", TOKEN_ENV, path, TOKEN_ENV)
    with open(path) as f:
        return f.read().strip()


async def run(args: argparse.Namespace) -> int:
    if args.bootstrap_kubeconfig and (err := await _bootstrap(args)):
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        conn = kubeconfig.load(args.kubeconfig).connection()
    except (OSError, ValueError) as exc:
        print(f"error: kubeconfig: {exc}", file=sys.stderr)
        return 1
    client = Client(conn, user_agent=default_user_agent("kubelet"))
    try:
        rotation = _rotation(args, client)
    except (OSError, ValueError) as exc:
        print(f"error: --rotate-certificates: {exc}", file=sys.stderr)
        await client.close()
        return 1
    rotating = asyncio.create_task(rotation.run(), name="certificate-rotation") if rotation else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    def on_signal(sig: signal.Signals) -> None:
        log.info("%s: stopping (pods keep running)", sig.name)
        stop.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        if args.runtime == "fake":
            return await _run_fake(args, client, stop)
        return await _run_linux(args, client, stop)
    finally:
        if rotating is not None:
            rotating.cancel()
            await asyncio.gather(rotating, return_exceptions=True)
        await client.close()


def _capacity(args: argparse.Namespace, root_dir: str) -> dict[str, str]:
    from kubelet.node import host_capacity
    cap = host_capacity(root_dir)
    if args.cpu:
        cap["cpu"] = args.cpu
    if args.memory:
        cap["memory"] = args.memory
    cap["pods"] = str(args.max_pods)
    return cap


class _Stop(Exception):
    """Ends the kubelet's task group: a stop signal (code 0) or a task that failed (1)."""

    def __init__(self, code: int = 0):
        super().__init__(code)
        self.code = code


async def _stop_on(stop: asyncio.Event) -> None:
    await stop.wait()
    raise _Stop(0)


async def _guard(name: str, coro: Coroutine[Any, Any, Any], *, ending_stops: bool = True) -> None:
    """Run one of the kubelet's tasks: its failure (reported) ends the kubelet with exit
    code 1; its normal end ends it with 0 unless `ending_stops` is false."""
    try:
        await coro
    except Exception as exc:  # noqa: BLE001 - reported; the process exits 1
        log.error("kubelet: %s failed: %r", name, exc)
        raise _Stop(1) from exc
    if ending_stops:
        raise _Stop(0)


def _exit_code(group: BaseExceptionGroup) -> int:
    return max(e.code for e in group.exceptions if isinstance(e, _Stop))


async def _serve_health(args: argparse.Namespace, server: ComponentServer) -> None:
    """The health and metrics server on --healthz-bind-address:--healthz-port. As the
    kubelet's, a port that cannot be bound is logged, not fatal: pods keep being run."""
    if not args.healthz_port:
        return
    try:
        await server.start(args.healthz_bind_address, args.healthz_port)
    except OSError as e:
        log.error("failed to serve healthz on %s:%d: %s", args.healthz_bind_address, args.healthz_port, e)


async def _register(node, stop: asyncio.Event) -> bool:
    delay = 0.2
    while not stop.is_set():
        try:
            await node.register()
            return True
        except Exception as exc:  # noqa: BLE001 - the API server may not be up yet
            log.warning("registering node %s: %s; retrying in %.1fs", node.name, exc, delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, 7.0)
    return False


async def _wait_pod_cidr(client: Client, name: str, timeout: float, stop: asyncio.Event) -> str | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and not stop.is_set():
        await asyncio.sleep(0.25)
        try:
            cidr = ((await client.get("nodes", name)).get("spec") or {}).get("podCIDR")
        except Exception:  # noqa: BLE001 - keep waiting
            cidr = None
        if cidr:
            return cidr
    return None


async def _run_linux(args: argparse.Namespace, client: Client, stop: asyncio.Event) -> int:
    from kubelet.images import HostRootImageStore
    from kubelet.images.service import ImageService
    from kubelet.images.store import ContentStore
    from kubelet import eviction
    from kubelet.dns import Configurer as DNSConfigurer
    from kubelet.kubelet import Kubelet
    from kubelet.runtime.linux.runtime import LinuxRuntime
    from kubelet.runtime.linux.network import node_ip
    from kubelet.node import Node, node_images
    from kubelet.server import KubeletServer

    name, root_dir, bridge, cgroup_parent = _node_paths(args)
    os.makedirs(root_dir, exist_ok=True)
    # pyroute2 cannot run on the event loop's thread
    address = args.address or await asyncio.to_thread(node_ip) or "127.0.0.1"
    auth, tls = _endpoint_auth(args, client, name)
    token = load_token(args, root_dir) if tls is None else None
    service: ImageService | None = None
    if not args.host_root_images:
        try:
            service = ImageService(ContentStore(args.image_store_dir), registries=args.registries,
                                   max_parallel=args.max_parallel_image_pulls)
        except OSError as exc:
            print(f"error: image store {args.image_store_dir}: {exc}", file=sys.stderr)
            return 1
    node = Node(client, name, address=address, port=args.port, capacity=_capacity(args, root_dir),
                lease_duration=args.node_lease_duration, renew_interval=args.lease_renew_interval,
                status_interval=args.node_status_update_frequency,
                labels=args.node_labels, taints=args.register_with_taints,
                images=(lambda: node_images(service)) if service is not None else None)
    if not await _register(node, stop):
        return 0
    cidr = (node.node.get("spec") or {}).get("podCIDR") or args.pod_cidr
    if not cidr:  # a controller manager may be about to allocate one
        cidr = await _wait_pod_cidr(client, name, args.pod_cidr_timeout, stop)
    if not cidr:
        cidr = DEFAULT_POD_CIDR
        log.info("node %s has no spec.podCIDR and no --pod-cidr was given: using %s", name, cidr)
    runtime = LinuxRuntime(root_dir, pod_cidr=cidr, bridge=bridge, cgroup_parent=cgroup_parent,
                           images=service or HostRootImageStore(), node_ip=address,
                           subnet_file=args.subnet_file)
    kubelet = Kubelet(client, runtime, node_name=name, node_ip=address, resync_period=args.sync_frequency,
                      node_allocatable=node.allocatable, images=service,
                      api_endpoint=api_endpoint(client.connection.server, address),
                      dns=DNSConfigurer(cluster_dns=[ip for ips in args.cluster_dns for ip in ips],
                                        cluster_domain=args.cluster_domain, resolv_conf=args.resolv_conf,
                                        node_ips=[address]))
    evictions = eviction.Manager(
        args.eviction_thresholds, root_dir, kubelet.eviction_pods, kubelet.evict,
        node_working_set=lambda: getattr(runtime.node_usage(), "working_set", None),
        image_dir=args.image_store_dir if service is not None else None,
        pressure_transition_period=args.eviction_pressure_transition_period,
        max_pod_grace_period=args.eviction_max_pod_grace_period,
        # The kubelet looks every 10 s; a faster status period (tests) looks as often.
        interval=min(eviction.MONITORING_INTERVAL, args.node_status_update_frequency))
    kubelet.admit, node.pressure = evictions.admit, evictions.node_conditions
    server = KubeletServer(kubelet, token=token, auth=auth, tls=tls)
    health = ComponentServer()
    health.health.add(named_check("syncloop", kubelet.sync_loop_check))
    code = 0
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_guard("node", node.run()), name="node")
            await kubelet.start()
            tg.create_task(_guard("eviction", evictions.run()), name="eviction")
            # Served once the node's pods are known: logs and exec find them from the start.
            tg.create_task(_guard("endpoint", server.serve(address, args.port)), name="endpoint")
            await _serve_health(args, health)
            # Image GC runs on the content store of the image service (none in host-root mode).
            if (image_store := getattr(runtime.images, "store", None)) is not None:
                tg.create_task(_guard("image-gc", image_gc(args, image_store), ending_stops=False),
                               name="image-gc")
            log.info("kubelet %s: pods in %s, endpoint %s:%d, pod CIDR %s", name, root_dir, address,
                     args.port, cidr)
            tg.create_task(_stop_on(stop))
    except* _Stop as group:
        code = _exit_code(group)
    finally:
        await health.stop()
        await kubelet.stop()
        if service is not None:
            await service.aclose()
    return code


async def _run_fake(args: argparse.Namespace, client: Client, stop: asyncio.Event) -> int:
    import copy
    from kubelet.auth import EndpointAuth
    from kubelet.fake import DEFAULT_CAPACITY, FakeNodes
    capacity = dict(DEFAULT_CAPACITY, pods=str(args.max_pods))
    if args.cpu:
        capacity["cpu"] = args.cpu
    if args.memory:
        capacity["memory"] = args.memory
    prefix = args.node_name or "fake-node"
    auth, tls = _endpoint_auth(args, client, "")
    token = None
    if tls is None and (args.token_file or os.environ.get(TOKEN_ENV)):
        token = load_token(args, "")
    elif tls is None:
        log.warning("no --tls-cert-file, --token-file or $%s: the fake nodes' endpoint lets nobody in", TOKEN_ENV)

    def node_auth(node: str) -> EndpointAuth:
        """The node's own attributes, the caches shared: one per node, as each kubelet has."""
        if auth is None:
            return EndpointAuth(node_name=node, tls=False, token=token)
        mine = copy.copy(auth)
        mine.node_name = node
        return mine
    fake = FakeNodes(client, prefix=prefix, count=args.nodes, capacity=capacity,
                     renew_interval=args.lease_renew_interval, lease_duration=args.node_lease_duration,
                     port=args.port, tls=tls, auth=node_auth)
    health = ComponentServer()  # ping only: the fake nodes have no sync loop
    code = 0
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_guard("fake-nodes", fake.start(), ending_stops=False), name="fake-nodes")
            await _serve_health(args, health)
            tg.create_task(_stop_on(stop))
    except* _Stop as group:
        code = _exit_code(group)
    finally:
        await health.stop()
        await fake.stop()
    return code
