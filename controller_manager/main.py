"""`minik8s controller-manager`: the controller manager process.

    minik8s controller-manager --kubeconfig PATH [--controllers '*,-name,...']
        [--concurrent-workers 5] [--leader-elect=true|false]
        [--leader-elect-lease-duration 15s] [--leader-elect-renew-deadline 10s]
        [--leader-elect-retry-period 2s] [--bind-address 127.0.0.1] [--secure-port 10257]
        [--root-ca-file FILE] [--cluster-signing-cert-file FILE --cluster-signing-key-file FILE]
        [--cluster-signing-duration 8760h]
        [-v N] [--logging-format text|json]

Flags read as kube-controller-manager's (durations as Go durations, `15s`, `1m30s`, or
plain seconds). The flags for particular controllers (node lifecycle, pod GC, IPAM) fill
the `Options` of the controllers that declare them; a flag in that group that no
controller declares is an error at start, not silently dropped.

While it runs it serves, on kube-controller-manager's port 10257 (`--secure-port`,
alias `--port`; 0 turns it off) and 127.0.0.1 unless `--bind-address` says otherwise,
`/metrics` and `/healthz`, `/livez`, `/readyz` (the manager module says which metrics
and checks). Plain HTTP: kube-controller-manager serves HTTPS with authentication,
which minik8s does not yet. Logs are klog-like (machinery.klog): `-v N`,
`--logging-format=json`.

A bad flag, an unknown controller or an unusable kubeconfig is one line on stderr and
exit code 1 (argparse's usage errors: 2), never a traceback; so is a port that cannot
be bound. SIGTERM or SIGINT stops the controllers, releases the Lease and exits 0;
losing the Lease exits 1.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import uuid

from client import kubeconfig
from client.rest import Client
from controller_manager.manager import Manager, controller_options, enabled_controllers
from machinery import flags, klog

def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}")
    return n


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minik8s controller-manager",
                                description="Run the reconcile loops (kube-controller-manager).")
    p.add_argument("--kubeconfig", help="kubeconfig of the API server (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--controllers", default="*", metavar="LIST",
                   help="controllers to run: '*' all, 'name' on, '-name' off (default '*')")
    p.add_argument("--concurrent-workers", type=_positive, default=5, metavar="N",
                   help="workers per controller (default 5)")
    p.add_argument("--kube-api-max-in-flight", type=_positive, default=8, metavar="N",
                   help="API requests outstanding at once, watches aside (default 8)")
    p.add_argument("--leader-elect", type=flags.boolean, nargs="?", const=True, default=True,
                   metavar="true|false", help="run controllers only while holding the Lease (default true)")
    p.add_argument("--leader-elect-lease-duration", type=flags.duration, default=15.0, metavar="DURATION")
    p.add_argument("--leader-elect-renew-deadline", type=flags.duration, default=10.0, metavar="DURATION")
    p.add_argument("--leader-elect-retry-period", type=flags.duration, default=2.0, metavar="DURATION")
    p.add_argument("--leader-elect-resource-name", default="kube-controller-manager", metavar="NAME")
    p.add_argument("--leader-elect-resource-namespace", default="kube-system", metavar="NS")
    p.add_argument("--bind-address", default="127.0.0.1", metavar="IP",
                   help="address to serve /metrics and /healthz on (127.0.0.1)")
    p.add_argument("--secure-port", "--port", dest="port", type=int, default=10257, metavar="PORT",
                   help="port for /metrics and /healthz (10257; 0: off)")
    p.add_argument("--root-ca-file", default="", metavar="FILE",
                   help="the cluster's CA bundle (PEM) published in every namespace's kube-root-ca.crt "
                        "(default: the kubeconfig's CA)")
    klog.add_flags(p)
    g = p.add_argument_group("controller options")
    opt = g.add_argument
    options = [
        opt("--node-monitor-period", type=flags.duration, default=5.0, metavar="DURATION",
            help="how often node health is checked (default 5s)"),
        opt("--node-monitor-grace-period", type=flags.duration, default=40.0, metavar="DURATION",
            help="how long a node's lease may go unrenewed before it is NotReady (default 40s)"),
        opt("--node-eviction-rate", type=float, default=0.1, metavar="QPS",
            help="nodes per second whose pods are evicted (default 0.1)"),
        opt("--default-not-ready-toleration-seconds", type=int, default=300, metavar="S",
            help="toleration seconds for not-ready:NoExecute added to pods without one (300)"),
        opt("--default-unreachable-toleration-seconds", type=int, default=300, metavar="S",
            help="toleration seconds for unreachable:NoExecute added to pods without one (300)"),
        opt("--terminated-pod-gc-threshold", type=int, default=12500, metavar="N",
            help="terminated pods kept before the pod GC deletes the oldest (default 12500)"),
        opt("--allocate-node-cidrs", type=flags.boolean, nargs="?", const=True, default=False,
            metavar="true|false", help="give each node a podCIDR from --cluster-cidr"),
        opt("--cluster-cidr", default="", help="the pods' address range, e.g. 10.244.0.0/16"),
        opt("--node-cidr-mask-size", type=int, default=24, metavar="BITS"),
        opt("--max-endpoints-per-slice", type=int, default=100, metavar="N",
            help="endpoints an EndpointSlice holds at most, 1-1000 (default 100)"),
        opt("--cluster-signing-cert-file", default="", metavar="FILE",
            help="the CA certificate (PEM) csrsigning issues certificates with (default: none, "
                 "nothing is signed)"),
        opt("--cluster-signing-key-file", default="", metavar="FILE", help="that CA's private key (PEM)"),
        opt("--cluster-signing-duration", type=flags.duration, default=8760 * 3600.0, metavar="DURATION",
            help="the longest life of a certificate csrsigning issues (default 8760h)"),
        # h-hpa (issue 18): the horizontal pod autoscaler's, as kube-controller-manager names them.
        opt("--horizontal-pod-autoscaler-sync-period", type=flags.duration, default=15.0, metavar="DURATION",
            help="how often each HPA is synced (default 15s)"),
        opt("--horizontal-pod-autoscaler-tolerance", type=float, default=0.1, metavar="RATIO",
            help="how far the usage ratio may stray from 1.0 before the HPA scales (default 0.1)"),
        opt("--horizontal-pod-autoscaler-downscale-stabilization", type=flags.duration, default=300.0,
            metavar="DURATION", help="the window a scale-down waits out, without behavior (default 5m0s)"),
        opt("--horizontal-pod-autoscaler-cpu-initialization-period", type=flags.duration, default=300.0,
            metavar="DURATION", help="after a pod starts, how long its CPU samples may be skipped (default 5m0s)"),
        opt("--horizontal-pod-autoscaler-initial-readiness-delay", type=flags.duration, default=30.0,
            metavar="DURATION", help="after a pod starts, how long its readiness may still change (default 30s)"),
    ]
    # Which attributes are controller options, so that build() passes on every one.
    p.set_defaults(controller_options=tuple(a.dest for a in options))
    return p


class UsageError(Exception):
    pass


class LimitedClient(Client):
    """A Client with at most `max_in_flight` requests outstanding (watches aside).

    Kubernetes throttles its controller manager's client by rate (--kube-api-qps 20,
    --kube-api-burst 30). Here the limit is on concurrency instead (8 requests in
    flight by default), so a ReplicaSet creating 500 pods at once does not put 500
    requests in front of the scheduler's and the kubelets' at the API server."""

    def __init__(self, *args, max_in_flight: int = 8, **kw):
        # One pooled connection per request in flight; more would only sit idle.
        super().__init__(*args, max_keepalive=max_in_flight, **kw)
        self._slots = asyncio.Semaphore(max_in_flight)

    async def request(self, *args, **kw):
        async with self._slots:
            return await super().request(*args, **kw)


def _connection(path: str | None) -> kubeconfig.Connection:
    try:
        return kubeconfig.load(path).connection()
    except OSError as e:
        raise UsageError(f"kubeconfig {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - YAML errors, missing contexts, bad TLS data...
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"kubeconfig {path or '(default)'}: {first}") from None


def _root_ca(path: str, conn: kubeconfig.Connection) -> str:
    """The CA bundle the root-ca-cert-publisher publishes: --root-ca-file's certificates
    (checked to be PEM certificates, as kube-controller-manager checks them), else the
    kubeconfig's CA, else none (plain HTTP)."""
    if not path:
        if conn.ca_data:
            return conn.ca_data.decode()
        if conn.ca_file:
            path = conn.ca_file
        else:
            return ""
    from cryptography import x509
    try:
        with open(path, "rb") as f:
            data = f.read()
        x509.load_pem_x509_certificates(data)
    except OSError as e:
        raise UsageError(f"error reading root-ca-file at {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise UsageError(f"error parsing root-ca-file at {path}: {e}") from None
    return data.decode()


def build(args: argparse.Namespace) -> tuple[Manager, Client]:
    try:
        names = enabled_controllers(args.controllers)
    except ValueError as e:
        raise UsageError(f"--controllers: {e}") from None
    options = {k: getattr(args, k) for k in args.controller_options}
    try:
        controller_options(names, options)  # before anything connects
    except (ValueError, TypeError) as e:
        raise UsageError(f"controller options: {e}") from None
    if args.leader_elect and not (args.leader_elect_lease_duration > args.leader_elect_renew_deadline
                                  > args.leader_elect_retry_period * 1.2):
        raise UsageError("leader election needs lease duration > renew deadline > 1.2 x retry period")
    if not 0 <= args.port < 65536:
        raise UsageError(f"--secure-port {args.port}: not a port number")
    if bool(args.cluster_signing_cert_file) != bool(args.cluster_signing_key_file):
        raise UsageError("--cluster-signing-cert-file and --cluster-signing-key-file go together")
    if args.cluster_signing_cert_file and "csrsigning" in names:
        from controller_manager.controllers.certificates import load_signer
        try:
            load_signer(args.cluster_signing_cert_file, args.cluster_signing_key_file)
        except OSError as e:
            raise UsageError(f"cluster signing CA: {e.filename}: {e.strerror or e}") from None
        except ValueError as e:
            raise UsageError(f"cluster signing CA: {e}") from None
    if args.cluster_signing_duration <= 0:
        raise UsageError("--cluster-signing-duration must be positive")
    conn = _connection(args.kubeconfig)
    options["root_ca"] = _root_ca(args.root_ca_file, conn)
    client = LimitedClient(conn, user_agent="minik8s-controller-manager",
                           max_in_flight=args.kube_api_max_in_flight)
    identity = f"{socket.gethostname()}_{uuid.uuid4()}"
    manager = Manager(
        client, controllers=names, workers=args.concurrent_workers,
        options=options, leader_elect=args.leader_elect,
        lease_name=args.leader_elect_resource_name, lease_namespace=args.leader_elect_resource_namespace,
        identity=identity, lease_duration=args.leader_elect_lease_duration,
        renew_deadline=args.leader_elect_renew_deadline, retry_period=args.leader_elect_retry_period,
        bind_address=args.bind_address, port=args.port)
    return manager, client


async def _run(args: argparse.Namespace) -> int:
    manager, client = build(args)
    task = asyncio.ensure_future(manager.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return 0
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    klog.setup_from_args(args)
    if "sniffio" not in sys.modules:
        try:
            import sniffio  # noqa: F401
        except ImportError:
            # httpcore tries `import sniffio` on every request, and a failed import
            # searches sys.path again each time (a fifth of this process' CPU under
            # load); None makes it fail at once, which httpcore reads as "asyncio".
            sys.modules["sniffio"] = None  # type: ignore[assignment]
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    try:
        return runner(_run(args))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the metrics port is taken, say
        print(f"error: cannot serve /metrics and /healthz on {args.bind_address}:{args.port}: "
              f"{e.strerror or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
