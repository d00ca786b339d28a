"""`minik8s up | down | status | logs | node start|stop`: a whole cluster on this machine.

`up` checks what it can before anything starts (root for the linux runtime, etcd on
PATH, the port, address ranges) and fails with one line if something is wrong; it makes
or reuses the cluster PKI (<state>/pki; a PKI on disk it cannot use is a one-line error
too, before anything runs), unless `--plain-http` asks for the open mode; then
it starts the supervisor (cluster/bringup.py) as a detached process, prints its
progress, and returns once every node is Ready. The supervisor keeps the cluster
running; the other commands talk to it through files in <state>/run/ and signals.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

from cluster.state import DEFAULT_CLUSTER_CIDR, DEFAULT_NODE_CIDR, ClusterConfig, state_dir

# Processes `up` runs that are not for typing: `minik8s NAME ...` runs `<module>.main(argv)`.
INTERNAL = {"supervise": "cluster.bringup", "route-syncer": "cluster.routes"}
COMPONENT_ARGS = ("etcd", "apiserver", "controller-manager", "scheduler", "kubelet", "kube-proxy", "route-syncer")
# The Python module each component runs; `up` refuses to start without them.
MODULES = {"apiserver": "apiserver.main", "controller-manager": "controller_manager.main",
           "scheduler": "scheduler.main", "kubelet": "kubelet.main", "kube-proxy": "proxy.main"}


class Fail(Exception):
    """A one-line reason a command cannot go on."""


def add_parsers(sub) -> None:
    p = sub.add_parser("up", help="start a local multi-node cluster (etcd, API server, scheduler, "
                                  "controller manager, kubelets) under a supervisor")
    p.add_argument("--nodes", type=int, help="number of nodes (default 3)")
    p.add_argument("--state-dir", help="where the cluster keeps its state (default ~/.minik8s)")
    p.add_argument("--runtime", choices=("linux", "fake"),
                   help="linux: real pods, each node in its own network namespace (needs root); "
                        "fake: simulated nodes and pods, no root needed (default linux)")
    p.add_argument("--port", type=int, help="the API server's port (default 6443)")
    p.add_argument("--cluster-cidr",
                   help=f"pod addresses, split into one range per node (default {DEFAULT_CLUSTER_CIDR})")
    p.add_argument("--node-cidr", help=f"the nodes' network on the cluster bridge (default {DEFAULT_NODE_CIDR})")
    p.add_argument("--plain-http", action="store_true",
                   help="local experiments only: the API server and etcd on plain HTTP, no "
                        "authentication, every request allowed (the default is TLS, a certificate "
                        "per component and Node,RBAC authorization)")
    p.add_argument("--merge-kubeconfig", action="store_true",
                   help="also add the cluster as a context to ~/.kube/config (and make it current)")
    p.add_argument("--secrets-encryption", action="store_true",
                   help="encrypt Secrets in etcd with an aescbc key made in the state dir (as k3s; "
                        "kept on for good: `minik8s secrets-encrypt reencrypt` re-writes them)")
    p.add_argument("--registry-config", metavar="FILE",
                   help="registries.yaml for every kubelet, as k3s reads it (mirrors, per-registry "
                        "CA, client certificate, credentials); kept for restarts, '' drops it")
    for name in COMPONENT_ARGS:
        p.add_argument(f"--{name}-args", metavar="ARGS", dest=f"args_{name.replace('-', '_')}",
                       help=f"extra arguments for every {name} (one string, shell-quoted)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop the local cluster and remove what it made on this machine")
    p.add_argument("--state-dir")
    p.add_argument("--purge", action="store_true",
                   help="also delete the state dir (etcd data: every object) and the merged context")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="show the local cluster's components and nodes")
    p.add_argument("--state-dir")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("logs", help="print a component's log (etcd, apiserver, scheduler, "
                                    "controller-manager, route-syncer, kubelet-NODE, kube-proxy-NODE, supervisor)")
    p.add_argument("component")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int, default=-1, help="only the last N lines")
    p.add_argument("--state-dir")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("node", help="stop or start a node's kubelet (simulate a failed host)")
    p.add_argument("action", choices=("stop", "start"))
    p.add_argument("name")
    p.add_argument("--state-dir")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the kubelet to stop, or the node to be Ready")
    p.set_defaults(func=cmd_node)



def run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except Fail as e:
        print(f"minik8s: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# -- up -------------------------------------------------------------------------------------

def _config_for_up(args: argparse.Namespace) -> tuple[ClusterConfig, bool]:
    state = state_dir(args.state_dir)
    cfg = ClusterConfig.load(state)
    existing = cfg is not None
    topology = {"runtime": args.runtime, "nodes": args.nodes, "cluster_cidr": args.cluster_cidr,
                "node_cidr": args.node_cidr}
    if cfg is None:
        cfg = ClusterConfig(state_dir=state)
        for k, v in topology.items():
            if v is not None:
                setattr(cfg, k, v)
    else:
        for k, v in topology.items():
            if v is not None and v != getattr(cfg, k):
                raise Fail(f"{state} holds a cluster with {k.replace('_', '-')} {getattr(cfg, k)} "
                           f"(not {v}); `minik8s down --purge --state-dir {state}` deletes it, "
                           f"or choose another --state-dir")
    if args.port is not None:
        cfg.port = args.port
    cfg.plain_http = bool(getattr(args, "plain_http", False))  # each `up` says; secure unless asked
    if args.registry_config is not None:
        cfg.registry_config = _registry_config(args.registry_config)
    for name in COMPONENT_ARGS:
        value = getattr(args, f"args_{name.replace('-', '_')}")
        if value is not None:
            cfg.extra_args[name] = shlex.split(value)
    from cluster import secrets
    encrypt = args.secrets_encryption or os.path.exists(secrets.config_path(state))  # on for good
    api = cfg.extra_args.setdefault("apiserver", []) if encrypt else []
    if encrypt and "--encryption-provider-config" not in api:
        api += ["--encryption-provider-config", secrets.config_path(state)]
    try:
        cfg.validate()
    except ValueError as e:
        raise Fail(str(e)) from None
    if encrypt:
        secrets.ensure_encryption_config(state)  # only now: a refused `up` makes no key
    return cfg, existing


def _registry_config(path: str) -> str:
    """The absolute path of a valid registries.yaml ("" for none); Fail names the file and
    key of a bad one, so no kubelet is started with it."""
    if not path:
        return ""
    from kubelet.images import hosts
    try:
        hosts.load(path)
    except hosts.RegistryConfigError as e:
        raise Fail(str(e)) from None
    return os.path.abspath(path)


def preflight(cfg: ClusterConfig) -> None:
    """Everything `up` can check before starting anything; Fail says what is wrong."""
    from cluster import host
    if cfg.runtime == "linux" and os.geteuid() != 0:
        raise Fail("the linux runtime needs root (network namespaces, bridges, cgroups, mounts); "
                   "run as root, or use `--runtime fake` for simulated nodes without root")
    if shutil.which("etcd") is None:
        raise Fail("etcd is not on PATH; install it (Debian/Ubuntu: apt-get install etcd-server, "
                   "or run hack/setup.sh)")
    addresses = ["127.0.0.1"] + ([cfg.host_ip] if cfg.runtime == "linux" else [])
    for addr in addresses:
        if host.port_in_use(addr, cfg.port):
            raise Fail(f"port {cfg.port} on {addr} is taken (another API server?); "
                       f"choose another with --port")
    if cfg.runtime == "linux":
        from cluster import network
        clashes = network.overlapping_routes(cfg.cluster_cidr, cfg.node_cidr, ignore_link=cfg.bridge)
        if clashes:
            raise Fail(f"address range in use on this host: {clashes[0]}; choose another "
                       f"--cluster-cidr / --node-cidr")
    if cfg.registry_config:  # kept from an earlier `up`: it may have changed since
        _registry_config(cfg.registry_config)
    for component, module in MODULES.items():
        if importlib.util.find_spec(module) is None:
            raise Fail(f"the {component} is not available in this installation ({module} is missing)")


def cmd_up(args: argparse.Namespace) -> int:
    from cluster import bringup
    cfg, existing = _config_for_up(args)
    pid = bringup.running_pid(cfg) if existing else None
    if pid and cfg.registry_config != (ClusterConfig.load(cfg.state_dir) or cfg).registry_config:
        raise Fail(f"the cluster in {cfg.state_dir} is running with another --registry-config; "
                   f"`minik8s down --state-dir {cfg.state_dir}` first, then `up` with the new one")
    running = ClusterConfig.load(cfg.state_dir) or cfg
    if pid and cfg.plain_http != running.plain_http:
        mode = lambda plain: "plain HTTP" if plain else "TLS"  # noqa: E731
        raise Fail(f"the cluster in {cfg.state_dir} is running with {mode(running.plain_http)}; "
                   f"`minik8s down --state-dir {cfg.state_dir}` first, then `up` with "
                   f"{mode(cfg.plain_http)}")
    if pid:
        print(f"minik8s: the cluster in {cfg.state_dir} is already running (supervisor pid {pid}); "
              f"`minik8s status --state-dir {cfg.state_dir}` shows it")
        if args.merge_kubeconfig:
            cfg.merged_context = cfg.context_name
            cfg.save()
            _merge_kubeconfig(cfg)
        _print_usage(cfg)
        return 0
    preflight(cfg)
    if args.merge_kubeconfig:
        cfg.merged_context = cfg.context_name
    verb = "Restarting" if existing else "Starting"
    print(f"{verb} a {cfg.nodes}-node cluster ({cfg.runtime} runtime"
          f"{', plain HTTP' if cfg.plain_http else ''}) in {cfg.state_dir}", flush=True)
    if not cfg.plain_http:
        _ensure_pki(cfg)
    cfg.save()
    os.makedirs(cfg.path("logs"), exist_ok=True)
    t0 = time.monotonic()
    r, w = os.pipe()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # for `-m cluster.cli` from "/"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with open(cfg.log_path("supervisor"), "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "supervise", cfg.state_dir, str(w)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                pass_fds=(w,), start_new_session=True, cwd="/", env=env)
    os.close(w)
    result = None
    try:
        with os.fdopen(r) as progress:
            for line in progress:
                msg = json.loads(line)
                if "msg" in msg:
                    print("  " + msg["msg"], flush=True)
                elif "error" in msg:
                    result = msg
                elif msg.get("ready"):
                    result = msg
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the cluster", file=sys.stderr)
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        return 130
    if result is None or "error" in result:
        why = result["error"] if result else (
            f"the supervisor exited (code {proc.poll()}); see {cfg.log_path('supervisor')}")
        print(f"minik8s: error: {why}", file=sys.stderr)
        if result is None or result.get("fatal", True):
            try:  # it is undoing what it made; a new `up` must not find it still there
                proc.wait(120)
            except subprocess.TimeoutExpired:
                pass
        return 1
    print(f"Cluster ready in {time.monotonic() - t0:.1f}s.")
    if cfg.merged_context:
        _merge_kubeconfig(cfg)
    _print_usage(cfg)
    return 0


def _ensure_pki(cfg: ClusterConfig) -> None:
    """Make or reuse <state>/pki before anything starts; a PKI on disk that cannot be
    used is a one-line error and nothing runs."""
    from cluster import bringup, pki
    try:
        outcomes = bringup.ensure_pki(cfg)
    except pki.PKIError as e:
        raise Fail(str(e)) from None
    made = [o for o in outcomes if o.made]
    if len(made) == len(outcomes):
        what = (f"made {len(pki.CAS)} CAs, the service-account key pair and "
                f"{len(outcomes) - len(pki.CAS) - 1} certificates")
    elif made:
        what = (f"kept {len(outcomes) - len(made)}; made " + ", ".join(f"{o.name} ({o.reason})" for o in made))
    else:
        what = f"all {len(outcomes)} certificates and keys kept"
    print(f"  {'pki':<19} {cfg.pki_dir}: {what}", flush=True)


def _print_usage(cfg: ClusterConfig) -> None:
    sd = "" if cfg.state_dir == state_dir(None) else f" --state-dir {cfg.state_dir}"
    who = "no credentials (plain HTTP)" if cfg.plain_http else "the admin certificate, system:masters"
    print(f"\nUse it with kubectl-lite or kubectl ({who}):\n"
          f"  export KUBECONFIG={cfg.kubeconfig}\n"
          f"  kubectl-lite get nodes -o wide\n"
          f"  kubectl get pods -A -o wide"
          + (f"                 (or: kubectl --context {cfg.merged_context} ...)" if cfg.merged_context else "")
          + f"\nThen: minik8s status{sd} | minik8s logs COMPONENT{sd} | "
            f"minik8s node stop|start NODE{sd} | minik8s down{sd}")


def _user_kubeconfig() -> str:
    return os.path.join(os.path.expanduser("~"), ".kube", "config")


def _merge_kubeconfig(cfg: ClusterConfig) -> None:
    from client import kubeconfig
    path = _user_kubeconfig()
    kc = kubeconfig.load(path) if os.path.exists(path) else kubeconfig.KubeConfig()
    ours = kubeconfig.load(cfg.kubeconfig)
    name = cfg.context_name
    ctx = ours.contexts[ours.current_context]
    # each entry under the context's name, so it never replaces another cluster's user
    kc.clusters[name] = ours.clusters[ctx["cluster"]]
    kc.users[name] = ours.users[ctx["user"]]
    kc.contexts[name] = {**ctx, "cluster": name, "user": name}
    kc.current_context = name
    kc.save(path)
    print(f"Merged context {name!r} into {path} (now the current context).")


def _unmerge_kubeconfig(cfg: ClusterConfig) -> None:
    from client import kubeconfig
    path = _user_kubeconfig()
    if not cfg.merged_context or not os.path.exists(path):
        return
    kc = kubeconfig.load(path)
    name = cfg.merged_context
    for section in (kc.clusters, kc.users, kc.contexts):
        section.pop(name, None)
    if kc.current_context == name:
        kc.current_context = ""
    kc.save(path)
    print(f"Removed context {name!r} from {path}.")


# -- down ------------------------------------------------------------------------------------

def _existing(args: argparse.Namespace) -> ClusterConfig:
    state = state_dir(args.state_dir)
    cfg = ClusterConfig.load(state)
    if cfg is None:
        raise Fail(f"no cluster in {state} (`minik8s up` starts one)")
    return cfg


def cmd_down(args: argparse.Namespace) -> int:
    from cluster import bringup, host
    state = state_dir(args.state_dir)
    cfg = ClusterConfig.load(state)
    if cfg is None:
        print(f"minik8s: no cluster in {state}")
        return 0
    if cfg.runtime == "linux" and os.geteuid() != 0:
        raise Fail("stopping a linux-runtime cluster needs root (it removes network namespaces "
                   "and cgroups)")
    pid = bringup.running_pid(cfg)
    if pid:
        print(f"Stopping the cluster in {cfg.state_dir} (supervisor pid {pid})...", flush=True)
        start = host.start_time(pid)
        host.kill(pid, start, signal.SIGTERM)
        # The lock goes when the supervisor lets go of it, which can be before its
        # process has exited: wait for both.
        running = lambda: bringup.running_pid(cfg) or host.alive(pid, start)  # noqa: E731
        deadline = time.monotonic() + 90
        while running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if running():
            print("the supervisor did not stop in 90s; killing it", file=sys.stderr)
            host.kill(pid, start, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while host.alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.05)
    removed = bringup.cleanup(cfg)  # what a crashed supervisor left, if anything
    if removed:
        print("Removed what was left: " + ", ".join(removed))
    if args.purge:
        _unmerge_kubeconfig(cfg)
        shutil.rmtree(cfg.state_dir)
        print(f"Deleted {cfg.state_dir}.")
    else:
        print(f"Stopped. The cluster's objects are kept in {cfg.path('etcd')}; `minik8s up` "
              f"brings it back, `minik8s down --purge` deletes it.")
    return 0


# -- status -----------------------------------------------------------------------------------

def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h" if s < 172800 else f"{s // 86400}d"


def cmd_status(args: argparse.Namespace) -> int:
    from cluster import bringup
    cfg = _existing(args)
    pid = bringup.running_pid(cfg)
    if not pid:
        print(f"The cluster in {cfg.state_dir} is stopped ({cfg.nodes} nodes, {cfg.runtime} runtime); "
              f"`minik8s up` starts it.")
        return 3
    st = bringup.read_json(bringup.status_path(cfg))
    print(f"Cluster in {cfg.state_dir}: {cfg.nodes} nodes, {cfg.runtime} runtime, "
          f"supervisor pid {pid}, {st.get('phase', 'starting')}")
    print(f"API server {cfg.api_url}" + (f" (nodes use {cfg.node_api_url})" if cfg.node_api_url != cfg.api_url else "")
          + f"; kubeconfig {cfg.kubeconfig}"
          + (" (plain HTTP: no authentication)" if cfg.plain_http else f" (admin); PKI {cfg.pki_dir}"))
    if cfg.runtime == "linux":
        print(f"Network: bridge {cfg.bridge} {cfg.host_ip}/{cfg.node_net.prefixlen}, "
              f"pods in {cfg.cluster_cidr}")
    now = time.time()
    rows = [("COMPONENT", "STATE", "PID", "RESTARTS", "UP")]
    for name, c in (st.get("components") or {}).items():
        state = c["state"] + (" (by node stop)" if c["desired"] == "stopped" and c["state"] == "stopped" else "")
        if c.get("error"):
            state += f" ({c['error']})"
        elif c["state"] == "backoff" and c.get("last_exit") is not None:
            state += f" (exit code {c['last_exit']})"
        rows.append((name, state, str(c.get("pid") or "-"), str(c.get("restarts", 0)),
                     _age(now - c["started_at"]) if c.get("started_at") else "-"))
    print()
    _table(rows)
    try:
        nodes = bringup.list_nodes(cfg, timeout=3)
    except Exception as e:  # noqa: BLE001 - status must say something useful even then
        print(f"\nNodes: the API server does not answer ({type(e).__name__})")
        return 0
    ready = sum(bringup.node_ready(n) for n in nodes)
    print(f"\nNodes: {ready} of {len(nodes)} Ready")
    if len(nodes) <= 20:
        rows = [("NODE", "STATUS", "ADDRESS", "POD CIDR")]
        for n in sorted(nodes, key=lambda n: n["metadata"]["name"]):
            addr = bringup.internal_ip(n) or "-"
            status = "Ready" if bringup.node_ready(n) else "NotReady"
            if (n.get("spec") or {}).get("unschedulable"):
                status += ",SchedulingDisabled"
            rows.append((n["metadata"]["name"], status, addr, (n.get("spec") or {}).get("podCIDR") or "-"))
        _table(rows)
    return 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


# -- logs -----------------------------------------------------------------------------------

def cmd_logs(args: argparse.Namespace) -> int:
    cfg = _existing(args)
    name = args.component
    candidates = [name, f"kubelet-{name}"]
    path = next((cfg.log_path(c) for c in candidates if os.path.exists(cfg.log_path(c))), None)
    if path is None:
        have = sorted(f[:-4] for f in os.listdir(cfg.path("logs")) if f.endswith(".log")) \
            if os.path.isdir(cfg.path("logs")) else []
        raise Fail(f"no log for {name!r}; there are: {', '.join(have) or 'none'}")
    with open(path, "rb") as f:
        if args.tail >= 0:
            f.seek(0, os.SEEK_END)
            size, block, data = f.tell(), 65536, b""
            while size > 0 and data.count(b"\n") <= args.tail:
                step = min(block, size)
                size -= step
                f.seek(size)
                data = f.read(step) + data
            lines = data.splitlines(keepends=True)
            sys.stdout.buffer.write(b"".join(lines[-args.tail:] if args.tail else []))
            f.seek(0, os.SEEK_END)
        else:
            shutil.copyfileobj(f, sys.stdout.buffer)
        sys.stdout.flush()
        while args.follow:
            chunk = f.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.2)
    return 0


# -- node stop / start --------------------------------------------------------------------------

def cmd_node(args: argparse.Namespace) -> int:
    from cluster import bringup
    from cluster.state import kubelet_component
    cfg = _existing(args)
    if cfg.runtime != "linux":
        raise Fail("node stop/start needs the linux runtime (fake nodes share one kubelet process)")
    if args.name not in cfg.node_names():
        raise Fail(f"no node {args.name!r}; nodes: {', '.join(cfg.node_names())}")
    pid = bringup.running_pid(cfg)
    if not pid:
        raise Fail(f"the cluster in {cfg.state_dir} is not running")
    component = kubelet_component(args.name)
    stop = args.action == "stop"
    bringup.set_stopped(cfg, component, stop)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + args.timeout

    def state():
        return (bringup.read_json(bringup.status_path(cfg)).get("components") or {}).get(component, {})
    want = "stopped" if stop else "running"
    while state().get("state") != want or state().get("desired") != want:
        if time.monotonic() > deadline:
            raise Fail(f"{component} is {state().get('state')} after {args.timeout:.0f}s")
        time.sleep(0.05)
    if stop:
        print(f"{args.name}: kubelet stopped; the node turns NotReady once its lease expires "
              f"(the controller manager's node-monitor grace period), then its pods are evicted")
        return 0
    started = state().get("started_at") or time.time()
    print(f"{args.name}: kubelet started (pid {state().get('pid')}); waiting for the node to be Ready",
          flush=True)
    while True:
        try:
            node = next((n for n in bringup.list_nodes(cfg) if n["metadata"]["name"] == args.name), None)
            if node and bringup.node_ready(node) and args.name in bringup.renewed_since(cfg, started - 1):
                break
        except Exception:  # noqa: BLE001 - the API server may be busy; keep asking
            pass
        if time.monotonic() > deadline:
            raise Fail(f"{args.name} is not Ready after {args.timeout:.0f}s; see `minik8s logs {args.name}`")
        time.sleep(0.2)
    print(f"{args.name}: Ready")
    return 0
