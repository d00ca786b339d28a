"""`LinuxRuntime`: pods as real processes in Linux namespaces and cgroups, no daemon.

Each pod has a sandbox process (shim.py, mode sandbox) holding its network, UTS and IPC
namespaces (and PID namespace with shareProcessNamespace), plugged into the node bridge
(network.py). Each container is a process started by its own monitor (shim.py, mode
container) that joins the sandbox's namespaces, gets new mount and PID namespaces, an
overlay root over the image (from kubelet/images/) and the pod's volumes (volumes.py),
runs as the image's user or securityContext's (users.py, looked up inside the root),
and writes its output to a CRI log (kubelet/runtime/logs.py). Cgroups (cgroups.py):
pod<uid> holds the pod's limits, and inside it pod<uid>/sandbox and pod<uid>/<container
id> hold the processes. Sandboxes and monitors are forks of the runtime's fork server
(shim.py, mode server; forkserver.py), so a pod costs two forks rather than two
interpreter starts. Monitors and sandboxes depend on neither the kubelet nor the fork
server: killing either leaves pods running. `reset_node` takes all of it off the host.

State, all under root_dir (e.g. /var/lib/minik8s/<node>), so that a new LinuxRuntime
over the same directory adopts everything (no process is ever started twice):
    pods/<uid>/sandbox.json                  config, state, holder pid + start time, IP
    pods/<uid>/{hostname,hosts,resolv.conf}
    pods/<uid>/shm                            the pod's /dev/shm (tmpfs)
    pods/<uid>/volumes/<name>
    pods/<uid>/containers/<id>/config.json   what the monitor runs
    pods/<uid>/containers/<id>/state.json    pids, start/finish, exit code, OOM, the
                                              user it runs as (monitor)
    pods/<uid>/logs/<container>/<attempt>.log
    ipam/<ip>                                 the uid owning the address
A process is recorded as (pid, start time), so a recycled pid is never signalled.
A container's directory is its image's lease holder (ImageStore.lease): taken before the
image is resolved, released with the directory, so image GC never takes a used image.

Concurrency: calls for one pod are serialized by a per-pod lock; calls for different
pods run in parallel. `cleanup_orphans` must not race pod calls (run it at start).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterable, Mapping

from kubelet.images import HostRootImageStore, ImageError, ImageStore
from kubelet.runtime import (ContainerConfig, ContainerRuntimeError, ContainerStatus,
                             CreateContainerError, NotFound, PodSandboxConfig, Runtime,
                             SandboxNotReady, SandboxStatus, Usage, VolumeError, logs, resolv_conf)
from kubelet.runtime.linux import kernel, netlink, users, volumes
from kubelet.runtime.linux import cgroups
from kubelet.runtime.linux.cgroups import Cgroup, Hierarchies
from kubelet.runtime.linux.forkserver import SHIM, ForkedExec, ForkServer, Unsent
from kubelet.runtime.linux.network import PodNetwork, node_ip, veth_name

# Added to a limited pod cgroup for the sandbox process (a Python interpreter), so that
# a container reaching its own limit is OOM-killed in its own cgroup, not the pod's.
SANDBOX_MEMORY_OVERHEAD = 32 * 1024 * 1024
# A container whose monitor has neither started it nor failed by then is lost.
START_TIMEOUT = 60.0
_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

HOSTS_HEADER = """# Kubernetes-managed hosts file.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp{threading.get_ident()}"
    text = json.dumps(obj)  # one shot: json.dump to a file encodes in pure Python
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class LinuxRuntime(Runtime):
    def __init__(self, root_dir: str, *, pod_cidr: str = "10.244.0.0/24",
                 bridge: str = "mk8s0", cgroup_parent: str = "minik8s",
                 images: ImageStore | None = None, node_ip: str | None = None,
                 subnet_file: str | None = None, log_max_bytes: int = 10 * 1024 * 1024, log_max_files: int = 5,
                 shm_size: int = 64 * 1024 * 1024):
        self.root = os.path.realpath(root_dir)
        self.pods_dir = os.path.join(self.root, "pods")
        os.makedirs(self.pods_dir, exist_ok=True)
        self.network = PodNetwork(bridge=bridge, cidr=pod_cidr, state_dir=self.root,
                                  subnet_file=subnet_file)
        self.cgroups = Hierarchies(cgroup_parent)
        self.cgroups.ensure()
        self.images = images or HostRootImageStore()
        self._node_ip = node_ip
        self.log_max_bytes, self.log_max_files, self.shm_size = log_max_bytes, log_max_files, shm_size
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._forks = ForkServer()

    # -- helpers -----------------------------------------------------------------------
    def _lock(self, uid: str) -> threading.RLock:
        if not _UID.match(uid):
            raise ContainerRuntimeError(f"invalid pod uid {uid!r}")
        with self._locks_guard:
            return self._locks.setdefault(uid, threading.RLock())

    def _pod_dir(self, uid: str) -> str:
        return os.path.join(self.pods_dir, uid)

    def _sandbox(self, uid: str) -> dict | None:
        return _read_json(os.path.join(self._pod_dir(uid), "sandbox.json"))

    def _save_sandbox(self, uid: str, sb: dict) -> None:
        _write_json(os.path.join(self._pod_dir(uid), "sandbox.json"), sb)

    def _pod_cgroup(self, uid: str) -> Cgroup:
        return self.cgroups.cgroup(f"pod{uid}")

    @property
    def node_ip(self) -> str | None:
        if self._node_ip is None:
            self._node_ip = node_ip()
        return self._node_ip

    def _spawn(self, mode: str, arg, *, stderr_path: str = os.devnull) -> dict:
        """Have the fork server start a helper (shim.py `mode`); wait for its one report."""
        r, w = os.pipe()
        try:
            with open(stderr_path, "ab") as err:
                self._forks.fork(mode, arg, status_fd=w, stderr_fd=err.fileno())
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        try:
            data, deadline = b"", time.monotonic() + START_TIMEOUT
            while select.select([r], [], [], max(0.0, deadline - time.monotonic()))[0]:
                chunk = os.read(r, 4096)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(r)
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            return {"error": f"runtime helper failed without a report: {data!r}"}

    def close(self) -> None:
        """Stop the fork server (helpers it started keep running). Optional: it also
        stops by itself when this process exits."""
        self._forks.close()

    # -- pod sandboxes -----------------------------------------------------------------
    def _sandbox_status(self, uid: str, sb: dict) -> SandboxStatus:
        cfg = sb["config"]
        ready = sb.get("state") == "ready" and kernel.alive(sb.get("pid"), sb.get("start"))
        return SandboxStatus(uid=uid, name=cfg["name"], namespace=cfg["namespace"],
                             ready=ready, ip=sb.get("ip"), created_at=sb["created_at"],
                             host_network=cfg["host_network"])

    def pod_sandbox_status(self, uid: str) -> SandboxStatus | None:
        sb = self._sandbox(uid)
        return self._sandbox_status(uid, sb) if sb else None

    def list_pod_sandboxes(self) -> list[SandboxStatus]:
        out = []
        for uid in sorted(os.listdir(self.pods_dir)):
            sb = self._sandbox(uid)
            if sb:
                out.append(self._sandbox_status(uid, sb))
        return out

    def run_pod_sandbox(self, config: PodSandboxConfig) -> SandboxStatus:
        uid = config.uid
        with self._lock(uid):
            sb = self._sandbox(uid)
            if sb and self._sandbox_status(uid, sb).ready:
                return self._sandbox_status(uid, sb)
            if sb:  # dead or half made: clear what is left, keep volumes and logs
                self._stop_sandbox(uid, 0)
            pod_dir = self._pod_dir(uid)
            os.makedirs(pod_dir, exist_ok=True)
            cgroup = self._pod_cgroup(uid)
            # Written once, when ready (each file written costs an inode, and on a busy
            # ext4 that is much of a pod's start): a crash before then leaves a pod
            # directory without a record, which cleanup_orphans sweeps (the holder dies
            # with its cgroup); a failure saves it stopped.
            sb = {"config": dataclasses.asdict(config), "state": "creating",
                  "created_at": time.time(), "cgroup": cgroup.to_json()}
            try:
                res = config.resources
                cgroup.create(cpu_request_milli=res.cpu_request_milli,
                              cpu_limit_milli=res.cpu_limit_milli,
                              memory_limit=res.memory_limit and res.memory_limit + SANDBOX_MEMORY_OVERHEAD,
                              inner=True)
                # The sandbox process gets a cgroup of its own, as the pause container
                # does: with cgroup v2 only leaves may hold processes.
                sandbox_cgroup = self.cgroups.cgroup(f"pod{uid}", "sandbox")
                sandbox_cgroup.create()
                hostname = (config.hostname or config.name)[:63]
                unshare = [ns for ns, host in (("net", config.host_network),
                                               ("uts", config.host_network),
                                               ("ipc", config.host_ipc)) if not host]
                if config.share_process_namespace and not config.host_pid:
                    unshare.append("pid")
                reply = self._spawn("sandbox", {"unshare": unshare, "hostname": hostname,
                                                "cgroup": sandbox_cgroup.to_json()})
                if "error" in reply:
                    raise ContainerRuntimeError(f"creating the pod sandbox: {reply['error']}",
                                                reason="FailedCreatePodSandBox")
                sb.update(pid=reply["pid"], start=reply["start"], unshare=unshare)
                ip = self.node_ip if config.host_network else self.network.attach(uid, reply["pid"])
                self._write_etc(pod_dir, config, hostname, ip)
                shm = os.path.join(pod_dir, "shm")
                os.makedirs(shm, exist_ok=True)
                # ismount: one stat, where the node's mount table grows with its pods.
                if not config.host_ipc and not os.path.ismount(shm):
                    kernel.mount("shm", shm, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV,
                                 f"mode=1777,size={self.shm_size}")
                sb.update(state="ready", ip=ip)
                self._save_sandbox(uid, sb)
            except BaseException:
                self._stop_sandbox(uid, 0, sb)
                raise
            return self._sandbox_status(uid, sb)

    def _write_etc(self, pod_dir: str, config: PodSandboxConfig, hostname: str, ip: str | None) -> None:
        if config.host_network:
            with open("/etc/hosts") as f:
                hosts = f.read()
        else:
            hosts = HOSTS_HEADER + (f"{ip}\t{hostname}\n" if ip else "")
        resolv = resolv_conf(config)
        if resolv is None:
            with open("/etc/resolv.conf") as f:
                resolv = f.read()
        for name, text in (("hostname", hostname + "\n"), ("hosts", hosts), ("resolv.conf", resolv)):
            with open(os.path.join(pod_dir, name), "w") as f:
                f.write(text)

    def stop_pod_sandbox(self, uid: str, *, grace_period: float = 30) -> None:
        with self._lock(uid):
            self._stop_sandbox(uid, grace_period)

    def _stop_sandbox(self, uid: str, grace: float, sb: dict | None = None) -> None:
        """sb: the sandbox's record, when it is not saved yet."""
        sb = sb or self._sandbox(uid)
        # Containers stop in parallel, each with the full grace period, as in Kubernetes.
        threads = [threading.Thread(target=self._stop_container, args=(cdir, grace))
                   for cdir in self._container_dirs(uid)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._pod_cgroup(uid).kill_all()  # the sandbox process and any straggler
        if sb is None:
            return
        if not sb["config"]["host_network"]:
            self.network.detach(uid)
        sb.update(state="stopped", ip=None)
        self._save_sandbox(uid, sb)

    def remove_pod(self, uid: str) -> None:
        with self._lock(uid):
            pod_dir = self._pod_dir(uid)
            self._stop_sandbox(uid, 0)
            self._pod_cgroup(uid).remove()  # with the containers' cgroups inside it
            self.network.detach(uid)
            if os.path.isdir(pod_dir):
                volumes.teardown(pod_dir)
                kernel.unmount_all(pod_dir)
                if kernel.mounts_under(pod_dir):  # never let rmtree reach into a mount
                    raise ContainerRuntimeError(f"mounts remain under {pod_dir}")
                containers = glob.glob(os.path.join(pod_dir, "containers", "*"))
                shutil.rmtree(pod_dir)
                for cdir in containers:
                    self.images.release(cdir)
        with self._locks_guard:
            self._locks.pop(uid, None)

    # -- volumes -------------------------------------------------------------------------
    def remove_volumes(self, uid: str) -> None:
        with self._lock(uid):
            pod_dir = self._pod_dir(uid)
            if os.path.isdir(pod_dir):
                volumes.teardown(pod_dir)

    def setup_volume(self, uid: str, volume: Mapping, *,
                     data: Mapping[str, bytes | str] | None = None,
                     payload: Mapping[str, tuple[bytes, int]] | None = None) -> str:
        with self._lock(uid):
            try:
                return volumes.setup(self._pod_dir(uid), volume, data, payload=payload)
            except OSError as e:
                raise VolumeError(f"volume {volume.get('name')!r}: {e}") from e

    # -- containers ----------------------------------------------------------------------
    def _container_dirs(self, uid: str | None = None) -> list[str]:
        pattern = os.path.join(self.pods_dir, uid or "*", "containers", "*")
        dirs = [d for d in glob.glob(pattern) if os.path.exists(os.path.join(d, "config.json"))]
        return sorted(dirs, key=lambda d: (_read_json(os.path.join(d, "config.json")) or {})
                      .get("created_at", 0))

    def _find(self, container_id: str) -> str:
        if re.fullmatch(r"[0-9a-f]+", container_id or ""):
            found = glob.glob(os.path.join(self.pods_dir, "*", "containers", container_id))
            if found:
                return found[0]
        raise NotFound(f"container {container_id!r} not found")

    def _status(self, cdir: str, cfg: dict | None = None) -> ContainerStatus:
        cfg = cfg or _read_json(os.path.join(cdir, "config.json"))
        st = _read_json(os.path.join(cdir, "state.json")) or {}
        meta = cfg["meta"]
        s = ContainerStatus(id=meta["id"], pod_uid=meta["pod_uid"], name=meta["name"],
                            attempt=meta["attempt"], image=meta["image"],
                            image_id=meta.get("image_id", ""), state="running",
                            pid=st.get("pid"), started_at=st.get("started_at"),
                            log_path=cfg["log_path"])
        if st.get("finished_at"):
            s.state, s.pid = "exited", None
            s.finished_at, s.exit_code = st["finished_at"], st["exit_code"]
            s.reason, s.message = st.get("reason", ""), st.get("message", "")
            s.oom_killed = st.get("oom_killed", False)
        elif kernel.alive(st.get("shim_pid"), st.get("shim_start")):
            pass  # running, or just exited and its monitor is recording it
        elif "pid" not in st and time.time() - cfg["created_at"] < START_TIMEOUT:
            s.state = "created"  # its monitor has not reported yet
        else:
            s.state, s.pid, s.exit_code = "exited", None, 137
            s.reason = "ContainerStatusUnknown"
            s.message = "the container and its monitor are gone without a record of the exit"
        return s

    def container_status(self, container_id: str) -> ContainerStatus | None:
        try:
            return self._status(self._find(container_id))
        except NotFound:
            return None

    def list_containers(self, uid: str | None = None) -> list[ContainerStatus]:
        found = []
        for cdir in glob.glob(os.path.join(self.pods_dir, uid or "*", "containers", "*")):
            cfg = _read_json(os.path.join(cdir, "config.json"))  # read once: the PLEG's hot path
            try:
                found.append((cfg["created_at"], self._status(cdir, cfg)))
            except (TypeError, KeyError):  # not made yet, or removed meanwhile
                pass
        return [c for _, c in sorted(found, key=lambda t: t[0])]

    def start_container(self, uid: str, config: ContainerConfig) -> ContainerStatus:
        with self._lock(uid):
            sb = self._sandbox(uid)
            if not sb or not self._sandbox_status(uid, sb).ready:
                raise SandboxNotReady(f"pod {uid} has no ready sandbox")
            for c in self.list_containers(uid):
                if c.name == config.name and c.attempt == config.attempt:
                    raise CreateContainerError(
                        f"container {config.name!r} attempt {config.attempt} already exists")
            cid = secrets.token_hex(8)
            cdir = os.path.join(self._pod_dir(uid), "containers", cid)
            os.makedirs(cdir)  # in its own mount namespace, the container mounts its root here
            cgroup = None
            try:
                # Leased before it is resolved, with the lease's holder (this directory)
                # already there: image GC cannot take the image between the two.
                try:
                    self.images.lease(cdir, config.image)
                except OSError as e:
                    raise CreateContainerError(f"leasing image {config.image!r}: {e}") from e
                cfg = self._container_config(uid, sb, config, cid, cdir)
                cgroup = self.cgroups.cgroup(f"pod{uid}", cid)
                res = config.resources
                cgroup.create(cpu_request_milli=res.cpu_request_milli,
                              cpu_limit_milli=res.cpu_limit_milli, memory_limit=res.memory_limit)
                cfg["cgroup"] = cgroup.to_json()
                _write_json(os.path.join(cdir, "config.json"), cfg)
                monitor_log = os.path.join(cdir, "monitor.log")
                reply = self._spawn("container", cdir, stderr_path=monitor_log)
                if "error" in reply and not os.path.exists(os.path.join(cdir, "state.json")):
                    # The monitor failed before it could record anything: no container.
                    with open(monitor_log, errors="replace") as f:
                        detail = f.read()[-2000:]
                    raise CreateContainerError(f"{reply['error']} {detail}".strip())
            except BaseException:
                if cgroup is not None:
                    cgroup.remove()
                shutil.rmtree(cdir)
                self.images.release(cdir)
                raise
            return self._status(cdir)

    def _container_config(self, uid: str, sb: dict, config: ContainerConfig, cid: str,
                          cdir: str) -> dict:
        """What the monitor runs (config.json, without its cgroup); raises
        CreateContainerError. Clears the log of a removed container of this attempt."""
        try:
            image = self.images.resolve(config.image)
        except ImageError as e:
            raise CreateContainerError(str(e), reason="ErrImagePull") from e
        # Kubernetes' rule: command replaces the entrypoint, args replace the cmd.
        argv = (config.command or image.entrypoint) + (
            config.args or ([] if config.command else image.cmd))
        if not argv:
            raise CreateContainerError(
                f"container {config.name!r}: no command specified (neither the container "
                f"nor its image {config.image!r} gives one)")
        mounts = []
        for m in config.mounts:
            if not os.path.isabs(m.container_path):
                raise CreateContainerError(f"mount path {m.container_path!r} must be absolute")
            try:
                src = volumes.resolve_subpath(m.host_path, m.sub_path)
            except VolumeError as e:
                raise CreateContainerError(e.message) from e
            if not os.path.exists(src):
                raise CreateContainerError(f"mount source {src} does not exist")
            mounts.append({"src": src, "dst": os.path.normpath(m.container_path),
                           "ro": m.read_only})
        scfg = sb["config"]
        hostname = (scfg["hostname"] or scfg["name"])[:63]
        env = {**image.env, "HOSTNAME": hostname, **config.env}
        pod_dir = self._pod_dir(uid)
        # (A sandbox made before these files moved up from pod_dir/etc has them there.)
        etc_dir = pod_dir if os.path.exists(f"{pod_dir}/hosts") else f"{pod_dir}/etc"
        etc = {"/etc/hosts": f"{etc_dir}/hosts", "/etc/resolv.conf": f"{etc_dir}/resolv.conf"}
        if not scfg["host_network"]:
            etc["/etc/hostname"] = f"{etc_dir}/hostname"
        log_path = os.path.join(pod_dir, "logs", config.name, f"{config.attempt}.log")
        if os.path.isdir(os.path.dirname(log_path)):
            for stale in [log_path, *logs.rotated_files(log_path)]:
                if os.path.exists(stale):  # a removed container's, with the same attempt
                    os.unlink(stale)
        else:
            os.makedirs(os.path.dirname(log_path))
        pid_mode = ("host" if scfg["host_pid"] else
                    "pod" if "pid" in sb.get("unshare", []) else "private")
        cwd = config.working_dir or image.working_dir or "/"
        return {
            "meta": {"id": cid, "pod_uid": uid, "name": config.name,
                     "attempt": config.attempt, "image": config.image, "image_id": image.image_id},
            "created_at": time.time(), "dir": cdir, "argv": argv, "env": env,
            "cwd": os.path.join("/", cwd),  # a relative WorkingDir is from the root, as in runc
            "user": users.effective_spec(image.user, config.run_as_user, config.run_as_group),
            # The kubelet's state (other pods' volumes and secrets) is only reachable
            # from a root that is the host's.
            "lowerdirs": image.layers, "mask": [self.root] if "/" in image.layers else [],
            "read_only_root": config.read_only_root,
            "sandbox": {"pid": sb["pid"], "start": sb["start"]},
            "join": [n for n in ("ipc", "uts", "net") if n in sb["unshare"]]
                    + (["pid"] if pid_mode == "pod" else []),
            "pid_mode": pid_mode, "etc": etc,
            "shm": "/dev/shm" if scfg["host_ipc"] else f"{pod_dir}/shm",
            "mounts": mounts, "log_path": log_path, "log_max_bytes": self.log_max_bytes,
            "log_max_files": self.log_max_files,
        }

    def stop_container(self, container_id: str, *, grace_period: float = 30) -> ContainerStatus:
        cdir = self._find(container_id)
        with self._lock(os.path.basename(os.path.dirname(os.path.dirname(cdir)))):
            return self._stop_container(cdir, grace_period)

    def _stop_container(self, cdir: str, grace: float) -> ContainerStatus:
        cfg = _read_json(os.path.join(cdir, "config.json"))
        st = _read_json(os.path.join(cdir, "state.json")) or {}
        if st.get("pid") and not st.get("finished_at"):
            pid, start = st["pid"], st["start"]
            # Without a SIGTERM handler, the first process of a PID namespace ignores
            # SIGTERM: as with Docker and Kubernetes, it then waits out the grace period.
            if kernel.signal_process(pid, start, signal.SIGTERM) and grace > 0:
                kernel.wait_exit(pid, start, grace)
            Cgroup.from_json(cfg["cgroup"]).kill_all()
        if st.get("shim_pid"):
            kernel.wait_exit(st["shim_pid"], st["shim_start"], 10)  # it records the exit
        return self._status(cdir)

    def remove_container(self, container_id: str) -> None:
        try:
            cdir = self._find(container_id)
        except NotFound:
            return
        with self._lock(os.path.basename(os.path.dirname(os.path.dirname(cdir)))):
            self._stop_container(cdir, 0)
            cfg = _read_json(os.path.join(cdir, "config.json"))
            Cgroup.from_json(cfg["cgroup"]).remove()
            for f in [cfg["log_path"], *logs.rotated_files(cfg["log_path"])]:
                if os.path.exists(f):
                    os.unlink(f)
            kernel.unmount_all(cdir)
            shutil.rmtree(cdir)
            self.images.release(cdir)

    # -- exec, probes ----------------------------------------------------------------------
    def exec(self, container_id: str, argv: list[str], *,
             stdin: bool = False) -> ForkedExec | subprocess.Popen:
        """See Runtime.exec. The command is forked by the fork server (a ForkedExec);
        if the server cannot be asked, it is run through an interpreter of its own
        (shim.py exec, a subprocess.Popen): same pipes and exit codes, but returncode is -9 for
        a kill() (Popen's), and pid is that interpreter's."""
        cdir = self._find(container_id)
        if not argv:
            raise ContainerRuntimeError("exec: no command given")
        if not self._status(cdir).running:
            raise ContainerRuntimeError(f"container {container_id} is not running")
        try:
            return self._forked_exec(cdir, argv, stdin=stdin)
        except Unsent:  # never sent, so never started: run it the other way
            pass
        return subprocess.Popen([sys.executable, "-I", "-S", SHIM, "exec", cdir, "--", *argv],
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")

    def _forked_exec(self, cdir: str, argv: list[str], *, stdin: bool) -> ForkedExec:
        """Have the fork server start the command; return once it has its pid."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        in_r, in_w = os.pipe() if stdin else (None, None)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            try:
                self._forks.fork("exec", [cdir, argv], status_fd=theirs.fileno(),
                                 stderr_fd=err_w, stdin_fd=in_r, stdout_fd=out_w)
            except (ContainerRuntimeError, OSError) as e:
                raise Unsent from e
            finally:  # the helper has its copies
                theirs.close()
                for fd in (in_r, out_w, err_w):
                    if fd is not None:
                        os.close(fd)
            report = {}
            if select.select([ours], [], [], START_TIMEOUT)[0]:
                report = json.loads(ours.recv(4096) or b"{}")
            if "pid" not in report:
                raise ContainerRuntimeError("exec: the runtime helper failed without a report")
            return ForkedExec(argv, ours, report["pid"], stdin=in_w, stdout=out_r, stderr=err_r)
        except BaseException:
            ours.close()
            for fd in (in_w, out_r, err_r):
                if fd is not None:
                    os.close(fd)
            raise

    def usage(self, uid: str, container_id: str | None = None) -> Usage | None:
        if container_id is None:
            return _usage(self._pod_cgroup(uid))
        try:
            cfg = _read_json(os.path.join(self._find(container_id), "config.json")) or {}
        except NotFound:
            return None
        return _usage(Cgroup.from_json(cfg["cgroup"])) if cfg.get("cgroup") else None

    def node_usage(self) -> Usage | None:
        return _usage(cgroups.root())

    def pod_socket(self, uid: str, family: int = socket.AF_INET,
                   type: int = socket.SOCK_STREAM) -> socket.socket:
        sb = self._sandbox(uid)
        if not sb or not self._sandbox_status(uid, sb).ready:
            raise SandboxNotReady(f"pod {uid} has no ready sandbox")
        if sb["config"]["host_network"]:
            return socket.socket(family, type)
        s = kernel.netns_socket(f"/proc/{sb['pid']}/ns/net", family, type)
        if not kernel.alive(sb["pid"], sb["start"]):  # the pid was reused meanwhile
            s.close()
            raise SandboxNotReady(f"pod {uid} has no ready sandbox")
        return s

    # -- the node ------------------------------------------------------------------------
    def cleanup_orphans(self, keep: Iterable[str] | None = None) -> None:
        keep = set(keep) if keep is not None else None
        for uid in os.listdir(self.pods_dir):
            sb = self._sandbox(uid)
            if sb is None or sb.get("state") == "creating" or (keep is not None and uid not in keep):
                self.remove_pod(uid)
        live = set(os.listdir(self.pods_dir))
        for name in self.cgroups.children():
            if name.startswith("pod") and name[3:] not in live:
                self.cgroups.cgroup(name).remove()
        for uid in live:
            containers = set(os.listdir(os.path.join(self.pods_dir, uid, "containers"))
                             if os.path.isdir(os.path.join(self.pods_dir, uid, "containers")) else [])
            for d in self._pod_cgroup(uid).dirs[:1]:
                for cid in (os.listdir(d) if os.path.isdir(d) else []):
                    if os.path.isdir(os.path.join(d, cid)) and cid not in containers | {"sandbox"}:
                        self.cgroups.cgroup(f"pod{uid}", cid).remove()
        for m in kernel.mounts_under(self.pods_dir):
            uid = os.path.relpath(m, self.pods_dir).split("/")[0]
            if uid not in live:
                kernel.umount(m)
        attached = {}
        for uid in live:
            sb = self._sandbox(uid)
            if sb and sb.get("ip") and not sb["config"]["host_network"]:
                attached[uid] = sb["ip"]
        for ip, owner in self.network.allocations().items():
            if attached.get(owner) != ip:
                self.network.release(ip, owner)
        wanted = {veth_name(uid) for uid in attached}
        for name in self.network.pod_veths():
            if name not in wanted:
                self.network.delete_veth(name)



def _usage(cgroup: Cgroup) -> Usage | None:
    now, u = time.time(), cgroup.usage()
    if u is None:
        return None
    return Usage(now, u["cpu_ns"], u["memory"], u["working_set"], u["rss"], u["pgfault"], u["pgmajfault"])


def reset_node(root_dir: str, *, bridge: str, cgroup_parent: str) -> list[str]:
    """Remove from the host everything a LinuxRuntime over `root_dir` with this bridge
    and cgroup parent made: every pod (processes, and with them their network
    namespaces; veths, addresses, mounts, cgroups), the bridge (and with it the route
    to the pod CIDR), the cgroup parent, the runtime's state under root_dir (pods/,
    ipam/; the directory itself and the endpoint's token stay). Nothing else is touched:
    links, cgroups and mounts are found by these names and paths only. Idempotent:
    -> what was removed, empty when there was nothing."""
    removed: list[str] = []
    root = os.path.realpath(root_dir)
    pods_dir, ipam_dir = os.path.join(root, "pods"), os.path.join(root, "ipam")
    if os.path.isdir(pods_dir):
        pods = len(os.listdir(pods_dir))
        rt = LinuxRuntime(root, bridge=bridge, cgroup_parent=cgroup_parent)
        try:
            rt.cleanup_orphans(keep=[])  # keeping none: every pod is removed
        finally:
            rt.close()
        if pods:
            removed.append(f"{pods} pod{'s' * (pods != 1)} under {pods_dir}")
    kernel.unmount_all(pods_dir)  # only if a crash left one with no pod record
    for d in (pods_dir, ipam_dir):
        if os.path.isdir(d):
            shutil.rmtree(d)
            removed.append(f"state {d}")
    with netlink.Netlink() as nl:
        if nl.delete_link(bridge):
            removed.append(f"bridge {bridge}")
    cgroups = Hierarchies(cgroup_parent)
    if any(os.path.isdir(d) for d in cgroups.dirs):
        Cgroup(cgroups.dirs, v2=cgroups.v2).remove()
        removed.append(f"cgroup {cgroup_parent}")
    return removed
