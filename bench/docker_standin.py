"""The Docker Engine API with thousands of extra running session containers, for bench/scale.py.

Usage: python bench/docker_standin.py SOCKET SESSIONS_FILE TEMPLATE_FILE

Listens on SOCKET and passes every request to the real engine (/var/run/docker.sock), except
that the hub's container list also shows one container per entry of SESSIONS_FILE (a JSON list
of {"slug", "user", "ip"}, re-read when it changes), and inspect, stats and remove of those are
answered here. Each is a copy of a real session container (TEMPLATE_FILE: its list entry,
inspect and stats documents) with its own id, name, labels and address. The machine cannot run
thousands of real containers; the daemon, ``servicehub sessions`` and the reaper still do all
their own work for each of these, and talk to Docker as they always do.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REAL_SOCKET = "/var/run/docker.sock"


class Synthetic:
    def __init__(self, sessions_file: Path, template: dict[str, Any]) -> None:
        self.sessions_file = sessions_file
        self.template = template
        self.mtime = 0.0
        self.listed: list[dict[str, Any]] = []
        self.inspected: dict[str, dict[str, Any]] = {}  # by id and by name
        self.removed: set[str] = set()

    def refresh(self) -> None:
        mtime = self.sessions_file.stat().st_mtime
        if mtime == self.mtime:
            return
        self.mtime = mtime
        self.listed, self.inspected = [], {}
        labels = self.template["list"]["Labels"]
        name = self.template["list"]["Names"][0].lstrip("/")
        prefix = name[: name.index(labels["servicehub.slug"])]
        for entry in json.loads(self.sessions_file.read_text()):
            cid = hashlib.sha256(entry["slug"].encode()).hexdigest()
            if cid in self.removed:
                continue
            new_labels = {
                **labels,
                "servicehub.slug": entry["slug"],
                "servicehub.user": entry["user"],
            }
            item = copy.deepcopy(self.template["list"])
            item.update(Id=cid, Names=[f"/{prefix}{entry['slug']}"], Labels=new_labels)
            for net in item["NetworkSettings"]["Networks"].values():
                net["IPAddress"] = entry["ip"]
            full = copy.deepcopy(self.template["inspect"])
            full.update(Id=cid, Name=f"/{prefix}{entry['slug']}")
            full["Config"]["Labels"] = new_labels
            for net in full["NetworkSettings"]["Networks"].values():
                net["IPAddress"] = entry["ip"]
            self.listed.append(item)
            self.inspected[cid] = self.inspected[full["Name"].lstrip("/")] = full

    def find(self, ref: str) -> dict[str, Any] | None:
        self.refresh()
        return self.inspected.get(ref)


async def forward(request: web.Request) -> web.StreamResponse:
    synthetic: Synthetic = request.app["synthetic"]
    parts = request.path.strip("/").split("/")  # v1.41, containers, <id>, json
    if len(parts) >= 3 and parts[1] == "containers" and parts[2] not in ("json", "create"):
        found = synthetic.find(parts[2])
        if found is not None:
            return own_answer(synthetic, request, found, parts[3:])
    body = await request.read()
    async with request.app["docker"].request(
        request.method,
        request.path_qs,
        data=body or None,
        headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
        timeout=aiohttp.ClientTimeout(total=None),
    ) as upstream:
        if parts[-1] == "events":
            return await stream(request, upstream)
        data = await upstream.read()
        if parts[1:] == ["containers", "json"] and upstream.status == 200:
            synthetic.refresh()
            filters = request.query.get("filters", "")
            if "servicehub.hub=" in filters and "servicehub.slug=" not in filters:
                data = json.dumps(json.loads(data) + synthetic.listed).encode()
        return web.Response(
            status=upstream.status, body=data, content_type=upstream.content_type or None
        )


def own_answer(
    synthetic: Synthetic, request: web.Request, found: dict[str, Any], rest: list[str]
) -> web.Response:
    if request.method == "DELETE":
        synthetic.removed.add(found["Id"])
        synthetic.mtime = 0.0  # rebuild without it
        return web.Response(status=204)
    if rest == ["stats"]:
        return web.json_response(synthetic.template["stats"])
    return web.json_response(found)


async def stream(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status)
    response.content_type = upstream.content_type
    await response.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except ConnectionResetError:  # the daemon went away (a restart): so does its stream
        pass
    return response


async def make_app(sessions_file: Path, template_file: Path) -> web.Application:
    app = web.Application(client_max_size=64 * 1024**2)
    template = json.loads(template_file.read_text())
    app["synthetic"] = Synthetic(sessions_file, template)
    app["docker"] = aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=REAL_SOCKET), base_url="http://docker"
    )

    async def close(app: web.Application) -> None:
        await app["docker"].close()

    app.on_cleanup.append(close)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


if __name__ == "__main__":
    socket, sessions, template_path = sys.argv[1:4]
    web.run_app(
        make_app(Path(sessions), Path(template_path)), path=socket, print=None, access_log=None
    )
