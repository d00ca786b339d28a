"""The supervisor (cluster/supervisor.py) and the state dir (cluster/state.py), with real
child processes and no cluster."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cluster import host
from cluster.state import ClusterConfig
from cluster.supervisor import Spec, Supervisor
from tests.procs import wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
STUBBORN = [sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('term-ignored', flush=True); time.sleep(600)"]


def ticking(sup, cond, timeout=10.0):
    return wait_for(lambda: (sup.tick(), cond())[1], timeout=timeout)


@pytest.fixture
def sup(tmp_path):
    s = Supervisor([Spec("a", SLEEPER, str(tmp_path / "logs" / "a.log")),
                    Spec("b", STUBBORN, str(tmp_path / "logs" / "b.log"), stop_grace=0.3)],
                   status_path=str(tmp_path / "status.json"), min_backoff=0.2, max_backoff=0.8)
    yield s
    s.stop_all(timeout=5)


def test_restarts_a_killed_component_with_backoff(sup):
    sup.want("a", "running")
    first = sup.procs["a"].popen.pid
    os.kill(first, signal.SIGKILL)
    ticking(sup, lambda: sup.procs["a"].state == "backoff")
    assert sup.procs["a"].last_exit == -signal.SIGKILL
    ticking(sup, lambda: sup.procs["a"].state == "running")
    assert sup.procs["a"].popen.pid != first and sup.procs["a"].restarts == 1
    # back-off doubles while it keeps dying, up to the maximum
    backoffs = []
    for _ in range(3):
        os.kill(sup.procs["a"].popen.pid, signal.SIGKILL)
        ticking(sup, lambda: sup.procs["a"].state == "backoff")
        backoffs.append(sup.procs["a"].backoff)
        ticking(sup, lambda: sup.procs["a"].state == "running")
    assert backoffs == [0.4, 0.8, 0.8]


def test_a_stopped_component_is_not_restarted_and_starts_again_on_request(sup):
    skew = [0.0]
    sup.clock = lambda: time.monotonic() + skew[0]
    sup.want("a", "running")
    pid = sup.procs["a"].popen.pid
    sup.want("a", "stopped")
    ticking(sup, lambda: sup.procs["a"].state == "stopped")
    assert not os.path.exists(f"/proc/{pid}") or host.start_time(pid) is None
    skew[0] += 10 * sup.max_backoff  # long past any back-off
    sup.tick()
    assert sup.procs["a"].state == "stopped" and sup.procs["a"].restarts == 0
    sup.want("a", "running")
    assert sup.procs["a"].state == "running"


def test_sigkill_after_the_grace_period_when_sigterm_is_ignored(sup):
    sup.want("b", "running")
    wait_for(lambda: b"term-ignored\n" in open(sup.procs["b"].spec.log_path, "rb").read())
    sup.want("b", "stopped")
    assert sup.procs["b"].state == "stopping"
    ticking(sup, lambda: sup.procs["b"].state == "stopped")
    assert sup.procs["b"].last_exit == -signal.SIGKILL


def test_status_file_and_logs(sup, tmp_path):
    sup.want("a", "running")
    st = json.loads((tmp_path / "status.json").read_text())
    a = st["components"]["a"]
    assert a["state"] == "running" and a["pid"] == sup.procs["a"].popen.pid
    assert host.alive(a["pid"], a["start"])
    assert st["components"]["b"]["state"] == "stopped"
    assert "minik8s: starting a" in (tmp_path / "logs" / "a.log").read_text()


def test_stop_all_in_order(sup):
    sup.want("a", "running")
    sup.want("b", "running")
    sup.stop_all(["b", "not-a-component"], timeout=5)
    assert sup.procs["a"].state == sup.procs["b"].state == "stopped"


def test_a_command_that_cannot_start_is_retried(tmp_path):
    s = Supervisor([Spec("x", ["/nonexistent/binary"], str(tmp_path / "x.log"))], min_backoff=0.1)
    s.want("x", "running")
    assert s.procs["x"].state == "backoff" and "cannot start" in s.procs["x"].error


def test_children_die_with_the_supervisor(tmp_path):
    """A kill -9 of the supervisor leaves no component behind (PR_SET_PDEATHSIG)."""
    code = (f"import sys, time; sys.path.insert(0, {os.getcwd()!r})\n"
            "from cluster.supervisor import Spec, Supervisor\n"
            f"s = Supervisor([Spec('a', {SLEEPER!r}, {str(tmp_path / 'a.log')!r})])\n"
            "s.want('a', 'running'); print(s.procs['a'].popen.pid, flush=True); time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(p.stdout.readline())
    start = host.start_time(child)
    p.kill()
    p.wait()
    wait_for(lambda: not host.alive(child, start), what="the child to die")


# -- the state dir -----------------------------------------------------------------------

def test_config_round_trip_and_names(tmp_path):
    cfg = ClusterConfig(state_dir=str(tmp_path), nodes=12, extra_args={"kubelet": ["--x=1"]})
    cfg.save()
    back = ClusterConfig.load(str(tmp_path))
    assert back == cfg
    other = ClusterConfig(state_dir=str(tmp_path / "other"))
    assert cfg.id != other.id and cfg.bridge != other.bridge
    for node in cfg.node_names():
        assert len(cfg.host_veth(node)) <= 15
    assert len(cfg.bridge) <= 15
    assert cfg.host_ip == "10.250.0.1"
    assert [cfg.node_ip(n) for n in cfg.node_names()[:2]] == ["10.250.0.2", "10.250.0.3"]
    assert ClusterConfig.load(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("kw, message", [
    ({"runtime": "docker"}, "unknown runtime"),
    ({"nodes": 0}, "at least 1"),
    ({"cluster_cidr": "10.0.0.0/8", "node_cidr": "10.250.0.0/24"}, "overlaps"),
    ({"nodes": 300}, "room for 253 nodes"),
    ({"cluster_cidr": "10.244.0.300/16"}, "does not appear to be"),
])
def test_invalid_configurations_are_one_line_errors(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        ClusterConfig(state_dir=str(tmp_path), **kw).validate()


def test_many_fake_nodes_need_no_node_network(tmp_path):
    ClusterConfig(state_dir=str(tmp_path), runtime="fake", nodes=1000).validate()
