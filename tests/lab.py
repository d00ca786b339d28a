"""A lab of "VMs" on one machine, for the lab tests (tests/test_lab*.py) and bench/lab.py.

A host is
- a network namespace `mkl<owner pid><letter>-<host>` with one address: hosts of the first subnet
  sit on a bridge in the machine's namespace (which has the subnet's `.1`, so the test
  process reaches them), hosts of the second subnet on a second bridge behind a router
  namespace that forwards between the two (routes both ways), so they share no link
  with the others and a pod network needs VXLAN to reach them;
- its own mount, PID, UTS (hostname = the host's name) and IPC namespaces, held by a
  long-lived init (`unshare --fork --pid`, PID 1 of the host, a reaper) started under
  `nsenter --net`. In its mount namespace /etc and /var are overlays of the machine's
  (writes go to a tmpfs of the host's: /etc/minik8s, /var/lib/minik8s, /var/log/minik8s,
  /etc/sysctl.d, /etc/modules-load.d and anything else a playbook writes there stay
  the host's), so is /tmp (with the lab's directory, in the machine's /tmp, bound back
  in), /run is a fresh tmpfs (so no host looks run by systemd: its units run under
  `minik8s supervise-host`), and /sys is a sysfs of the host's network
  namespace with the machine's cgroup mounts moved under it;
- Debian's openssh-server on its address (port 22), run as a child of that init with
  `-f /dev/null` and `-o` options only (no system configuration is read or changed),
  a host key and an authorized key made here with ssh-keygen, and a known_hosts file
  for the client.

Commands reach a host over SSH (`Host.ssh`, as Ansible does) and, for checks, through
nsenter into its namespaces (`Host.run`). `Lab.playbook` runs ansible-playbook with an
ANSIBLE_HOME, control sockets and temporary files in the lab's directory.

What is guaranteed about clean-up: `Lab.stop()` (idempotent; the fixture calls it in a
finally, and `start()` registers it with atexit) leaves nothing: every process of a
host is in its PID namespace, so killing its init kills them all, pods included (their
PID namespaces are nested in the host's), and a scan of /proc kills by PID anything left
in a host's network or PID namespace; then the cgroups named after the lab's nodes
(`minik8s-mkl<pid>-...`) are removed, the namespaces and bridges deleted (their veths
and every route go with them) and the lab's directory removed. Every lab process also
has PR_SET_PDEATHSIG: if the test process is killed outright, the inits die, and with
them everything on the hosts; the namespaces and links such a run leaves are removed by
the next lab's `start()`, which sweeps `mkl<pid>` names whose pid is gone.
`machine_state()` lists what the lab could leave behind (netns, links, mounts, cgroups,
nft tables of the machine's namespace), for a test comparing before and after.
"""
from __future__ import annotations

import atexit
import ctypes
import ipaddress
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

PREFIX = "mkl"
_NAME = re.compile(rf"^{PREFIX}(\d+)[a-z]")
PR_SET_PDEATHSIG = 1
SSHD = "/usr/sbin/sshd"
CGROUP_ROOT = "/sys/fs/cgroup"
LAB_TMP = "/tmp"   # the lab's directory goes here: the hosts' /tmp binds it back by this path

# PID 1 of a host: reaps orphans (daemons double-fork, pods' shims exit) so nothing
# piles up as a zombie; it has no signal handlers, so only SIGKILL from outside ends it.
REAPER = """
import os, time
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(1)
"""

# Run by a host's init, in its fresh namespaces: $1 host dir, $2 host name, $3 address,
# then sshd's argv. The tmpfs holds the overlays' upper layers, so nothing a host writes
# reaches the machine's disk.
SETUP = r"""
set -eu
d=$1; name=$2; shift 2
hostname "$name"
mount -t tmpfs -o mode=0755 "lab-$name" "$d/t"
for x in etc var; do
  mkdir -p "$d/t/$x/up" "$d/t/$x/work"
  mount -t overlay overlay -o "lowerdir=/$x,upperdir=$d/t/$x/up,workdir=$d/t/$x/work" "/$x"
done
mount -t tmpfs -o mode=0755 "run-$name" /run
# /tmp too, with the lab's own directory bound back in (so sshd's log and the ready file
# below reach the test process): built aside, then moved over /tmp.
lab=$(dirname "$d")
mkdir -p "$d/t/tmp/up" "$d/t/tmp/work" "$d/t/tmpov"
mount -t overlay overlay -o "lowerdir=/tmp,upperdir=$d/t/tmp/up,workdir=$d/t/tmp/work" "$d/t/tmpov"
mount --bind "$lab" "$d/t/tmpov/${lab#/tmp/}"
mount --move "$d/t/tmpov" /tmp
mkdir -p /run/sshd /run/netns
mkdir -p "$d/t/cg"
mount --rbind /sys/fs/cgroup "$d/t/cg"
mount -t sysfs sysfs /sys
mount --move "$d/t/cg" /sys/fs/cgroup
ip link set lo up
"$@" &
echo $! > "$d/sshd.pid"
touch "$d/ready"
exec python3 -c "$REAPER"
"""


_labs_made = 0


def _next_prefix() -> str:
    """mkl<pid><letter>: the pid names the owner (for the sweep of dead owners' labs),
    the letter tells apart the labs of one process."""
    global _labs_made
    _labs_made += 1
    return f"{PREFIX}{os.getpid()}{chr(ord('a') + (_labs_made - 1) % 26)}"


def _pdeathsig() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _run(*argv: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)}: exit {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ns_inode(pid: int | str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _ppids() -> dict[int, int]:
    out = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            out[int(p)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every process below pid (its children, theirs, ...), by the PIDs the machine sees."""
    children: dict[int, list[int]] = {}
    for p, pp in _ppids().items():
        children.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def kill_pids(pids: list[int], timeout: float = 20) -> None:
    """SIGKILL each pid, then wait until they are gone (zombies of ours are reaped by
    whoever waits for them; a zombie's PID namespace entry goes when its parent reaps)."""
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p) and _state(p) != "Z"]
        if not left:
            return
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")     # init's default --service-cidr


def free_subnets(n: int) -> list[ipaddress.IPv4Network]:
    """n consecutive /24s that no route of the machine overlaps, outside the default
    service CIDR (init refuses hosts whose addresses it contains)."""
    from cluster import network
    for _ in range(200):
        a, b = random.randrange(100, 250), random.randrange(0, 255 - n) // 2 * 2
        nets = [ipaddress.ip_network(f"10.{a}.{b + i}.0/24") for i in range(n)]
        if any(x.overlaps(SERVICE_CIDR) for x in nets):
            continue
        if not network.overlapping_routes(*(str(x) for x in nets)):
            return nets
    raise RuntimeError("no free address range for the lab")


def free_cluster_cidr() -> str:
    """A /16 for pods that no route of the machine overlaps."""
    from cluster import network
    for _ in range(100):
        c = f"172.{random.randrange(16, 32)}.0.0/16"
        if not network.overlapping_routes(c):
            return c
    raise RuntimeError("no free pod address range for the lab")


@dataclass
class Host:
    name: str          # also its hostname, and the node name a playbook gives it
    ip: str
    prefixlen: int
    gateway: str
    lab: "Lab"
    link: str = ""     # the machine-side end of its veth (cut it to cut the host off)
    holder: subprocess.Popen | None = None
    init_pid: int = 0  # PID 1 of the host, as the machine sees it
    sshd_pid: int = 0

    @property
    def netns(self) -> str:
        return f"{self.lab.prefix}-{self.name.rsplit('-', 1)[-1]}"

    @property
    def dir(self) -> str:
        return os.path.join(self.lab.dir, self.name)

    def run(self, *argv: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """argv inside the host (its network, mount, UTS, IPC and PID namespaces)."""
        return _run("nsenter", "-t", str(self.init_pid), "-n", "-m", "-u", "-i", "-p", "--", *argv,
                    check=check, timeout=timeout, **kw)

    def ssh(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """A command line run by the host's sshd, as root, as Ansible runs its modules."""
        return _run("ssh", *self.lab.ssh_options(), f"root@{self.ip}", command, check=check, timeout=timeout)

    def processes(self) -> list[int]:
        """Every process of the host (machine PIDs), its init excluded."""
        return descendants(self.init_pid) if self.init_pid else []

    def crash(self) -> list[int]:
        """Kill every process of the host but its init and sshd, as a machine that lost
        power keeps only its disk (the overlays): what its supervisor ran is gone, and
        nothing restarts it. Returns the PIDs killed."""
        keep = {self.init_pid, self.sshd_pid}
        ssh_sessions = set(descendants(self.sshd_pid)) if self.sshd_pid else set()
        victims = [p for p in self.processes() if p not in keep and p not in ssh_sessions]
        kill_pids(victims)
        return victims

    def kill_matching(self, pattern: str) -> list[int]:
        """SIGKILL the host's processes whose command line matches the regex."""
        rx = re.compile(pattern)
        victims = [p for p in self.processes() if p != self.sshd_pid and rx.search(cmdline(p))]
        kill_pids(victims)
        return victims

    def cut_link(self) -> None:
        _run("ip", "link", "set", self.link, "down")

    def restore_link(self) -> None:
        _run("ip", "link", "set", self.link, "up")

    def read(self, path: str) -> str:
        return self.run("cat", path).stdout

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path, check=False).returncode == 0


@dataclass
class Lab:
    """Hosts `names` on one bridge and `behind_router` on a second subnet behind a router.
    `start()` builds everything and `stop()` removes it (see the module's docstring)."""
    names: list[str]
    behind_router: list[str] = field(default_factory=list)
    prefix: str = field(default_factory=lambda: _next_prefix())
    hosts: dict[str, Host] = field(default_factory=dict)
    dir: str = ""
    cluster_cidr: str = ""
    _links: list[str] = field(default_factory=list)
    _netns: list[str] = field(default_factory=list)
    _stopped: bool = False

    # --- names -------------------------------------------------------------------------
    @property
    def bridges(self) -> list[str]:
        return [f"{self.prefix}a", f"{self.prefix}b"]

    @property
    def router_ns(self) -> str:
        return f"{self.prefix}-router"

    def node_name(self, short: str) -> str:
        return f"{self.prefix}-{short}"

    def host(self, short: str) -> Host:
        return self.hosts[self.node_name(short)]

    # --- bring-up ------------------------------------------------------------------------
    def start(self) -> "Lab":
        sweep_leftovers()
        atexit.register(self.stop)
        self.dir = tempfile.mkdtemp(prefix=f"{self.prefix}-", dir=LAB_TMP)
        os.chmod(self.dir, 0o755)
        self.cluster_cidr = free_cluster_cidr()
        try:
            self._network()
            self._keys()
            for h in self.hosts.values():
                self._boot(h)
            for h in self.hosts.values():
                self._wait_ssh(h)
        except BaseException:
            self.stop()
            raise
        return self

    def _network(self) -> None:
        net_a, net_b = free_subnets(2)
        self.subnets = (net_a, net_b)
        a, b = list(net_a.hosts()), list(net_b.hosts())
        br_a, br_b = self.bridges
        for br in (br_a, br_b):
            _run("ip", "link", "add", br, "type", "bridge")
            self._links.append(br)
            _run("ip", "link", "set", br, "up")
        # The machine's end of the first subnet, so the test process (Ansible's
        # controller) reaches every host; the second subnet through the router.
        _run("ip", "addr", "add", f"{a[0]}/24", "dev", br_a)
        router_a, router_b = str(a[-1]), str(b[-1])
        _run("ip", "route", "add", str(net_b), "via", router_a, "dev", br_a)
        self._ns(self.router_ns)
        self._veth(f"{self.prefix}ra", self.router_ns, "eth0", br_a, f"{router_a}/24")
        self._veth(f"{self.prefix}rb", self.router_ns, "eth1", br_b, f"{router_b}/24")
        self._in(self.router_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for i, short in enumerate(self.names):
            self._host(short, str(a[10 + i]), router_a, br_a, i)
        for i, short in enumerate(self.behind_router):
            self._host(short, str(b[10 + i]), router_b, br_b, len(self.names) + i)

    def _host(self, short: str, ip: str, gw: str, bridge: str, index: int) -> None:
        h = Host(name=self.node_name(short), ip=ip, prefixlen=24, gateway=gw, lab=self,
                 link=f"{self.prefix}h{index}")
        self.hosts[h.name] = h
        self._ns(h.netns)
        self._veth(h.link, h.netns, "eth0", bridge, f"{ip}/24")
        self._in(h.netns, "ip", "route", "add", "default", "via", gw)

    def _ns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._netns.append(name)
        self._in(name, "ip", "link", "set", "lo", "up")

    def _in(self, ns: str, *argv: str) -> None:
        _run("nsenter", f"--net=/run/netns/{ns}", "--", *argv)

    def _veth(self, outer: str, ns: str, inner: str, bridge: str, addr: str) -> None:
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
        self._links.append(outer)
        _run("ip", "link", "set", outer, "master", bridge, "up")
        self._in(ns, "ip", "addr", "add", addr, "dev", inner)
        self._in(ns, "ip", "link", "set", inner, "up")

    def _keys(self) -> None:
        self.key = os.path.join(self.dir, "id_ed25519")
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.prefix}-client", "-f", self.key)
        shutil.copy(self.key + ".pub", os.path.join(self.dir, "authorized_keys"))
        known = []
        for h in self.hosts.values():
            os.makedirs(os.path.join(h.dir, "t"))
            hk = os.path.join(h.dir, "ssh_host_ed25519_key")
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", hk)
            with open(hk + ".pub") as f:
                known.append(f"{h.ip} {' '.join(f.read().split()[:2])}\n")
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        with open(self.known_hosts, "w") as f:
            f.writelines(known)

    def _boot(self, h: Host) -> None:
        sshd = [SSHD, "-D", "-e", "-f", "/dev/null", "-E", os.path.join(h.dir, "sshd.log"),
                "-o", f"ListenAddress={h.ip}:22",
                "-o", f"HostKey={h.dir}/ssh_host_ed25519_key",
                "-o", f"AuthorizedKeysFile={self.dir}/authorized_keys",
                "-o", "PermitRootLogin=prohibit-password", "-o", "PasswordAuthentication=no",
                "-o", "KbdInteractiveAuthentication=no", "-o", "UsePAM=no", "-o", "StrictModes=no",
                "-o", "UseDNS=no", "-o", "PidFile=none", "-o", "PrintMotd=no",
                "-o", "MaxStartups=100", "-o", "MaxSessions=100",
                "-o", "Subsystem=sftp internal-sftp"]
        h.holder = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{h.netns}", "--",
             "unshare", "--mount", "--propagation", "private", "--uts", "--ipc", "--pid", "--fork",
             "--mount-proc", "--kill-child=SIGKILL", "--",
             "/bin/sh", "-c", SETUP, "lab-init", h.dir, h.name, *sshd],
            env={**os.environ, "REAPER": REAPER}, stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(h.dir, "init.log"), "wb"), stderr=subprocess.STDOUT,
            preexec_fn=_pdeathsig)
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(h.dir, "ready")):
            if h.holder.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(h.dir, "init.log")) as f:
                    raise RuntimeError(f"host {h.name} did not start: {f.read().strip()}")
            time.sleep(0.02)
        h.init_pid = next(p for p, pp in _ppids().items() if pp == h.holder.pid)
        # sshd.pid holds the host's own PID of sshd; find the machine's by parentage (once
        # the background shell has exec'd it).
        while not h.sshd_pid:
            kids = [p for p, pp in _ppids().items() if pp == h.init_pid]
            h.sshd_pid = next((p for p in kids if SSHD in cmdline(p)), 0)
            if time.monotonic() > deadline:
                with open(os.path.join(h.dir, "sshd.log")) as f:
                    raise RuntimeError(f"sshd of {h.name} did not start: {f.read().strip()}")
            time.sleep(0.02)

    def _wait_ssh(self, h: Host) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((h.ip, 22), timeout=2) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd of {h.name} is not answering on {h.ip}:22")
            time.sleep(0.05)

    # --- use -----------------------------------------------------------------------------
    def ssh_options(self) -> list[str]:
        return ["-i", self.key, "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]

    def ansible_env(self) -> dict[str, str]:
        """Ansible's settings, all inside the lab's directory (nothing under ~/.ansible)."""
        home = os.path.join(self.dir, "ansible")
        os.makedirs(os.path.join(home, "tmp"), exist_ok=True)
        os.makedirs(os.path.join(home, "cp"), exist_ok=True)
        return {**os.environ,
                "ANSIBLE_HOME": home, "ANSIBLE_LOCAL_TEMP": os.path.join(home, "tmp"),
                "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(home, "cp"),
                "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s",
                "ANSIBLE_PRIVATE_KEY_FILE": self.key, "ANSIBLE_REMOTE_USER": "root",
                "ANSIBLE_SSH_COMMON_ARGS": "",
                "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_PIPELINING": "True",
                "ANSIBLE_REMOTE_TMP": "/run/ansible-tmp", "ANSIBLE_FORKS": "10",
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False",
                "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
                "ANSIBLE_CONFIG": os.path.join(home, "none.cfg")}

    def inventory(self, control_plane: list[str], workers: list[str], **extra_vars) -> str:
        """An inventory (YAML, the layout of deploy/ansible/inventory.example.yml) of the
        named hosts, with every host's advertise address; returns its path."""
        import yaml

        def group(shorts):
            return {"hosts": {self.node_name(s): {"ansible_host": self.host(s).ip,
                                                    "minik8s_advertise_address": self.host(s).ip,
                                                    "minik8s_node_name": self.node_name(s)}
                              for s in shorts}}
        inv = {"all": {"vars": {"ansible_ssh_common_args":
                                f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes",
                                **extra_vars},
                       "children": {"control_plane": group(control_plane), "workers": group(workers)}}}
        path = os.path.join(self.dir, "inventory.yml")
        with open(path, "w") as f:
            yaml.safe_dump(inv, f)
        return path

    def playbook(self, playbook: str, inventory: str, *args: str, timeout: float = 900) -> "PlaybookRun":
        ansible = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
        r = subprocess.run([ansible, "-i", inventory, playbook, *args], capture_output=True, text=True,
                           timeout=timeout, env=self.ansible_env(), stdin=subprocess.DEVNULL)
        return PlaybookRun(r.returncode, r.stdout, r.stderr)

    # --- tear-down -----------------------------------------------------------------------
    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for h in self.hosts.values():
            if h.init_pid:
                kill_pids([h.init_pid])
            if h.holder is not None:
                try:
                    h.holder.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    h.holder.kill()
                    h.holder.wait()
        if self.dir:  # Ansible's ssh control masters (ControlPersist) are ours, by path
            cp = os.path.join(self.dir, "ansible", "cp")
            kill_pids([p for p in _ppids() if cmdline(p).startswith("ssh") and cp in cmdline(p)])
        teardown(self.prefix, self._netns, self._links)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class PlaybookRun:
    returncode: int
    stdout: str
    stderr: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP: host -> {ok, changed, unreachable, failed, skipped, rescued, ignored}."""
        out: dict[str, dict[str, int]] = {}
        text = self.stdout.split("PLAY RECAP", 1)[-1] if "PLAY RECAP" in self.stdout else ""
        for line in text.splitlines():
            m = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
            if m:
                out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
        return out

    def changed(self) -> int:
        return sum(r.get("changed", 0) for r in self.recap().values())

    def check(self) -> "PlaybookRun":
        if self.returncode != 0:
            raise AssertionError(f"ansible-playbook failed (exit {self.returncode}):\n"
                                 f"{self.stdout[-6000:]}\n{self.stderr[-2000:]}")
        return self


def _cgroup_dirs(match: str) -> list[str]:
    """Cgroup directories (every hierarchy, any depth) whose name contains `match`,
    deepest first."""
    found = []
    for top, dirs, _files in os.walk(CGROUP_ROOT):
        for d in dirs:
            if f"minik8s-{match}" in d:
                p = os.path.join(top, d)
                found.extend(os.path.join(t, x) for t, xs, _ in os.walk(p) for x in xs)
                found.append(p)
        dirs[:] = [d for d in dirs if f"minik8s-{match}" not in d]
    return sorted(set(found), key=lambda p: -p.count("/"))


def teardown(prefix: str, netns: list[str] | None = None, links: list[str] | None = None) -> None:
    """Remove whatever a lab named `prefix` left: processes in its namespaces (by PID),
    cgroups named minik8s-<prefix>..., network namespaces and links."""
    # prefix is one lab's (mkl<pid><letter>) or, sweeping, every lab of a pid (mkl<pid>).
    ours = re.compile(rf"^{re.escape(prefix)}[a-z]?-")
    all_ns = netns if netns is not None else [n for n in _netns_names() if ours.match(n)]
    inodes = {}
    for n in all_ns:
        try:
            inodes[os.stat(f"/run/netns/{n}").st_ino] = n
        except OSError:
            pass
    victims = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ns_inode(p, "net") in inodes]
    kill_pids(victims)
    for d in _cgroup_dirs(prefix):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                kill_pids([int(x) for x in f.read().split()])
        except OSError:
            pass
        try:
            os.rmdir(d)
        except OSError:
            pass
    for n in all_ns:
        _run("ip", "netns", "delete", n, check=False)
    ours_link = re.compile(rf"^{re.escape(prefix)}[a-z]?(a|b|ra|rb|h\d+)$")
    for link in (links if links is not None else [ln for ln in _links() if ours_link.match(ln)]):
        _run("ip", "link", "delete", link, check=False)
    # A namespace's veths go when the kernel has freed it (asynchronously).
    deadline = time.monotonic() + 30
    while any(ln.startswith(prefix) for ln in _links()) and time.monotonic() < deadline:
        time.sleep(0.05)


def sweep_leftovers() -> None:
    """Remove labs whose owner process is gone (killed before its clean-up ran)."""
    tmp = LAB_TMP
    dirs = [d for d in os.listdir(tmp) if _NAME.match(d)]
    owners = {int(m.group(1)) for n in _netns_names() + _links() + dirs if (m := _NAME.match(n))}
    for pid in owners:
        if not _alive(pid):
            teardown(f"{PREFIX}{pid}")
            for d in dirs:
                if d.startswith(f"{PREFIX}{pid}") and _NAME.match(d):
                    shutil.rmtree(os.path.join(tmp, d), ignore_errors=True)


def _netns_names() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except OSError:
        return []


def _links() -> list[str]:
    return sorted(os.listdir("/sys/class/net"))


def machine_state() -> dict[str, set[str]]:
    """What a lab could leave on the machine, as seen from the machine's namespaces."""
    with open("/proc/self/mountinfo") as f:
        mounts = {" ".join(line.split()[3:5]) for line in f}
    cgroups = set()
    for top, dirs, _files in os.walk(CGROUP_ROOT):
        cgroups.update(os.path.relpath(os.path.join(top, d), CGROUP_ROOT) for d in dirs if d.startswith("minik8s"))
    nft_bin = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)
    nft = _run(nft_bin, "list", "tables", check=False).stdout.split("\n") if nft_bin else []
    return {"netns": set(_netns_names()), "links": set(_links()), "mounts": mounts,
            "cgroups": cgroups, "nft": {t for t in nft if t}}
