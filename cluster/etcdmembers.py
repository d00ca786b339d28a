"""etcd cluster membership: list, add and remove members, as kubeadm's etcd client does.

We speak etcd's own gRPC Cluster service (MemberList, MemberAdd, MemberRemove) through
the stubs aetcd ships, on a grpc.aio channel with the client certificate kubeadm uses for
this (apiserver-etcd-client or etcd/healthcheck-client, both of etcd/ca). aetcd's own
Client has no TLS client certificates for these calls' channel in the shape we need, and
etcd 3.4's JSON gateway would be a second, less typed path to the same service; the
stubs are the API etcdctl itself uses.

Guarantees
- Every call goes to the first endpoint that answers; a call that fails everywhere
  raises `EtcdMemberError` with one line naming the cause. Nothing is retried here
  beyond trying the next endpoint: MemberAdd is not idempotent (a second add of the
  same peer URL fails with "Peer URLs already exists"), so the caller decides.
- `add_member` returns the new member and the members after the add; the new member
  has no name until it starts, which is how `initial_cluster` recognises it, as kubeadm
  does.
- `remove_member_by_peer_url` is idempotent: no member with that URL is not an error.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar
from urllib.parse import urlsplit

import grpc
from aetcd import rpc

T = TypeVar("T")
TIMEOUT = 10.0
RECONFIGURE_RETRY_SECONDS = 30.0


class EtcdMemberError(Exception):
    """A one-line reason a membership call failed."""


@dataclass(frozen=True)
class TLS:
    """The CA that verifies etcd and the client certificate presented to it."""
    ca_file: str
    cert_file: str
    key_file: str

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str) -> bytes:
            with open(path, "rb") as f:
                return f.read()
        return grpc.ssl_channel_credentials(read(self.ca_file), read(self.key_file), read(self.cert_file))

    @classmethod
    def from_pki(cls, pki_dir: str) -> TLS:
        """kubeadm's choice for talking to etcd from a control-plane host."""
        return cls(f"{pki_dir}/etcd/ca.crt", f"{pki_dir}/apiserver-etcd-client.crt",
                   f"{pki_dir}/apiserver-etcd-client.key")


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...] = field(default=())
    is_learner: bool = False


def _member(m: rpc.Member) -> Member:
    return Member(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs), m.isLearner)


async def _call(endpoints: list[str], tls: TLS | None,
                fn: Callable[[rpc.ClusterStub], Awaitable[T]]) -> T:
    if not endpoints:
        raise EtcdMemberError("no etcd endpoint given")
    last = ""
    for url in endpoints:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise EtcdMemberError(f"etcd endpoint {url!r} is not http(s)://host:port")
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        target = f"{host}:{u.port or 2379}"
        if u.scheme == "https":
            channel = grpc.aio.secure_channel(target, tls.credentials() if tls else grpc.ssl_channel_credentials())
        else:
            channel = grpc.aio.insecure_channel(target)
        try:
            return await fn(rpc.ClusterStub(channel))
        except grpc.aio.AioRpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise EtcdMemberError(f"etcd at {url}: {e.details()}") from None
            last = f"etcd at {url}: {e.details() or e.code().name}"
        finally:
            await channel.close()
    raise EtcdMemberError(last)


async def list_members(endpoints: list[str], tls: TLS | None = None) -> list[Member]:
    async def fn(stub: rpc.ClusterStub) -> list[Member]:
        resp = await stub.MemberList(rpc.MemberListRequest(), timeout=TIMEOUT)
        return [_member(m) for m in resp.members]
    return await _call(endpoints, tls, fn)


async def add_member(endpoints: list[str], peer_url: str, tls: TLS | None = None, *,
                     learner: bool = False) -> tuple[Member, list[Member]]:
    """Add a member that will listen for peers on `peer_url`; (it, all members).

    A voting member added to a cluster of one takes its quorum away (2 of 2) until it
    has started. A learner (kubeadm's EtcdLearnerMode, its default since 1.29) counts
    for no quorum: it catches up, then `promote_member` makes it vote. A join that fails
    before then leaves the cluster as healthy as it was, and the learner removable."""
    async def fn(stub: rpc.ClusterStub) -> tuple[Member, list[Member]]:
        resp = await stub.MemberAdd(rpc.MemberAddRequest(peerURLs=[peer_url], isLearner=learner),
                                    timeout=TIMEOUT)
        return _member(resp.member), [_member(m) for m in resp.members]
    return await _reconfigure(endpoints, tls, fn)


async def _reconfigure(endpoints: list[str], tls: TLS | None,
                       fn: Callable[[rpc.ClusterStub], Awaitable[T]]) -> T:
    # etcd's strict reconfiguration check refuses a change that a member connected for
    # less than 5 s (its HealthInterval) would be needed for, "unhealthy cluster", or
    # while too few members have started: both pass within seconds, so retry them with
    # back-off as kubeadm does. (A member that never started counts as down, and may be
    # removed at once: join's rollback does not wait.)
    loop = asyncio.get_running_loop()
    delay, deadline = 0.2, loop.time() + RECONFIGURE_RETRY_SECONDS
    while True:
        try:
            return await _call(endpoints, tls, fn)
        except EtcdMemberError as e:
            transient = "unhealthy cluster" in str(e) or "not enough started members" in str(e)
            if not transient or loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def promote_member(endpoints: list[str], member_id: int, tls: TLS | None = None, *,
                         timeout: float = 60.0) -> list[Member]:
    """Make a learner vote, once it has caught up with the leader (etcd refuses before:
    "can only promote a learner member which is in sync with leader"; retried until
    `timeout`)."""
    async def fn(stub: rpc.ClusterStub) -> list[Member]:
        resp = await stub.MemberPromote(rpc.MemberPromoteRequest(ID=member_id), timeout=TIMEOUT)
        return [_member(m) for m in resp.members]
    loop = asyncio.get_running_loop()
    delay, deadline = 0.2, loop.time() + timeout
    while True:
        try:
            return await _reconfigure(endpoints, tls, fn)
        except EtcdMemberError as e:
            if "in sync with leader" not in str(e) or loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def remove_member(endpoints: list[str], member_id: int, tls: TLS | None = None) -> list[Member]:
    async def fn(stub: rpc.ClusterStub) -> list[Member]:
        resp = await stub.MemberRemove(rpc.MemberRemoveRequest(ID=member_id), timeout=TIMEOUT)
        return [_member(m) for m in resp.members]
    return await _reconfigure(endpoints, tls, fn)


async def remove_member_by_peer_url(endpoints: list[str], peer_url: str, tls: TLS | None = None) -> Member | None:
    """Remove the member that peers on `peer_url` (kubeadm reset's "leave"); the member
    removed, or None when there was none."""
    for m in await list_members(endpoints, tls):
        if peer_url in m.peer_urls:
            await remove_member(endpoints, m.id, tls)
            return m
    return None


def initial_cluster(members: list[Member], name: str, peer_url: str) -> str:
    """etcd's --initial-cluster for a member `name` joining `members` (as MemberAdd
    returned them): the named members, plus the joining one under its own name."""
    parts = []
    for m in members:
        if peer_url in m.peer_urls:
            parts.append(f"{name}={peer_url}")
        elif m.name:
            parts.extend(f"{m.name}={u}" for u in m.peer_urls)
    return ",".join(parts)


def run(coro: Awaitable[T]) -> T:
    """The sync surface for the CLI."""
    async def main() -> T:
        return await coro
    return asyncio.run(main())


def member_argv(etcd: str, *, name: str, data_dir: str, ip: str, pki_dir: str, initial_cluster: str,
                state: str = "existing", client_port: int = 2379, peer_port: int = 2380,
                fast: bool = False) -> list[str]:
    """etcd's command line for a TLS member on `ip`, kubeadm's flags: clients and peers
    both over TLS with certificates of etcd/ca, clients also on loopback. `fast` gives
    the timings tests use on one machine."""
    e = f"{pki_dir}/etcd"
    host = f"[{ip}]" if ":" in ip else ip
    client = f"https://{host}:{client_port}"
    peer = f"https://{host}:{peer_port}"
    listen = client if ip in ("127.0.0.1", "::1") else f"https://127.0.0.1:{client_port},{client}"
    argv = [etcd, "--name", name, "--data-dir", data_dir,
            "--listen-client-urls", listen, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
            "--cert-file", f"{e}/server.crt", "--key-file", f"{e}/server.key",
            "--client-cert-auth", "--trusted-ca-file", f"{e}/ca.crt",
            "--peer-cert-file", f"{e}/peer.crt", "--peer-key-file", f"{e}/peer.key",
            "--peer-client-cert-auth", "--peer-trusted-ca-file", f"{e}/ca.crt",
            "--snapshot-count", "10000"]
    if fast:
        argv += ["--heartbeat-interval", "10", "--election-timeout", "100", "--unsafe-no-fsync"]
    return argv
