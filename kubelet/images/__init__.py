"""Images: where a container's root filesystem and default process come from.

`ImageStore.resolve(image)` returns an `Image` that is already on the node: the read-only
directories to stack as the container root's lower layers (the runtime puts a private
writable layer on top, with overlayfs), and the image config (entrypoint, cmd, env, working
dir, user) that the pod spec's command, args and env are combined with, as a container
runtime does with an OCI image config. The runtime leases the image for each container
(`lease`/`release`), so that image GC never removes an image a container uses. Getting
the image onto the node (pulling, pull policy, credentials, back-off) is the kubelet's
business, through the image service (service.py); the runtime only asks `resolve` for a
root.

The host-root mode is an explicit opt-in, never what an ordinary image name means:
- the image name `HOST_ROOT_IMAGE` (`minik8s.local/host-root`, a name no registry can
  serve: `.local` is reserved for link-local names) always resolves to the host's root
  filesystem (the filesystem mounted at /, not the host's other mounts);
- `HostRootImageStore` resolves every name that way; the kubelet uses it only with
  `--host-root-images`, for tests and labs that need the host's own tools.
A host-root image has no entrypoint, cmd or user, so the container must give its command.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_ROOT_IMAGE = "minik8s.local/host-root"


class ImageError(Exception):
    """The image cannot be used (Kubernetes reports ErrImagePull / InvalidImageName)."""


@dataclass(frozen=True)
class Image:
    layers: list[str]  # lower directories, topmost first (overlayfs' lowerdir order)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: {"PATH": DEFAULT_PATH})
    working_dir: str = "/"
    user: str = ""  # the config's User: "name", "uid", "name:group", "uid:gid"; "" is root
    image_id: str = ""  # repo@sha256:<manifest digest>, for status.containerStatuses[].imageID


HOST_ROOT = Image(layers=["/"])


class ImageStore(ABC):
    @abstractmethod
    def resolve(self, image: str) -> Image:
        """The image, available locally; raises ImageError. Thread-safe."""

    def lease(self, holder: str, image: str) -> None:
        """Mark `image` in use while the path `holder` (a container's directory, which
        must exist) does, so image GC keeps it; until `release(holder)`. The runtime
        leases before it resolves. A store whose images are never collected does
        nothing. Raises OSError when the lease cannot be written."""
        return None

    def release(self, holder: str) -> None:
        """Drop `holder`'s lease, if it has one."""
        return None


class HostRootImageStore(ImageStore):
    """Every image name is the host's root (the kubelet's `--host-root-images`)."""

    def resolve(self, image: str) -> Image:
        if not image:
            raise ImageError("container image is empty")
        return HOST_ROOT
