"""DefaultBinder: binds the pod with the API's binding subresource, through a function the
scheduler passes in (`async bind(pod: PodInfo, node_name: str) -> None`, raising on
failure), so this plugin never holds a client of its own."""
from __future__ import annotations

from typing import Awaitable, Callable

from scheduler.framework import CycleState, Status
from scheduler.types import PodInfo

NAME = "DefaultBinder"
BindFunc = Callable[[PodInfo, str], Awaitable[None]]


class DefaultBinder:
    NAME = NAME

    def __init__(self, bind: BindFunc | None):
        self._bind = bind

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        if self._bind is None:
            return Status.error("DefaultBinder has no binding function")
        try:
            await self._bind(pod, node_name)
        except Exception as e:  # noqa: BLE001 - any failure is this binding's failure: the pod is retried
            return Status.error(f"binding rejected: {e}")
        return None


def new(args: dict, handle) -> DefaultBinder:
    return DefaultBinder(getattr(handle, "bind", None))
