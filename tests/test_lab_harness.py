"""The lab of tests/lab.py (root): hosts that are separate machines reached over SSH, a
router between two subnets, the playbook's prerequisites role run over SSH (idempotent),
and a machine left as it was, whatever ran on the hosts.

One lab (two hosts on the first subnet, one behind the router) is shared by the tests of
this module; the clean-up test builds and removes its own.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.lab import Lab, cmdline, machine_state, sweep_leftovers
from tests.procs import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSIBLE = os.path.join(ROOT, "deploy", "ansible")
MINIK8S = os.path.join(os.path.dirname(sys.executable), "minik8s")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab's namespaces need root"),
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"),
                       reason="Debian's openssh-server is not installed (hack/setup.sh installs it)"),
    pytest.mark.skipif(not os.path.exists(ANSIBLE_PLAYBOOK),
                       reason="ansible-core is not installed in this venv (pip install -e '.[test]')"),
]


@pytest.fixture(scope="module")
def lab():
    lab = Lab(["cp1", "w1"], behind_router=["w3"])
    try:
        yield lab.start()
    finally:
        lab.stop()


def test_hosts_are_separate_machines(lab):
    cp1, w1 = lab.host("cp1"), lab.host("w1")
    assert cp1.ssh("hostname").stdout.strip() == cp1.name
    assert w1.ssh("hostname").stdout.strip() == w1.name
    assert cp1.ssh("ip -4 -o addr show dev eth0").stdout.split()[3] == f"{cp1.ip}/24"
    cp1.ssh("mkdir -p /etc/minik8s /var/lib/minik8s/etcd /run/minik8s && echo cp1 > /etc/minik8s/who")
    assert cp1.read("/etc/minik8s/who").strip() == "cp1"
    for path in ("/etc/minik8s", "/var/lib/minik8s", "/run/minik8s"):
        assert cp1.exists(path)
        assert not w1.exists(path), f"{path} of cp1 is visible on w1"
    assert not os.path.exists("/etc/minik8s/who"), "a host's /etc reached the machine's disk"
    # /tmp: the machine's files show through, a host's writes stay its own.
    mine = tempfile.NamedTemporaryFile(prefix="lab-visible-", dir="/tmp")
    assert cp1.exists(mine.name)
    cp1.ssh(f"echo x > {mine.name}.host")
    assert cp1.exists(f"{mine.name}.host") and not w1.exists(f"{mine.name}.host")
    assert not os.path.exists(f"{mine.name}.host"), "a host's /tmp reached the machine's disk"
    mine.close()
    # Its own PID namespace: the host sees its init, sshd and this session, not the machine.
    assert len(cp1.ssh("ls -d /proc/[0-9]*").stdout.split()) < 20
    # /sys is the host's: its network devices, and the machine's cgroup hierarchies.
    assert sorted(cp1.run("ls", "/sys/class/net").stdout.split()) == ["eth0", "lo"]
    assert cp1.exists("/sys/fs/cgroup/cpu/cgroup.procs") or cp1.exists("/sys/fs/cgroup/cgroup.controllers")


def test_second_subnet_is_reached_through_the_router(lab):
    cp1, w3 = lab.host("cp1"), lab.host("w3")
    route = cp1.run("ip", "-4", "-o", "route", "get", w3.ip).stdout
    assert f"via {cp1.gateway}" in route, route   # not on cp1's link
    out = cp1.ssh(f"timeout 5 bash -c '</dev/tcp/{w3.ip}/22' && echo reached", check=False)
    assert out.stdout.strip() == "reached", out.stderr
    back = w3.ssh(f"timeout 5 bash -c '</dev/tcp/{cp1.ip}/22' && echo reached", check=False)
    assert back.stdout.strip() == "reached", back.stderr


def test_ssh_takes_only_the_lab_key(lab, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    opts = lab.ssh_options()
    opts[opts.index("-i") + 1] = str(other)
    r = subprocess.run(["ssh", *opts, "-o", "IdentitiesOnly=yes", f"root@{lab.host('w1').ip}", "true"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 255 and "Permission denied" in r.stderr, r.stderr


def test_crash_kills_everything_but_init_and_sshd(lab):
    w1 = lab.host("w1")
    w1.ssh("setsid sleep 1000 </dev/null >/dev/null 2>&1 & (sleep 1001 </dev/null >/dev/null 2>&1 &)")
    assert len(w1.processes()) >= 3
    victims = w1.crash()
    assert len(victims) >= 2
    assert set(w1.processes()) == {w1.sshd_pid}
    assert w1.ssh("echo up").stdout.strip() == "up"   # sshd survived: the "disk" is reachable


def test_prereqs_role_is_idempotent(lab):
    inv = lab.inventory(["cp1"], ["w1", "w3"], minik8s_bin=MINIK8S, minik8s_manage_packages=False)
    first = lab.playbook(os.path.join(ANSIBLE, "site.yml"), inv, "--tags", "prereqs").check()
    recap = first.recap()
    assert set(recap) == {h.name for h in lab.hosts.values()}
    assert all(r["changed"] >= 2 and r["failed"] == 0 for r in recap.values()), first.stdout[-3000:]
    for h in lab.hosts.values():
        conf = h.read("/etc/sysctl.d/99-minik8s.conf")
        assert "net.ipv4.ip_forward = 1" in conf
        assert "vxlan" in h.read("/etc/modules-load.d/minik8s.conf")
        # The handler applied it in the host's network namespace.
        assert h.read("/proc/sys/net/ipv4/ip_forward").strip() == "1"
    assert not os.path.exists("/etc/sysctl.d/99-minik8s.conf")
    second = lab.playbook(os.path.join(ANSIBLE, "site.yml"), inv, "--tags", "prereqs").check()
    assert second.changed() == 0, second.stdout[-3000:]


def test_prereqs_role_names_a_missing_minik8s(lab):
    inv = lab.inventory(["cp1"], ["w1"], minik8s_bin="/nonexistent/bin/minik8s", minik8s_manage_packages=False)
    r = lab.playbook(os.path.join(ANSIBLE, "site.yml"), inv, "--tags", "prereqs", "--limit", lab.host("w1").name)
    assert r.returncode != 0
    assert "/nonexistent/bin/minik8s is not an executable" in r.stdout


def test_the_lab_leaves_the_machine_as_it_was():
    before = machine_state()
    lab = Lab(["a"], behind_router=["b"])
    try:
        lab.start()
        a = lab.host("a")
        prefix = lab.prefix
        # What a cluster leaves on a host: daemons (detached, in a nested PID namespace too),
        # a cgroup named as the kubelet names them, a mount, a netns, a link, an nft table.
        a.ssh("setsid sleep 1000 </dev/null >/dev/null 2>&1 &"
              " unshare --pid --fork --mount-proc sleep 1002 </dev/null >/dev/null 2>&1 &"
              " ip netns add pod1 && ip link add v0 type veth peer name v1 netns pod1 && mkdir -p /var/lib/minik8s/m"
              " && mount -t tmpfs x /var/lib/minik8s/m")
        if shutil.which("nft") or os.path.exists("/usr/sbin/nft"):
            a.ssh("nft add table inet minik8s-lab-test")
        hierarchy = "/sys/fs/cgroup/pids" if os.path.isdir("/sys/fs/cgroup/pids") else "/sys/fs/cgroup"
        cg = f"{hierarchy}/minik8s-{a.name}"
        a.ssh(f"mkdir -p {cg}; setsid sh -c 'echo $$ > {cg}/cgroup.procs; exec sleep 1003' "
              "</dev/null >/dev/null 2>&1 &")
        during = machine_state()
        pids = [p for h in lab.hosts.values() for p in [h.init_pid, *h.processes()]]
        assert any(prefix in n for n in during["netns"] - before["netns"])
        assert any(prefix in n for n in during["links"] - before["links"])
        assert any(a.name in c for c in during["cgroups"] - before["cgroups"])
        assert len(pids) >= 6
    finally:
        lab.stop()
    after = machine_state()
    for kind in before:
        # Other tests may share the machine: only what names this lab counts.
        left = {x for x in after[kind] - before[kind] if prefix in x or "minik8s-lab-test" in x}
        assert not left, f"the lab left {kind}: {left}"
    left = {p: cmdline(p) for p in pids if os.path.exists(f"/proc/{p}")}
    assert not left, f"processes of the lab are still running: {left}"
    assert not os.path.exists(lab.dir)


# A test process that builds a lab, prints what it made, and waits to be killed.
ORPHAN = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from tests.lab import Lab
lab = Lab(["a"], behind_router=["b"]).start()
lab.host("a").ssh("setsid sleep 1000 </dev/null >/dev/null 2>&1 &")
print(json.dumps({"prefix": lab.prefix, "dir": lab.dir,
                  "pids": [p for h in lab.hosts.values() for p in [h.init_pid, *h.processes()]]}), flush=True)
time.sleep(3600)
"""


def test_a_killed_test_process_leaves_nothing_the_next_lab_does_not_sweep():
    child = subprocess.Popen([sys.executable, "-c", ORPHAN, ROOT], stdout=subprocess.PIPE, text=True)
    try:
        made = json.loads(child.stdout.readline())
    finally:
        child.kill()   # no finally, no atexit: as a test run killed outright
        child.wait()
    prefix = made["prefix"]
    # The hosts' inits die with their owner (PR_SET_PDEATHSIG), and with them everything.
    wait_for(lambda: not [p for p in made["pids"] if os.path.exists(f"/proc/{p}")], timeout=30,
             what="the killed lab's processes gone")
    assert any(n.startswith(prefix) for n in machine_state()["netns"])   # left for the sweep
    sweep_leftovers()
    state = machine_state()
    assert not [x for kind in state.values() for x in kind if prefix in x]
    assert not os.path.exists(made["dir"])
