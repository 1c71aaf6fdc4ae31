"""`demohub serve`: every app in one server, each at its own path, with health routes.

    /                   a card per app: what it does, its default model, whether it is ready (shared/serving/landing.py)
    /<app>/             the app's Gradio page and API (gradio_client connects here)
    /<app>/gradio_api/mcp/   with --mcp: the app's main function as an MCP tool (streamable HTTP)
    /healthz            the process is up
    /readyz             JSON per app: {"ready": true} or {"ready": false, "reason": "..."};
                        503 while the default models load and the pages are built, or if no
                        model loaded; 200 otherwise
                        ("status": "degraded" when some app's default model failed)

Apps are mounted on FastAPI with the hardening of `shared.serving.ui` (bounded queue, uploaded files
only, atomic result files) and one request-body limit for every route; each app's page is built
when it is first asked for, and the rest once the default models are loaded (shared/serving/pages.py).
A failing app's model does not stop the others: its page and /readyz say what is missing.

On SIGTERM the server stops accepting connections, tells each request still waiting in a queue
that it was not started (one sentence), ends the open pages' session streams, and lets the running
ones finish for up to SHUTDOWN_GRACE_S seconds (longer than the slowest request, an attack's 20 s
limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading

import gradio as gr
import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response

from shared import apps
from shared.errors import ModelUnavailable, UserError
from shared.serving import landing as landing_page
from shared.serving import mcp, ui
from shared.serving.clients import OpenRequestLimit, UploadBudget
from shared.serving.connections import HeaderDeadline
from shared.serving.pages import AppOnFirstVisit, build_rest

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 30
SHUTTING_DOWN = "The server is restarting and did not start this request: send it again in a minute."


def add_local_models(specs: list[str]) -> None:
    """`APP=DIR` pairs from `--add-model`: offered in that app's dropdown."""
    for spec in specs:
        app, sep, folder = spec.partition("=")
        if not sep:
            raise UserError(f"--add-model takes APP=DIR, not {spec!r}.")
        if app not in apps.specs():
            raise UserError(f"--add-model: unknown app {app!r}; the apps are {', '.join(apps.specs())}.")
        apps.get(app).models.resolve(folder)


def _status_banner(name: str) -> str:
    """A script for the app's page: when /readyz says this app's model failed, say why on top."""
    show = ("() => fetch(new URL('../readyz', location.href)).then(r => r.json()).then(s => {"
            " const app = (s.apps || {})[" + json.dumps(name) + "]; if (!app || app.ready !== false) return;"
            " const p = document.createElement('p'); p.id = 'demohub-degraded';"
            " p.style.cssText = 'background:#fee;color:#600;padding:0.8em;margin:0';"
            " p.textContent = 'This app cannot serve its default model: ' + app.reason; document.body.prepend(p);"
            " }).catch(() => {})")
    return (f"<script>(() => {{ const show = {show}; if (document.readyState === 'loading') "
            "addEventListener('DOMContentLoaded', show); else show(); })();</script>")


def _page(name: str, mcp_server: bool) -> gr.Blocks:
    demo = apps.page(name)
    return mcp.describe(demo, name) if mcp_server else demo


def build_hub(app_names: tuple[str, ...], extra_models: list[str] = (), mcp_server: bool = False,
              own_url: str = "http://127.0.0.1:7860") -> FastAPI:
    """The hub's FastAPI app; `own_url` is where it will listen (its MCP tools call the apps there)."""
    add_local_models(list(extra_models))
    pages = {name: AppOnFirstVisit(f"/{name}", functools.partial(_page, name, mcp_server),
                                   head=_status_banner(name), mcp_server=mcp_server, own_url=own_url)
             for name in app_names}

    @contextlib.asynccontextmanager
    async def lifespan(hub: FastAPI):
        yield
        await asyncio.gather(*(page.stop() for page in pages.values()))

    # no /docs, /redoc or /openapi.json: each app documents its API on its own page (gradio's "Use via API")
    hub = FastAPI(title="demohub", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    hub.add_middleware(UploadBudget)
    hub.add_middleware(ui.BodySizeLimit)  # an oversized body is refused before it is counted
    hub.add_middleware(ui.NoFetchedFiles)
    hub.add_middleware(OpenRequestLimit)  # the outermost: every open request counts
    status: dict[str, dict] = {}  # app -> {"ready": bool, "reason": str}, filled by the preload thread
    done = threading.Event()
    specs = {name: apps.get(name) for name in app_names}

    @hub.get("/healthz")
    async def healthz():  # on the event loop: no worker thread needed to answer
        return {"status": "ok"}

    @hub.get("/readyz")
    async def readyz():
        apps = {name: status.get(name, {"ready": None, "reason": "loading"}) for name in app_names}
        ready = done.is_set() and any(app["ready"] for app in apps.values())
        degraded = ready and not all(app["ready"] for app in apps.values())
        body = {"ready": ready, "status": "degraded" if degraded else "ok" if ready else "starting", "apps": apps}
        return JSONResponse(body, status_code=200 if ready else 503)

    @hub.get("/", response_class=HTMLResponse)
    def landing():
        return landing_page.page(specs, status)

    @hub.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(landing_page.FAVICON_SVG, media_type="image/svg+xml")

    for name, page in pages.items():
        hub.mount(f"/{name}", page)

    def preload():
        for name, spec in specs.items():
            try:
                spec.models.load()
                status[name] = {"ready": True}
            except (ModelUnavailable, UserError) as err:
                status[name] = {"ready": False, "reason": str(err)}
                log.warning("%s is degraded: %s", name, err)
            except Exception:  # a bug: logged, and the other apps still load
                log.exception("loading the model of %s failed", name)
                status[name] = {"ready": False, "reason": "its model failed to load; the error was logged."}
        build_rest(list(pages.values()))  # warm: a replica gets traffic once its pages are built too
        done.set()

    threading.Thread(target=preload, name="preload", daemon=True).start()
    hub.state.pages = pages
    return hub


def _answer_waiting_requests(demos: list[gr.Blocks]) -> None:
    """Answer every request still waiting in an app's queue with SHUTTING_DOWN, so that none is
    cut off without a word when the grace period ends (gradio has no public call for this)."""
    from gradio.server_messages import ProcessCompletedMessage

    for demo in demos:
        queue = demo._queue
        queue.max_size = 0  # a request arriving now is told the queue is full
        for waiting in queue.event_queue_per_concurrency_id.values():
            events, waiting.queue = waiting.queue, []
            for event in events:
                queue.event_ids_to_events.pop(event._id, None)
                queue.send_message(event, ProcessCompletedMessage(
                    output={"error": SHUTTING_DOWN, "visible": True, "title": "Error"}, success=False))


def _end_session_heartbeats(pages: list[AppOnFirstVisit]) -> None:
    """End the session heartbeat stream that every open page and gradio_client holds: it never
    ends by itself, and gradio ends it (its app's `stop_event`) only for an app it launched, so a
    mounted app's streams kept the server waiting out SHUTDOWN_GRACE_S with nothing running."""
    for page in pages:
        if page.gradio_app is not None:
            page.gradio_app.stop_event.set()


class _Server(uvicorn.Server):
    async def shutdown(self, sockets=None) -> None:
        pages = list(self.config.app.state.pages.values())
        _answer_waiting_requests([page.demo for page in pages if page.demo is not None])
        _end_session_heartbeats(pages)
        await super().shutdown(sockets)


def serve(app_names: tuple[str, ...], host: str = "127.0.0.1", port: int = 7860,
          extra_models: list[str] = (), mcp_server: bool = False) -> None:
    own = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # every address: its loopback
    own = f"[{own}]" if ":" in own else own
    hub = build_hub(app_names, extra_models, mcp_server, own_url=f"http://{own}:{port}")
    print(f"demohub: serving {', '.join(app_names)} at http://{host}:{port}/", flush=True)
    # forwarded_allow_ips stays at uvicorn's default (127.0.0.1): X-Forwarded-* headers are trusted
    # only from a proxy on this machine (see README, Security).
    config = uvicorn.Config(hub, host=host, port=port, log_level="warning", http=HeaderDeadline,
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    _Server(config).run()
