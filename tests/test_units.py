"""cluster/units.py and cluster/layout.py: systemd unit files as rendered (systemd does not
run this machine), and the host supervisor path for real: a detached `minik8s
supervise-host` under a temporary MINIK8S_ROOT running real processes."""
import json
import os
import signal
import subprocess
import sys

import pytest

from cluster import host, units
from cluster.layout import Layout, current
from cluster.units import Unit
from tests.procs import wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_layout_hangs_off_minik8s_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MINIK8S_ROOT", raising=False)
    assert current().admin_conf == "/etc/minik8s/admin.conf"
    assert current().etcd_data == "/var/lib/minik8s/etcd"
    assert current().supervisor_lock == "/run/minik8s/supervisor.lock"
    monkeypatch.setenv("MINIK8S_ROOT", str(tmp_path))
    lay = current()
    assert lay.pki == f"{tmp_path}/etc/minik8s/pki"
    assert lay.kubelet_pki == f"{tmp_path}/var/lib/minik8s/kubelet/pki"
    assert lay.unit_spec("etcd") == f"{tmp_path}/etc/minik8s/units/etcd.json"
    assert lay.systemd_unit("kubelet") == f"{tmp_path}/etc/systemd/system/minik8s-kubelet.service"
    assert lay.log("etcd") == f"{tmp_path}/var/lib/minik8s/logs/etcd.log"
    assert lay.owned_dirs() == (f"{tmp_path}/etc/minik8s", f"{tmp_path}/var/lib/minik8s",
                                f"{tmp_path}/run/minik8s")


def test_systemd_unit_file():
    u = Unit("kubelet", ["/opt/venv/bin/python", "-m", "cluster.cli", "kubelet", "--node-labels",
                         "a=b c", "--x", "100%", "$HOME", 'say "hi"'], {"MINIK8S_ROOT": "/", "P": '50% "x"'})
    text = units.render_systemd(u)
    lines = text.splitlines()
    assert "[Unit]" in lines and "[Service]" in lines and "[Install]" in lines
    assert ("ExecStart=/opt/venv/bin/python -m cluster.cli kubelet --node-labels \"a=b c\" "
            "--x 100%% $$HOME \"say \\\"hi\\\"\"") in lines
    assert "Restart=always" in lines and "RestartSec=5" in lines
    assert "KillMode=process" in lines           # pods outlive a kubelet restart
    assert "Delegate=yes" in lines
    assert "Wants=network-online.target" in lines
    assert ("After=network-online.target minik8s-kube-apiserver.service "
            "minik8s-apiserver-lb.service") in lines
    assert 'Environment="MINIK8S_ROOT=/"' in lines
    assert 'Environment="P=50%% \\"x\\""' in lines
    assert "WantedBy=multi-user.target" in lines
    etcd = units.render_systemd(Unit("etcd", ["/usr/bin/etcd"])).splitlines()
    assert "After=network-online.target" in etcd and "KillMode=mixed" in etcd
    api = units.render_systemd(Unit("kube-apiserver", ["x"])).splitlines()
    assert "After=network-online.target minik8s-etcd.service" in api


def test_systemd_is_detected_under_the_root(tmp_path):
    lay = Layout(str(tmp_path))
    assert not units.systemd_runs(lay)
    os.makedirs(tmp_path / "run" / "systemd" / "system")
    assert units.systemd_runs(lay)


def _pid(lay, name):
    c = units.status(lay).get("components", {}).get(name) or {}
    return c.get("pid") if c.get("state") == "running" else None


@pytest.fixture
def lay(tmp_path):
    lay = Layout(str(tmp_path))
    yield lay
    units.stop_supervisor(lay, wait=20)


def test_host_supervisor_runs_restarts_reloads_and_removes_units(lay):
    # Started from a session of its own that then goes away, as `init` over SSH does.
    code = ("import sys; from cluster import units; from cluster.layout import Layout; "
            f"units.install([units.Unit('a', {SLEEPER!r}), units.Unit('b', {SLEEPER!r}, {{'X': '1'}})], "
            f"Layout({lay.root!r}))")
    starter = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    assert starter.wait(60) == 0
    if _group_alive(starter.pid):   # the session's end: whatever is left in it is killed
        os.killpg(starter.pid, signal.SIGKILL)
    sup = units.supervisor_pid(lay)
    assert sup and host.start_time(sup) is not None
    assert os.getsid(sup) == sup                     # its own session
    assert _ppid(sup) != starter.pid and _ppid(sup) != os.getpid()
    assert sorted(units.installed(lay)) == ["a", "b"]
    a, b = wait_for(lambda: _pid(lay, "a")), wait_for(lambda: _pid(lay, "b"))
    assert _environ(b).get("X") == "1"
    assert os.path.exists(lay.log("a"))

    # one instance only
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "supervise-host"], capture_output=True,
                       text=True, env={**os.environ, "MINIK8S_ROOT": lay.root}, timeout=30)
    assert r.returncode == 1 and "already runs" in r.stderr and units.supervisor_pid(lay) == sup

    # a unit that dies is restarted
    os.kill(a, signal.SIGKILL)
    a2 = wait_for(lambda: (p := _pid(lay, "a")) and p != a and p, timeout=15)
    assert units.status(lay)["components"]["a"]["restarts"] == 1
    a2_start = host.start_time(a2)

    # a changed unit restarts with its new spec; an unchanged one is left alone
    units.install([Unit("a", SLEEPER, {"GEN": "2"}), Unit("b", SLEEPER, {"X": "1"})], lay)
    a3 = wait_for(lambda: _pid(lay, "a"))
    assert a3 != a2 and not host.alive(a2, a2_start) and _environ(a3).get("GEN") == "2"
    assert _pid(lay, "b") == b

    # a removed unit is stopped (its process gone) and forgotten
    b_start = host.start_time(b)
    assert units.remove(["b"], lay) == ["b"]
    assert not host.alive(b, b_start)
    assert "b" not in units.status(lay)["components"] and sorted(units.installed(lay)) == ["a"]
    assert units.remove(["nope"], lay) == []

    # the last one removed: the supervisor goes too
    a3_start = host.start_time(a3)
    assert units.remove(None, lay) == ["a"]
    assert not host.alive(a3, a3_start)
    assert units.supervisor_pid(lay) is None and not os.path.exists(lay.supervisor_status)


def test_units_are_reread_on_sighup(lay):
    units.install([Unit("a", SLEEPER)], lay)
    with open(lay.unit_spec("c"), "w") as f:
        json.dump(Unit("c", SLEEPER).to_json(), f)
    os.kill(units.supervisor_pid(lay), signal.SIGHUP)
    c = wait_for(lambda: _pid(lay, "c"))
    os.unlink(lay.unit_spec("c"))
    start = host.start_time(c)
    os.kill(units.supervisor_pid(lay), signal.SIGHUP)
    wait_for(lambda: not host.alive(c, start), timeout=15)
    # SIGTERM to the supervisor stops every unit
    a = _pid(lay, "a")
    a_start = host.start_time(a)
    units.stop_supervisor(lay)
    assert not host.alive(a, a_start)


def test_bad_units_are_refused_before_anything_is_written(lay):
    with pytest.raises(units.UnitError):
        units.install([Unit("a", SLEEPER), Unit("x/y", SLEEPER)], lay)
    with pytest.raises(units.UnitError):
        units.install([Unit("a", [])], lay)
    assert units.installed(lay) == {} and units.supervisor_pid(lay) is None


def _ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def _environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(e.decode().split("=", 1) for e in f.read().split(b"\0") if b"=" in e)


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
