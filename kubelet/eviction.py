"""The kubelet's eviction manager (pkg/kubelet/eviction): when the node runs short of
memory or disk, it reports the pressure and evicts pods, one at a time, in Kubernetes'
order, instead of letting pods fail at random.

Guarantees
- Thresholds are the kubelet's flags: `--eviction-hard` (default
  `memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%`;
  given, it replaces the defaults), `--eviction-soft` with `--eviction-soft-grace-period`
  (every soft threshold needs one), `--eviction-minimum-reclaim` and
  `--eviction-pressure-transition-period` (5m). A value is a quantity or a percentage of
  the signal's capacity; only `<` is an operator, as in Kubernetes. `parse_thresholds`
  raises ValueError with a one-line message for anything else.
- Signals are observed, not estimated: memory.available is the node's memory capacity
  (MemTotal) less the root cgroup's working set, as the kubelet's summary provider
  computes it (MemAvailable of /proc/meminfo when the runtime measures no node usage);
  nodefs.* is statvfs of the kubelet's root dir, imagefs.* of the image store (the nodefs
  figures when there is none).
- A threshold is met when its signal is below it; once met it stays met until the signal
  is above the threshold plus its minimum reclaim. A soft threshold acts (evicts) only
  once it has been met for its grace period; a hard one at once.
- Conditions: MemoryPressure (memory.available) and DiskPressure (nodefs.*, imagefs.*)
  are True while a threshold of theirs is met (grace periods not waited for), and stay
  True until none has been met for the pressure transition period, so the condition
  does not flap. Their reasons and messages are the kubelet's; the node lifecycle
  controller turns them into the NoSchedule taints node.kubernetes.io/memory-pressure and
  node.kubernetes.io/disk-pressure.
- Eviction: at most one pod per `synchronize()` (the monitoring interval), chosen as
  Kubernetes ranks them: pods whose usage exceeds their requests first, then lower
  priority, then usage above requests (memory: the pod's working set; disk: bytes the pod
  wrote under its directory in the root dir). The evicted pod is stopped (grace 0 for a
  hard threshold, min(its grace, --eviction-max-pod-grace-period) for a soft one) and
  reported Failed with reason Evicted and the kubelet's message
  ("The node was low on resource: memory. Threshold quantity: ..., available: ... ").
  Critical pods (system-node-critical / system-cluster-critical) are never evicted.
- Admission (`admit`): under memory pressure new BestEffort pods are rejected (unless
  they tolerate the memory-pressure taint), under disk pressure every new pod, with
  reason Evicted and "The node had condition: [DiskPressure]. ", as the kubelet's.

Not done: node-level reclaim before evicting (image GC, dead containers), PID pressure,
the allocatable (pods cgroup) memory signal, and per-pod ephemeral-storage limits.

Concurrency: `synchronize()` and `admit()` run on the kubelet's event loop; observing
the filesystem and cgroups runs in a thread (it blocks). The clock is injected.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Awaitable, Callable, Iterable

from client.clock import Clock, RealClock
from machinery.duration import parse_duration
from machinery.quantity import format_quantity, parse_quantity

log = logging.getLogger("minik8s.kubelet.eviction")

MEMORY_AVAILABLE = "memory.available"
NODEFS_AVAILABLE = "nodefs.available"
NODEFS_INODES_FREE = "nodefs.inodesFree"
IMAGEFS_AVAILABLE = "imagefs.available"
IMAGEFS_INODES_FREE = "imagefs.inodesFree"
SIGNALS = (MEMORY_AVAILABLE, NODEFS_AVAILABLE, NODEFS_INODES_FREE, IMAGEFS_AVAILABLE, IMAGEFS_INODES_FREE)

DEFAULT_HARD = "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%"
DEFAULT_PRESSURE_TRANSITION_PERIOD = 300.0
MONITORING_INTERVAL = 10.0  # the kubelet's evictionMonitoringPeriod

MEMORY_PRESSURE, DISK_PRESSURE = "MemoryPressure", "DiskPressure"
_CONDITION = {MEMORY_AVAILABLE: MEMORY_PRESSURE, NODEFS_AVAILABLE: DISK_PRESSURE,
              NODEFS_INODES_FREE: DISK_PRESSURE, IMAGEFS_AVAILABLE: DISK_PRESSURE,
              IMAGEFS_INODES_FREE: DISK_PRESSURE}
_RESOURCE = {MEMORY_AVAILABLE: "memory", NODEFS_AVAILABLE: "ephemeral-storage",
             IMAGEFS_AVAILABLE: "ephemeral-storage", NODEFS_INODES_FREE: "inodes",
             IMAGEFS_INODES_FREE: "inodes"}
# (type, status, reason, message): the kubelet's setters (nodestatus.MemoryPressureCondition...)
CONDITIONS = {
    (MEMORY_PRESSURE, False): ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    (MEMORY_PRESSURE, True): ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
    (DISK_PRESSURE, False): ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    (DISK_PRESSURE, True): ("KubeletHasDiskPressure", "kubelet has disk pressure"),
}
TAINT = {MEMORY_PRESSURE: "node.kubernetes.io/memory-pressure",
         DISK_PRESSURE: "node.kubernetes.io/disk-pressure"}
EVICTED = "Evicted"
CRITICAL_PRIORITY = 2_000_000_000  # scheduling.SystemCriticalPriority


@dataclass(frozen=True)
class Threshold:
    signal: str
    quantity: int | None = None        # bytes or inodes
    percentage: Fraction | None = None  # of the signal's capacity, 0 < p <= 1
    grace_period: float = 0.0           # 0: hard
    min_reclaim: str | None = None      # a quantity or a percentage, as given

    def value(self, capacity: int) -> int:
        if self.quantity is not None:
            return self.quantity
        return int((self.percentage or 0) * capacity)

    def reclaim(self, capacity: int) -> int:
        if not self.min_reclaim:
            return 0
        if self.min_reclaim.endswith("%"):
            return int(Fraction(self.min_reclaim[:-1]) / 100 * capacity)
        return int(parse_quantity(self.min_reclaim))

    def text(self) -> str:
        if self.quantity is not None:
            return format_quantity(self.quantity, "BinarySI") if "inodes" not in self.signal \
                else str(self.quantity)
        return f"{float((self.percentage or 0) * 100):g}%"


def _pairs(flag: str, text: str, sep: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, op, value = item.partition(sep)
        if not op or not key or not value:
            raise ValueError(f"{flag}: invalid threshold {item!r}: expected SIGNAL{sep}VALUE")
        if key not in SIGNALS:
            raise ValueError(f"{flag}: unsupported eviction signal {key!r} (one of {', '.join(SIGNALS)})")
        if key in out:
            raise ValueError(f"{flag}: found duplicate eviction threshold for signal {key}")
        out[key] = value.strip()
    return out


def _amount(flag: str, signal: str, value: str) -> tuple[int | None, Fraction | None]:
    try:
        if value.endswith("%"):
            p = Fraction(value[:-1]) / 100
            if not 0 < p <= 1:
                raise ValueError
            return None, p
        q = parse_quantity(value)
    except (ValueError, ArithmeticError):
        raise ValueError(f"{flag}: invalid value {value!r} for {signal}: expected a quantity "
                         "or a percentage in (0%, 100%]") from None
    if q < 0:
        raise ValueError(f"{flag}: eviction threshold {signal} must be positive: {value}")
    return int(q), None


def parse_thresholds(hard: str | None = None, soft: str = "", soft_grace: str = "",
                     min_reclaim: str = "") -> list[Threshold]:
    """The thresholds of the eviction flags (hard None: the kubelet's defaults)."""
    out: list[Threshold] = []
    reclaims = _pairs("--eviction-minimum-reclaim", min_reclaim, "=")
    for signal, value in _pairs("--eviction-hard", DEFAULT_HARD if hard is None else hard, "<").items():
        out.append(Threshold(signal, *_amount("--eviction-hard", signal, value),
                             min_reclaim=reclaims.get(signal)))
    graces = _pairs("--eviction-soft-grace-period", soft_grace, "=")
    for signal, value in _pairs("--eviction-soft", soft, "<").items():
        if signal not in graces:
            raise ValueError(f"--eviction-soft: threshold {signal} has no grace period "
                             "(--eviction-soft-grace-period)")
        try:
            grace = parse_duration(graces[signal])
        except ValueError as e:
            raise ValueError(f"--eviction-soft-grace-period: {signal}: {e}") from None
        out.append(Threshold(signal, *_amount("--eviction-soft", signal, value),
                             grace_period=grace, min_reclaim=reclaims.get(signal)))
    for signal, value in reclaims.items():
        if not value.endswith("%"):
            _amount("--eviction-minimum-reclaim", signal, value)
    return out


# -- observations ------------------------------------------------------------------------

@dataclass(frozen=True)
class Observation:
    available: int
    capacity: int


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def _fs(path: str) -> tuple[Observation, Observation]:
    st = os.statvfs(path)
    return (Observation(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize),
            Observation(st.f_favail, st.f_files))


def observe(root_dir: str, image_dir: str | None, node_working_set: int | None) -> dict[str, Observation]:
    """The signals, now (blocks)."""
    mem = _meminfo()
    total = mem.get("MemTotal", 0)
    available = total - node_working_set if node_working_set is not None else mem.get("MemAvailable", 0)
    out = {MEMORY_AVAILABLE: Observation(max(available, 0), total)}
    out[NODEFS_AVAILABLE], out[NODEFS_INODES_FREE] = _fs(root_dir)
    if image_dir and os.path.isdir(image_dir):
        out[IMAGEFS_AVAILABLE], out[IMAGEFS_INODES_FREE] = _fs(image_dir)
    else:
        out[IMAGEFS_AVAILABLE], out[IMAGEFS_INODES_FREE] = out[NODEFS_AVAILABLE], out[NODEFS_INODES_FREE]
    return out


def disk_usage(path: str) -> tuple[int, int]:
    """(bytes, inodes) used under path on path's own filesystem (mounts inside, such as a
    container's overlay root or a memory-backed emptyDir, are not this disk's)."""
    try:
        dev = os.lstat(path).st_dev
    except OSError:
        return 0, 0
    seen: set[int] = set()
    used = inodes = 0
    for top, dirs, files in os.walk(path):
        for name in list(dirs) + files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if st.st_dev != dev:
                if name in dirs:
                    dirs.remove(name)
                continue
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                used += st.st_blocks * 512
                inodes += 1
    return used, inodes


# -- pods --------------------------------------------------------------------------------

@dataclass
class PodUsage:
    pod: dict
    memory: int = 0  # working set, bytes
    disk: int = 0    # bytes written under the pod's directory
    inodes: int = 0


def _requests(pod: dict, resource: str) -> int:
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        v = ((c.get("resources") or {}).get("requests") or {}).get(resource)
        if v is not None:
            total += int(parse_quantity(v))
    return total


def _priority(pod: dict) -> int:
    return int((pod.get("spec") or {}).get("priority") or 0)


def is_critical(pod: dict) -> bool:
    spec = pod.get("spec") or {}
    return spec.get("priorityClassName") in ("system-node-critical", "system-cluster-critical") \
        or _priority(pod) >= CRITICAL_PRIORITY


def qos_class(pod: dict) -> str:
    if q := (pod.get("status") or {}).get("qosClass"):
        return q
    for c in (pod.get("spec") or {}).get("containers") or []:
        r = c.get("resources") or {}
        if r.get("requests") or r.get("limits"):
            return "Burstable"
    return "BestEffort"


def rank(pods: list[PodUsage], signal: str) -> list[PodUsage]:
    """Kubernetes' order (rankMemoryPressure, rankDiskPressureFunc): usage over requests
    first, then lower priority first, then more usage above requests first."""
    if signal == MEMORY_AVAILABLE:
        def over(p: PodUsage) -> int:
            return p.memory - _requests(p.pod, "memory")
    elif signal in (NODEFS_INODES_FREE, IMAGEFS_INODES_FREE):
        def over(p: PodUsage) -> int:
            return p.inodes
    else:
        def over(p: PodUsage) -> int:
            return p.disk - _requests(p.pod, "ephemeral-storage")
    return sorted(pods, key=lambda p: (not over(p) > 0, _priority(p.pod), -over(p)))


# -- the manager -------------------------------------------------------------------------

@dataclass
class Eviction:
    pod: dict
    message: str
    grace_period: float
    condition: str  # MemoryPressure or DiskPressure


@dataclass
class Manager:
    """One per kubelet. `pods()` lists the node's active pods with their usage (blocks);
    `evict(eviction)` stops one and reports it Failed/Evicted."""
    thresholds: list[Threshold]
    root_dir: str
    pods: Callable[[], list[PodUsage]]
    evict: Callable[[Eviction], Awaitable[None]]
    node_working_set: Callable[[], int | None] = lambda: None
    image_dir: str | None = None
    pressure_transition_period: float = DEFAULT_PRESSURE_TRANSITION_PERIOD
    max_pod_grace_period: float = 0.0
    interval: float = MONITORING_INTERVAL
    clock: Clock = field(default_factory=RealClock)
    # The signals' source: `observe` of root_dir, image_dir and the node's working set
    # unless given (a narrow seam, for tests that drive the signals by hand).
    signals: Callable[[], dict[str, Observation]] | None = None
    _met: list[Threshold] = field(default_factory=list)
    _first_met: dict[Threshold, float] = field(default_factory=dict)
    _condition_seen: dict[str, float] = field(default_factory=dict)
    conditions: set[str] = field(default_factory=set)
    observations: dict[str, Observation] = field(default_factory=dict)

    def _observe(self) -> dict[str, Observation]:
        if self.signals is not None:
            return self.signals()
        return observe(self.root_dir, self.image_dir, self.node_working_set())

    def _met_now(self, obs: dict[str, Observation], previously: Iterable[Threshold]) -> list[Threshold]:
        before = set(previously)
        out = []
        for t in self.thresholds:
            o = obs.get(t.signal)
            if o is None or o.capacity == 0:
                continue
            line = t.value(o.capacity) + (t.reclaim(o.capacity) if t in before else 0)
            if o.available < line:
                out.append(t)
        return out

    async def synchronize(self) -> Eviction | None:
        """One pass: observe, update the conditions, evict at most one pod; -> the
        eviction made, if any."""
        obs = await asyncio.to_thread(self._observe)
        now = self.clock.monotonic()
        self.observations = obs
        met = self._met_now(obs, self._met)
        self._met = met
        self._first_met = {t: self._first_met.get(t, now) for t in met}
        for t in met:
            self._condition_seen[_CONDITION[t.signal]] = now
        conditions = {c for c, seen in self._condition_seen.items()
                      if now - seen < self.pressure_transition_period or
                      any(_CONDITION[t.signal] == c for t in met)}
        if conditions != self.conditions:
            log.info("eviction manager: node conditions %s -> %s", sorted(self.conditions), sorted(conditions))
            self.conditions = conditions
        active = [t for t in met if now - self._first_met[t] >= t.grace_period]
        if not active:
            return None
        # Memory first, as byEvictionPriority; then the most starved.
        active.sort(key=lambda t: (t.signal != MEMORY_AVAILABLE, obs[t.signal].available))
        t = active[0]
        pods = [p for p in await asyncio.to_thread(self.pods) if not is_critical(p.pod)]
        if not pods:
            log.warning("eviction manager: %s is below %s and no pod can be evicted", t.signal, t.text())
            return None
        victim = rank(pods, t.signal)[0]
        o = obs[t.signal]
        resource = _RESOURCE[t.signal]
        avail = format_quantity(o.available, "BinarySI") if resource != "inodes" else str(o.available)
        message = (f"The node was low on resource: {resource}. "
                   f"Threshold quantity: {_q(t.value(o.capacity), resource)}, "
                   f"available: {avail}. ")
        message += _container_message(victim, t.signal)
        grace = 0.0
        if t.grace_period:
            pod_grace = float((victim.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            grace = min(pod_grace, self.max_pod_grace_period)
        ev = Eviction(victim.pod, message, grace, _CONDITION[t.signal])
        await self.evict(ev)
        return ev

    def node_conditions(self) -> list[tuple[str, str, str, str]]:
        """(type, status, reason, message) of MemoryPressure and DiskPressure."""
        out = []
        for c in (MEMORY_PRESSURE, DISK_PRESSURE):
            under = c in self.conditions
            out.append((c, "True" if under else "False", *CONDITIONS[(c, under)]))
        return out

    def admit(self, pod: dict) -> tuple[bool, str, str]:
        """(admitted, reason, message) for a new pod, as the kubelet's eviction admit handler."""
        if not self.conditions or is_critical(pod):
            return True, "", ""
        if self.conditions == {MEMORY_PRESSURE}:
            if qos_class(pod) != "BestEffort" or _tolerates(pod, TAINT[MEMORY_PRESSURE]):
                return True, "", ""
        names = " ".join(sorted(self.conditions, key=lambda c: c != MEMORY_PRESSURE))
        return False, EVICTED, f"The node had condition: [{names}]. "

    async def run(self) -> None:
        while True:
            try:
                await self.synchronize()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next pass tries again
                log.warning("eviction manager: %s", exc)
            await self.clock.sleep(self.interval)


def _q(value: int, resource: str) -> str:
    return str(value) if resource == "inodes" else format_quantity(value, "BinarySI")


def _container_message(p: PodUsage, signal: str) -> str:
    """The kubelet's per-container sentence, for the pod as a whole (usage is per pod here)."""
    if signal != MEMORY_AVAILABLE:
        return ""
    names = [c.get("name", "") for c in (p.pod.get("spec") or {}).get("containers") or []]
    if len(names) != 1:
        return ""
    req = _requests(p.pod, "memory")
    if p.memory <= req:
        return ""
    return (f"Container {names[0]} was using {format_quantity(p.memory, 'BinarySI')}, request is "
            f"{format_quantity(req, 'BinarySI') if req else '0'}, has larger consumption of memory. ")


def _tolerates(pod: dict, key: str) -> bool:
    for t in (pod.get("spec") or {}).get("tolerations") or []:
        effect_ok = t.get("effect") in (None, "", "NoSchedule")
        if effect_ok and (t.get("key") == key or (not t.get("key") and t.get("operator") == "Exists")):
            return True
    return False


def disruption_condition(message: str, now: str) -> dict[str, Any]:
    """The pod condition the kubelet adds to an evicted pod (DisruptionTarget)."""
    return {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
            "message": message, "lastTransitionTime": now}


__all__ = ["Manager", "Threshold", "PodUsage", "Eviction", "parse_thresholds", "observe",
           "disk_usage", "rank"]
