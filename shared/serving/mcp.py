"""Each app's main function as a Model Context Protocol tool (gradio's `mcp_server=True`).

    demohub serve --mcp        # every app's tool at /<app>/gradio_api/mcp/ (streamable HTTP)
    python app.py              # a built Space: its one tool at /gradio_api/mcp/

gradio names a tool after the event's function (the app's name) and describes it from the
function's docstring ("Args:" lines become the parameters' descriptions). An app whose main
function has no docstring gets one written from its spec and its input components, so that
every tool tells a model what each parameter is, its choices or range, and how files go in.
"""

from __future__ import annotations

import inspect

import gradio as gr

from shared import apps

FILE_INPUT = "an image file, given as an http(s) URL or a base64 data URI (data:image/png;base64,...)"


def _parameter(component) -> str:
    """One line on what a component takes."""
    label = component.label or type(component).__name__
    if isinstance(component, (gr.Image, gr.File)):
        return f"{label}: {FILE_INPUT}."
    line = label
    choices = getattr(component, "choices", None)
    if choices:
        line += ". One of: " + ", ".join(str(value) for _, value in choices)
    if isinstance(component, (gr.Slider, gr.Number)) and component.minimum is not None:
        line += f". A number from {component.minimum} to {component.maximum}"
    if getattr(component, "info", None):
        line += f" ({component.info})"
    if component.value not in (None, "", []):
        line += f". Default: {component.value}"
    return line + "."


def main_event(demo: gr.Blocks, app: str):
    """The event whose api_name is the app's name (the contract's one public endpoint)."""
    for block_fn in demo.fns.values():
        if block_fn.api_name == app:
            return block_fn
    raise ValueError(f"apps/{app}/app.py has no event with api_name={app!r}.")


def describe(demo: gr.Blocks, app: str) -> gr.Blocks:
    """Give the app's main function a tool docstring, unless it has one; returns `demo`."""
    block_fn = main_event(demo, app)
    if inspect.getdoc(block_fn.fn):
        return demo
    spec = apps.get(app)
    names = list(inspect.signature(block_fn.fn).parameters)
    arguments = "\n".join(f"    {name}: {_parameter(component)}"
                          for name, component in zip(names, block_fn.inputs, strict=False))
    outputs = ", ".join(component.label or type(component).__name__.lower() for component in block_fn.outputs)
    block_fn.fn.__doc__ = (f"{spec.title}: {spec.summary}\n\nArgs:\n{arguments}\n\n"
                           f"Returns:\n    {outputs}.")
    return demo
