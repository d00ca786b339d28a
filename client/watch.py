"""A watch that outlives its connections.

`Watch(client, "pods", resource_version=rv)` yields `Event(type, object)` for ADDED,
MODIFIED, DELETED and BOOKMARK, in the server's order, starting strictly after `rv`.

Guarantees
- No event is lost or repeated across reconnects: when the stream ends (the server's
  `timeoutSeconds`, a closed connection, the server restarting or being away for a
  while) the watch is reopened from the last resourceVersion it delivered, after a
  jittered backoff that grows while the server stays unreachable (capped; it retries
  forever: a component outlives an API server restart).
- BOOKMARK events (asked for with allowWatchBookmarks) advance that resourceVersion,
  so a quiet watch resumes from a recent revision rather than an old, compacted one.
- The history having been compacted surfaces as `machinery.errors.Gone`, whether the
  server says so with an HTTP 410 before streaming or with an ERROR event carrying a
  410 Status mid-stream: the caller (the reflector) must relist. Other ERROR events
  and error answers that are the server's trouble (5xx, 429) are retried like a drop;
  the rest (403, 404, 400...) are raised.
- `resource_version` is the position: the last resourceVersion delivered.

Concurrency: one consumer task iterates a Watch; stopping is by leaving the loop (or
cancelling the task), which closes the connection.
"""
from __future__ import annotations

import logging
import random
from typing import Any, AsyncGenerator, AsyncIterator, NamedTuple

import httpx
import orjson

from client.clock import Clock, RealClock
from client.rest import Client, Resource
from machinery.errors import APIError, Gone, from_status

log = logging.getLogger("minik8s.client.watch")


class Event(NamedTuple):
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    object: dict[str, Any]


class Watch:
    def __init__(self, client: Client, resource: str | Resource, *, namespace: str | None = None,
                 label_selector: str | None = None, field_selector: str | None = None,
                 resource_version: str = "", bookmarks: bool = True,
                 timeout_seconds: int | None = None, backoff: float = 0.05,
                 max_backoff: float = 2.0, clock: Clock | None = None):
        self.client = client
        self.resource = client.resources.get(resource)
        self.namespace = client.namespace_for(self.resource, namespace)
        self.label_selector, self.field_selector = label_selector, field_selector
        self.resource_version = resource_version
        self.bookmarks = bookmarks
        self.timeout_seconds = timeout_seconds
        self.backoff, self.max_backoff = backoff, max_backoff
        self.clock = clock or RealClock()

    def _params(self) -> dict[str, Any]:
        # Like client-go's reflector, a random server-side timeout in [5, 10) minutes
        # spreads the reconnects of many watchers.
        timeout = self.timeout_seconds or random.randint(300, 599)
        return {"watch": "true", "resourceVersion": self.resource_version or None,
                "allowWatchBookmarks": "true" if self.bookmarks else None,
                "timeoutSeconds": timeout, "labelSelector": self.label_selector or None,
                "fieldSelector": self.field_selector or None}

    async def __aiter__(self) -> AsyncGenerator[Event, None]:
        failures = 0
        path = self.resource.path(namespace=self.namespace)
        while True:
            params = self._params()
            received = False
            try:
                # A read timeout past the server's own timeout catches a connection that
                # died without a FIN (the server never closes a healthy watch that late).
                async with self.client.stream(path, params=params,
                                              read_timeout=params["timeoutSeconds"] + 30) as resp:
                    async for line in _lines(resp):
                        ev = orjson.loads(line)
                        kind, obj = ev["type"], ev["object"]
                        if kind == "ERROR":
                            raise from_status(obj)
                        received = True
                        failures = 0
                        self.resource_version = obj["metadata"]["resourceVersion"]
                        yield Event(kind, obj)
            except Gone:
                raise
            except APIError as err:
                if err.code < 500 and err.code != 429:
                    raise
                log.info("watch %s: %s; resuming from %s", path, err, self.resource_version)
                failures += 1
            except (httpx.TransportError, orjson.JSONDecodeError) as exc:
                log.info("watch %s dropped (%s); resuming from %s", path, exc or type(exc).__name__,
                         self.resource_version)
                failures += 1
            else:
                if not received:
                    failures += 1  # a stream that ends at once, repeatedly, must not spin
            if failures:
                delay = min(self.backoff * 2 ** (failures - 1), self.max_backoff)
                await self.clock.sleep(delay * random.uniform(0.5, 1.0))


async def _lines(resp: httpx.Response) -> AsyncIterator[bytes]:
    """The stream's non-blank lines, as bytes: the server sends a batch of events as one
    chunk, split here in C rather than decoded to text and split by httpx."""
    pending: list[bytes] = []  # the start of a line not yet ended
    async for chunk in resp.aiter_bytes():
        pending.append(chunk)
        if b"\n" not in chunk:
            continue  # one big object arriving in pieces: join them once, at its end
        lines = b"".join(pending).split(b"\n")
        pending = [lines.pop()]
        for line in lines:
            if line.strip():
                yield line
    rest = b"".join(pending)
    if rest.strip():
        yield rest
