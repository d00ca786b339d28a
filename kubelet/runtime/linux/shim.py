"""The helper processes of the Linux runtime, run by path: `python -I -S .../shim.py MODE ...`.

sandbox JSON STATUS_FD
    The pod's sandbox (Kubernetes' "pause"): unshares the pod's network, UTS and IPC
    namespaces (and PID, for shareProcessNamespace), sets the hostname, joins the
    sandbox's cgroup, forks the holder process and reports its pid. The holder sleeps until
    killed, reaping orphans when it is PID 1 of the pod.
container DIR STATUS_FD
    The container's monitor (like conmon): reads DIR/config.json, starts the container
    process (which, once in its root, looks its user up in the image's own /etc/passwd
    and /etc/group, as runc does, and drops to it), reports its pid, then copies its
    stdout/stderr into the CRI log file and, when it exits, records exit code, time and
    OOM kill in DIR/state.json. A user the image does not name is reported as an error
    with no state.json: no container.
exec DIR -- ARGV...
    Runs ARGV in the namespaces and cgroup of DIR's running container, as its user with
    its env, and exits with its exit code.
server SOCKET_FD
    The fork server (a "zygote"): this file imported once, then one fork per sandbox or
    container monitor asked for on SOCKET_FD (a SOCK_SEQPACKET unix socket), so a helper
    costs a fork instead of an interpreter start. A request is one message, the JSON
    list [MODE, ARG] with fds attached: STATUS_FD, the helper's stderr and, optionally,
    its stdin and stdout. The forked child becomes the helper `shim.py MODE ARG
    STATUS_FD` would have left running (new session, cwd /, stdin and stdout /dev/null
    unless given) and reports on STATUS_FD as usual; the server itself never answers.
    Mode exec, ARG [DIR, ARGV], is exec reporting on STATUS_FD (see `exec_`). The
    server exits when the socket's other end closes (the kubelet is gone), and its
    children do not depend on it: killing the server, or the kubelet, leaves every
    helper running.

The sandbox holder and the container monitor detach from the runtime (a session of
their own; started as their own interpreter, also a fork whose parent exits at once), so
the kubelet can die and come back while pods keep running. Reports on STATUS_FD are one
JSON object: {"pid": ..., "start": ...} or {"error": ...}. Single-threaded on purpose:
setns into a mount namespace and fork need it. Stdlib only, and only stdlib-only kubelet
modules, for a fast start.

An interpreter's start-up was most of a helper's cost (two helpers start per pod), hence
the fork server, which pays it once; and most of it was imports (still paid by every
exec and by the server): `json`, `signal` and `selectors` pull in re, enum and
collections (~20 ms of CPU per start, half of it). So this file uses the C modules
under them directly: _json's scanner and encoder, _signal, select.epoll.
"""
from __future__ import annotations

import _json
import _signal as signal  # signal without its enum wrappers: plain ints
import errno
import os
import select
import stat
import sys
import time

# Its stdlib-only siblings are imported as top-level modules, by directory: importing
# them as kubelet.runtime.* would run the runtime interface's imports (dataclasses,
# abc, machinery) on every helper start.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_here, os.path.dirname(_here)]
import kernel  # noqa: E402
import logs  # noqa: E402
import users  # noqa: E402
from cgroups import Cgroup  # noqa: E402


class _Decoding:  # the attributes _json's scanner reads from a json.JSONDecoder
    strict, object_hook, object_pairs_hook = True, None, None
    parse_float, parse_int, parse_constant = float, int, None


_scan = _json.make_scanner(_Decoding())
_encode = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ": ", ", ",
                             False, False, True)


def _loads(text: str):
    return _scan(text.strip(), 0)[0]


def _dumps(obj) -> str:
    return "".join(_encode(obj, 0))


def _load(path: str):
    with open(path) as f:
        return _loads(f.read())

# Python ignores these; an exec'd program would inherit "ignored".
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)


_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class StartError(Exception):
    """The container's command could not be executed."""


class CreateError(Exception):
    """The container cannot be made as configured (its user does not exist in the
    image): no container is recorded, and the runtime raises CreateContainerError."""


def _report(fd: int, msg: dict) -> None:
    os.write(fd, _dumps(msg).encode())
    os.close(fd)


def _write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(_dumps(obj))
    os.replace(tmp, path)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _reset_signals() -> None:
    for sig in _RESET_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


# -- sandbox -------------------------------------------------------------------------

def sandbox(cfg: dict, status_fd: int, *, detach: bool = True) -> None:
    """detach: fork the holder and exit (not needed when the fork server started us, in
    a session of our own, unless the holder must be PID 1 of a new PID namespace)."""
    try:
        kernel.unshare(sum(kernel.NS_FLAGS[n] for n in cfg["unshare"]))
        if "uts" in cfg["unshare"]:
            kernel.sethostname(cfg["hostname"])
        Cgroup.from_json(cfg["cgroup"]).join()
    except OSError as e:
        _report(status_fd, {"error": str(e)})
        sys.exit(1)
    if detach or "pid" in cfg["unshare"]:
        pid = os.fork()  # after unshare(CLONE_NEWPID), the child is PID 1 of the pod
        if pid:
            _report(status_fd, {"pid": pid, "start": kernel.start_time(pid)})
            os._exit(0)
        os.close(status_fd)
    else:
        me = os.getpid()
        _report(status_fd, {"pid": me, "start": kernel.start_time(me)})
    os.chdir("/")

    def reap(*_):
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    while True:
        signal.pause()


# -- container -----------------------------------------------------------------------

def container(cdir: str, status_fd: int, *, detach: bool = True) -> None:
    """detach: fork and let the parent exit, so that init adopts the monitor (not needed
    when the fork server started us: it reaps us, and init adopts us if it dies)."""
    cfg = _load(os.path.join(cdir, "config.json"))
    state_path = os.path.join(cdir, "state.json")
    if detach and os.fork():  # the runtime reaps our parent, init adopts us
        os._exit(0)
    me = os.getpid()
    state = {"shim_pid": me, "shim_start": kernel.start_time(me)}
    cgroup = Cgroup.from_json(cfg["cgroup"])
    try:
        pid, out_r, err_r, user = _start(cfg)
    except CreateError as e:  # no container: nothing to record
        _report(status_fd, {"error": str(e)})
        return
    except Exception as e:  # noqa: BLE001 - any failure to start is the container's
        state.update(finished_at=time.time(), exit_code=128, reason="StartError", message=str(e))
        _write_json(state_path, state)
        _report(status_fd, {"error": str(e)})
        return
    # The user as resolved in the image, for exec (kubectl exec, exec probes) to run as.
    state.update(pid=pid, start=kernel.start_time(pid), started_at=time.time(), user=user)
    _write_json(state_path, state)
    _report(status_fd, {"pid": pid, "start": state["start"]})

    status = _pump(cfg, pid, cgroup, {out_r: b"stdout", err_r: b"stderr"})
    code = _exit_code(status)
    oom = cgroup.oom_kills() > 0
    state.update(finished_at=time.time(), exit_code=code, oom_killed=oom,
                 reason="OOMKilled" if oom else "Completed" if code == 0 else "Error")
    _write_json(state_path, state)


def _start(cfg: dict):
    """Fork the container's first process; return (pid, stdout pipe, stderr pipe, the
    user it runs as: users.ExecUser.to_json()). Raises CreateError, or RuntimeError
    when it could not be started."""
    sbx = cfg["sandbox"]
    ns = {n: os.open(f"/proc/{sbx['pid']}/ns/{n}", os.O_RDONLY | os.O_CLOEXEC)
          for n in cfg["join"]}
    if kernel.start_time(sbx["pid"]) != sbx["start"]:
        raise RuntimeError("the pod sandbox is gone")
    if cfg["pid_mode"] == "private":
        kernel.unshare(kernel.CLONE_NEWPID)  # our next child is PID 1 of a new namespace
    elif cfg["pid_mode"] == "pod":
        kernel.setns(ns.pop("pid"), kernel.CLONE_NEWPID)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    # The child's reports, each a kind byte, a body and a NUL: U (the user it runs as,
    # JSON), then C (CreateError) or S (any other failure). A successful exec closes it.
    fail_r, fail_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(fail_r)
            _child(cfg, ns, out_w, err_w, fail_w)
        except BaseException as e:  # noqa: BLE001 - reported to the monitor
            kind, text = ((b"C", str(e)) if isinstance(e, CreateError) else
                          (b"S", str(e)) if isinstance(e, StartError) else
                          (b"S", f"{type(e).__name__}: {e}"))
            os.write(fail_w, kind + text.replace("\0", " ").encode(errors="replace") + b"\0")
        os._exit(128)
    for fd in (out_w, err_w, fail_w, *ns.values()):
        os.close(fd)
    reports = b""
    while chunk := os.read(fail_r, 4096):
        reports += chunk
    os.close(fail_r)
    user = None
    for report in reports.split(b"\0"):
        kind, body = report[:1], report[1:].decode(errors="replace")
        if kind == b"U":
            user = _loads(body)
        elif kind:
            os.waitpid(pid, 0)
            for fd in (out_r, err_r):
                os.close(fd)
            raise (CreateError if kind == b"C" else RuntimeError)(body)
    return pid, out_r, err_r, user


def _child(cfg: dict, ns: dict[str, int], out_w: int, err_w: int, report_w: int) -> None:
    """In the container's first process: join, isolate, build the root, become the
    user (looked up in the image's own files, as runc does), exec."""
    Cgroup.from_json(cfg["cgroup"]).join()
    for name in ("ipc", "uts", "net"):
        if name in ns:
            kernel.setns(ns[name], kernel.NS_FLAGS[name])
    kernel.unshare(kernel.CLONE_NEWNS)
    # Nothing mounted from here on may propagate back to the node.
    kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
    _build_root(cfg)
    os.chdir(cfg["cwd"])
    try:
        user = users.exec_user(cfg.get("user", ""))
    except (users.UserError, OSError) as e:
        raise CreateError(str(e)) from None
    env = cfg["env"] if "HOME" in cfg["env"] else {**cfg["env"], "HOME": user.home}
    os.write(report_w, b"U" + _dumps(user.to_json()).encode() + b"\0")
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    _become(user.to_json())
    _reset_signals()
    try:
        _execvpe(cfg["argv"][0], cfg["argv"], env)
    except FileNotFoundError:
        raise StartError(f'exec: "{cfg["argv"][0]}": executable file not found in $PATH') from None
    except OSError as e:
        raise StartError(f'exec: "{cfg["argv"][0]}": {e.strerror}') from None


def _execvpe(file: str, argv: list[str], env: dict) -> None:
    """os.execvpe without its lazy imports (os.get_exec_path imports warnings), which
    cannot work once in a container's root that has no Python: the PATH search as
    execvp(3) does it, with the env's PATH. Raises the first error that is not "no such
    file" if there was one, else that."""
    if "/" in file:
        os.execve(file, argv, env)
    first = last = None
    for d in env.get("PATH", _DEFAULT_PATH).split(":"):
        try:
            os.execve(os.path.join(d, file), argv, env)
        except (FileNotFoundError, NotADirectoryError) as e:
            last = e
        except OSError as e:
            last = first = first or e
    raise first or last or FileNotFoundError(file)


def _become(user: dict) -> None:
    """Drop to the user's ids (root's capabilities go with uid 0, as in runc)."""
    # As runc does (fixStdioPermissions): the stdio pipes were made by root outside the
    # container, and a user must be able to reopen them (/dev/stdout, /proc/self/fd/1:
    # images link their log files there). /dev/null is left alone.
    for fd in (0, 1, 2):
        st = os.fstat(fd)
        if st.st_uid == user["uid"] or (stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)):
            continue
        try:
            os.fchown(fd, user["uid"], st.st_gid)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM, errno.EROFS):
                raise
    os.setgroups(user["groups"])
    os.setgid(user["gid"])
    os.setuid(user["uid"])


def _build_root(cfg: dict) -> None:
    """The container's root: the image (read-only lower layer) under a writable tmpfs
    layer private to this container, with fresh /proc, /dev, /sys and /tmp, the pod's
    /etc files, /dev/shm and volumes. Then pivot_root into it."""
    k = kernel
    # The tmpfs goes over the container's directory (only in this mount namespace: the
    # monitor still sees its files), and the root's mount point is on the tmpfs too:
    # nothing to create on the node's disk.
    scratch = cfg["dir"]
    root = os.path.join(scratch, "root")
    k.mount("tmpfs", scratch, "tmpfs", 0, "mode=0755")
    for d in ("upper", "work", "root"):
        os.mkdir(os.path.join(scratch, d))
    lower = cfg["lowerdirs"]
    if len(":".join(lower)) > 2048 and len(lower) > 1:
        # The options must fit in a page: name the layers relative to their common
        # directory (overlayfs resolves them from the cwd), as containerd does.
        common = os.path.commonpath(lower)
        os.chdir(common)
        lower = [os.path.relpath(p, common) for p in lower]
    k.mount("overlay", root, "overlay", 0,
            f"lowerdir={':'.join(lower)},upperdir={scratch}/upper,workdir={scratch}/work")
    os.chdir(root)
    os.makedirs(".oldroot", exist_ok=True)
    k.pivot_root(".", ".oldroot")
    os.chdir("/")
    old = "/.oldroot"
    # From here paths are the container's: symlinks in the image resolve inside it.
    for masked in cfg["mask"]:  # the kubelet's state: other pods' volumes and secrets
        if os.path.isdir(masked):
            k.mount("tmpfs", masked, "tmpfs", k.MS_RDONLY, "size=4k")
    nosuid_nodev_noexec = k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC
    os.makedirs("/proc", exist_ok=True)
    k.mount("proc", "/proc", "proc", nosuid_nodev_noexec)
    os.makedirs("/sys", exist_ok=True)
    k.mount("sysfs", "/sys", "sysfs", nosuid_nodev_noexec | k.MS_RDONLY)
    os.makedirs("/tmp", exist_ok=True)
    k.mount("tmpfs", "/tmp", "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=1777")
    _build_dev(old + cfg["shm"])
    for dst, src in cfg["etc"].items():
        _bind(old + src, dst, read_only=False)
    for m in sorted(cfg["mounts"], key=lambda m: m["dst"].rstrip("/").count("/")):
        _bind(old + m["src"], m["dst"], read_only=m["ro"])
    # Made by the runtime when the image lacks it, as runc does (before a read-only root).
    os.makedirs(cfg["cwd"], exist_ok=True)
    k.umount(old)
    os.rmdir(old)
    if cfg["read_only_root"]:
        k.mount(None, "/", None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY)


def _build_dev(shm: str) -> None:
    k = kernel
    os.makedirs("/dev", exist_ok=True)
    k.mount("tmpfs", "/dev", "tmpfs", k.MS_NOSUID, "mode=0755,size=65536k")
    for name, minor in (("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)):
        os.mknod(f"/dev/{name}", 0o666 | 0o020000, os.makedev(1, minor))
        os.chmod(f"/dev/{name}", 0o666)
    os.mknod("/dev/tty", 0o666 | 0o020000, os.makedev(5, 0))
    os.chmod("/dev/tty", 0o666)
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("ptmx", "pts/ptmx")):
        os.symlink(target, f"/dev/{link}")
    for d in ("pts", "shm", "mqueue"):
        os.mkdir(f"/dev/{d}")
    k.mount("devpts", "/dev/pts", "devpts", k.MS_NOSUID | k.MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620")
    k.mount("mqueue", "/dev/mqueue", "mqueue", k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC)
    k.mount(shm, "/dev/shm", None, k.MS_BIND)


def _bind(src: str, dst: str, *, read_only: bool) -> None:
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.islink(dst) and not os.path.exists(dst):
            os.unlink(dst)  # an image's dangling link (resolv.conf -> a resolver's runtime dir)
        if not os.path.exists(dst):
            open(dst, "a").close()
    kernel.mount(src, dst, None, kernel.MS_BIND | kernel.MS_REC)
    if read_only:
        kernel.mount(None, dst, None, kernel.MS_BIND | kernel.MS_REMOUNT | kernel.MS_RDONLY)


def _pump(cfg: dict, pid: int, cgroup: Cgroup, pipes: dict[int, bytes]) -> int:
    """Copy the container's output into its log until it has exited; its wait status."""
    writer = logs.LogWriter(cfg["log_path"], max_bytes=cfg["log_max_bytes"],
                            max_files=cfg["log_max_files"])
    pidfd = os.pidfd_open(pid)
    ep = select.epoll()
    ep.register(pidfd, select.EPOLLIN)
    for fd in pipes:
        ep.register(fd, select.EPOLLIN)
    status = None
    while pipes or status is None:
        # After the exit, a process outside the container (there should be none) could
        # hold the pipes open: wait for it a little only.
        try:
            events = ep.poll(-1 if status is None else 2.0)
        except InterruptedError:
            continue
        if not events:
            break
        for fd, _ in events:
            if fd == pidfd:
                status = os.waitpid(pid, 0)[1]
                ep.unregister(pidfd)
                os.close(pidfd)
                # With a pod-wide PID namespace the kernel does not kill what the first
                # process started; do it, as runc does.
                cgroup.kill_all()
                continue
            data = os.read(fd, 65536)
            if data:
                writer.write(pipes[fd], data)
            else:
                ep.unregister(fd)
                os.close(fd)
                del pipes[fd]
    ep.close()
    writer.close()
    return status


# -- exec ----------------------------------------------------------------------------

def exec_(cdir: str, argv: list[str], status_fd: int | None = None) -> None:
    """Run argv in the namespaces and cgroup of cdir's running container, as a child of
    this process. Exit code 126 when it cannot be run there, 127 when
    argv[0] is not found, else the command's (128 + n for signal n).

    Without status_fd (its own interpreter): exit with that code (never return); killing this process
    kills the command, and TERM, INT and HUP are passed on to it. With status_fd (a
    SOCK_SEQPACKET socket, forked by the server): report {"pid": P, "start": T} once the
    command's process exists, then {"exit": CODE}, and keep P a zombie until the peer
    closes its end, so that the kubelet may signal P, or open a pidfd on it, without
    ever reaching a recycled pid."""
    try:
        cfg, user, procs = _enter(cdir)
        problem = None
    except (OSError, RuntimeError) as e:  # reported by the child, so the protocol is one
        cfg, user, procs, problem = None, None, [], str(e)
    child = os.fork()
    if child == 0:
        try:
            kernel.set_parent_death_signal(signal.SIGKILL)  # killing exec kills the command
            if problem:
                sys.stderr.write(f"{problem}\n")
                os._exit(126)
            for fd in procs:
                os.write(fd, b"0")
            try:
                os.chdir(cfg["cwd"])
            except OSError:
                os.chdir("/")
            env = cfg["env"]
            if user:  # as the container's process: its ids, and its HOME
                if "HOME" not in env:
                    env = {**env, "HOME": user["home"]}
                _become(user)
            _reset_signals()
            _execvpe(argv[0], argv, env)
        except FileNotFoundError:
            sys.stderr.write(f'exec: "{argv[0]}": executable file not found in $PATH\n')
            os._exit(127)
        except BaseException as e:  # noqa: BLE001
            sys.stderr.write(f"exec: {e}\n")
            os._exit(126)
    for fd in procs:
        os.close(fd)
    if status_fd is None:
        def forward(sig, _frame):
            try:
                os.kill(child, sig)
            except ProcessLookupError:
                pass
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, forward)
        sys.exit(_exit_code(os.waitpid(child, 0)[1]))  # PEP 475: retried on EINTR
    os.write(status_fd, _dumps({"pid": child, "start": kernel.start_time(child)}).encode())
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # only the command holds the pipes now: their EOF is its exit
        os.dup2(null, fd)
    os.close(null)
    info = os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)  # not reaped yet
    code = info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status
    try:
        os.write(status_fd, _dumps({"exit": code}).encode())
        while os.read(status_fd, 1):  # until the peer closes (it sends nothing)
            pass
    except OSError:  # the peer is gone
        pass
    os.waitpid(child, 0)


def _enter(cdir: str) -> tuple[dict, dict | None, list[int]]:
    """Join the namespaces of cdir's running container (which must be running); its
    config, the user its process runs as (None: recorded by an older runtime, root),
    and its cgroup.procs files opened for the command to join."""
    cfg = _load(os.path.join(cdir, "config.json"))
    st = _load(os.path.join(cdir, "state.json"))
    pid = st.get("pid")
    if st.get("finished_at") or not pid:
        raise RuntimeError("container is not running")
    try:
        ns = {n: os.open(f"/proc/{pid}/ns/{n}", os.O_RDONLY | os.O_CLOEXEC)
              for n in ("ipc", "uts", "net", "pid", "mnt")}
    except (FileNotFoundError, ProcessLookupError):
        ns = None
    if ns is None or kernel.start_time(pid) != st.get("start"):
        raise RuntimeError("container is not running")
    # Opened now: once in the container's mount namespace the cgroup files are not
    # visible. Only the command joins the cgroup, not this process.
    procs = [os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
             for d in cfg["cgroup"]["dirs"]]
    for name in ("ipc", "uts", "net", "pid", "mnt"):
        kernel.setns(ns[name], kernel.NS_FLAGS[name])
        os.close(ns[name])
    return cfg, st.get("user"), procs


# -- the fork server ----------------------------------------------------------------

def server(sock_fd: int) -> None:
    """Fork a helper per request until the socket's peer is gone.

    Single-threaded, so every fork is a clean copy. A forked helper is the long-lived
    process itself (a sandbox holder, unless it must be PID 1 of a new PID namespace, or
    a container monitor): it is in a session of its own, the server reaps it through a
    pidfd when it exits, and if the server goes first, init adopts it, as it adopts a
    helper started as its own interpreter (which forks once more and exits to detach)."""
    import gc
    import socket  # not at the top: the other modes start faster without enum
    # As the gc module advises for fork without exec: no collections here, and every
    # object frozen before a fork, so children's collections do not write to (and copy)
    # the pages they share with us.
    gc.disable()
    sock = socket.socket(fileno=sock_fd)
    os.set_blocking(sock_fd, True)
    ep = select.epoll()
    ep.register(sock_fd, select.EPOLLIN)
    children: dict[int, int] = {}  # pidfd -> pid
    while True:
        try:
            events = ep.poll()
        except InterruptedError:
            continue
        for fd, _ in events:
            if fd != sock_fd:
                ep.unregister(fd)
                os.close(fd)
                os.waitpid(children.pop(fd), 0)
                continue
            try:
                msg, fds, _flags, _addr = socket.recv_fds(sock, 65536, 4)
            except ConnectionResetError:
                msg, fds = b"", []
            if not msg:  # the kubelet is gone
                os._exit(0)
            if len(fds) < 2:
                for f in fds:
                    os.close(f)
                continue
            gc.freeze()
            pid = os.fork()
            if pid == 0:
                gc.enable()
                ep.close()
                for f in children:
                    os.close(f)
                sock.close()
                _helper(_loads(msg.decode()), *fds)
            for f in fds:
                os.close(f)
            pidfd = os.pidfd_open(pid)
            children[pidfd] = pid
            ep.register(pidfd, select.EPOLLIN)


def _helper(request: list, status_fd: int, err_fd: int, in_fd: int | None = None,
            out_fd: int | None = None) -> None:
    """In a child of the server: become the helper `request` asks for, with stdin and
    stdout in_fd and out_fd (or /dev/null) and stderr err_fd; never returns."""
    code = 0
    try:
        os.setsid()
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        for fd, target in ((0, in_fd), (1, out_fd), (2, err_fd)):
            os.dup2(null if target is None else target, fd)
        for fd in {null, err_fd, in_fd, out_fd} - {None, 0, 1, 2}:
            os.close(fd)
        os.set_inheritable(status_fd, False)
        mode, arg = request
        if mode == "sandbox":
            sandbox(arg, status_fd, detach=False)
        elif mode == "container":
            container(arg, status_fd, detach=False)
        elif mode == "exec":
            exec_(*arg, status_fd)
        else:
            raise ValueError(f"unknown mode {mode!r}")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported on stderr; the status fd sees EOF
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def main(argv: list[str]) -> None:
    mode = argv[1]
    if mode in ("sandbox", "container"):
        # The container process must not inherit the report pipe, or the runtime would
        # wait for its end until the container exits.
        os.set_inheritable(int(argv[3]), False)
    if mode == "sandbox":
        sandbox(_loads(argv[2]), int(argv[3]))
    elif mode == "container":
        container(argv[2], int(argv[3]))
    elif mode == "exec":
        exec_(argv[2], argv[argv.index("--") + 1:])
    elif mode == "server":
        server(int(argv[2]))
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
