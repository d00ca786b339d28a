"""A local etcd child process for single-machine use (found on PATH, data on disk).

`LocalEtcd` starts etcd on a loopback port and supervises it: if etcd exits while it
should be running, it is started again on the same port and data directory with
back-off, so clients that retry (the API server's storage layer does) carry on.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

log = logging.getLogger("minik8s.etcd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM etcd when the thread that started it dies, so a killed
    API server never leaves an orphaned etcd holding the data directory. (Both spawning
    threads, the main one and the supervisor, live as long as etcd should.)"""
    import ctypes
    import signal
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class LocalEtcd:
    def __init__(self, data_dir: str, *, port: int = 0):
        self.data_dir = data_dir
        self.port = port or _free_port()
        self.peer_port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("etcd is not on PATH (install Debian's etcd-server, or run hack/setup.sh)")
        os.makedirs(self.data_dir, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        log_file = open(os.path.join(self.data_dir, "etcd.log"), "ab")
        return subprocess.Popen(
            [binary, "--name", "minik8s", "--data-dir", os.path.join(self.data_dir, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"minik8s={peer}"],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with code {self.proc.returncode}; see "
                                   f"{os.path.join(self.data_dir, 'etcd.log')}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)  # poll interval while etcd starts
        raise RuntimeError(f"etcd did not become healthy within {timeout:.0f}s")

    def start(self, timeout: float = 30.0) -> None:
        self.proc = self._spawn()
        try:
            self._wait_healthy(timeout)
        except RuntimeError:
            self.stop()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="etcd-supervisor",
                                            daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            code = self.proc.wait()
            if self._stopping.is_set():
                return
            log.warning("etcd exited with code %s; restarting in %.1fs", code, backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 30.0)
            try:
                self.proc = self._spawn()
            except RuntimeError as exc:
                log.error("cannot restart etcd: %s", exc)
                return

    def stop(self) -> None:
        self._stopping.set()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
