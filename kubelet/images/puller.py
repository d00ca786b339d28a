"""The kubelet's image manager: gets a container's image onto the node before the
container is created (pkg/kubelet/images image_manager.go EnsureImageExists, puller.go).

`ImageManager.ensure(pod_uid, image, policy, pull_secrets, event)` decides by
imagePullPolicy and does what the kubelet does, with its events and errors:
- an image name that does not parse -> `InvalidImageName` (event InspectFailed
  `Failed to apply default image tag "x": ...`);
- `Never`: present -> used; missing -> `ErrImageNeverPull` (event ErrImageNeverPull
  `Container image "x" is not present with pull policy of Never`);
- `IfNotPresent`: present -> used (event Pulled `Container image "x" already present on
  machine`); else pulled;
- `Always`: pulled every time (a pull of an image whose blobs are all in the store
  fetches only its manifest);
- a pull: unless the (pod, image) pair is backing off, event Pulling `Pulling image "x"`,
  then Pulled `Successfully pulled image "x" in 1.2s (1.5s including waiting). Image
  size: N bytes.`, or Failed `Failed to pull image "x": <cause>` -> `ErrImagePull` with the
  cause as message, and the pair backs off (10 s, doubling to 5 min, kept per pod uid +
  image with its default tag, as `<uid>_<image>`, on the injected clock). While it backs
  off -> `ImagePullBackOff` (event BackOff `Back-off pulling image "x"`) whose message
  carries the last failure (`Back-off pulling image "x": ErrImagePull: <cause>`).
The host-root image (`minik8s.local/host-root`), and every image when the manager has no
image service (the kubelet's `--host-root-images`), is always present and never pulled.

Credentials: the pod's pull secrets (kubernetes.io/dockerconfigjson, and legacy
kubernetes.io/dockercfg) are matched to the image's registry and repository by
`registry.credentials_for`, tried in turn, then the node's own, then none.

Concurrency: one asyncio loop. A pull runs in the calling pod worker and holds no lock of
the kubelet's, so a slow or failing pull delays only its pod; the image service makes
concurrent pulls of one image one pull and bounds how many different images pull at once.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubelet.backoff import Backoff
from kubelet.images import HOST_ROOT_IMAGE, ImageError
from kubelet.images import reference
from kubelet.images.registry import Credentials, credentials_for
from kubelet.images.service import ImageService

log = logging.getLogger("minik8s.kubelet.images")

NORMAL, WARNING = "Normal", "Warning"

# The container waiting reasons (pkg/kubelet/images/types.go).
ERR_IMAGE_PULL = "ErrImagePull"
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
INVALID_IMAGE_NAME = "InvalidImageName"

DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
DOCKER_CONFIG_JSON_KEY = ".dockerconfigjson"
DOCKERCFG = "kubernetes.io/dockercfg"
DOCKERCFG_KEY = ".dockercfg"

EventFn = Callable[[str, str, str], None]  # (type, reason, message)


@dataclass(frozen=True)
class Ensured:
    """The outcome for one container: `error` None means the image is there."""
    error: str | None = None   # a waiting reason: ErrImagePull, ImagePullBackOff, ...
    message: str = ""          # the waiting message
    retry: float | None = None  # when to look again (seconds); None: at the next resync


def go_duration(seconds: float) -> str:
    """Go's time.Duration String() of `seconds` truncated to the millisecond, as the
    kubelet prints pull times: 0s, 512ms, 1.234s, 2m3.5s, 1h0m0s."""
    ms = int(seconds * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, frac = divmod(rest, 1000)
    text = f"{s}" + (f".{frac:03d}".rstrip("0") if frac else "") + "s"
    if h:
        return f"{h}h{m}m{text}"
    if m:
        return f"{m}m{text}"
    return text


def docker_configs(secrets: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The dockerconfigjson documents (`{"auths": {...}}`) of pull secrets, in order, as
    Kubernetes' MakeDockerKeyring reads them: a kubernetes.io/dockerconfigjson Secret's
    `.dockerconfigjson`, a kubernetes.io/dockercfg Secret's `.dockercfg` (the auths map
    itself); other types are ignored. A secret that does not decode raises ValueError
    naming it."""
    docs: list[dict[str, Any]] = []
    for secret in secrets:
        stype, data = secret.get("type"), secret.get("data") or {}
        key = {DOCKER_CONFIG_JSON: DOCKER_CONFIG_JSON_KEY, DOCKERCFG: DOCKERCFG_KEY}.get(str(stype))
        if key is None or not data.get(key):
            continue
        name = (secret.get("metadata") or {}).get("name", "")
        try:
            doc = json.loads(base64.b64decode(data[key]))
        except (ValueError, binascii.Error) as e:
            raise ValueError(f'image pull secret "{name}": {key} is not valid JSON: {e}') from None
        if not isinstance(doc, dict):
            raise ValueError(f'image pull secret "{name}": {key} is not a JSON object')
        docs.append(doc if key == DOCKER_CONFIG_JSON_KEY else {"auths": doc})
    return docs


def _with_default_tag(image: str, ref: reference.Reference) -> str:
    """applyDefaultImageTag: `busybox` -> `busybox:latest`, without qualifying the name."""
    if ref.digest is None and ref.tag and not image.endswith(":" + ref.tag):
        return f"{image}:{ref.tag}"
    return image


class ImageManager:
    """`service` None: every image is the host root (nothing is ever pulled)."""

    # How long after a failed pull the pod is looked at again: upstream's pod worker
    # requeues a pod whose sync failed after its backOffPeriod (10 s).
    PULL_ERROR_RETRY = 10.0

    def __init__(self, service: ImageService | None, *, backoff: Backoff):
        self.service, self.backoff = service, backoff
        self._last_error: dict[str, str] = {}   # back-off key -> "ErrImagePull: <cause>"
        self._failed_at: dict[str, float] = {}  # back-off key -> when its last pull failed

    async def ensure(self, pod_uid: str, image: str, policy: str,
                     pull_secrets: Sequence[Mapping[str, Any]], event: EventFn, *,
                     before_pull: Callable[[], Awaitable[None]] | None = None) -> Ensured:
        """`before_pull` is awaited when a pull is about to start (the kubelet writes the
        pod's status then, so a long pull shows as ContainerCreating)."""
        if self.service is None or image == HOST_ROOT_IMAGE:
            event(NORMAL, "Pulled", f'Container image "{image}" already present on machine')
            return Ensured()
        try:
            ref = reference.parse(image)
        except ValueError as e:
            msg = f'Failed to apply default image tag "{image}": {e}'
            event(WARNING, "InspectFailed", msg)
            return Ensured(error=INVALID_IMAGE_NAME, message=msg)
        if policy != "Always":
            record = self.service.get(image)
            if record is not None:
                event(NORMAL, "Pulled", f'Container image "{image}" already present on machine')
                return Ensured()
            if policy == "Never":
                msg = f'Container image "{image}" is not present with pull policy of Never'
                event(WARNING, ERR_IMAGE_NEVER_PULL, msg)
                return Ensured(error=ERR_IMAGE_NEVER_PULL, message=msg, retry=self.PULL_ERROR_RETRY)
        return await self._pull(pod_uid, image, ref, pull_secrets, event, before_pull)

    def _backing_off(self, key: str) -> float:
        """Seconds left of the pair's back-off, counted from its last failure
        (flowcontrol.Backoff.IsInBackOffSinceUpdate); 0: not backing off."""
        failed = self._failed_at.get(key)
        return 0.0 if failed is None else self.backoff.remaining(key, failed)

    async def _pull(self, pod_uid: str, image: str, ref: reference.Reference,
                    pull_secrets: Sequence[Mapping[str, Any]], event: EventFn,
                    before_pull: Callable[[], Awaitable[None]] | None) -> Ensured:
        assert self.service is not None
        key = f"{pod_uid}_{_with_default_tag(image, ref)}"
        left = self._backing_off(key)
        if left > 0:
            msg = f'Back-off pulling image "{image}"'
            event(NORMAL, "BackOff", msg)
            if key in self._last_error:
                msg = f"{msg}: {self._last_error[key]}"
            return Ensured(error=IMAGE_PULL_BACK_OFF, message=msg, retry=left)
        self._last_error.pop(key, None)
        if before_pull is not None:
            await before_pull()
        event(NORMAL, "Pulling", f'Pulling image "{image}"')
        started = time.monotonic()
        try:
            credentials: list[Credentials] = credentials_for(ref.domain, docker_configs(pull_secrets), ref.path)
            result = await self.service.pull(image, credentials=credentials)
        except Exception as e:  # noqa: BLE001 - every failure is the container's ErrImagePull
            cause = str(e) or repr(e)
            if not isinstance(e, (ImageError, ValueError)):
                log.warning("pull of %s failed unexpectedly", image, exc_info=True)
            event(WARNING, "Failed", f'Failed to pull image "{image}": {cause}')
            now = self.backoff.now()
            self.backoff.next(key, now)
            self._failed_at[key] = now
            self._last_error[key] = f"{ERR_IMAGE_PULL}: {cause}"
            return Ensured(error=ERR_IMAGE_PULL, message=cause, retry=self.PULL_ERROR_RETRY)
        total = time.monotonic() - started
        event(NORMAL, "Pulled", f'Successfully pulled image "{image}" in {go_duration(result.seconds)} '
                                f"({go_duration(total)} including waiting). Image size: {result.size} bytes.")
        self._gc()
        return Ensured()

    def _gc(self) -> None:
        """Drop back-off entries that have expired (flowcontrol.Backoff.GC)."""
        for key in [k for k in self._failed_at if self._backing_off(k) == 0
                    and self.backoff.now() - self._failed_at[k] > self.backoff.reset]:
            self._failed_at.pop(key, None)
            self._last_error.pop(key, None)

    def forget_pod(self, pod_uid: str) -> None:
        """The pod is gone: its back-off entries go too."""
        prefix = pod_uid + "_"
        self.backoff.forget_prefix(prefix)
        for d in (self._failed_at, self._last_error):
            for key in [k for k in d if k.startswith(prefix)]:
                del d[key]
