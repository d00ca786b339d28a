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
so it restarts if it dies; its routes stay in place meanwhile.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os

from client import kubeconfig
from client.informer import Informer
from client.rest import Client
from cluster import network
from cluster.state import ClusterConfig, state_dir

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
        if changed or removed:
            log.info("routes of %s: %d set, %d removed: %s", name or "the host", changed,
                     removed, ", ".join(f"{c} via {gw}" for c, gw in sorted(want.items())) or "none")


async def run(cfg: ClusterConfig) -> None:
    client = Client(kubeconfig.load(cfg.kubeconfig).connection(), user_agent="minik8s-route-syncer")
    nodes = Informer(client, "nodes")
    dirty = asyncio.Event()
    nodes.add_handler(on_add=lambda _: dirty.set(), on_update=lambda *_: dirty.set(),
                      on_delete=lambda _: dirty.set())
    nodes.start()
    await nodes.wait_for_sync()
    log.info("route syncer: watching nodes of %s", cfg.state_dir)
    try:
        while True:
            dirty.clear()
            await asyncio.to_thread(sync, cfg, nodes.store.list())
            try:
                await asyncio.wait_for(dirty.wait(), RESYNC)
            except TimeoutError:
                pass
    finally:
        await nodes.stop()
        await client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="minik8s route-syncer",
                                description="program routes between the nodes' pod CIDRs")
    p.add_argument("--state-dir", required=True)
    args = p.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    cfg = ClusterConfig.load(state_dir(args.state_dir))
    if cfg is None:
        p.error(f"no cluster in {args.state_dir}")
    try:
        asyncio.run(run(cfg))
    except KeyboardInterrupt:
        pass
    return 0
