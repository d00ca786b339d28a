"""Images: where a container's root filesystem and default process come from.

`ImageStore.resolve(image)` returns an `Image`: a directory to use as the read-only
lower layer of the container's root (the runtime puts a private writable layer on top),
and the image's config (entrypoint, cmd, env, working dir) that the pod spec's command,
args and env are combined with, as a container runtime does with an OCI image config.

`HostRootImageStore` is the only store for now: every image name resolves to the host's
root filesystem (the filesystem mounted at /, not the host's other mounts) with an empty
entrypoint and cmd, so a container must give its command. A store that pulls and
unpacks layered images belongs in this package, and needs no change to the runtime or
the pod logic: the runtime only asks `resolve` for a root.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(Exception):
    """The image cannot be used (Kubernetes reports ErrImagePull / InvalidImageName)."""


@dataclass(frozen=True)
class Image:
    rootfs: str
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: {"PATH": DEFAULT_PATH})
    working_dir: str = "/"


class ImageStore(ABC):
    @abstractmethod
    def resolve(self, image: str) -> Image:
        """The image, available locally; raises ImageError. Thread-safe."""


class HostRootImageStore(ImageStore):
    def resolve(self, image: str) -> Image:
        if not image:
            raise ImageError("container image is empty")
        return Image(rootfs="/")
