"""`minik8s up/down/status/logs/node` where no cluster needs to come up: the one-line
failures before anything starts, and the commands on a state dir without a cluster."""
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile

import pytest

from cluster import bringup
from cluster.state import ClusterConfig
from tests.procs import free_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def as_nobody() -> tuple[list[str], dict] | None:
    """A command prefix and environment that run this project's Python as the
    unprivileged user nobody, or None (not root, no setpriv). The venv's interpreter may
    live where nobody cannot reach it (e.g. under /root); the system's of the same
    version, given the venv's packages, serves then."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None
    nobody = pwd.getpwnam("nobody")
    prefix = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    env = {"PYTHONPATH": os.pathsep.join([ROOT, sysconfig.get_paths()["purelib"]])}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    probe = ("import subprocess, sys; sys.exit(subprocess.run([sys.executable, '-c', "
             "'import cluster.commands, apiserver.app, kubelet.main']).returncode)")
    for python in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if os.path.exists(python) and subprocess.run(
                [*prefix, python, "-c", probe], capture_output=True, cwd="/",
                env={**os.environ, **env}).returncode == 0:
            return [*prefix, python], env
    return None


def minik8s(*args, env=None, nobody=False, timeout=60):
    prefix, extra = [sys.executable], {}
    if nobody:
        found = as_nobody()
        if found is None:
            pytest.skip("cannot run as an unprivileged user here (no setpriv, or no Python nobody can run)")
        prefix, extra = found
    return subprocess.run([*prefix, "-m", "cluster.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **extra, **(env or {})}, timeout=timeout, cwd=ROOT)


def one_line_error(r) -> str:
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minik8s: error: "), r.stderr
    return lines[0]


def test_up_without_etcd_on_path(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    r = minik8s("up", "--runtime", "fake", "--state-dir", str(tmp_path / "s"), "--port", str(free_port()),
                env={"PATH": str(bindir)})
    assert "etcd is not on PATH" in one_line_error(r)


def test_up_with_the_port_taken(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = minik8s("up", "--runtime", "fake", "--state-dir", str(tmp_path), "--port", str(port))
    err = one_line_error(r)
    assert f"port {port} on 127.0.0.1 is taken" in err and "--port" in err
    assert not os.path.exists(tmp_path / "run")  # nothing was started


@pytest.mark.skipif(os.geteuid() != 0, reason="checks what a non-root user sees, by dropping root")
def test_linux_runtime_without_root_names_the_fake_runtime(tmp_path):
    state = tempfile.mkdtemp(prefix="minik8s-nobody-")  # tmp_path's parents are private to root
    os.chmod(state, 0o777)
    try:
        r = minik8s("up", "--state-dir", state, "--port", str(free_port()), nobody=True)
    finally:
        shutil.rmtree(state)
    err = one_line_error(r)
    assert "needs root" in err and "--runtime fake" in err


def test_linux_runtime_without_root_as_a_user(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("covered by dropping root in the test above")
    err = one_line_error(minik8s("up", "--state-dir", str(tmp_path), "--port", str(free_port())))
    assert "needs root" in err and "--runtime fake" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="reads the host's routes as the linux runtime does")
def test_up_refuses_an_address_range_in_use(tmp_path):
    from pyroute2 import IPRoute
    # A range of the host's own uplink: another test's bridge can go at any moment, and
    # then this `up` would bring up a whole cluster instead of refusing.
    with IPRoute() as ipr:
        routes = ipr.get_routes(family=2, table=254)
        uplinks = {r.get("oif") for r in routes if not r["dst_len"]}
        route = next((r for r in routes if r["dst_len"] and r.get("dst") and r.get("oif") in uplinks), None)
    if route is None:
        pytest.skip("no route of the host's uplink to name")
    r = minik8s("up", "--state-dir", str(tmp_path), "--port", str(free_port()),
                "--node-cidr", f"{route.get('dst')}/{route['dst_len']}", "--cluster-cidr", "172.31.0.0/16")
    assert "address range in use" in one_line_error(r)


def test_a_component_that_cannot_start_fails_up_and_leaves_nothing_running(tmp_path):
    r = minik8s("up", "--runtime", "fake", "--nodes", "1", "--state-dir", str(tmp_path),
                "--port", str(free_port()), "--apiserver-args=--no-such-flag", timeout=120)
    assert r.returncode == 1
    assert "apiserver keeps exiting" in r.stderr and "unrecognized arguments: --no-such-flag" in r.stderr
    cfg = ClusterConfig.load(str(tmp_path))
    assert bringup.running_pid(cfg) is None
    assert minik8s("status", "--state-dir", str(tmp_path)).returncode == 3


def test_a_state_dir_keeps_its_topology(tmp_path):
    ClusterConfig(state_dir=str(tmp_path), runtime="fake", nodes=3).save()
    err = one_line_error(minik8s("up", "--state-dir", str(tmp_path), "--nodes", "5"))
    assert "nodes 3 (not 5)" in err and "down --purge" in err


def test_bad_configuration_is_one_line(tmp_path):
    err = one_line_error(minik8s("up", "--state-dir", str(tmp_path), "--runtime", "fake",
                                 "--cluster-cidr", "10.250.0.0/16"))
    assert "overlaps" in err


def test_commands_on_a_dir_without_a_cluster(tmp_path):
    r = minik8s("status", "--state-dir", str(tmp_path))
    assert "no cluster in" in one_line_error(r) and "minik8s up" in r.stderr
    r = minik8s("down", "--state-dir", str(tmp_path))
    assert r.returncode == 0 and "no cluster" in r.stdout
    assert "no cluster" in one_line_error(minik8s("logs", "apiserver", "--state-dir", str(tmp_path)))


def test_commands_on_a_stopped_cluster(tmp_path):
    cfg = ClusterConfig(state_dir=str(tmp_path), runtime="fake", nodes=2)
    cfg.save()
    os.makedirs(cfg.path("logs"))
    with open(cfg.log_path("scheduler"), "w") as f:
        f.write("".join(f"line {i}\n" for i in range(100)))
    r = minik8s("status", "--state-dir", str(tmp_path))
    assert r.returncode == 3 and "is stopped" in r.stdout
    r = minik8s("logs", "scheduler", "--tail", "2", "--state-dir", str(tmp_path))
    assert r.stdout == "line 98\nline 99\n"
    assert minik8s("logs", "scheduler", "--state-dir", str(tmp_path)).stdout.count("\n") == 100
    err = one_line_error(minik8s("logs", "nope", "--state-dir", str(tmp_path)))
    assert "there are: scheduler" in err
    err = one_line_error(minik8s("node", "stop", "node-1", "--state-dir", str(tmp_path)))
    assert "linux runtime" in err
    r = minik8s("down", "--purge", "--state-dir", str(tmp_path))
    assert r.returncode == 0 and not os.path.exists(tmp_path)


def _subject(conn) -> tuple[str, list[str]]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    cert = x509.load_pem_x509_certificate(conn.cert_data)
    name = cert.subject
    return (name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
            [a.value for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)])


def test_kubeconfigs(tmp_path):
    """Secure (the default): every kubeconfig embeds the cluster CA and its own client
    certificate, whose subject is the identity the component acts as."""
    from client import kubeconfig
    cfg = ClusterConfig(state_dir=str(tmp_path), nodes=2, port=7443, node_cidr="10.251.3.0/24")
    bringup.write_kubeconfigs(cfg)
    ca = open(os.path.join(cfg.pki_dir, "ca.crt"), "rb").read()
    user = kubeconfig.load(cfg.kubeconfig).connection()
    assert user.server == "https://127.0.0.1:7443" and user.namespace == "default"
    assert user.ca_data == ca and _subject(user) == ("kubernetes-admin", ["system:masters"])
    assert kubeconfig.load(cfg.kubeconfig).current_context == cfg.context_name
    expected = {cfg.kubeconfig: ("kubernetes-admin", ["system:masters"]),
                cfg.component_kubeconfig("scheduler"): ("system:kube-scheduler", []),
                cfg.component_kubeconfig("controller-manager"): ("system:kube-controller-manager", []),
                cfg.node_kubeconfig("node-1"): ("system:node:node-1", ["system:nodes"]),
                cfg.node_kubeconfig("node-2"): ("system:node:node-2", ["system:nodes"])}
    for path, subject in expected.items():
        conn = kubeconfig.load(path).connection()
        assert _subject(conn) == subject and conn.ca_data == ca and conn.key_data, path
        assert oct(os.stat(path).st_mode & 0o777) == "0o600", path
    node = kubeconfig.load(cfg.node_kubeconfig("node-2")).connection()
    assert node.server == "https://10.251.3.1:7443"
    assert not os.path.exists(cfg.kubelet_token)    # no shared token in secure mode


def test_kubeconfigs_in_plain_http_mode(tmp_path):
    from client import kubeconfig
    cfg = ClusterConfig(state_dir=str(tmp_path), nodes=2, port=7443, node_cidr="10.251.3.0/24",
                        plain_http=True)
    bringup.write_kubeconfigs(cfg)
    user = kubeconfig.load(cfg.kubeconfig).connection()
    assert user.server == "http://127.0.0.1:7443" and user.namespace == "default"
    assert user.cert_data is None and user.token is None
    assert oct(os.stat(cfg.kubeconfig).st_mode & 0o777) == "0o600"
    node = kubeconfig.load(cfg.node_kubeconfig("node-2")).connection()
    assert node.server == "http://10.251.3.1:7443"
    assert not os.path.exists(cfg.pki_dir)


def test_component_flags_in_each_mode(tmp_path):
    """What each component is started with: TLS and its own identity by default, none
    of it with --plain-http (where the kubelets share a token with the API server)."""
    def specs(plain):
        cfg = ClusterConfig(state_dir=str(tmp_path / str(plain)), nodes=1, plain_http=plain)
        os.makedirs(cfg.state_dir)
        return cfg, {s.name: s for s in bringup.component_specs(cfg, etcd_port=1, etcd_peer_port=2)}
    cfg, secure = specs(False)
    etcd = secure["etcd"].argv
    assert "--client-cert-auth" in etcd and "--peer-client-cert-auth" in etcd
    assert etcd[etcd.index("--listen-client-urls") + 1] == "https://127.0.0.1:1"
    api = secure["apiserver"].argv
    assert api[api.index("--authorization-mode") + 1] == "Node,RBAC" and "--plain-http" not in api
    assert api[api.index("--etcd-servers") + 1] == "https://127.0.0.1:1"
    assert api[api.index("--client-ca-file") + 1] == os.path.join(cfg.pki_dir, "ca.crt")
    assert "MINIK8S_KUBELET_TOKEN" not in (secure["apiserver"].env or {})
    for name, conf in (("scheduler", cfg.component_kubeconfig("scheduler")),
                       ("controller-manager", cfg.component_kubeconfig("controller-manager")),
                       ("kubelet-node-1", cfg.node_kubeconfig("node-1"))):
        argv = secure[name].argv
        assert argv[argv.index("--kubeconfig") + 1] == conf, name
    cm = secure["controller-manager"].argv
    assert cm[cm.index("--root-ca-file") + 1] == os.path.join(cfg.pki_dir, "ca.crt")
    kubelet = secure["kubelet-node-1"].argv
    assert kubelet[kubelet.index("--authorization-mode") + 1] == "Webhook" and "--token-file" not in kubelet
    serving = os.path.join(cfg.pki_dir, "kubelets", "node-1", "kubelet.crt")
    assert kubelet[kubelet.index("--tls-cert-file") + 1] == serving

    cfg, plain = specs(True)
    assert "--client-cert-auth" not in plain["etcd"].argv and "--plain-http" in plain["apiserver"].argv
    assert "--token-file" in plain["kubelet-node-1"].argv
    assert "--root-ca-file" not in plain["controller-manager"].argv
    assert plain["scheduler"].argv[plain["scheduler"].argv.index("--kubeconfig") + 1] == cfg.kubeconfig


def test_merge_into_the_users_kubeconfig(tmp_path, monkeypatch):
    from client import kubeconfig
    from cluster import commands
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    user_cfg = tmp_path / "home" / ".kube" / "config"
    user_cfg.parent.mkdir(parents=True)
    other = kubeconfig.KubeConfig()
    other.set_cluster("prod", server="https://prod:6443")
    other.set_user("me", token="t")
    other.set_context("prod", cluster="prod", user="me")
    other.current_context = "prod"
    other.save(str(user_cfg))
    cfg = ClusterConfig(state_dir=str(tmp_path / "state"), runtime="fake")
    cfg.merged_context = cfg.context_name
    bringup.write_kubeconfigs(cfg)
    commands._merge_kubeconfig(cfg)
    merged = kubeconfig.load(str(user_cfg))
    assert merged.current_context == cfg.context_name
    assert merged.connection().server == cfg.api_url
    assert merged.connection("prod").server == "https://prod:6443"
    commands._unmerge_kubeconfig(cfg)
    back = kubeconfig.load(str(user_cfg))
    assert set(back.contexts) == {"prod"} and cfg.context_name not in back.clusters


def test_etcd_is_found_on_path():
    assert shutil.which("etcd"), "etcd must be installed for the cluster tests (hack/setup.sh)"


# -- the cluster's own processes: klog-like logs, flags passed through ----------------------

def test_component_args_reach_each_command_line_and_its_parser(tmp_path):
    from cluster import routes
    from controller_manager import main as cm_main
    cfg = ClusterConfig(state_dir=str(tmp_path), runtime="linux", nodes=1,
                        extra_args={"route-syncer": ["-v", "2"],
                                    "controller-manager": ["-v", "4", "--logging-format=json"]})
    specs = {s.name: s for s in bringup.component_specs(cfg, etcd_port=1, etcd_peer_port=2)}

    def after(name: str) -> list[str]:  # the argv after `python -m cluster.cli NAME`
        argv = specs[name].argv
        return argv[argv.index(name) + 1:]
    syncer = routes.parser().parse_args(after("route-syncer"))
    assert (syncer.v, syncer.logging_format, syncer.state_dir) == (2, "text", cfg.state_dir)
    cm = cm_main.parser().parse_args(after("controller-manager"))
    assert (cm.v, cm.logging_format, cm.port) == (4, "json", 0)  # no /metrics under `up`


def test_the_supervisor_logs_klog_json_lines_on_request(tmp_path):
    r = minik8s("supervise", str(tmp_path), "--logging-format=json")
    assert r.returncode == 1, r.stdout + r.stderr
    records = [json.loads(line) for line in r.stderr.splitlines()]
    assert [rec["msg"] for rec in records] == [f"no cluster.json in {tmp_path}"]
    assert records[0]["v"] == 0 and records[0]["caller"].startswith("bringup.py:")
    r = minik8s("supervise", str(tmp_path))  # text: klog's header
    assert re.fullmatch(r"I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ bringup\.py:\d+\] no cluster\.json in .*",
                        r.stderr.strip()), r.stderr


def test_route_syncer_flags_are_checked_before_it_starts(tmp_path):
    r = minik8s("route-syncer", "--state-dir", str(tmp_path), "-v", "lots")
    assert r.returncode == 2 and "invalid verbosity 'lots'" in r.stderr and "Traceback" not in r.stderr
    r = minik8s("route-syncer", "--state-dir", str(tmp_path), "-v", "2", "--logging-format=json")
    assert r.returncode == 2 and r.stderr.strip().endswith(f"error: no cluster in {tmp_path}")


def test_etcd_asks_every_client_for_a_certificate_of_its_ca(tmp_path):
    """etcd as `up` starts it: TLS on loopback, a client certificate of etcd's CA required
    (the cluster CA's admin certificate is not one), nothing on plain HTTP; its backend
    quota sized for Kubernetes' 150,000 pods."""
    import ssl

    import httpx
    cfg = ClusterConfig(state_dir=str(tmp_path), runtime="fake", nodes=1)
    bringup.write_kubeconfigs(cfg)
    port, peer = free_port(), free_port()
    etcd = next(s for s in bringup.component_specs(cfg, etcd_port=port, etcd_peer_port=peer) if s.name == "etcd")
    with open(tmp_path / "etcd.log", "wb") as log:
        proc = subprocess.Popen(etcd.argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"https://127.0.0.1:{port}/health"
        wait_for(lambda: httpx.get(url, verify=bringup.etcd_tls(cfg), timeout=1).status_code == 200,
                 what="etcd on TLS")
        etcd_ca = os.path.join(cfg.pki_dir, "etcd", "ca.crt")
        refused = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)
        with pytest.raises(refused):
            httpx.get(url, verify=ssl.create_default_context(cafile=etcd_ca), timeout=5)
        other_ca = ssl.create_default_context(cafile=etcd_ca)
        other_ca.load_cert_chain(os.path.join(cfg.pki_dir, "admin.crt"), os.path.join(cfg.pki_dir, "admin.key"))
        with pytest.raises(refused):
            httpx.get(url, verify=other_ca, timeout=5)
        with pytest.raises(refused):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        client = ssl.create_default_context(cafile=etcd_ca)
        client.load_cert_chain(os.path.join(cfg.pki_dir, "apiserver-etcd-client.crt"),
                               os.path.join(cfg.pki_dir, "apiserver-etcd-client.key"))
        assert httpx.get(url, verify=client, timeout=5).json() == {"health": "true"}
        # The backend quota for 150,000 pods (issue 20), as etcd itself reports it.
        metrics = httpx.get(f"https://127.0.0.1:{port}/metrics", verify=client, timeout=5).text
        quota = re.search(r"^etcd_server_quota_backend_bytes (\S+)$", metrics, re.M)
        assert quota and float(quota.group(1)) == bringup.ETCD_QUOTA_BACKEND_BYTES == 8 * 2**30
    finally:
        proc.terminate()
        proc.wait(10)
