"""`minik8s join` (a worker) as a user runs it, against a real control plane whose
cluster-info is signed by the real bootstrapsigner, with the host's layout under a
MINIK8S_ROOT of the test's own: each mistake is one line on stderr and exit code 1 and
leaves the host as it was, including a join that fails after it started the node's
units (they are removed, and every file and directory it made is gone).

The kubelet's TLS bootstrap (`--bootstrap-kubeconfig`) is another slice's; the test
that needs a kubelet to register through it is skipped until the kubelet has the flag.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
import yaml

from cluster import discovery, join, layout, units
from machinery import bootstraptoken as bt
from tests.clusterinfo import (SigningControlPlane, free_endpoint, new_token, publish_cluster_info,
                               publish_kubeadm_config, token_secret)
from tests.labhost import LabHost, minik8s
from tests.procs import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="join runs as root (kubeadm's preflight)")




def tree(root: str) -> list[str]:
    out = []
    for d, dirs, files in os.walk(root):
        out += [os.path.relpath(os.path.join(d, n), root) for n in dirs + files]
    return sorted(out)


def minik8s_join(root: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", "join", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, layout.ROOT_ENV: root})


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "; " in lines[0], r.stderr
    return lines[0][len("error: "):]


@pytest.fixture
def root(tmp_path):
    """A host's root with something already in it, which join must leave alone."""
    r = tmp_path / "host"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "hostname").write_text("worker\n")
    return str(r)


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    p = SigningControlPlane(str(tmp_path_factory.mktemp("join"))).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def admin(plane):
    with plane.server.client() as c:
        publish_cluster_info(c, "https://" + plane.endpoint, plane.ca_pem)
        publish_kubeadm_config(c, endpoint=plane.endpoint)
        # kubeadm's kubeadm:get-nodes: bootstrappers may check that a node name is free
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        assert c.post(f"{rbac}/clusterroles", json={
            "metadata": {"name": "kubeadm:get-nodes"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]}).status_code in (201, 409)
        assert c.post(f"{rbac}/clusterrolebindings", json={
            "metadata": {"name": "kubeadm:get-nodes"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubeadm:get-nodes"},
            "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                          "name": "system:bootstrappers:kubeadm:default-node-token"}]}).status_code in (201, 409)
        yield c


@pytest.fixture
def token(plane, admin):
    t = new_token()
    assert admin.post("/api/v1/namespaces/kube-system/secrets", json=token_secret(t)).status_code == 201
    plane.wait_signed(admin, bt.parse(t)[0])
    return t


@pytest.fixture
def ca_hash(plane):
    return discovery.ca_cert_hash(plane.ca_pem)


# -- mistakes caught before anything is touched ---------------------------------------

@pytest.mark.parametrize("args,cause", [
    ([], "no API server endpoint given"),
    (["10.0.0.1:6443"], "no --token given"),
    (["10.0.0.1", "--token", "abcdef.0123456789abcdef", "--discovery-token-ca-cert-hash", "sha256:" + "a" * 64],
     "invalid API server endpoint '10.0.0.1'"),
    (["10.0.0.1:6443", "--token", "nope", "--discovery-token-ca-cert-hash", "sha256:" + "a" * 64],
     "the bootstrap token 'nope' was not of the form"),
    (["10.0.0.1:6443", "--token", "abcdef.0123456789abcdef"], "no --discovery-token-ca-cert-hash given"),
    (["10.0.0.1:6443", "--token", "abcdef.0123456789abcdef", "--discovery-token-ca-cert-hash", "sha256:abc"],
     "invalid hash 'sha256:abc'"),
    (["10.0.0.1:6443", "--token", "abcdef.0123456789abcdef", "--discovery-token-ca-cert-hash", "sha256:" + "a" * 64,
      "--node-name", "Not_A_Name"], "invalid node name 'Not_A_Name'"),
    (["10.0.0.1:6443", "--token", "abcdef.0123456789abcdef", "--discovery-token-ca-cert-hash", "sha256:" + "a" * 64,
      "--advertise-address", "10.0.0.300"], "--advertise-address '10.0.0.300' is not an IP address"),
    (["10.0.0.1:6443", "--token", "abcdef.0123456789abcdef", "--discovery-token-ca-cert-hash", "sha256:" + "a" * 64,
      "--advertise-address", "192.0.2.77"], "--advertise-address 192.0.2.77 is not an address of this host"),
    (["10.0.0.1:6443", "--control-plane", "--token", "abcdef.0123456789abcdef"], "--control-plane"),
])
def test_malformed_flags_are_one_line_and_touch_nothing(root, args, cause):
    before = tree(root)
    assert cause in one_line_error(minik8s_join(root, *args, "--discovery-timeout", "2s"))
    assert tree(root) == before


def test_an_initialised_or_joined_host_is_refused_naming_reset(root):
    lay = layout.Layout(root)
    os.makedirs(lay.etc)
    with open(lay.kubelet_conf, "w") as f:
        f.write("kind: Config\n")
    before = tree(root)
    r = minik8s_join(root, "10.0.0.1:6443", "--token", "abcdef.0123456789abcdef",
                     "--discovery-token-ca-cert-hash", "sha256:" + "a" * 64)
    assert one_line_error(r) == (f"this host is already initialised or joined ({lay.kubelet_conf} exists); "
                                 "run `minik8s reset` first")
    assert tree(root) == before


def test_the_kubelet_port_in_use_is_refused(root):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", layout.KUBELET_PORT))
            s.listen()
        except OSError:
            pass  # something else holds it: the check must see that just the same
        r = minik8s_join(root, "10.0.0.1:6443", "--token", "abcdef.0123456789abcdef",
                         "--discovery-token-ca-cert-hash", "sha256:" + "a" * 64)
    assert one_line_error(r).startswith("port 10250 is in use")
    assert tree(root) == [os.path.join("etc"), os.path.join("etc", "hostname")]


# -- mistakes the cluster reveals ------------------------------------------------------

def test_a_wrong_ca_hash_leaves_the_host_as_it_was(root, plane, token, ca_hash):
    before = tree(root)
    r = minik8s_join(root, plane.endpoint, "--token", token, "--discovery-token-ca-cert-hash", "sha256:" + "0" * 64,
                     "--discovery-timeout", "10s")
    assert one_line_error(r).startswith(
        f"cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{ca_hash}\" are pinned")
    assert tree(root) == before


def test_a_wrong_or_unknown_token_and_an_unreachable_address(root, plane, token, ca_hash):
    tid = bt.parse(token)[0]
    r = minik8s_join(root, plane.endpoint, "--token", f"{tid}.{'x' * 16}", "--discovery-token-ca-cert-hash", ca_hash,
                     "--discovery-timeout", "3s")
    assert one_line_error(r).startswith("failed to verify JWS signature")
    unknown = new_token()
    r = minik8s_join(root, plane.endpoint, "--token", unknown, "--discovery-token-ca-cert-hash", ca_hash,
                     "--discovery-timeout", "2s")
    assert one_line_error(r).startswith(f"token id {bt.parse(unknown)[0]!r} is invalid for this cluster or it has "
                                        "expired")
    gone = free_endpoint()
    r = minik8s_join(root, gone, "--token", token, "--discovery-token-ca-cert-hash", ca_hash,
                     "--discovery-timeout", "2s")
    assert one_line_error(r).startswith(f"could not reach the control plane at {gone} within 2s")
    assert tree(root) == ["etc", os.path.join("etc", "hostname")]


def test_a_token_not_for_authentication_cannot_read_the_cluster_configuration(root, plane, admin, ca_hash):
    t = new_token()
    r = admin.post("/api/v1/namespaces/kube-system/secrets", json=token_secret(t, authentication=False))
    assert r.status_code == 201
    plane.wait_signed(admin, bt.parse(t)[0])
    r = minik8s_join(root, plane.endpoint, "--token", t, "--discovery-token-ca-cert-hash", ca_hash,
                     "--discovery-timeout", "10s")
    assert one_line_error(r).startswith("the API server refused the bootstrap token (401 Unauthorized)")
    assert tree(root) == ["etc", os.path.join("etc", "hostname")]


def test_a_name_taken_by_a_ready_node_is_refused(root, plane, admin, token, ca_hash):
    name = "taken-" + bt.parse(new_token())[0]
    assert admin.post("/api/v1/nodes", json={"apiVersion": "v1", "kind": "Node",
                                             "metadata": {"name": name}}).status_code == 201
    node = admin.get(f"/api/v1/nodes/{name}").json()
    node["status"] = {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                      "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                      "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    r = admin.put(f"/api/v1/nodes/{name}/status", json=node)
    assert r.status_code == 200, r.text
    r = minik8s_join(root, plane.endpoint, "--token", token, "--discovery-token-ca-cert-hash", ca_hash,
                     "--node-name", name, "--discovery-timeout", "10s")
    assert one_line_error(r).startswith(f"a Node with name {name!r} and status \"Ready\" already exists in the "
                                        "cluster; delete the existing Node")
    assert tree(root) == ["etc", os.path.join("etc", "hostname")]


# -- a join that fails after it started the node --------------------------------------

def test_a_join_whose_kubelet_never_bootstraps_is_rolled_back(root, plane, token, ca_hash, request):
    """Nothing approves the kubelet's CSR here (no CSR controllers run), so kubelet.conf
    never appears: join gives up at --tls-bootstrap-timeout and takes back everything,
    units included, keeping the kubelet's log outside the host's layout."""
    lay = layout.Layout(root)
    node = "rollback-" + bt.parse(token)[0]
    kept = join.kept_kubelet_log(node)

    def clean_up():  # should the test fail half way: no supervisor or kubelet left running
        if units.installed(lay) or units.supervisor_pid(lay):
            units.remove(None, lay)
            units.stop_supervisor(lay)
        if os.path.exists(kept):
            os.unlink(kept)
    request.addfinalizer(clean_up)
    before = tree(root)
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "join", plane.endpoint, "--token", token,
                             "--discovery-token-ca-cert-hash", ca_hash, "--node-name", node,
                             "--tls-bootstrap-timeout", "8s", "--discovery-timeout", "20s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, layout.ROOT_ENV: root})
    try:
        # While it waits: what it wrote and installed.
        wait_for(lambda: os.path.exists(lay.unit_spec("kube-proxy")), timeout=60, what="the worker units installed")
        kc = yaml.safe_load(open(lay.bootstrap_kubelet_conf))
        assert kc["users"] == [{"name": "tls-bootstrap-token-user", "user": {"token": token}}]
        assert kc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6444"  # the node-local balancer
        lb = units.installed(lay)["apiserver-lb"].argv
        assert lb[lb.index("--servers") + 1] == plane.endpoint
        assert open(os.path.join(lay.pki, "ca.crt"), "rb").read() == plane.ca_pem
        assert os.stat(lay.bootstrap_kubelet_conf).st_mode & 0o077 == 0
        kubelet = units.installed(lay)["kubelet"].argv
        for flag, value in (("--bootstrap-kubeconfig", lay.bootstrap_kubelet_conf), ("--kubeconfig", lay.kubelet_conf),
                            ("--cert-dir", lay.kubelet_pki), ("--node-name", node),
                            ("--cluster-dns", "10.96.0.10")):
            assert kubelet[kubelet.index(flag) + 1] == value
        assert "--rotate-certificates" in kubelet
        proxy = units.installed(lay)["kube-proxy"].argv
        assert proxy[proxy.index("--kubeconfig") + 1] == lay.kubelet_conf
        podnet = units.installed(lay)["podnet"].argv
        assert podnet[podnet.index("--backend") + 1] == "host-gw"
        assert podnet[podnet.index("--kubeconfig") + 1] == lay.kubelet_conf
        config = yaml.safe_load(open(lay.config_yaml))
        assert (config["role"], config["nodeName"], config["podSubnet"]) == ("worker", node, "10.244.0.0/16")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert one_line_error(r) == (f"the kubelet did not complete its TLS bootstrap (no {lay.kubelet_conf}) within "
                                 f"8s; see the kubelet's log ({kept})")
    assert tree(root) == before
    assert units.supervisor_pid(lay) is None
    assert os.path.exists(kept)


# -- a real worker join between two lab hosts -------------------------------------------

CP_IP, WORKER_IP = "10.251.0.1", "10.251.0.2"
JOIN = re.compile(r"minik8s join (\S+) --token ([a-z0-9]{6}\.[a-z0-9]{16}) \\\n\t"
                  r"--discovery-token-ca-cert-hash (sha256:[0-9a-f]{64})")


def connect(a: LabHost, b: LabHost, a_ip: str, b_ip: str) -> None:
    """A veth pair between two lab hosts, `a_ip/24` on one end and `b_ip/24` on the other."""
    tag = str(os.getpid() % 100000)
    ends = (f"jn{tag}a", f"jn{tag}b")
    subprocess.run(["ip", "link", "add", ends[0], "type", "veth", "peer", "name", ends[1]], check=True)
    for h, end, ip in ((a, ends[0], a_ip), (b, ends[1], b_ip)):
        subprocess.run(["ip", "link", "set", end, "netns", str(h.holder.pid)], check=True)
        for cmd in (["ip", "link", "set", end, "name", "lan0"], ["ip", "addr", "add", f"{ip}/24", "dev", "lan0"],
                    ["ip", "link", "set", "lan0", "up"]):
            r = h.run(cmd)
            assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    """A control-plane host made by `minik8s init` and a bare worker host, on one link."""
    cp = LabHost("10.252.0.1/32", root=str(tmp_path_factory.mktemp("cp"))).start()
    worker = LabHost("10.252.0.2/32", root=str(tmp_path_factory.mktemp("worker"))).start()
    cp.layout, worker.layout = layout.Layout(cp.root), layout.Layout(worker.root)
    for d in ("etc", "run", os.path.join("var", "lib")):  # what any host has
        os.makedirs(os.path.join(worker.root, d))
    try:
        connect(cp, worker, CP_IP, WORKER_IP)
        cp.node = f"cp-{os.getpid()}"
        worker.node = f"worker-{os.getpid()}"
        r = cp.run(minik8s("init", "--advertise-address", CP_IP, "--node-name", cp.node), timeout=400)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        m = JOIN.search(r.stdout.split("Then you can join any number of worker nodes")[1])
        assert m and m.group(1) == f"{CP_IP}:6443", r.stdout[-2000:]
        cp.join_args = [m.group(1), "--token", m.group(2), "--discovery-token-ca-cert-hash", m.group(3)]
        yield cp, worker
    finally:
        for h in (worker, cp):
            h.run(minik8s("reset", "--force"), timeout=120)
        worker.stop()
        cp.stop()


def test_a_worker_joins_and_its_node_becomes_ready(two_hosts):
    cp, worker = two_hosts
    before = tree(worker.root)
    r = worker.run(minik8s("join", *cp.join_args, "--node-name", worker.node), timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "This node has joined the cluster:" in r.stdout
    assert "Run 'kubectl get nodes' on the control-plane to see this node join the cluster." in r.stdout
    # The kubelet's TLS bootstrap gave it a node certificate of its own.
    kc = yaml.safe_load(open(worker.layout.kubelet_conf))
    # ... and reaches the API servers through the node-local load balancer.
    assert kc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6444"
    assert "token" not in kc["users"][0]["user"]
    r = cp.run(["kubectl", "--kubeconfig", cp.layout.admin_conf, "get", "node", worker.node, "-o", "json"])
    assert r.returncode == 0, r.stderr
    node = yaml.safe_load(r.stdout)
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    assert node["spec"].get("podCIDR", "").startswith("10.244.")
    assert not any(t.get("key") == "node-role.kubernetes.io/control-plane" for t in node["spec"].get("taints") or [])
    assert [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"] == [WORKER_IP]

    # A second join of the same host is refused and changes nothing of what join wrote
    # (the running kubelet may add files of its own under /var/lib/minik8s meanwhile).
    def etc() -> dict[str, bytes]:
        return {p: open(os.path.join(worker.layout.etc, p), "rb").read() for p in tree(worker.layout.etc)
                if os.path.isfile(os.path.join(worker.layout.etc, p))}
    after = etc()
    r = worker.run(minik8s("join", *cp.join_args, "--node-name", worker.node), timeout=120)
    assert one_line_error(r).endswith("run `minik8s reset` first")
    assert etc() == after

    # reset takes the worker back to what it was.
    r = worker.run(minik8s("reset", "--force"), timeout=120)
    assert r.returncode == 0, r.stderr
    assert tree(worker.root) == before


def test_join_is_a_minik8s_command_with_kubeadms_flags():
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "join", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    for flag in ("--token", "--discovery-token-ca-cert-hash", "--node-name", "--discovery-timeout",
                 "--control-plane", "--certificate-key", "--apiserver-advertise-address", "--apiserver-bind-port"):
        assert flag in r.stdout
