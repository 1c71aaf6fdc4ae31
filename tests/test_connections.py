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


def test_one_address_holds_at_most_its_share_of_connections_and_a_local_proxy_is_not_capped(monkeypatch):
    """15,508 idle connections from one address held 14,861 of the hub's 20,000 file descriptors (found
    by the hostile client); behind a local proxy every visitor shares 127.0.0.1, which is not capped."""
    monkeypatch.setattr(connections, "MAX_CONNECTIONS_PER_ADDRESS", 3)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(slow_app, host="0.0.0.0", port=port, http=connections.HeaderDeadline,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        def ask(source: str) -> tuple[socket.socket, bytes]:
            conn = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
            try:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                return conn, conn.recv(100)
            except ConnectionResetError:  # closed before the request was read
                return conn, b""

        idle = [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.31", 0)) for _ in range(3)]
        time.sleep(0.2)
        _, refused = ask("127.0.0.31")  # a fourth from the same address: closed at once
        another, served = ask("127.0.0.32")
        proxied = [ask("127.0.0.1") for _ in range(5)]  # the local proxy's address: not capped
        for conn in [*idle, another, *(conn for conn, _ in proxied)]:
            conn.close()
        assert refused == b"" and served.startswith(b"HTTP/1.1 200")
        assert all(answer.startswith(b"HTTP/1.1 200") for _, answer in proxied)
    finally:
        server.should_exit = True
        thread.join(10)
