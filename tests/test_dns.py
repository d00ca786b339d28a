"""The cluster DNS (`minik8s dns`) as a real process against a real API server, queried
with dnspython: the cluster zone as CoreDNS's kubernetes plugin answers it, and
forwarding to a real (small, dnspython-built) authoritative upstream on loopback."""
import socket
import struct
import threading
import uuid

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from tests.procs import Component, free_port, wait_for

DOMAIN = "cluster.local"


class Upstream:
    """An authoritative server for `example.test.` on UDP and TCP, counting queries.

    `example.test. A` is 192.0.2.1 (TTL 300), `short.example.test. A` 192.0.2.2 (TTL 1);
    `big.example.test. TXT` is too large for UDP, so over UDP it answers with TC set and
    nothing in it; `silent.example.test.` is never answered; anything else: NXDOMAIN."""

    def __init__(self):
        self.port = free_port()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp = socket.socket()
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen()
        self.queries: list[tuple[str, str]] = []  # (transport, name)
        self._stop = False
        for fn in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=fn, daemon=True).start()

    def count(self, name, transport=None):
        return sum(1 for t, n in self.queries if n == name and transport in (None, t))

    def answer(self, q: dns.message.Message, *, udp: bool) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        name = q.question[0].name.to_text()
        if name == "example.test." and q.question[0].rdtype == dns.rdatatype.A:
            r.answer = [dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.1")]
        elif name == "short.example.test.":
            r.answer = [dns.rrset.from_text(name, 1, "IN", "A", "192.0.2.2")]
        elif name == "big.example.test.":
            if udp:
                r.flags |= dns.flags.TC
            else:
                r.answer = [dns.rrset.from_text_list(name, 300, "IN", "TXT",
                                                     [f'"{i:03d}-{"x" * 60}"' for i in range(15)])]
        else:
            r.set_rcode(dns.rcode.NXDOMAIN)
            r.authority = [dns.rrset.from_text("example.test.", 300, "IN", "SOA",
                                               "ns.example.test. h.example.test. 1 2 3 4 60")]
        return r

    def _serve_udp(self):
        while not self._stop:
            try:
                data, addr = self.udp.recvfrom(65535)
            except OSError:
                return
            q = dns.message.from_wire(data)
            self.queries.append(("udp", q.question[0].name.to_text()))
            if q.question[0].name.to_text() == "silent.example.test.":
                continue  # an upstream that never answers
            self.udp.sendto(self.answer(q, udp=True).to_wire(), addr)

    def _serve_tcp(self):
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                q, _ = dns.query.receive_tcp(conn)
                self.queries.append(("tcp", q.question[0].name.to_text()))
                dns.query.send_tcp(conn, self.answer(q, udp=False))

    def close(self):
        self._stop = True
        self.udp.close()
        self.tcp.close()


@pytest.fixture(scope="module")
def upstream():
    u = Upstream()
    yield u
    u.close()


@pytest.fixture(scope="module")
def dns_server(kubeconfig, upstream):
    port, metrics_port = free_port(), free_port()
    c = Component("dns", "--kubeconfig", kubeconfig, "--bind-address", "127.0.0.1", "--port", str(port),
                  "--upstream", f"127.0.0.1:{upstream.port}", "--metrics-port", str(metrics_port)).start()

    def up():
        r = dns.query.udp(dns.message.make_query(f"dns-version.{DOMAIN}", "TXT"), "127.0.0.1", port=port,
                          timeout=0.5)
        return r.answer
    try:
        wait_for(lambda: c.alive() and up(), what=f"dns server: {c.log()}")
    except TimeoutError:
        c.stop()
        raise
    c.port, c.metrics_port = port, metrics_port
    yield c
    c.stop()


def ask(server, name, rdtype="A", *, tcp=False, timeout=3):
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=server.port, timeout=timeout)
    return dns.query.udp(q, "127.0.0.1", port=server.port, timeout=timeout)


def values(resp, rdtype):
    return sorted(rd.to_text() for rr in resp.answer if rr.rdtype == dns.rdatatype.from_text(rdtype)
                  for rd in rr)


def path(ns, kind, name=""):
    base = "/apis/discovery.k8s.io/v1" if kind == "endpointslices" else "/api/v1"
    return f"{base}/namespaces/{ns}/{kind}" + (f"/{name}" if name else "")


def create(http, ns, kind, obj):
    r = http.post(path(ns, kind), json=obj)
    assert r.status_code == 201, r.text
    return r.json()


def service(name, *, cluster_ip, ports):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"clusterIP": cluster_ip, "ports": ports}}


def endpointslice(service, endpoints, ports, *, name=None):
    """A slice of `service`'s, as the EndpointSlice controller writes one."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name or f"{service}-x1", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports}


def ep(ip, *, ready=True, **more):
    return {"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": False}, **more}


def fqdn(*labels):
    return ".".join(labels) + f".{DOMAIN}."


def soa_in_authority(resp):
    return [rr for rr in resp.authority if rr.rdtype == dns.rdatatype.SOA]


def test_service_a_record_is_its_cluster_ip(dns_server, http, ns):
    create(http, ns, "services", service("web", cluster_ip="10.96.7.7",
                                         ports=[{"name": "http", "port": 80, "protocol": "TCP"}]))
    name = fqdn("web", ns, "svc")
    r = wait_for(lambda: (x := ask(dns_server, name)).answer and x, what="A record")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert values(r, "A") == ["10.96.7.7"]
    assert r.answer[0].ttl == 5
    assert values(ask(dns_server, name, tcp=True), "A") == ["10.96.7.7"]  # TCP answers too
    # PTR for the clusterIP
    assert values(ask(dns_server, "7.7.96.10.in-addr.arpa.", "PTR"), "PTR") == [name]


def test_srv_for_named_ports(dns_server, http, ns):
    create(http, ns, "services", service("api", cluster_ip="10.96.8.8", ports=[
        {"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]))
    svc = fqdn("api", ns, "svc")
    r = wait_for(lambda: (x := ask(dns_server, f"_http._tcp.{svc}", "SRV")).answer and x, what="SRV")
    assert values(r, "SRV") == [f"0 100 80 {svc}"]
    assert [(rr.name.to_text(), rd.to_text()) for rr in r.additional for rd in rr] == [(svc, "10.96.8.8")]
    assert values(ask(dns_server, f"_dns._udp.{svc}", "SRV"), "SRV") == [f"0 100 53 {svc}"]
    assert ask(dns_server, f"_http._udp.{svc}", "SRV").rcode() == dns.rcode.NXDOMAIN


def test_headless_service_follows_its_endpoints(dns_server, http, ns):
    create(http, ns, "services", service("db", cluster_ip="None",
                                         ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    create(http, ns, "endpointslices", endpointslice("db", [ep("10.244.1.5", hostname="db-0")],
                                                      [{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    name = fqdn("db", ns, "svc")
    wait_for(lambda: values(ask(dns_server, name), "A") == ["10.244.1.5"], what="headless A")
    assert values(ask(dns_server, fqdn("db-0", "db", ns, "svc")), "A") == ["10.244.1.5"]
    r = ask(dns_server, f"_pg._tcp.{name}", "SRV")
    assert values(r, "SRV") == [f"0 100 5432 {fqdn('db-0', 'db', ns, 'svc')}"]
    assert values(ask(dns_server, "5.1.244.10.in-addr.arpa.", "PTR"), "PTR") == [fqdn("db-0", "db", ns, "svc")]

    # an endpoint added (in a second slice), then the first not ready: the answers follow
    create(http, ns, "endpointslices", endpointslice("db", [ep("10.244.2.6")],
                                                      [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                                                      name="db-x2"))
    wait_for(lambda: values(ask(dns_server, name), "A") == ["10.244.1.5", "10.244.2.6"], what="added")
    srv = values(ask(dns_server, f"_pg._tcp.{name}", "SRV"), "SRV")
    assert srv == [f"0 50 5432 {fqdn('10-244-2-6', 'db', ns, 'svc')}", f"0 50 5432 {fqdn('db-0', 'db', ns, 'svc')}"]
    first = http.get(path(ns, "endpointslices", "db-x1")).json()
    first["endpoints"][0]["conditions"]["ready"] = False  # terminating or not ready: not answered
    assert http.put(path(ns, "endpointslices", "db-x1"), json=first).status_code == 200
    wait_for(lambda: values(ask(dns_server, name), "A") == ["10.244.2.6"], what="not ready")
    assert ask(dns_server, fqdn("db-0", "db", ns, "svc")).rcode() == dns.rcode.NXDOMAIN
    assert ask(dns_server, "5.1.244.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.NXDOMAIN
    # no ready endpoint left: the name is gone (NXDOMAIN, as CoreDNS answers a headless Service)
    assert http.delete(path(ns, "endpointslices", "db-x2")).status_code == 200
    wait_for(lambda: ask(dns_server, name).rcode() == dns.rcode.NXDOMAIN, what="no endpoints")


def test_pod_names_are_read_from_the_name(dns_server):
    assert values(ask(dns_server, fqdn("10-244-3-4", "anything", "pod")), "A") == ["10.244.3.4"]
    assert ask(dns_server, fqdn("not-an-ip", "default", "pod")).rcode() == dns.rcode.NXDOMAIN


def test_nxdomain_and_nodata_carry_the_soa(dns_server, http, ns):
    create(http, ns, "services", service("web", cluster_ip="10.96.9.9", ports=[{"port": 80}]))
    name = fqdn("web", ns, "svc")
    wait_for(lambda: ask(dns_server, name).answer, what="A record")
    nodata = ask(dns_server, name, "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []
    assert soa_in_authority(nodata)[0].name.to_text() == f"{DOMAIN}."
    assert soa_in_authority(nodata)[0][0].mname.to_text() == f"ns.dns.{DOMAIN}."
    missing = ask(dns_server, fqdn("nope-" + uuid.uuid4().hex[:6], ns, "svc"))
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.answer == [] and soa_in_authority(missing)
    assert ask(dns_server, fqdn(ns, "svc")).rcode() == dns.rcode.NOERROR  # the namespace has a Service
    assert ask(dns_server, fqdn("a", "b", "c", "d", "e")).rcode() == dns.rcode.NXDOMAIN
    assert values(ask(dns_server, f"dns-version.{DOMAIN}.", "TXT"), "TXT") == ['"1.1.0"']


def test_malformed_packets_get_formerr_and_the_server_lives_on(dns_server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        # a header that promises one question, followed by a name that runs off the end
        s.sendto(struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x3fabc", ("127.0.0.1", dns_server.port))
        data, _ = s.recvfrom(512)
    qid, flags = struct.unpack("!HH", data[:4])
    assert qid == 0xBEEF and flags & 0x8000 and flags & 0xF == dns.rcode.FORMERR
    # as miekg/dns (CoreDNS's server) accepts messages: no question is FORMERR, an opcode
    # other than QUERY is NOTIMP
    for header, rcode in ((struct.pack("!HHHHHH", 0x0101, 0x0100, 0, 0, 0, 0), dns.rcode.FORMERR),
                          (struct.pack("!HHHHHH", 0x0102, 0x1100, 0, 0, 0, 0), dns.rcode.NOTIMP)):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(header, ("127.0.0.1", dns_server.port))
            data, _ = s.recvfrom(512)
        assert data[:2] == header[:2] and struct.unpack("!H", data[2:4])[0] & 0xF == rcode
    with socket.create_connection(("127.0.0.1", dns_server.port), timeout=3) as c:
        c.sendall(struct.pack("!H", 5) + b"\x00\x01\x02\x03\x04")  # shorter than a header: dropped
        c.sendall(b"")
    assert dns_server.alive()
    assert values(ask(dns_server, fqdn("10-0-0-1", "x", "pod")), "A") == ["10.0.0.1"]


def test_other_names_are_forwarded_and_cached(dns_server, upstream):
    r = ask(dns_server, "example.test.")
    assert values(r, "A") == ["192.0.2.1"] and r.flags & dns.flags.AA  # the upstream's answer, as it was
    assert upstream.count("example.test.") == 1
    again = ask(dns_server, "example.test.")
    assert values(again, "A") == ["192.0.2.1"] and again.answer[0].ttl <= 300
    assert not again.flags & dns.flags.AA  # a cached answer is not authoritative
    assert upstream.count("example.test.") == 1  # the second came from the cache
    nx = ask(dns_server, "nothing.example.test.")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    ask(dns_server, "nothing.example.test.")
    assert upstream.count("nothing.example.test.") == 1  # negative answers are cached too


def test_cached_answers_expire_with_their_ttl(dns_server, upstream):
    assert values(ask(dns_server, "short.example.test."), "A") == ["192.0.2.2"]
    assert upstream.count("short.example.test.") == 1
    # a TTL of 1 s is cached for CoreDNS's minimum, 5 s; then the next query goes upstream again
    wait_for(lambda: ask(dns_server, "short.example.test.").answer and upstream.count("short.example.test.") == 2,
             timeout=30, interval=0.2, what="the cached answer to expire")


def test_an_upstream_that_does_not_answer_is_servfail_and_not_cached(dns_server, upstream):
    # the server gives up on the upstream after 2 s; the client waits longer than that
    r = ask(dns_server, "silent.example.test.", timeout=20)
    assert r.rcode() == dns.rcode.SERVFAIL
    assert ask(dns_server, "silent.example.test.", timeout=20).rcode() == dns.rcode.SERVFAIL
    assert upstream.count("silent.example.test.") == 2


def test_truncated_upstream_answer_is_retried_over_tcp(dns_server, upstream):
    udp = ask(dns_server, "big.example.test.", "TXT")
    # the upstream said TC over UDP, so we asked again over TCP
    assert upstream.count("big.example.test.", "udp") == 1 and upstream.count("big.example.test.", "tcp") == 1
    # the whole answer is larger than the client's 512 bytes: it gets TC from us, then asks over TCP
    assert udp.flags & dns.flags.TC
    r = ask(dns_server, "big.example.test.", "TXT", tcp=True)
    assert len(values(r, "TXT")) == 15 and not r.flags & dns.flags.TC
    assert upstream.count("big.example.test.") == 2  # the TCP query was answered from the cache


def test_a_tcp_query_is_forwarded_over_tcp(dns_server, upstream):
    assert ask(dns_server, "bytcp.example.test.", tcp=True).rcode() == dns.rcode.NXDOMAIN
    assert upstream.count("bytcp.example.test.", "tcp") == 1 and upstream.count("bytcp.example.test.", "udp") == 0


def test_external_name_is_a_cname(dns_server, http, ns):
    create(http, ns, "services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
                                  "spec": {"type": "ExternalName", "externalName": "example.test"}})
    name = fqdn("ext", ns, "svc")
    r = wait_for(lambda: (x := ask(dns_server, name, "CNAME")).answer and x, what="CNAME")
    assert values(r, "CNAME") == ["example.test."]


def test_service_names_are_case_insensitive(dns_server, http, ns):
    create(http, ns, "services", service("mixed", cluster_ip="10.96.10.10", ports=[{"port": 80}]))
    name = fqdn("MIXED", ns.upper(), "SVC").replace(DOMAIN, DOMAIN.upper())
    r = wait_for(lambda: (x := ask(dns_server, name)).answer and x, what="A record")
    assert values(r, "A") == ["10.96.10.10"] and r.answer[0].name.to_text() == name


def test_metrics_and_readiness(dns_server):
    import httpx
    ask(dns_server, fqdn("10-0-0-9", "x", "pod"))
    base = f"http://127.0.0.1:{dns_server.metrics_port}"
    assert httpx.get(f"{base}/readyz?verbose").status_code == 200
    text = httpx.get(f"{base}/metrics").text
    line = next(ln for ln in text.splitlines()
                if ln.startswith('coredns_dns_responses_total{plugin="kubernetes",rcode="NOERROR"}'))
    assert float(line.split()[-1]) >= 1
    assert 'coredns_dns_requests_total{proto="udp",type="A"}' in text


@pytest.mark.parametrize("args, code, message", [
    (["--kubeconfig", "/nonexistent/config"], 1, "error: kubeconfig /nonexistent/config:"),
    (["--kubeconfig", "x", "--upstream", "not-an-ip"], 2, "invalid upstream 'not-an-ip'"),
    (["--kubeconfig", "x", "--port", "70000"], 2, "invalid port '70000'"),
    (["--kubeconfig", "x", "--ttl", "4000"], 2, "invalid ttl '4000'"),
])
def test_bad_flags_are_one_clear_line(args, code, message):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "cluster.cli", "dns", *args], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == code and message in p.stderr and "Traceback" not in p.stderr


def test_reverse_names_the_cluster_does_not_know_fall_through_upstream(dns_server, upstream):
    r = ask(dns_server, "99.99.99.10.in-addr.arpa.", "PTR")
    assert r.rcode() == dns.rcode.NXDOMAIN  # the upstream's answer (fallthrough in-addr.arpa)
    assert upstream.count("99.99.99.10.in-addr.arpa.") == 1


def test_a_large_cluster_answer_is_truncated_over_udp_and_whole_over_tcp(dns_server, http, ns):
    create(http, ns, "services", service("many", cluster_ip="None", ports=[{"port": 80}]))
    create(http, ns, "endpointslices", endpointslice("many", [ep(f"10.244.9.{i}") for i in range(1, 61)],
                                                      [{"port": 80, "protocol": "TCP"}]))
    name = fqdn("many", ns, "svc")
    whole = wait_for(lambda: len(values(x := ask(dns_server, name, tcp=True), "A")) == 60 and x, what="60 A")
    assert not whole.flags & dns.flags.TC
    udp = ask(dns_server, name)
    assert udp.flags & dns.flags.TC and udp.answer == []


def zone_with(*objs, domain="cluster.local", ttl=5):
    from client.informer import Indexer, key_of
    from clusterdns.kubernetes import ENDPOINT_INDEXERS, INDEXERS, Zone
    services, eps = Indexer(), Indexer()
    services.add_indexers(INDEXERS)
    eps.add_indexers(ENDPOINT_INDEXERS)
    for o in objs:
        (services if o["kind"] == "Service" else eps).set(key_of(o), o)
    return Zone(services, eps, domain=domain, ttl=ttl)


def with_ns(obj, ns="prod"):
    obj["metadata"]["namespace"] = ns
    return obj


def test_zone_follows_the_configured_domain_and_ttl():
    z = zone_with(with_ns(service("web", cluster_ip="10.96.0.20", ports=[{"name": "http", "port": 80}])),
                  domain="corp.internal", ttl=30)
    r = z.answer(dns.message.make_query("web.prod.svc.corp.internal.", "A"))
    assert values(r, "A") == ["10.96.0.20"] and r.answer[0].ttl == 30
    assert z.answer(dns.message.make_query("web.prod.svc.cluster.local.", "A")) is None  # not ours: forwarded
    nx = z.answer(dns.message.make_query("nope.prod.svc.corp.internal.", "A"))
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.authority[0].name.to_text() == "corp.internal." and nx.authority[0][0].minimum == 30
    srv = z.answer(dns.message.make_query("web.prod.svc.corp.internal.", "SRV"))  # every port, on the bare name
    assert values(srv, "SRV") == ["0 100 80 web.prod.svc.corp.internal."]


def test_zone_reads_every_slice_of_a_service_as_coredns_does():
    def slice_(name, service, endpoints, ports, address_type="IPv4"):
        return with_ns({**endpointslice(service, endpoints, ports, name=name), "addressType": address_type})
    unset = {"addresses": ["10.244.0.4"]}  # no conditions: ready, as CoreDNS reads it
    z = zone_with(
        with_ns(service("db", cluster_ip="None", ports=[{"name": "pg", "port": 5432}])),
        slice_("db-a", "db", [ep("10.244.0.1"), ep("10.244.0.2", ready=False), unset],
               [{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        # pods without the named port are in a slice of their own, without that port
        slice_("db-b", "db", [ep("10.244.0.3")], []),
        slice_("db-c", "db", [ep("db.example.com")], [], address_type="FQDN"),
        slice_("other-a", "other", [ep("10.244.0.9")], []))
    a = z.answer(dns.message.make_query("db.prod.svc.cluster.local.", "A"))
    assert values(a, "A") == ["10.244.0.1", "10.244.0.3", "10.244.0.4"]
    srv = z.answer(dns.message.make_query("_pg._tcp.db.prod.svc.cluster.local.", "SRV"))
    assert values(srv, "SRV") == ["0 50 5432 10-244-0-1.db.prod.svc.cluster.local.",
                                  "0 50 5432 10-244-0-4.db.prod.svc.cluster.local."]
    ptr = z.answer(dns.message.make_query("3.0.244.10.in-addr.arpa.", "PTR"))
    assert values(ptr, "PTR") == ["10-244-0-3.db.prod.svc.cluster.local."]
    assert z.answer(dns.message.make_query("2.0.244.10.in-addr.arpa.", "PTR")) is None  # not ready: not ours


def test_zone_pod_names_ipv6_and_nonsense():
    z = zone_with()
    r = z.answer(dns.message.make_query("fd00--5.x.pod.cluster.local.", "AAAA"))
    assert values(r, "AAAA") == ["fd00::5"]
    assert z.answer(dns.message.make_query("10-0-0-300.x.pod.cluster.local.", "A")).rcode() == dns.rcode.NXDOMAIN
    assert z.answer(dns.message.make_query("1-2-3-4.pod.cluster.local.", "A")).rcode() == dns.rcode.NXDOMAIN


def test_without_an_api_server_it_still_forwards_and_says_servfail_for_cluster_names(upstream, tmp_path):
    dead = free_port()  # nothing listens here
    kc = tmp_path / "config"
    kc.write_text("apiVersion: v1\nkind: Config\n"
                  f"clusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{dead}\n"
                  "users:\n- name: u\n  user: {}\n"
                  "contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n"
                  "current-context: c\n")
    port = free_port()
    c = Component("dns", "--kubeconfig", str(kc), "--bind-address", "127.0.0.1", "--port", str(port),
                  "--upstream", f"127.0.0.1:{upstream.port}", "--metrics-port", "0").start()
    c.port = port
    try:
        # it starts serving after its startup wait for the caches (5 s)
        r = wait_for(lambda: ask(c, "example.test.", timeout=0.5), timeout=30, what=f"dns: {c.log()}")
        assert values(r, "A") == ["192.0.2.1"]
        assert ask(c, fqdn("web", "default", "svc")).rcode() == dns.rcode.SERVFAIL
        assert values(ask(c, fqdn("10-1-2-3", "default", "pod")), "A") == ["10.1.2.3"]  # read from the name
    finally:
        c.stop()
