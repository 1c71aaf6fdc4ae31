"""`demohub spaces build|push`: every Space builds from spaces.yaml and the registry, its card says
only what Spaces documents and what the registry pins, and each built folder runs on its own
(a fresh process, offline, nothing but the folder on its path) and answers through gradio_client."""

import importlib.metadata
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
import tomllib
import yaml
from gradio_client import Client

from shared import apps
from shared.models import registry
from shared.serving import spaces
from tests.conftest import REPO, free_port


def test_every_app_has_one_well_formed_space():
    """spaces.yaml names every app once, with only documented keys and none the build writes."""
    found = spaces.load()
    assert sorted(space.app for space in found.values()) == sorted(apps.specs())
    for space in found.values():
        assert set(space.front_matter) <= spaces.FRONT_MATTER_KEYS
        assert not set(space.front_matter) & set(spaces.GENERATED_KEYS)
        assert len(space.front_matter["short_description"]) <= 60  # the longest Spaces accepts


def test_app_dependencies_are_read_from_imports():
    assert spaces.app_closure("classification") == ["classification"]
    assert spaces.app_closure("adversarial") == ["adversarial", "classification"]
    assert spaces.app_closure("vqa") == ["captioning", "vqa"]  # it builds on the captioning recipe


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("spaces")
    result = spaces.build(None, out)
    assert set(result) == set(spaces.load())
    return out


def card(folder):
    text = (folder / "README.md").read_text()
    _, header, page = text.split("---\n", 2)
    return yaml.safe_load(header), page


@pytest.mark.slow
def test_built_spaces_say_what_spaces_documents_and_the_registry_pins(built):
    for name, space in spaces.load().items():
        folder = built / name
        front, page = card(folder)
        assert set(front) <= spaces.FRONT_MATTER_KEYS
        assert front["sdk"] == "gradio" and front["sdk_version"] == importlib.metadata.version("gradio")
        assert front["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
        assert (folder / front["app_file"]).is_file()
        task = apps.get(space.app).models.task
        hub_models = {e.repo_id: e for e in registry.entries(task) if e.source == "hub"}
        assert set(front.get("models", [])) == set(hub_models)
        for line in front.get("preload_from_hub", []):
            repo_id, files, revision = line.split()
            assert revision == hub_models[repo_id].revision
            assert set(files.split(",")) == set(hub_models[repo_id].files)
        for entry in registry.entries(task):  # every model and its licence on the visitor page
            assert f"`{entry.name}`" in page and entry.license in page
        assert f'api_name="/{space.app}"' in page

        requirements = (folder / "requirements.txt").read_text().split()
        assert requirements and all("==" in line and not line.startswith("-e") for line in requirements)
        pinned = dict(line.split("==") for line in requirements)
        assert pinned["torch"] == importlib.metadata.version("torch") and "gradio[mcp]" in pinned

        needed = spaces.app_closure(space.app)
        assert sorted(p.name for p in (folder / "apps").iterdir() if p.is_dir()) == needed
        carried = tomllib.loads((folder / "models" / "registry.toml").read_text())["models"]
        tasks = set(spaces.tasks_of(needed))
        assert {row["task"] for row in carried} == tasks
        assert sorted(p.name for p in (folder / "models").iterdir() if p.is_dir()) == sorted(tasks)
        for row in carried:
            if row["source"] == "embedded":
                assert (folder / "models" / row["path"] / "config.json").is_file()
        assert {p.name for p in folder.iterdir()} == {"README.md", "requirements.txt", "app.py", "apps", "shared",
                                                      "models"}  # no tests, data or packages.txt
        assert not [p for p in folder.rglob("*") if p.name in ("__pycache__", ".pytest_cache", "tests")]

    front, _ = card(built / "segmentation")  # a non-commercial model is listed with its licence
    header = (built / "segmentation" / "README.md").read_text().split("---\n")[1]
    assert "nvidia/segformer-b0-finetuned-ade-512-512  # NVIDIA Source Code License (other), NON-COMMERCIAL" in header
    assert not (built / "classification" / "models" / "translation").exists()


def _fresh_env(folder, **extra) -> dict:
    """The environment of a Space: offline, and nothing of this checkout on the path."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1", **extra}


@pytest.mark.slow
def test_each_built_space_runs_alone_and_answers(built, tmp_path):
    """`python app.py` in each built folder, as the Space runs it, then one request per app."""
    names = list(spaces.load())
    probe = ("import apps, shared.models.registry as r; "
             "print(apps.__file__); print(r.REGISTRY_FILE); print(len(r._ENTRIES))")
    for name in names:  # the folder's own code and registry, never this checkout's
        lines = subprocess.run([sys.executable, "-c", probe], cwd=built / name, env=_fresh_env(built / name),
                               capture_output=True, text=True, check=True).stdout.split()
        assert all(line.startswith(str(built / name)) for line in lines[:2]), lines

    started = {}
    for name in names:  # all at once: each loads its models while the others do
        port = free_port()
        log = (tmp_path / f"{name}.log").open("w")
        env = _fresh_env(built / name, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
                         GRADIO_TEMP_DIR=str(tmp_path / f"uploads-{name}"))
        started[name] = (subprocess.Popen([sys.executable, "app.py"], cwd=built / name, env=env, stdout=log,
                                          stderr=subprocess.STDOUT), port)
    try:
        for name, (process, port) in started.items():
            spec = apps.get(spaces.load()[name].app)
            client = None
            deadline = time.monotonic() + 180
            while client is None and time.monotonic() < deadline and process.poll() is None:
                try:
                    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(1)
            assert client is not None, (tmp_path / f"{name}.log").read_text()
            tools = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/mcp/schema", timeout=30))
            expected = [spec.name, *(["explain"] if spec.explain else [])]  # the classifier's Explain panel
            assert [tool["name"] for tool in tools] == expected  # the Space is an MCP server too
            outputs = client.predict(**spec.cold_start_request(), api_name=f"/{spec.name}")
            served = outputs[-1]
            assert f"**{registry.default(spec.models.task).name}**" in served, served
            assert "instead" not in served, served  # the default model, with no fallback
    finally:  # all stop together, with time to spare: on a busy 2-core machine one exit took over 30 s
        for process, _ in started.values():
            process.terminate()
        for process, _ in started.values():
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                raise


def test_push_dry_run_lists_the_files_and_the_commit(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "shared.serving.cli", "spaces", "push", "--namespace", "someone",
                           "--space", "classification", "--dry-run"], cwd=REPO, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert list(plan) == ["someone/classification"]
    commit = plan["someone/classification"]
    assert {"README.md", "app.py", "requirements.txt", "models/registry.toml",
            "apps/classification/app.py", "models/classification/digits-convnext/model.safetensors"} <= set(
        commit["files"])
    assert not any(f.startswith(("tests/", "models/translation/")) for f in commit["files"])
    assert "sdk gradio, public" in commit["would_create"] and commit["commit_message"]


def test_push_offline_fails_at_once_with_one_sentence():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "shared.serving.cli", "spaces", "push", "--namespace", "someone"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 1 and time.monotonic() - started < 60
    assert done.stderr.count("\n") == 1 and "HF_HUB_OFFLINE is set" in done.stderr and not done.stdout
    unknown = subprocess.run([sys.executable, "-m", "shared.serving.cli", "spaces", "build", "--out", "/tmp/x",
                              "--space", "nope"], cwd=REPO, env=env, capture_output=True, text=True)
    assert unknown.returncode == 1 and "No Space named nope" in unknown.stderr


def test_push_without_a_token_or_a_reachable_hub_says_so_in_one_sentence(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    command = [sys.executable, "-m", "shared.serving.cli", "spaces", "push", "--namespace", "someone", "--space",
               "classification"]
    no_token = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert no_token.returncode == 1 and no_token.stderr.count("\n") == 1
    assert "No Hugging Face token was found" in no_token.stderr
    unreachable = subprocess.run(command, cwd=REPO, env={**env, "HF_TOKEN": "hf_not_a_real_token"},
                                 capture_output=True, text=True)  # a port nothing listens on: refused at once
    assert unreachable.returncode == 1 and unreachable.stderr.count("\n") == 1
    assert "The Hub could not be reached to push someone/classification" in unreachable.stderr
