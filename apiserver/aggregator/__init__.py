"""Kubernetes' aggregation layer (kube-aggregator) inside the API server.

What this package guarantees
- `Aggregator.start()` publishes kube-system/extension-apiserver-authentication
  (--client-ca-file, --requestheader-* as kube-apiserver writes them), creates a Local
  APIService for every built-in group/version (kube-apiserver's autoregister
  controller: `spec.service` null, Available True reason Local), and follows the
  APIServices, Services and EndpointSlices in the watch cache.
- `claims(path)` is true for `/apis/<group>/<version>[/...]` when an APIService with a
  `spec.service` names that group/version; `proxy(request)` then forwards the request
  (every verb, the body and the answer streamed, watches included; upgrades are not
  forwarded) to a ready endpoint of the Service, resolved from its EndpointSlices (as
  --enable-aggregator-routing=true), over HTTPS verified by `spec.caBundle` (or not,
  with insecureSkipTLSVerify) against the name `<service>.<namespace>.svc`, presenting
  the front-proxy client certificate and naming the authenticated user in the
  requestheader headers (the client's own Authorization, Impersonate-* and X-Remote-*
  headers are not forwarded). An APIService that is not Available, or a Service with
  no ready endpoint or an endpoint that cannot be reached, is 503 `service
  unavailable` as kube-aggregator answers it.
- Availability (apiserver/aggregator/available.py) is rechecked for every APIService
  on any change of APIServices, Services or EndpointSlices, and every 30 s; the status
  is written only when it changes. The discovery check's APIResourceList is what
  discovery (apiserver/discovery.py) merges, refreshed with each check, and so is the
  extension's /openapi/v3 document of the group/version (in `openapi`, which
  /openapi/v3 lists and serves).

Concurrency: one asyncio loop (the server's). A single worker task rechecks; the
cache feed only sets its wake-up event.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from apiserver import registry
from apiserver.aggregator import available, proxy
from apiserver.auth.feed import CacheFeed
from apiserver.resources import WriteOptions
from machinery import errors, requestheader
from machinery.requestheader import RequestHeaderConfig

if TYPE_CHECKING:
    from apiserver.app import API

log = logging.getLogger("minik8s.apiserver.aggregator")

RESYNC = 30.0
GROUP = "apiregistration.k8s.io"

# kube-apiserver's apiVersionPriorities (controlplane/apiserver/aggregator.go): the
# priorities of the built-in group/versions' Local APIServices.
PRIORITIES: dict[tuple[str, str], tuple[int, int]] = {
    ("", "v1"): (18000, 1), ("apiregistration.k8s.io", "v1"): (18000, 15),
    ("apps", "v1"): (17800, 15), ("events.k8s.io", "v1"): (17750, 15),
    ("authentication.k8s.io", "v1"): (17700, 15), ("authorization.k8s.io", "v1"): (17600, 15),
    ("autoscaling", "v1"): (17500, 15), ("autoscaling", "v2"): (17500, 30), ("batch", "v1"): (17400, 15),
    ("certificates.k8s.io", "v1"): (17300, 15), ("networking.k8s.io", "v1"): (17200, 15),
    ("policy", "v1"): (17100, 15), ("rbac.authorization.k8s.io", "v1"): (17000, 15),
    ("storage.k8s.io", "v1"): (16800, 15), ("apiextensions.k8s.io", "v1"): (16700, 15),
    ("admissionregistration.k8s.io", "v1"): (16700, 15), ("scheduling.k8s.io", "v1"): (16600, 15),
    ("coordination.k8s.io", "v1"): (16500, 15), ("node.k8s.io", "v1"): (16300, 15),
    ("discovery.k8s.io", "v1"): (16200, 15), ("flowcontrol.apiserver.k8s.io", "v1"): (16100, 21),
}
DEFAULT_PRIORITY = (1000, 15)  # kube-apiserver's for a group/version not in its table
AUTOMANAGED = "kube-aggregator.kubernetes.io/automanaged"  # "onstart" built-ins, "true" CRDs


def apiservice_name(group: str, version: str) -> str:
    return f"{version}.{group}"


@dataclass
class Options:
    """The aggregator's flags (kube-apiserver's names)."""
    proxy_client_cert_file: str = ""
    proxy_client_key_file: str = ""
    client_ca: str = ""                 # --client-ca-file's content, published
    requestheader: RequestHeaderConfig = field(default_factory=RequestHeaderConfig)


class Aggregator:
    def __init__(self, api: API, options: Options):
        self.api = api
        self.options = options
        self.services: dict[str, dict] = {}   # APIService name -> object (the cache's, read-only)
        # (group, version) -> (APIResourceList, fresh): what the last discovery check fetched
        self.discovery: dict[tuple[str, str], tuple[dict, bool]] = {}
        # 'apis/<group>/<version>' -> (OpenAPI v3 document, hash), fetched with each check
        self.openapi: dict[str, tuple[bytes, str]] = {}
        self.wake = asyncio.Event()
        self.feed = CacheFeed(api.cache, self, ("apiservices", "services", "endpointslices"), "aggregator")
        self.proxy = proxy.Proxy(self, self._client_tls())
        self._task: asyncio.Task | None = None
        self._unlisten: Callable[[], None] = lambda: None

    def _client_tls(self) -> tuple[str, str] | None:
        o = self.options
        return (o.proxy_client_cert_file, o.proxy_client_key_file) if o.proxy_client_cert_file else None

    # -- the cache feed's sink: only notes the change and wakes the worker --------------

    def replace(self, kind: str, objs: list[dict]) -> None:
        if kind == "apiservices":
            self.services = {o["metadata"]["name"]: o for o in objs}
        self.wake.set()

    def put(self, kind: str, obj: dict) -> None:
        if kind == "apiservices":
            self.services[obj["metadata"]["name"]] = obj
        self.wake.set()

    def delete(self, kind: str, obj: dict) -> None:
        if kind == "apiservices":
            self.services.pop(obj["metadata"]["name"], None)
            spec = obj.get("spec") or {}
            self.discovery.pop((spec.get("group", ""), spec.get("version", "")), None)
            self.openapi.pop(f"apis/{spec.get('group', '')}/{spec.get('version', '')}", None)
        self.wake.set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.publish_authentication()
        await self.register_local()
        await self.feed.start()
        self._unlisten = registry.on_change(self.wake.set)  # a CRD's versions came or went
        self._task = asyncio.create_task(self._run(), name="aggregator")

    async def stop(self) -> None:
        self._unlisten()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.feed.stop()
        await self.proxy.close()

    async def publish_authentication(self) -> None:
        """kube-apiserver's ClientCARegistrationHook: the ConfigMap extension servers read."""
        o = self.options
        data = RequestHeaderConfig(client_ca=o.client_ca, **{
            k: getattr(o.requestheader, k) for k in (
                "requestheader_client_ca", "allowed_names", "username_headers", "uid_headers",
                "group_headers", "extra_prefixes")}).to_data()
        rt = registry.by_plural("configmaps")
        assert rt is not None
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": requestheader.CONFIGMAP, "namespace": requestheader.NAMESPACE},
                "data": data}
        for _ in range(5):
            try:
                old = await self.api.resources.get(rt, requestheader.NAMESPACE, requestheader.CONFIGMAP)
            except errors.NotFound:
                try:
                    await self.api.resources.create(rt, requestheader.NAMESPACE, body)
                    return
                except errors.AlreadyExists:
                    continue
            if old.get("data") == data:
                return
            try:
                await self.api.resources.update(rt, requestheader.NAMESPACE, requestheader.CONFIGMAP, {
                    **body, "metadata": {**body["metadata"],
                                         "resourceVersion": old["metadata"]["resourceVersion"]}})
                return
            except errors.Conflict:
                continue

    async def register_local(self) -> None:
        """A Local APIService for each built-in group/version (the autoregister controller)."""
        rt = registry.by_plural("apiservices")
        assert rt is not None
        for group, version in sorted({(r.group, r.version) for r in registry.RESOURCES}):
            gpm, vp = PRIORITIES.get((group, version), DEFAULT_PRIORITY)
            body = {"apiVersion": f"{GROUP}/v1", "kind": "APIService",
                    "metadata": {"name": apiservice_name(group, version), "labels": {AUTOMANAGED: "onstart"}},
                    "spec": {"group": group, "version": version, "groupPriorityMinimum": gpm,
                             "versionPriority": vp, "service": None}}
            try:
                await self.api.resources.create(rt, "", body)
            except errors.AlreadyExists:
                pass

    async def sync_custom_resources(self) -> None:
        """A Local APIService for each group/version a CustomResourceDefinition serves,
        removed when none does, as kube-apiserver's crdRegistrationController keeps them
        (groupPriorityMinimum 1000, versionPriority 100). Removal waits until every stored
        CRD is served, so a restarting server does not drop and remake them."""
        rt = registry.by_plural("apiservices")
        assert rt is not None
        built_in = {(r.group, r.version) for r in registry.RESOURCES}
        wanted = {(r.group, r.version) for r in registry.served()} - built_in
        for group, version in sorted(wanted):
            if apiservice_name(group, version) in self.services:
                continue
            body = {"apiVersion": f"{GROUP}/v1", "kind": "APIService",
                    "metadata": {"name": apiservice_name(group, version), "labels": {AUTOMANAGED: "true"}},
                    "spec": {"group": group, "version": version, "groupPriorityMinimum": 1000,
                             "versionPriority": 100, "service": None}}
            try:
                await self.api.resources.create(rt, "", body)
            except errors.AlreadyExists:
                pass
        if not self.api.crds.synced.is_set():
            return
        for name, svc in list(self.services.items()):
            spec = svc.get("spec") or {}
            if ((svc["metadata"].get("labels") or {}).get(AUTOMANAGED) == "true" and not spec.get("service")
                    and (spec.get("group", ""), spec.get("version", "")) not in wanted):
                try:
                    await self.api.resources.delete(rt, "", name, {})
                except errors.NotFound:
                    pass

    async def _run(self) -> None:
        while True:
            self.wake.clear()
            try:
                await self.sync_custom_resources()
                await self.check_all()
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("APIService availability check failed")
            try:
                await asyncio.wait_for(self.wake.wait(), RESYNC)
            except TimeoutError:
                pass

    async def check_all(self) -> None:
        for name, svc in list(self.services.items()):
            cond, resources = await available.check(self, svc)
            spec = svc.get("spec") or {}
            gv = (spec.get("group", ""), spec.get("version", ""))
            if resources is not None:
                self.discovery[gv] = (resources, True)
                doc = await available.openapi_v3(self, svc)
                if doc is not None:
                    self.openapi[f"apis/{gv[0]}/{gv[1]}"] = doc
            elif gv in self.discovery:
                self.discovery[gv] = (self.discovery[gv][0], False)
            await self._write_condition(name, cond)

    async def _write_condition(self, name: str, cond: dict) -> None:
        rt = registry.by_plural("apiservices")
        assert rt is not None
        current = self.services.get(name)
        if current is None:
            return
        new = available.with_condition(current, cond)
        if new is None:
            return
        try:
            await self.api.resources.update(rt, "", name, new, WriteOptions(), subresource="status")
        except (errors.Conflict, errors.NotFound):
            self.wake.set()  # changed under us: the feed brings the new one, then recheck

    # -- routing ---------------------------------------------------------------------------

    def remote_for(self, group: str, version: str) -> dict | None:
        """The APIService that sends group/version to a Service, if one does."""
        svc = self.services.get(apiservice_name(group, version))
        if svc is None or not isinstance((svc.get("spec") or {}).get("service"), dict):
            return None
        return svc

    def claims(self, path: str) -> dict | None:
        parts = path.split("/", 4)
        if len(parts) < 4 or parts[0] != "" or parts[1] != "apis" or not parts[2] or not parts[3]:
            return None
        return self.remote_for(parts[2], parts[3])

    # -- discovery (apiserver/discovery.py asks) --------------------------------------------

    def remote_groups(self) -> list[tuple[str, list[str]]]:
        """Aggregated (non-local) groups and their versions, in kube-aggregator's order:
        groupPriorityMinimum, then versionPriority, highest first."""
        by_group: dict[str, list[tuple[int, int, str]]] = {}
        for svc in self.services.values():
            spec = svc.get("spec") or {}
            if not isinstance(spec.get("service"), dict) or not spec.get("group"):
                continue
            by_group.setdefault(spec["group"], []).append(
                (int(spec.get("groupPriorityMinimum") or 0), int(spec.get("versionPriority") or 0),
                 spec.get("version", "")))
        ordered = sorted(by_group.items(), key=lambda kv: (-max(v[0] for v in kv[1]), kv[0]))
        return [(g, [v for _, _, v in sorted(vs, key=lambda x: (-x[1], x[2]))]) for g, vs in ordered]

    def resource_list(self, group: str, version: str) -> tuple[dict, bool] | None:
        return self.discovery.get((group, version))


def options_from_flags(flags: Any) -> Options:
    """Options from kube-apiserver's flags (apiserver/main.py); OSError for an unreadable CA."""
    def read(path: str) -> str:
        if not path:
            return ""
        with open(path) as f:
            return f.read()

    def names(value: str) -> tuple[str, ...]:
        return tuple(n.strip() for n in (value or "").split(",") if n.strip())
    return Options(
        proxy_client_cert_file=getattr(flags, "proxy_client_cert_file", "") or "",
        proxy_client_key_file=getattr(flags, "proxy_client_key_file", "") or "",
        client_ca=read(getattr(flags, "client_ca_file", "") or ""),
        requestheader=RequestHeaderConfig(
            requestheader_client_ca=read(getattr(flags, "requestheader_client_ca_file", "") or ""),
            allowed_names=names(getattr(flags, "requestheader_allowed_names", "")),
            username_headers=names(getattr(flags, "requestheader_username_headers", "")),
            uid_headers=names(getattr(flags, "requestheader_uid_headers", "")),
            group_headers=names(getattr(flags, "requestheader_group_headers", "")),
            extra_prefixes=names(getattr(flags, "requestheader_extra_headers_prefix", ""))))
