"""Who a client is, how many requests one client may hold open, and how much of the server's upload
space one client may take.

gradio's upload route takes any file from anyone and serves it back for an hour (the sweep deletes
older ones), so one client could fill the disk at 140 MB/s. `UploadBudget` lets each client upload
at most `DEMOHUB_UPLOAD_MB_PER_MINUTE` (512 MB: a 500-image embedding map of photos fits) and
refuses every upload while the disk holding the upload folder has less than 2 GB free.
`OpenRequestLimit` lets each client hold at most `DEMOHUB_MAX_OPEN_PER_CLIENT` requests open.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

from gradio.utils import get_upload_folder

UPLOAD_BYTES_PER_MINUTE = int(os.environ.get("DEMOHUB_UPLOAD_MB_PER_MINUTE", 512)) * 2**20
# A browser holds about 6 connections to one host (a page's event streams, uploads and pictures);
# 64 leave room for several visitors behind one address.
MAX_OPEN_PER_CLIENT = int(os.environ.get("DEMOHUB_MAX_OPEN_PER_CLIENT", 64))
# Session heartbeats are counted apart: every open tab and every gradio_client.Client holds one for its
# whole life (a script that makes a Client per call and never closes them holds one per call), and
# gradio_client asks again later when one is refused, without failing its calls.
HEARTBEAT_ROUTE = "/gradio_api/heartbeat/"
MAX_HEARTBEATS_PER_CLIENT = 4 * MAX_OPEN_PER_CLIENT
MIN_FREE_DISK_BYTES = 2 * 2**30
# The largest request body (ui.BodySizeLimit): an upload at the limit sent base64-encoded inside a
# JSON call (4/3 of its size), plus room.
MAX_BODY_BYTES = 16 * 2**20
# gradio's routes that write a client's body to disk: uploads, and its screen recordings
UPLOAD_ROUTES = ("/gradio_api/upload", "/gradio_api/process_recording")


def client_address(headers, client: tuple | None) -> str:
    """Who sent a request, from its headers and socket address. uvicorn has already put the address a
    local proxy forwards (X-Forwarded-For from 127.0.0.1, as in the replicas' proxy) in `client`; on a
    Space, whose proxy is not local, it is the last X-Forwarded-For entry, the one that proxy added (a
    client can write the others)."""
    forwarded = headers.get("x-forwarded-for") if os.environ.get("SPACE_ID") else None
    if forwarded:
        return _network_of(forwarded.rsplit(",", 1)[-1].strip())
    return _network_of(client[0]) if client else "unknown"


def _network_of(address: str) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64, the network one subscriber is given (every
    address in it is theirs to use, so counting addresses would let one client count as millions)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 4:
        return str(parsed)
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.ip_network(f"{parsed}/64", strict=False))


class OpenRequestLimit:
    """ASGI middleware: a client holds at most MAX_OPEN_PER_CLIENT requests open at once (a request
    being answered, a body being sent, an event stream) and MAX_HEARTBEATS_PER_CLIENT session
    heartbeats; past that, 429 at once. 19,990 heartbeat streams from one address held every file
    descriptor of the hub, and /healthz and every other visitor timed out; 300 bodies sent a byte
    every 5 s stayed open (found by the hostile client)."""

    def __init__(self, app):
        self.app = app
        self.open: Counter[tuple[str, bool]] = Counter()  # (client, heartbeat or not) -> open requests

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        heartbeat = HEARTBEAT_ROUTE in scope["path"]
        key = (client_address(headers, scope.get("client")), heartbeat)
        limit = MAX_HEARTBEATS_PER_CLIENT if heartbeat else MAX_OPEN_PER_CLIENT
        if self.open[key] >= limit:
            what = "page sessions" if heartbeat else "requests"
            return await refuse(send, 429, f"You have {limit} {what} open on this server, the most one client "
                                            "may; close some, or wait for them to finish.")
        self.open[key] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open[key] -= 1
            if not self.open[key]:
                del self.open[key]


class UploadBudget:
    """ASGI middleware on gradio's upload routes: a client's uploads in the current minute, counted by
    their Content-Length (reserved while they are sent; what never arrives is given back), stop at
    UPLOAD_BYTES_PER_MINUTE (429), and all uploads stop while the disk is nearly full (507); each
    refusal is one sentence."""

    def __init__(self, app):
        self.app = app
        self.spent: dict[str, tuple[float, int]] = {}  # client -> (start of its minute, bytes uploaded in it)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith(UPLOAD_ROUTES):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        # a chunked body is charged the most a body may be: its Content-Length, if any, says nothing
        # (a client sent "Content-Length: 0" with a chunked 9 MB file and was charged nothing)
        declared = headers.get("content-length", "")
        size = int(declared) if declared.isdigit() and "transfer-encoding" not in headers else MAX_BODY_BYTES
        if _free_bytes(Path(get_upload_folder())) < MIN_FREE_DISK_BYTES:
            return await refuse(send, 507, "The server's disk is nearly full; uploads resume once older ones "
                                            "are deleted (within the hour).")
        now, client = time.monotonic(), client_address(headers, scope.get("client"))
        started, spent = self.spent.get(client, (now, 0))
        if now - started >= 60:
            started, spent = now, 0
        if spent + size > UPLOAD_BYTES_PER_MINUTE:
            return await refuse(send, 429, f"You uploaded {spent / 2**20:.1f} MB in the last minute; one client may "
                                            f"upload {UPLOAD_BYTES_PER_MINUTE // 2**20} MB a minute. Try again "
                                            f"in {60 - (now - started):.0f} s.")
        if len(self.spent) > 10_000:  # forget the clients whose minute is over
            self.spent = {c: v for c, v in self.spent.items() if now - v[0] < 60}
        self.spent[client] = (started, spent + size)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        try:
            await self.app(scope, counted_receive, send)
        finally:  # what was declared and never sent is given back (33 empty 16 MB heads had spent a minute's 512)
            if self.spent.get(client, (None,))[0] == started:
                self.spent[client] = (started, self.spent[client][1] - max(0, size - received))


def _free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds `folder` (gradio makes its upload folder on first use)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


async def refuse(send, status: int, sentence: str, close: bool = False) -> None:
    """Answer a request from ASGI middleware with `status` and {"error": sentence} (and close the
    connection, where the body is not going to be read)."""
    body = json.dumps({"error": sentence}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + ([(b"connection", b"close")] if close else [])})
    await send({"type": "http.response.body", "body": body})
