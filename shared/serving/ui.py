"""Gradio parts every app uses: the safe image and drawing inputs, model and backend pickers, the
"served by" line, error handling and the safe launch settings.

`harden(demo)` is what every app gets, alone (`launch`) or mounted in the hub (`mount`): a
bounded queue, file paths from API clients checked before gradio touches them, and result
images written atomically. `BodySizeLimit` refuses an oversized request body before it is read.
"""

from __future__ import annotations

import contextlib
import functools
import html
import inspect
import json
import logging
import os
import re
import tempfile
import time
import types
from pathlib import Path

import gradio as gr
from gradio import processing_utils, route_utils, state_holder
from gradio.components.base import server
from gradio.components.image_editor import EditorDataBlobs
from gradio.exceptions import InvalidPathError
from gradio.utils import get_upload_folder
from gradio_client import utils as client_utils
from PIL import Image
from starlette.middleware import Middleware

from shared.contract import AppSpec, Result
from shared.errors import ModelUnavailable, UserError
from shared.inference import batching
from shared.inference.backends import offered
from shared.inputs.images import MAX_UPLOAD_BYTES, NOT_AN_UPLOAD, decode_image, uploaded_file
from shared.models import hub, registry
from shared.serving.clients import MAX_BODY_BYTES, OpenRequestLimit, UploadBudget, client_address, refuse

log = logging.getLogger(__name__)

QUEUE_SIZE = 32  # requests waiting per app; more are refused at once instead of piling up
# One client may hold at most a quarter of an app's waiting requests: one address re-sending 20-second
# occlusions filled all 32 places and locked everyone out of the app's quick endpoints, and at half of
# them two addresses still did. It takes five now (distributed floods: README, Security).
MAX_WAITING_PER_CLIENT = int(os.environ.get("DEMOHUB_MAX_WAITING_PER_CLIENT", QUEUE_SIZE // 4))
# How many requests an endpoint whose model calls are gathered (shared/inference/batching.py) runs
# at once: each decodes its input in its own thread, and their model calls become one batch.
BATCHED_CONCURRENCY = batching.MAX_BATCH
# gradio would fetch a public URL (safehttpx reads the whole response into memory before any size check)
URL_REFUSED = ("Images are taken as uploads, not as URLs: download the image and upload the file instead "
               "(gradio_client's handle_file uploads a local file).")
# Files one request may name (the embedding map takes up to 500): gradio checks and moves each one on
# the event loop, so 8,000 references in one 1.2 MB body held every route for 3 s.
MAX_FILES_PER_REQUEST = 500
# Uploads and result files older than this are deleted (gradio's `delete_cache`, every CACHE_SWEEP_S):
# nothing else removes them, and every upload is kept in a folder of its own.
CACHE_MAX_AGE_S, CACHE_SWEEP_S = 3600, 600
# The drawings a page sends ahead of its event (`DrawingInput.accept_blobs`): a 256-px canvas is a PNG
# of a few KB.
MAX_DRAWING_BYTES = 2**20
MAX_DRAWINGS_KEPT_BYTES = 32 * 2**20
WRONG_KIND = ("An input of this request is not of the kind its field takes (a number, one of the choices, "
              "an uploaded file): see the app's API page for each field.")
_NOT_A_CHOICE = re.compile(r"Value: (.*) is not in the list of choices: (.*)", re.DOTALL)
SAFE_SETTINGS = dict(
    show_error=False,  # only gr.Error messages reach users, never exception text
    max_file_size=MAX_UPLOAD_BYTES,
    allowed_paths=None,
    enable_monitoring=False,
    footer_links=["api"],
    ssr_mode=False,
    run_history=False,  # its page offers to save runs to a Hugging Face bucket with the server's own token
)
# FastAPI's own schema of every route at /<app>/openapi.json (gradio turns off only its /docs pages);
# gradio's API documentation (/gradio_api/info, the page's "Use via API") stays
NO_FASTAPI_SCHEMA = {"openapi_url": None}


class ImageInput(gr.Image):
    """`gr.Image` in the browser, but hands the server the path of the upload, unopened.

    Gradio's own preprocessing opens the file with Pillow, so a corrupt or non-image upload
    fails there as a bare "Error" before the app runs. Here every upload goes to
    `shared.inputs.images.decode_image` instead, which says what is wrong. Only a regular file inside
    gradio's upload folder is passed on (`harden` checks the same before gradio copies anything).
    """

    is_template = True  # use the frontend of gr.Image (and keep its __init__: the config is read from it)

    def preprocess(self, payload) -> str | None:
        if payload is None:
            return None
        try:
            return str(uploaded_file(payload.path, get_upload_folder()))
        except UserError as err:
            raise refusal(str(err)) from None


class DrawingInput(gr.Sketchpad):
    """`gr.Sketchpad` in the browser; on the server only the drawing itself (the canvas's composite)
    is read, through `decode_image` as every upload is.

    gradio's ImageEditor opens every image of its payload with Pillow itself (any format, its
    decompression-bomb warning silenced, before any size check), and keeps each blob a page sends
    ahead (`accept_blobs`) under any id and layer index the client names, for ever: one 600-byte
    request with a layer index of 20,000,000 took 150 MB. Here only composites are kept, each
    at most MAX_DRAWING_BYTES, the oldest dropped past MAX_DRAWINGS_KEPT_BYTES in all.
    """

    def get_block_name(self) -> str:  # gr.Sketchpad's frontend, ImageEditor's (it is a template of it)
        return "imageeditor"

    get_block_class = get_block_name

    @server
    def accept_blobs(self, data) -> None:
        kind, drawing_id, blob = data.data["type"], str(data.data["id"]), data.files[0][1]
        if kind != "composite" or len(blob) > MAX_DRAWING_BYTES or len(drawing_id) > 64:
            return  # the background and layers are never read; an oversized drawing reads as none
        self.blob_storage.pop(drawing_id, None)
        self.blob_storage[drawing_id] = EditorDataBlobs(background=None, layers=[], composite=blob)
        while sum(len(kept.composite) for kept in self.blob_storage.values()) > MAX_DRAWINGS_KEPT_BYTES:
            self.blob_storage.pop(next(iter(self.blob_storage)))  # the oldest

    def preprocess(self, payload) -> dict | None:
        if payload is None:
            return None
        if payload.id is not None:
            kept = self.blob_storage.pop(payload.id, None)
            drawing = kept.composite if kept else None
        else:
            drawing = payload.composite and payload.composite.path
        try:
            if isinstance(drawing, str):
                drawing = uploaded_file(drawing, get_upload_folder())
            composite = decode_image(drawing).image if drawing else None
        except UserError as err:
            raise refusal(str(err)) from None
        return {"background": None, "layers": [], "composite": composite}


def model_dropdown(task: str, offers=lambda entry: True, label: str = "Model", value: str | None = None,
                   **dropdown) -> gr.Dropdown:
    """The task's models that `offers` accepts (each with its source and licence, and a Hub model that
    cannot be loaded here says so), `value` or the default picked."""
    offered = [e for e in registry.entries(task) if offers(e)]
    default = registry.default(task)
    choices = [(f"{e.name} ({e.source}, {e.license}{'' if hub.obtainable(e) else '; offline: not downloaded'})",
                e.name) for e in offered]
    picked = value or (default.name if default in offered else offered[0].name)
    return gr.Dropdown(choices, value=picked, label=label, **dropdown)


def model_card_line(task: str, name: str | None) -> str:
    try:
        entry = registry.get(task, name)
    except UserError as err:
        return html.escape(str(err))
    where = f"`{entry.repo_id}` @ `{entry.revision[:12]}`" if entry.source == "hub" else entry.source
    return f"**Licence:** {entry.licence_line} · {where} · {entry.description}"


def model_picker(task: str, offers=lambda entry: True, label: str = "Model") -> gr.Dropdown:
    """The model dropdown with its licence line below it, kept in step by a private event."""
    model = model_dropdown(task, offers, label)
    card = gr.Markdown(model_card_line(task, model.value))
    model.change(lambda name: model_card_line(task, name), model, card, api_visibility="private")
    return model


def example_rows(spec: AppSpec, model: str | None) -> list[list]:
    """The example rows for the model picked (an unknown name gets the photos)."""
    try:
        entry = registry.get(spec.models.task, model)
    except UserError:
        return spec.examples
    return spec.examples_for(entry)


def model_examples(spec: AppSpec, model: gr.Dropdown, inputs: list) -> None:
    """The page's examples, following the model picked: digits or scenes for a model that knows
    only those, photos for the others (each set is a gr.Examples in a column; a private event
    shows one column: updating a gr.Dataset would copy its files again, and gradio refuses the
    photos' folder)."""
    if not spec.plain_examples:
        gr.Examples(spec.examples, inputs=inputs)
        return
    shown = example_rows(spec, model.value)
    sets = []
    for rows in (spec.plain_examples, spec.examples):
        with gr.Column(visible=rows == shown) as column:
            gr.Examples(rows, inputs=inputs)
        sets.append((rows, column))

    def follow(name):
        rows = example_rows(spec, name)
        return [gr.Column(visible=candidate == rows) for candidate, _ in sets]

    model.change(follow, model, [column for _, column in sets], api_visibility="private")


def offered_backends(task: str, name: str | None) -> list[str]:
    """The backends the page offers for a model (`backends.offered`; the task still refuses any other with a
    sentence, for API clients); every backend that runs here for a name the registry does not know
    (translation's families, whose models the languages pick)."""
    try:
        entry = registry.get(task, name)
    except UserError:
        return offered(None)
    return offered(entry)


def backend_radio(task: str, model: gr.Dropdown) -> gr.Radio:
    """The backend choice; it offers only the backends of the model picked in `model`."""
    backend = gr.Radio(offered_backends(task, model.value), value="torch", label="Backend",
                       info="onnx: exported on first use, then run with onnxruntime; int8 (onnxruntime) and bf16 "
                            "(OpenVINO) where the model offers them")

    def follow(name, chosen):
        offered = offered_backends(task, name)
        return gr.Radio(choices=offered, value=chosen if chosen in offered else "torch")

    model.change(follow, [model, backend], backend, api_visibility="private")
    return backend


def duration(ms: float) -> str:
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def served_line(result: Result) -> str:
    """Who answered, under which licence, on which backend and precision, how fast, and any notes
    (an offline fallback among them)."""
    entry = result.entry
    line = (f"Served by **{entry.name}** ({entry.licence_line}) on **{result.backend}** ({result.precision}) "
            f"in **{duration(result.latency_ms)}** (the model itself: {duration(result.model_ms)}).")
    return line + "".join(f"\n\nNote: {html.escape(note)}" for note in result.all_notes)


def enlarged(image: Image.Image, side: int) -> Image.Image:
    """A small picture (a 32-px digit, a 128-px scene) shown about `side` px wide, pixels kept sharp."""
    scale = max(1, side // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def score(value: float | None) -> float | None:
    """A score as the pages' tables show it: three places."""
    return None if value is None else round(value, 3)


def counted(n: int, noun: str) -> str:
    """"1 sentence", "2 sentences": a count as the page says it."""
    return f"{n} {noun}{'s' * (n != 1)}"


def refusal(message: str) -> gr.Error:
    """The error a page shows as one sentence, kept on screen until closed (gradio's toast faded after
    10 s and left a bare "Error" badge; found by a visitor), with no traceback in the log."""
    return gr.Error(message, print_exception=False, duration=None)


@contextlib.contextmanager
def _as_sentences(name: str):
    try:
        yield
    except (UserError, ModelUnavailable) as err:
        # escape markup (gr.Error renders HTML); quotes are harmless in text and read better to API clients
        raise refusal(html.escape(str(err), quote=False)) from None
    except gr.Error:
        raise
    except Exception:
        log.exception("%s failed", name)
        raise refusal("The server failed to answer this request; the error was logged. "
                       "Try another input or model.") from None


def user_errors(fn):
    """Turn known failures into a gr.Error sentence and anything else into a logged apology
    (for a generator, one that streams its answer, while it runs)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            with _as_sentences(fn.__name__):
                yield from fn(*args, **kwargs)

        return streaming

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _as_sentences(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper


def clear_on(event, outputs: list) -> None:
    """Put `outputs` back as the page first showed them, in the browser, the moment `event` (a listener
    such as `button.click`) fires, with no server round trip (as gradio's ClearButton does): a refused
    request then leaves gradio's error badge over nothing, not over the answer to an earlier input.
    Text is emptied with "": gradio's page applies no update whose values are all null."""
    emptied = ["" if isinstance(c, gr.Markdown | gr.Textbox) else c.value for c in outputs]
    event(None, None, outputs, js=f"() => {json.dumps(emptied)}", queue=False, show_progress="hidden",
          api_visibility="private")


def configure_queue(demo: gr.Blocks) -> gr.Blocks:
    # api_open=False: gradio's direct routes (/gradio_api/run/, /gradio_api/api/) skip the queue,
    # and so its limits, unless the app runs on a Space; here they answer 404 and every call queues.
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1, api_open=False)
    queue = demo._queue
    # After every event gradio summed up the last 10,000 (a pandas frame, in a worker thread) for its
    # monitoring dashboard, which SAFE_SETTINGS turn off: 2 ms of the GIL a request, 8 ms on a server
    # that has answered 10,000. The summary stays the empty one the dashboard would show.
    queue.compute_analytics_summary = lambda records: queue.cached_event_analytics_summary
    push = queue.push

    def client_of(request) -> str:
        return client_address(request.headers, (request.client.host,) if request.client else None)

    async def push_unless_the_client_holds_its_share(body, request, username):
        client = client_of(request)
        waiting = sum(client_of(event.request) == client
                      for line in queue.event_queue_per_concurrency_id.values() for event in line.queue)
        if waiting >= MAX_WAITING_PER_CLIENT:
            return False, (f"You already have {waiting} requests waiting for this app; wait for their answers "
                           "before sending more."), "queue_full"
        return await push(body, request, username)

    queue.push = push_unless_the_client_holds_its_share
    return demo


def _count_files(value) -> int:
    found = []
    client_utils.traverse(value, lambda file: found.append(1) or file, client_utils.is_file_obj)
    return len(found)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _short(message: str) -> str:
    """gradio's own refusals, cut: a refused choice is quoted whole (a megabyte in, a megabyte out)."""
    refused = _NOT_A_CHOICE.fullmatch(message)
    if refused:
        return f"Value {_cut(refused.group(1), 60)} is not one of the choices: {_cut(refused.group(2), 200)}."
    return _cut(message, 300)


def _check_files(value) -> None:
    """Refuse any file a request's input names that is not a regular file inside gradio's upload
    folder (one sentence, whether it exists or not), and any URL."""

    def check(file: dict) -> dict:
        if client_utils.is_http_url_like(file["path"]):
            raise refusal(URL_REFUSED)
        try:
            uploaded_file(file["path"], get_upload_folder())
        except UserError as err:
            raise refusal(str(err)) from None
        return file

    client_utils.traverse(value, check, client_utils.is_file_obj)


def harden(demo: gr.Blocks) -> gr.Blocks:
    """The queue and input checks every app gets, alone or mounted in the hub.

    Gradio hashes and copies a file an API client names before any component sees it (and
    skips its own "uploaded by a user" check while an app is mounted rather than launched),
    so the check runs first, on the raw inputs of every event of the app.
    """
    preprocess_data = demo.preprocess_data

    @functools.wraps(preprocess_data)
    async def checked(block_fn, inputs, state, explicit_call=False):
        files = sum(_count_files(value) for value in inputs)
        if files > MAX_FILES_PER_REQUEST:
            raise refusal(f"This request names {files:,} files; one request takes at most "
                           f"{MAX_FILES_PER_REQUEST}.")
        for value in inputs:
            _check_files(value)
        try:
            return await preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error as err:
            raise refusal(_short(err.message)) from None
        except InvalidPathError:  # gradio's own check, should ours ever let a path through
            raise refusal(NOT_AN_UPLOAD) from None
        except Exception:
            # a value a component cannot read (a word for a slider, text for an image): gradio
            # would answer a bare "Error"
            log.info("an input did not fit its field", exc_info=True)
            raise refusal(WRONG_KIND) from None

    demo.preprocess_data = checked
    demo.delete_cache = demo.delete_cache or (CACHE_SWEEP_S, CACHE_MAX_AGE_S)
    return configure_queue(demo)


def remove_aborted_uploads(upload_folder: str | Path, age_s: float | None) -> None:
    """Delete the half-written uploads older than `age_s` (all of them for None) in gradio's upload
    folder: the temporary files (`tmp...`, at its top level) of an upload cut off by the body limit,
    or refused for too many files or a bad name, which gradio leaves behind. A finished upload is
    moved into a folder of its own, so no file at the top level is in use for long."""
    for path in Path(upload_folder).glob("tmp*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink() and (
                    age_s is None or time.time() - path.lstat().st_mtime > age_s):
                path.unlink()


_gradio_delete_files = route_utils.delete_files_created_by_app


def _delete_files_created_by_app(blocks: gr.Blocks, age: int | None) -> None:
    """gradio's scheduled deletion (`delete_cache`) of an app's files, and of the aborted uploads; at
    shutdown (no age) only the old ones: replicas share the upload folder, and another one's upload
    may be under way."""
    _gradio_delete_files(blocks, age)
    remove_aborted_uploads(get_upload_folder(), CACHE_MAX_AGE_S if age is None else age)


route_utils.delete_files_created_by_app = _delete_files_created_by_app


def _save_pil_to_cache(img: Image.Image, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """gradio's `save_pil_to_cache`, but the file named by its content is written once, under a
    temporary name and renamed into place: gradio rewrote it in place, so a client downloading
    an identical result from an earlier request could read it half-written."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    if not path.is_file():
        fd, scratch = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(scratch, path)
    return str(path)


# One place for every app and every image output (gr.Image, AnnotatedImage, Gallery all call it).
processing_utils.save_pil_to_cache = _save_pil_to_cache

_gradio_session_init = state_holder.SessionState.__init__
_gradio_session_components = state_holder.SessionState.components


def _session_init(self, blocks: gr.Blocks) -> None:
    """gradio's SessionState, without the configs of the page's blocks, made when first read (below).

    gradio made them at the start of every session, and every call of an API client that sends no
    session (curl, gradio's /call/ API, the load bench) is a new session: a get_config of each of
    the page's ~50 blocks, 5 ms of the GIL a call, and 80 KB kept for each of up to 10,000 sessions.
    They are read only by a deep link (`components`); a block's config that an event updates is made
    then, as gradio does (`_update_value_in_config`, `_update_config`, `__setitem__`)."""
    _gradio_session_init(self, types.SimpleNamespace(default_config=blocks.default_config, blocks={}))
    self.page_block_ids = list(blocks.blocks)  # whose configs gradio made up front


def _session_components(self):
    for key in self.page_block_ids:
        if key not in self.config_values and key in self.blocks_config.blocks:
            self.config_values[key] = self.blocks_config.config_for_block(key, [], self.blocks_config.blocks[key])
    return _gradio_session_components.fget(self)


state_holder.SessionState.__init__ = _session_init
state_holder.SessionState.components = property(_session_components)


class BodySizeLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before it is read
    (from its Content-Length), or as soon as a body without one passes the limit."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            return await self._refuse(send)
        received, started, refused = 0, False, False

        async def counted_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # answer now; the app sees a client that went away
                refused = True
                if not started:
                    await self._refuse(send)
                return {"type": "http.disconnect"}
            return message

        async def watched_send(message):
            nonlocal started
            if refused:
                return  # the 413 is the answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted_receive, watched_send)

    async def _refuse(self, send) -> None:
        await refuse(send, 413, f"The request body is over the limit of {self.limit // 2**20} MB. Images are "
                                f"taken as uploads of at most {MAX_UPLOAD_BYTES // 2**20} MB.", close=True)


class NoFetchedFiles:
    """ASGI middleware: gradio's file route answers `/gradio_api/file=<http(s) URL>` by fetching the URL
    and streaming it back (any public address, no size or time limit once connected), which made every
    app an open proxy (found by the hostile client). The apps serve their own files only: 403."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            _, marker, named = scope["path"].partition("/gradio_api/file=")
            if marker and named.lower().startswith(("http://", "https://", "//")):
                return await refuse(send, 403, "This server serves its own files only, never another address's.")
        await self.app(scope, receive, send)


def mount(hub, demo: gr.Blocks, path: str, own_url: str = "http://127.0.0.1:7860", **settings) -> None:
    """Mount one app on the hub's FastAPI app, as hardened as when it runs alone.

    `root_path` is the mount's path: gradio's direct route (`/gradio_api/run/predict`, what a click on
    an example calls) otherwise wrote file URLs without it, and every example's picture was a 404.
    `own_url` is where the hub itself listens, for the app's MCP tools (below)."""
    # a copy: gradio writes the app's lifespan into the dict it is given, and the next app ran it again
    gr.mount_gradio_app(hub, harden(demo), path=path, root_path=path, app_kwargs=dict(NO_FASTAPI_SCHEMA),
                        **{**SAFE_SETTINGS, **settings})
    # gradio checks that an input file was uploaded by a user only once an app has launched,
    # and mounting never sets it: set it, so that gradio's own check works here too.
    demo.has_launched = True
    if demo.mcp_server_obj is not None:
        # gradio's MCP tools call the app through a client it builds, on a mounted app, from the first
        # caller's Host header: any host and port (a request forgery), and every later caller's images
        # went through it (found by a hostile client). gradio pins it so when it launches an app itself.
        demo.mcp_server_obj._local_url = f"{own_url}{path}/"


def launch(demo: gr.Blocks, **overrides) -> None:
    """Run one app alone, as a Space does."""
    middleware = [OpenRequestLimit, NoFetchedFiles, BodySizeLimit, UploadBudget]  # the outermost first
    app_kwargs = {"middleware": [Middleware(each) for each in middleware], **NO_FASTAPI_SCHEMA}
    harden(demo).launch(share=False, strict_cors=True, app_kwargs=app_kwargs, **{**SAFE_SETTINGS, **overrides})


def digit_sketchpad(button: str) -> tuple[DrawingInput, gr.Button]:
    """"Or draw a digit": a sketchpad with a black brush and the button that reads it (see `drawing`)."""
    with gr.Accordion("Or draw a digit", open=True):
        sketch = DrawingInput(label="Draw a digit", type="pil", canvas_size=(256, 256), height=300,
                              brush=gr.Brush(default_size=24, colors=["#000000"], color_mode="fixed"),
                              layers=False, transforms=())
        return sketch, gr.Button(button)


def drawing(sketch) -> Image.Image:
    """The sketchpad's drawing as the input image, so it takes the upload's path (decode, checks)."""
    drawn = (sketch or {}).get("composite")  # already on white, as `decode_image` lays transparency
    if drawn is None or drawn.convert("L").getextrema()[0] > 128:
        raise refusal("Draw a digit on the sketchpad first (dark strokes), then press the button.")
    return drawn
