"""The ConfigMaps and Secrets the node's pods refer to, watched one by one (the kubelet's
watch-based configmap/secret manager).

A pod registers the (kind, namespace, name) references it has; each referenced object
gets one informer with `fieldSelector=metadata.name=<name>`, shared by every pod that
refers to it and stopped when the last one goes. So the node sees only what its pods use,
and a change to one of them reaches the pods at once (`on_change` is called with the
object's key; the kubelet resyncs the pods that refer to it), which is how configMap
and secret volumes are updated in place.

Concurrency: one asyncio loop. `get` reads the informer's cache: consistent with the
server as of the informer's last event, None when the object does not exist.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from client.informer import Informer
from client.rest import Client

log = logging.getLogger("minik8s.kubelet.objects")
Ref = tuple[str, str, str]  # (kind, namespace, name)


class ObjectCache:
    def __init__(self, client: Client, on_change: Callable[[Ref], None]):
        self.client, self.on_change = client, on_change
        self._informers: dict[Ref, Informer] = {}
        self._users: dict[Ref, set[str]] = {}
        self._refs: dict[str, set[Ref]] = {}

    async def register(self, uid: str, refs: set[Ref], *, timeout: float = 10.0) -> bool:
        """Make `refs` the pod's references (watching new ones, dropping old ones) and
        wait until each is synced; False if that took longer than timeout."""
        old = self._refs.get(uid, set())
        self._refs[uid] = set(refs)
        for ref in refs - old:
            self._users.setdefault(ref, set()).add(uid)
            if ref not in self._informers:
                kind, ns, name = ref
                inf = Informer(self.client, kind, namespace=ns, field_selector=f"metadata.name={name}",
                               indexers={})
                def notify(*_a: object, ref: Ref = ref) -> None:
                    self.on_change(ref)
                inf.add_handler(on_add=notify, on_update=notify, on_delete=notify)
                inf.start()
                self._informers[ref] = inf
        await self._drop(uid, old - refs)
        pending = [self._informers[r].wait_for_sync() for r in refs]
        if not pending:
            return True
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*pending)
            return True
        except TimeoutError:
            return False

    async def unregister(self, uid: str) -> None:
        await self._drop(uid, self._refs.pop(uid, set()))

    async def _drop(self, uid: str, refs: set[Ref]) -> None:
        for ref in refs:
            users = self._users.get(ref, set())
            users.discard(uid)
            if not users:
                self._users.pop(ref, None)
                inf = self._informers.pop(ref, None)
                if inf is not None:
                    await inf.stop()

    def users(self, ref: Ref) -> set[str]:
        return set(self._users.get(ref, ()))

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        inf = self._informers.get((kind, namespace, name))
        if inf is None:
            return None
        return inf.store.get(f"{namespace}/{name}")

    async def stop(self) -> None:
        for inf in self._informers.values():
            await inf.stop()
        self._informers.clear()
