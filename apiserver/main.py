"""`minik8s apiserver`: the API server process.

    minik8s apiserver --etcd-servers URL[,URL...] [--bind-address ADDR[,ADDR...]]
                      [--port 6443] [--compaction-window 300] [--bookmark-interval 5]
                      [-v N] [--logging-format text|json]

Serves the Kubernetes API (apiserver/app.py) under uvicorn until SIGTERM or SIGINT,
then drains for up to 3 s and exits 0. Several bind addresses get one listening socket
each (e.g. loopback for the user plus the cluster bridge for nodes in their own network
namespaces). An address that cannot be bound is one line on stderr and exit code 1.
Without --etcd-servers, `minik8s apiserver` (cluster/cli.py) first starts a local etcd
and passes its URL here: running etcd is the cluster's business, not the server's.
Logs are klog-like (machinery.klog): `-v N` verbosity, `--logging-format=json` for one
JSON object a line; the start-up line included.
"""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys

from machinery import klog

log = logging.getLogger("minik8s.apiserver")


def parser(*, etcd_servers_help: str = "comma-separated etcd URLs") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minik8s apiserver",
                                description="Serve the Kubernetes API backed by etcd.")
    p.add_argument("--etcd-servers", default="", help=etcd_servers_help)
    p.add_argument("--bind-address", default="127.0.0.1",
                   help="address to listen on; several comma-separated")
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--compaction-window", type=float, default=300.0,
                   help="seconds of etcd history kept for watches (0: never compact)")
    p.add_argument("--bookmark-interval", type=float, default=5.0,
                   help="seconds between BOOKMARK events on watches that ask for them")
    # How logs and exec reach kubelets (apiserver/kubeletclient.py).
    p.add_argument("--kubelet-client-certificate", default=None, metavar="FILE",
                   help="client certificate presented to kubelets (with --kubelet-client-key): "
                   "kubelets are dialed over HTTPS")
    p.add_argument("--kubelet-client-key", default=None, metavar="FILE", help="its key")
    p.add_argument("--kubelet-certificate-authority", default=None, metavar="FILE",
                   help="CA that kubelets' serving certificates must chain to (default: not verified)")
    klog.add_flags(p)
    return p


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from apiserver.app import create_app

    klog.setup_from_args(args)
    servers = [s.strip() for s in (args.etcd_servers or "").split(",") if s.strip()]
    if not servers:
        print("error: --etcd-servers is required", file=sys.stderr)
        return 1
    kubelet_tls = None
    if bool(args.kubelet_client_certificate) != bool(args.kubelet_client_key):
        print("error: --kubelet-client-certificate and --kubelet-client-key go together", file=sys.stderr)
        return 1
    if args.kubelet_client_certificate:
        from apiserver.kubeletclient import tls_context
        try:
            kubelet_tls = tls_context(args.kubelet_client_certificate, args.kubelet_client_key,
                                      args.kubelet_certificate_authority)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    app = create_app(servers, compaction_window=args.compaction_window,
                     bookmark_interval=args.bookmark_interval, kubelet_tls=kubelet_tls)
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
    log.info("minik8s apiserver listening on %s", ", ".join(f"http://{a}:{args.port}" for a in binds))
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so a
    # caller's `finally` (cluster/cli.py stopping its local etcd) still runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = uvicorn.Config(app, host=binds[0], port=args.port, log_level="warning", log_config=None,
                            access_log=False, timeout_graceful_shutdown=3)
    if sockets:
        uvicorn.Server(config).run(sockets=sockets)
    else:
        uvicorn.Server(config).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
