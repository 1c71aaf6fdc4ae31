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


def torchrun(*argv: str, processes: int = 2, timeout: int = 300,
             module: str = "shared.serving.cli") -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=PROCESSES -m MODULE ARGV` (MODULE: the CLI, or one that wraps it) on
    the CPU (DDP over gloo), one thread per process, its output captured."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(Path(sys.executable).with_name("torchrun")), f"--nproc_per_node={processes}", "-m",
                           module, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


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


def start_hub(root: Path, log: Path, upload_folder: Path, ready_within_s: float = 120, extra_args: tuple = ()):
    """`demohub serve [extra_args]` from the checkout at `root`, in a subprocess as a user starts it, with
    gradio's upload folder at `upload_folder`; (process, URL) once /readyz answers 200."""
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(upload_folder), "PYTHONPATH": str(root)}
    with log.open("w") as out:
        command = [sys.executable, "-m", "shared.serving.cli", "serve", "--port", str(port), *extra_args]
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_within_s
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200:
                return process, url
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"demohub serve did not become ready:\n{log.read_text()}")


def stop_hub(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def hub_upload_folder(tmp_path_factory) -> Path:
    """gradio's upload folder (GRADIO_TEMP_DIR) of the served hub of `hub_url`."""
    return tmp_path_factory.mktemp("gradio-uploads").resolve()


@pytest.fixture(scope="session")
def hub_url(tmp_path_factory, hub_upload_folder):
    """`demohub serve` in a subprocess, as a user starts it; its URL once /readyz answers."""
    process, url = start_hub(REPO, tmp_path_factory.mktemp("serve") / "serve.log", hub_upload_folder)
    yield url
    stop_hub(process)
