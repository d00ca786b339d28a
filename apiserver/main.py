"""`minik8s apiserver`: the API server process.

    minik8s apiserver --etcd-servers URL[,URL...] [--bind-address ADDR[,ADDR...]]
                      [--secure-port 6443] [--compaction-window 300] [--bookmark-interval 5]
                      (--tls-cert-file F --tls-private-key-file F [--client-ca-file F]
                       | --plain-http)
                      [--authorization-mode AlwaysAllow|Node,RBAC|...] [--anonymous-auth=false]
                      [--enable-bootstrap-token-auth]
                      [--encryption-provider-config FILE]
                      [--audit-log-path FILE|- [--audit-log-maxsize MB] [--audit-log-maxbackup N]
                       [--audit-policy-file FILE]]
                      [-v N] [--logging-format text|json]
                      [--service-account-signing-key-file F] [--service-account-key-file F]...
                      [--service-account-issuer URL]... [--api-audiences LIST]
                      [--service-account-max-token-expiration DURATION]
                      [--service-cluster-ip-range 10.96.0.0/12]
                      [--service-node-port-range 30000-32767] [--advertise-address ADDR]
                      [--endpoint-reconciler-interval 10s]
                      [--disable-admission-plugins ServiceAccount,NodeRestriction]
                      [--proxy-client-cert-file F --proxy-client-key-file F]
                      [--requestheader-client-ca-file F] [--requestheader-allowed-names LIST]
                      [--requestheader-username-headers LIST] [--requestheader-group-headers LIST]
                      [--requestheader-extra-headers-prefix LIST] [--requestheader-uid-headers LIST]
                      [--enable-aggregator-routing]

kube-apiserver's flag names (--port is an alias of --secure-port). With
--tls-cert-file the server speaks only HTTPS (apiserver/serving.py): a client certificate
is asked for and, with --client-ca-file, verified; plain HTTP sent to the port is
answered 400 as kube-apiserver answers it. `--plain-http` is the explicit insecure mode
(no TLS; the authenticator chain still runs, without client certificates, and a token
no authenticator claims counts as none, so the request is anonymous); without
either the server exits with a one-line error. Requests are authenticated
(apiserver/auth/authn.py) and authorized by the union --authorization-mode builds,
system:masters first (apiserver/app.py). With --kubelet-client-certificate and
--kubelet-client-key, logs and exec reach kubelets over HTTPS presenting that certificate
(verified against --kubelet-certificate-authority when given; apiserver/kubeletclient.py);
without them, plain HTTP with $MINIK8S_KUBELET_TOKEN.

Serves the Kubernetes API (apiserver/app.py) under uvicorn until SIGTERM or SIGINT,
then drains for up to 3 s and exits 0. Several bind addresses get one listening socket
each (e.g. loopback for the user plus the cluster bridge for nodes in their own network
namespaces). An address that cannot be bound is one line on stderr and exit code 1.
Without --etcd-servers, `minik8s apiserver` (cluster/cli.py) first starts a local etcd
and passes its URL here: running etcd is the cluster's business, not the server's.
The aggregation layer (apiserver/aggregator/) proxies the group/versions APIServices
send to Services, presenting --proxy-client-cert-file and naming the user in the
--requestheader-*-headers, and publishes them with --requestheader-client-ca-file and
--requestheader-allowed-names in kube-system/extension-apiserver-authentication. It
always routes to an endpoint of the Service (--enable-aggregator-routing is accepted and
always true here: the API server's host need not reach ClusterIPs).
An unusable --encryption-provider-config or --audit-policy-file is one line on stderr
and exit code 1 (apiserver/storage/encryption.py, apiserver/audit.py say what they do).
Logs are klog-like (machinery.klog): `-v N` verbosity, `--logging-format=json` for one
JSON object a line; the start-up line included.
"""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import ssl
import sys

from machinery import flags, klog

log = logging.getLogger("minik8s.apiserver")

AUTHORIZATION_MODES = ("AlwaysAllow", "AlwaysDeny", "Node", "RBAC")


def check_security(args: argparse.Namespace) -> str | None:
    """The one-line reason these flags cannot serve, or None."""
    if args.plain_http:
        if args.tls_cert_file or args.tls_private_key_file or args.client_ca_file:
            return "--plain-http cannot be combined with --tls-cert-file, --tls-private-key-file or --client-ca-file"
    elif not args.tls_cert_file or not args.tls_private_key_file:
        return ("--tls-cert-file and --tls-private-key-file are required "
                "(or --plain-http, for an insecure local server)")
    modes = [m.strip() for m in args.authorization_mode.split(",")]
    for m in modes:
        if m not in AUTHORIZATION_MODES:
            return (f'--authorization-mode: unknown authorization mode "{m}" '
                    f'(one of {", ".join(AUTHORIZATION_MODES)})')
    if len(set(modes)) != len(modes):
        return f'--authorization-mode: "{args.authorization_mode}" names a mode twice'
    return None


def parser(*, etcd_servers_help: str = "comma-separated etcd URLs") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minik8s apiserver",
                                description="Serve the Kubernetes API backed by etcd.")
    p.add_argument("--etcd-servers", default="", help=etcd_servers_help)
    p.add_argument("--bind-address", default="127.0.0.1",
                   help="address to listen on; several comma-separated")
    p.add_argument("--secure-port", "--port", dest="port", type=int, default=6443,
                   help="the port to serve on (--port: an alias)")
    p.add_argument("--plain-http", action="store_true",
                   help="serve plain HTTP without TLS: only for local experiments and tests")
    p.add_argument("--tls-cert-file", default="", help="the serving certificate (PEM)")
    p.add_argument("--tls-private-key-file", default="", help="the serving certificate's key (PEM)")
    p.add_argument("--client-ca-file", default="",
                   help="CA bundle that verifies client certificates (CN user, O groups)")
    p.add_argument("--authorization-mode", default="AlwaysAllow",
                   help="comma-separated authorizers, asked in order: " + ",".join(AUTHORIZATION_MODES))
    p.add_argument("--anonymous-auth", type=flags.boolean, default=True, nargs="?", const=True,
                   help="requests with no credentials are user system:anonymous (default true)")
    p.add_argument("--enable-bootstrap-token-auth", type=flags.boolean, default=False, nargs="?",
                   const=True, help="accept bootstrap tokens from kube-system's bootstrap-token-* Secrets")
    p.add_argument("--service-account-key-file", action="append", default=[],
                   help="PEM key verifying ServiceAccount tokens (repeatable)")
    p.add_argument("--service-account-signing-key-file", default="",
                   help="PEM private key that signs ServiceAccount tokens")
    p.add_argument("--service-account-issuer", action="append", default=[],
                   help="ServiceAccount token issuer (repeatable; the first issues)")
    p.add_argument("--api-audiences", default="", help="comma-separated audiences of API tokens")
    p.add_argument("--service-account-jwks-uri", default="",
                   help="the jwks_uri of the OIDC discovery document (default: https://<advertised "
                        "address>:<port>/openid/v1/jwks)")
    p.add_argument("--service-account-max-token-expiration", type=flags.duration, default=0.0,
                   metavar="DURATION", help="longest token a TokenRequest gets (default: no limit)")
    p.add_argument("--etcd-cafile", default="", help="CA verifying etcd's serving certificate")
    p.add_argument("--etcd-certfile", default="", help="client certificate for etcd")
    p.add_argument("--etcd-keyfile", default="", help="client key for etcd")
    p.add_argument("--kubelet-client-certificate", default="", help="client certificate for kubelets")
    p.add_argument("--kubelet-client-key", default="", help="client key for kubelets")
    p.add_argument("--kubelet-certificate-authority", default="", help="CA verifying kubelets")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/12",
                   help="CIDR the Services' cluster IPs are allocated from (IPv4)")
    p.add_argument("--service-node-port-range", default="30000-32767",
                   help="port range NodePorts are allocated from, both ends included")
    p.add_argument("--advertise-address", default="",
                   help="the address the kubernetes Service's endpoints give (default: the "
                        "first non-loopback --bind-address)")
    p.add_argument("--endpoint-reconciler-interval", type=reconciler_interval, default=10.0,
                   metavar="DURATION",
                   help="time between rounds of the kubernetes Service's Endpoints and "
                        "EndpointSlice reconciler, which also renew this server's master lease, "
                        "a Go duration shorter than the lease's 15s (default 10s, "
                        "kube-apiserver's; Kubernetes sets it only in code, for its integration "
                        "tests, as ours set it for theirs)")
    p.add_argument("--compaction-window", type=float, default=300.0,
                   help="seconds of etcd history kept for watches (0: never compact)")
    p.add_argument("--bookmark-interval", type=float, default=5.0,
                   help="seconds between BOOKMARK events on watches that ask for them")
    p.add_argument("--encryption-provider-config", default="",
                   help="an EncryptionConfiguration file: which resources are encrypted in "
                        "etcd, and with which keys (read once at start)")
    p.add_argument("--audit-log-path", default="",
                   help="write audit events to this file, one JSON line each ('-': stdout)")
    p.add_argument("--audit-log-maxsize", type=int, default=0,
                   help="megabytes an audit log file may reach before it is rotated (0: never)")
    p.add_argument("--audit-log-maxbackup", type=int, default=0,
                   help="rotated audit log files to keep (0: all)")
    p.add_argument("--audit-policy-file", default="",
                   help="an audit.k8s.io/v1 Policy (default: every write at Metadata)")
    p.add_argument("--disable-admission-plugins", default="",
                   help="comma-separated admission plugins to turn off: " + ", ".join(ADMISSION_PLUGINS))
    p.add_argument("--proxy-client-cert-file", default="",
                   help="client certificate the aggregator presents to extension API servers")
    p.add_argument("--proxy-client-key-file", default="", help="its key")
    p.add_argument("--requestheader-client-ca-file", default="",
                   help="CA extension servers verify the front proxy's certificate with (published)")
    p.add_argument("--requestheader-allowed-names", default="",
                   help="comma-separated CNs the front proxy's certificate may have (published)")
    p.add_argument("--requestheader-username-headers", default="",
                   help="headers naming the user of a proxied request (kubeadm: X-Remote-User)")
    p.add_argument("--requestheader-uid-headers", default="", help="headers naming the user's UID")
    p.add_argument("--requestheader-group-headers", default="",
                   help="headers naming its groups (kubeadm: X-Remote-Group)")
    p.add_argument("--requestheader-extra-headers-prefix", default="",
                   help="prefixes of headers carrying its extra (kubeadm: X-Remote-Extra-)")
    p.add_argument("--enable-aggregator-routing", type=flags.boolean, default=True, nargs="?", const=True,
                   help="route to a Service's endpoints, not its ClusterIP (always true here)")
    p.add_argument("--enable-priority-and-fairness", type=flags.boolean, default=True, nargs="?", const=True,
                   help="API Priority and Fairness: classify, queue and limit requests by the FlowSchemas "
                        "and PriorityLevelConfigurations (apiserver/flowcontrol/)")
    p.add_argument("--max-requests-inflight", type=int, default=400,
                   help="with --max-mutating-requests-inflight, the seats API Priority and Fairness shares "
                        "among the priority levels")
    p.add_argument("--max-mutating-requests-inflight", type=int, default=200,
                   help="see --max-requests-inflight")
    p.add_argument("--request-timeout", type=flags.duration, default=60.0,
                   help="a request waits in its priority level's queue at most a quarter of this (15 s at most)")
    klog.add_flags(p)
    return p


# The admission plugins this server has (kube-apiserver's names), all on by default:
# NodeRestriction with the Node authorizer, the others always.
ADMISSION_PLUGINS = ("CertificateApproval", "CertificateSigning", "CertificateSubjectRestriction",
                     "DefaultStorageClass", "NodeRestriction", "ServiceAccount")


def disabled_admission_plugins(value: str) -> frozenset[str]:
    """--disable-admission-plugins as a set; ValueError, worded as kube-apiserver's, for a
    name it does not know."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    for name in names:
        if name not in ADMISSION_PLUGINS:
            raise ValueError(f"disable-admission-plugins plugin {name!r} is unknown".replace("'", '"'))
    return frozenset(names)


def reconciler_interval(v: str) -> float:
    """--endpoint-reconciler-interval: more than zero, and shorter than the master lease's
    TTL, or this server's own record would lapse between two of its rounds."""
    from apiserver.kubernetesservice import LEASE_TTL
    seconds = flags.duration(v)
    if not 0 < seconds < LEASE_TTL:
        raise argparse.ArgumentTypeError(
            f"invalid interval {v!r}: want more than 0s and less than the master lease's {LEASE_TTL:g}s")
    return seconds


def security_options(args: argparse.Namespace) -> dict:
    """create_app's encryption= and audit_log= from the flags; ValueError (one line) if
    a file is unusable."""
    from apiserver.audit import DEFAULT_POLICY, AuditLog, load_policy
    from apiserver.storage.encryption import load_config

    out: dict = {}
    if args.encryption_provider_config:
        out["encryption"] = load_config(args.encryption_provider_config)
    if args.audit_policy_file and not args.audit_log_path:
        raise ValueError("--audit-policy-file needs --audit-log-path")
    if args.audit_log_path:
        policy = load_policy(args.audit_policy_file) if args.audit_policy_file else DEFAULT_POLICY
        out["audit_log"] = AuditLog(args.audit_log_path, max_size_mb=args.audit_log_maxsize,
                                    max_backups=args.audit_log_maxbackup, policy=policy)
    return out


def service_account_flags(args: argparse.Namespace) -> dict:
    """The --service-account-* flags as apiserver.auth.serviceaccount.from_flags takes them."""
    return {"signing_key_file": args.service_account_signing_key_file or None,
            "key_files": list(args.service_account_key_file),
            "issuers": list(args.service_account_issuer),
            "api_audiences": [a.strip() for a in args.api_audiences.split(",") if a.strip()],
            "max_expiration": int(args.service_account_max_token_expiration)}


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from apiserver import portforward, serving
    from apiserver.app import create_app

    klog.setup_from_args(args)
    servers = [s.strip() for s in (args.etcd_servers or "").split(",") if s.strip()]
    if not servers:
        print("error: --etcd-servers is required", file=sys.stderr)
        return 1
    problem = check_security(args)
    if problem is None:
        try:
            context = None if args.plain_http else serving.server_context(
                args.tls_cert_file, args.tls_private_key_file, args.client_ca_file or None)
        except (OSError, ssl.SSLError) as e:
            problem = f"cannot load the serving certificate: {e}"
    if problem is None and bool(args.kubelet_client_certificate) != bool(args.kubelet_client_key):
        problem = "--kubelet-client-certificate and --kubelet-client-key go together"
    kubelet_tls = None
    if problem is None and args.kubelet_client_certificate:
        from apiserver.kubeletclient import tls_context
        try:
            kubelet_tls = tls_context(args.kubelet_client_certificate, args.kubelet_client_key,
                                      args.kubelet_certificate_authority or None)
        except ValueError as e:
            problem = str(e)
    if problem is None and bool(args.proxy_client_cert_file) != bool(args.proxy_client_key_file):
        problem = "--proxy-client-cert-file and --proxy-client-key-file go together"
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        args.disabled_admission = disabled_admission_plugins(args.disable_admission_plugins)
        options = security_options(args)  # ConfigError and AuditConfigError: one line each
        app = create_app(servers, compaction_window=args.compaction_window,
                         bookmark_interval=args.bookmark_interval, kubelet_tls=kubelet_tls,
                         authorization_modes=tuple(m.strip() for m in args.authorization_mode.split(",")),
                         anonymous_auth=args.anonymous_auth,
                         enable_bootstrap_token_auth=args.enable_bootstrap_token_auth,
                         plain_http=args.plain_http, flags=args,
                         service_account_flags=service_account_flags(args), **options)
    except (ValueError, OSError) as e:  # an authorization mode, a key file, an unusable file
        print(f"error: {e}", file=sys.stderr)
        return 1
    binds = [a.strip() for a in args.bind_address.split(",") if a.strip()]
    sockets = []
    for addr in binds if len(binds) > 1 else ():
        s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, args.port))
        except OSError as e:
            print(f"error: cannot listen on {addr}:{args.port}: {e.strerror}", file=sys.stderr)
            return 1
        sockets.append(s)
    scheme = "http" if context is None else "https"
    log.info("minik8s apiserver listening on %s", ", ".join(f"{scheme}://{a}:{args.port}" for a in binds))
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so a
    # caller's `finally` (cluster/cli.py stopping its local etcd) still runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = uvicorn.Config(app, host=binds[0], port=args.port, log_level="warning", log_config=None,
                            access_log=False, timeout_graceful_shutdown=3, proxy_headers=False,
                            # Idle connections are the client's to close, as kube-apiserver
                            # leaves them (client-go drops them after 90 s): uvicorn's 5 s
                            # would close one just as kubectl drain, back from its 5 s wait
                            # on a 429, sends its next eviction there, and a POST is not retried.
                            timeout_keep_alive=120,
                            # kubectl's SPDY/3.1+portforward.k8s.io subprotocol, and plain SPDY/3.1
                            ws=portforward.WebSocketProtocol, http=portforward.http_protocol())
    if context is not None:
        config.load()
        config.http_protocol_class = serving.tls_front(config.http_protocol_class, context)
    if sockets:
        uvicorn.Server(config).run(sockets=sockets)
    else:
        uvicorn.Server(config).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
