"""What one sync of a pod must do, decided from the pod and the runtime's state alone.

`compute_pod_actions(pod, status)` is the kubelet's computePodActions
(pkg/kubelet/kuberuntime/kuberuntime_manager.go): a pure function, no runtime, no API,
no clock. Everything it weighs is in its arguments: the pod (spec, deletionTimestamp,
status.phase) and a `RuntimeStatus` holding the sandbox, every run of the pod's containers,
the probe verdicts that condemn a running container, the crash back-off left per
container, and whether the pod's volumes are set up. The pod worker (kubelet/kubelet.py)
gathers that, then carries the actions out (upstream's SyncPod).

The rules, as the kubelet has them:
- A pod being deleted is killed; a pod whose phase is terminal has its sandbox stopped
  (its containers' logs are kept until it is deleted); nothing else is done to either.
- No ready sandbox: create one. Creating it stops whatever ran in the old one, so the
  containers are decided on the runtime's state after it (`containers=None` asks only the
  pod-level questions).
- Init containers run one at a time, in order, each to success, and only until an app
  container has run. A failed one is retried unless restartPolicy is Never; a running
  one is waited for.
- Then every app container: started if it never ran; killed if it runs a changed
  definition (its image: the one container field a pod update may change), or failed
  its liveness or startup probe. An exited (or killed) container restarts by
  restartPolicy (Always; OnFailure on a non-zero exit or a kill for a failed probe;
  never under Never), except that a changed definition restarts whatever the policy.
- A restart waits out the container's crash back-off (then the container is reported in
  CrashLoopBackOff and the pod is looked at again when the back-off ends).
- Volumes that are not set up hold back every container start.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from kubelet.runtime import ContainerStatus, SandboxStatus
from kubelet.status import TERMINAL


@dataclass
class RuntimeStatus:
    """The runtime's state of one pod, and the kubelet's own verdicts on it."""
    sandbox: SandboxStatus | None
    # Every run of the pod's containers; None before they are listed (pod-level only).
    containers: list[ContainerStatus] | None = None
    # Container id -> why it must be killed ("failed liveness probe"...), from the prober.
    unhealthy: dict[str, str] = field(default_factory=dict)
    # Container name -> seconds of crash back-off left before its latest run (exited, or
    # running and about to be killed) may be restarted.
    backoff: dict[str, float] = field(default_factory=dict)
    volumes_ready: bool = True


@dataclass(frozen=True)
class StartContainer:
    name: str
    init: bool
    attempt: int
    restart: bool  # a new run of a container that ran before (its back-off is charged)


@dataclass(frozen=True)
class KillContainer:
    name: str
    container_id: str
    reason: str   # "failed liveness probe", "definition changed", ...
    restart: bool  # whether it is started again (StartContainer follows)


@dataclass(frozen=True)
class BackOff:
    name: str
    container_id: str  # the run whose exit is waited out
    seconds: float


@dataclass
class PodActions:
    kill_pod: bool = False        # deletion: stop everything, then remove the pod
    stop_sandbox: bool = False    # terminal phase: stop the sandbox, keep logs
    create_sandbox: bool = False
    kill: list[KillContainer] = field(default_factory=list)     # spec order
    start: list[StartContainer] = field(default_factory=list)   # spec order; at most one init
    back_off: list[BackOff] = field(default_factory=list)
    wait_for_volumes: bool = False  # nothing can start, nothing ever ran: look again soon


def _runs(containers: list[ContainerStatus], name: str) -> list[ContainerStatus]:
    return sorted((c for c in containers if c.name == name), key=lambda c: c.attempt)


def _kill_reason(c: dict, run: ContainerStatus, unhealthy: dict[str, str]) -> str | None:
    if run.image != c.get("image", ""):
        return "definition changed"
    return unhealthy.get(run.id)


def compute_pod_actions(pod: dict, status: RuntimeStatus) -> PodActions:
    """What to do for `pod` given `status` (see the module's rules). Pure."""
    spec = pod.get("spec") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return PodActions(kill_pod=True)
    if (pod.get("status") or {}).get("phase") in TERMINAL:
        return PodActions(stop_sandbox=True)
    if status.sandbox is None or not status.sandbox.ready:
        return PodActions(create_sandbox=True)
    actions = PodActions()
    if status.containers is None:
        return actions
    policy = spec.get("restartPolicy", "Always")
    runs = {c["name"]: _runs(status.containers, c["name"])
            for k in ("initContainers", "containers") for c in spec.get(k) or []}

    def restart(name: str, last: ContainerStatus, *, init: bool) -> None:
        left = status.backoff.get(name, 0.0)
        if left > 0:
            actions.back_off.append(BackOff(name, last.id, left))
        else:
            actions.start.append(StartContainer(name, init, last.attempt + 1, restart=True))

    app = spec.get("containers") or []
    initialized = True
    if not any(runs[c["name"]] for c in app):
        for c in spec.get("initContainers") or []:
            last = runs[c["name"]][-1] if runs[c["name"]] else None
            if last is not None and last.state == "exited" and last.exit_code == 0:
                continue
            initialized = False
            if not status.volumes_ready or (last is not None and last.state != "exited"):
                break
            if last is None:
                actions.start.append(StartContainer(c["name"], True, 0, restart=False))
            elif policy != "Never":
                restart(c["name"], last, init=True)
            break
    if initialized and status.volumes_ready:
        for c in app:
            name = c["name"]
            last = runs[name][-1] if runs[name] else None
            if last is None:
                actions.start.append(StartContainer(name, False, 0, restart=False))
                continue
            if last.state == "running":
                why = _kill_reason(c, last, status.unhealthy)
                if why is None:
                    continue
                # Upstream's shouldRestartOnFailure: a kill is a failure, whatever the exit
                # code the container's SIGTERM handler ends with.
                again = why == "definition changed" or policy != "Never"
                actions.kill.append(KillContainer(name, last.id, why, again))
            elif last.state == "exited":
                again = policy == "Always" or (policy == "OnFailure" and last.exit_code != 0)
            else:
                continue
            if again:
                restart(name, last, init=False)
    elif not status.volumes_ready and not any(runs.values()):
        actions.wait_for_volumes = True
    return actions
