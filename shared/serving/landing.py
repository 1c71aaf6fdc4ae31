"""The hub's front door, `/`: a card per app with what it does, an example input, its default
model and licence, its backends, whether it is ready (as /readyz says), and links to the app
and its API page. Plain HTML in the look of gradio's default theme; no script, nothing fetched."""

from __future__ import annotations

import base64
import functools
import html
import inspect
import io
import urllib.parse
from pathlib import Path

from PIL import Image

from shared.contract import AppSpec
from shared.inference import backends
from shared.models import registry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# gradio's default theme: orange primary, neutral greys, IBM Plex Sans (the system font offline)
STYLE = """
body { margin: 0; background: #fff; color: #27272a;
       font-family: "IBM Plex Sans", ui-sans-serif, system-ui, sans-serif; }
header { padding: 1.5rem 2rem 0.5rem; }
header h1 { margin: 0; font-size: 1.8rem; } header p { margin: 0.3rem 0 0; color: #52525b; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 1rem;
       padding: 1rem 2rem 2rem; }
.card { border: 1px solid #e4e4e7; border-radius: 8px; background: #fafafa; padding: 1rem; display: flex;
        flex-direction: column; gap: 0.5rem; }
.card h2 { margin: 0; font-size: 1.2rem; } .card h2 a { color: inherit; text-decoration: none; }
.card p { margin: 0; } .facts { color: #52525b; font-size: 0.9rem; }
.example { height: 128px; display: flex; align-items: center; justify-content: center; background: #fff;
           border: 1px solid #e4e4e7; border-radius: 6px; overflow: hidden; color: #52525b; font-style: italic;
           padding: 0 0.5rem; }
.example img { max-height: 128px; max-width: 100%; }
.status { font-weight: 600; } .ready { color: #15803d; } .degraded { color: #b91c1c; } .loading { color: #a16207; }
.links { display: flex; gap: 0.5rem; margin-top: auto; }
.links a { padding: 0.4rem 0.9rem; border-radius: 6px; text-decoration: none; font-weight: 600; }
.open { background: #f97316; color: #fff; } .api { background: #f4f4f5; color: #27272a; border: 1px solid #e4e4e7; }
"""
# The hub's icon: the landing page's, and /favicon.ico's for the apps' pages (gradio's ask for it there).
FAVICON_SVG = ("<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'><rect width='32' height='32' rx='7' "
               "fill='#f97316'/><text x='16' y='23' font-size='20' text-anchor='middle' fill='white' "
               "font-family='sans-serif' font-weight='bold'>d</text></svg>")
FAVICON = "data:image/svg+xml," + urllib.parse.quote(FAVICON_SVG)


@functools.cache
def thumbnail(path: str) -> str:
    """An example image as a small PNG data URL, made once."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((192, 128))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def example(spec: AppSpec) -> str:
    """The first example the page offers its default model (or the app's `card_image`, a result of
    an app that takes no image): a thumbnail, a line of text, or nothing."""
    rows = spec.examples_for(registry.default(spec.models.task))
    first = spec.card_image or (rows[0][0] if rows and rows[0] else None)
    if isinstance(first, (str, Path)) and str(first).lower().endswith(IMAGE_SUFFIXES):
        what = "an example result" if spec.card_image else "an example input"
        return f'<div class="example"><img src="{thumbnail(str(first))}" alt="{what}"></div>'
    if isinstance(first, str):
        return f'<div class="example">“{html.escape(first.splitlines()[0])}”</div>'
    return ""


def status_line(state: dict | None) -> str:
    """One app's /readyz state as words."""
    if not state or state.get("ready") is None:
        return '<span class="status loading">loading its model</span>'
    if state["ready"]:
        return '<span class="status ready">ready</span>'
    return f'<span class="status degraded">degraded: {html.escape(state["reason"])}</span>'


def card(spec: AppSpec, state: dict | None) -> str:
    model = registry.default(spec.models.task)
    # an app without a backend choice (adversarial: the attack needs torch's gradients) runs on torch
    offered = backends.offered(model) if "backend" in inspect.signature(spec.predict).parameters else ["torch"]
    choices = " or ".join(offered) if len(offered) < 3 else ", ".join(offered[:-1]) + " or " + offered[-1]
    return (f'<section class="card" id="app-{spec.name}"><h2><a href="/{spec.name}/">{html.escape(spec.title)}</a></h2>'
            f"{example(spec)}<p>{html.escape(spec.summary)}</p>"
            f'<p class="facts">Default model <b>{html.escape(model.name)}</b> ({html.escape(model.licence_line)}); '
            f"{'backends' if len(offered) > 1 else 'backend'}: {choices}.</p><p>{status_line(state)}</p>"
            f'<div class="links"><a class="open" href="/{spec.name}/">Open the app</a>'
            f'<a class="api" href="/{spec.name}/?view=api">API</a></div></section>')


def page(specs: dict[str, AppSpec], status: dict[str, dict]) -> str:
    """The landing page's HTML, with each app's readiness as it is now."""
    cards = "".join(card(spec, status.get(name)) for name, spec in specs.items())
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>demohub</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="{FAVICON}"><style>{STYLE}</style></head><body>'
            f"<header><h1>demohub</h1><p>Pretrained deep-learning apps: each runs alone as a Space, "
            f"and all of them here. Pick one, or call its API.</p></header><main>{cards}</main></body></html>")
