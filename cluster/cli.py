"""`minik8s`: every component as a subcommand.

`minik8s apiserver` serves the Kubernetes API. Without `--etcd-servers` it starts and
supervises a local etcd under the state directory, so one command gives a working server.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys


def _apiserver(args: argparse.Namespace) -> int:
    import uvicorn

    from apiserver.app import create_app
    from cluster.etcd import LocalEtcd

    local = None
    servers = [s.strip() for s in (args.etcd_servers or "").split(",") if s.strip()]
    if not servers:
        local = LocalEtcd(os.path.join(os.path.expanduser(args.state_dir), "etcd"))
        try:
            local.start()
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        servers = [local.url]
        print(f"etcd listening on {local.url} (data in {local.data_dir})", file=sys.stderr)
    app = create_app(servers, compaction_window=args.compaction_window,
                     bookmark_interval=args.bookmark_interval)
    # Several addresses (comma-separated): one server on one socket each, e.g. loopback
    # for the user plus the cluster bridge for nodes in their own network namespaces.
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
    print("minik8s apiserver listening on " + ", ".join(f"http://{a}:{args.port}" for a in binds),
          file=sys.stderr, flush=True)
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so
    # the `finally` below still stops the local etcd.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        config = uvicorn.Config(app, host=binds[0], port=args.port, log_level="warning",
                                access_log=False, timeout_graceful_shutdown=3)
        if sockets:
            uvicorn.Server(config).run(sockets=sockets)
        else:
            uvicorn.Server(config).run()
    finally:
        if local:
            local.stop()
    return 0


# Components that live in their own package: `minik8s NAME ...` runs `<module>.main(argv)`.
# Imported only when asked for, so each command starts with what it needs.
COMPONENTS = {
    "scheduler": "scheduler.main",
    "controller-manager": "controller_manager.main",
    "kubelet": "kubelet.main",
}


def main(argv: list[str] | None = None) -> int:
    from cluster import commands  # up, down, status, logs, node

    argv = sys.argv[1:] if argv is None else argv
    modules = {**COMPONENTS, **commands.INTERNAL}
    if argv and argv[0] in modules:
        import importlib
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        return importlib.import_module(modules[argv[0]]).main(argv[1:])
    parser = argparse.ArgumentParser(prog="minik8s", description="A small, faithful Kubernetes.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("apiserver", help="serve the Kubernetes API backed by etcd")
    p.add_argument("--etcd-servers", default="",
                   help="comma-separated etcd URLs; empty: start a local etcd under --state-dir")
    p.add_argument("--bind-address", default="127.0.0.1",
                   help="address to listen on; several comma-separated")
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--state-dir", default="~/.minik8s")
    p.add_argument("--compaction-window", type=float, default=300.0,
                   help="seconds of etcd history kept for watches (0: never compact)")
    p.add_argument("--bookmark-interval", type=float, default=5.0,
                   help="seconds between BOOKMARK events on watches that ask for them")
    p.set_defaults(func=_apiserver)
    for name in COMPONENTS:
        sub.add_parser(name, help=f"run the {name} (see `minik8s {name} --help`)", add_help=False)
    commands.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command in ("up", "down", "status", "logs", "node"):
        return commands.run(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
