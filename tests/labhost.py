"""One lab host for a test: a network namespace and a mount namespace of its own, kept
alive by a holder process, in which commands run through nsenter.

Small on purpose (h-lab builds the whole lab: bridges, routers, sshd). The host has
`lo` up and a link `eth0` (a veth whose peer stays in the namespace) with one address,
so that it has an address other hosts would reach it by, and the standard ports (6443,
2379, 10250...) are free whatever runs on the machine. Its mount namespace is private;
`binds` puts directories of the test over paths of the host (say a temporary dir over
/run/netns); `root` is the MINIK8S_ROOT its commands get, so /etc/minik8s and friends
are under it.

`stop()` kills every process in the host's network namespace (SIGKILL, by pid, checking
each one's namespace) and then the holder, so nothing the test started outlives it.
Needs root.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"   # commands may run with another PATH
SETUP = """
set -e
ip link set lo up
ip link add eth0 type veth peer name eth0-peer
ip link set eth0-peer up
ip addr add "$ADDRESS" dev eth0
ip link set eth0 up
for pair in $BINDS; do mount --bind "${pair%%=*}" "${pair#*=}"; done
echo ready
exec sleep infinity
"""


class LabHost:
    def __init__(self, address: str = "10.250.0.2/24", *, root: str = "",
                 binds: dict[str, str] | None = None):
        self.address, self.ip = address, address.split("/")[0]
        self.root = root
        self.binds = dict(binds or {})
        self.holder: subprocess.Popen | None = None

    def start(self) -> LabHost:
        env = {**os.environ, "ADDRESS": self.address,
               "BINDS": " ".join(f"{src}={dst}" for src, dst in self.binds.items())}
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c", SETUP],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True)
        line = self.holder.stdout.readline().strip()
        if line != "ready":
            err = self.holder.stderr.read() if self.holder.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"lab host did not start: {line!r} {err}")
        self.netns = os.readlink(f"/proc/{self.holder.pid}/ns/net")
        return self

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, "MINIK8S_ROOT": self.root, **(extra or {})}

    def command(self, argv: list[str]) -> list[str]:
        return [NSENTER, "-t", str(self.holder.pid), "-n", "-m", "--", *argv]

    def run(self, argv: list[str], *, input: str | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run argv on the host; its CompletedProcess (text)."""
        return subprocess.run(self.command(argv), input=input, capture_output=True, text=True,
                              timeout=timeout, env=self.env(env),
                              stdin=None if input is not None else subprocess.DEVNULL)

    def pids(self) -> list[int]:
        """Every process in the host's network namespace, the holder aside."""
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) != self.holder.pid:
                try:
                    if os.readlink(f"/proc/{d}/ns/net") == self.netns:
                        out.append(int(d))
                except OSError:
                    pass
        return out

    def stop(self, timeout: float = 15.0) -> None:
        if self.holder is None:
            return
        if self.holder.poll() is None and hasattr(self, "netns"):
            deadline = time.monotonic() + timeout
            while (pids := self.pids()) and time.monotonic() < deadline:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(timeout)
        for f in (self.holder.stdout, self.holder.stderr):
            f.close()


def minik8s(*args: str) -> list[str]:
    return [sys.executable, "-m", "cluster.cli", *args]
