"""Containers run from pulled images, as containerd with runc runs them: a real
LinuxRuntime whose ImageStore is an ImageService over a ContentStore in tmp, with the
images pulled from a real registry (tests/images_fixtures.py).

What is checked: the image's layers are the overlay's lower dirs as the store has them
(never copied, never written to); whiteouts hide files; Entrypoint, Cmd, Env, WorkingDir
and User apply, with Kubernetes' command/args rules and runAsUser/runAsGroup; a user name
is looked up in the image's own /etc/passwd and /etc/group, and an unknown one is a
CreateContainerError worded as runc words it; exec runs as the container's user; a lease
keeps the image in use for as long as the container exists.

Each test gets its own node (state dir, bridge, cgroup parent, pod CIDR), removed
afterwards; the images are pulled once per module into one store.
"""
import asyncio
import dataclasses
import hashlib
import os
import shutil
import uuid

import pytest

from kubelet.images import Image, ImageStore
from kubelet.images.registry import RegistryHostConfig
from kubelet.images.service import ImageService
from kubelet.images.store import ContentStore
from kubelet.runtime import ContainerConfig, CreateContainerError, PodSandboxConfig, logs
from kubelet.runtime.linux import users
from kubelet.runtime.linux.cgroups import Cgroup
from kubelet.runtime.linux.runtime import LinuxRuntime
from kubelet.status import ContainerView, container_status
from tests.images_fixtures import BUSYBOX, oci_images, plain_registry  # noqa: F401
from tests.procs import wait_for
from tests.test_kubelet_e2e import (KubeletNode, api, api_exec, container, create,  # noqa: F401
                                    cstatus, http, make_pod, ns, pod_log, running, wait_pod)
from tests.test_kubelet_runtime import free_cidr

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="runs real pods: needs root for namespaces, cgroups and overlayfs")

SLEEP = ["sleep", "1000"]


@pytest.fixture(scope="module")
def service(tmp_path_factory, plain_registry):  # noqa: F811
    svc = ImageService(ContentStore(str(tmp_path_factory.mktemp("images") / "store")),
                       registries={plain_registry.host: RegistryHostConfig(insecure=True)})

    async def pull_all():
        try:
            for tag in ("base", "app-a", "whiteout"):
                await svc.pull(ref(plain_registry, tag))
        finally:
            await svc.aclose()
    asyncio.run(pull_all())
    return svc


def ref(registry, tag: str) -> str:
    return f"{registry.host}/lab/{tag}:v1"


@pytest.fixture
def node_args(tmp_path):
    tag = uuid.uuid4().hex[:8]
    return dict(root_dir=str(tmp_path / "node"), pod_cidr=free_cidr(), bridge=f"mk8si{tag}",
                cgroup_parent=f"minik8s-test-{tag}")


def make_node(node_args, images: ImageStore) -> LinuxRuntime:
    return LinuxRuntime(**node_args, images=images)


@pytest.fixture
def nodes(node_args):
    """make(images) -> a LinuxRuntime over this test's node; all of it removed after."""
    made: list[LinuxRuntime] = []

    def make(images: ImageStore) -> LinuxRuntime:
        made.append(make_node(node_args, images))
        return made[-1]
    yield make
    for rt in made[:1]:
        for uid in os.listdir(rt.pods_dir):
            rt.remove_pod(uid)
        rt.cleanup_orphans(keep=[])
        rt.network.delete_bridge()
        Cgroup(rt.cgroups.dirs, v2=rt.cgroups.v2).remove()
    for rt in made:
        rt.close()


@pytest.fixture
def node(nodes, service):
    return nodes(service)


class Derived(ImageStore):
    """The service's images with an extra top layer and config changes, as an image built
    FROM them would be (a store of its own for the runtime's seam, not a stand-in)."""

    def __init__(self, base: ImageService, top_layer: str | None = None, **config):
        self.base, self.top, self.config = base, top_layer, config

    def resolve(self, image: str) -> Image:
        img = self.base.resolve(image)
        return dataclasses.replace(img, layers=([self.top] if self.top else []) + img.layers, **self.config)

    def lease(self, holder: str, image: str) -> None:
        self.base.lease(holder, image)

    def release(self, holder: str) -> None:
        self.base.release(holder)


def new_pod(rt, name):
    uid = str(uuid.uuid4())
    rt.run_pod_sandbox(PodSandboxConfig(uid=uid, name=name))
    return uid


def run(rt, uid, name, image, **kw):
    return rt.start_container(uid, ContainerConfig(name=name, image=image, **kw))


def output(rt, c) -> str:
    """The log of a container that exits by itself, once it has exited successfully."""
    st = wait_for(lambda: (s := rt.container_status(c.id)).state == "exited" and s,
                  what=f"container {c.name} to exit")
    text = b"".join(logs.read_log(c.log_path)).decode()
    assert (st.reason, st.exit_code) == ("Completed", 0), (st, text)
    return text


def sh(rt, cid, script) -> str:
    r = rt.exec_sync(cid, ["sh", "-c", script], timeout=30)
    assert r.exit_code == 0, (script, r)
    return r.stdout.decode()


def proc_ids(pid: int) -> dict[str, list[int]]:
    """Uid, Gid and Groups of a process, as the node's /proc shows them."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                out[key] = [int(v) for v in value.split()]
    return out


def tree(path: str) -> dict[str, tuple]:
    """Every entry under path: type, mode, owner, size, mtime and content hash."""
    out = {}
    for d, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            digest = ""
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                             st.st_mtime_ns, digest)
    return out


# -- the image config -----------------------------------------------------------------

def test_the_default_process_runs_as_the_image_user_and_exec_does_too(node, plain_registry):
    uid = new_pod(node, "app")
    image = ref(plain_registry, "app-a")
    assert output(node, run(node, uid, "default", image)) == "this is app a\n"

    # args alone replace the image's Cmd and keep its Entrypoint (/bin/sh -c).
    # /dev/stdout can be reopened by the user (images link log files there), as with runc.
    c = run(node, uid, "main", image, args=["cat /app/a > /dev/stdout; exec sleep 1000"])
    wait_for(lambda: b"".join(logs.read_log(c.log_path)), what="the main container's output")
    assert b"".join(logs.read_log(c.log_path)) == b"this is app a\n"
    assert proc_ids(c.pid)["Uid"] == [1000] * 4 and proc_ids(c.pid)["Gid"] == [1000] * 4
    assert proc_ids(c.pid)["Groups"] == []  # the image has no /etc/group
    assert sh(node, c.id, "id").startswith("uid=1000(app) gid=1000")
    env = dict(line.split("=", 1) for line in sh(node, c.id, "env").splitlines())
    assert (env["HOME"], env["APP"], env["PATH"]) == ("/home/app", "a", "/bin")
    assert sh(node, c.id, "pwd") == "/app\n"
    assert sh(node, c.id, "echo out > /dev/stdout") == "out\n"
    assert node.exec_sync(c.id, ["sh", "-c", "echo x > /etc/owned-by-root"]).exit_code != 0


def test_whiteouts_and_opaque_directories_hide_lower_files(node, plain_registry):
    uid = new_pod(node, "wh")
    c = run(node, uid, "look", ref(plain_registry, "whiteout"),
            command=["sh", "-c", "ls -A /data; test -e /etc/motd && echo motd || echo no-motd; id -u"])
    assert output(node, c) == "z\nno-motd\n0\n"


@pytest.mark.parametrize("kw, want", [
    ({}, "this is app a"),  # Entrypoint + Cmd
    ({"command": ["echo", "command-only"]}, "command-only"),  # the image's Cmd is dropped too
    ({"args": ["echo args-only from $PWD"]}, "args-only from /app"),  # Entrypoint + args
    ({"command": ["sh", "-c"], "args": ["echo both $APP"]}, "both a"),
    ({"command": ["sh", "-c", "echo $APP $PWD"], "env": {"APP": "pod"}, "working_dir": "/bin"}, "pod /bin"),
])
def test_command_args_env_and_working_dir_combine_with_the_image_config_as_kubernetes_does(
        node, plain_registry, kw, want):
    uid = new_pod(node, "combine")
    assert output(node, run(node, uid, "c", ref(plain_registry, "app-a"), **kw)) == want + "\n"


@pytest.mark.parametrize("kw, want", [
    ({"run_as_user": 1234}, "1234 0 /"),  # not in passwd: gid 0, home /
    ({"run_as_user": 0}, "0 0 /root"),
    ({"run_as_user": 1000, "run_as_group": 2000}, "1000 2000 /home/app"),
    ({"run_as_group": 3000}, "1000 3000 /home/app"),  # keeps the image's user
])
def test_run_as_user_and_group_override_the_image_user(node, plain_registry, kw, want):
    uid = new_pod(node, "runas")
    c = run(node, uid, "c", ref(plain_registry, "app-a"), args=["echo $(id -u) $(id -g) $HOME"], **kw)
    assert output(node, c) == want + "\n"


def test_home_from_the_pod_or_image_env_wins_over_passwd(node, plain_registry):
    uid = new_pod(node, "home")
    c = run(node, uid, "c", ref(plain_registry, "app-a"), args=["echo $HOME"], env={"HOME": "/srv"})
    assert output(node, c) == "/srv\n"


def test_users_and_groups_come_from_the_images_own_files(nodes, service, plain_registry, tmp_path):
    top = tmp_path / "layer"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "group").write_text("root:x:0:\nstaff:x:50:app\nwheel:x:10:root,app\ndev:x:77:\n")
    store = Derived(service, str(top))
    rt = nodes(store)
    uid = new_pod(rt, "groups")
    image = ref(plain_registry, "app-a")
    for i, (user, want) in enumerate((("app", (1000, 1000, {50, 10})), ("app:dev", (1000, 77, set())),
                                      ("1000:77", (1000, 77, set())), ("1000", (1000, 1000, {50, 10})),
                                      ("", (0, 0, {10})), ("4321:dev", (4321, 77, set())))):
        store.config = {"user": user}
        c = run(rt, uid, f"c{i}", image, args=["id -u; id -g; grep Groups: /proc/self/status"])
        u, g, groups = output(rt, c).splitlines()
        assert (int(u), int(g), {int(x) for x in groups.split()[1:]}) == want, user


@pytest.mark.parametrize("user, message", [
    ("ghost", "unable to find user ghost: no matching entries in passwd file"),
    ("app:nogroup", "unable to find group nogroup: no matching entries in group file"),
])
def test_an_unknown_user_or_group_is_a_create_error_that_leaves_nothing(
        nodes, service, plain_registry, user, message):
    rt = nodes(Derived(service, user=user))
    uid = new_pod(rt, "ghost")
    with pytest.raises(CreateContainerError) as e:
        run(rt, uid, "c", ref(plain_registry, "app-a"))
    assert e.value.reason == "CreateContainerError" and e.value.message == message
    assert rt.list_containers(uid) == []
    assert os.listdir(os.path.join(rt.pods_dir, uid, "containers")) == []
    assert os.listdir(os.path.join(service.store.root, "leases")) == []


def test_an_image_without_its_working_dir_gets_it_made_even_with_a_read_only_root(
        nodes, service, plain_registry):
    rt = nodes(Derived(service, working_dir="/srv/work"))
    uid = new_pod(rt, "ro")
    c = run(rt, uid, "c", ref(plain_registry, "app-a"), read_only_root=True, run_as_user=0,
            args=["pwd; echo t > /tmp/t && cat /tmp/t; echo x > /app/x || echo not-written"])
    text = output(rt, c)  # (stderr's line may come before or after stdout's)
    assert text.startswith("/srv/work\nt\n") and "not-written\n" in text, text
    assert "/app/x: Read-only file system" in text


class DirImage(ImageStore):
    """Every name is one directory as the image's only layer, with this config."""

    def __init__(self, layer: str, **config):
        self.image = Image(layers=[layer], **config)

    def resolve(self, image: str) -> Image:
        return self.image


def test_an_image_with_nothing_but_a_binary_runs_and_its_layer_stays_untouched(nodes, tmp_path):
    layer = tmp_path / "layer"
    (layer / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, layer / "bin" / "busybox")
    os.symlink("busybox", layer / "bin" / "sh")
    before = tree(str(layer))
    rt = nodes(DirImage(str(layer), entrypoint=["/bin/busybox"], env={"PATH": "/bin"},
                        user="1000:1000", working_dir="/work"))
    uid = new_pod(rt, "bare")
    c = run(rt, uid, "c", "bare", args=["sh", "-c", (
        "cat /etc/hostname; busybox id -u; echo $HOME $PWD; busybox ls -d /dev/null /proc/self /sys /tmp; "
        "echo t > /tmp/t && busybox cat /tmp/t")])
    assert output(rt, c) == "bare\n1000\n/ /work\n/dev/null\n/proc/self\n/sys\n/tmp\nt\n"
    assert tree(str(layer)) == before  # mount points and files went to the container's upper dir
    rt.images = DirImage(str(layer), cmd=["/bin/sh"], user="app")  # no /etc/passwd to name it
    with pytest.raises(CreateContainerError, match="unable to find user app: no matching entries in passwd file"):
        run(rt, uid, "named", "bare")


def test_an_image_with_more_layers_than_mount_options_can_name_in_full_runs(nodes, tmp_path):
    common = tmp_path / ("snapshots-with-a-long-name-" + "x" * 100)
    layers = [common / f"{i:02d}" for i in range(40)]  # 40 x ~250 chars: over a page
    for i, d in enumerate(layers):
        d.mkdir(parents=True)
        (d / f"layer-{i}").write_text(f"{i}\n")
    (layers[-1] / "bin").mkdir()
    shutil.copy2(BUSYBOX, layers[-1] / "bin" / "busybox")
    os.symlink("busybox", layers[-1] / "bin" / "sh")
    assert len(":".join(map(str, layers))) > 4096
    rt = nodes(DirImage(str(layers[0]), env={"PATH": "/bin"}))
    rt.images.image = dataclasses.replace(rt.images.image, layers=[str(d) for d in layers])
    uid = new_pod(rt, "deep")
    c = run(rt, uid, "c", "deep", command=["sh", "-c", "busybox cat /layer-0 /layer-39; busybox ls /"])
    first, last, *names = output(rt, c).split()
    assert (first, last) == ("0", "39")
    assert set(names) == {f"layer-{i}" for i in range(40)} | {"bin", "dev", "etc", "proc", "sys", "tmp"}


# -- layers: shared, never copied, never written ----------------------------------------

def test_the_overlay_lower_dirs_are_the_stores_snapshots_and_stay_untouched(node, service, plain_registry):
    image = ref(plain_registry, "app-a")
    layers = service.resolve(image).layers
    assert all(p.startswith(os.path.join(service.store.root, "snapshots")) for p in layers)
    before = {p: tree(p) for p in layers}
    uid = new_pod(node, "writer")
    c = run(node, uid, "w", image, run_as_user=0, command=["sh", "-c", (
        "echo new > /app/new && echo more >> /app/a && rm /bin/true && mkdir -p /etc/new "
        "&& echo owned > /etc/passwd && cat /app/a && exec sleep 1000")])
    wait_for(lambda: b"more" in b"".join(logs.read_log(c.log_path)), what="the writes")
    with open(f"/proc/{c.pid}/mountinfo") as f:
        root = next(line for line in f if line.split()[4] == "/")
    fstype, _source, options = root.split(" - ")[1].split()
    lower = dict(o.split("=", 1) for o in options.split(",") if "=" in o)["lowerdir"]
    assert fstype == "overlay" and lower.split(":") == layers
    assert sh(node, c.id, "cat /app/new; ls /bin/true 2>&1 || true").startswith("new\n")
    node.stop_container(c.id, grace_period=0)
    assert {p: tree(p) for p in layers} == before
    # A second container of the image sees the image, not the first one's writes.
    again = run(node, uid, "r", image, command=["sh", "-c", "cat /app/a; ls /app"])
    assert output(node, again) == "this is app a\na\n"


# -- leases and the image ID --------------------------------------------------------------

def test_a_container_leases_its_image_until_it_is_removed(node, service, plain_registry):
    image = ref(plain_registry, "app-a")
    name = service.get(image).name
    uid = new_pod(node, "leased")
    c = run(node, uid, "c", image, command=["true"])
    output(node, c)
    assert service.store.leased() == {name}  # exited, but still there
    node.remove_container(c.id)
    assert service.store.leased() == set()
    c2 = run(node, uid, "c2", image, command=SLEEP)
    assert service.store.leased() == {name}
    node.remove_pod(uid)
    assert service.store.leased() == set() and node.container_status(c2.id) is None
    assert os.listdir(os.path.join(service.store.root, "leases")) == []


def test_the_image_id_is_recorded_survives_a_restart_and_is_the_status_image_id(
        nodes, service, plain_registry):
    image = ref(plain_registry, "app-a")
    want = service.image_id(service.get(image))
    assert want.endswith("@" + service.get(image).manifest_digest)
    rt = nodes(service)
    uid = new_pod(rt, "id")
    c = run(rt, uid, "c", image, command=SLEEP)
    assert c.image_id == want
    again = nodes(service)  # a new runtime over the same state adopts the container
    st = again.container_status(c.id)
    assert st.running and st.image_id == want
    assert container_status(ContainerView("c", image, runs=[st]))["imageID"] == want
    assert container_status(ContainerView("c", image))["imageID"] == ""


# -- through the kubelet ------------------------------------------------------------------

def test_the_kubelet_passes_run_as_user_and_group_container_level_over_pod_level(
        api, http, ns, tmp_path):  # noqa: F811
    kubelet = KubeletNode(api, tmp_path, "--host-root-images")
    try:
        kubelet.start()
        script = ["sh", "-c", "echo $(id -u) $(id -g) $HOME; exec sleep infinity"]
        create(http, ns, make_pod("runas", kubelet, container("pod-level", script),
                                  container("own", script, securityContext={"runAsUser": 4321}),
                                  securityContext={"runAsUser": 1234, "runAsGroup": 5678}))
        pod = wait_pod(http, ns, "runas", lambda p: running("pod-level")(p) and running("own")(p),
                       "both running")
        assert cstatus(pod, "own")["imageID"] == ""  # the host's root is no image
        wait_for(lambda: all(pod_log(http, ns, "runas", container=c) for c in ("pod-level", "own")),
                 what="both logs")
        assert pod_log(http, ns, "runas", container="pod-level") == "1234 5678 /\n"
        assert pod_log(http, ns, "runas", container="own") == "4321 5678 /\n"
        assert api_exec(api, ns, "runas", ["id", "-u"], container="own")[:2] == (0, b"4321\n")
    finally:
        kubelet.cleanup()


# -- the lookup itself, against files like an image's ------------------------------------

def test_exec_user_follows_runcs_rules(tmp_path):
    passwd, group = tmp_path / "passwd", tmp_path / "group"
    passwd.write_text("# comment\nroot:x:0:0:root:/root:/bin/sh\nbad:x:nope:1::/x:\n"
                      "app:x:1000:1000::/home/app:/bin/sh\n42:x:7:7::/seven:\n")
    group.write_text("root:x:0:\nstaff:x:50:app,other\n1000:x:60:\nwheel:x:10:root\n")

    def who(spec, **kw):
        u = users.exec_user(spec, passwd_path=str(passwd), group_path=str(group), **kw)
        return u.uid, u.gid, u.groups, u.home
    assert who("") == (0, 0, [10], "/root")  # members only: root is not listed in group root
    assert who("app") == (1000, 1000, [50], "/home/app")
    assert who("42") == (42, 0, [], "/")  # numeric: a uid, never the name "42"
    assert who("7") == (7, 7, [], "/seven")
    assert who("app:1000") == (1000, 1000, [], "/home/app")  # numeric group: a gid
    assert who("app:staff") == (1000, 50, [], "/home/app")
    assert who("0:wheel") == (0, 10, [], "/root")
    with pytest.raises(users.UserError, match="unable to find user bad: no matching entries"):
        who("bad")
    with pytest.raises(users.UserError, match="out of range"):
        who("4294967296")
    assert users.exec_user("99:98", passwd_path=str(tmp_path / "none"),
                           group_path=str(tmp_path / "none")).to_json() == \
        {"uid": 99, "gid": 98, "groups": [], "home": "/"}
    with pytest.raises(users.UserError, match="unable to find user app"):
        users.exec_user("app", passwd_path=str(tmp_path / "none"))
    os.mkfifo(tmp_path / "fifo")  # an image's trap: reading it would block the start
    with pytest.raises(users.UserError, match="not a regular file"):
        users.exec_user("app", passwd_path=str(tmp_path / "fifo"))


def test_effective_spec_is_kubernetes_override_of_the_image_user():
    assert users.effective_spec("app:staff", None, None) == "app:staff"
    assert users.effective_spec("app:staff", 5, None) == "5"
    assert users.effective_spec("app:staff", None, 7) == "app:7"
    assert users.effective_spec("", None, 7) == ":7"
    assert users.effective_spec("app", 5, 7) == "5:7"
