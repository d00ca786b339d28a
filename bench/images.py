"""Image benchmark: prints figures measured against a real loopback `docker-registry`
(tests/images_fixtures.py's Registry) and real pods of the Linux runtime. No assertions.

The images are built here with `umoci` and pushed with `skopeo`: "one" is busybox-static
(/bin/busybox and a few applets) plus `--layers` layers of incompressible data (random
bytes: some large files and many small ones per layer), ~`--mib` MiB compressed in all;
"two" is "one" plus one more layer a tenth of the total, so it shares ~90 % of its bytes.

(1) pull and unpack of "one" into a fresh store with our ImageService (download,
    verify, store, apply every layer into its snapshot), against `skopeo copy
    docker://... oci:DIR` followed by `tar -xzf` of each layer into its own directory,
    in the same rounds, which side goes first alternating. Medians and the ratio.
(2) pull of "two" into each round's store, which holds "one": its time as a
    percentage of the first pull's.
(3) pod start: LinuxRuntime driven directly (run_pod_sandbox, then start_container,
    until the container runs; one `sleep` container), `--pods` pods from "one" (an
    ImageService over a store holding it) and `--pods` pods in the host-root mode
    (HostRootImageStore), in alternating batches on one runtime, pods started one at a
    time and removed after each batch. p50 / p99 of both and the ratio.
(4) disk added per pod: `du -x` of the store plus the runtime's root, and the
    filesystem's used blocks (statvfs), before and after `--disk-pods` pods that write
    nothing are started, per pod; for both modes. The containers' writable layers are
    tmpfs (memory), so they are not on the node's disk.

Everything it makes (the registry, by PID; temp dirs; pods, the bridge, cgroups) is
removed at the end, also when a step fails or the run is interrupted (SIGINT, SIGTERM).

Run (root): .venv/bin/python -m bench.images [--rounds 5] [--pods 100] [--batch 10]
`--control` runs (3) with the host-root mode on both sides: the spread of its ratios is
what this machine's noise alone gives.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kubelet.images import HostRootImageStore  # noqa: E402
from kubelet.images.registry import RegistryHostConfig  # noqa: E402
from kubelet.images.service import ImageService  # noqa: E402
from kubelet.images.store import ContentStore  # noqa: E402
from kubelet.runtime import ContainerConfig, PodSandboxConfig  # noqa: E402
from tests.images_fixtures import BUSYBOX, Registry  # noqa: E402

REPO = "bench/big"
APPLETS = ("sh", "cat", "ls", "echo", "sleep", "true")
# Small files (1 to 4 KiB) per MiB of a data layer, as many in each layer for its size:
# real layers are mostly small files, and the second image's own layer is like the rest.
SMALL_PER_MIB = 10


def run(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def span(values: list[float], fmt: str = "{:.2f}") -> str:
    """median (min to max)"""
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))} to {fmt.format(max(values))})"


# -- the images ------------------------------------------------------------------------

def data_layer(path: str, name: str, size: int) -> None:
    """An uncompressed layer tar of ~`size` bytes of random data under /data/<name>/:
    SMALL_PER_MIB small files per MiB, the rest in large ones (0.5 to 1.5 MiB)."""
    rng = random.Random(name)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        def add(arc: str, data: bytes | None) -> None:
            info = tarfile.TarInfo(arc)
            info.mtime = 0
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                t.addfile(info, io.BytesIO(data))
        add("data/", None)
        add(f"data/{name}/", None)
        add(f"data/{name}/small/", None)
        left = size
        for i in range(SMALL_PER_MIB * size >> 20):
            data = os.urandom(rng.randint(1024, 4096))
            left -= len(data)
            add(f"data/{name}/small/{i:04d}", data)
        i = 0
        while left > 0:
            data = os.urandom(min(left, rng.randint(512 << 10, 1536 << 10)))
            left -= len(data)
            add(f"data/{name}/big-{i:03d}", data)
            i += 1


def build(workdir: str, *, layers: int, mib: int) -> tuple[str, dict[str, int]]:
    """The OCI layout with "one" and "two"; returns it and each image's compressed size."""
    layout = os.path.join(workdir, "layout")
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:one")
    root = os.path.join(workdir, "rootfs")
    os.makedirs(os.path.join(root, "bin"))
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(root, "bin", applet))
    run("umoci", "insert", "--image", f"{layout}:one", root, "/")
    run("umoci", "config", "--image", f"{layout}:one", "--config.env", "PATH=/bin",
        "--config.cmd", "/bin/sh")
    each = (mib << 20) // layers
    for i in range(layers):
        tar = os.path.join(workdir, f"layer{i}.tar")
        data_layer(tar, f"l{i}", each)
        run("umoci", "raw", "add-layer", "--image", f"{layout}:one", tar)
        os.unlink(tar)
    tar = os.path.join(workdir, "extra.tar")
    # A tenth of "two": one's bytes are 9/10 of it.
    data_layer(tar, "extra", (mib << 20) // 9)
    run("umoci", "raw", "add-layer", "--image", f"{layout}:one", "--tag", "two", tar)
    os.unlink(tar)
    sizes = {}
    for tag in ("one", "two"):
        manifest = oci_manifest(layout, tag)
        sizes[tag] = manifest["config"]["size"] + sum(la["size"] for la in manifest["layers"])
    return layout, sizes


def oci_manifest(layout: str, tag: str) -> dict:
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    for m in index["manifests"]:
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag:
            with open(os.path.join(layout, "blobs", *m["digest"].split(":"))) as f:
                return json.load(f)
    raise KeyError(tag)


# -- (1), (2): pulls -------------------------------------------------------------------

async def ours(host: str, store_dir: str, *images: str) -> list[float]:
    """Pulls `images` one after another with one new ImageService over a new (or given)
    store, as a kubelet that has just started; seconds each took. The first pays for
    what a kubelet pays once (its HTTP client, TLS context, connection); the later ones,
    like a running kubelet's, do not."""
    svc = ImageService(ContentStore(store_dir), registries={host: RegistryHostConfig(insecure=True)})
    out = []
    try:
        for image in images:
            t = time.perf_counter()
            await svc.pull(image)
            out.append(time.perf_counter() - t)
            os.sync()  # this pull's writes go to disk before the next is timed
        return out
    finally:
        await svc.aclose()


def skopeo_tar(host: str, tag: str, workdir: str) -> float:
    """`skopeo copy` to an OCI layout, then each layer untarred into its own directory
    (as our snapshots are: one per layer)."""
    layout = os.path.join(workdir, "layout")
    t = time.perf_counter()
    run("skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{host}/{REPO}:{tag}",
        f"oci:{layout}:{tag}")
    for i, layer in enumerate(oci_manifest(layout, tag)["layers"]):
        dest = os.path.join(workdir, "rootfs", str(i))
        os.makedirs(dest)
        run("tar", "-xzf", os.path.join(layout, "blobs", *layer["digest"].split(":")), "-C", dest)
    return time.perf_counter() - t


def pulls(host: str, tmp: str, rounds: int, sizes: dict[str, int]) -> None:
    one, two = f"{host}/{REPO}:one", f"{host}/{REPO}:two"
    times: dict[str, list[float]] = {"ours": [], "skopeo": [], "two": []}
    for r in range(rounds):
        sides = ("ours", "skopeo") if r % 2 == 0 else ("skopeo", "ours")
        for side in sides:
            d = tempfile.mkdtemp(prefix=f"{side}-", dir=tmp)
            try:
                # The last round's writes go to disk now, not during this side's time.
                os.sync()
                if side == "ours":
                    first, second = asyncio.run(ours(host, d, one, two))
                    times["ours"].append(first)
                    times["two"].append(second)
                else:
                    times["skopeo"].append(skopeo_tar(host, "one", d))
            finally:
                shutil.rmtree(d, ignore_errors=True)
        print(f"  round {r + 1} ({sides[0]} first): ours {times['ours'][-1]:.2f} s, "
              f"skopeo + tar {times['skopeo'][-1]:.2f} s, second image {times['two'][-1]:.2f} s")
    o, s, t = (statistics.median(times[k]) for k in ("ours", "skopeo", "two"))
    mib = sizes["one"] / (1 << 20)
    print(f"(1) pull and unpack of {mib:.0f} MiB (compressed), {rounds} rounds: "
          f"ours {span(times['ours'])} s ({mib / o:.0f} MiB/s), skopeo copy + tar {span(times['skopeo'])} s; "
          f"ratio of medians {o / s:.2f}x (target <= 1.2x: {'met' if o / s <= 1.2 else 'MISSED'})")
    shared = sizes["one"] / sizes["two"] * 100
    # Each round's second pull against its own first: both ran under the same load.
    ratios = [b / a * 100 for a, b in zip(times["ours"], times["two"])]
    r = statistics.median(ratios)
    print(f"(2) second image ({sizes['two'] / (1 << 20):.0f} MiB, {shared:.0f} % of it shared with the first; "
          f"its own layer is {(sizes['two'] - sizes['one']) / sizes['one'] * 100:.0f} % of the first's bytes): "
          f"{span(times['two'])} s; per round {span(ratios, '{:.1f}')} % of that round's first pull "
          f"(target <= 15 %: {'met' if r <= 15 else 'MISSED'}); medians' ratio {t / o * 100:.1f} %")


# -- (3), (4): pods --------------------------------------------------------------------

class Node:
    def __init__(self, tmp: str, cidr: str) -> None:
        from kubelet.runtime.linux.runtime import LinuxRuntime
        tag = uuid.uuid4().hex[:6]
        self.root = os.path.join(tmp, "node")
        self.bridge, self.cgroup = f"mk8sb{tag}", f"minik8s-bench-{tag}"
        self.rt = LinuxRuntime(self.root, pod_cidr=cidr, bridge=self.bridge, cgroup_parent=self.cgroup)

    def start(self, images, image: str) -> tuple[str, float, float]:
        """One pod with one `sleep` container; (its uid, seconds until it runs, seconds
        of that the sandbox took)."""
        # One runtime for both modes, its image store swapped between batches: the same
        # bridge, cgroups, IPAM and fork server, so the image store is the only difference.
        self.rt.images = images
        uid = str(uuid.uuid4())
        t = time.perf_counter()
        self.rt.run_pod_sandbox(PodSandboxConfig(uid=uid, name=f"p-{uid[:8]}"))
        sandbox = time.perf_counter() - t
        # An absolute path: both roots have /bin/sleep, and no PATH search is timed (which,
        # in the runtime of 2026-12-05, fails in a root without Python: see RESULTS.md).
        st = self.rt.start_container(uid, ContainerConfig(name="c", image=image, command=["/bin/sleep", "3600"]))
        deadline = time.monotonic() + 60
        while not st.running:
            if st.state == "exited" or time.monotonic() > deadline:
                raise RuntimeError(f"container of pod {uid} did not run: {st}")
            time.sleep(0.002)
            st = self.rt.container_status(st.id) or st
        return uid, time.perf_counter() - t, sandbox

    def remove(self, uids: list[str]) -> None:
        for uid in uids:
            self.rt.remove_pod(uid)

    def cleanup(self) -> None:
        from kubelet.runtime.linux.cgroups import Cgroup
        rt = self.rt
        try:
            for uid in os.listdir(rt.pods_dir):
                rt.remove_pod(uid)
            rt.cleanup_orphans(keep=[])
        finally:
            rt.network.delete_bridge()
            Cgroup(rt.cgroups.dirs, v2=rt.cgroups.v2).remove()
            rt.close()


def pod_starts(node: Node, modes: dict, pods: int, batch: int) -> None:
    lat: dict[str, list[float]] = {m: [] for m in modes}
    sandbox: dict[str, list[float]] = {m: [] for m in modes}
    for b in range(-(-pods // batch)):
        order = list(modes) if b % 2 == 0 else list(reversed(modes))
        for mode in order:
            images, image = modes[mode]
            uids = []
            try:
                for _ in range(min(batch, pods - b * batch)):
                    uid, dt, sb = node.start(images, image)
                    uids.append(uid)
                    lat[mode].append(dt)
                    sandbox[mode].append(sb)
            finally:
                node.remove(uids)
    mine, base = list(lat)
    print(f"(3) pod start (run_pod_sandbox + start_container until running), {pods} pods per mode, "
          f"batches of {batch} alternating, one at a time:")
    for m, v in lat.items():
        ctr = [total - sb for total, sb in zip(v, sandbox[m])]
        print(f"  {m}: p50 {statistics.median(v) * 1000:.1f} ms, p99 {pct(v, 0.99) * 1000:.1f} ms, "
              f"max {max(v) * 1000:.1f} ms; p50 of its parts: sandbox {statistics.median(sandbox[m]) * 1000:.1f} ms, "
              f"container {statistics.median(ctr) * 1000:.1f} ms")
        slowest = sorted(zip(v, sandbox[m]), reverse=True)[:3]
        print("    slowest (sandbox + container): " + ", ".join(
            f"{sb * 1000:.1f} + {(total - sb) * 1000:.1f} ms" for total, sb in slowest))
    r50 = statistics.median(lat[mine]) / statistics.median(lat[base])
    r99 = pct(lat[mine], 0.99) / pct(lat[base], 0.99)
    # Within 10 %: no more than 10 % slower than the host-root mode (faster is fine).
    ok = r50 <= 1.1 and r99 <= 1.1
    print(f"  ratio {mine} / {base}: p50 {r50:.2f}, p99 {r99:.2f} (target <= 1.10: {'met' if ok else 'MISSED'})")


def du(*paths: str) -> int:
    """Bytes of disk the trees use, staying on their filesystem (a pod's /dev/shm and
    volumes are tmpfs mounts under the runtime's root)."""
    out = run("du", "-sxcB1", *paths)
    return int(out.strip().splitlines()[-1].split()[0])


def inodes(*paths: str) -> tuple[int, int]:
    """(directories, files holding data blocks) in the trees, on their filesystem."""
    dirs = files = 0
    for top in paths:
        dev = os.lstat(top).st_dev
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == dev]
            dirs += 1
            for f in filenames:
                with contextlib.suppress(FileNotFoundError):
                    files += os.lstat(os.path.join(dirpath, f)).st_blocks > 0
    return dirs, files


def used(path: str) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def disk_per_pod(node: Node, store_dir: str, modes: dict, n: int) -> None:
    print(f"(4) disk added per running pod that writes nothing ({n} pods per mode; "
          "du -x of the store and the runtime root, and the filesystem's used blocks, which "
          "other work on the machine moves too):")
    for mode, (images, image) in modes.items():
        uids = []
        try:
            os.sync()
            d0, u0, i0 = du(store_dir, node.root), used(node.root), inodes(store_dir, node.root)
            for _ in range(n):
                uids.append(node.start(images, image)[0])
            os.sync()
            d1, u1, i1 = du(store_dir, node.root), used(node.root), inodes(store_dir, node.root)
        finally:
            node.remove(uids)
        per = (d1 - d0) / n / 1024
        print(f"  {mode}: du {per:.1f} KiB/pod ({(i1[0] - i0[0]) / n:.1f} directories and "
              f"{(i1[1] - i0[1]) / n:.1f} files with data), statvfs {(u1 - u0) / n / 1024:.1f} KiB/pod "
              f"(target <= 100 KiB: {'met' if per <= 100 else 'MISSED'})")


# -- main ------------------------------------------------------------------------------

def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mib", type=int, default=100, help="compressed size of the first image")
    p.add_argument("--layers", type=int, default=4, help="data layers on top of busybox")
    p.add_argument("--pods", type=int, default=100)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--disk-pods", type=int, default=20)
    p.add_argument("--skip-pulls", action="store_true")
    p.add_argument("--skip-pods", action="store_true")
    p.add_argument("--control", action="store_true",
                   help="(3) compares the host-root mode with itself: the ratios' noise on this machine")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.images runs real pods and applies layers with their owners: run it as root")
    # SIGTERM unwinds like Ctrl-C, so the clean-up below runs.
    signal.signal(signal.SIGTERM, _interrupted)

    tmp = tempfile.mkdtemp(prefix="minik8s-bench-images-")
    registry: Registry | None = None
    node: Node | None = None
    svc: ImageService | None = None
    try:
        load = os.getloadavg()
        now = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        print(f"# minik8s image benchmark, {now} UTC, {os.cpu_count()} cores, load average at start {load[0]:.1f}")
        t = time.perf_counter()
        layout, sizes = build(os.path.join(tmp, "build"), layers=args.layers, mib=args.mib)
        registry = Registry()  # assigned before it starts: a start cut short is stopped too
        registry.start()
        for tag in ("one", "two"):
            registry.push(layout, tag, REPO, tag)
        shutil.rmtree(os.path.join(tmp, "build"))
        print(f"  images built and pushed to {registry.host} (docker-registry pid {registry.proc.pid}) "
              f"in {time.perf_counter() - t:.1f} s: "
              f"one {sizes['one'] / (1 << 20):.1f} MiB in {args.layers + 1} layers, "
              f"two {sizes['two'] / (1 << 20):.1f} MiB in {args.layers + 2}")
        if not args.skip_pulls:
            pulls(registry.host, tmp, args.rounds, sizes)
        if not args.skip_pods:
            store_dir = os.path.join(tmp, "store")
            asyncio.run(ours(registry.host, store_dir, f"{registry.host}/{REPO}:one"))
            svc = ImageService(ContentStore(store_dir))
            from tests.test_kubelet_runtime import free_cidr
            node = Node(tmp, free_cidr())
            modes = {"image": (svc, f"{registry.host}/{REPO}:one"),
                     "host-root": (HostRootImageStore(), "minik8s.local/host-root")}
            if args.control:
                pod_starts(node, {"host-root A": modes["host-root"], "host-root B": modes["host-root"]},
                           args.pods, args.batch)
            else:
                pod_starts(node, modes, args.pods, args.batch)
            disk_per_pod(node, store_dir, modes, args.disk_pods)
        print(f"  load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut the clean-up short
        if node is not None:
            try:
                node.cleanup()
            except Exception as exc:  # noqa: BLE001 - the rest is still removed
                print(f"clean-up of the runtime: {exc}", file=sys.stderr)
        if svc is not None:
            with contextlib.suppress(Exception):
                asyncio.run(svc.aclose())
        if registry is not None:
            registry.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
