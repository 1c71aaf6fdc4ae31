"""The one place that finds the apps: every folder under `apps/` with a `spec.py` that declares
`SPEC` and an `app.py` that builds `demo` (see shared/contract.py). The hub server, the CLI,
the bench and the tests ask here."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

from shared.contract import AppSpec

APPS_DIR = Path(__file__).resolve().parent.parent / "apps"


@functools.cache
def specs() -> dict[str, AppSpec]:
    """Every app's spec, by name, in folder order."""
    found = {}
    for folder in sorted(p for p in APPS_DIR.iterdir() if (p / "spec.py").is_file()):
        spec = importlib.import_module(f"apps.{folder.name}.spec").SPEC
        if spec.name != folder.name:
            raise ValueError(f"apps/{folder.name}/spec.py names its app {spec.name!r}; it must be {folder.name!r}.")
        found[spec.name] = spec
    return found


def get(name: str) -> AppSpec:
    return specs()[name]


def page(name: str):
    """The app's Gradio Blocks (`demo` in apps/<name>/app.py), built on first use."""
    return importlib.import_module(f"apps.{name}.app").demo
