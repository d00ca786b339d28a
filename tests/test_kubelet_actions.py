"""compute_pod_actions as a table: (name, pod, runtime status, want actions), no runtime."""
import itertools

import pytest

from kubelet.actions import (BackOff, KillContainer, PodActions, RuntimeStatus, StartContainer,
                             compute_pod_actions)
from kubelet.kubelet import PodState, PodWorker
from kubelet.runtime import ContainerStatus, SandboxStatus

_ids = itertools.count()


def pod(*containers, init=(), policy="Always", deleting=False, phase="Running"):
    md = {"name": "p", "namespace": "default", "uid": "u"}
    if deleting:
        md["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    spec = {"restartPolicy": policy,
            "containers": [{"name": n, "image": "img"} for n in containers],
            "initContainers": [{"name": n, "image": "img"} for n in init]}
    return {"metadata": md, "spec": spec, "status": {"phase": phase}}


def run(name, state="running", exit_code=None, attempt=0, image="img", id=None):
    return ContainerStatus(id=id or f"{name}-{attempt}-{next(_ids)}", pod_uid="u", name=name,
                           attempt=attempt, image=image, state=state, exit_code=exit_code)


def sandbox(ready=True):
    return SandboxStatus("u", "p", "", ready, "10.0.0.2" if ready else None, 1.0)


def status(*containers, ready=True, **kw):
    return RuntimeStatus(sandbox(ready), list(containers), **kw)


A0, A0_OK, A0_FAIL = run("a", id="a0"), run("a", "exited", 0, id="a0"), run("a", "exited", 1, id="a0")
I0_OK, I0_FAIL, I0_RUN = run("i", "exited", 0, id="i0"), run("i", "exited", 1, id="i0"), run("i", id="i0")
J0_OK = run("j", "exited", 0, id="j0")


def start(name, attempt=0, init=False):
    return StartContainer(name, init, attempt, restart=attempt > 0)


CASES = [
    # -- the pod as a whole
    ("deleted: kill the pod", pod("a", deleting=True), status(A0), PodActions(kill_pod=True)),
    ("deleted before a sandbox", pod("a", deleting=True), RuntimeStatus(None), PodActions(kill_pod=True)),
    ("terminal phase: stop the sandbox", pod("a", phase="Succeeded"), status(A0_OK),
     PodActions(stop_sandbox=True)),
    ("no sandbox: create one", pod("a"), RuntimeStatus(None), PodActions(create_sandbox=True)),
    ("sandbox died: create it again", pod("a"), status(A0, ready=False), PodActions(create_sandbox=True)),
    ("ready sandbox, containers not listed yet", pod("a"), RuntimeStatus(sandbox()), PodActions()),
    # -- app containers and the restart policy
    ("new pod: start every container", pod("a", "b"), status(),
     PodActions(start=[start("a"), start("b")])),
    ("running: nothing to do", pod("a"), status(A0), PodActions()),
    ("one of two missing: start it", pod("a", "b"), status(A0), PodActions(start=[start("b")])),
    ("Always restarts a success", pod("a"), status(A0_OK), PodActions(start=[start("a", 1)])),
    ("Always restarts a failure", pod("a"), status(A0_FAIL), PodActions(start=[start("a", 1)])),
    ("OnFailure restarts a failure", pod("a", policy="OnFailure"), status(A0_FAIL),
     PodActions(start=[start("a", 1)])),
    ("OnFailure leaves a success", pod("a", policy="OnFailure"), status(A0_OK), PodActions()),
    ("Never leaves a failure", pod("a", policy="Never"), status(A0_FAIL), PodActions()),
    ("Never leaves a success", pod("a", policy="Never"), status(A0_OK), PodActions()),
    ("the latest run counts", pod("a"), status(run("a", "exited", 1, attempt=0), run("a", attempt=1)),
     PodActions()),
    ("a restart is the next attempt", pod("a"), status(run("a", "exited", 1, attempt=0),
                                                       run("a", "exited", 1, attempt=1)),
     PodActions(start=[start("a", 2)])),
    # -- crash back-off
    ("backing off: wait, do not start", pod("a"), status(A0_FAIL, backoff={"a": 7.5}),
     PodActions(back_off=[BackOff("a", "a0", 7.5)])),
    ("back-off over: restart", pod("a"), status(A0_FAIL, backoff={"a": 0.0}),
     PodActions(start=[start("a", 1)])),
    ("back-off of a container that stays down does not matter", pod("a", policy="OnFailure"),
     status(A0_OK, backoff={"a": 7.5}), PodActions()),
    # -- init containers
    ("init containers first, one at a time", pod("a", init=("i", "j")), status(),
     PodActions(start=[start("i", init=True)])),
    ("init running: wait for it", pod("a", init=("i", "j")), status(I0_RUN), PodActions()),
    ("init done: the next one", pod("a", init=("i", "j")), status(I0_OK),
     PodActions(start=[start("j", init=True)])),
    ("all init done: the app containers", pod("a", "b", init=("i", "j")), status(I0_OK, J0_OK),
     PodActions(start=[start("a"), start("b")])),
    ("init failed: retried", pod("a", init=("i",)), status(I0_FAIL),
     PodActions(start=[start("i", 1, init=True)])),
    ("init failed, OnFailure: retried", pod("a", init=("i",), policy="OnFailure"), status(I0_FAIL),
     PodActions(start=[start("i", 1, init=True)])),
    ("init failed, Never: nothing (the pod fails)", pod("a", init=("i",), policy="Never"),
     status(I0_FAIL), PodActions()),
    ("init failed, backing off", pod("a", init=("i",)), status(I0_FAIL, backoff={"i": 3.0}),
     PodActions(back_off=[BackOff("i", "i0", 3.0)])),
    ("init not rerun once an app container ran", pod("a", init=("i",)), status(run("i", "exited", 1), A0),
     PodActions()),
    # -- kills: liveness, startup, a changed definition
    ("liveness failed: kill and restart", pod("a"), status(A0, unhealthy={"a0": "failed liveness probe"}),
     PodActions(kill=[KillContainer("a", "a0", "failed liveness probe", True)], start=[start("a", 1)])),
    ("startup failed, OnFailure: kill and restart", pod("a", policy="OnFailure"),
     status(A0, unhealthy={"a0": "failed startup probe"}),
     PodActions(kill=[KillContainer("a", "a0", "failed startup probe", True)], start=[start("a", 1)])),
    ("liveness failed, Never: kill only", pod("a", policy="Never"),
     status(A0, unhealthy={"a0": "failed liveness probe"}),
     PodActions(kill=[KillContainer("a", "a0", "failed liveness probe", False)])),
    ("liveness failed, backing off: kill, then wait", pod("a"),
     status(A0, unhealthy={"a0": "failed liveness probe"}, backoff={"a": 10.0}),
     PodActions(kill=[KillContainer("a", "a0", "failed liveness probe", True)],
                back_off=[BackOff("a", "a0", 10.0)])),
    ("image changed: restart whatever the policy", pod("a", policy="Never"), status(run("a", image="old", id="a0")),
     PodActions(kill=[KillContainer("a", "a0", "definition changed", True)], start=[start("a", 1)])),
    ("a verdict on an old run does not kill the new one", pod("a"),
     status(run("a", "exited", 1, id="x"), run("a", attempt=1, id="a1"), unhealthy={"x": "failed liveness probe"}),
     PodActions()),
    # -- volumes
    ("volumes not ready, nothing ran: wait for them", pod("a", init=("i",)), status(volumes_ready=False),
     PodActions(wait_for_volumes=True)),
    ("volumes not ready: no start, no restart", pod("a"), status(A0_FAIL, volumes_ready=False), PodActions()),
    ("volumes not ready: a running container stays", pod("a"), status(A0, volumes_ready=False), PodActions()),
]


@pytest.mark.parametrize("name, pod_, runtime, want", CASES, ids=[c[0] for c in CASES])
def test_compute_pod_actions(name, pod_, runtime, want):
    assert compute_pod_actions(pod_, runtime) == want


def test_pod_worker_states_follow_the_pods_life():
    w = PodWorker("u", pod("a"))
    assert w.state is PodState.SYNC
    w.to(PodState.COMPLETED)
    w.terminate()
    assert w.state is PodState.TERMINATING
    w.terminate()  # deleted again while stopping: nothing new
    assert w.state is PodState.TERMINATING
    w.to(PodState.TERMINATED)
    w.to(PodState.DONE)
    assert w.done


@pytest.mark.parametrize("start_, to", [
    (PodState.SYNC, PodState.DONE), (PodState.COMPLETED, PodState.SYNC),
    (PodState.TERMINATING, PodState.SYNC), (PodState.TERMINATED, PodState.COMPLETED),
])
def test_pod_worker_refuses_an_illegal_transition(start_, to):
    w = PodWorker("u", pod("a"))
    w.state = start_
    with pytest.raises(RuntimeError, match="no transition"):
        w.to(to)
