"""The release walk-throughs' kubectl-lite steps (README, "Release strategies") on the
manifests of manifests/releases/, against the session's real API server: every verb the
walk-through uses exists and does what the text says to the objects. (The traffic they
move is tests/test_cluster_services.py's, on a real cluster.)"""
from __future__ import annotations

import json
import os

import pytest

from tests.test_kubectl_lite import ROOT, KubectlLite, write_kubeconfig

RELEASES = os.path.join(ROOT, "manifests", "releases")


@pytest.fixture
def kl(apiserver, ns, tmp_path):
    return KubectlLite(write_kubeconfig(tmp_path / "kubeconfig", apiserver, ns), ROOT, ns)


def test_blue_green_steps(kl):
    bg = os.path.join(RELEASES, "blue-green")
    kl("apply", "-f", f"{bg}/blue.yaml", "-f", f"{bg}/service.yaml")
    row = kl.out("get", "service", "checkout").splitlines()
    assert row[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert row[1].split()[1] == "LoadBalancer" and row[1].split()[3] == "<pending>", row
    assert "80:30081/TCP" in row[1]
    kl("apply", "-f", f"{bg}/green.yaml")
    assert kl.out("get", "deployments", "-l", "app=checkout", "-o", "name").split() == [
        "deployment.apps/checkout-blue", "deployment.apps/checkout-green"]
    kl("patch", "service", "checkout", "-p", '{"spec":{"selector":{"version":"green"}}}')
    selector = json.loads(kl.out("get", "service", "checkout", "-o", "jsonpath={.spec.selector}"))
    assert selector == {"app": "checkout", "version": "green"}
    kl("patch", "service", "checkout", "-p", '{"spec":{"selector":{"version":"blue"}}}')
    assert kl.out("get", "service", "checkout", "-o", "jsonpath={.spec.selector.version}") == "blue"
    kl("delete", "-f", bg)
    assert kl.out("get", "deployments,services", "-o", "name").strip() == ""


def test_canary_steps(kl):
    canary = os.path.join(RELEASES, "canary")
    kl("apply", "-f", canary)
    out = kl.out("get", "deployments", "-l", "app=catalog", "-o",
                 "jsonpath={range .items[*]}{.metadata.name}={.spec.replicas} {end}")
    assert out.split() == ["catalog-canary=1", "catalog-stable=9"]
    assert json.loads(kl.out("get", "service", "catalog", "-o", "jsonpath={.spec.selector}")) == {"app": "catalog"}
    kl("scale", "deployment", "catalog-canary", "--replicas=5")
    kl("scale", "deployment", "catalog-stable", "--replicas=5")
    out = kl.out("get", "deployments", "-l", "app=catalog", "-L", "track")
    assert out.splitlines()[0].split()[-1] == "TRACK", out
    assert {line.split()[0]: line.split()[-1] for line in out.splitlines()[1:]} == {
        "catalog-canary": "canary", "catalog-stable": "stable"}
    with open(os.path.join(canary, "stable.yaml")) as f:
        promoted = f.read().replace('value: "1"', 'value: "2"')
    kl("apply", "-f", "-", input=promoted)
    env = kl.out("get", "deployment", "catalog-stable", "-o",
                 "jsonpath={.spec.template.spec.containers[0].env[0].value} {.spec.replicas}")
    assert env == "2 9"
    kl("delete", "-f", os.path.join(canary, "canary.yaml"))
    assert kl.out("get", "deployments", "-o", "name").split() == ["deployment.apps/catalog-stable"]
