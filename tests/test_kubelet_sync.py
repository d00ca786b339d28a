"""The kubelet's pod logic: status and phase rules, env expansion, the crash back-off as
tables; then the crash back-off end to end with an injected clock (an in-process
kubelet running a real pod against the real API server, the clock stepped by the test).
"""
import asyncio
import os
import uuid

import pytest

from client.clock import FakeClock
from client.rest import Client
from kubelet import envvars
from kubelet.backoff import Backoff
from kubelet.kubelet import Kubelet, PodWorker, _only_our_status, pod_resources
from kubelet.runtime import ContainerStatus, Resources
from kubelet.runtime.linux.cgroups import Cgroup
from kubelet.runtime.linux.runtime import LinuxRuntime
from kubelet.status import ContainerView, conditions, container_status, phase, with_transition_times
from tests.procs import root_ca_configmap, wait_for
from tests.test_kubelet_runtime import free_cidr


def run(state, exit_code=None, attempt=0, reason=""):
    return ContainerStatus(id=uuid.uuid4().hex[:16], pod_uid="u", name="c", attempt=attempt, image="i",
                           state=state, started_at=1.0, finished_at=2.0 if state == "exited" else None,
                           exit_code=exit_code, reason=reason)


def view(*runs, waiting=None, name="c"):
    return ContainerView(name, "i", list(runs), waiting=waiting)


RUNNING, OK, FAILED = run("running"), run("exited", 0), run("exited", 1)
BACKOFF = ("CrashLoopBackOff", "back-off 10s")


@pytest.mark.parametrize("name, init, app, policy, terminal, want", [
    ("nothing started", [], [view()], "Always", False, "Pending"),
    ("init running", [view(RUNNING)], [view()], "Always", False, "Pending"),
    ("init failed, Never", [view(FAILED)], [view()], "Never", False, "Failed"),
    ("init failed, retried", [view(FAILED, waiting=BACKOFF)], [view()], "OnFailure", False, "Pending"),
    ("running", [view(OK)], [view(RUNNING)], "Always", False, "Running"),
    ("one of two started", [], [view(RUNNING), view()], "Always", False, "Pending"),
    ("crashed, Always", [], [view(FAILED, waiting=BACKOFF)], "Always", False, "Running"),
    ("completed, Always", [], [view(OK)], "Always", False, "Running"),
    ("completed, OnFailure", [], [view(OK)], "OnFailure", False, "Succeeded"),
    ("failed, OnFailure", [], [view(FAILED, waiting=BACKOFF)], "OnFailure", False, "Running"),
    ("failed, Never", [], [view(FAILED), view(OK)], "Never", False, "Failed"),
    ("one still running, Never", [], [view(FAILED), view(RUNNING)], "Never", False, "Running"),
    ("deleted, killed", [], [view(run("exited", 137))], "Always", True, "Failed"),
    ("deleted, exited cleanly", [], [view(OK)], "Always", True, "Succeeded"),
])
def test_phase_follows_get_phase(name, init, app, policy, terminal, want):
    assert phase(init, app, policy, terminal=terminal) == want


def test_container_status_shapes():
    prev, cur = run("exited", 1, attempt=0, reason="Error"), run("running", attempt=1)
    s = container_status(ContainerView("c", "busybox", [prev, cur], ready=True, started=True))
    assert s["state"] == {"running": {"startedAt": "1970-01-01T00:00:01Z"}}
    assert (s["restartCount"], s["ready"], s["containerID"]) == (1, True, "minik8s://" + cur.id)
    assert s["lastState"]["terminated"]["exitCode"] == 1
    s = container_status(ContainerView("c", "busybox", [prev], waiting=BACKOFF))
    assert s["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
    assert "containerID" not in s and s["lastState"]["terminated"]["reason"] == "Error"
    oom = run("exited", 137, reason="OOMKilled")
    s = container_status(ContainerView("c", "busybox", [oom]))
    assert s["state"]["terminated"]["reason"] == "OOMKilled" and s["lastState"] == {}
    assert container_status(ContainerView("c", "b"), default_waiting="PodInitializing")["state"] == \
        {"waiting": {"reason": "PodInitializing"}}


def test_conditions_and_transition_times():
    unready = view(RUNNING)
    conds = {c["type"]: c for c in conditions("Running", [view(OK, name="i")], [unready], sandbox_ready=True)}
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "ContainersNotReady"
    assert conds["Ready"]["message"] == "containers with unready status: [c]"
    assert conds["Initialized"]["status"] == "True" and conds["PodScheduled"]["status"] == "True"
    done = {c["type"]: c for c in conditions("Succeeded", [], [view(OK)], sandbox_ready=False)}
    assert done["Ready"]["reason"] == "PodCompleted" and done["PodReadyToStartContainers"]["status"] == "False"
    old = [{"type": "Ready", "status": "False", "lastTransitionTime": "T0"},
           {"type": "PodScheduled", "status": "True", "lastTransitionTime": "T0"},
           {"type": "DisruptionTarget", "status": "True", "lastTransitionTime": "T0"}]
    new = with_transition_times([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
                                old, "T1")
    assert [(c["type"], c["lastTransitionTime"]) for c in new] == \
        [("Ready", "T1"), ("PodScheduled", "T0"), ("DisruptionTarget", "T0")]


def test_env_expansion_and_references():
    assert envvars.expand("$(A)-$(B)-$$(A)-$(A", {"A": "1"}) == "1-$(B)-$(A)-$(A"
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web"}},
           "spec": {"nodeName": "n1"}}
    objects = {("configmaps", "ns", "cm"): {"data": {"k": "v"}},
               ("secrets", "ns", "s"): {"data": {"pw": "aHVudGVyMg=="}}}
    c = {"name": "c", "command": ["echo", "$(GREETING)"], "args": ["$(POD_IP)"],
         "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
         "env": [{"name": "GREETING", "value": "hi $(CM_k)"},
                 {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                 {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                 {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                 {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                 {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                    "divisor": "1Mi"}}},
                 {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "none", "key": "x",
                                                                   "optional": True}}}],
         "resources": {"limits": {"memory": "64Mi"}}}
    env, command, args = envvars.resolve(c, pod, get_object=lambda *k: objects.get(k), pod_ip="10.0.0.5",
                                         host_ip="192.168.0.1")
    assert env == {"CM_k": "v", "GREETING": "hi v", "POD_IP": "10.0.0.5", "NODE": "n1", "APP": "web",
                   "PW": "hunter2", "MEM": "64"}
    assert (command, args) == (["echo", "hi v"], ["10.0.0.5"])
    missing = {"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nope"}}}]}
    with pytest.raises(envvars.ConfigError, match="couldn't find key nope in ConfigMap ns/cm"):
        envvars.resolve(missing, pod, get_object=lambda *k: objects.get(k), pod_ip=None, host_ip=None)
    gone = {"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]}
    with pytest.raises(envvars.ConfigError, match='secret "gone" not found'):
        envvars.resolve(gone, pod, get_object=lambda *k: objects.get(k), pod_ip=None, host_ip=None)


def test_backoff_doubles_caps_and_resets():
    now = [0.0]
    b = Backoff(lambda: now[0])
    assert b.remaining("k", 0.0) == 0  # the first restart is immediate
    delays = []
    for _ in range(7):
        b.next("k", now[0])
        delays.append(b.delay("k"))
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert b.remaining("k", now[0]) == 300
    now[0] = 601.0  # nothing for ten minutes: start over
    assert b.remaining("k", 0.0) == 0
    b.next("k", now[0])
    assert b.delay("k") == 10


def test_only_other_changes_than_the_workers_own_status_write_wake_it():
    pod = {"metadata": {"name": "p", "uid": "u", "resourceVersion": "5", "labels": {"a": "1"}},
           "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}}
    ours = {"phase": "Running", "podIP": "10.0.0.2", "lastState": None}
    w = PodWorker("u", pod)

    def seen(rv="6", labels=None, status=ours, spec=None):
        return {"metadata": {**pod["metadata"], "resourceVersion": rv, "labels": labels or {"a": "1"}},
                "spec": spec or pod["spec"], "status": {k: v for k, v in status.items() if v is not None}}

    assert not _only_our_status(w, seen())        # nothing written yet: any change counts
    w.writing = ours
    assert _only_our_status(w, seen())            # the echo arrived before the write's answer
    w.writing, w.written = None, ours
    assert _only_our_status(w, seen())
    assert not _only_our_status(w, seen(status={"phase": "Failed", "reason": "Evicted"}))
    assert not _only_our_status(w, seen(labels={"a": "2"}))
    assert not _only_our_status(w, seen(spec={"containers": [{"name": "c", "image": "new"}]}))


def test_pod_resources_take_init_containers_into_account():
    spec = {"containers": [{"resources": {"limits": {"memory": "100Mi", "cpu": "1"}, "requests": {"cpu": "200m"}}},
                           {"resources": {"limits": {"memory": "50Mi", "cpu": "1"}}}],
            "initContainers": [{"resources": {"limits": {"memory": "1Gi", "cpu": "500m"}, "requests": {"cpu": "1"}}}]}
    assert pod_resources(spec) == Resources(cpu_request_milli=1000, cpu_limit_milli=2000, memory_limit=1 << 30)
    spec["initContainers"].append({})
    assert pod_resources(spec).memory_limit is None


# -- the back-off with a real pod and an injected clock --------------------------------------

pytestmark_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs a real pod: needs root")


async def until(pred, timeout=30.0, what="condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def kubelet(request, apiserver, tmp_path, http, ns):
    """(kubelet, its clock, a client); the runtime is a LinuxRuntime, or the subclass of
    it a test passes as the fixture's (indirect) parameter."""
    runtime_class = getattr(request, "param", LinuxRuntime)
    root_ca_configmap(http, ns)  # the pods' token volumes project it (no controller manager here)
    tag = uuid.uuid4().hex[:8]
    # pyroute2's IPRoute cannot run on a thread with a running event loop: netlink work
    # happens on other threads, as the kubelet's runtime calls do.
    rt = runtime_class(str(tmp_path / "node"), pod_cidr=await asyncio.to_thread(free_cidr),
                      bridge=f"mk8st{tag}", cgroup_parent=f"minik8s-test-{tag}")
    client = Client(apiserver.connection())
    clock = FakeClock(start=1000.0)
    kl = Kubelet(client, rt, node_name=f"sync-{tag}", node_ip="127.0.0.1", clock=clock, pleg_period=0.1)
    try:
        await kl.start()
        yield kl, clock, client
    finally:
        await kl.stop()
        await client.close()

        def clean():
            for uid in os.listdir(rt.pods_dir):
                rt.remove_pod(uid)
            rt.cleanup_orphans(keep=[])
            rt.network.delete_bridge()
            Cgroup(rt.cgroups.dirs, v2=rt.cgroups.v2).remove()
            rt.close()
        await asyncio.to_thread(clean)


@pytestmark_root
async def test_crash_loop_back_off_doubles_and_resets_on_the_kubelet_clock(kubelet, ns, tmp_path):
    kl, clock, client = kubelet
    crash = tmp_path / "crash"
    crash.mkdir()
    await client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crasher", "namespace": ns},
                         "spec": {"nodeName": kl.node_name, "restartPolicy": "Always",
                                  "terminationGracePeriodSeconds": 0,
                                  "volumes": [{"name": "ctl", "hostPath": {"path": str(crash)}}],
                                  "containers": [{"name": "c", "image": "busybox", "volumeMounts": [
                                      {"name": "ctl", "mountPath": "/ctl"}], "command": [
                                      "sh", "-c",
                                      "while [ ! -e /ctl/go ]; do sleep 0.02; done; rm /ctl/go; exit 1"]}]}})

    async def state():
        pod = await client.get("pods", "crasher", namespace=ns)
        cs = (pod.get("status") or {}).get("containerStatuses") or [{}]
        return cs[0].get("restartCount"), cs[0].get("state") or {}

    async def crash_and_see(restarts, state_key, message=None):
        (crash / "go").touch()
        await see(restarts, state_key, message)

    async def see(restarts, state_key, message=None):
        async def check():
            n, st = await state()
            if n != restarts or state_key not in st:
                return False
            return message is None or st[state_key].get("message", "").startswith(message)
        await until(check, what=f"restartCount {restarts}, {state_key} {message or ''}")

    async def sync_now():
        """Let the pod's worker sync once more at the current clock time."""
        (w,) = kl.workers.values()
        n = w.syncs
        w.wake.set()

        async def synced():
            return w.syncs > n
        await until(synced, what="a sync")

    await see(0, "running")
    await crash_and_see(1, "running")                    # the first restart is immediate
    await crash_and_see(1, "waiting", "back-off 10s")
    n, st = await state()
    assert st["waiting"]["reason"] == "CrashLoopBackOff"
    clock.step(9.9)
    await sync_now()
    assert await state() == (1, st)                      # not before the back-off ends
    clock.step(0.2)
    await see(2, "running")
    await crash_and_see(2, "waiting", "back-off 20s")   # doubled
    clock.step(20)
    await see(3, "running")
    clock.step(601)                                      # it ran ten minutes without crashing
    await crash_and_see(4, "running")                    # so it restarts at once
    await crash_and_see(4, "waiting", "back-off 10s")   # and the back-off starts over
    events = (await client.list("events", namespace=ns))["items"]
    assert any(e["reason"] == "BackOff" and e["type"] == "Warning" for e in events)


class ExitsBeforeItsStartReturns(LinuxRuntime):
    """start_container returns only once the container it started has exited: what a
    loaded node does to a quick command when the kubelet's thread gets the CPU back
    after the command has ended."""

    def start_container(self, uid, config):
        run = super().start_container(uid, config)
        return wait_for(lambda: (st := self.container_status(run.id)) is not None and st.state == "exited" and st,
                        what=f"container {run.id} to exit")


@pytestmark_root
@pytest.mark.parametrize("kubelet", [ExitsBeforeItsStartReturns], indirect=True)
async def test_a_container_that_exited_before_its_start_returned_was_started_not_failed(kubelet, ns):
    kl, _clock, client = kubelet
    await client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "quick", "namespace": ns},
                         "spec": {"nodeName": kl.node_name, "restartPolicy": "Never",
                                  "terminationGracePeriodSeconds": 0,
                                  "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}})

    async def reasons():
        return [(e["type"], e["reason"], e["message"]) for e in (await client.list("events", namespace=ns))["items"]
                if e["involvedObject"]["name"] == "quick"]

    async def started():
        return any(r == "Started" for _, r, _ in await reasons())
    await until(started, what="the Started event of quick")
    assert ("Normal", "Created", "Created container c") in await reasons()
    assert not [e for e in await reasons() if e[0] == "Warning" and e[1] == "Failed"]

    async def succeeded():
        p = await client.get("pods", "quick", namespace=ns)
        return (p.get("status") or {}).get("phase") == "Succeeded" and p
    p = await until(succeeded, what="quick Succeeded")
    terminated = p["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "Completed" and terminated["exitCode"] == 0
