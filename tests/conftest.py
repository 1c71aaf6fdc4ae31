"""Test settings: no network, a private ONNX cache, and shared fixtures (tiny checkpoints,
a served hub)."""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("DEMOHUB_CACHE", tempfile.mkdtemp(prefix="demohub-test-cache-"))
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest  # noqa: E402
import torch  # noqa: E402

from shared.models import registry  # noqa: E402
from tests.tiny import ARCHITECTURES, make_tiny_classifier  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DIGIT_EXAMPLES = REPO / "apps" / "classification" / "examples"


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """Registry names of tiny random copies of real Hub architectures (local entries)."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: registry.add_local("classification", make_tiny_classifier(arch, root / f"tiny-{arch}")).name
            for arch in ARCHITECTURES}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def hub_url(tmp_path_factory):
    """`demohub serve` in a subprocess, as a user starts it; its URL once /readyz answers."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "shared.serving.cli", "serve", "--port", str(port)],
                                   cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        process.kill()
        raise RuntimeError(f"demohub serve did not become ready:\n{log.read_text()}")
    yield url
    process.terminate()
    process.wait(timeout=20)
