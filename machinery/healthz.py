"""Named health checks behind /healthz, /livez and /readyz, with the answers of
k8s.io/apiserver/pkg/server/healthz. Pure: no HTTP here; a server (client.componentserver,
or the API server's own routes) maps a request onto `respond` / `respond_check`.

Guarantees
- `Health` keeps one ordered list of named checks per endpoint (`healthz`, `livez`,
  `readyz`). `ping` (always healthy) heads every list, so each endpoint answers
  something even before a component adds its own checks. A name is unique per endpoint.
- `respond(endpoint, verbose=, exclude=)` runs every check that is not excluded, in
  order, and answers (status, body):
  - all pass: 200 `ok`; with `verbose`, one line per check (`[+]ping ok`, or
    `[+]etcd excluded: ok`) and then `healthz check passed`;
  - any fails: 500 and always the per-check lines, the failing ones as
    `[-]etcd failed: reason withheld` (these endpoints are unauthenticated: the reason is
    logged at V(2) instead), then `healthz check failed`;
  - names in `exclude` that match no check add a line
    `warn: some health checks cannot be excluded: no matches for "x"`.
- `respond_check(endpoint, name)`: 200 `ok`, or 500 `internal server error: <reason>`
  (the per-check path shows the reason, as Kubernetes' does); None when no such check.
- `handle(path, query)` routes a request path and raw query string to either (None:
  not a health path), so a server needs one handler for all of them.
- A check is a callable taking nothing that returns (healthy) or raises (the exception's
  text is the reason); it may be a coroutine function. A coroutine check that has not
  answered within `timeout` seconds fails (a hung dependency must not hang the probe).
- The bodies are text; `CONTENT_TYPE` is what to serve them as.

Concurrency: checks of one request run one after another on the caller's event loop.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from machinery import klog

log = logging.getLogger("minik8s.healthz")

ENDPOINTS = ("healthz", "livez", "readyz")
CONTENT_TYPE = "text/plain; charset=utf-8"

Check = Callable[[], Any]  # returns (or resolves to) anything when healthy; raises when not


@dataclass(frozen=True)
class HealthCheck:
    name: str
    check: Check


def _ok() -> None:
    return None


PING = HealthCheck("ping", _ok)


def named_check(name: str, check: Check) -> HealthCheck:
    """healthz.NamedCheck."""
    if not name or "/" in name:
        raise ValueError(f"a health check needs a name without '/': {name!r}")
    return HealthCheck(name, check)


class Health:
    def __init__(self, *, timeout: float = 5.0):
        self.timeout = timeout
        self._checks: dict[str, list[HealthCheck]] = {e: [PING] for e in ENDPOINTS}

    def add(self, check: HealthCheck, *, endpoints: Iterable[str] = ENDPOINTS) -> None:
        """Add `check` to the given endpoints (all three by default; kube-scheduler, for
        one, puts `sched-handler-sync` on readyz only)."""
        for e in endpoints:
            if e not in self._checks:
                raise ValueError(f"unknown health endpoint {e!r} (want one of {', '.join(ENDPOINTS)})")
            if any(c.name == check.name for c in self._checks[e]):
                raise ValueError(f"health check {check.name!r} is already on /{e}")
            self._checks[e].append(check)

    def checks(self, endpoint: str) -> list[HealthCheck]:
        return list(self._checks[endpoint])

    async def _run(self, check: HealthCheck) -> str | None:
        """None when healthy, else the reason."""
        try:
            result = check.check()
            if inspect.isawaitable(result):
                async with asyncio.timeout(self.timeout):
                    await result
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except Exception as e:  # noqa: BLE001 - any failure of a check is its answer
            return str(e) or type(e).__name__
        return None

    async def respond(self, endpoint: str, *, verbose: bool = False,
                      exclude: Iterable[str] = ()) -> tuple[int, str]:
        excluded = set(exclude)
        lines: list[str] = []
        failed: list[tuple[str, str]] = []
        for check in self._checks[endpoint]:
            if check.name in excluded:
                excluded.discard(check.name)
                lines.append(f"[+]{check.name} excluded: ok")
                continue
            reason = await self._run(check)
            if reason is None:
                lines.append(f"[+]{check.name} ok")
            else:
                lines.append(f"[-]{check.name} failed: reason withheld")
                failed.append((check.name, reason))
        if excluded:
            names = ",".join(f'"{n}"' for n in sorted(excluded))
            lines.append(f"warn: some health checks cannot be excluded: no matches for {names}")
            log.warning("cannot exclude some health checks, no health checks are installed matching %s", names)
        if failed:
            log.log(klog.V(2), "%s check failed: %s\n%s", ",".join(n for n, _ in failed), endpoint,
                    "".join(f"[-]{n} failed: {r}\n" for n, r in failed))
            return 500, "\n".join(lines) + f"\n{endpoint} check failed\n"
        if not verbose:
            return 200, "ok"
        return 200, "\n".join(lines) + f"\n{endpoint} check passed\n"

    async def handle(self, path: str, query: str = "") -> tuple[int, str] | None:
        """The answer to a GET of `path` (`/readyz`, `/readyz/etcd`) with the raw query
        string (`verbose&exclude=etcd`); None when the path is no health path (404). One
        call serves every health route of a server."""
        endpoint, _, name = path.strip("/").partition("/")
        if endpoint not in self._checks or "/" in name:
            return None
        if name:
            return await self.respond_check(endpoint, name)
        q = urllib.parse.parse_qs(query, keep_blank_values=True)
        return await self.respond(endpoint, verbose="verbose" in q, exclude=q.get("exclude", ()))

    async def respond_check(self, endpoint: str, name: str) -> tuple[int, str] | None:
        check = next((c for c in self._checks.get(endpoint, ()) if c.name == name), None)
        if check is None:
            return None
        reason = await self._run(check)
        if reason is None:
            return 200, "ok"
        return 500, f"internal server error: {reason}\n"
