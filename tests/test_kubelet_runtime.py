"""LinuxRuntime with real pods: real processes in real namespaces, cgroups and veths.

Each test gets its own node: a state dir under tmp_path, a bridge, a cgroup parent and
a pod CIDR that nothing else on the machine uses, and removes all of it afterwards,
even on failure. Traffic only goes to pod IPs on that bridge. Waits are polls with
timeouts that only catch hangs.
"""
import errno
import http.client
import ipaddress
import json
import os
import random
import re
import socket
import signal
import subprocess
import sys
import threading
import uuid

import pytest
from pyroute2 import IPRoute

from kubelet.probes import run_probe
from kubelet.runtime import (ContainerConfig, CreateContainerError, Mount, PodSandboxConfig,
                             Resources, logs)
from kubelet.runtime.linux import kernel, netlink
from kubelet.runtime.linux.cgroups import Cgroup
from kubelet.runtime.linux.network import veth_name
from kubelet.runtime.linux.runtime import SANDBOX_MEMORY_OVERHEAD, LinuxRuntime
from tests.procs import wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="runs real pods: needs root for namespaces, cgroups and veths")

CRI_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) [FP] ")
SLEEP = ["sleep", "infinity"]


def free_cidr() -> str:
    """A /24 in 10.200.0.0-10.250.255.0 that overlaps no address or route of the machine."""
    with IPRoute() as ipr:
        used = [ipaddress.ip_network(f"{r.get('dst')}/{r.get('dst_len')}", strict=False)
                for r in ipr.get_routes(family=socket.AF_INET) if r.get("dst")]
        used += [ipaddress.ip_interface(f"{a.get('address')}/{a.get('prefixlen')}").network
                 for a in ipr.get_addr(family=socket.AF_INET)]
    for _ in range(1000):
        net = ipaddress.ip_network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise RuntimeError("no free /24 for a test pod network")


@pytest.fixture
def node_args(tmp_path):
    tag = uuid.uuid4().hex[:8]
    return dict(root_dir=str(tmp_path / "node"), pod_cidr=free_cidr(), bridge=f"mk8st{tag}",
                cgroup_parent=f"minik8s-test-{tag}")


@pytest.fixture
def node(node_args):
    rt = LinuxRuntime(**node_args)
    try:
        yield rt
    finally:
        for uid in os.listdir(rt.pods_dir):
            rt.remove_pod(uid)
        rt.cleanup_orphans(keep=[])
        rt.network.delete_bridge()
        Cgroup(rt.cgroups.dirs, v2=rt.cgroups.v2).remove()
        rt.close()


def new_pod(rt, name, **kw):
    uid = str(uuid.uuid4())
    rt.run_pod_sandbox(PodSandboxConfig(uid=uid, name=name, **kw))
    return uid


def start(rt, uid, name, command, **kw):
    return rt.start_container(uid, ContainerConfig(name=name, image="host", command=command, **kw))


def sh(rt, cid, script) -> str:
    r = rt.exec_sync(cid, ["sh", "-c", script], timeout=30)
    assert r.exit_code == 0, (script, r)
    return r.stdout.decode()


def exited(rt, cid):
    return wait_for(lambda: (s := rt.container_status(cid)).state == "exited" and s,
                    what=f"container {cid} to exit")


def host_processes(marker: str) -> list[int]:
    """Live processes on the node whose command line contains marker."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker.encode() in cmdline and kernel.start_time(int(pid)) is not None:
            found.append(int(pid))
    return found


def msqids(ipcs_output: str) -> list[str]:
    return [line.split()[1] for line in ipcs_output.splitlines() if line.startswith("0x")]


def http_get_from_node(ip, port, path):
    """From the node itself, not through any proxy."""
    conn = http.client.HTTPConnection(ip, port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def state_of(rt, uid, cid=None) -> dict:
    """The runtime's own record (see the layout in kubelet/runtime/linux/runtime.py)."""
    path = (os.path.join(rt.pods_dir, uid, "sandbox.json") if cid is None
            else os.path.join(rt.pods_dir, uid, "containers", cid, "state.json"))
    with open(path) as f:
        return json.load(f)


def test_containers_of_a_pod_share_volume_hostname_loopback_and_ipc(node):
    uid = new_pod(node, "web")
    shared = node.setup_volume(uid, {"name": "shared", "emptyDir": {}})
    server = start(node, uid, "server", [
        "sh", "-c", "echo hello > /data/greeting; ipcmk -Q | tr -dc 0-9 > /data/queue-id; "
                    "exec python3 -m http.server 8080 --bind 127.0.0.1 --directory /data"],
                   mounts=[Mount(shared, "/data")])
    client = start(node, uid, "client", SLEEP, mounts=[Mount(shared, "/shared")])
    other = start(node, new_pod(node, "other"), "main", SLEEP)

    queue = wait_for(lambda: sh(node, client.id, "cat /shared/queue-id"), what="the server's files")
    assert sh(node, client.id, "cat /shared/greeting") == "hello\n"
    assert sh(node, server.id, "hostname") == sh(node, client.id, "cat /etc/hostname") == "web\n"
    assert sh(node, other.id, "hostname") == "other\n"
    fetch = ("python3 -c \"import urllib.request as u; "
             "print(u.urlopen('http://127.0.0.1:8080/greeting').read().decode(), end='')\"")
    assert wait_for(lambda: sh(node, client.id, fetch), what="the server on 127.0.0.1") == "hello\n"
    assert queue in msqids(sh(node, client.id, "ipcs -q"))
    assert msqids(sh(node, other.id, "ipcs -q")) == []

    def ns(cid, kind):
        return sh(node, cid, f"readlink /proc/self/ns/{kind}")
    for kind in ("net", "uts", "ipc"):
        assert ns(server.id, kind) == ns(client.id, kind) != ns(other.id, kind)
        assert ns(client.id, kind) != os.readlink(f"/proc/self/ns/{kind}") + "\n"
    for kind in ("mnt", "pid"):
        assert ns(server.id, kind) != ns(client.id, kind)


def test_processes_are_private_to_a_container_unless_the_pod_shares_them(node):
    marker = f"marker-{uuid.uuid4().hex}"
    hold = ["python3", "-c", "import time; time.sleep(1000)", marker]
    uid = new_pod(node, "a")
    owner = start(node, uid, "owner", hold)
    sibling = start(node, uid, "sibling", SLEEP)
    stranger = start(node, new_pod(node, "b"), "main", SLEEP)
    shared_uid = new_pod(node, "c", share_process_namespace=True)
    shared_owner = start(node, shared_uid, "owner", hold + ["shared"])
    shared_peer = start(node, shared_uid, "peer", SLEEP)

    def cmdlines(cid):
        return sh(node, cid, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert marker in sh(node, owner.id, "tr '\\0' ' ' < /proc/1/cmdline")  # it is PID 1
    assert marker not in cmdlines(sibling.id)
    assert marker not in cmdlines(stranger.id)
    assert f"{marker} shared" in cmdlines(shared_peer.id)
    assert len(host_processes(marker)) == 2
    assert shared_owner.state == "running"


@pytest.mark.parametrize("share", [False, True], ids=["own-pid-ns", "pod-pid-ns"])
def test_everything_a_container_started_dies_with_its_first_process(node, share):
    marker = f"child-{uuid.uuid4().hex}"
    uid = new_pod(node, "p", share_process_namespace=share)
    c = start(node, uid, "main", ["sh", "-c", f"python3 -c 'import time; time.sleep(1000)' {marker} & "
                                              "while [ ! -e /tmp/stop ]; do sleep 0.02; done"])
    wait_for(lambda: host_processes(marker), what="the child process")
    sh(node, c.id, "touch /tmp/stop")
    assert exited(node, c.id).exit_code == 0
    wait_for(lambda: not host_processes(marker), what="the child to die")


def test_pods_reach_each_other_and_the_node_reaches_them_by_ip(node):
    a_uid, b_uid = new_pod(node, "a"), new_pod(node, "b")
    start(node, a_uid, "server", ["sh", "-c", "echo pod-a > /tmp/who; "
                                              "exec python3 -m http.server 8080 --directory /tmp"])
    client = start(node, b_uid, "client", SLEEP)
    a_ip, b_ip = node.pod_sandbox_status(a_uid).ip, node.pod_sandbox_status(b_uid).ip
    net = ipaddress.ip_network(node.network.net)
    assert a_ip != b_ip
    assert {ipaddress.ip_address(a_ip), ipaddress.ip_address(b_ip)} <= set(net.hosts()) - {net[1]}
    fetch = (f"python3 -c \"import urllib.request as u; "
             f"print(u.urlopen('http://{a_ip}:8080/who').read().decode(), end='')\"")
    assert wait_for(lambda: sh(node, client.id, fetch), what="pod a from pod b") == "pod-a\n"
    assert http_get_from_node(a_ip, 8080, "/who") == "pod-a\n"
    assert sh(node, client.id, "ip -4 -o addr show eth0").split()[3] == f"{b_ip}/{net.prefixlen}"
    assert f"default via {net[1]}" in sh(node, client.id, "ip route")


def test_memory_limit_gets_the_container_oom_killed(node):
    limit = 64 * 1024 * 1024
    uid = new_pod(node, "hog", resources=Resources.pod_total([Resources(memory_limit=limit)]))
    c = start(node, uid, "hog", ["python3", "-c", "b = b'x' * (512 << 20)"],
              resources=Resources(memory_limit=limit))
    st = exited(node, c.id)
    assert (st.reason, st.exit_code, st.oom_killed) == ("OOMKilled", 137, True)


def test_resources_map_to_cgroup_files(node):
    res = Resources(cpu_request_milli=250, cpu_limit_milli=500, memory_limit=128 << 20)
    uid = new_pod(node, "sized", resources=Resources.pod_total([res, res]))
    c = start(node, uid, "main", SLEEP, resources=res)
    if node.cgroups.v2:
        pytest.skip("checks cgroup v1 file names")

    def read(cgroup, name):
        path = next(os.path.join(d, name) for d in cgroup.dirs if os.path.exists(os.path.join(d, name)))
        with open(path) as f:
            return int(f.read())
    container, pod = node.cgroups.cgroup(f"pod{uid}", c.id), node.cgroups.cgroup(f"pod{uid}")
    assert read(container, "cpu.shares") == 256
    assert (read(container, "cpu.cfs_quota_us"), read(container, "cpu.cfs_period_us")) == (50000, 100000)
    assert read(container, "memory.limit_in_bytes") == 128 << 20
    assert read(pod, "cpu.shares") == 512 and read(pod, "cpu.cfs_quota_us") == 100000
    assert read(pod, "memory.limit_in_bytes") == (256 << 20) + SANDBOX_MEMORY_OVERHEAD
    assert f"pod{uid}/{c.id}" in sh(node, c.id, "cat /proc/1/cgroup")


def test_exec_gives_output_exit_code_and_stdin_in_the_container(node):
    uid = new_pod(node, "box")
    c = start(node, uid, "main", SLEEP, env={"GREETING": "hi"}, working_dir="/work-dir")
    r = node.exec_sync(c.id, ["sh", "-c", "echo out; echo err >&2; echo $GREETING; pwd; exit 3"])
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"out\nhi\n/work-dir\n", b"err\n")
    p = node.exec(c.id, ["cat"], stdin=True)
    assert p.communicate(b"ping", timeout=30) == (b"ping", b"") and p.returncode == 0
    assert node.exec_sync(c.id, ["no-such-command"]).exit_code == 127
    assert "sleep" in sh(node, c.id, "cat /proc/1/cmdline")  # the container's PID namespace
    assert c.id in sh(node, c.id, "cat /proc/self/cgroup")  # and its cgroup

    marker = f"exec-{uuid.uuid4().hex}"
    with pytest.raises(TimeoutError):
        node.exec_sync(c.id, ["python3", "-c", "import time; time.sleep(1000)", marker], timeout=0.5)
    wait_for(lambda: not host_processes(marker), what="the timed out command to be killed")


def test_exec_is_forked_by_the_fork_server_and_can_be_killed(node):
    uid = new_pod(node, "forked")
    c = start(node, uid, "main", SLEEP)

    def ppid(pid):
        with open(f"/proc/{pid}/status") as f:
            return int(next(line for line in f if line.startswith("PPid:")).split()[1])

    p = node.exec(c.id, ["sh", "-c", "read line; echo got $line; exit 5"], stdin=True)
    assert not isinstance(p, subprocess.Popen)
    # The command's parent is the server's forked helper, not a new interpreter.
    assert ppid(ppid(p.pid)) == node._forks.pid
    assert p.poll() is None
    assert p.communicate(b"ping\n", timeout=30) == (b"got ping\n", b"") and p.returncode == 5

    p = node.exec(c.id, ["sleep", "1000"])
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(0.2)
    p.kill()
    assert p.wait(30) == 128 + signal.SIGKILL
    p.kill()  # collected: nothing to signal any more
    assert p.stdout.read() == b"" and p.stderr.read() == b""
    wait_for(lambda: not os.path.exists(f"/proc/{p.pid}"), what="the command to be reaped")

    p = node.exec(c.id, ["sleep", "1000"])
    p.terminate()
    assert p.wait(30) == 128 + signal.SIGTERM

    node._forks.close()  # a fork server that is gone is started again
    assert node.exec_sync(c.id, ["sh", "-c", "exit 7"]).exit_code == 7


def test_logs_are_cri_files_read_with_tail_previous_and_follow(node):
    uid = new_pod(node, "talker")
    first = start(node, uid, "main", ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; echo oops >&2"])
    st = exited(node, first.id)
    assert (st.reason, st.exit_code) == ("Completed", 0)
    raw = open(first.log_path, "rb").read().splitlines()
    assert len(raw) == 6 and all(CRI_LINE.match(line) for line in raw)
    assert [line.split(b" ", 3)[1] for line in raw].count(b"stderr") == 1
    assert list(logs.read_log(first.log_path, tail=2)) == [b"line 5\n", b"oops\n"]

    second = start(node, uid, "main", ["sh", "-c", "echo second run; exec sleep infinity"], attempt=1)
    assert second.log_path != first.log_path  # --previous reads the first one, still there
    assert b"".join(logs.read_log(first.log_path)) == b"line 1\nline 2\nline 3\nline 4\nline 5\noops\n"
    got = []
    follower = threading.Thread(target=lambda: got.extend(logs.read_log(
        second.log_path, follow=True, poll=0.02,
        running=lambda: node.container_status(second.id).running)))
    follower.start()
    wait_for(lambda: got, what="the followed line")
    node.stop_container(second.id, grace_period=0)
    follower.join(30)
    assert not follower.is_alive() and got == [b"second run\n"]


def test_volumes_configmap_updates_in_place_readonly_subpath_and_tmpfs(node):
    uid = new_pod(node, "vols")
    config = node.setup_volume(uid, {"name": "config", "configMap": {"name": "app"}},
                               data={"greeting": "hello"})
    scratch = node.setup_volume(uid, {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
    token = node.setup_volume(uid, {"name": "token", "secret": {"secretName": "s", "defaultMode": 0o400}},
                              data={"token": b"s3cret"})
    had_run_secrets = os.path.exists("/run/secrets")
    c = start(node, uid, "main", SLEEP, mounts=[
        Mount(config, "/etc/app", read_only=True), Mount(scratch, "/scratch"),
        Mount(scratch, "/sub", sub_path="nested/dir"),
        # /var/run is a symlink to /run: it must resolve inside the container's root
        Mount(token, "/var/run/secrets/app", read_only=True)])

    assert sh(node, c.id, "cat /etc/app/greeting") == "hello"
    node.setup_volume(uid, {"name": "config", "configMap": {"name": "app"}}, data={"greeting": "bonjour"})
    assert sh(node, c.id, "cat /etc/app/greeting") == "bonjour"  # same container, new content
    assert node.exec_sync(c.id, ["touch", "/etc/app/x"]).exit_code != 0  # readOnly
    sh(node, c.id, "echo hi > /sub/f")
    assert open(os.path.join(scratch, "nested/dir/f")).read() == "hi\n"
    assert node.exec_sync(c.id, ["sh", "-c", "head -c 2000000 /dev/zero > /scratch/big"]).exit_code != 0
    assert sh(node, c.id, "cat /var/run/secrets/app/token; stat -L -c %a /run/secrets/app/token") == "s3cret400\n"
    assert os.path.exists("/run/secrets") == had_run_secrets  # nothing created on the node
    assert {scratch, token} <= set(kernel.mountpoints())  # memory-backed on the node
    assert sh(node, c.id, "echo x > /etc/written-in-the-container && cat /etc/written-in-the-container") == "x\n"
    assert not os.path.exists("/etc/written-in-the-container")  # the host root is untouched


def test_remove_pod_leaves_no_process_mount_cgroup_veth_or_ip(node, tmp_path):
    host_dir = tmp_path / "host-data"
    uid = new_pod(node, "doomed")
    mounts = [Mount(node.setup_volume(uid, v, data=d), f"/v/{v['name']}") for v, d in [
        ({"name": "mem", "emptyDir": {"medium": "Memory"}}, None),
        ({"name": "disk", "emptyDir": {}}, None),
        ({"name": "secret", "secret": {"secretName": "s"}}, {"k": "v"}),
        ({"name": "cm", "configMap": {"name": "c"}}, {"k": "v"}),
        ({"name": "host", "hostPath": {"path": str(host_dir), "type": "DirectoryOrCreate"}}, None)]]
    a = start(node, uid, "a", ["sh", "-c", "sleep infinity & sleep infinity"], mounts=mounts)
    b = start(node, uid, "b", SLEEP, mounts=mounts[:1])
    sb = state_of(node, uid)
    procs = [(sb["pid"], sb["start"])]
    for cid in (a.id, b.id):
        st = state_of(node, uid, cid)
        procs += [(st["pid"], st["start"]), (st["shim_pid"], st["shim_start"])]
    procs += [(p, kernel.start_time(p)) for p in node.cgroups.cgroup(f"pod{uid}").pids()]
    assert len(procs) >= 8
    ip = node.pod_sandbox_status(uid).ip
    pod_dir = os.path.join(node.pods_dir, uid)

    node.remove_pod(uid)

    assert not [p for p, started in procs if kernel.alive(p, started)]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            assert f"pod{uid}" not in open(f"/proc/{pid}/cgroup").read()
        except FileNotFoundError:
            pass
    assert not [m for m in kernel.mountpoints() if uid in m]
    assert not [d for d in node.cgroups.cgroup(f"pod{uid}").dirs if os.path.exists(d)]
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=veth_name(uid))
    assert ip not in node.network.allocations() and uid not in node.network.allocations().values()
    assert not os.path.exists(pod_dir) and node.pod_sandbox_status(uid) is None
    assert host_dir.is_dir()  # hostPath is the node's, not the pod's
    node.remove_pod(uid)  # and again: nothing to do


def test_a_restarted_runtime_adopts_running_pods_without_starting_them_twice(node, node_args):
    marker = f"adopt-{uuid.uuid4().hex}"
    config = PodSandboxConfig(uid=str(uuid.uuid4()), name="survivor")
    sandbox = node.run_pod_sandbox(config)
    c = start(node, config.uid, "main", ["python3", "-c", "import time; time.sleep(1000)", marker])
    holder = state_of(node, config.uid)["pid"]

    restarted = LinuxRuntime(**node_args)  # the kubelet came back; the old one is gone
    restarted.cleanup_orphans(keep=[config.uid])
    assert [(s.uid, s.ready, s.ip) for s in restarted.list_pod_sandboxes()] == [(config.uid, True, sandbox.ip)]
    assert restarted.run_pod_sandbox(config).ip == sandbox.ip
    assert state_of(node, config.uid)["pid"] == holder
    assert [(s.id, s.state, s.pid) for s in restarted.list_containers(config.uid)] == [(c.id, "running", c.pid)]
    assert host_processes(marker) == [c.pid]
    assert sh(restarted, c.id, "echo adopted") == "adopted\n"
    st = restarted.stop_container(c.id, grace_period=0)
    assert (st.state, st.exit_code) == ("exited", 137) and not host_processes(marker)


def test_cleanup_orphans_sweeps_what_a_crash_left_behind(node):
    kept = new_pod(node, "kept")
    kept_c = start(node, kept, "main", SLEEP)
    deleted = new_pod(node, "deleted-while-down")
    deleted_c = start(node, deleted, "main", SLEEP)
    half = new_pod(node, "half-made")
    sb = state_of(node, half)
    sb["state"] = "creating"  # the kubelet died in the middle of run_pod_sandbox
    with open(os.path.join(node.pods_dir, half, "sandbox.json"), "w") as f:
        json.dump(sb, f)
    stray_cgroup = node.cgroups.cgroup(f"pod{uuid.uuid4()}")
    stray_cgroup.create()
    stray = subprocess.Popen(SLEEP)
    stray_cgroup.join(stray.pid)
    node.network.allocate("no-such-pod")
    stray_veth = "mkstray" + uuid.uuid4().hex[:6]
    with IPRoute() as ipr:
        ipr.link("add", ifname=stray_veth, kind="veth", peer={"ifname": stray_veth + "p"})
        ipr.link("set", index=ipr.link_lookup(ifname=stray_veth)[0],
                 master=ipr.link_lookup(ifname=node.network.bridge)[0])
    try:
        node.cleanup_orphans(keep=[kept, half])
        assert stray.wait(10) == -9
    finally:
        stray.kill()
        stray.wait()

    assert [s.uid for s in node.list_pod_sandboxes()] == [kept]
    assert node.container_status(kept_c.id).running and node.container_status(deleted_c.id) is None
    assert not [d for d in stray_cgroup.dirs if os.path.exists(d)]
    assert list(node.network.allocations().values()) == [kept]
    assert node.network.pod_veths() == [veth_name(kept)]
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=stray_veth)


def test_stop_sends_sigterm_then_sigkill_after_the_grace_period(node):
    uid = new_pod(node, "stopper")
    polite = start(node, uid, "polite", ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo ready; "
                                                     "while :; do sleep 0.02; done"])
    stubborn = start(node, uid, "stubborn", SLEEP)  # PID 1 without a handler ignores SIGTERM
    wait_for(lambda: b"ready" in open(polite.log_path, "rb").read(), what="the trap")
    st = node.stop_container(polite.id, grace_period=60)
    assert (st.exit_code, st.reason) == (0, "Completed")
    assert b"got TERM" in open(polite.log_path, "rb").read()
    st = node.stop_container(stubborn.id, grace_period=0.2)
    assert (st.exit_code, st.reason) == (137, "Error")


def test_a_command_that_cannot_run_is_reported(node):
    uid = new_pod(node, "broken")
    st = start(node, uid, "missing", ["/no/such/binary"])
    assert (st.state, st.reason, st.exit_code) == ("exited", "StartError", 128)
    assert "/no/such/binary" in st.message
    with pytest.raises(CreateContainerError, match="no command"):
        start(node, uid, "nothing", [])


def test_host_network_pods_use_the_node_namespaces(node):
    uid = new_pod(node, "hostnet", host_network=True)
    assert node.pod_sandbox_status(uid).ip == node.node_ip
    c = start(node, uid, "main", SLEEP)
    for kind in ("net", "uts"):
        assert sh(node, c.id, f"readlink /proc/self/ns/{kind}") == os.readlink(f"/proc/self/ns/{kind}") + "\n"
    assert sh(node, c.id, "readlink /proc/self/ns/ipc") != os.readlink("/proc/self/ns/ipc") + "\n"


def test_probes_run_inside_the_pod_network(node):
    uid = new_pod(node, "probed")
    c = start(node, uid, "main", ["python3", "-m", "http.server", "8080", "--bind", "127.0.0.1",
                                  "--directory", "/tmp"])
    ip = node.pod_sandbox_status(uid).ip

    def probe(spec):
        return run_probe(node, uid, c.id, spec, pod_ip=ip, ports={"http": 8080})
    wait_for(lambda: probe({"tcpSocket": {"port": 8080, "host": "127.0.0.1"}}).success,
             what="the server on the pod's loopback")
    assert probe({"httpGet": {"port": "http", "host": "127.0.0.1", "path": "/"}}).success
    missing = probe({"httpGet": {"port": 8080, "host": "127.0.0.1", "path": "/missing"}})
    assert not missing.success and "404" in missing.message
    assert not probe({"tcpSocket": {"port": 8080}}).success  # not listening on the pod IP
    assert probe({"exec": {"command": ["true"]}}).success
    assert not probe({"exec": {"command": ["false"]}}).success


KUBELET_SCRIPT = """
import json, os, sys, time
from kubelet.runtime.linux.runtime import LinuxRuntime
from kubelet.runtime import ContainerConfig, PodSandboxConfig
rt = LinuxRuntime(**json.loads(sys.argv[1]))
rt.run_pod_sandbox(PodSandboxConfig(uid=sys.argv[2], name="orphan"))
c = rt.start_container(sys.argv[2], ContainerConfig(name="main", image="host",
                                                    command=json.loads(os.environ["COMMAND"])))
print(json.dumps({"id": c.id, "server": rt._forks.pid}), flush=True)
time.sleep(1000)
"""


def test_pods_outlive_the_fork_server_and_the_process_that_started_it(node, node_args):
    """Sandboxes and monitors are forks of the runtime's fork server (kubelet/runtime/linux/shim.py,
    mode server), detached as helpers started on their own would be: neither a SIGKILL of
    the process that started it (the kubelet) nor one of the server takes a pod down,
    the server goes away with its kubelet, and a runtime whose server died starts a new
    one on its next call."""
    marker = f"zygote-{uuid.uuid4().hex}"
    uid = str(uuid.uuid4())
    command = ["python3", "-c", "import time; time.sleep(1000)", marker]  # not in the kubelet's argv
    kubelet = subprocess.Popen([sys.executable, "-c", KUBELET_SCRIPT, json.dumps(node_args), uid],
                               env={**os.environ, "COMMAND": json.dumps(command)},
                               stdout=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        started = json.loads(kubelet.stdout.readline())
        server = (started["server"], kernel.start_time(started["server"]))
        holder = state_of(node, uid)["pid"]
        (pid,) = host_processes(marker)
        assert os.getsid(holder) != os.getsid(server[0]) != os.getsid(pid)
        kubelet.kill()
        kubelet.wait()
    finally:
        kubelet.kill()
        kubelet.wait()
        kubelet.stdout.close()
    wait_for(lambda: not kernel.alive(*server), what="the fork server to follow its kubelet")
    assert host_processes(marker) == [pid] and node.pod_sandbox_status(uid).ready
    assert node.container_status(started["id"]).running  # adopted by this runtime

    c = start(node, uid, "second", SLEEP)
    first_server = node._forks.pid
    os.kill(first_server, signal.SIGKILL)
    wait_for(lambda: node._forks._proc.poll() is not None, what="the fork server to die")
    assert node.container_status(c.id).running and host_processes(marker) == [pid]
    other = new_pod(node, "after")  # a new server
    assert node._forks.pid != first_server and node.pod_sandbox_status(other).ready
    assert start(node, other, "main", SLEEP).running
    assert sh(node, c.id, "echo still here") == "still here\n"


def test_netlink_requests_are_acknowledged_or_raise_the_kernels_errno():
    name = "mk8sn" + uuid.uuid4().hex[:8]
    address = str(ipaddress.ip_network(free_cidr())[1])
    with netlink.Netlink() as nl:
        try:
            nl.add_bridge(name)
            idx = netlink.ifindex(name)
            assert idx is not None
            with pytest.raises(netlink.NetlinkError) as e:
                nl.add_bridge(name)
            assert e.value.errno == errno.EEXIST
            nl.add_address(idx, address, 24)
            nl.set_up(idx)
            with IPRoute() as ipr:
                (link,) = ipr.get_links(idx)
                assert link.get("flags") & netlink.IFF_UP
                assert [a.get("address") for a in ipr.get_addr(index=idx, family=socket.AF_INET)] == [address]
        finally:
            deleted = nl.delete_link(name)
    assert deleted and netlink.ifindex(name) is None
    with netlink.Netlink() as nl:
        assert nl.delete_link(name) is False  # nothing to delete is not an error
