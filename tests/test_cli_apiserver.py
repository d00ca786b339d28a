"""`minik8s apiserver` with no --etcd-servers runs and supervises its own etcd."""
import json
import os
import signal
import subprocess
import sys

import httpx

from tests.procs import APIServer, free_port, wait_for


def _etcd_child(pid: int) -> int:
    out = subprocess.run(["pgrep", "-P", str(pid), "-x", "etcd"], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out.strip() else 0


def test_local_etcd_is_started_supervised_and_stopped(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "apiserver", "--state-dir", str(tmp_path),
                             "--port", str(port), "--plain-http"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: httpx.get(url + "/readyz").status_code == 200, what="apiserver")
        assert os.path.isdir(tmp_path / "etcd" / "data")
        r = httpx.post(url + "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "kept"}})
        assert r.status_code == 201
        etcd_pid = _etcd_child(proc.pid)
        assert etcd_pid
        os.kill(etcd_pid, signal.SIGKILL)  # the supervisor restarts it with the same data
        wait_for(lambda: _etcd_child(proc.pid) not in (0, etcd_pid), what="etcd restart")
        wait_for(lambda: httpx.get(url + "/api/v1/namespaces/default/configmaps/kept").status_code == 200,
                 what="etcd back with its data")
        r = httpx.post(url + "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "after"}})
        assert r.status_code == 201, r.text
        etcd_pid = _etcd_child(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert "listening on" in out
    assert not os.path.exists(f"/proc/{etcd_pid}") or open(f"/proc/{etcd_pid}/stat").read().split()[2] == "Z"


def test_json_logging_writes_one_json_object_a_line(etcd):
    server = APIServer(etcd.url, "--logging-format=json", "-v", "3").start()
    try:
        with server.client() as c:
            assert c.get("/api/v1/namespaces/default/configmaps").status_code == 200
        wait_for(lambda: '"msg": "HTTP"' in server.log(), what="the request's log line")
    finally:
        server.stop()
    with open(server.logfile.name) as f:  # whole: server.log() is the tail, maybe mid-line
        lines = [json.loads(line) for line in f if line.strip()]
    assert any("listening on" in r["msg"] for r in lines)
    http = next(r for r in lines if r["msg"] == "HTTP" and r["URI"] == "/api/v1/namespaces/default/configmaps")
    assert (http["verb"], http["resp"], http["v"]) == ("LIST", 200, 3)
    assert all(isinstance(r["ts"], float) and r["caller"] for r in lines)


def test_verbosity_flag_is_checked():
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "apiserver", "-v", "x"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "invalid verbosity 'x'" in out.stderr


def test_endpoint_reconciler_interval_is_checked():
    """Shorter than the master lease (15 s) and more than nothing, or the server's own
    lease would lapse between its rounds: a usage error, nothing started."""
    for bad, why in (("20s", "less than the master lease's 15s"), ("0", "more than 0s"),
                     ("soon", "invalid duration 'soon'")):
        out = subprocess.run([sys.executable, "-m", "cluster.cli", "apiserver", "--plain-http",
                              "--endpoint-reconciler-interval", bad], capture_output=True, text=True)
        assert out.returncode == 2 and why in out.stderr and "Traceback" not in out.stderr, out.stderr
