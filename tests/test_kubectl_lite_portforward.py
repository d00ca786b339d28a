"""kubectl-lite port-forward's pure parts: port specs, addresses, and how a Service's
ports become the container ports they target (kubectl's translateServicePortToTargetPort)."""
from __future__ import annotations

import pytest

from kubectl_lite.common import CLIError
from kubectl_lite.portforward import _addresses, _translate, parse_ports


@pytest.mark.parametrize("specs,want", [
    (["8080"], [(8080, 8080)]),
    (["8080:80"], [(8080, 80)]),
    ([":80"], [(0, 80)]),
    (["0:80", "5000:6000"], [(0, 80), (5000, 6000)]),
])
def test_port_specs(specs, want):
    assert parse_ports(specs) == want


@pytest.mark.parametrize("spec,message", [
    ("x:80", "Error parsing local port 'x'"),
    ("80:y", "Error parsing remote port 'y'"),
    ("70000:80", "Error parsing local port '70000': port out of range"),
    ("80:0", "Remote port must be > 0 and < 65536: 0"),
])
def test_bad_port_specs(spec, message):
    with pytest.raises(CLIError) as err:
        parse_ports([spec])
    assert err.value.message.startswith(message)


def test_addresses():
    assert _addresses(None) == ["127.0.0.1", "::1"]
    assert _addresses(["localhost,10.0.0.1"]) == ["127.0.0.1", "::1", "10.0.0.1"]
    with pytest.raises(CLIError, match="example.com is not a valid IP"):
        _addresses(["example.com"])


SVC = {"metadata": {"name": "web"}, "spec": {"ports": [
    {"port": 80, "targetPort": "http"}, {"port": 443, "targetPort": 8443}, {"port": 53}]}}
POD = {"metadata": {"name": "web-1"}, "spec": {"containers": [
    {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]}}


@pytest.mark.parametrize("spec,want", [
    ("80", (80, 8080)),  # a named targetPort is the container port of that name; local stays 80
    (":80", (0, 8080)),
    ("9000:443", (9000, 8443)),
    ("53", (53, 53)),  # no targetPort: the port itself
])
def test_service_ports_become_target_ports(spec, want):
    assert _translate(SVC, POD, parse_ports([spec]), [spec]) == [want]


def test_service_port_errors():
    with pytest.raises(CLIError, match="Service web does not have a service port 81"):
        _translate(SVC, POD, parse_ports(["81"]), ["81"])
    other = {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80, "targetPort": "metrics"}]}}
    with pytest.raises(CLIError, match="Pod 'web-1' does not have a named port 'metrics'"):
        _translate(other, POD, parse_ports(["80"]), ["80"])
