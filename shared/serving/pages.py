"""Each app's page in the hub, built when it is first asked for (issue #15, cold start).

Building the eight Gradio pages and their routes took about 2 s of the hub's start, before it could
answer anything. Each app's path is now served by an `AppOnFirstVisit`: the first request to it
(its page, `gradio_client`'s config, an API call) builds the page in a worker thread, mounts it as
`ui.mount` does alone (the same hardening), and starts it (gradio's queue, its file sweeps, its MCP
session manager) in a task of its own that lives until the hub stops. Requests that arrive meanwhile
wait for it; the hub's other routes keep answering. Once the default models are loaded, the pages
not yet visited are built in the background (`build_rest`), before /readyz says ready, so a later
first visit only starts one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import anyio
import gradio as gr
from fastapi import FastAPI

from shared.serving import ui

log = logging.getLogger(__name__)

_building = threading.Lock()  # gradio's Blocks context is global: one page is built at a time


class AppOnFirstVisit:
    """The ASGI app at /<name>: the app's Gradio app, built (`build() -> gr.Blocks`) on first use."""

    def __init__(self, path: str, build: Callable[[], gr.Blocks], **settings):
        self.path, self._build, self._settings = path, build, settings
        self.demo: gr.Blocks | None = None  # the page, once built
        self.gradio_app: FastAPI | None = None  # gradio's routes for it, once built
        self._running: asyncio.Task | None = None  # its lifespan, once started
        self._stop = asyncio.Event()
        self._starting = asyncio.Lock()

    def build(self) -> FastAPI:
        """Build the page and its routes (blocking: a worker thread, or `build_rest`'s)."""
        with _building:
            if self.gradio_app is None:
                holder = FastAPI()  # gradio mounts on an app; its routes are the mounted app
                demo = self._build()
                ui.mount(holder, demo, self.path, **self._settings)
                self.demo, self.gradio_app = demo, holder.routes[-1].app
        return self.gradio_app

    async def _start(self) -> FastAPI:
        gradio_app = await anyio.to_thread.run_sync(self.build)
        started = asyncio.Event()

        async def run():  # what gr.mount_gradio_app adds to the parent's lifespan, for this app alone
            async with gradio_app.router.lifespan_context(gradio_app):
                self.demo.run_startup_events()
                await self.demo.run_extra_startup_events()
                # mounting never says so, and gradio's public /startup-events route would run them again
                # (a second queue loop) for anyone who asks (found by the hostile client)
                gradio_app.startup_events_triggered = True
                started.set()
                await self._stop.wait()

        self._running = asyncio.create_task(run(), name=f"demohub {self.path}")
        await asyncio.wait([self._running, asyncio.ensure_future(started.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():  # its start failed: raise why, and the next request tries again
            self._running.result()
        return gradio_app

    async def __call__(self, scope, receive, send) -> None:
        if self._running is None or self._running.done():
            async with self._starting:
                if self._running is None or self._running.done():
                    await self._start()
        await self.gradio_app(scope, receive, send)

    async def stop(self) -> None:
        """End its lifespan (at the hub's shutdown), if it was started."""
        if self._running is not None:
            self._stop.set()
            await asyncio.gather(self._running, return_exceptions=True)


def build_rest(pages: list[AppOnFirstVisit]) -> None:
    """Build the pages nobody has visited yet, one after another (a background thread)."""
    for page in pages:
        try:
            page.build()
        except Exception:  # a bug in one page: logged; its first visit tries again and fails the same way
            log.exception("building the page at %s failed", page.path)
