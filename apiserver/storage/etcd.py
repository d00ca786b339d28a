"""Revision-aware key-value storage over etcd v3: the only code that talks to etcd.

Guarantees
- Every value carries etcd's revisions: ``mod_revision`` is what the API calls
  ``resourceVersion``. ``create`` fails if the key exists, ``update`` and ``delete``
  are compare-and-swap on ``mod_revision``; a failed compare answers "not ok + the
  current value" instead of raising.
- ``list`` at a fixed revision reads one consistent snapshot, so ``limit`` + ``start_key``
  pages of one list never mix revisions. A compacted revision raises ``Compacted``.
- ``watch(prefix, rev)`` yields every change under ``prefix`` with revision >= ``rev``,
  in revision order, one batch per etcd response (a transaction's events are never
  split). A dropped connection is re-established from the last delivered revision + 1,
  so no event is lost or repeated; if that revision is compacted, ``Compacted`` is raised
  and the caller relists.
- Failures surface as this module's exceptions only (never gRPC or aetcd ones):
  ``Unavailable`` when etcd cannot be reached after bounded retries (or a call times out),
  ``Compacted``, ``TooLarge`` for a value over etcd's request limit, ``NoSpace`` for a
  write refused by etcd's space quota (its NOSPACE alarm), ``StorageError`` else.

Concurrency
- One ``EtcdStore`` is shared by every coroutine of a process: each endpoint gets one
  gRPC channel (HTTP/2, multiplexed), opened once, and every call is a plain RPC on it.
  Each watch is its own gRPC stream on that channel, so one watch failing or being
  closed does not disturb the others.
- We use aetcd's generated stubs (``aetcd.rpc``) rather than its ``Client`` methods and
  ``Watcher``: those lack ``limit``/``revision`` on reads, serialise watch creation and
  share one stream whose failure ends every watch, and never resume.
"""
from __future__ import annotations

import asyncio
import random
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import AsyncIterator
from urllib.parse import urlsplit

import grpc
from aetcd import rpc

from apiserver.storage.interface import (Compacted, Event, KeyValue, ListResult, NoSpace,
                                         StorageError, TooLarge, Unavailable, run_compactor)


_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),  # big lists and watch batches exceed 4 MiB
    # Keepalive pings on idle watch streams find a dead peer instead of waiting forever;
    # 30s is well above etcd's --grpc-keepalive-min-time (5s).
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's default reconnect backoff grows to 2 minutes: after an etcd restart the
    # channel would stay failed long after etcd is back.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]
# Without it a watch on a member cut off from its cluster silently stalls; with it etcd
# cancels the stream and we resume, possibly on another endpoint.
_REQUIRE_LEADER = (("hasleader", "true"),)
_WATCH_RETRYABLE = {rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.INTERNAL,
                    rpc.StatusCode.UNKNOWN, rpc.StatusCode.CANCELLED}


@dataclass(frozen=True)
class TLSFiles:
    """kube-apiserver's --etcd-cafile, --etcd-certfile and --etcd-keyfile: the CA that
    verifies etcd (empty: the system's) and the client certificate presented to it."""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()
        return grpc.ssl_channel_credentials(read(self.ca_file), read(self.key_file), read(self.cert_file))


class _Endpoint:
    def __init__(self, url: str, credentials: grpc.ChannelCredentials | None = None):
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"unsupported etcd endpoint {url!r}: expected http(s)://host:port")
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        target = f"{host}:{u.port or 2379}"
        if u.scheme == "https":
            self.channel = rpc.secure_channel(target, credentials or grpc.ssl_channel_credentials(),
                                              options=_CHANNEL_OPTIONS)
        else:
            self.channel = rpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self.kv = rpc.KVStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)


class EtcdStore:
    """The `Store` (apiserver.storage.interface) on etcd v3."""

    def __init__(self, endpoints: list[str], *, timeout: float = 10.0, retries: int = 8,
                 watch_retry_seconds: float = 60.0, tls: TLSFiles | None = None):
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if tls is not None and any(urlsplit(u).scheme != "https" for u in endpoints):
            raise ValueError("etcd client certificates need https:// --etcd-servers")
        self._urls = list(endpoints)
        self._tls = tls
        self._timeout = timeout
        self._retries = retries
        self._watch_retry_seconds = watch_retry_seconds
        self._endpoints: list[_Endpoint] = []
        self._current: _Endpoint | None = None

    async def open(self) -> None:
        if self._current is not None:
            return
        # Channels connect lazily and are never replaced, so in-flight calls and
        # watches on one are not cancelled by a fail-over to another.
        credentials = self._tls.credentials() if self._tls is not None else None
        self._endpoints = [_Endpoint(url, credentials) for url in self._urls]
        self._current = self._endpoints[0]
        try:
            await self.current_revision()  # fails over through the endpoints in order
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        endpoints, self._endpoints, self._current = self._endpoints, [], None
        for ep in endpoints:
            await ep.channel.close()

    async def get(self, key: str) -> KeyValue | None:
        resp, _ = await self._call("Range", rpc.RangeRequest(key=key.encode()))
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def list(self, prefix: str, *, revision: int = 0, limit: int = 0,
                   start_key: str | None = None) -> ListResult:
        if start_key is not None and not start_key.startswith(prefix):
            raise ValueError(f"start_key {start_key!r} is not under {prefix!r}")
        req = rpc.RangeRequest(key=(start_key or prefix).encode(),
                               range_end=_prefix_end(prefix.encode()),
                               revision=revision, limit=limit)
        try:
            resp, _ = await self._call("Range", req)
        except Compacted:
            raise await self._compaction(prefix, revision) from None
        return ListResult([_kv(kv) for kv in resp.kvs], revision or resp.header.revision,
                          resp.more)

    async def count(self, prefix: str) -> int:
        key = prefix.encode()
        resp, _ = await self._call("Range", rpc.RangeRequest(key=key, range_end=_prefix_end(key),
                                                             count_only=True))
        return resp.count

    async def create(self, key: str, value: bytes) -> tuple[bool, int | KeyValue | None]:
        k = key.encode()
        return await self._put_if(k, value, rpc.Compare(
            key=k, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0))

    async def update(self, key: str, value: bytes,
                     expected_revision: int) -> tuple[bool, int | KeyValue | None]:
        if expected_revision <= 0:  # mod_revision == 0 would mean "create if absent"
            raise ValueError("update needs the expected mod_revision of an existing key")
        k = key.encode()
        return await self._put_if(k, value, _mod_equal(k, expected_revision))

    async def delete(self, key: str, expected_revision: int = 0) -> tuple[bool, KeyValue | None]:
        """(True, the deleted value with mod_revision = the delete's revision), or
        (False, the current value, None if there is no such key).

        A delete retried after an ambiguous failure may report (False, None) for a
        delete that did happen: to the caller that is the ordinary "already gone"."""
        k = key.encode()
        compare = (_mod_equal(k, expected_revision) if expected_revision else
                   rpc.Compare(key=k, target=rpc.Compare.MOD, result=rpc.Compare.GREATER,
                               mod_revision=0))
        resp, _ = await self._call("Txn", rpc.TxnRequest(
            compare=[compare],
            success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k,
                                                                              prev_kv=True))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k))]))
        if resp.succeeded:
            prev = resp.responses[0].response_delete_range.prev_kvs[0]
            return True, KeyValue(key, prev.value, resp.header.revision, prev.create_revision)
        kvs = resp.responses[0].response_range.kvs
        return False, _kv(kvs[0]) if kvs else None

    async def current_revision(self) -> int:
        resp, _ = await self._call("Range", rpc.RangeRequest(key=b"\0", count_only=True))
        return resp.header.revision

    async def compact(self, revision: int) -> None:
        try:
            await self._call("Compact", rpc.CompactionRequest(revision=revision))
        except Compacted:
            pass  # someone compacted at or past it already

    async def watch(self, prefix: str, from_revision: int, *,
                    prev_values: bool = True) -> AsyncIterator[list[Event]]:
        """Batches of events with revision >= from_revision (<= 0: from now on).
        prev_values=False leaves every `prev_value` None: a caller that keeps the
        previous values itself (the watch cache) spares etcd sending each one again.

        Closing the generator (``aclose()``, or cancelling the task iterating it)
        cancels the etcd watch. Raises Compacted, or Unavailable once etcd has been
        unreachable for ``watch_retry_seconds``."""
        if from_revision <= 0:
            # A concrete start keeps the "resume from the last revision" rule exact.
            from_revision = await self.current_revision() + 1
        key = prefix.encode()
        create = rpc.WatchCreateRequest(key=key, range_end=_prefix_end(key), prev_kv=prev_values)
        next_rev, attempt, give_up_at = from_revision, 0, None
        while True:
            ep = self._endpoint()
            call = ep.watch.Watch(metadata=_REQUIRE_LEADER)
            try:
                create.start_revision = next_rev
                await call.write(rpc.WatchRequest(create_request=create))
                async for resp in call:
                    if resp.compact_revision:  # its header carries no revision
                        raise Compacted(resp.compact_revision, await self.current_revision())
                    if resp.canceled:  # e.g. the member lost its leader: resume elsewhere
                        break
                    if resp.created:
                        attempt, give_up_at = 0, None
                        continue
                    # etcd never repeats a revision below start_revision; the filter
                    # makes "no duplicates" hold even if it did.
                    batch = [_event(ev) for ev in resp.events if ev.kv.mod_revision >= next_rev]
                    if batch:
                        next_rev = batch[-1].revision + 1
                        yield batch
            except rpc.AioRpcError as e:
                if e.code() not in _WATCH_RETRYABLE:
                    raise _error(e) from None
            except asyncio.CancelledError:
                # Closing the store cancels the calls on its channels too; only a
                # cancellation of our own task ends the watch (a closed store ends it
                # below, with Unavailable).
                if asyncio.current_task().cancelling():
                    raise
            finally:
                call.cancel()  # ends the stream, which frees etcd's watcher
            # The stream ended or failed: resume from the first undelivered revision.
            self._fail_over(ep)
            now = time.monotonic()
            give_up_at = give_up_at or now + self._watch_retry_seconds
            if now >= give_up_at:
                raise Unavailable(f"watch on {prefix!r} lost and not re-established")
            await asyncio.sleep(_backoff(attempt))
            attempt += 1

    async def compactor(self, *, window_seconds: float = 300, interval: float = 60) -> None:
        """Forever: keep history for at least window_seconds, compact what is older.

        Run one per store; several API servers each compacting is harmless (a second
        compaction of the same revision is ignored), just redundant."""
        await run_compactor(self, window_seconds=window_seconds, interval=interval)

    # -- plumbing -----------------------------------------------------------------

    def _endpoint(self) -> _Endpoint:
        if self._current is None:
            raise Unavailable("the store is not open")
        return self._current

    def _fail_over(self, failed: _Endpoint) -> None:
        # Many calls fail at once when an endpoint dies; only the first one moves on.
        if self._current is failed and len(self._endpoints) > 1:
            i = self._endpoints.index(failed)
            self._current = self._endpoints[(i + 1) % len(self._endpoints)]

    async def _call(self, method: str, request) -> tuple:
        """(response, whether an earlier attempt may have reached etcd)."""
        for attempt in range(self._retries + 1):
            ep = self._endpoint()
            try:
                return await getattr(ep.kv, method)(request, timeout=self._timeout), attempt > 0
            except rpc.AioRpcError as e:
                if e.code() != rpc.StatusCode.UNAVAILABLE:
                    raise _error(e) from None
                error = e
            self._fail_over(ep)
            if attempt < self._retries:
                await asyncio.sleep(_backoff(attempt))
        raise Unavailable(f"etcd unreachable at {', '.join(self._urls)}: {error.details()}")

    async def _put_if(self, key: bytes, value: bytes,
                      compare) -> tuple[bool, int | KeyValue | None]:
        # Retrying a write after an ambiguous failure (the connection dropped after the
        # request may have been applied) is safe here only because it is a compare-and-
        # swap: if the first attempt landed, the retry's compare fails instead of writing
        # twice. Our own bytes in place after a retry mean the first attempt was ours,
        # which is a success, not a conflict.
        resp, retried = await self._call("Txn", rpc.TxnRequest(
            compare=[compare],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))]))
        if resp.succeeded:
            return True, resp.header.revision
        kvs = resp.responses[0].response_range.kvs
        if not kvs:
            return False, None
        if retried and kvs[0].value == value:
            return True, kvs[0].mod_revision
        return False, _kv(kvs[0])

    async def _compaction(self, prefix: str, revision: int) -> Compacted:
        """Compacted with its numbers: a range error does not say where history starts,
        a watch from the same revision does, at once."""
        try:
            async with asyncio.timeout(self._timeout), \
                    aclosing(self.watch(prefix, revision)) as events:
                async for _ in events:
                    break
        except Compacted as e:
            return e
        except (TimeoutError, StorageError):
            pass
        return Compacted(0, await self.current_revision())


def _prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with prefix (etcd's convention)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"  # all keys


def _mod_equal(key: bytes, revision: int):
    return rpc.Compare(key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                       mod_revision=revision)


def _kv(kv) -> KeyValue:
    return KeyValue(kv.key.decode(), kv.value, kv.mod_revision, kv.create_revision)


def _event(ev) -> Event:
    kv = ev.kv
    prev = ev.prev_kv.value if ev.HasField("prev_kv") else None
    if ev.type == rpc.Event.DELETE:
        return Event("DELETE", kv.key.decode(), None, prev, kv.mod_revision, False)
    return Event("PUT", kv.key.decode(), kv.value, prev, kv.mod_revision,
                 kv.create_revision == kv.mod_revision)


def _backoff(attempt: int) -> float:
    # Jitter keeps a hundred callers that failed together from retrying together.
    return min(1.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.0)


def _error(e: rpc.AioRpcError) -> StorageError:
    code, details = e.code(), e.details() or ""
    if code in (rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"etcd: {details}")
    if "required revision has been compacted" in details:
        return Compacted(0, 0)  # list() fills in the numbers
    if "too large" in details or "larger than max" in details:
        return TooLarge(f"etcd: {details}")
    if code == rpc.StatusCode.RESOURCE_EXHAUSTED and "space exceeded" in details:
        return NoSpace(details)  # "etcdserver: mvcc: database space exceeded", etcd's own words
    return StorageError(f"etcd {code.name}: {details}")
