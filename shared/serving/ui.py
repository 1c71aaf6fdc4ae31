"""Gradio parts every app uses: the safe image input, model and backend pickers, the
"served by" line, error handling and the safe launch settings."""

from __future__ import annotations

import base64
import functools
import html
import logging

import gradio as gr

from shared.contract import Result
from shared.errors import ModelUnavailable, UserError
from shared.inference.backends import BACKENDS
from shared.inputs.images import MAX_UPLOAD_BYTES
from shared.models import registry

log = logging.getLogger(__name__)

QUEUE_SIZE = 32  # requests waiting per app; more are refused at once instead of piling up
SAFE_SETTINGS = dict(
    show_error=False,  # only gr.Error messages reach users, never exception text
    max_file_size=MAX_UPLOAD_BYTES,
    allowed_paths=None,
    enable_monitoring=False,
    footer_links=["api"],
    ssr_mode=False,
)


class ImageInput(gr.Image):
    """`gr.Image` in the browser, but hands the server the raw upload, unopened.

    Gradio's own preprocessing opens the file with Pillow, so a corrupt or non-image upload
    fails there as a bare "Error" before the app runs. Here every upload goes to
    `shared.inputs.images.decode_image` instead, which says what is wrong.
    """

    is_template = True  # use the frontend of gr.Image (and keep its __init__: the config is read from it)

    def preprocess(self, payload) -> str | bytes | None:
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:") and "," in payload.url:
            try:
                return base64.b64decode(payload.url.split(",", 1)[1], validate=True)
            except ValueError:
                raise gr.Error("The upload is a data: URL whose base64 data is malformed. Upload the image "
                               "file again.", print_exception=False) from None
        return payload.path


def model_dropdown(task: str) -> gr.Dropdown:
    choices = [(f"{e.name} ({e.source}, {e.license})", e.name) for e in registry.entries(task)]
    return gr.Dropdown(choices, value=registry.default(task).name, label="Model")


def model_card_line(task: str, name: str | None) -> str:
    try:
        entry = registry.get(task, name)
    except UserError as err:
        return html.escape(str(err))
    where = f"`{entry.repo_id}` @ `{entry.revision[:12]}`" if entry.source == "hub" else entry.source
    return f"**Licence:** {entry.licence_line} · {where} · {entry.description}"


def model_picker(task: str) -> gr.Dropdown:
    """The model dropdown with its licence line below it, kept in step by a private event."""
    model = model_dropdown(task)
    card = gr.Markdown(model_card_line(task, model.value))
    model.change(lambda name: model_card_line(task, name), model, card, api_visibility="private")
    return model


def backend_radio() -> gr.Radio:
    return gr.Radio(list(BACKENDS), value="torch", label="Backend",
                    info="onnx: exported on first use, then run with onnxruntime")


def served_line(result: Result) -> str:
    """Who answered, under which licence, on which backend and precision, how fast, and any notes
    (an offline fallback among them)."""
    entry = result.entry
    line = (f"Served by **{entry.name}** ({entry.licence_line}) on **{result.backend}** ({result.precision}) "
            f"in **{result.latency_ms:.1f} ms**.")
    return line + "".join(f"\n\nNote: {html.escape(note)}" for note in result.all_notes)


def user_errors(fn):
    """Turn known failures into a gr.Error sentence and anything else into a logged apology."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, ModelUnavailable) as err:
            # escape markup (gr.Error renders HTML); quotes are harmless in text and read better to API clients
            raise gr.Error(html.escape(str(err), quote=False), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise gr.Error("The server failed to answer this request; the error was logged. "
                           "Try another input or model.", print_exception=False) from None

    return wrapper


def configure_queue(demo: gr.Blocks) -> gr.Blocks:
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


def launch(demo: gr.Blocks, **overrides) -> None:
    """Run one app alone, as a Space does."""
    configure_queue(demo).launch(share=False, strict_cors=True, **{**SAFE_SETTINGS, **overrides})
