"""The shape every controller has (kubernetes/sample-controller): informers feed keys
into a rate-limited work queue; workers call `reconcile(key)`.

Contract for subclasses:
- Event handlers only turn an object into a key and `enqueue` it; they never do work
  and never trust the event's payload. `reconcile(key)` re-reads current state from
  the informer caches, is idempotent and level-based, and writes status only when it
  changed.
- `reconcile` raises to ask for a retry. One place (`_process`) decides: success ->
  forget the key's backoff; NotFound or Conflict -> a normal outcome of racing other
  writers, requeued with backoff (so is `Requeue`, an expected wait, logged at -v 4
  only); Invalid (the object can never be made valid by retrying) -> reported once as
  a Warning event and dropped; anything else ->
  requeued with per-key exponential backoff.
- Cached objects are shared and read-only: copy before changing.
- A controller's tunables are declared in its `Options` dataclass (frozen, keyword-only),
  as kube-controller-manager has one configuration struct per controller; the
  constructor takes `options=` one of those, so a misspelt option is a TypeError,
  never silently dropped. Every controller is built the same way:
  `Class(client, factory, *, recorder=..., clock=..., options=Class.Options(...))`.
- Metrics (controller_manager.metrics): the work queue is named after the controller
  (`queue_name` where kube-controller-manager names it otherwise), so its
  workqueue_* metrics count and time the reconciles; failed ones count in
  controller_reconcile_errors_total; running_managed_controllers is 1 while `run` runs.

Concurrency: one asyncio loop. `run(workers)` waits for the informers to sync, then runs
`workers` tasks; the work queue guarantees a key is never reconciled by two at once.
Every controller in the manager shares that loop, and a worker yields it after every
key (WorkQueue.serve), so a controller that always has work (thousands of lease
renewals a second) takes its turns with the others instead of stopping them
(tests/test_controller_fairness.py).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Hashable, Protocol

from client.clock import Clock, RealClock
from client.events import EventRecorder
from client.informer import Informer, key_of, wait_for_cache_sync
from client.rest import Client
from client.workqueue import RateLimitingQueue
from controller_manager import metrics
from machinery import errors, klog

log = logging.getLogger("minik8s.controller")


@dataclass(frozen=True, kw_only=True)
class NoOptions:
    """The options of a controller that has none."""


class Requeue(Exception):
    """Raised by `reconcile` for an expected outcome that needs another look later, with
    backoff (Kubernetes' certificates.IgnorableError): logged at -v 4 only, not counted
    as a reconcile error."""


class ControllerClass(Protocol):
    """What the manager's table holds: a Controller subclass, built the one way every
    controller is built."""
    name: str
    Options: type[Any]

    def __call__(self, client: Client, factory: Any, /, *, recorder: Any = None,
                 clock: Clock | None = None, options: Any = None) -> Controller: ...


class Controller:
    name = "controller"
    # The work queue's name in the workqueue_* metrics: kube-controller-manager's name for
    # the queue where it differs from the controller's (endpoints: `endpoint`).
    queue_name = ""
    Options: ClassVar[type[Any]] = NoOptions

    def __init__(self, client: Client, *, clock: Clock | None = None,
                 recorder: EventRecorder | None = None):
        self.client = client
        self.clock = clock or RealClock()
        self.queue = RateLimitingQueue(clock=self.clock, name=self.queue_name or self.name)
        self.recorder = recorder
        self.informers: list[Informer] = []
        self._errors = metrics.RECONCILE_ERRORS.labels(self.name)

    # -- wiring ---------------------------------------------------------------------

    def watch(self, informer: Informer, *, key_fn=None) -> Informer:
        """Enqueue `key_fn(obj)` (default: the object's own key) on every change."""
        key_fn = key_fn or key_of

        def enqueue(obj: dict) -> None:
            for key in _keys(key_fn(obj)):
                self.queue.add(key)
        informer.add_handler(on_add=enqueue, on_update=lambda old, new: (enqueue(old), enqueue(new)),
                             on_delete=enqueue)
        self.informers.append(informer)
        return informer

    def enqueue(self, key: Hashable) -> None:
        self.queue.add(key)

    # -- running --------------------------------------------------------------------

    async def reconcile(self, key: Hashable) -> None:
        raise NotImplementedError

    async def run(self, workers: int = 1) -> None:
        """Until cancelled (or the queue is shut down): sync caches, then work."""
        metrics.controller_started(self.name)
        try:
            await wait_for_cache_sync(*self.informers)
            log.info("%s: caches synced, starting %d workers", self.name, workers)
            async with asyncio.TaskGroup() as tg:
                for i in range(workers):
                    tg.create_task(self.queue.serve(self._process), name=f"{self.name}-worker-{i}")
        finally:
            metrics.controller_stopped(self.name)

    async def _process(self, key: Hashable) -> None:
        # How many reconciles, and how long each took, the queue's workqueue_* metrics say;
        # at -v 4 each one is also a line, as Kubernetes' controllers log "Finished syncing".
        start = self.clock.monotonic() if klog.enabled(4) else None
        try:
            await self.reconcile(key)
        except asyncio.CancelledError:
            raise
        except errors.Invalid as exc:
            self._errors.inc()
            log.warning("%s: %s cannot be reconciled: %s", self.name, key, exc.message)
            await self._report_invalid(key, exc)
            self.queue.forget(key)
        except Requeue as exc:
            log.log(klog.V(4), "%s: %s; requeued", self.name, exc)
            self.queue.add_rate_limited(key)
        except (errors.Conflict, errors.NotFound, errors.AlreadyExists) as exc:
            # Another writer got there first; look again shortly, with backoff.
            log.debug("%s: %s: %s; requeued", self.name, key, exc.message)
            self.queue.add_rate_limited(key)
        except Exception as exc:  # noqa: BLE001 - one bad key must not stop the worker
            self._errors.inc()
            log.warning("%s: reconciling %s failed (%s); requeued", self.name, key, exc,
                        exc_info=not isinstance(exc, errors.APIError))
            self.queue.add_rate_limited(key)
        else:
            self.queue.forget(key)
        finally:
            if start is not None:
                klog.info_s(log, 4, "Finished syncing", controller=self.name, key=str(key),
                            duration=f"{self.clock.monotonic() - start:.6f}s")

    async def _report_invalid(self, key: Hashable, exc: errors.APIError) -> None:
        """Hook: controllers that know the object behind `key` record a Warning event."""


def _keys(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, set)):
        return list(value)
    return [value]
