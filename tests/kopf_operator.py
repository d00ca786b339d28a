"""A small operator written with kopf, run by tests/test_crd_kopf.py as `kopf run`.

It manages `Greeting`s (kopf.minik8s.io/v1, namespaced, status subresource), the way an
operator author would write it from kopf's documentation:
- on create: makes a ConfigMap `<name>-greeting` holding spec.message (owned by the
  Greeting, through kopf.adopt), posts a Normal event ConfigMapCreated about the Greeting
  (kopf.info: a core/v1 Event) and writes status.phase/message/configMap;
- on update of spec.message: updates the ConfigMap and status.message;
- on delete: kopf keeps its finalizer `kopf.zalando.org/KopfFinalizerMarker` on the
  object while the handler runs. The handler waits (a kopf.TemporaryError retried every
  half second) until the file `$GREETING_GATE_DIR/<name>` exists, so a test can see the
  object held by the finalizer, then deletes the ConfigMap and returns; kopf then removes
  the finalizer and the API server removes the object.

It talks to the API server only through kopf (watch, merge patch of the object and of its
status, JSON patch of finalizers, core/v1 events) and the official client (ConfigMaps),
both logged in from $KUBECONFIG.
"""
from __future__ import annotations

import os
from typing import Any

import kopf
import kubernetes

GROUP, VERSION, PLURAL = "kopf.minik8s.io", "v1", "greetings"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    kubernetes.config.load_kube_config()
    # Retries of the delete handler are what the test waits on: keep them short.
    settings.execution.max_workers = 4
    settings.watching.server_timeout = 60


def configmap_name(name: str) -> str:
    return f"{name}-greeting"


@kopf.on.create(GROUP, VERSION, PLURAL)
def create(body: kopf.Body, spec: kopf.Spec, name: str, namespace: str, patch: kopf.Patch, **_: Any) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": configmap_name(name), "labels": {"greeting": name}},
          "data": {"message": spec["message"]}}
    kopf.adopt(cm)  # namespace and ownerReference from the Greeting being handled
    core = kubernetes.client.CoreV1Api()
    try:
        core.create_namespaced_config_map(namespace, cm)
    except kubernetes.client.ApiException as e:
        if e.status != 409:  # a retried handler finds its ConfigMap already made
            raise
        core.patch_namespaced_config_map(configmap_name(name), namespace, {"data": cm["data"]})
    kopf.info(body, reason="ConfigMapCreated", message=f"made ConfigMap {configmap_name(name)}")
    patch.status["phase"] = "Ready"
    patch.status["message"] = spec["message"]
    patch.status["configMap"] = configmap_name(name)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec.message")
def update(new: str, name: str, namespace: str, patch: kopf.Patch, **_: Any) -> None:
    kubernetes.client.CoreV1Api().patch_namespaced_config_map(
        configmap_name(name), namespace, {"data": {"message": new}})
    patch.status["message"] = new


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete(name: str, namespace: str, **_: Any) -> None:
    gate = os.path.join(os.environ["GREETING_GATE_DIR"], name)
    if not os.path.exists(gate):
        raise kopf.TemporaryError(f"waiting for {gate}", delay=0.5)
    try:
        kubernetes.client.CoreV1Api().delete_namespaced_config_map(configmap_name(name), namespace)
    except kubernetes.client.ApiException as e:
        if e.status != 404:
            raise
