"""The service account controller: every active namespace has a `default`
ServiceAccount (Kubernetes' pkg/controller/serviceaccount, ServiceAccountsController).

What it guarantees
- A namespace that is Active (no deletionTimestamp) and lacks one of
  `service_accounts` (default: just `default`) gets it created, whether the namespace
  is new or the account was deleted.
- Nothing is done for a terminating namespace; AlreadyExists (the cache was late) and
  Forbidden because the namespace began terminating meanwhile are normal outcomes.

Keys are namespace names: a namespace change enqueues it, and so does any change to
one of the managed accounts (its deletion above all).

Concurrency: one asyncio loop; a namespace is never handled by two workers at once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from controller_manager.controller import Controller
from machinery import errors

log = logging.getLogger("minik8s.controller.serviceaccount")


@dataclass(frozen=True, kw_only=True)
class ServiceAccountOptions:
    service_accounts: tuple[str, ...] = ("default",)  # made in every active namespace


class ServiceAccountController(Controller):
    name = "serviceaccount"
    Options = ServiceAccountOptions

    def __init__(self, client, factory, *, recorder=None, clock=None,
                 options: ServiceAccountOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.names = tuple((options or ServiceAccountOptions()).service_accounts)
        self.namespaces = self.watch(factory.informer("namespaces"))
        self.accounts = self.watch(factory.informer("serviceaccounts"), key_fn=self._namespace_of)

    def _namespace_of(self, sa: dict) -> str | None:
        md = sa["metadata"]
        return md.get("namespace") if md.get("name") in self.names else None

    async def reconcile(self, key) -> None:
        ns = self.namespaces.store.get(key)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        if (ns.get("status") or {}).get("phase", "Active") != "Active":
            return
        for name in self.names:
            if f"{key}/{name}" in self.accounts.store:
                continue
            log.info("%s: creating ServiceAccount %s/%s", self.name, key, name)
            try:
                await self.client.create({"apiVersion": "v1", "kind": "ServiceAccount",
                                          "metadata": {"name": name, "namespace": key}},
                                         namespace=key)
            except errors.AlreadyExists:
                pass  # the cache had not seen it yet
            except errors.Forbidden as exc:
                if "being terminated" not in exc.message:
                    raise
                # the namespace began terminating: nothing to do
            except errors.NotFound:
                pass  # the namespace went away
