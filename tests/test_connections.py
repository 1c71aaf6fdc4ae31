"""A connection that never finishes its request's head is closed (shared/serving/connections.py);
requests that take long to answer are not."""

import asyncio
import socket
import threading
import time

import httpx
import uvicorn

from shared.serving import connections
from tests.conftest import free_port


async def slow_app(scope, receive, send):
    if scope["type"] != "http":
        return
    await asyncio.sleep(float(scope["query_string"] or 0))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_slow_loris_is_closed_and_a_slow_answer_is_not(monkeypatch):
    monkeypatch.setattr(connections, "HEADER_TIMEOUT_S", 0.5)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(slow_app, port=port, http=connections.HeaderDeadline, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        loris = socket.create_connection(("127.0.0.1", port))
        loris.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        loris.settimeout(5)
        started = time.monotonic()
        for _ in range(3):  # a header line now and then does not keep it open
            time.sleep(0.3)
            try:
                loris.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        assert loris.recv(100) == b"" and time.monotonic() - started < 2.5
        assert httpx.get(f"http://127.0.0.1:{port}/?2", timeout=10).text == "ok"  # 2 s to answer: not cut
    finally:
        server.should_exit = True
        thread.join(10)
