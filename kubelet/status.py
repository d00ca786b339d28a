"""A pod's API status from what the runtime reports: pure functions, no I/O.

The kubelet's sync decides, per spec container, what is known about it (a `ContainerView`:
its runs on the node, oldest first, and why it is waiting if it is), and these functions
turn that into `status` as Kubernetes' kubelet writes it (kubelet_pods.go
generateAPIPodStatus, convertToAPIContainerStatuses, getPhase, and pkg/kubelet/status
for the conditions):

- a container's `state` is its latest run (running, or terminated with reason and exit
  code), or `waiting` with a reason when it has not run yet or will be restarted after a
  back-off; `lastState` is the run before; `restartCount` is the latest run's attempt;
- the phase follows getPhase: Pending until every container has started, Running while
  one runs (or will be restarted), Succeeded/Failed once all have stopped for good; a
  terminal phase never changes again;
- conditions keep their `lastTransitionTime` while their status does not change, and
  conditions the kubelet does not own (a scheduler's, a controller's) are kept.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from kubelet.runtime import ContainerStatus
from machinery import times

TERMINAL = ("Succeeded", "Failed")
KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready",
                      "PodScheduled")
CONTAINER_ID_PREFIX = "minik8s://"


def rfc3339(t: float | None) -> str | None:
    """Epoch seconds -> metav1.Time; None stays None (a container not yet started)."""
    return None if t is None else times.rfc3339(t)


@dataclass
class ContainerView:
    """What the pod's sync knows about one spec container."""
    name: str
    image: str
    runs: list[ContainerStatus] = field(default_factory=list)  # oldest first
    waiting: tuple[str, str] | None = None  # (reason, message): not running, and why
    ready: bool = False
    started: bool = False

    @property
    def latest(self) -> ContainerStatus | None:
        return self.runs[-1] if self.runs else None

    @property
    def succeeded(self) -> bool:
        c = self.latest
        return c is not None and c.state == "exited" and c.exit_code == 0


def _terminated(c: ContainerStatus) -> dict:
    t = {"exitCode": c.exit_code if c.exit_code is not None else 137,
         "reason": c.reason or ("Completed" if c.exit_code == 0 else "Error"),
         "startedAt": rfc3339(c.started_at or c.finished_at),
         "finishedAt": rfc3339(c.finished_at), "containerID": CONTAINER_ID_PREFIX + c.id}
    if c.message:
        t["message"] = c.message[-4096:]
    return {k: v for k, v in t.items() if v is not None}


def container_status(v: ContainerView, *, default_waiting: str = "ContainerCreating") -> dict:
    latest = v.latest
    prev = v.runs[-2] if len(v.runs) > 1 else None
    out: dict = {"name": v.name, "image": v.image, "imageID": latest.image_id if latest else "",
                 "ready": False,
                 "restartCount": latest.attempt if latest else 0, "started": False}
    if latest is not None and latest.state != "exited" and v.waiting is None:
        if latest.state == "running":
            out["state"] = {"running": {"startedAt": rfc3339(latest.started_at or time.time())}}
            out["ready"], out["started"] = v.ready, v.started
        else:  # created: its monitor has not reported the start yet
            out["state"] = {"waiting": {"reason": default_waiting}}
        out["containerID"] = CONTAINER_ID_PREFIX + latest.id
        if prev is not None:
            out["lastState"] = {"terminated": _terminated(prev)}
    elif latest is not None and latest.state == "exited" and v.waiting is None:
        out["state"] = {"terminated": _terminated(latest)}
        out["ready"] = v.ready  # a completed init container is ready
        out["containerID"] = CONTAINER_ID_PREFIX + latest.id
        if prev is not None:
            out["lastState"] = {"terminated": _terminated(prev)}
    else:
        reason, message = v.waiting or (default_waiting, "")
        out["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        if latest is not None and latest.state == "exited":
            out["lastState"] = {"terminated": _terminated(latest)}
    out.setdefault("lastState", {})
    return out


def phase(init: list[ContainerView], app: list[ContainerView], restart_policy: str,
          *, terminal: bool = False) -> str:
    """getPhase (kubelet_pods.go). `terminal`: the pod is being stopped for good (it was
    deleted), so stopped containers will not run again whatever the restart policy."""
    pending_init = failed_init = 0
    for v in init:
        c = v.latest
        if c is None or c.state != "exited":
            pending_init += 1
        elif c.exit_code != 0:
            failed_init += 1
    running = waiting = stopped = succeeded = 0
    for v in app:
        c = v.latest
        if c is None or c.state == "created":
            waiting += 1
        elif c.state == "running":
            running += 1
        else:
            stopped += 1
            succeeded += c.exit_code == 0
    if failed_init and restart_policy == "Never":
        return "Failed"
    if (pending_init and not any(v.runs for v in app)) or waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if restart_policy == "Always":
            return "Running"  # every container is being restarted
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if restart_policy == "Never" else "Running"
    return "Pending"


def _names(views) -> str:
    return "[" + " ".join(v.name for v in views) + "]"


def conditions(pod_phase: str, init: list[ContainerView], app: list[ContainerView], *,
               sandbox_ready: bool, readiness_gates: list[str] | None = None,
               existing: list[dict] | None = None) -> list[dict]:
    """The kubelet's conditions, in Kubernetes' order."""
    def cond(type_, ok, reason="", message=""):
        c = {"type": type_, "status": "True" if ok else "False"}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        return c

    out = [cond("PodReadyToStartContainers", sandbox_ready)]
    not_done = [v for v in init if not v.succeeded]
    if pod_phase == "Succeeded":
        out.append(cond("Initialized", True, "PodCompleted"))
    elif not_done:
        out.append(cond("Initialized", False, "ContainersNotInitialized",
                        f"containers with incomplete status: {_names(not_done)}"))
    else:
        out.append(cond("Initialized", True))
    if pod_phase in TERMINAL:
        reason = "PodCompleted" if pod_phase == "Succeeded" else "PodFailed"
        ready = cond("ContainersReady", False, reason)
        out += [ready, {**ready, "type": "Ready"}]
    else:
        unready = [v for v in app if not v.ready]
        if unready:
            msg = f"containers with unready status: {_names(unready)}"
            out.append(cond("ContainersReady", False, "ContainersNotReady", msg))
        else:
            out.append(cond("ContainersReady", True))
        gates = {c["type"]: c.get("status") for c in existing or []}
        missing = [g for g in readiness_gates or [] if gates.get(g) != "True"]
        if unready:
            out.append(cond("Ready", False, "ContainersNotReady", msg))
        elif missing:
            out.append(cond("Ready", False, "ReadinessGatesNotReady",
                            "corresponding condition of pod readiness gate "
                            + ", ".join(f'"{g}"' for g in missing) + " does not exist."))
        else:
            out.append(cond("Ready", True))
    out.append(cond("PodScheduled", True))
    return out


def with_transition_times(new: list[dict], old: list[dict] | None, now: str) -> list[dict]:
    """Carry lastTransitionTime over from the old conditions whose status is unchanged,
    and keep the conditions someone else owns."""
    before = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        prev = before.get(c["type"])
        same = prev is not None and prev.get("status") == c["status"] and prev.get("lastTransitionTime")
        out.append({**c, "lastTransitionTime": prev["lastTransitionTime"] if same else now})
    out += [c for c in old or [] if c.get("type") not in KUBELET_CONDITIONS]
    return out


def pod_status(pod: dict, init: list[ContainerView], app: list[ContainerView], *,
               pod_ip: str | None, host_ip: str | None, sandbox_ready: bool,
               terminal: bool = False, now: float | None = None) -> dict:
    """The full `status` to write for the pod."""
    spec, old = pod.get("spec") or {}, pod.get("status") or {}
    now_s = rfc3339(now if now is not None else time.time())
    p = phase(init, app, spec.get("restartPolicy", "Always"), terminal=terminal)
    if old.get("phase") in TERMINAL:
        p = old["phase"]  # a terminal phase is final
    gates = [g.get("conditionType") for g in spec.get("readinessGates") or []]
    conds = conditions(p, init, app, sandbox_ready=sandbox_ready, readiness_gates=gates,
                       existing=old.get("conditions"))
    status: dict = {"phase": p,
                    "conditions": with_transition_times(conds, old.get("conditions"), now_s)}
    pod_ip = pod_ip or old.get("podIP")  # a stopped pod keeps reporting the IP it had
    if host_ip:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    status["startTime"] = old.get("startTime") or now_s
    if init:
        status["initContainerStatuses"] = [container_status(v, default_waiting="PodInitializing")
                                           for v in init]
    initializing = any(not v.succeeded for v in init)
    status["containerStatuses"] = [
        container_status(v, default_waiting="PodInitializing" if initializing else "ContainerCreating")
        for v in app]
    for key in ("qosClass", "nominatedNodeName", "reason", "message"):
        if key in old and key not in status:
            status[key] = old[key]
    return status


def equal(a: dict | None, b: dict | None) -> bool:
    """Statuses are equal as the API stores them (nulls and empty lastState dropped)."""
    return _norm(a or {}) == _norm(b or {})


def _norm(v):
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v
