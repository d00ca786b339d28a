"""What a test that waits on an in-process kubelet's pod says when the wait times out.

`pod_report(client, ns, name, kubelets=...)` is a few lines for a TimeoutError: the pod's
phase, conditions and container states as last read from the API, its events, and, given
the in-process `Kubelet` of the pod's node, what the pod's worker is doing (its state, syncs, whether it
was woken, the coroutine frames it is suspended in), the image pulls in flight, and the
stacks of the kubelet's runtime threads that are inside a runtime call. So a wait that
timed out under load in CI says where the pod got stuck (a pull, a runtime call, a
missed wake-up) rather than only that it did.

`until(pred, timeout, what, report=...)` polls an async predicate; on timeout it raises
TimeoutError with `report()`'s text. Reporting never raises: a part that cannot be read
says why instead.
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from client.rest import Client


async def until(pred: Callable[[], Awaitable[Any]], timeout: float = 60.0, what: str = "condition", *,
                report: Callable[[], Awaitable[str]] | None = None, interval: float = 0.05) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if loop.time() > deadline:
            detail = ""
            if report is not None:
                try:
                    detail = "; last seen:\n" + await asyncio.wait_for(report(), 10)
                except Exception as e:  # noqa: BLE001 - the report must not hide the timeout
                    detail = f"; (no report: {e!r})"
            raise TimeoutError(f"timed out waiting for {what} after {timeout:.0f}s{detail}")
        await asyncio.sleep(interval)


def _container(cs: dict) -> dict:
    return {k: cs.get(k) for k in ("name", "state", "lastState", "ready", "restartCount", "imageID")
            if cs.get(k) not in (None, {}, "")}


async def pod_report(client: Client, ns: str, name: str, *, kubelets: Iterable[Any] = ()) -> str:
    """`kubelets`: in-process Kubelets; the one whose node the pod is bound to is described."""
    lines: list[str] = []
    uid = node = None
    try:
        p = await client.get("pods", name, namespace=ns)
        uid, node = p["metadata"].get("uid"), (p.get("spec") or {}).get("nodeName")
        st = p.get("status") or {}
        lines.append(f"pod {ns}/{name} uid={uid} rv={p['metadata'].get('resourceVersion')} "
                     f"node={(p.get('spec') or {}).get('nodeName')} phase={st.get('phase')} "
                     f"deleting={bool(p['metadata'].get('deletionTimestamp'))}")
        conds = [f"{c.get('type')}={c.get('status')}" + (f"({c['reason']})" if c.get("reason") else "")
                 for c in st.get("conditions") or []]
        lines.append("  conditions: " + (", ".join(conds) or "none"))
        for key in ("initContainerStatuses", "containerStatuses"):
            for cs in st.get(key) or []:
                lines.append(f"  {key[:-8]} " + json.dumps(_container(cs), sort_keys=True))
    except Exception as e:  # noqa: BLE001
        lines.append(f"pod {ns}/{name}: cannot be read: {e!r}")
    try:
        evs = [e for e in (await client.list("events", namespace=ns))["items"]
               if (e.get("involvedObject") or {}).get("name") == name]
        evs.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        for e in evs:
            lines.append(f"  event {e.get('type')} {e.get('reason')} x{e.get('count', 1)} "
                         f"{e.get('lastTimestamp') or e.get('eventTime')}: {e.get('message')}")
        if not evs:
            lines.append("  events: none")
    except Exception as e:  # noqa: BLE001
        lines.append(f"  events cannot be read: {e!r}")
    for kubelet in kubelets:
        if kubelet.node_name == node:
            lines += kubelet_report(kubelet, uid)
    return "\n".join(lines)


def awaiting(coro: Any) -> list[str]:
    """`function (file:line)` of each coroutine in the chain a suspended coroutine awaits,
    outermost first (Python 3.11 has no asyncio.capture_call_graph)."""
    out = []
    while coro is not None and len(out) < 30:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            out.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return out


def kubelet_report(kubelet: Any, uid: str | None) -> list[str]:
    """The in-process kubelet's side of one pod: its worker, pulls, busy runtime threads."""
    lines: list[str] = [f"  kubelet {kubelet.node_name}: {len(kubelet.workers)} workers, "
                        f"{kubelet.syncs} syncs, pods informer synced={kubelet.pods.has_synced()}"]
    w = kubelet.workers.get(uid) if uid else None
    if w is None:
        lines.append(f"  no worker for uid {uid} (finished: {uid in kubelet._finished})")
    else:
        lines.append(f"  worker state={w.state.value} syncs={w.syncs} woken={w.wake.is_set()} "
                     f"removed={w.removed} observed={w.observed}")
        task = w.task
        if task is not None and not task.done():
            lines.append("  worker suspended in: " + " -> ".join(awaiting(task.get_coro())))
        elif task is not None:
            lines.append(f"  worker task done: {task!r}")
    service = getattr(kubelet.image_manager, "service", None)
    if service is not None:
        lines.append(f"  pulls in flight: {sorted(service._inflight)}")
    frames = sys._current_frames()
    for t in threading.enumerate():
        if not t.name.startswith("runtime") or t.ident not in frames:
            continue
        stack = traceback.extract_stack(frames[t.ident])
        if not any(f.name == "run" and f.filename.endswith("concurrent/futures/thread.py") for f in stack):
            continue  # idle in the pool
        lines.append(f"  thread {t.name} busy in:")
        lines += ["    " + ln.rstrip() for ln in traceback.format_list(stack[-8:])]
    return lines
