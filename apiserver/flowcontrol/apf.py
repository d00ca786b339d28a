"""API Priority and Fairness: kube-apiserver's request classification and fair queuing
(k8s.io/apiserver/pkg/util/flowcontrol), over the FlowSchemas and
PriorityLevelConfigurations in the API.

Classification: a request (its user and authorization attributes) takes the first
FlowSchema, by ascending matchingPrecedence then name, with a rule whose subjects name
its user (a User, a Group it is in, a ServiceAccount by namespace and name, `*` for any)
and whose resource or non-resource rule covers its verb and target. The schema's
priority level serves it, in the flow named by the schema and its distinguisher (the
user's name for ByUser, the namespace for ByNamespace, nothing otherwise). A schema whose
level does not exist is skipped (it is Dangling).

Concurrency: the server's limit is --max-requests-inflight + --max-mutating-requests-inflight;
each Limited level gets ceil(limit * nominalConcurrencyShares / sum of the Limited
levels' shares) seats. An Exempt level never waits and is never refused.

Queuing: a request that finds its level's seats taken is queued. Its flow is dealt a hand
of `handSize` of the level's `queues` by shuffle sharding (a hash of the flow picks the
hand, so one flow never reaches the others' queues but a few), and it joins the shortest
queue of the hand; a queue at `queueLengthLimit`, or a level whose limitResponse is
Reject, refuses it at once. A freed seat goes to the head of the next non-empty queue in
round-robin order (fair queuing: every flow with waiting requests gets its turn, whatever
how many it has queued). A request that waits longer than the queue wait limit (a quarter
of --request-timeout, at most 15 s) is refused. A refusal is 429 with Retry-After.

Watches hold a seat only while they are set up (until the response starts); other
long-running requests (exec, attach, port-forward, proxy, a followed log) are not
limited, as in kube-apiserver.

Every response carries X-Kubernetes-PF-FlowSchema-UID and X-Kubernetes-PF-PriorityLevel-UID.
Metrics: apiserver_flowcontrol_rejected_requests_total, _current_inqueue_requests,
_current_executing_requests, _request_wait_duration_seconds and _nominal_limit_seats.

Concurrency model: everything runs on the server's one asyncio loop; a level's counters
change only between awaits, so they need no lock. The config follows the watch cache
(apiserver/auth/feed.py's CacheFeed) and is rebuilt on every change; a level whose spec
did not change keeps its queues and its executing count.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from apiserver.auth.authorizer import SERVICE_ACCOUNT_PREFIX, Attributes
from machinery.metrics import REGISTRY

REJECTED = Counter("apiserver_flowcontrol_rejected_requests", "Number of requests rejected by API Priority "
                   "and Fairness subsystem", ["flow_schema", "priority_level", "reason"], registry=REGISTRY)
IN_QUEUE = Gauge("apiserver_flowcontrol_current_inqueue_requests", "Number of requests currently pending in "
                 "queues of the API Priority and Fairness subsystem", ["flow_schema", "priority_level"],
                 registry=REGISTRY)
EXECUTING = Gauge("apiserver_flowcontrol_current_executing_requests", "Number of requests in initial (for a "
                  "WATCH) or any (for a non-WATCH) execution stage in the API Priority and Fairness subsystem",
                  ["flow_schema", "priority_level"], registry=REGISTRY)
WAIT = Histogram("apiserver_flowcontrol_request_wait_duration_seconds", "Length of time a request spent "
                 "waiting in its queue", ["flow_schema", "priority_level", "execute"],
                 buckets=(0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30), registry=REGISTRY)
NOMINAL = Gauge("apiserver_flowcontrol_nominal_limit_seats", "Nominal number of execution seats configured "
                "for each priority level", ["priority_level"], registry=REGISTRY)

MAX_WAIT = 15.0
RETRY_AFTER = 1


class Rejected(Exception):
    """The request is refused (429); `reason` is the metric's: queue-full, time-out,
    concurrency-limit (a Reject level)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class Level:
    name: str
    uid: str
    spec: dict
    exempt: bool
    limit: int = 0
    queues: list[collections.deque] = field(default_factory=list)
    hand_size: int = 0
    queue_length_limit: int = 0
    executing: int = 0
    queued: int = 0  # waiters in the queues, those that gave up included until popped
    next_queue: int = 0

    def reshape(self, spec: dict) -> None:
        lr = ((spec.get("limited") or {}).get("limitResponse") or {})
        q = lr.get("queuing") or {}
        n = int(q.get("queues") or 0) if lr.get("type") == "Queue" else 0
        if n != len(self.queues):
            waiting = [w for queue in self.queues for w in queue]
            self.queues = [collections.deque() for _ in range(n)]
            self.queued = len(waiting) if n else 0
            for i, w in enumerate(waiting):  # kept, not dropped: they still wait for a seat
                if n:
                    self.queues[i % n].append(w)
                elif not w.done():
                    w.set_exception(Rejected("concurrency-limit"))
        self.hand_size = min(int(q.get("handSize") or 1), max(n, 1))
        self.queue_length_limit = int(q.get("queueLengthLimit") or 0)
        self.spec = spec

    def waiting(self) -> int:
        return self.queued

    def hand(self, flow: str) -> list[int]:
        """The flow's queues: shuffle sharding by a hash of the flow."""
        seed = int.from_bytes(hashlib.blake2b(flow.encode(), digest_size=8).digest(), "big")
        return random.Random(seed).sample(range(len(self.queues)), self.hand_size)

    def dispatch(self) -> None:
        """Give free seats to queued requests, one queue after the other (fair queuing)."""
        n = len(self.queues)
        while self.executing < self.limit and self.queued:
            for step in range(n):
                i = (self.next_queue + step) % n
                queue = self.queues[i]
                while queue and queue[0].done():  # gave up (timed out, client went away)
                    queue.popleft()
                    self.queued -= 1
                if queue:
                    self.next_queue = (i + 1) % n
                    self.executing += 1
                    self.queued -= 1
                    queue.popleft().set_result(None)
                    break
            else:
                return


@dataclass(frozen=True)
class Schema:
    name: str
    uid: str
    precedence: int
    level: str
    distinguisher: str
    rules: tuple[dict, ...]


def _subject_matches(s: dict, user: Any) -> bool:
    kind = s.get("kind")
    if kind == "User":
        name = (s.get("user") or {}).get("name")
        return name == "*" or name == user.name
    if kind == "Group":
        name = (s.get("group") or {}).get("name")
        return name == "*" or name in user.groups
    if kind == "ServiceAccount":
        sa = s.get("serviceAccount") or {}
        if not user.name.startswith(SERVICE_ACCOUNT_PREFIX):
            return False
        ns, _, name = user.name[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
        return sa.get("namespace") == ns and sa.get("name") in ("*", name)
    return False


def _has(values: Any, x: str) -> bool:
    return isinstance(values, list) and ("*" in values or x in values)


def _non_resource_url(patterns: Any, path: str) -> bool:
    for p in patterns or ():
        if p == "*" or p == path or (p.endswith("/*") and path.startswith(p[:-1])) or \
                (p.endswith("*") and path.startswith(p[:-1])):
            return True
    return False


def rule_matches(rule: dict, attrs: Attributes) -> bool:
    if not any(_subject_matches(s, attrs.user) for s in rule.get("subjects") or () if isinstance(s, dict)):
        return False
    if attrs.resource_request:
        resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
        for r in rule.get("resourceRules") or ():
            if not (_has(r.get("verbs"), attrs.verb) and _has(r.get("apiGroups"), attrs.api_group)
                    and _has(r.get("resources"), resource)):
                continue
            if attrs.namespace:
                if _has(r.get("namespaces"), attrs.namespace):
                    return True
            elif r.get("clusterScope"):
                return True
        return False
    return any(_has(r.get("verbs"), attrs.verb) and _non_resource_url(r.get("nonResourceURLs"), attrs.path)
               for r in rule.get("nonResourceRules") or ())


@dataclass
class Seat:
    """What a classified request holds: release it exactly once when its work is done."""
    controller: Controller | None
    schema: Schema
    level: Level
    released: bool = False

    def release(self) -> None:
        if self.released or self.controller is None:
            return
        self.released = True
        self.controller.finish(self)


class Controller:
    """The APF filter: `classify(attrs)`, then `await admit(...)` for a Seat or Rejected."""

    def __init__(self, server_limit: int, *, max_wait: float = MAX_WAIT):
        self.server_limit = max(1, server_limit)
        # Set on every config change: the server's status writer (the FlowSchemas'
        # Dangling conditions) waits on it.
        self.changed = asyncio.Event()
        self.max_wait = max_wait
        self.objects: dict[str, dict[str, dict]] = {"flowschemas": {}, "prioritylevelconfigurations": {}}
        self.levels: dict[str, Level] = {}
        self.schemas: list[Schema] = []
        # Classification by the attributes it reads, until the config changes: most
        # requests repeat a few (user, verb, resource, namespace) shapes.
        self._classified: dict[tuple, tuple[Schema, Level] | None] = {}

    # -- config (a CacheFeed sink) ------------------------------------------------------

    def replace(self, kind: str, objs: list[dict]) -> None:
        self.objects[kind] = {o["metadata"]["name"]: o for o in objs}
        self._rebuild()

    def put(self, kind: str, obj: dict) -> None:
        self.objects[kind][obj["metadata"]["name"]] = obj
        self._rebuild()

    def delete(self, kind: str, obj: dict) -> None:
        self.objects[kind].pop(obj["metadata"]["name"], None)
        self._rebuild()

    def _rebuild(self) -> None:
        levels: dict[str, Level] = {}
        for name, obj in self.objects["prioritylevelconfigurations"].items():
            spec = obj.get("spec") or {}
            level = self.levels.get(name)
            if level is None or level.exempt != (spec.get("type") == "Exempt"):
                level = Level(name, obj["metadata"].get("uid", ""), spec, spec.get("type") == "Exempt")
            level.uid = obj["metadata"].get("uid", "")
            level.reshape(spec)
            levels[name] = level
        shares = {n: int(((lv.spec.get("limited") or {}).get("nominalConcurrencyShares")) or 0)
                  for n, lv in levels.items() if not lv.exempt}
        total = sum(shares.values()) or 1
        for name, s in shares.items():
            levels[name].limit = math.ceil(self.server_limit * s / total)
            NOMINAL.labels(name).set(levels[name].limit)
        self.levels = levels
        schemas = []
        for name, obj in self.objects["flowschemas"].items():
            spec = obj.get("spec") or {}
            schemas.append(Schema(name, obj["metadata"].get("uid", ""), int(spec.get("matchingPrecedence") or 1000),
                                  (spec.get("priorityLevelConfiguration") or {}).get("name", ""),
                                  (spec.get("distinguisherMethod") or {}).get("type", ""),
                                  tuple(r for r in spec.get("rules") or () if isinstance(r, dict))))
        self.schemas = sorted(schemas, key=lambda s: (s.precedence, s.name))
        self._classified = {}
        for level in levels.values():
            level.dispatch()  # a larger limit frees seats at once
        self.changed.set()

    # -- the filter -----------------------------------------------------------------------

    def classify(self, attrs: Attributes) -> tuple[Schema, Level] | None:
        """The first matching schema whose level exists; None before the config is loaded."""
        user = attrs.user
        key = (user.name, user.groups, attrs.verb, attrs.resource_request, attrs.api_group, attrs.resource,
               attrs.subresource, attrs.namespace, "" if attrs.resource_request else attrs.path)
        try:
            return self._classified[key]
        except KeyError:
            pass
        found = None
        for s in self.schemas:
            level = self.levels.get(s.level)
            if level is not None and any(rule_matches(r, attrs) for r in s.rules):
                found = s, level
                break
        if len(self._classified) > 10000:
            self._classified.clear()
        self._classified[key] = found
        return found

    async def admit(self, schema: Schema, level: Level, attrs: Attributes) -> Seat:
        labels = (schema.name, level.name)
        if level.exempt:
            EXECUTING.labels(*labels).inc()
            return Seat(self, schema, level)
        if level.queued and level.executing < level.limit:
            level.dispatch()  # free seats and waiters that gave up: clear them first
        if level.executing < level.limit and not level.queued:
            level.executing += 1
            EXECUTING.labels(*labels).inc()
            WAIT.labels(*labels, "true").observe(0)
            return Seat(self, schema, level)
        if not level.queues:
            REJECTED.labels(*labels, "concurrency-limit").inc()
            raise Rejected("concurrency-limit")
        flow = schema.name + "\x00" + (attrs.user.name if schema.distinguisher == "ByUser" else
                                       attrs.namespace if schema.distinguisher == "ByNamespace" else "")
        queue = min((level.queues[i] for i in level.hand(flow)), key=len)
        if len(queue) >= level.queue_length_limit:
            REJECTED.labels(*labels, "queue-full").inc()
            raise Rejected("queue-full")
        waiter = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        level.queued += 1
        IN_QUEUE.labels(*labels).inc()
        start = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.max_wait)
        except (asyncio.TimeoutError, asyncio.CancelledError, Rejected) as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.finish_level(level)  # a seat came just as we gave up: hand it on
            waiter.cancel()
            WAIT.labels(*labels, "false").observe(time.monotonic() - start)
            if isinstance(exc, asyncio.CancelledError):
                raise
            reason = exc.reason if isinstance(exc, Rejected) else "time-out"
            REJECTED.labels(*labels, reason).inc()
            raise Rejected(reason) from None
        finally:
            IN_QUEUE.labels(*labels).dec()
        WAIT.labels(*labels, "true").observe(time.monotonic() - start)
        EXECUTING.labels(*labels).inc()
        return Seat(self, schema, level)

    def finish(self, seat: Seat) -> None:
        EXECUTING.labels(seat.schema.name, seat.level.name).dec()
        if not seat.level.exempt:
            self.finish_level(seat.level)

    def finish_level(self, level: Level) -> None:
        level.executing -= 1
        level.dispatch()
