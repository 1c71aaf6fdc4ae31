"""`demohub spaces build|push`: every app as a Hugging Face Space, from `spaces.yaml` and the registry.

    demohub spaces build --out build/spaces [--space classification ...]
    demohub spaces push --namespace USER_OR_ORG [--space classification] [--private] [--dry-run]

A built Space is a folder that runs with only itself on the path (`python app.py` from its root):

    README.md          front matter from spaces.yaml plus sdk, versions, app_file, and the Hub models
                       (`models`, `preload_from_hub`) of the app's registry task, pinned; then a page
                       for visitors: what the app does, its models and licences, how to call its API
    requirements.txt   the project's dependencies and the Space's extras, pinned to the installed versions
    packages.txt       Debian packages, if spaces.yaml names any
    app.py             serves apps/<app>/app.py alone, with its API as an MCP server
    apps/              the app and the apps it imports (found by walking their imports)
    shared/            all of it
    models/            registry.toml with only the rows of the tasks those apps run, and their embedded models

Nothing else is copied: no tests, caches or data.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

from shared import apps
from shared.errors import UserError
from shared.models import registry

REPO = Path(__file__).resolve().parents[2]
SPACES_FILE = REPO / "spaces.yaml"
# What the build writes itself; spaces.yaml must not set them (one source of truth each).
GENERATED_KEYS = ("sdk", "sdk_version", "python_version", "app_file", "models", "preload_from_hub")
# The keys Spaces documents for a README's front matter.
FRONT_MATTER_KEYS = {
    "title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "python_version", "app_file", "app_port",
    "base_path", "fullWidth", "header", "models", "datasets", "tags", "pinned", "license", "short_description",
    "suggested_hardware", "suggested_storage", "hf_oauth", "disable_embedding", "startup_duration_timeout",
    "custom_headers", "preload_from_hub",
}
ALWAYS_EXTRAS = ("space",)
STALE = ["apps/**", "shared/**", "models/**", "packages.txt"]  # what a push replaces as a whole
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache")
APP_FILE = '''"""The {title} Space: apps/{app}/app.py served alone, its API also an MCP server.

    python app.py        # what the Space runs; http://127.0.0.1:7860/ locally
"""

from shared.inference import gpu  # noqa: F401  (first: `spaces` is imported before anything touches CUDA)
from shared import apps
from shared.serving import mcp, ui

demo = mcp.describe(apps.page("{app}"), "{app}")

if __name__ == "__main__":
    ui.launch(demo, mcp_server=True)
'''


@dataclass(frozen=True)
class Space:
    repo: str  # owner/name, the default id
    app: str
    extras: tuple[str, ...]
    packages: tuple[str, ...]
    front_matter: dict

    @property
    def name(self) -> str:
        return self.repo.split("/")[1]


def load(path: Path = SPACES_FILE) -> dict[str, Space]:
    """spaces.yaml's Spaces by name, checked against the apps and the keys Spaces documents."""
    spaces = {}
    for row in yaml.safe_load(path.read_text())["spaces"]:
        space = Space(row["repo"], row["app"], tuple(row.get("extras", ())), tuple(row.get("packages", ())),
                      dict(row["front_matter"]))
        if not re.fullmatch(r"[^/\s]+/[^/\s]+", space.repo):
            raise UserError(f"spaces.yaml: repo {space.repo!r} must be owner/name.")
        if space.app not in apps.specs():
            raise UserError(f"spaces.yaml: Space {space.repo} serves {space.app!r}, which is not an app under apps/.")
        unknown = set(space.front_matter) - FRONT_MATTER_KEYS
        generated = set(space.front_matter) & set(GENERATED_KEYS)
        if unknown or generated:
            raise UserError(f"spaces.yaml: Space {space.repo} sets {', '.join(sorted(unknown | generated))}, "
                            f"which {'Spaces does not document' if unknown else 'the build writes itself'}.")
        spaces[space.name] = space
    return spaces


def select(names: list[str] | None, path: Path = SPACES_FILE) -> list[Space]:
    spaces = load(path)
    unknown = [name for name in names or () if name not in spaces]
    if unknown:
        raise UserError(f"No Space named {', '.join(unknown)} in spaces.yaml; the Spaces are {', '.join(spaces)}.")
    return [spaces[name] for name in names] if names else list(spaces.values())


def app_closure(app: str) -> list[str]:
    """`app` and every app its code imports, at any depth (read from the imports, not a table)."""
    found, todo = [], [app]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.append(name)
        for path in (apps.APPS_DIR / name).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    modules = [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    continue
                parts = [m.split(".") for m in modules]
                todo += [p[1] for p in parts if len(p) > 1 and p[0] == apps.APPS_DIR.name and p[1] in apps.specs()]
    return sorted(found)


def tasks_of(app_names: list[str]) -> list[str]:
    """The registry tasks whose models these apps run."""
    return sorted({apps.get(name).models.task for name in app_names})


def registry_rows(tasks: list[str]) -> str:
    """models/registry.toml with only the `[[models]]` rows of `tasks` (comments and settings kept)."""
    kept = []
    for section in re.split(r"(?m)^(?=\[)", registry.REGISTRY_FILE.read_text()):
        if section.startswith("[[models]]") and tomllib.loads(section)["models"][0]["task"] not in tasks:
            continue
        kept.append(section)
    return "".join(kept)


def requirements(extras: tuple[str, ...]) -> list[str]:
    """The project's dependencies plus `extras`, each pinned to the version installed here."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    missing = [extra for extra in extras if extra not in optional]
    if missing:
        raise UserError(f"pyproject.toml has no extra {', '.join(missing)}; the extras are {', '.join(optional)}.")
    wanted: dict[str, set[str]] = {}
    for line in [*project["dependencies"], *(dep for extra in extras for dep in optional[extra])]:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            wanted.setdefault(requirement.name, set()).update(requirement.extras)
    pinned = []
    for name, its_extras in wanted.items():
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise UserError(f"{name} is not installed here, so its tested version is unknown: install the project "
                            f"with the extras {', '.join(extras)} and build again.") from None
        pinned.append(f"{name}{'[' + ','.join(sorted(its_extras)) + ']' if its_extras else ''}=={version}")
    return sorted(pinned, key=str.lower)


def front_matter(space: Space) -> str:
    """The README's YAML header: spaces.yaml's keys, then the generated ones."""
    hub = [e for e in registry.entries(apps.get(space.app).models.task) if e.source == "hub"]
    header = {
        **space.front_matter,
        "sdk": "gradio",
        "sdk_version": importlib.metadata.version("gradio"),
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "app_file": "app.py",
    }
    if hub:
        header["models"] = [e.repo_id for e in hub]
        header["preload_from_hub"] = [f"{e.repo_id} {','.join(e.files)} {e.revision}" for e in hub]
    text = yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=1000)
    for entry in hub:  # a licence that forbids commercial use is said next to the model
        if not entry.commercial_use:
            text = text.replace(f"- {entry.repo_id}\n", f"- {entry.repo_id}  # {entry.licence_line}\n", 1)
    return f"---\n{text}---\n"


def visitor_page(space: Space, namespace: str) -> str:
    spec = apps.get(space.app)
    def where(e) -> str:
        return "embedded in this Space" if e.source == "embedded" else f"`{e.repo_id}` @ `{e.revision[:12]}`"

    rows = "\n".join(f"| `{e.name}` | {where(e)} | {e.license} | {'yes' if e.commercial_use else '**no**'} |"
                     for e in registry.entries(spec.models.task))
    host = f"{namespace}-{space.name}".lower().replace("_", "-").replace(".", "-")
    arguments = ", ".join(f'{key}=handle_file("{value.name}")' if isinstance(value, Path) else f"{key}={value!r}"
                          for key, value in spec.example.items())
    return f"""
# {spec.title}

{spec.summary} One app of demohub, a hub of deep-learning demos that share one model loader, an ONNX
backend beside torch, and one input boundary; this Space runs it alone.

## Models

| model | where | licence | commercial use |
| --- | --- | --- | --- |
{rows}

The default is `{registry.default(spec.models.task).name}`; a model whose licence forbids commercial use is
offered but never the default. Hub models are pinned to the revision shown and preloaded when the Space builds.

## Call it

From Python (`pip install gradio_client`):

```python
from gradio_client import Client, handle_file

client = Client("{namespace}/{space.name}")
print(client.predict({arguments}, api_name="/{spec.name}"))
```

From an assistant: this Space is also an MCP server, at
`https://{host}.hf.space/gradio_api/mcp/` (streamable HTTP), with one tool, `{spec.name}`.
Images go in as URLs or base64 data.
"""


def build_space(space: Space, out: Path, namespace: str | None = None) -> Path:
    """Write one Space's folder under `out`; returns it."""
    folder = out / space.name
    if folder.exists() and not (folder / "app.py").is_file() and any(folder.iterdir()):
        raise UserError(f"{folder} exists and is not a built Space; build into another --out folder.")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    namespace = namespace or space.repo.split("/")[0]
    needed = app_closure(space.app)
    (folder / "apps").mkdir()
    shutil.copy2(apps.APPS_DIR / "__init__.py", folder / "apps" / "__init__.py")
    for name in needed:
        shutil.copytree(apps.APPS_DIR / name, folder / "apps" / name, ignore=IGNORED)
    shutil.copytree(REPO / "shared", folder / "shared", ignore=IGNORED)
    tasks = tasks_of(needed)
    (folder / "models").mkdir()
    (folder / "models" / "registry.toml").write_text(registry_rows(tasks))
    for task in tasks:
        for entry in registry.entries(task):
            if entry.source == "embedded":
                shutil.copytree(entry.local_dir, folder / "models" / entry.path, ignore=IGNORED)
    spec = apps.get(space.app)
    (folder / "app.py").write_text(APP_FILE.format(title=spec.title.lower(), app=space.app))
    (folder / "requirements.txt").write_text("\n".join(requirements((*space.extras, *ALWAYS_EXTRAS))) + "\n")
    if space.packages:
        (folder / "packages.txt").write_text("\n".join(space.packages) + "\n")
    (folder / "README.md").write_text(front_matter(space) + visitor_page(space, namespace))
    return folder


def build(names: list[str] | None, out: str | Path, namespace: str | None = None) -> dict:
    """Build the named Spaces (all when None) under `out`: what `demohub spaces build` prints."""
    out = Path(out)
    built = {}
    for space in select(names):
        folder = build_space(space, out, namespace)
        files = [p for p in folder.rglob("*") if p.is_file()]
        built[space.name] = {"folder": str(folder), "files": len(files),
                             "megabytes": round(sum(p.stat().st_size for p in files) / 2**20, 2)}
    return built


def push(namespace: str, names: list[str] | None, private: bool = False, dry_run: bool = False) -> dict:
    """Build each Space for `namespace` and upload it as one commit to `namespace/<name>` (created
    if needed, with the token huggingface_hub finds). With dry_run, say what would be done."""
    import tempfile

    import huggingface_hub

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", namespace):
        raise UserError(f"--namespace takes a Hub user or organisation name, not {namespace!r}.")
    spaces = select(names)
    if not dry_run and huggingface_hub.constants.HF_HUB_OFFLINE:
        raise UserError("HF_HUB_OFFLINE is set, so nothing can be pushed: unset it, or see the commit with --dry-run.")
    if not dry_run and huggingface_hub.get_token() is None:
        raise UserError("No Hugging Face token was found: run `hf auth login` (or set HF_TOKEN) and push again.")
    pushed = {}
    with tempfile.TemporaryDirectory(prefix="demohub-spaces-") as scratch:
        for space in spaces:
            folder = build_space(space, Path(scratch), namespace)
            repo_id = f"{namespace}/{space.name}"
            message = f"demohub {space.app}: app, models and requirements as built by `demohub spaces push`"
            files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
            if dry_run:
                visibility = "private" if private else "public"
                pushed[repo_id] = {"would_create": f"space {repo_id} (sdk gradio, {visibility}) unless it exists",
                                   "commit_message": message, "files": files, "deletes_stale": STALE}
                continue
            api = huggingface_hub.HfApi()
            try:
                api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
                # files of an earlier push that this build no longer has go in the same commit
                commit = api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=folder,
                                           commit_message=message, delete_patterns=STALE)
            except huggingface_hub.errors.HfHubHTTPError as err:
                raise UserError(f"The Hub refused pushing {repo_id}: {str(err).splitlines()[0]}") from None
            except Exception as err:  # the HTTP client's connection errors are not OSErrors
                if not type(err).__module__.startswith(("httpx", "huggingface_hub")) and not isinstance(err, OSError):
                    raise
                raise UserError(f"The Hub could not be reached to push {repo_id} ({type(err).__name__}); "
                                "check the network and try again.") from None
            pushed[repo_id] = {"commit": commit.oid, "url": f"https://huggingface.co/spaces/{repo_id}",
                               "files": len(files)}
    return pushed
