"""The route syncer: routes between nodes' pod CIDRs, kept up to date from Node objects.

A node's pods are on a bridge inside the node's network namespace (the kubelet makes
it); other nodes reach them through the node's address on the cluster network. So in
every node namespace, and on the host, there must be one route per (other) node:
`<node.spec.podCIDR> via <node's InternalIP>`. This process watches Nodes with an
informer and makes the routes it owns (marked with RTPROT_MINIK8S) exactly that, in
every node namespace of the cluster and on the host.

Level-based, as a controller is: an event only says "look again"; each sync computes
the whole desired set from the informer's cache and programs the difference. A sync
also runs every RESYNC seconds, so a namespace recreated behind our back, or a route
someone deleted, is repaired. Runs as a supervised component (`minik8s route-syncer`),
so it restarts if it dies; its routes stay in place meanwhile. Logs are klog-like
(machinery.klog): `-v N`, `--logging-format=json`; each sync that changes routes is a
line at V(0); from `-v 2` on, so is every sync that found them in place.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from typing import Awaitable, Callable

from client import kubeconfig
from client.informer import Informer
from client.rest import Client
from cluster import network
from cluster.state import ClusterConfig, state_dir
from machinery import klog

log = logging.getLogger("minik8s.routes")
RESYNC = 30.0


def sync(cfg: ClusterConfig, nodes: list[dict]) -> None:
    """Program every namespace's routes for the current Node objects (blocking)."""
    for name, want in network.desired_routes(cfg, nodes).items():
        path = None if name is None else network.netns_path(cfg.netns(name))
        if path is not None and not os.path.exists(path):
            continue  # a node namespace not made (yet): the supervisor makes it
        try:
            changed, removed = network.sync_routes(want, netns_file=path,
                                                   device=cfg.bridge if name is None else None)
        except OSError as e:  # NetlinkError is an OSError
            log.warning("routes of %s: %s", name or "the host", e)
            continue
        level = logging.INFO if changed or removed else klog.V(2)
        if log.isEnabledFor(level):
            log.log(level, "routes of %s: %d set, %d removed: %s", name or "the host", changed,
                    removed, ", ".join(f"{c} via {gw}" for c, gw in sorted(want.items())) or "none")


async def run(cfg: ClusterConfig) -> None:
    """Until cancelled: keep every namespace's routes in line with the Node objects."""
    # The controller manager's identity: in Kubernetes, routes are its route controller's
    # job, and reading Nodes is all this needs (plain HTTP: the one kubeconfig there is).
    path = cfg.kubeconfig if cfg.plain_http else cfg.component_kubeconfig("controller-manager")
    conn = kubeconfig.load(path).connection()
    async with Client(conn, user_agent="minik8s-route-syncer") as client:
        nodes = Informer(client, "nodes")

        async def synced() -> None:
            await nodes.wait_for_sync()
            log.info("route syncer: watching nodes of %s", cfg.state_dir)

        await follow_nodes(nodes, lambda objs: asyncio.to_thread(sync, cfg, objs),
                           before=synced, resync=RESYNC)


async def follow_nodes(nodes: Informer, sync: Callable[[list[dict]], Awaitable[object]], *,
                       resync: float, before: Callable[[], Awaitable[object]] | None = None) -> None:
    """Run the Node informer and, once it has synced (and `before` has run), call
    `sync(every Node)` after each change and at least every `resync` seconds, until
    cancelled. Level-based: changes that arrive during a sync cost one more sync, whatever
    their number. Shared by the route syncer and the pod network agent (cluster/podnet.py)."""
    dirty = asyncio.Event()
    nodes.add_handler(on_add=lambda _: dirty.set(), on_update=lambda *_: dirty.set(),
                      on_delete=lambda _: dirty.set())

    async def loop() -> None:
        await nodes.wait_for_sync()
        if before is not None:
            await before()
        while True:
            dirty.clear()
            await sync(nodes.store.list())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(resync):
                    await dirty.wait()
    # The reflector and the sync loop live and end together: cancelling (or either
    # failing) stops both before the caller closes its client.
    async with asyncio.TaskGroup() as tg:
        tg.create_task(nodes.run(), name="informer-nodes")
        tg.create_task(loop(), name="node-sync")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minik8s route-syncer",
                                description="program routes between the nodes' pod CIDRs")
    p.add_argument("--state-dir", required=True)
    klog.add_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """`minik8s route-syncer --state-dir DIR [-v N] [--logging-format text|json]`."""
    p = parser()
    args = p.parse_args(argv)
    klog.setup_from_args(args)
    cfg = ClusterConfig.load(state_dir(args.state_dir))
    if cfg is None:
        p.error(f"no cluster in {args.state_dir}")
    try:
        asyncio.run(run(cfg))
    except KeyboardInterrupt:
        pass
    return 0
