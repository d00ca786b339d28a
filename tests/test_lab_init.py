"""`minik8s init`, `token` and `reset` for real, on one lab host (tests/labhost.py: a
network and mount namespace of its own, so kubeadm's ports are free) with its files under
a temporary MINIK8S_ROOT. One init for the module; the tests run in file order: init,
a second init, bad input, tokens, reset. The init reads a kubeadm ClusterConfiguration
(`--config`) whose controllerManager.extraArgs name the controller manager's default
node-monitor grace period, so its flag reaches the unit and kubeadm-config without
changing the cluster's behaviour."""
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from cluster import host, units
from cluster.layout import Layout
from tests.labhost import LabHost, minik8s
from tests.procs import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, a kubelet)")

IP = "10.250.0.2"
NODE = f"lab-init-{os.getpid()}"
JOIN = re.compile(r"minik8s join (\S+) --token ([a-z0-9]{6}\.[a-z0-9]{16}) \\\n\t"
                  r"--discovery-token-ca-cert-hash (sha256:[0-9a-f]{64})")


CLUSTER_CONFIGURATION = """\
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
controllerManager:
  extraArgs:
  - name: node-monitor-grace-period
    value: 40s
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("host"))
    h = LabHost(f"{IP}/24", root=root).start()
    h.layout = Layout(root)
    config = tmp_path_factory.mktemp("config") / "cluster.yaml"
    config.write_text(CLUSTER_CONFIGURATION)
    try:
        h.init = h.run(minik8s("init", "--advertise-address", IP, "--node-name", NODE, "--config", str(config)),
                       timeout=400)
        yield h
    finally:
        h.run(minik8s("reset", "--force"), timeout=120)
        h.stop()


def kubectl(h, *args, **kw):
    return h.run(["kubectl", "--kubeconfig", h.layout.admin_conf, *args], **kw)


def get_json(h, *args):
    r = kubectl(h, "get", *args, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def snapshot(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for f in dirs + files:
            p = os.path.join(d, f)
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def test_init_brings_up_a_ready_tainted_control_plane(lab):
    r = lab.init
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "[preflight] Running pre-flight checks" in out
    assert "Your Kubernetes control-plane has initialized successfully! (in " in out
    m = JOIN.search(out.split("Then you can join any number of worker nodes")[1])
    assert m and m.group(1) == f"{IP}:6443"
    # the CA hash as kubeadm's documentation computes it, with openssl
    ca = os.path.join(lab.layout.pki, "ca.crt")
    der = subprocess.run(f"openssl x509 -pubkey -in {ca} | openssl pkey -pubin -outform der | sha256sum",
                         shell=True, capture_output=True, text=True, check=True).stdout.split()[0]
    assert m.group(3) == f"sha256:{der}"
    assert "--control-plane" in out.split("Then you can join")[0]

    node = get_json(lab, "node", NODE)
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == ""
    assert node["spec"].get("podCIDR", "").startswith("10.244.")
    r = kubectl(lab, "get", "nodes")
    assert r.returncode == 0 and NODE in r.stdout and " Ready " in r.stdout

    # every component is a unit of the host supervisor, which runs detached
    names = set(units.installed(lab.layout))
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
            "kube-proxy"} <= names
    st = units.status(lab.layout)
    assert all(st["components"][n]["state"] == "running" for n in names)
    sup = units.supervisor_pid(lab.layout)
    assert sup and os.getsid(sup) == sup

    # kubeadm's cluster objects
    cfg = get_json(lab, "configmap", "-n", "kube-system", "kubeadm-config")
    assert f"controlPlaneEndpoint: {IP}:6443" in cfg["data"]["ClusterConfiguration"]
    assert "podSubnet: 10.244.0.0/16" in cfg["data"]["ClusterConfiguration"]
    # --config's controllerManager.extraArgs: stored for `join --control-plane`, and in the unit
    stored = yaml.safe_load(cfg["data"]["ClusterConfiguration"])
    assert stored["controllerManager"]["extraArgs"] == [{"name": "node-monitor-grace-period", "value": "40s"}]
    with open(lab.layout.unit_spec("kube-controller-manager")) as f:
        assert "--node-monitor-grace-period=40s" in json.load(f)["argv"]
    info = get_json(lab, "configmap", "-n", "kube-public", "cluster-info")
    assert f"server: https://{IP}:6443" in info["data"]["kubeconfig"]
    # ... signed for the init token by the controller manager's bootstrapsigner
    signed = wait_for(lambda: [k for k in get_json(lab, "configmap", "-n", "kube-public", "cluster-info")["data"]
                               if k.startswith("jws-kubeconfig-")], what="cluster-info signed")
    assert signed == [f"jws-kubeconfig-{m.group(2)[:6]}"]
    sc = get_json(lab, "storageclass", "local-path")  # the default class, as k3s's
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert sc["parameters"]["nodePath"] == os.path.join(lab.layout.var, "local-path")
    for crb in ("kubeadm:kubelet-bootstrap", "kubeadm:node-autoapprove-bootstrap",
                "kubeadm:node-autoapprove-certificate-rotation", "minik8s:node-proxier"):
        assert get_json(lab, "clusterrolebinding", crb)["subjects"]
    # anyone may read cluster-info, and the bootstrap token authenticates
    anon = lab.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}",
                    f"https://{IP}:6443/api/v1/namespaces/kube-public/configmaps/cluster-info"])
    assert anon.stdout == "200"
    token = m.group(2)
    secret = get_json(lab, "secret", "-n", "kube-system", f"bootstrap-token-{token[:6]}")
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    # kubeadm:get-nodes lets the token's group read Nodes (join checks a name is free)
    def get_node(bearer):
        return lab.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                        f"Authorization: Bearer {bearer}", f"https://{IP}:6443/api/v1/nodes/{NODE}"]).stdout
    assert get_node(token) == "200"
    assert get_node(token[:7] + "0" * 16) == "401"


def test_a_second_init_fails_in_one_line_and_changes_nothing(lab):
    # what init writes (the live cluster writes under /var/lib/minik8s all the time)
    before = snapshot(lab.layout.etc)
    sup = units.supervisor_pid(lab.layout)
    pids = {n: c["pid"] for n, c in units.status(lab.layout)["components"].items()}
    r = lab.run(minik8s("init", "--advertise-address", IP, "--node-name", NODE))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: this host is initialised already")
    assert "minik8s reset" in r.stderr
    assert snapshot(lab.layout.etc) == before and units.supervisor_pid(lab.layout) == sup
    assert {n: c["pid"] for n, c in units.status(lab.layout)["components"].items()} == pids


@pytest.mark.parametrize("args, says", [
    (["--advertise-address", "10.9.9.9"], "--advertise-address 10.9.9.9 is not an address of this host"),
    (["--advertise-address", "nope"], "is not an IP address"),
    (["--advertise-address", IP, "--pod-network-cidr", "10.250.0.0/16"], "--pod-network-cidr 10.250.0.0/16"),
    (["--advertise-address", IP, "--pod-network-cidr", "10.96.0.0/16"], "overlaps --service-cidr"),
    (["--advertise-address", IP, "--token", "bad"], "is not of the form"),
    # the first init's: its pod bridge's route, and its API server's port
    (["--advertise-address", IP], "a host route 10.244.0.0/24 (dev mk8s-"),
    (["--advertise-address", IP, "--pod-network-cidr", "10.200.0.0/16"], "port 6443 is in use"),
    (["etcd-less"], "etcd is not installed"),
])
def test_bad_input_is_one_line_and_writes_nothing(lab, tmp_path, args, says):
    env = {"MINIK8S_ROOT": str(tmp_path)}
    if "etcd-less" in args:
        args = ["--advertise-address", IP, "--pod-network-cidr", "10.200.0.0/16"]
        env["PATH"] = "/nonexistent"
    r = lab.run(minik8s("init", "--node-name", "other", *args), env=env)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and says in r.stderr, r.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("config, says", [
    ("kind: InitConfiguration\napiVersion: kubeadm.k8s.io/v1beta4\n", "reads only a ClusterConfiguration"),
    ("kind: ClusterConfiguration\napiVersion: kubeadm.k8s.io/v1\n", "apiVersion 'kubeadm.k8s.io/v1'"),
    ("kind: ClusterConfiguration\napiVersion: kubeadm.k8s.io/v1beta4\nnetworking: {podSubnet: 10.0.0.0/16}\n",
     "does not read networking"),
    ("kind: ClusterConfiguration\napiVersion: kubeadm.k8s.io/v1beta4\n"
     "controllerManager: {extraArgs: [{name: no-such-flag, value: x}]}\n", "the controller manager refuses it"),
    ("kind: ClusterConfiguration\napiVersion: kubeadm.k8s.io/v1beta3\n"
     "controllerManager: {extraArgs: {node-monitor-grace-period: soon}}\n", "the controller manager refuses it"),
    ("kind: ClusterConfiguration\napiVersion: kubeadm.k8s.io/v1beta4\ncontrollerManager: {extraArgs: 3}\n",
     "must be a list of {name, value}"),
    ("{", "is not YAML"),
    (None, "cannot read --config"),
])
def test_config_mistakes_are_one_line_and_write_nothing(lab, tmp_path, tmp_path_factory, config, says):
    path = tmp_path_factory.mktemp("bad") / "cluster.yaml"
    if config is not None:
        path.write_text(config)
    r = lab.run(minik8s("init", "--node-name", "other", "--advertise-address", IP, "--config", str(path)),
                env={"MINIK8S_ROOT": str(tmp_path)})
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and says in r.stderr, r.stderr
    assert os.listdir(tmp_path) == []


HEADER = re.compile(r"^TOKEN\s+TTL\s+EXPIRES\s+USAGES\s+DESCRIPTION\s+EXTRA GROUPS$")


def token(lab, *args, **kw):
    return lab.run(minik8s("token", *args), **kw)


def test_token_create_list_delete(lab):
    r = token(lab, "create")
    assert r.returncode == 0 and re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}\n", r.stdout), r.stderr
    made = r.stdout.strip()
    r = token(lab, "create", "abcdef.0123456789abcdef", "--ttl", "0", "--description", "lab workers")
    assert r.returncode == 0 and r.stdout == "abcdef.0123456789abcdef\n"
    r = token(lab, "create", "--print-join-command", "--ttl", "1h")
    m = re.fullmatch(rf"minik8s join {IP}:6443 --token ([a-z0-9]{{6}}\.[a-z0-9]{{16}}) "
                     r"--discovery-token-ca-cert-hash (sha256:[0-9a-f]{64})\n", r.stdout)
    assert m, r.stdout + r.stderr
    assert m.group(2) in lab.init.stdout                      # the same CA hash as init printed
    joined = m.group(1)

    r = token(lab, "list")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert HEADER.match(lines[0])
    rows = {line.split()[0]: line for line in lines[1:]}
    assert {made, joined, "abcdef.0123456789abcdef"} <= set(rows)
    assert re.match(rf"{re.escape(made)}\s+23h\s+\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+authentication,signing\s+"
                    r"<none>\s+system:bootstrappers:kubeadm:default-node-token$", rows[made])
    assert re.match(r"abcdef\.0123456789abcdef\s+<forever>\s+<never>\s+authentication,signing\s+lab workers\s+"
                    r"system:bootstrappers:kubeadm:default-node-token$", rows["abcdef.0123456789abcdef"])
    # the columns line up (kubeadm's tabwriter)
    col = lines[0].index("TTL")
    assert all(line[col - 1] == " " and line[col] != " " for line in lines[1:])

    # mistakes: one line, nothing made
    for args, says in ((["create", "UPPER.0123456789abcdef"], "is not of the form"),
                       (["create", "abcdef.0123456789abcdef"], 'id "abcdef" exists already'),
                       (["create", "--groups", "system:masters"], "is not a bootstrap group"),
                       (["create", "--usages", "signing,fly"], "unknown usage 'fly'"),
                       (["delete", "zzzzzz"], 'bootstrap token "zzzzzz" not found'),
                       (["delete", "no"], "is neither a token")):
        r = token(lab, *args)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and says in r.stderr, (args, r.stderr)
    assert len(token(lab, "list").stdout.splitlines()) == len(lines)

    r = token(lab, "delete", made, "abcdef")
    assert r.returncode == 0
    assert r.stdout == f'bootstrap token "{made[:6]}" deleted\nbootstrap token "abcdef" deleted\n'
    left = {line.split()[0] for line in token(lab, "list").stdout.splitlines()[1:]}
    assert made not in left and "abcdef.0123456789abcdef" not in left and joined in left



@pytest.mark.parametrize("args, says", [
    (["list"], "admin.conf does not exist; run this on a control-plane host"),
    (["create", "bad"], "is not of the form"),      # checked before any server is asked
    (["list", "--kubeconfig", "/etc/hostname"], "cannot use kubeconfig /etc/hostname"),
])
def test_token_mistakes_off_a_cluster_are_one_line(tmp_path, args, says):
    r = subprocess.run(minik8s("token", *args), capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MINIK8S_ROOT": str(tmp_path)})
    assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


def test_a_unit_that_keeps_exiting_fails_the_wait_with_its_log(tmp_path):
    from cluster import lab
    lay = Layout(str(tmp_path))
    crash = [sys.executable, "-c", "import sys; print('etcdmain: no space left', flush=True); sys.exit(3)"]
    units.install([units.Unit("etcd", crash)], lay)
    try:
        with pytest.raises(lab.LabError) as e:
            lab.wait_unit(lay, "etcd", lambda: False, "https://127.0.0.1:2379", timeout=60)
        msg = str(e.value)
        assert msg.startswith(f"etcd keeps exiting; see {lay.log('etcd')}, then `minik8s reset` to start over")
        assert "etcdmain: no space left" in msg
    finally:
        units.remove(None, lay)

PROBE = """
import asyncio, json, sys
from client import kubeconfig
from client.rest import Client
from kubelet.node import Node

async def main():
    async with Client(kubeconfig.load(sys.argv[1]).connection()) as c:
        node = Node(c, sys.argv[2], address="10.250.0.9", port=10250, capacity={"cpu": "1", "pods": "1"},
                    labels={"lab.example/probe": "yes"},
                    taints=[{"key": "lab.example/probe", "value": "x", "effect": "NoExecute"}])
        await node.register()
        got = await c.get("nodes", sys.argv[2])
        await c.delete("nodes", sys.argv[2])
        print(json.dumps(got))
asyncio.run(main())
"""


def test_a_kubelet_registers_its_node_with_its_taints_and_labels(lab):
    from kubelet import main as kubelet
    args = kubelet.parse(["--register-with-taints", "a.io/b=c:NoSchedule,d:NoExecute", "--node-labels", "x.io/y=z"])
    assert args.register_with_taints == [{"key": "a.io/b", "value": "c", "effect": "NoSchedule"},
                                         {"key": "d", "effect": "NoExecute"}]
    assert args.node_labels == {"x.io/y": "z"}
    for bad in (["--register-with-taints", "a:Sometimes"], ["--node-labels", "novalue"]):
        with pytest.raises(SystemExit):
            kubelet.parse(bad)
    # what `--register-with-taints` does: the Node is created with them
    r = lab.run([sys.executable, "-c", PROBE, lab.layout.admin_conf, "taint-probe"])
    assert r.returncode == 0, r.stderr
    node = json.loads(r.stdout)
    assert node["spec"]["taints"] == [{"key": "lab.example/probe", "value": "x", "effect": "NoExecute"}]
    assert node["metadata"]["labels"]["lab.example/probe"] == "yes"


def test_reset_removes_everything_and_a_second_reset_does_nothing(lab):
    lay = lab.layout
    st = units.status(lay)
    procs = {n: (c["pid"], c["start"]) for n, c in st["components"].items()}
    sup = units.supervisor_pid(lay)
    sup_start = host.start_time(sup)
    # what the pod network would have made: a vxlan-like device and one of its routes
    assert lab.run(["ip", "link", "add", "minik8s.1", "type", "bridge"]).returncode == 0
    assert lab.run(["ip", "link", "set", "minik8s.1", "up"]).returncode == 0
    assert lab.run(["ip", "route", "add", "10.244.9.0/24", "dev", "eth0", "proto", "77"]).returncode == 0
    assert lab.run(["nft", "list", "table", "ip", "minik8s-proxy"]).returncode == 0

    # asked, and not answered yes: nothing changes
    before = units.installed(lay)
    r = lab.run(minik8s("reset"), input="n\n")
    assert r.returncode == 1 and "[reset] Are you sure you want to proceed? [y/N]" in r.stdout
    assert units.installed(lay) == before and units.supervisor_pid(lay) == sup

    r = lab.run(minik8s("reset", "--force"), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not host.alive(sup, sup_start)
    for name, (pid, start) in procs.items():
        assert not host.alive(pid, start), f"{name} ({pid}) still runs"
    assert lab.pids() == []                              # nothing left in the host's namespace
    for d in lay.owned_dirs():
        assert not os.path.exists(d)
    links = lab.run(["ip", "-o", "link"]).stdout
    assert "minik8s.1" not in links and "mk8s-" not in links
    assert "10.244." not in lab.run(["ip", "route"]).stdout
    assert lab.run(["nft", "list", "table", "ip", "minik8s-proxy"]).returncode != 0

    r = lab.run(minik8s("reset"))
    assert r.returncode == 0 and "Nothing to do" in r.stdout



def test_reset_on_a_host_whose_directories_are_mounts_keeps_them_and_crosses_no_mount(tmp_path):
    """As on h-lab's hosts: /etc/minik8s and /var/lib/minik8s are mounts of the host's
    own; a mount left below them (a pod's bind mount of a host directory) is undone,
    never deleted through."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    etc, var = root / "etc" / "minik8s", root / "var" / "lib" / "minik8s"
    for d in (etc, var, outside / "etc", outside / "var", outside / "hostdir"):
        d.mkdir(parents=True)
    (outside / "hostdir" / "precious").write_text("keep me")
    h = LabHost("10.250.0.3/24", root=str(root),
                binds={str(outside / "etc"): str(etc), str(outside / "var"): str(var)}).start()
    try:
        make = (f"mkdir -p {etc}/pki {var}/kubelet/pods/p/volumes/v && echo x > {etc}/admin.conf && "
                f"mount --bind {outside / 'hostdir'} {var}/kubelet/pods/p/volumes/v")
        assert h.run(["sh", "-c", make]).returncode == 0
        r = h.run(minik8s("reset", "--force"))
        assert r.returncode == 0, r.stdout + r.stderr
        assert (outside / "hostdir" / "precious").read_text() == "keep me"
        assert os.listdir(outside / "etc") == [] and os.listdir(outside / "var") == []
        mounts = h.run(["cat", "/proc/self/mountinfo"]).stdout
        assert f" {etc} " in mounts and f" {var} " in mounts and "/volumes/v " not in mounts
        r = h.run(minik8s("reset"))
        assert r.returncode == 0 and "Nothing to do" in r.stdout, r.stdout
    finally:
        h.stop()
