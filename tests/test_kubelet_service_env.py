"""Service environment variables (kubelet/envvars.py service_env, from_services) as the
kubelet's getServiceEnvVarMap and envvars.FromServices make them, and their place in a
container's environment (explicit env wins; $(...) may refer to them)."""
from __future__ import annotations

from kubelet import envvars


def svc(name: str, ns: str = "default", ip: str | None = "10.96.0.20", ports=None, **spec) -> dict:
    s = {"clusterIP": ip, "ports": ports if ports is not None else [{"port": 80, "protocol": "TCP"}], **spec}
    if ip is None:
        del s["clusterIP"]
    return {"metadata": {"name": name, "namespace": ns}, "spec": s}


def test_from_services_host_ports_and_docker_links():
    env = envvars.from_services([svc("my-web", ip="10.96.0.20", ports=[
        {"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}])])
    assert env == {
        "MY_WEB_SERVICE_HOST": "10.96.0.20", "MY_WEB_SERVICE_PORT": "80",
        "MY_WEB_SERVICE_PORT_HTTP": "80", "MY_WEB_SERVICE_PORT_DNS_UDP": "53",
        "MY_WEB_PORT": "tcp://10.96.0.20:80",
        "MY_WEB_PORT_80_TCP": "tcp://10.96.0.20:80", "MY_WEB_PORT_80_TCP_PROTO": "tcp",
        "MY_WEB_PORT_80_TCP_PORT": "80", "MY_WEB_PORT_80_TCP_ADDR": "10.96.0.20",
        "MY_WEB_PORT_53_UDP": "udp://10.96.0.20:53", "MY_WEB_PORT_53_UDP_PROTO": "udp",
        "MY_WEB_PORT_53_UDP_PORT": "53", "MY_WEB_PORT_53_UDP_ADDR": "10.96.0.20"}


def test_ipv6_cluster_ip_is_bracketed_in_urls():
    env = envvars.from_services([svc("v6", ip="fd00::10", ports=[{"port": 443}])])
    assert env["V6_PORT"] == "tcp://[fd00::10]:443" and env["V6_PORT_443_TCP_ADDR"] == "fd00::10"


SERVICES = [svc("kubernetes", ip="10.96.0.1", ports=[{"name": "https", "port": 443, "protocol": "TCP"}]),
            svc("web", ns="team", ip="10.96.0.30"),
            svc("headless", ns="team", ip="None"),
            svc("external", ns="team", ip=None, type="ExternalName", externalName="db.example"),
            svc("other", ns="elsewhere", ip="10.96.0.40")]


def test_namespace_services_and_the_master_service():
    env = envvars.service_env(SERVICES, "team", enable_service_links=True)
    prefixes = {k.split("_")[0] for k in env}
    assert prefixes == {"KUBERNETES", "WEB"}  # not headless, ExternalName or another namespace's
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["WEB_SERVICE_HOST"] == "10.96.0.30"


def test_enable_service_links_false_keeps_only_the_master_service():
    env = envvars.service_env(SERVICES, "team", enable_service_links=False)
    assert {k.split("_")[0] for k in env} == {"KUBERNETES"}


def test_a_namespace_service_named_kubernetes_wins_over_the_master_one():
    env = envvars.service_env([*SERVICES, svc("kubernetes", ns="team", ip="10.96.0.99")], "team",
                              enable_service_links=True, master_override={"KUBERNETES_SERVICE_HOST": "192.0.2.1"})
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.99"


def test_master_override_replaces_the_master_services_variables():
    override = envvars.kubernetes_service_env("192.0.2.1", 6443)
    env = envvars.service_env(SERVICES, "team", enable_service_links=True, master_override=override)
    assert {k: v for k, v in env.items() if k.startswith("KUBERNETES")} == override


def test_explicit_env_wins_and_may_refer_to_service_variables():
    services = envvars.service_env(SERVICES, "team", enable_service_links=True)
    c = {"name": "c", "env": [{"name": "WEB_SERVICE_PORT", "value": "8080"},
                              {"name": "URL", "value": "http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT)"}],
         "command": ["echo", "$(WEB_PORT)"]}
    pod = {"metadata": {"name": "p", "namespace": "team"}, "spec": {"containers": [c]}}
    env, command, _ = envvars.resolve(c, pod, get_object=lambda *a: None, pod_ip=None, host_ip=None,
                                      service_env=services)
    assert env["WEB_SERVICE_PORT"] == "8080"
    assert env["URL"] == "http://10.96.0.30:8080"
    assert env["WEB_SERVICE_HOST"] == "10.96.0.30"
    assert command == ["echo", "tcp://10.96.0.30:80"]
    assert list(env)[:2] == ["WEB_SERVICE_PORT", "URL"]  # the container's own come first
