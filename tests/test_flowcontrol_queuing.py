"""apiserver/flowcontrol/apf.py's Controller on its own, with Kubernetes' default objects
(apiserver/flowcontrol/bootstrap.py, defaulted as the server stores them): classification
precedence, seats per level, shuffle-sharded queues, fair turns between flows, and the
three refusals. No server: the controller is a pure function of its config and the
requests it is given. Under a second.
"""
from __future__ import annotations

import asyncio

import orjson
import pytest

from apiserver.auth.authorizer import Attributes, UserInfo
from apiserver.defaults import apply_defaults
from apiserver.flowcontrol import apf, bootstrap


def _stored(objs: list[dict]) -> list[dict]:
    out = []
    for o in objs:
        o = orjson.loads(orjson.dumps(o))
        apply_defaults(o, o["kind"])
        o["metadata"]["uid"] = f"uid-{o['metadata']['name']}"
        out.append(o)
    return out


def controller(limit: int = 600, *, max_wait: float = 15.0, levels: list[dict] | None = None) -> apf.Controller:
    c = apf.Controller(limit, max_wait=max_wait)
    c.replace("prioritylevelconfigurations",
              _stored(bootstrap.MANDATORY_LEVELS + bootstrap.SUGGESTED_LEVELS + (levels or [])))
    c.replace("flowschemas", _stored(bootstrap.MANDATORY_SCHEMAS + bootstrap.SUGGESTED_SCHEMAS))
    return c


def attrs(user: str, *groups: str, verb: str = "list", group: str = "", resource: str = "pods",
          namespace: str = "default", path: str = "") -> Attributes:
    if user != "system:anonymous":
        groups = (*groups, "system:authenticated")
    return Attributes(UserInfo(user, groups), verb, namespace, group, "v1", resource,
                      resource_request=not path, path=path)


@pytest.mark.parametrize("request_attrs,schema,level", [
    (attrs("admin", "system:masters"), "exempt", "exempt"),
    (attrs("system:node:n1", "system:nodes", verb="update", group="coordination.k8s.io", resource="leases",
           namespace="kube-node-lease"), "system-node-high", "node-high"),
    (attrs("system:node:n1", "system:nodes", verb="get", resource="nodes", namespace=""),
     "system-node-high", "node-high"),
    (attrs("system:node:n1", "system:nodes"), "system-nodes", "system"),
    (attrs("system:kube-controller-manager", verb="update", group="coordination.k8s.io", resource="leases",
           namespace="kube-system"), "system-leader-election", "leader-election"),
    (attrs("system:kube-controller-manager", verb="update", resource="endpoints"), "endpoint-controller",
     "workload-high"),
    (attrs("system:kube-controller-manager"), "kube-controller-manager", "workload-high"),
    (attrs("system:kube-scheduler", verb="create", resource="pods"), "kube-scheduler", "workload-high"),
    (attrs("system:serviceaccount:kube-system:deployment-controller", "system:serviceaccounts"),
     "kube-system-service-accounts", "workload-high"),
    (attrs("system:serviceaccount:web:default", "system:serviceaccounts"), "service-accounts", "workload-low"),
    (attrs("alice"), "global-default", "global-default"),
    (attrs("system:anonymous", "system:unauthenticated", verb="get", path="/healthz"), "probes", "exempt"),
    (attrs("system:anonymous", "system:unauthenticated", verb="get", path="/version"),
     "global-default", "global-default"),
])
def test_classification_follows_kubernetes_defaults(request_attrs, schema, level):
    found = controller().classify(request_attrs)
    assert found is not None
    assert (found[0].name, found[1].name) == (schema, level)


def test_each_level_gets_its_share_of_the_server_limit():
    c = controller(600)
    limits = {name: lv.limit for name, lv in c.levels.items() if not lv.exempt}
    # ceil(600 * shares / 245): the shares are 5, 30, 40, 10, 40, 100, 20.
    assert limits == {"catch-all": 13, "system": 74, "node-high": 98, "leader-election": 25,
                      "workload-high": 98, "workload-low": 245, "global-default": 49}


def _level(name: str, queues: int, hand: int, length: int) -> dict:
    return {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
            "metadata": {"name": name},
            "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 1, "limitResponse": {
                "type": "Queue", "queuing": {"queues": queues, "handSize": hand, "queueLengthLimit": length}}}}}


def test_queue_full_then_fair_turns_between_flows():
    async def main() -> None:
        c = controller(1, levels=[])
        schema, level = c.classify(attrs("alice"))
        assert level.limit == 1
        first = await c.admit(schema, level, attrs("alice"))  # the one seat
        # alice's flow reaches only its hand of 6 queues, 50 each: 300 wait, the next is refused.
        waiting = [asyncio.create_task(c.admit(schema, level, attrs("alice"))) for _ in range(300)]
        await asyncio.sleep(0)
        assert level.queued == 300
        with pytest.raises(apf.Rejected) as refused:
            await c.admit(schema, level, attrs("alice"))
        assert refused.value.reason == "queue-full"
        # bob's flow lands in its own hand: he is queued, not refused, and served before
        # most of alice's queue (fair turns between queues, not first come first served).
        bob = asyncio.create_task(c.admit(schema, level, attrs("bob")))
        await asyncio.sleep(0)
        held, taken, served = first, set(), 0
        newly: list[asyncio.Task] = []
        while True:
            held.release()  # the seat goes to the next queue in turn
            for _ in range(20):  # the waiter's task wakes a few loop turns later
                await asyncio.sleep(0)
                newly = [t for t in waiting if t.done() and t not in taken]
                if bob.done() or newly:
                    break
            if bob.done():
                break
            taken.add(newly[0])
            held = newly[0].result()
            served += 1
        assert served <= 6, served  # one turn of alice's 6 queues at most
        bob.result().release()
        for t in waiting:
            t.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
    asyncio.run(main())


def test_a_request_that_waits_too_long_is_refused_and_frees_nothing():
    async def main() -> None:
        c = controller(1, max_wait=0.05)
        schema, level = c.classify(attrs("alice"))
        seat = await c.admit(schema, level, attrs("alice"))
        with pytest.raises(apf.Rejected) as refused:
            await c.admit(schema, level, attrs("alice"))
        assert refused.value.reason == "time-out"
        seat.release()
        assert level.executing == 0
        # The one that gave up does not hold the free seat: the next request gets it at once.
        again = await asyncio.wait_for(c.admit(schema, level, attrs("alice")), 1)
        again.release()
        assert level.executing == level.queued == 0
    asyncio.run(main())


def test_a_reject_level_refuses_at_once_and_exempt_is_never_limited():
    async def main() -> None:
        c = controller(1)
        schema, level = c.classify(attrs("someone", verb="get", path="/x"))
        assert level.name == "global-default"
        catch_all = c.levels["catch-all"]
        fs = next(s for s in c.schemas if s.name == "catch-all")
        seat = await c.admit(fs, catch_all, attrs("x"))
        with pytest.raises(apf.Rejected) as refused:
            await c.admit(fs, catch_all, attrs("x"))
        assert refused.value.reason == "concurrency-limit"
        seat.release()
        schema, exempt = c.classify(attrs("admin", "system:masters"))
        seats = [await c.admit(schema, exempt, attrs("admin", "system:masters")) for _ in range(1000)]
        for s in seats:
            s.release()
    asyncio.run(main())
