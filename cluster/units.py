"""A lab host's long-running components, as units: systemd's when systemd runs the host,
else a detached host supervisor's (`minik8s supervise-host`, not meant to be typed).

    Unit(name, argv, env={})        one component: what to run, with what environment
    install(units)                  make them run (and keep running); changed ones restart
    remove(names)                   stop them and forget them
    installed()                     {name: Unit} of what is installed

Every installed unit has its spec at /etc/minik8s/units/<name>.json (cluster/layout.py),
whichever runs it: that file is the record of what is installed.

- systemd (`/run/systemd/system` exists under the root): the unit is also
  /etc/systemd/system/minik8s-<name>.service (`render_systemd`: Restart=always,
  RestartSec, KillMode, After=/Wants= ordering), and `install` runs `systemctl
  daemon-reload` then `enable --now` (new) or `restart` (changed); `remove` runs
  `disable --now` and removes the file.
- otherwise: one host supervisor per host (an flock on /run/minik8s/supervisor.lock makes
  it the only one), started detached (its own session, its parent gone: it outlives the
  SSH session that ran `init`) when a unit is installed and none runs. It reuses
  cluster/supervisor.Supervisor, so a unit that exits is restarted with back-off (1 s
  doubling to 30 s), and each unit logs to /var/lib/minik8s/logs/<name>.log. On SIGHUP
  it rereads the spec directory: new units start, changed ones restart, removed ones are
  stopped (SIGTERM, SIGKILL after a grace period) and dropped. `install` and `remove`
  return once its status file (/run/minik8s/status.json) shows the change made; `remove`
  of the last unit also stops the supervisor. On SIGTERM it stops every unit, node
  components first and etcd last, and exits.

Units' children die with the supervisor (PR_SET_PDEATHSIG, cluster/supervisor.py), as a
systemd service's processes go with its unit; pods do not (the kubelet puts them in
cgroups of their own, and `minik8s reset` removes them).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from cluster import host
from cluster.layout import Layout, current

log = logging.getLogger("minik8s.units")

# What each unit starts after when both are on a host (systemd's After=; the supervisor
# starts everything at once, and every component retries what it needs).
AFTER = {
    "kube-apiserver": ("etcd",),
    "kube-controller-manager": ("kube-apiserver",),
    "kube-scheduler": ("kube-apiserver",),
    "kubelet": ("kube-apiserver", "apiserver-lb"),
    "kube-proxy": ("kubelet",),
    "podnet": ("kubelet",),
}
# Node components first, etcd last: what stops first still has an API server to tell.
STOP_ORDER = ("kube-proxy", "podnet", "kubelet", "kube-scheduler", "kube-controller-manager",
              "kube-apiserver", "apiserver-lb", "etcd")
# The kubelet's pods and the pod network's links outlive a restart of their agent, as with
# k3s's units: systemd kills only the main process of those (KillMode=process).
KEEP_CHILDREN = ("kubelet", "podnet")
RESTART_SEC = 5
STOP_GRACE = 10.0
WAIT = 30.0


class UnitError(Exception):
    """A one-line reason units cannot be installed or removed."""


@dataclass(frozen=True)
class Unit:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> Unit:
        return cls(str(obj["name"]), [str(a) for a in obj["argv"]],
                   {str(k): str(v) for k, v in (obj.get("env") or {}).items()})

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def systemd_runs(layout: Layout | None = None) -> bool:
    """Whether systemd is the host's init (sd_booted(3)'s test), under the layout's root."""
    return os.path.isdir((layout or current()).path("run", "systemd", "system"))


# -- systemd --------------------------------------------------------------------------------

def _systemd_word(arg: str) -> str:
    """One ExecStart= word: systemd's specifiers (%) and variables ($) escaped, quoted
    when it has spaces, quotes or backslashes (systemd.service(5), "Command lines")."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c in arg for c in " \t\n\"'\\;"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _env_word(key: str, value: str) -> str:
    """KEY=VALUE inside Environment="...": specifiers (%) and quotes escaped."""
    return f"{key}={value}".replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')


def render_systemd(unit: Unit) -> str:
    """The unit's /etc/systemd/system/minik8s-<name>.service."""
    after = ["network-online.target", *(f"minik8s-{a}.service" for a in AFTER.get(unit.name, ()))]
    lines = [
        "# Written by minik8s; `minik8s reset` removes it.",
        "[Unit]",
        f"Description=minik8s {unit.name}",
        "Documentation=https://kubernetes.io/docs/",
        "Wants=network-online.target",
        f"After={' '.join(after)}",
        # kubeadm's kubelet unit: never give up restarting
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        *(f'Environment="{_env_word(k, v)}"' for k, v in sorted(unit.env.items())),
        "ExecStart=" + " ".join(_systemd_word(a) for a in unit.argv),
        "Restart=always",
        f"RestartSec={RESTART_SEC}",
        f"KillMode={'process' if unit.name in KEEP_CHILDREN else 'mixed'}",
        f"TimeoutStopSec={int(STOP_GRACE)}",
        "LimitNOFILE=1048576",
        "TasksMax=infinity",
        *(["Delegate=yes"] if unit.name == "kubelet" else []),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def _systemctl(*args: str) -> None:
    try:
        r = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UnitError(f"systemctl {' '.join(args)}: {e}") from None
    if r.returncode != 0:
        why = ((r.stderr or r.stdout).strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        raise UnitError(f"systemctl {' '.join(args)}: {why}")


# -- the spec directory ------------------------------------------------------------------------

def installed(layout: Layout | None = None) -> dict[str, Unit]:
    """{name: Unit} of every unit installed on the host."""
    layout = layout or current()
    out = {}
    try:
        names = sorted(os.listdir(layout.units))
    except FileNotFoundError:
        return {}
    for fn in names:
        if not fn.endswith(".json"):
            continue
        try:
            with open(os.path.join(layout.units, fn)) as f:
                u = Unit.from_json(json.load(f))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unit spec %s: %s", fn, e)
            continue
        out[u.name] = u
    return out


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def install(units: list[Unit], layout: Layout | None = None, *, wait: float = WAIT) -> None:
    """Make `units` run on the host: new ones start, changed ones restart, unchanged ones
    are left alone. UnitError if systemd or the host supervisor cannot do it."""
    layout = layout or current()
    before = installed(layout)
    for u in units:
        if not u.name or "/" in u.name or not u.argv:
            raise UnitError(f"unit {u.name!r}: a unit needs a plain name and a command")
    for u in units:
        _write(layout.unit_spec(u.name), json.dumps(u.to_json(), indent=1) + "\n", 0o600)
    if systemd_runs(layout):
        for u in units:
            _write(layout.systemd_unit(u.name), render_systemd(u))
        _systemctl("daemon-reload")
        for u in units:
            svc = f"minik8s-{u.name}.service"
            if u.name in before and before[u.name] != u:
                _systemctl("restart", svc)
            _systemctl("enable", "--now", svc)
        return
    if supervisor_pid(layout) is None:
        start_supervisor(layout)
    else:
        signal_supervisor(layout, signal.SIGHUP)
    want = {u.name: u.digest() for u in units}
    if not _wait_status(layout, lambda st: all(st.get("units", {}).get(n) == d for n, d in want.items()), wait):
        raise UnitError(f"the host supervisor did not take up {', '.join(want)} within {wait:.0f}s; "
                        f"see {layout.log('supervisor')}")


def remove(names: list[str] | None = None, layout: Layout | None = None, *,
           wait: float = WAIT) -> list[str]:
    """Stop the units named (all when None) and remove them; what was removed. Once no
    unit is left, the host supervisor stops too."""
    layout = layout or current()
    have = installed(layout)
    names = list(have) if names is None else [n for n in names if n in have
                                              or os.path.exists(layout.systemd_unit(n))]
    if systemd_runs(layout):
        for n in names:
            if os.path.exists(layout.systemd_unit(n)):
                _systemctl("disable", "--now", f"minik8s-{n}.service")
                _unlink(layout.systemd_unit(n))
            _unlink(layout.unit_spec(n))
        if names:
            _systemctl("daemon-reload")
        return names
    for n in names:
        _unlink(layout.unit_spec(n))
    pid = supervisor_pid(layout)
    if pid is not None:
        if not installed(layout):
            stop_supervisor(layout, wait=wait)
        elif names:
            signal_supervisor(layout, signal.SIGHUP)
            def gone(st: dict) -> bool:
                return not set(names) & (set(st.get("units", {})) | set(st.get("components", {})))
            if not _wait_status(layout, gone, wait):
                raise UnitError(f"the host supervisor did not stop {', '.join(names)} within {wait:.0f}s")
    return names


# -- the host supervisor: control side -----------------------------------------------------------

def supervisor_pid(layout: Layout | None = None) -> int | None:
    """The host supervisor's pid if one holds the lock, else None."""
    layout = layout or current()
    try:
        fd = os.open(layout.supervisor_lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                with open(layout.supervisor_pid) as f:
                    text = f.read().strip()
            except FileNotFoundError:
                text = ""
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def status(layout: Layout | None = None) -> dict:
    """The host supervisor's status file ({} when none): its pid, `units` {name: digest}
    and `components` as cluster/supervisor.Supervisor.status() has them."""
    try:
        with open((layout or current()).supervisor_status) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _wait_status(layout: Layout, cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if cond(status(layout)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def signal_supervisor(layout: Layout, sig: int) -> bool:
    pid = supervisor_pid(layout)
    if not pid or pid < 0:
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cluster.cli", *args]


def start_supervisor(layout: Layout) -> int:
    """Start the host supervisor detached (through `supervise-host --detach`, which
    exits once the supervisor holds its lock); its pid."""
    os.makedirs(layout.run, exist_ok=True)
    _unlink(layout.supervisor_status)   # a killed one's: never mistaken for the new one's
    r = subprocess.run(_command("supervise-host", "--detach"), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=WAIT + 5,
                       env={**os.environ, "MINIK8S_ROOT": layout.root})
    pid = supervisor_pid(layout)
    if r.returncode != 0 or pid is None:
        raise UnitError(f"the host supervisor did not start: {(r.stderr or r.stdout).strip() or r.returncode}; "
                        f"see {layout.log('supervisor')}")
    return pid


def stop_supervisor(layout: Layout, *, wait: float = WAIT) -> int | None:
    """SIGTERM the host supervisor (it stops every unit first) and wait until it is gone;
    its pid, None if none ran."""
    pid = supervisor_pid(layout)
    if pid is None:
        return None
    start = host.start_time(pid) if pid > 0 else None
    signal_supervisor(layout, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while supervisor_pid(layout) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if supervisor_pid(layout) is not None and start is not None:
        host.kill(pid, start, signal.SIGKILL)   # it did not stop in time; its children go with it
    return pid


# -- the host supervisor: the process ------------------------------------------------------------

def _spec(layout: Layout, u: Unit):
    from cluster.supervisor import Spec
    return Spec(u.name, list(u.argv), layout.log(u.name), env=dict(u.env), stop_grace=STOP_GRACE)


def serve(layout: Layout) -> int:
    """The host supervisor's main loop (until SIGTERM); 1 if another one runs."""
    from cluster.supervisor import Supervisor

    # Handlers before the lock: whoever sees the lock held may signal at once.
    stopping: list[int] = []
    reload = [1]
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    signal.signal(signal.SIGHUP, lambda *_: reload.append(1))
    os.makedirs(layout.run, exist_ok=True)
    lock = open(layout.supervisor_lock, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"error: a host supervisor already runs (pid {supervisor_pid(layout)})", file=sys.stderr)
        return 1
    _write(layout.supervisor_pid, f"{os.getpid()}\n")
    sup = Supervisor([], status_path=layout.supervisor_status)
    specs: dict[str, Unit] = {}          # what each running Proc was made from
    pending: dict[str, Unit | None] = {}  # stopping, then replaced (Unit) or dropped (None)
    log.info("host supervisor %d: units in %s", os.getpid(), layout.units)

    def publish() -> None:
        sup.info["units"] = {n: u.digest() for n, u in specs.items() if n not in pending}
        sup.info["root"] = layout.root

    try:
        while not stopping:
            if reload:
                reload.clear()
                want = installed(layout)
                for name in list(specs):
                    if name not in want or want[name] != specs[name]:
                        pending[name] = want.get(name)
                        sup.want(name, "stopped")
                for name, u in want.items():
                    if name not in specs:
                        specs[name] = u
                        sup.add(_spec(layout, u))
                        sup.want(name, "running")
                        log.info("unit %s added", name)
                    elif name in pending:
                        pending[name] = u
            for name, u in list(pending.items()):
                if sup.procs[name].popen is None:
                    del pending[name], sup.procs[name], specs[name]
                    if u is None:
                        log.info("unit %s removed", name)
                    else:
                        specs[name] = u
                        sup.add(_spec(layout, u))
                        sup.want(name, "running")
                        log.info("unit %s changed: restarted", name)
            publish()
            sup.tick()
            time.sleep(0.1)
    finally:
        log.info("host supervisor stopping every unit")
        sup.stop_all(list(STOP_ORDER), timeout=STOP_GRACE + 5)
        for path in (layout.supervisor_status, layout.supervisor_pid):
            _unlink(path)
        lock.close()
    return 0


def _detach(layout: Layout) -> int:
    """Start `serve` in a new session with its output in its log, and return once it
    holds the lock (0), or has exited (1)."""
    os.makedirs(layout.logs, exist_ok=True)
    with open(layout.log("supervisor"), "ab") as logf:
        child = subprocess.Popen(_command("supervise-host"), stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT, cwd="/", start_new_session=True)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if supervisor_pid(layout) == child.pid:
            return 0
        if child.poll() is not None:
            print(f"error: the host supervisor exited with code {child.returncode}; see "
                  f"{layout.log('supervisor')}", file=sys.stderr)
            return 1
        time.sleep(0.02)
    print("error: the host supervisor did not take its lock in time", file=sys.stderr)
    return 1


def parser() -> argparse.ArgumentParser:
    from machinery import klog
    p = argparse.ArgumentParser(prog="minik8s supervise-host",
                                description="run this host's minik8s units when systemd does not "
                                            "(started by `minik8s init`/`join`, not meant to be typed)")
    p.add_argument("--detach", action="store_true",
                   help="start the supervisor in its own session and return once it runs")
    klog.add_flags(p)
    return p


def main(argv: list[str]) -> int:
    """`minik8s supervise-host [--detach] [-v N]`; the host is MINIK8S_ROOT's."""
    from machinery import klog
    args = parser().parse_args(argv)
    klog.setup_from_args(args)
    layout = current()
    if args.detach:
        return _detach(layout)
    return serve(layout)

