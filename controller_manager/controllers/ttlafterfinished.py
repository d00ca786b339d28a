"""The TTL-after-finished controller (pkg/controller/ttlafterfinished): deletes a
finished Job `spec.ttlSecondsAfterFinished` seconds after it finished.

What it guarantees:
- A Job counts as finished when its Complete or Failed condition is True, from that
  condition's lastTransitionTime; one without a TTL, or not finished, is left alone.
- Before deleting, the Job is read again from the API (not the cache) and checked again,
  so a TTL changed or a Job re-created meanwhile is honoured. The delete carries the
  uid as a precondition and Foreground propagation, as Kubernetes' does, so the Job
  goes only after its pods.
- A Job whose time has not come is looked at again when it does (`add_after`).

Time is the injected clock's (`clock.now()`). One asyncio loop; one key per Job.
"""
from __future__ import annotations

import logging

from client.clock import Clock
from client.events import EventRecorder
from client.informer import key_of
from controller_manager.controller import Controller
from controller_manager.controllers.job import finish_time
from machinery import errors

log = logging.getLogger("minik8s.controller.ttlafterfinished")


def time_left(job: dict, now: float) -> float | None:
    """Seconds until the Job is due for deletion (<= 0: due); None: never."""
    ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    if ttl is None or job["metadata"].get("deletionTimestamp"):
        return None
    finished = finish_time(job)
    if finished is None:
        return None
    return finished + ttl - now


class TTLAfterFinishedController(Controller):
    name = "ttl-after-finished"
    queue_name = "ttl_jobs_to_delete"

    def __init__(self, client, factory, *, recorder: EventRecorder | None = None,
                 clock: Clock | None = None, options=None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.job_informer = factory.informer("jobs")
        self.job_informer.add_handler(on_add=self._changed, on_update=lambda o, n: self._changed(n))
        self.informers.append(self.job_informer)

    def _changed(self, job: dict) -> None:
        if (job.get("spec") or {}).get("ttlSecondsAfterFinished") is not None and finish_time(job) is not None:
            self.enqueue(key_of(job))

    async def reconcile(self, key: str) -> None:
        job = self.job_informer.store.get(key)
        if job is None:
            return
        left = time_left(job, self.clock.now())
        if left is None:
            return
        if left > 0:
            self.queue.add_after(key, left)
            return
        md = job["metadata"]
        try:
            fresh = await self.client.get("jobs", md["name"], namespace=md["namespace"])
        except errors.NotFound:
            return
        left = time_left(fresh, self.clock.now())
        if left is None:
            return
        if left > 0:
            self.queue.add_after(key, left)
            return
        log.info("deleting job %s: %ss after it finished", key, fresh["spec"]["ttlSecondsAfterFinished"])
        try:
            await self.client.delete("jobs", md["name"], namespace=md["namespace"],
                                     propagation_policy="Foreground",
                                     preconditions={"uid": fresh["metadata"]["uid"]})
        except (errors.NotFound, errors.Conflict):
            pass  # gone, or another Job of that name now
