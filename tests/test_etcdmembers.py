"""etcd membership through etcd's Cluster API (cluster.etcdmembers), on real TLS etcd
processes on loopback: one member, a second added and started with
--initial-cluster-state existing, both healthy, then removed again."""
from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile

import httpx
import pytest

from cluster import etcdmembers
from cluster.etcdmembers import EtcdMemberError, TLS
from cluster.host import free_port
from tests.procs import session_pki, wait_for


class Member:
    def __init__(self, name: str, pki: str):
        self.name, self.pki = name, pki
        self.dir = tempfile.mkdtemp(prefix=f"minik8s-etcdm-{name}-")
        self.client_port, self.peer_port = free_port(), free_port()
        self.client_url = f"https://127.0.0.1:{self.client_port}"
        self.peer_url = f"https://127.0.0.1:{self.peer_port}"
        self.proc: subprocess.Popen | None = None

    def start(self, initial_cluster: str, state: str) -> Member:
        argv = etcdmembers.member_argv(shutil.which("etcd") or "etcd", name=self.name,
                                       data_dir=os.path.join(self.dir, "data"), ip="127.0.0.1",
                                       pki_dir=self.pki, initial_cluster=initial_cluster, state=state,
                                       client_port=self.client_port, peer_port=self.peer_port, fast=True)
        self.log = open(os.path.join(self.dir, "etcd.log"), "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def healthy(self) -> bool:
        e = os.path.join(self.pki, "etcd")
        ctx = ssl.create_default_context(cafile=os.path.join(e, "ca.crt"))
        ctx.load_cert_chain(os.path.join(e, "healthcheck-client.crt"), os.path.join(e, "healthcheck-client.key"))
        r = httpx.get(self.client_url + "/health", timeout=2, verify=ctx)
        return r.status_code == 200 and r.json().get("health") == "true"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def first():
    m = Member("m1", session_pki())
    try:
        m.start(f"m1={m.peer_url}", "new")
        wait_for(m.healthy, what="first etcd member")
        yield m
    finally:
        m.stop()


def test_add_start_and_remove_a_member(first):
    pki = session_pki()
    tls = TLS.from_pki(pki)
    eps = [first.client_url]
    assert [m.name for m in etcdmembers.run(etcdmembers.list_members(eps, tls))] == ["m1"]

    second = Member("m2", pki)
    try:
        added, members = etcdmembers.run(etcdmembers.add_member(eps, second.peer_url, tls))
        assert added.peer_urls == (second.peer_url,) and added.name == ""
        cluster = etcdmembers.initial_cluster(members, "m2", second.peer_url)
        assert sorted(cluster.split(",")) == sorted([f"m1={first.peer_url}", f"m2={second.peer_url}"])
        second.start(cluster, "existing")
        wait_for(second.healthy, what="second etcd member")
        wait_for(first.healthy, what="first member with quorum of two")
        listed = etcdmembers.run(etcdmembers.list_members([second.client_url], tls))
        assert sorted(m.name for m in listed) == ["m1", "m2"]

        removed = etcdmembers.run(etcdmembers.remove_member_by_peer_url(eps, second.peer_url, tls))
        assert removed is not None and removed.id == added.id
        assert [m.name for m in etcdmembers.run(etcdmembers.list_members(eps, tls))] == ["m1"]
        # A removed member learns it and stops serving; the first one keeps going alone.
        wait_for(lambda: second.proc.poll() is not None or not second.healthy(), what="removed member to stop")
        assert first.healthy()
        # Leaving twice is not an error (reset may run again after a crash).
        assert etcdmembers.run(etcdmembers.remove_member_by_peer_url(eps, second.peer_url, tls)) is None
    finally:
        second.stop()


def test_a_learner_catches_up_then_votes(first):
    pki = session_pki()
    tls = TLS.from_pki(pki)
    eps = [first.client_url]
    second = Member("m2", pki)
    try:
        added, members = etcdmembers.run(etcdmembers.add_member(eps, second.peer_url, tls, learner=True))
        assert added.is_learner
        # A learner not started yet costs the cluster nothing: it keeps its quorum.
        assert first.healthy()
        second.start(etcdmembers.initial_cluster(members, "m2", second.peer_url), "existing")
        etcdmembers.run(etcdmembers.promote_member(eps, added.id, tls))
        listed = etcdmembers.run(etcdmembers.list_members(eps, tls))
        assert sorted((m.name, m.is_learner) for m in listed) == [("m1", False), ("m2", False)]
        wait_for(second.healthy, what="the promoted member")
    finally:
        second.stop()


def test_a_learner_that_never_started_is_removed_at_once(first):
    tls = TLS.from_pki(session_pki())
    eps = [first.client_url]
    peer = f"https://127.0.0.1:{free_port()}"
    added, _ = etcdmembers.run(etcdmembers.add_member(eps, peer, tls, learner=True))
    assert first.healthy()
    etcdmembers.run(etcdmembers.remove_member(eps, added.id, tls))
    assert [m.name for m in etcdmembers.run(etcdmembers.list_members(eps, tls))] == ["m1"]


def test_errors_are_one_line(first):
    tls = TLS.from_pki(session_pki())
    with pytest.raises(EtcdMemberError) as e:
        etcdmembers.run(etcdmembers.add_member([first.client_url], "not a url", tls))
    assert "\n" not in str(e.value) and str(e.value)
    with pytest.raises(EtcdMemberError) as e:
        etcdmembers.run(etcdmembers.list_members([f"https://127.0.0.1:{free_port()}"], tls))
    assert "\n" not in str(e.value)
    # The bad add changed nothing.
    assert len(etcdmembers.run(etcdmembers.list_members([first.client_url], tls))) == 1
