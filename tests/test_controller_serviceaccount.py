"""The service account controller: unit tests on a recording client, then against a real
API server with the controller running in-process."""
import uuid

import pytest

from client.rest import Client
from controller_manager.controllers.serviceaccount import ServiceAccountController, ServiceAccountOptions
from controller_manager.testing import RecordingClient, Running, eventually
from machinery import errors


def ns(name, *, phase="Active", deleting=False):
    md = {"name": name}
    if deleting:
        md["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": md, "status": {"phase": phase}}


def sa(name, namespace):
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}


def controller(*objs, **options):
    client = RecordingClient()
    ctrl = ServiceAccountController(client, client, options=ServiceAccountOptions(**options))
    client.seed(*objs)
    return client, ctrl


async def test_creates_default_service_account_in_new_namespace():
    client, ctrl = controller(ns("team"))
    await ctrl.reconcile("team")
    assert client.verbs() == [("create", "serviceaccounts", "team/default")]


async def test_does_nothing_when_default_exists():
    client, ctrl = controller(ns("team"), sa("default", "team"))
    await ctrl.reconcile("team")
    assert client.actions == []


async def test_recreates_deleted_default_service_account():
    client, ctrl = controller(ns("team"), sa("default", "team"))
    while len(ctrl.queue):  # drain what seeding enqueued
        ctrl.queue.done(await ctrl.queue.get())
    await client.delete("serviceaccounts", "default", namespace="team")
    assert list(ctrl.queue._queue) == ["team"]  # the deletion enqueues its namespace
    await ctrl.reconcile("team")
    assert client.verbs()[-1] == ("create", "serviceaccounts", "team/default")


async def test_other_service_accounts_do_not_count_and_do_not_enqueue():
    client, ctrl = controller(ns("team"))
    while len(ctrl.queue):
        ctrl.queue.done(await ctrl.queue.get())
    client.seed(sa("builder", "team"))
    assert len(ctrl.queue) == 0
    await ctrl.reconcile("team")
    assert client.verbs() == [("create", "serviceaccounts", "team/default")]


async def test_ignores_terminating_namespace():
    client, ctrl = controller(ns("gone", phase="Terminating", deleting=True))
    await ctrl.reconcile("gone")
    assert client.actions == []


async def test_ignores_namespace_missing_from_cache():
    client, ctrl = controller()
    await ctrl.reconcile("nope")
    assert client.actions == []


async def test_already_exists_from_a_lagging_cache_is_success():
    client, ctrl = controller(ns("team"))
    client.fail[("create", "serviceaccounts")] = errors.AlreadyExists("exists")
    await ctrl.reconcile("team")  # no exception: nothing to retry


async def test_namespace_terminating_meanwhile_is_not_an_error():
    client, ctrl = controller(ns("team"))
    client.fail[("create", "serviceaccounts")] = errors.Forbidden(
        "serviceaccounts is forbidden: unable to create new content in namespace team "
        "because it is being terminated")
    await ctrl.reconcile("team")


async def test_configured_service_accounts_are_all_ensured():
    client, ctrl = controller(ns("team"), service_accounts=("default", "builder"))
    await ctrl.reconcile("team")
    assert client.verbs() == [("create", "serviceaccounts", "team/default"),
                              ("create", "serviceaccounts", "team/builder")]


# -- against a real API server -------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(private_apiserver):
    return private_apiserver


async def test_every_namespace_gets_a_default_service_account_and_keeps_it(cluster):
    async with Client(cluster.connection()) as client:
        name = "sa-" + uuid.uuid4().hex[:8]
        async with Running(client, (ServiceAccountController, {})):
            # System namespaces that existed before the controller started get one too.
            await eventually(lambda: client.get("serviceaccounts", "default", namespace="kube-system"),
                             what="default SA in kube-system")
            await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            first = await eventually(lambda: client.get("serviceaccounts", "default", namespace=name),
                                     what="default SA in a new namespace")
            await client.delete("serviceaccounts", "default", namespace=name)

            async def recreated():
                sa = await client.get("serviceaccounts", "default", namespace=name)
                return sa["metadata"]["uid"] != first["metadata"]["uid"]
            await eventually(recreated, what="default SA recreated")
