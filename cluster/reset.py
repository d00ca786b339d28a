"""`minik8s reset [--force]`: undo on this host what `minik8s init` or `join` did, as
`kubeadm reset` does.

Asks "[reset] Are you sure you want to proceed? [y/N]" unless --force (no answer, as from
a closed stdin, is no: exit 1, nothing touched). Then, in this order:
1. `leave_etcd` (a hook: h-ha makes a control-plane host leave the etcd cluster first,
   while its etcd still runs);
2. every unit stopped and removed (systemd's, or the host supervisor's, which stops too);
   then any process left that still runs from this host's layout (its command line names
   /etc/minik8s or /var/lib/minik8s under MINIK8S_ROOT) and shares our mount namespace
   (lab hosts share a pid namespace but each has its own /etc/minik8s) is killed;
3. the kubelet's pods, pod bridge, cgroups and mounts (kubelet.runtime.linux.runtime's
   reset_node, what `minik8s kubelet --cleanup` and `minik8s down` use), then every mount
   left under /var/lib/minik8s;
4. links whose name starts with `minik8s.` (the pod network's VXLAN device, `minik8s.1`),
   routes with protocol RTPROT_MINIK8S (the pod network's), except those through a
   `minik8s up` cluster's bridge (`mk-*`), the service proxy's nftables table
   `ip minik8s-proxy`, and the pod network's iptables FORWARD ACCEPT rules (made only
   where FORWARD's policy is DROP);
5. /etc/minik8s, /var/lib/minik8s and /run/minik8s (only their contents where one is a
   mount point, as on a lab host whose directories are its own; never through a mount
   left below them).
Each step goes on when an earlier one failed (a warning line), so a half-made host is
still cleaned. Idempotent: on a host with none of this it prints that there is nothing
to do and exits 0.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import time

from cluster import host, units
from cluster.layout import Layout, current

LINK_PREFIX = "minik8s."           # the pod network's devices (h-net: minik8s.<VNI>)
UP_BRIDGE_PREFIX = "mk-"           # `minik8s up` clusters' bridges: their routes are not ours
NFT_FAMILY, NFT_TABLE = "ip", "minik8s-proxy"


def leave_etcd(layout: Layout) -> list[str]:
    """A control-plane host leaves the etcd cluster before etcd is stopped
    (cluster/joincp.py); what it did. A single-member etcd has nothing to leave."""
    from cluster import joincp
    return joincp.leave_etcd(layout)


# -- what is there -----------------------------------------------------------------------------------

def _links() -> list[tuple[int, str]]:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        return [(link["index"], link.get("ifname")) for link in ipr.get_links()
                if (link.get("ifname") or "").startswith(LINK_PREFIX)]


def _routes() -> list[dict]:
    from pyroute2 import IPRoute

    from cluster.network import RTPROT_MINIK8S
    with IPRoute() as ipr:
        names = {link["index"]: link.get("ifname") or "" for link in ipr.get_links()}
        return [r for r in ipr.get_routes(family=2, proto=RTPROT_MINIK8S)
                if not names.get(r.get("oif"), "").startswith(UP_BRIDGE_PREFIX)]


def _nft_table() -> bool:
    import subprocess
    nft = shutil.which("nft") or "/usr/sbin/nft"
    try:
        r = subprocess.run([nft, "list", "table", NFT_FAMILY, NFT_TABLE], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _our_processes(layout: Layout) -> list[tuple[int, int, str]]:
    """(pid, start, command) of processes running from this host's layout, in our mount
    namespace, other than ourselves."""
    marks = [layout.etc + "/", layout.var + "/"]
    me = os.getpid()
    try:
        my_mnt = os.readlink("/proc/self/ns/mnt")
    except OSError:
        return []
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            if os.readlink(f"/proc/{d}/ns/mnt") != my_mnt:
                continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in marks):
            start = host.start_time(int(d))
            if start is not None:
                out.append((int(d), start, cmd.strip()))
    return out


def leftovers(layout: Layout) -> list[str]:
    """What of minik8s is on this host (empty: nothing to reset)."""
    out = [f"unit {n}" for n in units.installed(layout)]
    if units.supervisor_pid(layout) is not None:
        out.append("the host supervisor")
    out += [f"directory {d}" for d in layout.owned_dirs() if _present(d)]
    out += [f"unit file {layout.systemd_unit(n)}" for n in _systemd_files(layout)]
    out += [f"process {pid} ({cmd[:60]})" for pid, _, cmd in _our_processes(layout)]
    if os.geteuid() == 0:
        out += [f"link {name}" for _, name in _links()]
        out += [f"route {r.get('dst')}/{r['dst_len']}" for r in _routes()]
        if _nft_table():
            out.append(f"nftables table {NFT_FAMILY} {NFT_TABLE}")
    return out


def _systemd_files(layout: Layout) -> list[str]:
    try:
        return [f[len("minik8s-"):-len(".service")] for f in sorted(os.listdir(layout.systemd_dir))
                if f.startswith("minik8s-") and f.endswith(".service")]
    except FileNotFoundError:
        return []


# -- reset -------------------------------------------------------------------------------------------

def reset(layout: Layout, say=print) -> list[str]:
    """Undo everything (steps 1-5 above); what was removed. Warnings go to `say` too."""
    from cluster.lab import HostConfig
    done: list[str] = []
    cfg = HostConfig.load(layout)

    def step(what: str, fn) -> None:
        try:
            done.extend(fn() or [])
        except Exception as e:  # noqa: BLE001 - one failed step must not stop the others
            say(f"[reset] WARNING: {what}: {e}")

    if cfg is not None and cfg.role == "control-plane":
        step("leaving the etcd cluster", lambda: leave_etcd(layout))
    say("[reset] Stopping and removing the units")
    step("removing units", lambda: [f"unit {n}" for n in units.remove(None, layout)]
         + [f"unit {n}" for n in units.remove(_systemd_files(layout), layout)])
    step("stopping the host supervisor", lambda: [f"host supervisor {p}"
                                                  for p in [units.stop_supervisor(layout)] if p])
    step("killing leftover processes", lambda: _kill_leftovers(layout))
    say(f'[reset] Removing the pods and unmounting mounted directories in "{layout.var}"')
    step("removing the kubelet's pods", lambda: _reset_kubelet(layout, cfg))
    step("unmounting", lambda: [f"mount {m}" for m in _unmount_below(layout.var)])
    if os.geteuid() == 0:
        say("[reset] Removing the pod network's links and routes and the service proxy's nftables table")
        step("removing links", _remove_links)
        step("removing routes", _remove_routes)
        step("removing the nftables table", _remove_nft)
        step("removing the pod network's FORWARD rules", _remove_forward_rules)
    say(f"[reset] Deleting contents of directories: [{' '.join(layout.owned_dirs())}]")
    for d in layout.owned_dirs():
        if _present(d):
            step(f"removing {d}", lambda d=d: _remove_dir(d))
    return done


def _mounts_below(path: str) -> list[str]:
    """Mount points strictly below `path`, deepest first (not `path` itself: a lab host's
    /var/lib/minik8s may be a mount of its own, which is not ours to undo)."""
    top = os.path.realpath(path)
    return [m for m in host.mounts_under(path) if m != top] if os.path.isdir(path) else []


def _unmount_below(path: str) -> list[str]:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    done = []
    for _ in range(10):   # stacked mounts show up again once the top one is gone
        mps = _mounts_below(path)
        if not mps:
            break
        for mp in mps:
            if libc.umount2(os.fsencode(mp), host.MNT_DETACH) == 0:
                done.append(mp)
    return done


def _present(d: str) -> bool:
    """Whether `d` has something to remove: it exists, and is not an empty mount point."""
    if not os.path.exists(d):
        return False
    return not (_is_mount(d) and not os.listdir(d))


def _is_mount(d: str) -> bool:
    """From mountinfo: os.path.ismount misses a bind mount within one filesystem."""
    return os.path.realpath(d) in host.mounts_under(d)


def _remove_dir(d: str) -> list[str]:
    """Remove `d`, or only what it holds when it is a mount point. Never crosses into a
    mount left below it (a pod's bind mount of a host directory would be deleted
    through it): that is an error, and `d` stays."""
    left = _mounts_below(d)
    if left:
        raise OSError(f"{len(left)} mount(s) left below it ({left[0]}...); unmount them and run reset again")
    if _is_mount(d):
        for name in os.listdir(d):
            p = os.path.join(d, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
        return [f"contents of {d}"]
    shutil.rmtree(d)
    return [f"directory {d}"]


def _kill_leftovers(layout: Layout) -> list[str]:
    procs = _our_processes(layout)
    for pid, start, _ in procs:
        host.kill(pid, start, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(host.alive(p, s) for p, s, _ in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [f"process {pid}" for pid, _, _ in procs]


def _reset_kubelet(layout: Layout, cfg) -> list[str]:
    if os.geteuid() != 0 or not os.path.isdir(layout.kubelet_dir):
        return []
    from kubelet.main import default_bridge
    from kubelet.runtime.linux.runtime import reset_node
    name = cfg.nodeName if cfg is not None else None
    if name is None:
        return []
    return reset_node(layout.kubelet_dir, bridge=default_bridge(name), cgroup_parent=f"minik8s-{name}")


def _remove_links() -> list[str]:
    from pyroute2 import IPRoute, NetlinkError
    out = []
    with IPRoute() as ipr:
        for index, name in _links():
            try:
                ipr.link("del", index=index)
                out.append(f"link {name}")
            except NetlinkError as e:
                if e.code != errno.ENODEV:
                    raise
    return out


def _remove_routes() -> list[str]:
    from pyroute2 import IPRoute, NetlinkError

    from cluster.network import RTPROT_MINIK8S
    out = []
    with IPRoute() as ipr:
        for r in _routes():
            dst = f"{r.get('dst')}/{r['dst_len']}"
            try:
                # the route's own scope: a `dev` route is scope link, and a delete that
                # names another scope finds nothing (ESRCH)
                ipr.route("del", dst=dst, proto=RTPROT_MINIK8S, oif=r.get("oif"), table=r.get("table") or 254,
                          scope=r["scope"])
                out.append(f"route {dst}")
            except NetlinkError as e:
                if e.code != errno.ESRCH:
                    raise
    return out


def _remove_forward_rules() -> list[str]:
    from cluster import podnet  # its iptables ACCEPT rules, made where FORWARD's policy is DROP
    return podnet.remove_forward_rules()


def _remove_nft() -> list[str]:
    import subprocess
    if not _nft_table():
        return []
    nft = shutil.which("nft") or "/usr/sbin/nft"
    r = subprocess.run([nft, "delete", "table", NFT_FAMILY, NFT_TABLE], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise OSError(r.stderr.strip() or f"nft exited with {r.returncode}")
    return [f"nftables table {NFT_FAMILY} {NFT_TABLE}"]


# -- the command -------------------------------------------------------------------------------------

def add_parser(sub) -> None:
    p = sub.add_parser("reset", help="undo what `minik8s init` or `join` did on this host (as kubeadm reset)")
    p.add_argument("-f", "--force", action="store_true", help="reset without asking")


def run(args) -> int:
    layout = current()
    if os.geteuid() != 0:
        print("error: minik8s reset must run as root; run it with sudo", file=sys.stderr)
        return 1
    there = leftovers(layout)
    if not there:
        print("[reset] Nothing to do: this host has no minik8s units, processes, links, routes, "
              "netfilter table or directories")
        return 0
    if not args.force:
        print("[reset] WARNING: Changes made to this host by 'minik8s init' or 'minik8s join' will be reverted.")
        print("[reset] Are you sure you want to proceed? [y/N]: ", end="", flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            print()
            print("error: reset aborted, nothing was changed; answer y, or give --force", file=sys.stderr)
            return 1
    t0 = time.monotonic()
    removed = reset(layout)
    for what in removed:
        print(f"[reset] Removed {what}")
    print(f"[reset] Done in {time.monotonic() - t0:.1f}s")
    return 0
