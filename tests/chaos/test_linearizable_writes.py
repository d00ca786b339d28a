"""Linearizable writes and faithful watches while etcd restarts and the API server is
killed (issue 19, "Linearizable writes" and "Watches").

One run (`run_writes_under_faults`), shared with bench/chaos.py's figures: 20 asyncio
clients create, update (resourceVersion precondition), delete (precondition) and read
ConfigMaps over 6 names, while a fault task, at random moments, restarts etcd (SIGTERM,
then start on the same data dir and ports), kill -9s the API server and starts it on
the same port, or compacts etcd's history (so that watchers resuming from before it get
a 410), each in turn. Meanwhile 10 raw watchers (client.watch.Watch, each from the
resourceVersion of a LIST made at a different moment) and 5 informers
(client.informer.Informer) record every notification.

Afterwards, checked rather than assumed:
- every write answered 2xx is in the store with its last acknowledged value or a later
  one (a write that did not finish before it started);
- the recorded history (final reads included) is linearizable per
  tests/chaos/linearizability.py; a request answered by a timeout, a dropped connection
  or a 5xx counts as "may or may not have taken effect";
- every 5xx answer, timeout or dropped connection overlapped a fault's window (from
  the fault to the API server's /readyz answering 200 again): none outlasted the
  restart;
- each watcher's events equal etcd's own history of the namespace's ConfigMaps (read
  from etcd by revision as the run goes, since the run also compacts etcd at random
  moments) after the watcher's start, or after its relist: no gap, no duplicate, no
  reordering; each informer's notifications equal it too unless it relisted, its cache
  ends equal to etcd's state, and watchers and informers relisted only after a 410
  (Expired/Gone) told them to.

Cost: one run of MINIK8S_CHAOS_SECONDS (default 40 s here; the issue's 60 s with
MINIK8S_CHAOS_SECONDS=60) plus the last faults' recovery, start-up and the check: 60 to
100 s in all on the 2-core machine (load 18 to 29), the checker itself under 2 s.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from apiserver.storage.etcd import EtcdStore
from client.informer import Informer
from client.rest import Client
from client.watch import Watch
from machinery.errors import Gone
from tests.chaos.linearizability import (Absent, Applied, Create, Delete, Failed, Get, Ok, Op, Result, Unknown,
                                         Update, check, describe, resolve)
from tests.procs import APIServer, Etcd, wait_for

NS = "chaos"
KEYS = [f"cm{i}" for i in range(6)]
PREFIX = f"/registry/configmaps/{NS}/"
CLIENTS, WATCHERS, INFORMERS = 20, 10, 5


def chaos_seconds(default: float = 40.0) -> float:
    return float(os.environ.get("MINIK8S_CHAOS_SECONDS", default))


@dataclass
class Run:
    history: list[Op] = field(default_factory=list)
    errors_5xx: list[tuple[float, float, int]] = field(default_factory=list)  # call, return, code
    timeouts: list[tuple[float, float, str]] = field(default_factory=list)  # call, failure, what
    windows: list[tuple[str, float, float]] = field(default_factory=list)  # fault, start, ready again
    unexpected: list[str] = field(default_factory=list)
    watchers: list[dict[str, Any]] = field(default_factory=list)
    informers: list[dict[str, Any]] = field(default_factory=list)
    etcd_events: list[tuple[str, str, int]] = field(default_factory=list)  # type, name, revision
    applied: dict[str, Applied] = field(default_factory=dict)  # per name, from etcd's history
    compactions: int = 0
    final: dict[str, Any] = field(default_factory=dict)


# -- the writers -----------------------------------------------------------------------

def _outcome(resp: httpx.Response) -> Any:
    if resp.is_success:
        body = resp.json()
        if resp.request.method == "DELETE":
            return Ok()
        return Ok(body["metadata"]["resourceVersion"], (body.get("data") or {}).get("v"))
    if resp.status_code == 404:
        return Absent() if resp.request.method == "GET" else Failed("notfound")
    if resp.status_code == 409:
        return Failed("exists" if resp.json().get("reason") == "AlreadyExists" else "conflict")
    return None


async def _writer(n: int, server: APIServer, run: Run, stop_at: float) -> None:
    rng = random.Random(n)
    known: dict[str, str] = {}  # name -> a resourceVersion this client saw (maybe stale by now)
    seq = 0
    base = f"/api/v1/namespaces/{NS}/configmaps"
    # Generous: on a loaded 2-core machine a healthy answer can take seconds, and a
    # timeout outside a fault's window counts against the server.
    async with server.async_client(timeout=httpx.Timeout(15.0)) as http:
        while time.monotonic() < stop_at:
            name = rng.choice(KEYS)
            seq += 1
            value = f"c{n}-{seq}"
            roll = rng.random()
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": value}}
            if roll < 0.3 or name not in known and roll < 0.5:
                inp: Any = Get()
                req = http.get(f"{base}/{name}")
            elif name not in known:
                inp = Create(value)
                req = http.post(base, json=body)
            elif roll < 0.85:
                inp = Update(known[name], value)
                body["metadata"]["resourceVersion"] = known[name]
                req = http.put(f"{base}/{name}", json=body)
            else:
                inp = Delete(known[name])
                req = http.request("DELETE", f"{base}/{name}",
                                   json={"preconditions": {"resourceVersion": known[name]}})
            call = time.monotonic()
            try:
                resp = await req
                out = _outcome(resp)
                ret = time.monotonic()
                if resp.status_code >= 500:
                    run.errors_5xx.append((call, ret, resp.status_code))
                if out is None and resp.status_code < 500 and resp.status_code != 429:
                    run.unexpected.append(f"{inp}: {resp.status_code} {resp.text[:200]}")
            except (httpx.ConnectError, httpx.ConnectTimeout):
                # Nothing was sent (the server is away): not part of the history.
                await asyncio.sleep(rng.uniform(0.05, 0.2))
                continue
            except httpx.HTTPError as exc:
                run.timeouts.append((call, time.monotonic(), type(exc).__name__))
                out = None
            if out is None:  # a timeout, a dropped connection, a 5xx: it may have happened
                if not isinstance(inp, Get):
                    run.history.append(Op(name, call, math.inf, inp, Unknown(), client=n))
                known.pop(name, None)
                await asyncio.sleep(rng.uniform(0.05, 0.2))  # don't spin on a server that is away
                continue
            run.history.append(Op(name, call, ret, inp, out, client=n))
            if isinstance(out, Ok) and out.rv:
                known[name] = out.rv
            elif isinstance(out, (Absent, Failed)) or isinstance(inp, Delete):
                known.pop(name, None)


# -- the faults ------------------------------------------------------------------------

def _ready(server: APIServer) -> None:
    with server.client(timeout=2) as http:
        wait_for(lambda: http.get("/readyz").status_code == 200, timeout=60, what="apiserver ready")


def _restart_etcd(etcd: Etcd, server: APIServer) -> None:
    etcd.proc.send_signal(signal.SIGTERM)
    etcd.proc.wait(30)
    etcd.log.close()
    etcd.start()
    _ready(server)


def _kill_apiserver(server: APIServer) -> None:
    server.proc.kill()
    server.proc.wait(30)
    server.start()


async def _compact(etcd: Etcd) -> None:
    """What the API server's compactor does, now: watchers resuming from before it get 410."""
    store = EtcdStore([etcd.url])
    await store.open()
    try:
        await store.compact(await store.current_revision())
    finally:
        await store.close()


async def _faults(etcd: Etcd, server: APIServer, run: Run, stop_at: float, rng: random.Random) -> None:
    kinds = rng.sample(["etcd", "apiserver", "compact"], 3)  # in turn, so every run has each
    for n in itertools.count():
        await asyncio.sleep(rng.uniform(1.0, 4.0))  # a random moment, not a wait for a condition
        if time.monotonic() >= stop_at:
            return
        what = kinds[n % 3]
        start = time.monotonic()
        if what == "etcd":
            await asyncio.to_thread(_restart_etcd, etcd, server)
        elif what == "apiserver":
            await asyncio.to_thread(_kill_apiserver, server)
        else:
            await _compact(etcd)
            run.compactions += 1
            continue  # not an outage: nothing may fail because of it
        run.windows.append((what, start, time.monotonic()))


# -- the watchers ----------------------------------------------------------------------

class _GoneCounter(logging.Handler):
    """Counts the informers' "history compacted, relisting" records (client.informer)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "relisting" in record.getMessage():
            self.count += 1


async def _raw_watcher(client: Client, delay: float, record: dict[str, Any], since: int | None) -> None:
    """Watch from `since` (an old resourceVersion: history replayed, or a 410 if it was
    compacted meanwhile) or from a LIST made after `delay`; relist only on a 410."""
    await asyncio.sleep(delay)  # start at a different moment, so from a different resourceVersion
    while since is None:
        try:
            since = int((await client.list("configmaps", namespace=NS))["metadata"]["resourceVersion"])
        except Exception:  # noqa: BLE001 - the server may be away right now
            await asyncio.sleep(0.2)
    rv = str(since)
    record["segments"].append((since, 0))
    while True:
        try:
            async for ev in Watch(client, "configmaps", namespace=NS, resource_version=rv):
                rv = ev.object["metadata"]["resourceVersion"]
                if ev.type != "BOOKMARK":
                    record["events"].append((ev.type, ev.object["metadata"]["name"], int(rv)))
        except Gone:
            record["gone"] += 1
            while True:
                try:
                    listed = await client.list("configmaps", namespace=NS)
                    break
                except Exception:  # noqa: BLE001 - the server may be away right now
                    await asyncio.sleep(0.2)
            record["relists"] += 1
            rv = listed["metadata"]["resourceVersion"]
            record["segments"].append((int(rv), len(record["events"])))


def _informer_record(inf: Informer) -> dict[str, Any]:
    rec: dict[str, Any] = {"events": [], "informer": inf}

    def note(kind: str):
        return lambda *objs: rec["events"].append(
            (kind, objs[-1]["metadata"]["name"], int(objs[-1]["metadata"]["resourceVersion"])))
    inf.add_handler(on_add=note("ADDED"), on_update=note("MODIFIED"), on_delete=note("DELETED"))
    return rec


async def _etcd_history(etcd: Etcd, run: Run, after: int) -> None:
    """Forever: etcd's own record of the namespace's ConfigMaps after `after`, read as
    it happens (compactions would hide it afterwards): the events (run.etcd_events) and
    what each write stored (run.applied). Resumes by revision across etcd's restarts."""
    last_put: dict[str, str] = {}
    while True:
        store = EtcdStore([etcd.url])
        try:
            await store.open()
            async for batch in store.watch(PREFIX, after + 1, prev_values=False):
                for ev in batch:
                    name = ev.key[len(PREFIX):]
                    kind = "DELETED" if ev.type == "DELETE" else "ADDED" if ev.created else "MODIFIED"
                    run.etcd_events.append((kind, name, ev.revision))
                    applied = run.applied.setdefault(name, Applied())
                    if ev.value is None:
                        applied.deletes.add(last_put.pop(name, ""))
                    else:
                        value = (orjson.loads(ev.value).get("data") or {}).get("v")
                        applied.puts[value] = last_put[name] = str(ev.revision)
                    after = ev.revision
        except Exception:  # noqa: BLE001 - etcd restarting: resume from the last revision read
            await asyncio.sleep(0.2)
        finally:
            await store.close()


# -- the run ---------------------------------------------------------------------------

async def _run(etcd: Etcd, server: APIServer, seconds: float, seed: int) -> Run:
    run, rng = Run(), random.Random(seed)
    conn = server.connection()
    with server.client() as http:
        r = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": NS}})
        assert r.status_code in (201, 409), r.text
        start_rv = int(http.get(f"/api/v1/namespaces/{NS}/configmaps").json()["metadata"]["resourceVersion"])
    gone = _GoneCounter()
    informer_log = logging.getLogger("minik8s.client.informer")
    level = informer_log.level
    informer_log.setLevel(logging.INFO)  # the "relisting" record is at INFO
    informer_log.addHandler(gone)
    clients = [Client(conn) for _ in range(WATCHERS + INFORMERS)]
    tasks: list[asyncio.Task[Any]] = []
    informers: list[Informer] = []
    try:
        informers += [Informer(c, "configmaps", namespace=NS) for c in clients[WATCHERS:]]
        run.informers = [_informer_record(inf) for inf in informers]
        for inf in informers:
            inf.start()
        for inf in informers:
            assert await inf.wait_for_sync(30)
        tasks.append(asyncio.create_task(_etcd_history(etcd, run, start_rv)))
        stop_at = time.monotonic() + seconds
        for i in range(WATCHERS):
            run.watchers.append({"events": [], "segments": [], "gone": 0, "relists": 0})
            # Odd ones from the start's resourceVersion, even ones from a fresh LIST.
            tasks.append(asyncio.create_task(_raw_watcher(clients[i], i * seconds / (2 * WATCHERS),
                                                          run.watchers[-1], start_rv if i % 2 else None)))
        writers = [asyncio.create_task(_writer(n, server, run, stop_at)) for n in range(CLIENTS)]
        await asyncio.gather(_faults(etcd, server, run, stop_at, rng), *writers)

        # The end: a read of every key (part of the history), and a last write whose
        # revision every watcher must reach.
        async with server.async_client() as http:
            for name in KEYS:
                call = time.monotonic()
                resp = await http.get(f"/api/v1/namespaces/{NS}/configmaps/{name}")
                out = _outcome(resp)
                assert out is not None, resp.text
                run.history.append(Op(name, call, time.monotonic(), Get(), out, client=-1))
                run.final[name] = out
            resp = await http.post(f"/api/v1/namespaces/{NS}/configmaps",
                                   json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "end"}})
            assert resp.status_code == 201, resp.text
            end_rv = int(resp.json()["metadata"]["resourceVersion"])
        records = run.watchers + run.informers
        async with asyncio.timeout(60):
            while not all(rec["events"] and rec["events"][-1][2] >= end_rv for rec in records) or \
                    not (run.etcd_events and run.etcd_events[-1][2] >= end_rv):
                await asyncio.sleep(0.05)
        for rec, inf in zip(run.informers, informers):
            rec["relists"] = inf.relists
            rec["segments"] = [(start_rv, 0)]
            rec["cache"] = {o["metadata"]["name"]: int(o["metadata"]["resourceVersion"]) for o in inf.store.list()}
            del rec["informer"]
        run.final["gone_informers"] = gone.count
    finally:
        informer_log.removeHandler(gone)
        informer_log.setLevel(level)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for inf in informers:
            await inf.stop()
        for c in clients:
            await c.close()
    return run


def run_writes_under_faults(seconds: float | None = None, *, seed: int | None = None) -> Run:
    """One chaos run on a fresh etcd and API server of its own (stopped afterwards)."""
    seconds = chaos_seconds() if seconds is None else seconds
    seed = random.randrange(1 << 30) if seed is None else seed
    etcd = Etcd().start()
    server = None
    try:
        server = APIServer(etcd.url).start()
        return asyncio.run(_run(etcd, server, seconds, seed))
    finally:
        if server is not None:
            server.stop()
        etcd.stop()


# -- what "nothing lost" means ---------------------------------------------------------

def lost_writes(run: Run) -> list[str]:
    """Per key: the final state must be made by the last acknowledged write or by a write
    (acknowledged or not) that did not finish before that one was called."""
    problems = []
    for name in KEYS:
        writes = [o for o in run.history if o.key == name and not isinstance(o.input, Get)
                  and not isinstance(o.output, Failed) and o.client >= 0]
        acked = [o for o in writes if isinstance(o.output, Ok)]
        if not acked:
            continue
        last = max(acked, key=lambda o: o.ret)
        final = run.final[name]
        if isinstance(final, Ok):
            makers = [o for o in writes if not isinstance(o.input, Delete) and o.input.value == final.value]
        else:
            makers = [o for o in writes if isinstance(o.input, Delete)]
        if not any(o is last or o.ret >= last.call for o in makers):
            problems.append(f"{name}: last acknowledged {last.input} -> {last.output}, but the store has {final}")
    return problems


def stray_failures(run: Run) -> list[tuple[float, float, object]]:
    """5xx answers, timeouts and dropped connections whose request did not overlap any
    fault's window: the server was still failing after it had recovered."""
    return [(c, r, what) for c, r, what in [*run.errors_5xx, *run.timeouts]
            if not any(c <= end and r >= start for _, start, end in run.windows)]


def watch_problems(run: Run) -> list[str]:
    problems = []
    for kind, recs in (("watcher", run.watchers), ("informer", run.informers)):
        for i, rec in enumerate(recs):
            if rec["relists"] > (rec.get("gone") if kind == "watcher" else run.final["gone_informers"]):
                problems.append(f"{kind} {i}: {rec['relists']} relists without a 410 to force them")
            if kind == "informer":
                if rec["cache"] != final_state(run):
                    problems.append(f"informer {i}: its cache {rec['cache']} is not etcd's {final_state(run)}")
                if rec["relists"]:
                    continue  # a relist folds history (client.informer's contract): nothing exact to compare
            for since, got, want in _stretches(run, rec):
                if got != want:
                    first = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b),
                                 min(len(got), len(want)))
                    problems.append(f"{kind} {i} (from {since}): {len(got)} events, etcd has {len(want)}; "
                                    f"first difference at {first}: got {got[first:first + 3]}, "
                                    f"etcd {want[first:first + 3]}")
    return problems


def verdict(run: Run) -> Result:
    """The checker's verdict on the history, unknown outcomes resolved by etcd's record."""
    if "verdict" not in run.final:
        run.final["verdict"] = check(resolve(run.history, run.applied), max_states=500_000)
    return run.final["verdict"]


def _stretches(run: Run, rec: dict[str, Any]) -> list[tuple[int, list[Any], list[Any]]]:
    """(since, events got, events etcd has) for each stretch between a watcher's
    (re)lists: exactly etcd's events after the list's revision, all of them for the last
    stretch, a prefix of them for one a 410 ended."""
    out = []
    bounds = [start for _, start in rec["segments"][1:]] + [len(rec["events"])]
    for (since, start), end in zip(rec["segments"], bounds):
        got = rec["events"][start:end]
        want = [e for e in run.etcd_events if e[2] > since]
        if end != len(rec["events"]):
            want = want[:len(got)]
        out.append((since, got, want))
    return out


def final_state(run: Run) -> dict[str, int]:
    """name -> resourceVersion of the namespace's ConfigMaps at the end, per etcd's events."""
    state: dict[str, int] = {}
    for kind, name, rev in run.etcd_events:
        if kind == "DELETED":
            state.pop(name, None)
        else:
            state[name] = rev
    return state


def figures(run: Run | None = None) -> dict[str, object]:
    """The figures bench/chaos.py prints for this scenario."""
    run = run or run_writes_under_faults()
    acked = [o for o in run.history if isinstance(o.output, Ok) and not isinstance(o.input, Get) and o.client >= 0]
    expected = sum(len(want) for rec in run.watchers + run.informers for _, _, want in _stretches(run, rec))
    delivered = sum(len(rec["events"]) for rec in run.watchers + run.informers)
    return {
        "operations": len(run.history),
        "writes acknowledged": len(acked),
        "writes of unknown outcome": sum(isinstance(o.output, Unknown) for o in run.history),
        "  of which etcd recorded": sum(o.ret == math.inf for o in resolve(run.history, run.applied)),
        "acknowledged writes lost": len(lost_writes(run)),
        "linearizable": verdict(run).ok,
        "faults (etcd restarts, apiserver kill -9)": (sum(w[0] == "etcd" for w in run.windows),
                                                       sum(w[0] == "apiserver" for w in run.windows)),
        "5xx seen": len(run.errors_5xx),
        "timeouts and dropped connections": len(run.timeouts),
        "5xx, timeouts outside a fault's window": len(stray_failures(run)),
        "watch events expected": expected,
        "watch events delivered": delivered,
        "compactions": run.compactions,
        "410s (watchers + informers)": sum(rec["gone"] for rec in run.watchers) + run.final["gone_informers"],
        "relists (watchers + informers)": sum(rec["relists"] for rec in run.watchers + run.informers),
    }


@pytest.mark.chaos
@pytest.mark.timeout(300)
def test_writes_stay_linearizable_and_watches_complete_under_restarts():
    seed = random.randrange(1 << 30)
    run = run_writes_under_faults(seed=seed)
    print(f"seed {seed}:", figures(run))
    assert run.windows, "no fault happened"
    assert not run.unexpected, run.unexpected[:5]
    assert sum(isinstance(o.output, Ok) and not isinstance(o.input, Get) for o in run.history) >= 20
    assert lost_writes(run) == []
    result = verdict(run)
    assert result.ok, describe(result)
    assert stray_failures(run) == [], run.windows
    assert watch_problems(run) == []
