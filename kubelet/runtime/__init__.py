"""The container runtime interface the kubelet's pod sync loop drives.

Shaped after Kubernetes' CRI, plus the node-local pieces the kubelet would otherwise do
itself (volumes, a socket in the pod's network for probes), so that one seam separates
the pod logic from the machine. The package: this interface; logs.py, the CRI log format
(written by a runtime, read by the kubelet's endpoint); linux/, `LinuxRuntime`, which runs
real processes in namespaces and cgroups and asks the image service (kubelet/images/)
for each container's root. Nothing here knows the API or the pod logic (an import-linter
contract says so).

Contract:
- Pods are named by their uid; containers by an id the runtime assigns. A container is
  one run of one spec container: a restart is a new container with attempt + 1, and
  the previous one stays (exited, with its log) until `remove_container`.
- Everything is level-based and idempotent: `run_pod_sandbox` returns the running
  sandbox if there is one; `stop_*` and `remove_*` on something already stopped or gone
  succeed. State is on disk, so a new runtime over the same state finds (adopts) what a
  previous one started, without starting anything twice.
- Calls block (processes, syscalls, waiting out grace periods). An asyncio kubelet
  runs them in worker threads. Calls for different pods may run concurrently; calls for
  one pod are serialized by the runtime.
- Times are seconds since the epoch (float); sizes are bytes; cpu is millicores.
"""
from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import IO, Iterable, Mapping, Protocol

from machinery.quantity import bytes_value, cpu_millis


class ContainerRuntimeError(Exception):
    """A runtime operation failed; `reason` is the Kubernetes reason to report."""
    reason = "RuntimeError"

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason


class NotFound(ContainerRuntimeError):
    reason = "NotFound"


class SandboxNotReady(ContainerRuntimeError):
    reason = "SandboxNotReady"


class CreateContainerError(ContainerRuntimeError):
    reason = "CreateContainerError"


class VolumeError(ContainerRuntimeError):
    reason = "FailedMount"


@dataclass
class Resources:
    cpu_request_milli: int | None = None
    cpu_limit_milli: int | None = None
    memory_limit: int | None = None

    @classmethod
    def from_spec(cls, resources: Mapping | None) -> "Resources":
        """From a container's `resources` (requests/limits quantities)."""
        req, lim = (resources or {}).get("requests") or {}, (resources or {}).get("limits") or {}
        return cls(cpu_request_milli=cpu_millis(req["cpu"]) if "cpu" in req else None,
                   cpu_limit_milli=cpu_millis(lim["cpu"]) if "cpu" in lim else None,
                   memory_limit=bytes_value(lim["memory"]) if "memory" in lim else None)

    @classmethod
    def pod_total(cls, containers: Iterable["Resources"]) -> "Resources":
        """The pod cgroup's share: requests add up; a limit exists only if every
        container has one (one unlimited container makes the pod unlimited)."""
        cs = list(containers)

        def total(attr):
            values = [getattr(c, attr) for c in cs]
            return sum(values) if values and all(v is not None for v in values) else None
        return cls(cpu_request_milli=sum(c.cpu_request_milli or 0 for c in cs) or None,
                   cpu_limit_milli=total("cpu_limit_milli"), memory_limit=total("memory_limit"))


@dataclass
class PodSandboxConfig:
    uid: str
    name: str
    namespace: str = "default"
    hostname: str = ""  # default: the pod's name
    host_network: bool = False
    host_ipc: bool = False
    host_pid: bool = False
    share_process_namespace: bool = False
    dns_servers: list[str] | None = None  # None: the node's /etc/resolv.conf (see resolv_conf)
    dns_searches: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)  # Resources.pod_total(...)


def resolv_conf(config: PodSandboxConfig) -> str | None:
    """The pod's resolv.conf as containerd writes it from the CRI's DNSConfig (search,
    nameservers, options); None: a copy of the node's /etc/resolv.conf."""
    if config.dns_servers is None:
        return None
    text = f"search {' '.join(config.dns_searches)}\n" if config.dns_searches else ""
    text += "".join(f"nameserver {s}\n" for s in config.dns_servers)
    if config.dns_options:
        text += f"options {' '.join(config.dns_options)}\n"
    return text


@dataclass
class Mount:
    host_path: str  # what setup_volume returned
    container_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass
class ContainerConfig:
    name: str
    image: str
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # resolved values, in order
    working_dir: str = ""
    mounts: list[Mount] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    attempt: int = 0  # the restart count this run will have
    read_only_root: bool = False
    # securityContext (the container's over the pod's): they override the image's User.
    run_as_user: int | None = None
    run_as_group: int | None = None


@dataclass
class SandboxStatus:
    uid: str
    name: str
    namespace: str
    ready: bool  # its namespaces are held by a live process
    ip: str | None
    created_at: float
    host_network: bool = False


@dataclass
class ContainerStatus:
    id: str
    pod_uid: str
    name: str
    attempt: int
    image: str
    state: str  # "running" or "exited"
    pid: int | None = None  # on the node
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str = ""  # Completed, Error, OOMKilled, StartError, ContainerStatusUnknown
    message: str = ""
    oom_killed: bool = False
    log_path: str = ""
    image_id: str = ""  # repo@sha256:<manifest digest> of the image it runs; "" for the host root

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass
class Usage:
    """One reading of a cgroup's (or the node's) CPU and memory, as cadvisor reports it."""
    time: float  # when read
    cpu_ns: int  # cumulative CPU time, in core-nanoseconds
    memory: int  # bytes in use
    working_set: int  # memory minus inactive file pages
    rss: int
    page_faults: int = 0
    major_page_faults: int = 0


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


class ExecProcess(Protocol):
    """A command running in a container (subprocess.Popen fits)."""
    stdin: IO[bytes] | None
    stdout: IO[bytes] | None
    stderr: IO[bytes] | None
    returncode: int | None

    def wait(self, timeout: float | None = None) -> int: ...
    def communicate(self, input: bytes | None = None,
                    timeout: float | None = None) -> tuple[bytes, bytes]: ...
    def kill(self) -> None: ...


class Runtime(ABC):
    # -- pod sandboxes -------------------------------------------------------------
    @abstractmethod
    def run_pod_sandbox(self, config: PodSandboxConfig) -> SandboxStatus:
        """Create the pod's sandbox (namespaces, network, cgroup) or return the ready
        one. A sandbox that is no longer ready is torn down and made anew (same IP
        pool, same volumes)."""

    @abstractmethod
    def stop_pod_sandbox(self, uid: str, *, grace_period: float = 30) -> None:
        """Stop every container (SIGTERM, SIGKILL after grace_period) and the sandbox,
        and give back its IP. Volumes, logs and exited containers stay."""

    @abstractmethod
    def remove_pod(self, uid: str) -> None:
        """Stop (no grace) and delete everything the pod has on the node: processes,
        mounts, cgroups, network, volumes (except hostPath), logs, state."""

    def remove_volumes(self, uid: str) -> None:
        """Delete a stopped pod's volumes (an evicted pod's: the disk they held is what
        the eviction frees), keeping its logs and exited containers."""
        return None

    @abstractmethod
    def pod_sandbox_status(self, uid: str) -> SandboxStatus | None: ...

    @abstractmethod
    def list_pod_sandboxes(self) -> list[SandboxStatus]: ...

    # -- volumes ---------------------------------------------------------------------
    @abstractmethod
    def setup_volume(self, uid: str, volume: Mapping, *,
                     data: Mapping[str, bytes | str] | None = None,
                     payload: Mapping[str, tuple[bytes, int]] | None = None) -> str:
        """Make a pod volume (a v1 Volume: emptyDir, hostPath, configMap, secret,
        projected, downwardAPI) ready and return its path on the node. For configMap and
        secret, `data` is the object's data (None: it does not exist); for projected and
        downwardAPI, `payload` is the files ({path: (content, mode)}, kubelet/projected.py).
        Calling again with new data updates the files in place, atomically. Raises
        VolumeError."""

    # -- containers ------------------------------------------------------------------
    @abstractmethod
    def start_container(self, uid: str, config: ContainerConfig) -> ContainerStatus:
        """Create and start a container in the pod's sandbox, from its image (the
        config's user, entrypoint, cmd, env and working dir, combined with the
        container's as Kubernetes does; the image is leased until `remove_container`).
        A command that cannot be executed gives an exited container (reason StartError,
        exit code 128, no started_at); a container that cannot be created (an image not
        on the node, a user the image does not name) raises CreateContainerError. A
        container that started may have exited already when its status is returned
        (started_at set)."""

    @abstractmethod
    def stop_container(self, container_id: str, *, grace_period: float = 30) -> ContainerStatus:
        """SIGTERM the container's first process, SIGKILL everything in the container
        after grace_period; return its final status."""

    @abstractmethod
    def remove_container(self, container_id: str) -> None:
        """Delete an exited container (stopping it first if needed) and its logs."""

    @abstractmethod
    def container_status(self, container_id: str) -> ContainerStatus | None: ...

    @abstractmethod
    def list_containers(self, uid: str | None = None) -> list[ContainerStatus]:
        """Containers of one pod (or all), oldest first."""

    # -- exec, probes, logs ----------------------------------------------------------
    @abstractmethod
    def exec(self, container_id: str, argv: list[str], *, stdin: bool = False) -> ExecProcess:
        """Run argv in a running container's namespaces and cgroup, as its user, with
        its env (HOME included) and working dir; stdout/stderr (and stdin if asked) are pipes. Exit code 126/127
        when argv cannot be executed, as in Docker."""

    def exec_sync(self, container_id: str, argv: list[str], *,
                  timeout: float | None = None) -> ExecResult:
        """exec and collect the output; raises TimeoutError (the command is killed)."""
        import subprocess
        p = self.exec(container_id, argv)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise TimeoutError(f"command {argv!r} timed out after {timeout}s") from None
        return ExecResult(p.returncode, out, err)

    @abstractmethod
    def pod_socket(self, uid: str, family: int = socket.AF_INET,
                   type: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket in the pod's network namespace (for httpGet and tcpSocket probes)."""

    def port_forward(self, uid: str, port: int) -> socket.socket:
        """A connected socket to localhost:port in the pod's network namespace (what
        `kubectl port-forward` reaches), IPv4 first then IPv6, as containerd dials. A
        port nothing listens on raises ContainerRuntimeError with containerd's wording."""
        errs = []
        for family, host, net in ((socket.AF_INET, "127.0.0.1", "tcp4"), (socket.AF_INET6, "::1", "tcp6")):
            addr = f"{host}:{port}" if family == socket.AF_INET else f"[{host}]:{port}"
            try:
                s = self.pod_socket(uid, family)
            except OSError as exc:
                errs.append(f"dial {net} {addr}: socket: {_go_error(exc)}")
                continue
            try:
                s.settimeout(10)
                s.connect((host, port))
                s.settimeout(None)
                return s
            except OSError as exc:
                s.close()
                errs.append(f"dial {net} {addr}: connect: {_go_error(exc)}")
        raise ContainerRuntimeError(f'failed to connect to localhost:{port} inside namespace "{uid}", '
                                    f"IPv4: {errs[0]} IPv6 {errs[1]} ")

    # -- usage -------------------------------------------------------------------------
    def usage(self, uid: str, container_id: str | None = None) -> Usage | None:
        """CPU and memory of a pod (its sandbox and containers) or of one of its
        containers, now; None when unknown (gone, or a runtime that does not measure)."""
        return None

    def node_usage(self) -> Usage | None:
        """CPU and memory of the whole node, now; None when unknown."""
        return None

    # -- the node --------------------------------------------------------------------
    @abstractmethod
    def cleanup_orphans(self, keep: Iterable[str] | None = None) -> None:
        """Sweep what a crash left behind: pods whose creation did not finish, and
        processes, mounts, cgroups, veths and IP allocations that belong to no pod.
        With `keep` (the uids of the pods the node should run), other pods are
        removed too. Call before starting pod workers."""


def _go_error(exc: OSError) -> str:
    """An OS error as Go prints a syscall error ("connection refused")."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]
