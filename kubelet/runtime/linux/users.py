"""Who a container's process runs as: an image config's `User` resolved against the
image's own /etc/passwd and /etc/group, as runc's libcontainer/user (GetExecUser) does.

`exec_user(spec)` takes "", "name", "uid", "name:group", "uid:gid" or "uid:group" and
returns the uid, the primary gid, the supplementary gids and the home directory:
- a user matches a passwd entry by name, or by uid when it is numeric; the first match
  wins and gives uid, gid and home. A numeric user with no entry is fine (gid 0, home
  "/"); a name with no entry is an error worded as runc words it
  (`unable to find user app: no matching entries in passwd file`). "" is uid 0.
- an explicit group matches /etc/group by name, or by gid when numeric, the same way;
  without one, the primary gid is the passwd entry's and the supplementary gids are
  those of the groups that list the matched user's name as a member.
- a missing passwd or group file has no entries (so only numeric ids resolve).

The caller reads the files from inside the container's root (after pivot_root), so a
name means what the image says. Stdlib only: the shim imports this module in a bare
interpreter.
"""
from __future__ import annotations

import os
import stat

MAX_FILE = 16 * 1024 * 1024  # read no more of a passwd or group file than this
MAX_ID = 2**31 - 1  # runc's range for ids (a Go int32, as the kernel's uid_t is used)


class UserError(Exception):
    """The user or group cannot be resolved (Kubernetes: CreateContainerError)."""


class ExecUser:
    __slots__ = ("uid", "gid", "groups", "home")

    def __init__(self, uid: int, gid: int, groups: list[int], home: str) -> None:
        self.uid, self.gid, self.groups, self.home = uid, gid, groups, home

    def to_json(self) -> dict:
        return {"uid": self.uid, "gid": self.gid, "groups": self.groups, "home": self.home}


def _entries(path: str, fields: int) -> list[list[str]]:
    """The colon-separated lines of a passwd or group file, padded to `fields`; [] if
    the file does not exist."""
    try:
        # Never blocking on, nor reading without end from, what an image put there (a
        # FIFO, a device): only a regular file counts.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return []
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{path} is not a regular file")
        text = f.read(MAX_FILE).decode("utf-8", errors="replace")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        out.append(parts + [""] * (fields - len(parts)))
    return out


def _number(s: str) -> int | None:
    # Go's strconv.Atoi: an optional sign and decimal digits only.
    body = s[1:] if s[:1] in "+-" else s
    return int(s) if body.isdigit() and body.isascii() else None


def _in_range(n: int, what: str) -> int:
    if not 0 <= n <= MAX_ID:
        raise UserError(f"{what} {n} is out of range (0 to {MAX_ID})")
    return n


def exec_user(spec: str, *, passwd_path: str = "/etc/passwd",
              group_path: str = "/etc/group") -> ExecUser:
    user_arg, _, group_arg = spec.partition(":")
    uid_arg, gid_arg = _number(user_arg), _number(group_arg)
    uid, gid, home, matched_name = 0, 0, "/", ""

    def user_matches(e: list[str]) -> bool:
        n = _number(e[2])
        if not user_arg:
            return n == 0
        if uid_arg is not None:  # numeric: always a uid, never a name
            return n == uid_arg
        return e[0] == user_arg

    for e in _entries(passwd_path, 7):
        if _number(e[2]) is not None and _number(e[3]) is not None and user_matches(e):
            matched_name, uid, gid, home = e[0], int(e[2]), int(e[3]), e[5] or "/"
            break
    else:
        if user_arg:
            if uid_arg is None:
                raise UserError(f"unable to find user {user_arg}: no matching entries in passwd file")
            uid = _in_range(uid_arg, "uid")

    groups: list[int] = []
    entries = [e for e in _entries(group_path, 4) if _number(e[2]) is not None]
    if group_arg:
        for e in entries:
            if (int(e[2]) == gid_arg) if gid_arg is not None else (e[0] == group_arg):
                gid = int(e[2])
                break
        else:
            if gid_arg is None:
                raise UserError(f"unable to find group {group_arg}: no matching entries in group file")
            gid = _in_range(gid_arg, "gid")
    elif matched_name:
        # Supplementary groups only in the implicit form, as runc: an explicit group
        # means exactly that group.
        groups = [int(e[2]) for e in entries if matched_name in e[3].split(",")]
    return ExecUser(uid, gid, groups, home)


def effective_spec(image_user: str, run_as_user: int | None, run_as_group: int | None) -> str:
    """The user spec a container runs with, Kubernetes' way: securityContext.runAsUser
    replaces the image's user (and its group: a uid alone gets its passwd entry's gid,
    or 0); runAsGroup replaces the group and, without runAsUser, keeps the image's user."""
    image_name, _, image_group = image_user.partition(":")
    if run_as_user is not None:
        user, group = str(run_as_user), ""
    else:
        user, group = image_name, image_group
    if run_as_group is not None:
        group = str(run_as_group)
    return f"{user}:{group}" if group else user
