"""A small extension API server for the aggregation tests (`python -m tests.wardle`).

It serves `wardle.example.com/v1` Flunders (namespaced: list, get, create, watch) over
HTTPS behind client/extensionserver.py: the front proxy is authenticated by the
requestheader CA of kube-system/extension-apiserver-authentication, and every request
is authorized by a SubjectAccessReview. Every object it answers carries `seenBy`, the
user it authenticated, so a test sees what the proxy told it. A watch sends three
ADDED events, then stays open until the client leaves.

    python -m tests.wardle --kubeconfig F --cert F --key F --bind ADDR --port-file F
"""
from __future__ import annotations

import argparse
import asyncio
import signal

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from client.extensionserver import DelegatedAuth, ExtensionServer, load_config
from client.kubeconfig import load
from client.rest import Client

GV = "wardle.example.com/v1"
RESOURCES = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GV, "resources": [
    {"name": "flunders", "singularName": "flunder", "namespaced": True, "kind": "Flunder",
     "verbs": ["create", "get", "list", "watch"], "shortNames": ["fl"], "categories": ["wardle"]},
    {"name": "flunders/status", "singularName": "", "namespaced": True, "kind": "Flunder", "verbs": ["get"]}]}


def seen_by(request: Request) -> dict:
    u = request.scope["user"]
    return {"user": u.name, "groups": list(u.groups), "extra": {k: list(v) for k, v in u.extra}}


def flunder(request: Request, ns: str, name: str) -> dict:
    return {"apiVersion": GV, "kind": "Flunder", "metadata": {"name": name, "namespace": ns},
            "seenBy": seen_by(request)}


async def discovery(request: Request) -> Response:
    return JSONResponse(RESOURCES)


async def collection(request: Request) -> Response:
    ns = request.path_params["ns"]
    if request.method == "POST":
        body = await request.json()
        body["seenBy"] = seen_by(request)
        return JSONResponse(body, 201)
    if request.query_params.get("watch") in ("1", "true"):
        async def events():
            for i in range(3):
                yield orjson.dumps({"type": "ADDED", "object": flunder(request, ns, f"w{i}")}) + b"\n"
            await asyncio.Event().wait()  # open, as a watch is, until the client leaves
        return StreamingResponse(events(), media_type="application/json")
    return JSONResponse({"apiVersion": GV, "kind": "FlunderList", "metadata": {"resourceVersion": "1"},
                         "items": [flunder(request, ns, "a")]})


async def one(request: Request) -> Response:
    return JSONResponse(flunder(request, request.path_params["ns"], request.path_params["name"]))


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(routes=[
    Route(f"/apis/{GV}", discovery),
    Route(f"/apis/{GV}/namespaces/{{ns}}/flunders", collection, methods=["GET", "POST"]),
    Route(f"/apis/{GV}/namespaces/{{ns}}/flunders/{{name}}", one),
    Route("/healthz", healthz)])


async def main(args: argparse.Namespace) -> None:
    client = Client(load(args.kubeconfig).connection())
    auth = DelegatedAuth(await load_config(client), client)
    server = ExtensionServer(app, auth, cert_file=args.cert, key_file=args.key)
    await server.start(args.bind, 0)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.port))
    import os
    os.replace(args.port_file + ".tmp", args.port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for flag in ("--kubeconfig", "--cert", "--key", "--bind", "--port-file"):
        p.add_argument(flag, required=True)
    asyncio.run(main(p.parse_args()))
