"""`demohub serve`: every app in one server, each at its own path, with health routes.

    /                   the list of apps
    /<app>/             the app's Gradio page and API (gradio_client connects here)
    /healthz            the process is up
    /readyz             every app's default model is loaded (503 until then)

Apps are mounted on FastAPI with the safe settings of `shared.serving.ui` and a bounded queue each.
"""

from __future__ import annotations

import html
import logging
import threading

import gradio as gr
import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

from shared import apps
from shared.errors import UserError
from shared.serving import ui

log = logging.getLogger(__name__)


def add_local_models(specs: list[str]) -> None:
    """`APP=DIR` pairs from `--add-model`: offered in that app's dropdown."""
    for spec in specs:
        app, sep, folder = spec.partition("=")
        if not sep:
            raise UserError(f"--add-model takes APP=DIR, not {spec!r}.")
        if app not in apps.specs():
            raise UserError(f"--add-model: unknown app {app!r}; the apps are {', '.join(apps.specs())}.")
        apps.get(app).models.resolve(folder)


def _landing_page(demos: dict[str, gr.Blocks]) -> str:
    items = "".join(f'<li><a href="/{name}/">{html.escape(demo.title)}</a></li>' for name, demo in demos.items())
    return (f"<!doctype html><html><head><title>demohub</title></head><body><h1>demohub</h1>"
            f"<p>Pretrained deep-learning apps.</p><ul>{items}</ul></body></html>")


def build_hub(app_names: tuple[str, ...], extra_models: list[str] = ()) -> FastAPI:
    add_local_models(list(extra_models))
    hub = FastAPI(title="demohub")
    ready = threading.Event()
    specs = {name: apps.get(name) for name in app_names}
    demos = {name: apps.page(name) for name in specs}

    @hub.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @hub.get("/readyz")
    def readyz():
        return JSONResponse({"ready": ready.is_set()}, status_code=200 if ready.is_set() else 503)

    @hub.get("/", response_class=HTMLResponse)
    def landing():
        return _landing_page(demos)

    for name, demo in demos.items():
        gr.mount_gradio_app(hub, ui.configure_queue(demo), path=f"/{name}", **ui.SAFE_SETTINGS)

    def preload():
        for spec in specs.values():
            spec.models.load()
        ready.set()

    threading.Thread(target=preload, name="preload", daemon=True).start()
    return hub


def serve(app_names: tuple[str, ...], host: str = "127.0.0.1", port: int = 7860,
          extra_models: list[str] = ()) -> None:
    hub = build_hub(app_names, extra_models)
    print(f"demohub: serving {', '.join(app_names)} at http://{host}:{port}/", flush=True)
    uvicorn.run(hub, host=host, port=port, log_level="warning")
