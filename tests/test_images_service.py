"""The image service (kubelet/images/service.py) against a real registry: a pull leaves a
complete image that resolves to its snapshots and config; one pull per image at a time."""
from __future__ import annotations

import asyncio
import os

import pytest

from kubelet.images import HOST_ROOT_IMAGE, ImageError
from kubelet.images.registry import RegistryHostConfig
from kubelet.images.service import ImageService, PullError
from kubelet.images.store import ContentStore
from tests.images_fixtures import oci_images, plain_registry  # noqa: F401


def service(tmp_path, *registries) -> ImageService:
    return ImageService(ContentStore(str(tmp_path / "store")),
                        registries={r.host: RegistryHostConfig(insecure=True) for r in registries})


def test_pull_then_resolve_gives_layers_top_first_and_the_config(tmp_path, plain_registry, oci_images):
    async def main():
        svc = service(tmp_path, plain_registry)
        name = f"{plain_registry.host}/lab/app-a:v1"
        with pytest.raises(ImageError, match="not present"):
            svc.resolve(name)
        result = await svc.pull(name)
        await svc.aclose()
        return svc, name, result
    svc, name, result = asyncio.run(main())
    built = oci_images.images["app-a"]
    assert result.record.manifest_digest == built.manifest_digest
    assert result.image_id == f"{plain_registry.host}/lab/app-a@{built.manifest_digest}"
    img = svc.resolve(name)
    assert len(img.layers) == 2
    assert os.path.exists(os.path.join(img.layers[0], "app", "a"))  # the top layer first
    assert os.path.exists(os.path.join(img.layers[1], "bin", "busybox"))
    assert (img.entrypoint, img.cmd, img.working_dir, img.user) == (["/bin/sh", "-c"], ["cat /app/a"], "/app", "app")
    assert img.env["APP"] == "a" and img.env["PATH"] == "/bin"
    assert img.image_id == result.image_id


def test_concurrent_pulls_of_one_image_share_one_pull(tmp_path, plain_registry, oci_images):
    async def main():
        svc = service(tmp_path, plain_registry)
        name = f"{plain_registry.host}/lab/app-b:v1"
        results = await asyncio.gather(*(svc.pull(name) for _ in range(4)))
        await svc.aclose()
        return results
    results = asyncio.run(main())
    assert len({id(r) for r in results}) == 1  # one pull, its result shared
    assert results[0].fetched > 0


def test_unknown_image_is_a_pull_error_naming_it(tmp_path, plain_registry):
    async def main():
        svc = service(tmp_path, plain_registry)
        try:
            with pytest.raises(PullError, match=r'lab/nothing:v1.*(404|not found|unknown)'):
                await svc.pull(f"{plain_registry.host}/lab/nothing:v1")
        finally:
            await svc.aclose()
    asyncio.run(main())
    assert ImageService(ContentStore(str(tmp_path / "s2"))).resolve(HOST_ROOT_IMAGE).layers == ["/"]


class CountingService(ImageService):
    """The real service, recording how many pulls of different images run at once."""

    def __init__(self, *a, limit: int, **kw):
        super().__init__(*a, max_parallel=limit, **kw)
        self.limit, self.active, self.most = limit, 0, 0
        self.full = asyncio.Event()

    async def _pull(self, ref, credentials):
        self.active += 1
        self.most = max(self.most, self.active)
        if self.active == self.limit:
            self.full.set()
        await self.full.wait()  # hold each pull until the limit's worth have started
        try:
            return await super()._pull(ref, credentials)
        finally:
            self.active -= 1


def test_pulls_of_different_images_run_in_parallel_up_to_the_limit(tmp_path, plain_registry, oci_images):
    async def main():
        svc = CountingService(ContentStore(str(tmp_path / "store")), limit=2,
                              registries={plain_registry.host: RegistryHostConfig(insecure=True)})
        names = [f"{plain_registry.host}/lab/{t}:v1" for t in ("app-a", "app-b", "whiteout")]
        try:
            await asyncio.gather(*(svc.pull(n) for n in names))
        finally:
            await svc.aclose()
        return svc, names
    svc, names = asyncio.run(main())
    assert svc.most == 2  # two at once, never the third beside them
    assert all(svc.get(n) is not None for n in names)
