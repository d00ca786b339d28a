"""Supervise child processes: start them, restart them with back-off when they die,
stop them on request, and publish what they are doing.

The shape is a level-based loop, like everything else here: each component has a
desired state (running or stopped) and `tick()` compares it with the process it has,
then acts: a dead process that should run is started again once its back-off has
passed (1 s doubling to 30 s, reset after it has run for a minute); a live process
that should not run gets SIGTERM and, after a grace period, SIGKILL. Every change is
written to a status file (JSON) that `minik8s status` and `minik8s node stop` read.

Single-threaded: call `tick()` from one thread (the supervisor's main loop, or a
bring-up step waiting for something). Children are spawned from that thread with
PR_SET_PDEATHSIG, so if the supervisor is killed its children get SIGTERM too; pods
started by kubelets are not its children and outlive it (`minik8s down` removes them
through the cluster's cgroup tree).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

from cluster import cgroups, host

log = logging.getLogger("minik8s.supervisor")

LOG_ROTATE_BYTES = 20 * 1024 * 1024


@dataclass
class Spec:
    """How to run one component."""
    name: str
    argv: list[str]
    log_path: str
    netns: str | None = None          # path of a network namespace to run in
    cgroup_dirs: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    stop_grace: float = 10.0          # seconds between SIGTERM and SIGKILL


@dataclass
class Proc:
    spec: Spec
    desired: str = "stopped"          # "running" | "stopped"
    popen: subprocess.Popen | None = None
    start: int | None = None          # the process's start time (host.start_time)
    started_at: float = 0.0           # wall clock, for uptime
    started_mono: float = 0.0
    restarts: int = 0
    last_exit: int | None = None
    backoff: float = 0.0
    next_start: float = 0.0           # monotonic time of the next attempt
    kill_at: float | None = None      # monotonic time to escalate to SIGKILL
    error: str = ""

    @property
    def state(self) -> str:
        if self.popen is not None:
            return "stopping" if self.kill_at is not None else "running"
        if self.desired == "stopped":
            return "stopped"
        return "backoff" if self.error or self.last_exit is not None else "starting"


class Supervisor:
    def __init__(self, specs: list[Spec], *, status_path: str | None = None,
                 min_backoff: float = 1.0, max_backoff: float = 30.0, reset_after: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.procs = {s.name: Proc(s) for s in specs}
        self.status_path = status_path
        self.min_backoff, self.max_backoff, self.reset_after = min_backoff, max_backoff, reset_after
        self.clock = clock
        self.info: dict = {}              # extra facts published with the status
        self._last_status = None

    # -- desired state ------------------------------------------------------------------

    def add(self, spec: Spec) -> None:
        self.procs[spec.name] = Proc(spec)

    def want(self, name: str, desired: str) -> None:
        p = self.procs[name]
        if p.desired != desired:
            p.desired = desired
            p.backoff, p.next_start, p.error = 0.0, 0.0, ""
        self.tick()

    # -- the loop -------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        for p in self.procs.values():
            if p.popen is not None and p.popen.poll() is not None:
                self._exited(p, now)
            if p.desired == "running" and p.popen is None and now >= p.next_start:
                self._spawn(p, now)
            elif p.desired == "stopped" and p.popen is not None:
                if p.kill_at is None:
                    self._signal(p, signal.SIGTERM)
                    p.kill_at = now + p.spec.stop_grace
                elif now >= p.kill_at:
                    self._signal(p, signal.SIGKILL)
        self.write_status()

    def _exited(self, p: Proc, now: float) -> None:
        code = p.popen.returncode
        p.popen, p.start, p.kill_at = None, None, None
        p.last_exit = code
        if p.desired != "running":
            log.info("%s stopped (exit code %s)", p.spec.name, code)
            return
        if now - p.started_mono >= self.reset_after:
            p.backoff = 0.0
        p.backoff = min(max(p.backoff * 2, self.min_backoff), self.max_backoff)
        p.next_start = now + p.backoff
        p.restarts += 1
        log.warning("%s exited with code %s; restarting in %.0fs (see %s)",
                    p.spec.name, code, p.backoff, p.spec.log_path)

    def _spawn(self, p: Proc, now: float) -> None:
        s = p.spec
        try:
            logf = _open_log(s.log_path)
            logf.write(f"--- minik8s: starting {s.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}"
                       f" (restart {p.restarts}): {' '.join(s.argv)}\n".encode())
            logf.flush()
            with logf:
                p.popen = subprocess.Popen(
                    s.argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **s.env}, cwd="/",
                    start_new_session=True, preexec_fn=_preexec(s))
        except (OSError, subprocess.SubprocessError) as e:
            p.error = f"cannot start: {e}"
            p.backoff = min(max(p.backoff * 2, self.min_backoff), self.max_backoff)
            p.next_start = now + p.backoff
            log.error("%s: %s", s.name, p.error)
            return
        p.error = ""
        p.start = host.start_time(p.popen.pid)
        p.started_at, p.started_mono = time.time(), now
        log.info("%s started (pid %d)", s.name, p.popen.pid)

    def _signal(self, p: Proc, sig: int) -> None:
        try:
            p.popen.send_signal(sig)
        except ProcessLookupError:
            pass

    def stop_all(self, order: list[str] | None = None, *, timeout: float = 15.0) -> None:
        """Stop every component, in `order` (names; the rest after), each group waiting
        for the previous one to be gone, so kubelets stop before the API server does."""
        order = [n for n in order or [] if n in self.procs]
        names = order + [n for n in self.procs if n not in order]
        for name in names:
            self.procs[name].desired = "stopped"
            self.tick()
            deadline = self.clock() + timeout
            while self.procs[name].popen is not None and self.clock() < deadline:
                time.sleep(0.02)
                self.tick()

    def wait(self, cond: Callable[[], object], timeout: float, interval: float = 0.1):
        """Poll cond (ticking meanwhile, so restarts happen) until it returns something
        true; that value, or None on timeout."""
        deadline = self.clock() + timeout
        while True:
            self.tick()
            try:
                value = cond()
            except Exception:  # noqa: BLE001 - what we poll may not be up yet
                value = None
            if value or self.clock() >= deadline:
                return value or None
            time.sleep(interval)

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict:
        comps = {}
        for name, p in self.procs.items():
            comps[name] = {"state": p.state, "desired": p.desired,
                           "pid": p.popen.pid if p.popen else None, "start": p.start,
                           "started_at": p.started_at if p.popen else None,
                           "restarts": p.restarts, "last_exit": p.last_exit,
                           "error": p.error, "log": p.spec.log_path}
        return {"supervisor": {"pid": os.getpid(), "start": host.start_time(os.getpid())},
                **self.info, "components": comps}

    def write_status(self) -> None:
        if not self.status_path:
            return
        st = self.status()
        if st == self._last_status:
            return
        tmp = self.status_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f, indent=1)
        os.replace(tmp, self.status_path)
        self._last_status = st


def _open_log(path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        if os.path.getsize(path) > LOG_ROTATE_BYTES:
            os.replace(path, path + ".1")
    except FileNotFoundError:
        pass
    return open(path, "ab")


def _preexec(spec: Spec):
    netns, dirs = spec.netns, list(spec.cgroup_dirs)

    def run():
        host.die_with_parent()
        if dirs:
            cgroups.join(dirs)
        if netns:
            host.setns(netns)
    return run
