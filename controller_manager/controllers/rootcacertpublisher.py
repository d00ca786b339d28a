"""The root CA certificate publisher: every namespace has the `kube-root-ca.crt`
ConfigMap holding the cluster's CA bundle under `ca.crt`, which the ServiceAccount
token volume of every pod projects (Kubernetes' pkg/controller/certificates/
rootcacertpublisher).

What it guarantees
- A namespace without the ConfigMap gets it created with `data: {ca.crt: <root CA>}` and
  the annotation `kubernetes.io/description` (Kubernetes' wording); one whose data or
  annotation drifted is updated back (other annotations and labels are kept).
- The root CA is kube-controller-manager's: the PEM file of --root-ca-file, else the CA
  data of the controller manager's kubeconfig, else (a plain-HTTP cluster) empty: the
  ConfigMap is still made, so pods' token volumes can be projected.
- A create refused because the namespace is gone or terminating is a normal outcome,
  not retried.

Keys are namespace names: a namespace's creation or change enqueues it, and so does any
change to a `kube-root-ca.crt` ConfigMap (its deletion above all).

Concurrency: one asyncio loop; a namespace is never handled by two workers at once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from controller_manager.controller import Controller
from machinery import errors

log = logging.getLogger("minik8s.controller.rootcacertpublisher")

CONFIGMAP_NAME = "kube-root-ca.crt"
DESCRIPTION_ANNOTATION = "kubernetes.io/description"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
               "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
               "guaranteed across distributions of Kubernetes clusters.")


@dataclass(frozen=True, kw_only=True)
class RootCACertPublisherOptions:
    root_ca: str = ""  # the PEM bundle published (controller_manager.main reads it)


class RootCACertPublisher(Controller):
    name = "root-ca-cert-publisher"
    queue_name = "root_ca_cert_publisher"
    Options = RootCACertPublisherOptions

    def __init__(self, client, factory, *, recorder=None, clock=None,
                 options: RootCACertPublisherOptions | None = None):
        super().__init__(client, clock=clock, recorder=recorder)
        self.root_ca = (options or RootCACertPublisherOptions()).root_ca
        self.namespaces = self.watch(factory.informer("namespaces"))
        self.configmaps = self.watch(factory.informer("configmaps"), key_fn=self._namespace_of)

    @staticmethod
    def _namespace_of(cm: dict) -> str | None:
        md = cm["metadata"]
        return md.get("namespace") if md.get("name") == CONFIGMAP_NAME else None

    async def reconcile(self, key) -> None:
        ns = self.namespaces.store.get(key)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        data = {"ca.crt": self.root_ca}
        cm = self.configmaps.store.get(f"{key}/{CONFIGMAP_NAME}")
        if cm is None:
            log.info("%s: creating ConfigMap %s/%s", self.name, key, CONFIGMAP_NAME)
            try:
                await self.client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": CONFIGMAP_NAME, "namespace": key,
                                                       "annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION}},
                                          "data": data}, namespace=key)
            except errors.NotFound:
                pass  # the namespace went away
            except errors.Forbidden as exc:
                if "being terminated" not in exc.message:
                    raise
            return
        annotations = cm["metadata"].get("annotations") or {}
        if cm.get("data") == data and annotations.get(DESCRIPTION_ANNOTATION):
            return
        log.info("%s: updating ConfigMap %s/%s", self.name, key, CONFIGMAP_NAME)
        updated = {**cm, "data": data,
                   "metadata": {**cm["metadata"], "annotations": {**annotations, DESCRIPTION_ANNOTATION: DESCRIPTION}}}
        await self.client.update(updated, namespace=key)
