"""kubectl-lite's `-v N` against the session's real API server: the requests logged on
stderr in kubectl 1.32's words (client-go's round_trippers.go), stdout untouched."""
from __future__ import annotations

import re


from tests.test_kubectl_lite import KubectlLite, kl, write_kubeconfig  # noqa: F401 - the fixture

KLOG = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ round_trippers\.py:\d+\] (.*)$")
HEADER = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+:\d+\] ")


def messages(stderr: str) -> list[str]:
    """The round tripper's messages, without klog's header; continuation lines as they are."""
    out = []
    for line in stderr.splitlines():
        m = KLOG.match(line)
        out.append(m.group(1) if m else line)
    return out


def test_v6_logs_each_request_with_its_status_and_time(kl, apiserver, ns):
    quiet = kl("get", "pods")
    assert quiet.stderr == f"No resources found in {ns} namespace.\n"
    r = kl("-v=6", "get", "pods")
    assert r.stdout == quiet.stdout
    lines = messages(r.stderr)
    url = f"{apiserver.url}/api/v1/namespaces/{ns}/pods"
    assert any(re.fullmatch(rf"GET {re.escape(url)} 200 OK in \d+ milliseconds", m) for m in lines), lines
    assert [line for line in r.stderr.splitlines() if not HEADER.match(line)] == quiet.stderr.splitlines()
    r = kl("--v", "6", "get", "pods", "absent", ok=False)
    assert any(re.fullmatch(rf"GET {re.escape(url)}/absent 404 Not Found in \d+ milliseconds", m)
               for m in messages(r.stderr)), r.stderr
    assert r.stderr.rstrip().endswith('Error from server (NotFound): pods "absent" not found')


def test_v7_adds_request_headers_with_the_token_masked(apiserver, ns, tmp_path):
    kl = KubectlLite(write_kubeconfig(tmp_path / "kubeconfig", apiserver, ns, token="s3cret"),
                     str(tmp_path), ns)
    r = kl("-v", "7", "get", "pods")
    lines = messages(r.stderr)
    url = f"{apiserver.url}/api/v1/namespaces/{ns}/pods"
    i = lines.index(f"GET {url}")
    assert lines[i + 1] == "Request Headers:"
    headers = []
    for line in lines[i + 2:]:
        if not line.startswith("    "):
            break
        headers.append(line.strip())
    assert "Authorization: Bearer <masked>" in headers
    assert "s3cret" not in r.stderr
    assert any(h.startswith("Accept: application/json;as=Table;v=v1;g=meta.k8s.io") for h in headers), headers
    assert any(h.startswith("User-Agent: kubectl-lite/") for h in headers)
    assert re.fullmatch(r"Response Status: 200 OK in \d+ milliseconds", lines[i + 2 + len(headers)])
    assert "Response Headers:" not in lines


def test_v8_adds_response_headers_and_truncated_bodies(kl, http, ns):
    value = "x" * 3000
    http.post(f"/api/v1/namespaces/{ns}/configmaps",
              json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
                    "data": {"k": value}}).raise_for_status()
    r = kl("-v=8", "get", "configmap", "big", "-o", "json")
    lines = messages(r.stderr)
    assert "Response Headers:" in lines
    assert "    Content-Type: application/json" in lines
    body = next(m for m in lines if m.startswith('"Response Body" body='))
    assert re.search(r' \[truncated \d+ chars\]"$', body), body[-80:]
    assert len(body) < 1200
    assert value in r.stdout  # the output itself is whole
