"""`minik8s`: every component as a subcommand.

`minik8s apiserver` serves the Kubernetes API. Without `--etcd-servers` it starts and
supervises a local etcd under the state directory, so one command gives a working server.
"""
from __future__ import annotations

import argparse
import os
import sys

from machinery import klog


def _apiserver(argv: list[str]) -> int:
    """apiserver.main, after starting a supervised local etcd if no --etcd-servers."""
    from apiserver import main as apiserver
    from cluster.etcd import LocalEtcd
    from machinery import klog

    p = apiserver.parser(etcd_servers_help="comma-separated etcd URLs; empty: start a local "
                                           "etcd under --state-dir")
    p.add_argument("--state-dir", default="~/.minik8s",
                   help="where a local etcd keeps its data when --etcd-servers is empty")
    args = p.parse_args(argv)
    klog.setup_from_args(args)
    if args.etcd_servers.strip():
        return apiserver.run(args)
    problem = apiserver.check_security(args)
    if problem is not None:  # before a local etcd is started for nothing
        print(f"error: {problem}", file=sys.stderr)
        return 1
    local = LocalEtcd(os.path.join(os.path.expanduser(args.state_dir), "etcd"))
    try:
        local.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"etcd listening on {local.url} (data in {local.data_dir})", file=sys.stderr)
    args.etcd_servers = local.url
    try:
        return apiserver.run(args)
    finally:
        local.stop()


# Components that live in their own package: `minik8s NAME ...` runs `<module>.main(argv)`.
# Imported only when asked for, so each command starts with what it needs.
COMPONENTS = {
    "scheduler": "scheduler.main",
    "controller-manager": "controller_manager.main",
    "kubelet": "kubelet.main",
    "dns": "clusterdns.main",
    "proxy": "proxy.main",
    "apiserver-lb": "cluster.apiserverlb",
    "podnet": "cluster.podnet",
    "metrics-server": "metricsserver.main",
}

# Internal commands of lab hosts (cluster/units.py), not meant to be typed.
HOST_INTERNAL = {"supervise-host": "cluster.units"}


def main(argv: list[str] | None = None) -> int:
    from cluster import certs, commands  # up, down, status, logs, node; certs

    argv = sys.argv[1:] if argv is None else argv
    modules = {**COMPONENTS, **commands.INTERNAL, **HOST_INTERNAL}
    if argv and argv[0] in ("apiserver", *modules):
        # klog's text lines at -v 0 until the component reads its own -v and
        # --logging-format (klog.setup_from_args replaces this handler).
        klog.setup()
    if argv and argv[0] == "apiserver":
        return _apiserver(argv[1:])
    if argv[:3] == ["init", "phase", "upload-certs"]:  # kubeadm's one init phase run alone here
        from cluster import uploadcerts
        return uploadcerts.main_phase(argv[3:])
    if argv and argv[0] in modules:
        import importlib
        return importlib.import_module(modules[argv[0]]).main(argv[1:])
    parser = argparse.ArgumentParser(prog="minik8s", description="A small, faithful Kubernetes.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("apiserver", help="serve the Kubernetes API backed by etcd (see "
                   "`minik8s apiserver --help`)", add_help=False)
    for name in COMPONENTS:
        sub.add_parser(name, help=f"run the {name} (see `minik8s {name} --help`)", add_help=False)
    commands.add_parsers(sub)
    certs.add_parsers(sub)
    from cluster import images  # image ls|pull|import|rm|prune
    images.add_parser(sub)
    from cluster import secrets  # secrets-encrypt reencrypt
    secrets.add_parser(sub)
    from cluster import lab, reset, tokens  # lab hosts: init, token, reset
    lab.add_parser(sub)
    tokens.add_parser(sub)
    reset.add_parser(sub)
    from cluster import join  # join (kubeadm join)
    join.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "init":
        return lab.run_init(args)
    if args.command == "token":
        return tokens.run(args)
    if args.command == "reset":
        return reset.run(args)
    if args.command == "certs":
        return certs.run(args)
    if args.command in ("up", "down", "status", "logs", "node"):
        return commands.run(args)
    if args.command == "image":
        return images.run(args)
    if args.command == "secrets-encrypt":
        return secrets.run(args)
    if args.command == "join":
        if args.control_plane:
            from cluster import joincp
            return joincp.main(args)
        return join.run(args)
    raise AssertionError(f"unhandled command {args.command}")  # parsed above: a bug


if __name__ == "__main__":
    sys.exit(main())
