"""The audit log: kube-apiserver's `--audit-log-path`, one audit.k8s.io/v1 Event a line.

What this module guarantees
- Each audited request gives one JSON line, an `audit.k8s.io/v1` `Event` at the
  `Metadata` level and stage `ResponseComplete`: auditID, requestURI, verb (Kubernetes'
  verb: create, update, patch, delete, deletecollection, get, list, watch), user
  {username, uid, groups, extra}, sourceIPs, userAgent, objectRef {resource, namespace,
  name, apiGroup, apiVersion, subresource}, responseStatus {code, and for a failure the
  Status' status, reason and message}, requestReceivedTimestamp and stageTimestamp
  (RFC 3339 with microseconds, as Kubernetes' MicroTime), and the annotations
  `authorization.k8s.io/decision` (allow, forbid) and `authorization.k8s.io/reason` from
  `scope["audit_annotations"]`. Empty fields are left out, as Go's omitempty does.
- The user is `scope["user"]` (an authorizer.UserInfo, set by authentication) and the
  verb and objectRef are `scope["attributes"]`, what the authorizers were asked; a
  request refused before those are set (a 401) is read from its path and logged with
  `user: {}`, as kube-apiserver's failed-authentication events are (an anonymous request
  is authenticated, as `system:anonymous`). A request that impersonates is logged
  with the requester (`scope["impersonator"]`) as user and `scope["user"]` as
  impersonatedUser, and the policy is asked about the requester, as Kubernetes does.
- Which requests: `--audit-policy-file` takes an `audit.k8s.io/v1` Policy, whose first
  matching rule (users, userGroups, verbs, resources {group, resources, resourceNames},
  namespaces) gives the level; no match is `None`. Levels `Request` and `RequestResponse`
  are logged as `Metadata` (no bodies are recorded), and `omitStages` is ignored (only
  ResponseComplete exists here: a `pods/exec` WebSocket is logged when it ends, with
  code 101 if it was accepted). Without a policy file, every write (create, update,
  patch, delete, deletecollection) is logged at Metadata and reads are not: kube-apiserver
  logs nothing without a policy, minik8s' issue asks for each write.
- Requests are never slowed by the file: `record` only appends to a bounded in-memory
  buffer, and a background task writes what has gathered, serialised and written in a
  worker thread, at most every 50 ms. `stop()` flushes what is buffered. If the disk
  cannot keep up and 10,000 events are pending, new events are dropped and counted in a
  logged warning (kube-apiserver's batch backend drops as well when its buffer is full).
- `--audit-log-path -` writes to stdout. `--audit-log-maxsize` (megabytes) rotates the
  file when a write would take it past the size, renaming it `<name>-<timestamp>.<ext>`
  as kube-apiserver's lumberjack does; `--audit-log-maxbackup` keeps that many rotated
  files (0: all).
- A bad policy file or an unwritable path is one line (`AuditConfigError`) at start.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import glob
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import parse_qsl

import orjson
import yaml

from apiserver.auth.authn import user_info_json
from apiserver.auth.authorizer import Attributes, UserInfo, request_attributes

log = logging.getLogger("minik8s.apiserver.audit")

WRITE_VERBS = frozenset(("create", "update", "patch", "delete", "deletecollection"))
LEVELS = ("None", "Metadata", "Request", "RequestResponse")
MAX_PENDING = 10_000
FLUSH_INTERVAL = 0.05
NO_USER = UserInfo("")  # a request whose authentication failed (401): the event's `user: {}`


class AuditConfigError(ValueError):
    """An audit flag or policy file that cannot be used; the message is one line."""


# -- the policy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    level: str
    users: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    verbs: frozenset[str] | None = None
    resources: tuple[tuple[str, frozenset[str] | None, frozenset[str] | None], ...] | None = None
    namespaces: frozenset[str] | None = None
    non_resource_urls: tuple[str, ...] | None = None

    def matches(self, a: Attributes) -> bool:
        if self.users is not None and a.user.name not in self.users:
            return False
        if self.groups is not None and self.groups.isdisjoint(a.user.groups):
            return False
        if self.verbs is not None and a.verb not in self.verbs:
            return False
        if not a.resource_request:
            if self.resources is not None or self.namespaces is not None:
                return False
            return self.non_resource_urls is None or any(
                a.path == u or (u.endswith("*") and a.path.startswith(u[:-1]))
                for u in self.non_resource_urls)
        if self.non_resource_urls is not None:
            return False
        if self.namespaces is not None and a.namespace not in self.namespaces:
            return False
        if self.resources is None:
            return True
        full = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        for group, names, resource_names in self.resources:
            if group != a.api_group:
                continue
            if names is not None and not (full in names or "*" in names
                                          or f"{a.resource}/*" in names
                                          or (a.subresource and f"*/{a.subresource}" in names)):
                continue
            if resource_names is not None and a.name not in resource_names:
                continue
            return True
        return False


DEFAULT_POLICY = (Rule("Metadata", verbs=WRITE_VERBS), Rule("None"))


def _strings(path: str, value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuditConfigError(f"{path}: must be a list of strings")
    return frozenset(value)


def parse_policy(doc: Any) -> tuple[Rule, ...]:
    if not isinstance(doc, dict) or doc.get("kind") != "Policy" or \
            doc.get("apiVersion") != "audit.k8s.io/v1":
        raise AuditConfigError('not an audit policy: want kind "Policy" apiVersion "audit.k8s.io/v1"')
    rules = doc.get("rules")
    if not isinstance(rules, list) or not rules:
        raise AuditConfigError("rules: Required value: a policy needs at least one rule")
    out = []
    for i, r in enumerate(rules):
        path = f"rules[{i}]"
        if not isinstance(r, dict):
            raise AuditConfigError(f"{path}: must be an object")
        level = r.get("level")
        if level not in LEVELS:
            raise AuditConfigError(f'{path}.level: Unsupported value: "{level}": supported '
                                   f'values: {", ".join(map(repr, LEVELS))}')
        resources = None
        if r.get("resources") is not None:
            if not isinstance(r["resources"], list):
                raise AuditConfigError(f"{path}.resources: must be a list")
            resources = []
            for j, gr in enumerate(r["resources"]):
                if not isinstance(gr, dict):
                    raise AuditConfigError(f"{path}.resources[{j}]: must be an object")
                names = _strings(f"{path}.resources[{j}].resources", gr.get("resources"))
                resources.append((gr.get("group") or "", names or None,
                                  _strings(f"{path}.resources[{j}].resourceNames",
                                           gr.get("resourceNames")) or None))
        nru = _strings(f"{path}.nonResourceURLs", r.get("nonResourceURLs"))
        if nru is not None and (resources is not None or r.get("namespaces") is not None):
            raise AuditConfigError(f"{path}.nonResourceURLs: Invalid value: rules cannot apply "
                                   "to both regular resources and non-resource URLs")
        out.append(Rule(level, _strings(f"{path}.users", r.get("users")),
                        _strings(f"{path}.userGroups", r.get("userGroups")),
                        _strings(f"{path}.verbs", r.get("verbs")),
                        tuple(resources) if resources is not None else None,
                        _strings(f"{path}.namespaces", r.get("namespaces")),
                        tuple(sorted(nru)) if nru is not None else None))
    return tuple(out)


def load_policy(path: str) -> tuple[Rule, ...]:
    try:
        with open(path, "rb") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise AuditConfigError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise AuditConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    try:
        return parse_policy(doc)
    except AuditConfigError as e:
        raise AuditConfigError(f"{path}: {e}") from None


def level_of(policy: tuple[Rule, ...], attrs: Attributes) -> str:
    for rule in policy:
        if rule.matches(attrs):
            return rule.level
    return "None"


# -- the events ----------------------------------------------------------------------------


_second: list[Any] = [-1, ""]  # the last whole second formatted: most events share it


def _micro(ts: float) -> str:
    """RFC 3339 UTC with microseconds (MicroTime), formatting each second once: datetime's
    strftime costs ~8 us, a tenth of a pod create's server time on a slow core."""
    sec = int(ts)
    if sec != _second[0]:
        _second[0], _second[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_second[1]}.{int((ts - sec) * 1e6):06d}Z"


def source_ips(scope: dict) -> list[str]:
    """X-Forwarded-For's addresses, X-Real-Ip, then the peer (utilnet.SourceIPs)."""
    ips: list[str] = []
    for name, value in scope.get("headers") or ():
        if name == b"x-forwarded-for":
            ips += [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
        elif name == b"x-real-ip" and not ips:
            ips.append(value.decode("latin-1").strip())
    client = scope.get("client")
    if client and client[0] not in ips:
        ips.append(client[0])
    return ips


def _header(scope: dict, want: bytes) -> str:
    for name, value in scope.get("headers") or ():
        if name == want:
            return value.decode("latin-1")
    return ""


def event(scope: dict, attrs: Attributes, *, audit_id: str, code: int, body: bytes | None,
          received: float, completed: float) -> dict[str, Any]:
    """The audit.k8s.io/v1 Event of one request, at the Metadata level."""
    query = scope.get("query_string") or b""
    ev: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": audit_id, "stage": "ResponseComplete",
        "requestURI": scope["path"] + ("?" + query.decode("latin-1") if query else ""),
        "verb": attrs.verb, "user": user_info_json(attrs.user), "sourceIPs": source_ips(scope),
    }
    impersonator = scope.get("impersonator")
    if impersonator is not None:  # the requester is the user; whom it acts as, impersonatedUser
        ev["user"] = user_info_json(impersonator)
        if scope.get("user") is not None and scope["user"] is not impersonator:
            ev["impersonatedUser"] = user_info_json(scope["user"])
    agent = _header(scope, b"user-agent")
    if agent:
        ev["userAgent"] = agent
    if attrs.resource_request:
        ref = {"resource": attrs.resource, "namespace": attrs.namespace, "name": attrs.name,
               "apiGroup": attrs.api_group, "apiVersion": attrs.api_version,
               "subresource": attrs.subresource}
        ev["objectRef"] = {k: v for k, v in ref.items() if v}
    status: dict[str, Any] = {"metadata": {}, "code": code}
    if code >= 300 and body:  # a Status body: its status, reason and message, as Kubernetes
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("kind") == "Status":
            for k in ("status", "message", "reason"):
                if parsed.get(k):
                    status[k] = parsed[k]
    ev["responseStatus"] = status
    ev["requestReceivedTimestamp"] = _micro(received)
    ev["stageTimestamp"] = _micro(completed)
    annotations = scope.get("audit_annotations")
    if annotations:
        ev["annotations"] = {k: v for k, v in annotations.items() if v}
    return ev


# -- the backend ---------------------------------------------------------------------------


class _File:
    """The log file, rotated lumberjack-style by size; used from the writer thread only."""

    def __init__(self, path: str, max_size_mb: int, max_backups: int):
        self.path, self.max_bytes, self.max_backups = path, max_size_mb * 1024 * 1024, max_backups
        self.f: TextIO | Any = sys.stdout.buffer if path == "-" else open(path, "ab")  # noqa: SIM115
        self.size = 0 if path == "-" else os.fstat(self.f.fileno()).st_size

    def write(self, data: bytes) -> None:
        if self.path != "-" and self.max_bytes and self.size and self.size + len(data) > self.max_bytes:
            self._rotate()
        self.f.write(data)
        self.f.flush()
        self.size += len(data)

    def _rotate(self) -> None:
        self.f.close()
        base, ext = os.path.splitext(self.path)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M-%S.%f")[:-3]
        os.rename(self.path, f"{base}-{stamp}{ext}")
        if self.max_backups:
            olds = sorted(glob.glob(f"{glob.escape(base)}-*{glob.escape(ext)}"))
            for old in olds[:-self.max_backups]:
                with contextlib.suppress(OSError):
                    os.unlink(old)
        self.f = open(self.path, "ab")  # noqa: SIM115
        self.size = 0

    def close(self) -> None:
        if self.path != "-":
            self.f.close()
        else:
            self.f.flush()


class AuditLog:
    """Audit events gathered on the request path, written by a background task."""

    def __init__(self, path: str, *, max_size_mb: int = 0, max_backups: int = 0,
                 policy: tuple[Rule, ...] = DEFAULT_POLICY):
        if max_size_mb < 0 or max_backups < 0:
            raise AuditConfigError("--audit-log-maxsize and --audit-log-maxbackup must not be negative")
        if path != "-":
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent) or not os.access(parent, os.W_OK) or \
                    (os.path.exists(path) and not os.access(path, os.W_OK)):
                raise AuditConfigError(f"--audit-log-path {path}: cannot write there")
        self.path, self.max_size_mb, self.max_backups = path, max_size_mb, max_backups
        self.policy = policy
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._file: _File | None = None
        self.dropped = 0

    def attributes(self, scope: dict) -> Attributes | None:
        """The request's attributes if the policy audits it, else None: those the
        authorizers were asked (scope["attributes"]), or, for a request refused before
        that, read from the request with its user if known, else as anonymous."""
        attrs = scope.get("attributes")
        if attrs is None:
            user = scope.get("user") or NO_USER
            raw = scope.get("query_string") or b""
            query = dict(parse_qsl(raw.decode("latin-1"))) if raw else None
            method = "POST" if scope["type"] == "websocket" else scope["method"]  # exec is a create
            attrs = request_attributes(user, method, scope["path"], query)
        # The policy sees the requester, as kube-apiserver's (audit runs before impersonation).
        impersonator = scope.get("impersonator")
        asked = dataclasses.replace(attrs, user=impersonator) if impersonator is not None else attrs
        return attrs if level_of(self.policy, asked) != "None" else None

    def record(self, ev: dict[str, Any]) -> None:
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("audit log buffer full: %d events dropped", self.dropped)
            return
        self._pending.append(ev)
        self._wake.set()

    async def start(self) -> None:
        self._file = await asyncio.to_thread(_File, self.path, self.max_size_mb, self.max_backups)
        self._task = asyncio.create_task(self._run(), name="audit-log")

    async def _run(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            if not self._stopping:
                await asyncio.sleep(FLUSH_INTERVAL)  # gather a batch: one write per interval at most

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch or self._file is None:
            return
        file = self._file

        def write() -> None:
            file.write(b"".join(orjson.dumps(e) + b"\n" for e in batch))
        try:
            await asyncio.to_thread(write)
        except OSError as e:  # the disk is full or gone: say so, keep serving
            log.error("audit log: %d events not written: %s", len(batch), e)
        except Exception:  # noqa: BLE001 - a bug; the writer must outlive it
            log.exception("audit log: %d events not written", len(batch))

    async def stop(self) -> None:
        """Write what is buffered and close the file. The writer task is let finish, not
        cancelled: a cancelled wait for its thread would leave that thread writing while
        the final flush writes too."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self._flush()
        if self._file is not None:
            self._file.close()


_random = bytearray()


def _uuid4() -> str:
    """A random (version 4) UUID from a pool of os.urandom bytes: str(uuid.uuid4()) costs
    ~14 us on this project's 2-core machine, one syscall and one UUID object per request."""
    global _random
    if len(_random) < 16:
        _random = bytearray(os.urandom(16 * 256))
    b = _random[-16:]
    del _random[-16:]
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_audit_id(scope: dict) -> str:
    """The request's Audit-ID header when it sends one (as kube-apiserver keeps it), else a new UUID."""
    return _header(scope, b"audit-id") or _uuid4()
