"""`demohub serve --mcp`: every app's main function is an MCP tool that a model can read and call,
through the mcp client library over streamable HTTP, as an assistant does."""

import asyncio
import base64
import contextlib
import mimetypes
import socket
import threading
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

from shared import apps
from shared.models import registry
from tests.conftest import REPO, start_hub, stop_hub


@pytest.fixture(scope="module")
def mcp_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcp")
    process, url = start_hub(REPO, root / "serve.log", root / "uploads", extra_args=("--mcp",))
    yield url
    stop_hub(process)


def as_tool_argument(value):
    """A file goes to a tool as a base64 data URI (gradio's MCP server also takes http(s) URLs)."""
    if isinstance(value, Path):
        kind = mimetypes.guess_type(value.name)[0]
        return f"data:{kind};base64,{base64.b64encode(value.read_bytes()).decode()}"
    return value


async def list_and_call(url: str, app: str, arguments: dict):
    async with streamablehttp_client(f"{url}/{app}/gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            return tools, await session.call_tool(app, arguments)


@pytest.mark.slow
def test_a_tool_call_never_goes_where_its_host_header_says(mcp_hub):
    """gradio built the tools' client from the first caller's Host header: the hub fetched any host
    and port named there, and every later caller's images went through it (found by a hostile client).
    The first call of this hub names a listener of ours as its host; the listener must hear nothing."""
    heard = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        done = threading.Event()

        def listen():
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    heard.append(listener.accept())

        watching = threading.Thread(target=listen)
        watching.start()
        image = as_tool_argument(REPO / "apps" / "classification" / "examples" / "digit_7.png")
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "classification", "arguments": {
            "image": image, "model": "digits-convnext", "backend": "torch", "top_k": 3}}}
        answer = httpx.post(f"{mcp_hub}/classification/gradio_api/mcp/", json=call, timeout=60, headers={
            "host": f"127.0.0.1:{listener.getsockname()[1]}", "accept": "application/json, text/event-stream"})
        done.set()
        watching.join()
    assert not heard
    assert answer.status_code == 200 and "digits-convnext" in answer.text and '"isError":false' in answer.text


@pytest.mark.slow
@pytest.mark.parametrize("app", sorted(apps.specs()))
def test_every_app_is_a_described_tool_that_answers(mcp_hub, app):
    spec = apps.get(app)
    tools, result = asyncio.run(list_and_call(mcp_hub, app, {k: as_tool_argument(v) for k, v in spec.example.items()}))
    assert [tool.name for tool in tools] == [app, *(["explain"] if spec.explain else [])]  # issue #14's heat maps
    tool = tools[0]
    assert spec.summary in tool.description
    properties = tool.inputSchema["properties"]
    assert set(spec.example) <= set(properties)
    assert all(properties[name].get("description") for name in properties)  # every parameter described
    if any(isinstance(value, Path) for value in spec.example.values()):
        assert "URL" in properties[next(k for k, v in spec.example.items() if isinstance(v, Path))]["description"]
    assert not result.isError, result.content
    text = " ".join(getattr(part, "text", "") for part in result.content)
    assert f"**{registry.default(spec.models.task).name}**" in text, text  # the default model answered
