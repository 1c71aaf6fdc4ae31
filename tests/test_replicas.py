"""Replicas behind one address (README: "More users than one process holds"): /readyz gates
traffic until a replica's models are loaded, and the documented HAProxy config spreads clients
over two `demohub serve --app classification` replicas and skips one that is down."""

import shutil
import socket
import subprocess
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from shared import apps
from shared.serving import server
from tests.conftest import DIGIT_EXAMPLES, REPO, free_port, start_hub, stop_hub
from tests.test_security import call, file_data

CONFIG = REPO / "deploy" / "haproxy.cfg"
needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (apt-get install haproxy)")


def test_readyz_is_503_until_the_default_model_is_loaded(monkeypatch):
    models = apps.get("classification").models
    loading = threading.Event()
    real_load = models.load
    monkeypatch.setattr(type(models), "load", lambda self, *a, **k: (loading.wait(30), real_load(*a, **k))[1])
    with TestClient(server.build_hub(("classification",))) as client:
        waiting = client.get("/readyz")
        assert waiting.status_code == 503 and waiting.json()["status"] == "starting"
        assert waiting.json()["apps"]["classification"]["ready"] is None
        loading.set()
        deadline = time.monotonic() + 30
        while (ready := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.status_code == 200 and ready.json()["apps"]["classification"] == {"ready": True}


@needs_haproxy
def test_the_documented_haproxy_config_is_valid():
    checked = subprocess.run(["haproxy", "-c", "-f", str(CONFIG)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def upload_via(url: str, source: str, name: str) -> str:
    """Upload a digit as `name` through the proxy from loopback address `source`; its path on the replica."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30) as client, \
            (DIGIT_EXAMPLES / "digit_7.png").open("rb") as f:
        answer = client.post(f"{url}/classification/gradio_api/upload", files={"files": (name, f)})
    return answer.raise_for_status().json()[0]


def uploads(folder, prefix: str) -> int:
    return len(list(folder.rglob(f"{prefix}*.png")))


@pytest.mark.slow
@needs_haproxy
def test_two_replicas_behind_haproxy_share_clients_and_a_stopped_one_gets_none(tmp_path, monkeypatch):
    monkeypatch.setenv("DEMOHUB_MAX_OPEN_PER_CLIENT", "2")  # to see whom a replica counts as one client
    replicas = {}
    try:
        for name in ("a", "b"):
            folder = tmp_path / f"uploads-{name}"
            replicas[name] = (*start_hub(REPO, tmp_path / f"{name}.log", folder,
                                         extra_args=("--app", "classification")), folder)
        port = free_port()
        config = CONFIG.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace("inter 2s", "inter 200ms")
        for name, (_, url, _) in replicas.items():
            config = config.replace({"a": "127.0.0.1:7861", "b": "127.0.0.1:7862"}[name], url.removeprefix("http://"))
        (tmp_path / "haproxy.cfg").write_text(config)
        proxy = subprocess.Popen(["haproxy", "-f", str(tmp_path / "haproxy.cfg")], stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            time.sleep(1.5)  # both replicas pass two health checks
            paths = [upload_via(url, f"127.0.0.{i}", f"first{i}.png") for i in range(1, 17)]  # 16 clients
            counts = {name: uploads(folder, "first") for name, (_, _, folder) in replicas.items()}
            assert counts["a"] > 0 and counts["b"] > 0 and sum(counts.values()) == 16, counts
            # the upload lives on one replica only; its client's address keeps the call there
            kind, outputs = call(url, "classification", [file_data(paths[0]), "digits-convnext", "torch", 1])
            assert kind == "complete" and outputs[0]["label"] == "7", outputs

            stop_hub(replicas["a"][0])  # its health check fails: every client now goes to b
            time.sleep(1.0)
            for i in range(1, 9):
                upload_via(url, f"127.0.0.{i}", f"second{i}.png")
            assert uploads(replicas["b"][2], "second") == 8

            # a visitor is the address HAProxy saw, whatever X-Forwarded-For it sends (the config had no
            # forwardfor: every visitor was one client, or whoever they claimed; found by a hostile client)
            def sent(source: str, claimed: str, line: str, more: str = "") -> socket.socket:
                conn = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
                conn.sendall(f"{line}\r\nHost: 127.0.0.1\r\nX-Forwarded-For: {claimed}\r\n{more}\r\n".encode())
                return conn

            held = [sent("127.0.0.21", f"10.1.1.{i}", "POST /classification/gradio_api/queue/join HTTP/1.1",
                         "Content-Type: application/json\r\nContent-Length: 100\r\n") for i in (1, 2)]  # no body
            time.sleep(0.5)
            asks = [sent(source, claimed, "GET /classification/config HTTP/1.1")
                    for source, claimed in (("127.0.0.21", "10.1.1.3"), ("127.0.0.22", "10.1.1.1"))]
            statuses = [conn.recv(200).split(b"\r\n")[0] for conn in asks]
            for conn in held + asks:
                conn.close()
            assert [status[:12] for status in statuses] == [b"HTTP/1.1 429", b"HTTP/1.1 200"], statuses

            # one address holds at most 100 connections through HAProxy (14,088 idle ones locked every
            # visitor out for 2 minutes; a hostile client)
            def health(source: str) -> bytes:
                conn = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
                try:
                    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    return conn.recv(200)
                except ConnectionResetError:
                    return b""
                finally:
                    conn.close()

            idle = [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.41", 0)) for _ in range(100)]
            time.sleep(0.3)
            over, other = health("127.0.0.41"), health("127.0.0.42")
            for conn in idle:
                conn.close()
            assert not over.startswith(b"HTTP/1.1 200") and other.startswith(b"HTTP/1.1 200"), (over, other)
        finally:
            proxy.terminate()
            proxy.wait(timeout=10)
    finally:
        for process, _, _ in replicas.values():
            stop_hub(process)
