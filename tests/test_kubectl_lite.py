"""kubectl-lite as a subprocess against the session's real API server: apply (three-way
merge, validation, ordering, pruning, dry runs), get (formats, selectors, watch), the
shipped manifests, one-line user errors, and get/describe output against the real
kubectl's for the same objects.

Each test works in its own namespace (the `ns` fixture) through a kubeconfig whose
context points there. Every invocation is a new process, so related assertions share
one test rather than paying start-up again and again.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "kubectl-lite")
KL = [_SCRIPT] if os.path.exists(_SCRIPT) else [sys.executable, "-m", "kubectl_lite.cli"]
KUBECTL = shutil.which("kubectl")


class KubectlLite:
    def __init__(self, kubeconfig: str, cwd: str, namespace: str):
        self.base = [*KL, "--kubeconfig", kubeconfig]
        self.kubeconfig, self.cwd, self.namespace = kubeconfig, cwd, namespace
        self.env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "EDITOR",
                                                                     "KUBE_EDITOR")}

    def __call__(self, *args: str, input: str | None = None, ok: bool | None = True,
                 env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run([*self.base, *args], input=input, capture_output=True, text=True,
                           cwd=self.cwd, env={**self.env, **(env or {})}, timeout=timeout)
        assert "Traceback" not in r.stderr, r.stderr
        if ok is True and r.returncode != 0:
            pytest.fail(f"kubectl-lite {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        if ok is False and r.returncode == 0:
            pytest.fail(f"kubectl-lite {' '.join(args)} succeeded, expected a failure: {r.stdout}")
        return r

    def out(self, *args: str, **kw) -> str:
        return self(*args, **kw).stdout

    def err(self, *args: str, **kw) -> str:
        """stderr of a command that must fail."""
        return self(*args, ok=False, **kw).stderr

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*self.base, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.cwd, env=self.env)


def write_kubeconfig(path, server, namespace: str, **user) -> str:
    """A kubeconfig for `server`: a URL, or a tests.procs.APIServer, reached as its admin
    (its CA and the admin's certificate, beside any `user` fields: a client certificate
    authenticates before a token is looked at, as in kube-apiserver)."""
    cluster = {"server": server}
    if not isinstance(server, str):
        cluster = {"server": server.url}
        if server.ca_file:
            cluster["certificate-authority"] = server.ca_file
            user = {"client-certificate": f"{server.pki_dir}/admin.crt",
                    "client-key": f"{server.pki_dir}/admin.key", **user}
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "minik8s", "cluster": cluster}],
        "users": [{"name": "me", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "minik8s", "user": "me",
                                                  "namespace": namespace}}]}))
    return str(path)


@pytest.fixture
def kl(apiserver, ns, tmp_path):
    return KubectlLite(write_kubeconfig(tmp_path / "kubeconfig", apiserver, ns), str(tmp_path), ns)


def write(tmp_path, name: str, *docs: dict) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def get(http, path: str) -> dict:
    r = http.get(path)
    assert r.status_code == 200, r.text
    return r.json()


def absent(http, path: str) -> bool:
    return http.get(path).status_code == 404


def rows(text: str) -> list[dict[str, str]]:
    """Column output as dicts, cut where the header's columns start."""
    lines = [line for line in text.splitlines() if line.strip()]
    spans = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
    ends = [s for s, _ in spans[1:]] + [None]
    return [{name: line[start:end].strip() for (start, name), end in zip(spans, ends)}
            for line in lines[1:]]


def deployment(name="web", *, replicas: int | None = 3, image="python:3", labels=None,
               env=None) -> dict:
    labels = labels or {"app": name}
    spec: dict = {"selector": {"matchLabels": {"app": name}},
                  "template": {"metadata": {"labels": {"app": name}},
                               "spec": {"containers": [{
                                   "name": "web", "image": image,
                                   "command": ["python3", "-m", "http.server", "8080"],
                                   "ports": [{"containerPort": 8080, "name": "http"}],
                                   **({"env": env} if env else {})}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels}, "spec": spec}


def pod(name: str, *, labels: dict | None = None, node: str | None = None, **spec) -> dict:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}
    if node:
        body["spec"]["nodeName"] = node
    return body


def create(http, ns: str, obj: dict) -> dict:
    plural = {"Pod": "pods", "ConfigMap": "configmaps", "Event": "events", "Service": "services"}
    if obj["kind"] in ("Deployment", "ReplicaSet"):
        path = f"/apis/apps/v1/namespaces/{ns}/{obj['kind'].lower()}s"
    else:
        path = f"/api/v1/namespaces/{ns}/{plural[obj['kind']]}"
    r = http.post(path, json=obj)
    assert r.status_code == 201, r.text
    return r.json()


# -- apply -------------------------------------------------------------------------------

def test_apply_creates_then_reports_unchanged_then_configured(kl, http, ns, tmp_path):
    f = write(tmp_path, "web.yaml", deployment(),
              {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    assert kl.out("apply", "-f", f) == "deployment.apps/web created\nservice/web created\n"
    assert kl.out("apply", "-f", f) == "deployment.apps/web unchanged\nservice/web unchanged\n"
    d = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    last = json.loads(d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert last["metadata"] == {"annotations": {}, "labels": {"app": "web"}, "name": "web",
                                "namespace": ns}
    assert [m["manager"] for m in d["metadata"]["managedFields"]] == ["kubectl-client-side-apply"]
    f = write(tmp_path, "web.yaml", deployment(image="python:3.12"))
    assert kl.out("apply", "-f", f) == "deployment.apps/web configured\n"
    d = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "python:3.12"
    # the live object matches what the real kubectl would compute: it sees nothing to do
    if KUBECTL:
        r = subprocess.run([KUBECTL, "--kubeconfig", kl.kubeconfig, "--cache-dir",
                            str(tmp_path / "cache"), "apply", "-f", f],
                           capture_output=True, text=True, timeout=60)
        assert r.stdout == "deployment.apps/web unchanged\n", r.stderr


def test_apply_three_way_merge_drops_removed_fields_and_keeps_others_changes(kl, http, ns, tmp_path):
    v1 = deployment(replicas=None, labels={"app": "web", "tier": "front"},
                    env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    f = write(tmp_path, "web.yaml", v1)
    kl("apply", "-f", f)
    # others' changes: a scale and an annotation the manifest never mentions
    assert kl.out("scale", "deployment/web", "--replicas=4") == "deployment.apps/web scaled\n"
    kl("annotate", "deployment", "web", "owner=ops")
    v2 = deployment(replicas=None, labels={"app": "web"}, env=[{"name": "A", "value": "1"}])
    assert kl.out("apply", "-f", write(tmp_path, "web.yaml", v2)) == "deployment.apps/web configured\n"
    d = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert d["metadata"]["labels"] == {"app": "web"}  # removed from the manifest: gone
    assert d["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    assert d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 8080
    assert d["spec"]["replicas"] == 4  # scaled by others, not in the manifest: kept
    assert d["metadata"]["annotations"]["owner"] == "ops"
    # once the manifest sets replicas, it wins
    v3 = deployment(replicas=2, labels={"app": "web"}, env=[{"name": "A", "value": "1"}])
    kl("apply", "-f", write(tmp_path, "web.yaml", v3))
    assert get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")["spec"]["replicas"] == 2


def test_apply_multi_document_file_with_one_invalid_document_applies_nothing(kl, http, ns, tmp_path):
    bad = deployment("bad")
    bad["spec"]["replica"] = 3  # unknown field
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    other_ns = ns + "-x"
    f = write(tmp_path, "all.yaml",
              {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "good"}, "data": {"a": "1"}},
              bad,
              {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other_ns}})
    err = kl.err("apply", "-f", f)
    assert f'error validating "{f}" (document 2, Deployment "bad"): spec.replica: unknown field' in err
    assert "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: \"x\": must " \
           "be of type integer" in err
    assert "nothing was applied" in err
    assert absent(http, f"/api/v1/namespaces/{ns}/configmaps/good")
    assert absent(http, f"/api/v1/namespaces/{other_ns}")
    # --validate=false sends it as is: the server's own strict validation still refuses it
    err = kl.err("apply", "-f", f, "--validate=false")
    assert 'The Deployment "bad" is invalid' in err


def test_apply_directories_json_lists_stdin_and_namespaces_first(kl, http, ns, tmp_path):
    other = ns + "-app"
    # the object comes before its namespace in the file: apply creates namespaces first
    # (a ConfigMap: a pod there would wait for a `default` ServiceAccount, which only the
    # controller manager, not running here, makes)
    write(tmp_path, "d/a.yaml",
          {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "p1", "namespace": other}},
          {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    (tmp_path / "d" / "b.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"k": "v"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c2"}}]}))
    write(tmp_path, "d/sub/c.yml", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "deep"}})
    (tmp_path / "d" / "notes.txt").write_text("not a manifest")
    out = kl.out("apply", "-f", str(tmp_path / "d"))
    assert out.splitlines() == [f"namespace/{other} created", "configmap/p1 created",
                                "configmap/c1 created", "configmap/c2 created"]
    assert get(http, f"/api/v1/namespaces/{other}/configmaps/p1")["metadata"]["namespace"] == other
    assert absent(http, f"/api/v1/namespaces/{ns}/configmaps/deep")
    assert "configmap/deep created" in kl.out("apply", "-R", "-f", str(tmp_path / "d"))
    out = kl.out("apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-stdin"}}))
    assert out == "configmap/from-stdin created\n"
    # -n and an object naming another namespace disagree: refused, nothing sent
    err = kl.err("apply", "-n", ns, "-f", str(tmp_path / "d" / "a.yaml"))
    assert f'the namespace from the provided object "{other}" does not match the namespace "{ns}"' in err
    http.delete(f"/api/v1/namespaces/{other}")


def test_apply_dry_runs_server_side_and_prune(kl, http, ns, tmp_path):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"set": "x"}},
          "data": {"k": "1"}}
    f = write(tmp_path, "a.yaml", cm)
    assert kl.out("apply", "-f", f, "--dry-run=client") == "configmap/a created (dry run)\n"
    assert kl.out("apply", "-f", f, "--dry-run=server") == "configmap/a created (server dry run)\n"
    assert absent(http, f"/api/v1/namespaces/{ns}/configmaps/a")
    assert kl.out("apply", "-f", f, "--server-side") == "configmap/a serverside-applied\n"
    live = get(http, f"/api/v1/namespaces/{ns}/configmaps/a")
    assert [(m["manager"], m["operation"]) for m in live["metadata"]["managedFields"]] == [("kubectl", "Apply")]
    # prune: b and c were applied with the label; the next apply of the set has only a and b
    b = {**cm, "metadata": {"name": "b", "labels": {"set": "x"}}}
    c = {**cm, "metadata": {"name": "c", "labels": {"set": "x"}}}
    other = {**cm, "metadata": {"name": "other"}}
    kl("apply", "-f", write(tmp_path, "abc.yaml", b, c, other))
    err = kl.err("apply", "-f", write(tmp_path, "ab.yaml", cm, b), "--prune")
    assert "all resources selected for prune without explicitly passing --all" in err
    out = kl.out("apply", "-f", write(tmp_path, "ab.yaml", cm, b), "--prune", "-l", "set=x")
    assert out.splitlines() == ["configmap/a configured", "configmap/b unchanged", "configmap/c pruned"]
    assert absent(http, f"/api/v1/namespaces/{ns}/configmaps/c")
    assert not absent(http, f"/api/v1/namespaces/{ns}/configmaps/other")


MANIFESTS = ["web.yaml", "sidecar-pod.yaml", "pinned-pod.yaml", "configmap-volume.yaml",
             "probes.yaml"]


def test_shipped_manifests_validate_and_apply(kl, http, ns):
    files = [os.path.join(ROOT, "manifests", m) for m in MANIFESTS]
    out = kl.out("apply", *[a for f in files for a in ("-f", f)])
    assert out.splitlines() == ["deployment.apps/web created", "service/web created",
                                "pod/shared created", "pod/pinned created",
                                "configmap/web-content created", "pod/config-web created",
                                "pod/probed created"]
    web = get(http, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert web["spec"]["replicas"] == 3
    assert "http.server 8080" in " ".join(web["spec"]["template"]["spec"]["containers"][0]["command"])
    shared = get(http, f"/api/v1/namespaces/{ns}/pods/shared")["spec"]
    assert [c["name"] for c in shared["containers"]] == ["server", "writer"]
    assert [c["volumeMounts"][0]["name"] for c in shared["containers"]] == ["www", "www"]
    assert "emptyDir" in shared["volumes"][0]
    pinned = get(http, f"/api/v1/namespaces/{ns}/pods/pinned")["spec"]
    assert pinned["nodeSelector"] == {"disktype": "ssd"}
    assert pinned["tolerations"][0]["key"] == "dedicated"
    cfg = get(http, f"/api/v1/namespaces/{ns}/pods/config-web")["spec"]["volumes"][0]
    assert cfg["configMap"]["name"] == "web-content"
    probed = get(http, f"/api/v1/namespaces/{ns}/pods/probed")["spec"]["containers"][0]
    assert probed["resources"] == {"requests": {"cpu": "50m", "memory": "32Mi"},
                                   "limits": {"cpu": "250m", "memory": "128Mi"}}
    assert probed["readinessProbe"]["httpGet"]["path"] == "/"
    assert probed["livenessProbe"]["tcpSocket"]["port"] == 8080
    out = kl.out("apply", *[a for f in files for a in ("-f", f)])
    # The server adds default tolerations to every pod and tolerations patch atomically,
    # so a pod that lists its own reports `configured` each time, with kubectl too; so does
    # a pod that lists volumes, beside which the ServiceAccount admission put its token
    # volume (the live list is longer: upstream's diff sends its $setElementOrder).
    assert [line for line in out.splitlines() if not line.endswith(" unchanged")] == [
        "pod/shared configured", "pod/pinned configured", "pod/config-web configured"], out


# -- errors ------------------------------------------------------------------------------

def test_user_errors_are_one_clear_line_and_a_failure(kl, tmp_path, ns):
    def one_line(args, *, expect, **kw):
        err = kl.err(*args, **kw)
        assert err.count("\n") == 1 and expect in err, err
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod: x\n")
    one_line(["apply", "-f", str(bad)],
             expect=f'error: error parsing "{bad}": line 2, column 10: mapping values are not allowed')
    one_line(["apply", "-f", "missing.yaml"], expect='error: the path "missing.yaml" does not exist')
    one_line(["get", "pods", "-l", "a in (b"], expect='error: invalid label selector "a in (b"')
    one_line(["get", "pods", "--field-selector", "nonsense"], expect="error: invalid field selector")
    one_line(["get", "pods", "nope"], expect='Error from server (NotFound): pods "nope" not found')
    one_line(["get", "gizmos"], expect='error: the server doesn\'t have a resource type "gizmos"')
    one_line(["get", "pods", "-o", "fancy"], expect="unable to match a printer suitable for the output format")
    one_line(["frobnicate"], expect='error: unknown command "frobnicate"')
    one_line(["get", "pods", "-o", "jsonpath={.a[}"], expect="error parsing jsonpath")
    one_line(["delete", "pod", "nope"], expect='Error from server (NotFound): pods "nope" not found')
    one_line(["--kubeconfig", str(tmp_path / "none"), "get", "pods"],
             expect=f'error: the kubeconfig file "{tmp_path / "none"}" does not exist')
    one_line(["--server", "http://127.0.0.1:1", "get", "pods"],
             expect="The connection to the server 127.0.0.1:1 was refused - did you specify the right host or port?")
    r = subprocess.run([*KL, "get", "pods"], capture_output=True, text=True, timeout=60,
                       env={**kl.env, "HOME": str(tmp_path), "KUBECONFIG": ""})
    assert r.returncode == 1 and r.stderr.startswith("error: no kubeconfig found"), r.stderr
    cfg = tmp_path / "broken-config"
    cfg.write_text("clusters: [\n")
    r = kl("--kubeconfig", str(cfg), "get", "pods", ok=False)
    assert r.stderr.startswith("error: cannot load kubeconfig") and r.stderr.count("\n") == 1


def test_version_client_needs_no_server_and_loads_only_the_cli():
    r = subprocess.run([*KL, "--kubeconfig", "/nonexistent", "version", "--client"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("Client Version: v"), r.stderr
    code = ("import sys\nfrom kubectl_lite.cli import main\nassert main(['version', '--client']) == 0\n"
            "heavy = sorted(m for m in ('httpx', 'yaml', 'jsonschema', 'asyncio', 'client.rest') "
            "if m in sys.modules)\nprint('HEAVY', heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr


# -- get ---------------------------------------------------------------------------------

@pytest.fixture
def pods(http, ns):
    for name, labels in (("a", {"app": "web", "env": "prod"}), ("b", {"app": "web", "env": "dev"}),
                         ("c", {"app": "db"})):
        create(http, ns, pod(name, labels=labels))
    return ["a", "b", "c"]


def names(text: str) -> list[str]:
    return [r["NAME"] for r in rows(text)]


def test_selectors_not_equal_and_notin_match_objects_without_the_key(kl, pods):
    assert names(kl.out("get", "pods", "-l", "env!=prod")) == ["b", "c"]
    assert names(kl.out("get", "pods", "-l", "env notin (prod)")) == ["b", "c"]
    assert names(kl.out("get", "pods", "-l", "env in (prod,dev)")) == ["a", "b"]
    assert names(kl.out("get", "pods", "-l", "env")) == ["a", "b"]
    assert names(kl.out("get", "pods", "-l", "!env")) == ["c"]
    assert names(kl.out("get", "pods", "-l", "app=web,env!=dev")) == ["a"]
    assert names(kl.out("get", "pods", "--field-selector", "metadata.name!=a")) == ["b", "c"]
    r = kl("get", "pods", "-l", "app=none")
    assert r.stdout == "" and r.stderr == f"No resources found in {kl.namespace} namespace.\n"


def test_get_formats(kl, http, ns, pods):
    out = kl.out("get", "pods")
    assert out.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows(out)[0] == {**rows(out)[0], "NAME": "a", "READY": "0/1", "STATUS": "Pending", "RESTARTS": "0"}
    assert out.splitlines()[1].startswith("a      0/1     Pending   0          ")  # kubectl's widths
    wide = kl.out("get", "po", "-o", "wide")
    assert list(rows(wide)[0]) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                                   "NOMINATED NODE", "READINESS GATES"]
    assert kl.out("get", "pods", "-o", "name") == "pod/a\npod/b\npod/c\n"
    assert kl.out("get", "pods", "--no-headers", "-o", "wide").splitlines()[0].startswith("a ")
    lst = yaml.safe_load(kl.out("get", "pods", "-o", "yaml"))
    assert lst["kind"] == "List" and [i["metadata"]["name"] for i in lst["items"]] == pods
    assert all("managedFields" not in i["metadata"] for i in lst["items"])
    one = json.loads(kl.out("get", "pod", "b", "-o", "json"))
    assert one["kind"] == "Pod" and one["metadata"]["labels"]["env"] == "dev"
    assert kl.out("get", "pods", "-o", "jsonpath={.items[*].metadata.name}") == "a b c"
    assert kl.out("get", "pods", "-o",
                  'jsonpath={range .items[?(@.metadata.labels.app=="web")]}{.metadata.name}:'
                  '{.metadata.labels.env}{"\\n"}{end}') == "a:prod\nb:dev\n"
    assert kl.out("get", "pod/a", "-o", "jsonpath={.spec.containers[0]}") .startswith('{"image":"busybox"')
    cc = kl.out("get", "pods", "-o", "custom-columns=NAME:.metadata.name,ENV:.metadata.labels.env")
    assert cc.splitlines() == ["NAME   ENV", "a      prod", "b      dev", "c      <none>"]
    labelled = rows(kl.out("get", "pods", "--show-labels", "-L", "env"))
    assert [(r["NAME"], r["ENV"], r["LABELS"]) for r in labelled] == [
        ("a", "prod", "app=web,env=prod"), ("b", "dev", "app=web,env=dev"), ("c", "", "app=db")]
    assert names(kl.out("get", "pods", "--sort-by", "{.metadata.labels.env}")) == ["c", "b", "a"]
    assert kl.out("get", "pods", "--sort-by", ".metadata.labels.env", "-o", "name") == "pod/c\npod/b\npod/a\n"
    everywhere = rows(kl.out("get", "pods", "-A", "-l", "app"))
    assert {(r["NAMESPACE"], r["NAME"]) for r in everywhere} >= {(ns, "a"), (ns, "b"), (ns, "c")}
    create(http, ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                      "data": {"x": "1", "y": "2"}})
    both = kl.out("get", "po,cm", "-l", "app!=web")
    # several kinds: kind/name names, one table per kind, a blank line between them
    assert [line.split()[0] if line else "" for line in both.splitlines()] == [
        "NAME", "pod/c", "", "NAME", "configmap/cfg"]
    assert kl.out("get", "pod/a", "pod/b", "-o", "name") == "pod/a\npod/b\n"
    r = kl("get", "pods", "a", "zz", ok=False)
    assert names(r.stdout) == ["a"] and r.stderr == 'Error from server (NotFound): pods "zz" not found\n'
    assert kl.out("get", "pods", "zz", "--ignore-not-found") == ""
    kl("get", "no,ns,ev,cm,svc,deploy,rs,po")  # the short names


def test_get_watch_prints_the_list_then_each_change(kl, http, ns):
    create(http, ns, pod("first"))
    create(http, ns, pod("second"))
    watcher = kl.popen("get", "pods", "-w")
    only = kl.popen("get", "pods", "--watch-only", "-o", "name")
    lines: queue.Queue = queue.Queue()

    def pump(proc, tag):
        for line in proc.stdout:
            lines.put((tag, line.rstrip("\n")))
    for proc, tag in ((watcher, "w"), (only, "o")):
        threading.Thread(target=pump, args=(proc, tag), daemon=True).start()
    seen: dict[str, list[str]] = {"w": [], "o": []}

    def wait_for(pred, what, *, poke=None):
        deadline = time.monotonic() + 30
        while not pred():
            if poke:
                poke()
            try:
                tag, line = lines.get(timeout=0.5 if poke else max(0.01, deadline - time.monotonic()))
                seen[tag].append(line)
            except queue.Empty:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}: {seen}")

    def touch():
        http.patch(f"/api/v1/namespaces/{ns}/pods/first",
                   json={"metadata": {"labels": {"touched": str(time.monotonic_ns())}}},
                   headers={"content-type": "application/merge-patch+json"})
    try:
        wait_for(lambda: len(seen["w"]) >= 3, "the listed pods")
        assert seen["w"][0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        assert [line.split()[0] for line in seen["w"][1:3]] == ["first", "second"]
        # --watch-only prints changes only, from when it started: touch until it has begun
        wait_for(lambda: seen["o"], "the watch-only process to start", poke=touch)
        assert set(seen["o"]) == {"pod/first"}
        create(http, ns, pod("third"))
        wait_for(lambda: "pod/third" in seen["o"] and any(x.startswith("third ") for x in seen["w"]),
                 "the new pod")
        assert all(x.split()[0] in ("first", "third") for x in seen["w"][3:])
    finally:
        for proc in (watcher, only):
            proc.kill()
            proc.wait()


# -- against the real kubectl ------------------------------------------------------------

@pytest.mark.kubectl
def test_get_and_describe_print_what_kubectl_prints(kl, http, ns, tmp_path, pods):
    kl("apply", "-f", write(tmp_path, "web.yaml", deployment(), {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}))

    def kubectl(*args):
        r = subprocess.run([KUBECTL, "--kubeconfig", kl.kubeconfig, "--cache-dir",
                            str(tmp_path / "cache"), *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def same_table(*args):
        theirs, ours = kubectl(*args), kl.out(*args)
        assert ours.splitlines()[0] == theirs.splitlines()[0], (ours, theirs)  # header, widths
        strip = lambda rs: [{k: v for k, v in r.items() if k != "AGE"} for r in rs]  # noqa: E731
        assert strip(rows(ours)) == strip(rows(theirs)), (ours, theirs)
    same_table("get", "pods", "-o", "wide")
    same_table("get", "pods", "-A", "--show-labels", "-L", "env", "-l", "app")
    same_table("get", "deploy,svc")
    for args in (("get", "pods", "-o", "yaml"), ("get", "deploy", "web", "-o", "json"),
                 ("get", "pods", "-o", "name"),
                 ("get", "pods", "-o", "jsonpath={range .items[*]}{.metadata.name} {.metadata.labels}{'\\n'}{end}"),
                 ("get", "pods", "-o", "custom-columns=N:.metadata.name,L:.metadata.labels,C:.spec.containers[*].name"),
                 ("describe", "deploy", "web"), ("describe", "svc", "web"), ("describe", "pod", "a"),
                 ("explain", "deployment.spec.strategy"), ("api-resources",)):
        assert kl.out(*args) == kubectl(*args), args
