"""The clusterrole-aggregation controller: unit tests on a recording client, then against a
real API server, where it fills the bootstrap policy's admin, edit and view."""
import uuid

from client.rest import Client
from controller_manager.controllers.clusterroleaggregation import ClusterRoleAggregationController
from controller_manager.testing import RecordingClient, Running, eventually

G = "rbac.authorization.k8s.io"


def cluster_role(name, *rules, labels=None, selectors=None):
    obj = {"apiVersion": f"{G}/v1", "kind": "ClusterRole",
           "metadata": {"name": name, "labels": labels or {}}, "rules": list(rules)}
    if selectors is not None:
        obj["aggregationRule"] = {"clusterRoleSelectors": selectors}
    return obj


def rule(verb, resource):
    return {"verbs": [verb], "apiGroups": [""], "resources": [resource]}


def controller(*objs):
    client = RecordingClient()
    ctrl = ClusterRoleAggregationController(client, client)
    client.seed(*objs)
    return client, ctrl


def stored(client, name):
    return client.informers["clusterroles"].store.get(name)


async def test_gathers_the_rules_of_matching_roles_by_name_each_once():
    client, ctrl = controller(
        cluster_role("agg", selectors=[{"matchLabels": {"a": "1"}}, {"matchLabels": {"b": "1"}}]),
        cluster_role("zz", rule("get", "pods"), labels={"a": "1"}),
        cluster_role("aa", rule("list", "pods"), rule("get", "pods"), labels={"a": "1", "b": "1"}),
        cluster_role("bb", rule("watch", "pods"), labels={"b": "1"}),
        cluster_role("other", rule("delete", "pods"), labels={"c": "1"}))
    await ctrl.reconcile("agg")
    assert client.verbs() == [("update", "clusterroles", "agg")]
    assert stored(client, "agg")["rules"] == [rule("list", "pods"), rule("get", "pods"),
                                             rule("watch", "pods")]


async def test_does_nothing_when_in_sync_and_never_writes_a_plain_role():
    client, ctrl = controller(
        cluster_role("agg", rule("get", "pods"), selectors=[{"matchLabels": {"a": "1"}}]),
        cluster_role("src", rule("get", "pods"), labels={"a": "1"}),
        cluster_role("plain", rule("list", "pods")))
    await ctrl.reconcile("agg")
    await ctrl.reconcile("plain")
    await ctrl.reconcile("missing")
    assert client.actions == []


async def test_never_gathers_from_itself_and_empties_when_nothing_matches():
    client, ctrl = controller(
        cluster_role("agg", rule("get", "pods"), labels={"a": "1"},
                     selectors=[{"matchLabels": {"a": "1"}}]))
    await ctrl.reconcile("agg")
    assert stored(client, "agg")["rules"] == []


async def test_a_change_to_any_role_enqueues_every_aggregated_role():
    client, ctrl = controller(
        cluster_role("agg-1", selectors=[{"matchLabels": {"a": "1"}}]),
        cluster_role("agg-2", selectors=[{"matchLabels": {"b": "1"}}]))
    while len(ctrl.queue):
        ctrl.queue.done(await ctrl.queue.get())
    client.seed(cluster_role("unrelated", rule("get", "pods")))
    assert sorted(ctrl.queue._queue) == ["agg-1", "agg-2"]


# -- against a real API server -------------------------------------------------------------

async def test_fills_and_follows_the_bootstrap_aggregated_roles(private_apiserver):
    async with Client(private_apiserver.connection()) as client:
        async with Running(client, (ClusterRoleAggregationController, {})):
            async def rules_of(name):
                return (await client.get("clusterroles", name)).get("rules") or []

            async def view_can(verb, resource):
                return any(verb in r["verbs"] and resource in r.get("resources", [])
                           for r in await rules_of("view"))
            await eventually(lambda: view_can("list", "pods"), what="view aggregated")
            # edit gathers view (labelled aggregate-to-edit) and admin gathers edit.
            await eventually(lambda: _has(rules_of("admin"), "list", "pods"), what="admin from view")
            await eventually(lambda: _has(rules_of("edit"), "create", "pods"), what="edit")
            # a new role labelled to aggregate into view is gathered, and dropped when unlabelled
            name = "widgets-" + uuid.uuid4().hex[:6]
            await client.create(cluster_role(name, {"verbs": ["get"], "apiGroups": ["example.com"],
                                                    "resources": ["widgets"]},
                                             labels={f"{G}/aggregate-to-view": "true"}))
            await eventually(lambda: view_can("get", "widgets"), what="view gathers the new role")
            await eventually(lambda: _has(rules_of("admin"), "get", "widgets"), what="... and admin")
            role = await client.get("clusterroles", name)
            role["metadata"]["labels"] = {}
            await client.update(role)

            async def dropped():
                return not await view_can("get", "widgets")
            await eventually(dropped, what="view drops the unlabelled role")


async def _has(rules_coro, verb, resource):
    return any(verb in r["verbs"] and resource in r.get("resources", []) for r in await rules_coro)
