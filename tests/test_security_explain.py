"""The classification page's Explain and Embedding map, and the translation stream, as a hostile
client drives them over plain HTTP (gradio's call API and queue), offline.

Every loop here is bounded in count and time, and every request goes to 127.0.0.1.
"""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image
from transformers import ConvNextImageProcessor

from shared.inputs.images import NOT_AN_UPLOAD
from tests.conftest import DIGIT_EXAMPLES, REPO, start_hub, stop_hub
from tests.test_security import HEALTHZ_BOUND_S, call, file_data, healthz_seconds, healthz_watch, queued, upload
from tests.tiny import make_tiny_classifier

pytestmark = pytest.mark.slow

BIG_INPUT = 512  # px: a tiny ConvNeXt reading 512 px, whose occlusion by 1 px would take an hour on 2 cores
BIG_MODEL = "tiny-convnext-512"
TIME_LIMIT_S = 20  # what an occlusion or an embedding map may take (apps/classification/task.py)
EXPLAIN = ["digits-convnext", "torch", "occlusion", "", 0, 0]  # model, backend, method, label, window, stride


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """`demohub serve --app classification --app translation`, with BIG_MODEL added; (process, URL)."""
    root = tmp_path_factory.mktemp("explain-hub")
    folder = make_tiny_classifier("convnext", root / BIG_MODEL)
    ConvNextImageProcessor(size={"shortest_edge": BIG_INPUT}).save_pretrained(folder)
    (root / "uploads").mkdir()
    process, url = start_hub(REPO, root / "serve.log", root / "uploads", extra_args=(
        "--app", "classification", "--app", "translation", "--add-model", f"classification={folder}"))
    yield process, url
    stop_hub(process)


def explain(url: str, image, timeout: float = 60, **settings) -> tuple[str, object]:
    names = ["model", "backend", "method", "label", "window", "stride"]
    ask = dict(zip(names, EXPLAIN, strict=True)) | settings
    return call(url, "classification", [image, *(ask[name] for name in names)], timeout, api="explain")


def embedding_map(url: str, files, model: str = "digits-convnext", timeout: float = 120) -> tuple[str, object]:
    """The Embedding map as the page asks for it (a private event, so through gradio's queue by its index),
    answered as `call` answers."""
    config = httpx.get(f"{url}/classification/config", timeout=10).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "embedding_map")
    return queued(url, "classification", fn_index, [files, model], timeout)


def a_sentence(answer: tuple[str, object]) -> str:
    """The error message of `answer`, checked to be one short sentence that shows nothing of the server."""
    kind, message = answer
    assert kind == "error" and isinstance(message, str), answer
    assert len(message) < 400 and "Traceback" not in message and str(REPO) not in message, message
    return message


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_explain_answers_hostile_settings_and_images_with_a_sentence(hub, tmp_path):
    _, url = hub
    digit = file_data(upload(url, "classification", DIGIT_EXAMPLES / "digit_7.png"))
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    Image.new("RGB", (1, 20_000)).save(tmp_path / "line.png")
    (tmp_path / "cut.png").write_bytes((DIGIT_EXAMPLES / "digit_7.png").read_bytes()[:300])
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("white", "black")]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=100)
    Image.fromarray(np.random.default_rng(0).integers(0, 65_535, (64, 64)).astype(np.uint16)).save(tmp_path / "16.png")
    sent = {name: file_data(upload(url, "classification", tmp_path / name))
            for name in ("dot.png", "line.png", "cut.png", "moving.gif", "16.png")}
    window = "The occlusion window must be a whole number from 0 to 224"
    refused = [
        (dict(label="nope"), "digits-convnext has no label 'nope'"),
        (dict(label="x" * 2**20), "(1,048,576 characters)"),
        (dict(label=["7"]), "has no label"),
        (dict(window=3.5), f"{window}; got 3.5."),  # was cut to 3 without a word
        (dict(window=4, stride=1.5), "The occlusion stride must be a whole number from 0 to 224; got 1.5."),
        (dict(window=True), f"{window}; got True."),
        (dict(window=float("nan")), f"{window}; got nan."),  # was "The server failed to answer this request"
        (dict(window=4, stride=float("nan")), "The occlusion stride must be a whole number"),
        (dict(window=-1), "less than minimum value 0"),
        (dict(window=float("inf")), "greater than maximum value 224"),
        (dict(window=33), "larger than the model's input (32 x 32 px)"),
        (dict(window=4, stride=8), "larger than its window"),
        (dict(method="saliency", backend="onnx"), "only the torch backend gives"),
        (dict(method=None), "Unknown method None"),
        (dict(image=None), "occlusion explains an image: give one"),
        (dict(image=file_data("/etc/passwd")), NOT_AN_UPLOAD),
        (dict(image=file_data("/dev/zero")), NOT_AN_UPLOAD),
        (dict(image=sent["dot.png"]), "The image is 1x1 px"),
        (dict(image=sent["line.png"]), "The image is 1x20000 px; the limit is 8192 px a side"),
        (dict(image=sent["cut.png"]), "damaged or truncated"),
        (dict(image=None, method="class-visualisation"), "class-visualisation draws one label"),
        (dict(image=None, method="class-visualisation", label="cat"), "has no label 'cat'"),
        (dict(image=None, method="class-visualisation", label="7", backend="onnx"), "only the torch backend"),
    ]
    for settings, words in refused:
        image = settings.pop("image", digit)
        assert words in a_sentence(explain(url, image, **settings)), settings
    for image in (sent["moving.gif"], sent["16.png"]):  # converted, and answered
        kind, outputs = explain(url, image, method="gradcam")
        assert kind == "complete" and "**gradcam** for" in outputs[1], outputs
    kind, outputs = explain(url, digit, method="class-visualisation", label="3")  # the image is not needed
    assert kind == "complete" and "What the model thinks **3** looks like" in outputs[1], outputs
    assert healthz_seconds(url) < HEALTHZ_BOUND_S


def test_the_embedding_map_refuses_with_a_sentence_and_answers_alike_at_once(hub, tmp_path):
    _, url = hub
    digits = [file_data(upload(url, "classification", DIGIT_EXAMPLES / f"digit_{d}.png")) for d in (3, 7)] * 3
    (tmp_path / "notes.txt").write_text("not an image")
    text = file_data(upload(url, "classification", tmp_path / "notes.txt"))
    assert "4 images; the embedding map takes 5 to 500." in a_sentence(embedding_map(url, digits[:4]))
    assert "names 501 files; one request takes at most 500." in a_sentence(embedding_map(url, digits[:1] * 501))
    assert a_sentence(embedding_map(url, [*digits[:5], text])).startswith("5: notes.txt: The file is not an image")
    assert a_sentence(embedding_map(url, [*digits[:5], file_data("/etc/passwd")])) == NOT_AN_UPLOAD
    kind, outputs = embedding_map(url, [])  # none: the 360 held-out digits
    assert kind == "complete" and outputs[2].startswith("360 images"), outputs
    with ThreadPoolExecutor(4) as pool:  # the same six uploads (names alike) four times at once
        answers = list(pool.map(lambda _: embedding_map(url, digits), range(4)))
    assert all(kind == "complete" for kind, _ in answers), answers
    assert len({json.dumps(outputs[0]) for _, outputs in answers}) == 1  # the same map for each
    assert answers[0][1][2].startswith("6 images")


def test_occlusion_and_the_embedding_map_stop_at_their_time_limit(hub, tmp_path):
    """An occlusion by 1 px of a 512 px input (262,144 positions, an hour here) and 100 uploads of
    40 MP (a minute of decoding here; 500 are allowed) each held their endpoint: both stop at 20 s with
    a sentence."""
    _, url = hub
    noise = np.random.default_rng(0).integers(0, 256, (4882, 8192, 3), dtype=np.uint8)  # 40 MP
    Image.fromarray(noise).save(tmp_path / "noise.jpg", quality=5)
    photo = file_data(upload(url, "classification", tmp_path / "noise.jpg"))
    digit = file_data(upload(url, "classification", DIGIT_EXAMPLES / "digit_7.png"))

    def timed(ask):
        started = time.monotonic()
        return ask(), time.monotonic() - started

    bound = TIME_LIMIT_S + 30  # without the limit: "no answer" then
    with healthz_watch(url, bound + 10) as times, ThreadPoolExecutor(2) as pool:
        time.sleep(0.5)
        occluded = pool.submit(timed, lambda: explain(url, digit, bound, model=BIG_MODEL, window=1, stride=1))
        mapped = pool.submit(timed, lambda: embedding_map(url, [photo] * 100, timeout=bound))
        (occlusion, occlusion_s), (mapping, mapping_s) = occluded.result(), mapped.result()
    assert "The occlusion stopped at its 20 s limit: a 1 px window moved by 1 px" in a_sentence(occlusion)
    assert "The embedding map stopped at its 20 s limit after reading" in a_sentence(mapping)
    assert TIME_LIMIT_S <= occlusion_s < TIME_LIMIT_S + 15 and TIME_LIMIT_S <= mapping_s < TIME_LIMIT_S + 15
    assert len(times) >= 5 and max(times) < HEALTHZ_BOUND_S, sorted(times)[-5:]
    kind, outputs = explain(url, digit, model=BIG_MODEL)  # its default occlusion: 16 positions, answered
    assert kind == "complete" and "**occlusion** for" in outputs[1], outputs


SCENE = "A {} {} to the left of a {} {}."
COLOURS = ("red", "blue", "green", "yellow")


def long_text(characters: int = 5_000) -> str:
    """Scene sentences, all different, `characters` long: about 16 s of 8-beam translation here."""
    rng = np.random.default_rng(0)
    sentences, size = [], 0
    while size < characters:
        sentences.append(SCENE.format(COLOURS[rng.integers(4)], rng.integers(10), COLOURS[rng.integers(4)],
                                      rng.integers(10)))
        size += len(sentences[-1]) + 1
    return " ".join(sentences)[:characters]


def test_a_cancelled_translation_stream_neither_freezes_the_hub_nor_goes_on_translating(hub):
    """A client that closes the stream mid-way: gradio closes the generator on its event loop, which
    waited there for the whole translation (/healthz went unanswered for 5 s and more)."""
    process, url = hub
    ask = [long_text(), "en", "de", "scenes-marian", "torch", 8, 512]
    assert a_sentence(call(url, "translation", [long_text(5_001), *ask[1:]])).startswith("The text has 5,001")
    with httpx.Client(timeout=60) as client:
        event_id = client.post(f"{url}/translation/gradio_api/call/translation", json={"data": ask}).json()["event_id"]
        with client.stream("GET", f"{url}/translation/gradio_api/call/translation/{event_id}") as stream:
            heard = 0
            for line in stream.iter_lines():
                heard += line.startswith("event: generating")
                if heard == 2:  # the translation so far, twice: it is under way
                    break
    closed = time.monotonic()
    with healthz_watch(url, 30) as times:
        time.sleep(3)  # the batch under way finishes
        before = cpu_seconds(process.pid)
        time.sleep(3)
        spent = cpu_seconds(process.pid) - before
    assert len(times) >= 5 and max(times) < HEALTHZ_BOUND_S, sorted(times)[-5:]
    after = time.monotonic() - closed - 3
    assert spent < 1.0, f"the server spent {spent:.1f} s of CPU in the 3 s from {after:.0f} s after the client left"
    kind, outputs = call(url, "translation", ["A red 3.", "en", "de", "scenes-marian", "torch", 1, 32])
    assert kind == "complete" and outputs[0], outputs


def test_translation_settings_of_the_wrong_kind_get_a_sentence(hub):
    _, url = hub
    ask = ["A red 3.", "en", "de", "scenes-marian", "torch", 1, 32]
    for at, value, words in [(1, ["en"], "Unknown language ['en']"),  # was "The server failed to answer"
                             (2, "en", "Source and target language are the same"),
                             (2, "fr", "scenes-marian does not translate English to French"),
                             (5, 2.5, "num_beams must be a whole number from 1 to 8; got 2.5."),
                             (6, True, "max_new_tokens must be a whole number from 1 to 512; got True.")]:
        assert words in a_sentence(call(url, "translation", ask[:at] + [value] + ask[at + 1:])), (at, value)
    for text in ("", " \n\t ", "\x00\x07\u200b"):
        assert "The text is empty" in a_sentence(call(url, "translation", [text, *ask[1:]])), repr(text)


# What shared/serving/ui.py's harden() answers before gradio's own input handling runs.
def test_a_refused_choice_is_not_echoed_back_whole(hub):
    """gradio's Dropdown and Radio quote the whole refused value in their error: harden() cuts it."""
    _, url = hub
    digit = file_data(upload(url, "classification", DIGIT_EXAMPLES / "digit_7.png"))
    megabyte = "m" * 2**20
    a_sentence(explain(url, digit, model=megabyte))  # the model dropdown
    a_sentence(explain(url, digit, method=megabyte))  # the method radio
    a_sentence(call(url, "translation", ["A red 3.", "en", megabyte, "scenes-marian", "torch", 1, 32]))


def test_thousands_of_file_references_are_refused_before_they_hold_the_event_loop(hub):
    """gradio walks every file an input names on the event loop (0.4 ms each here) before the app can
    count them: 8,000 references (1.2 MB of JSON; the body limit allows 100,000) kept /healthz waiting 3 s."""
    _, url = hub
    digit = file_data(upload(url, "classification", DIGIT_EXAMPLES / "digit_7.png"))
    with healthz_watch(url, 60) as times:
        time.sleep(0.5)
        answer = embedding_map(url, [digit] * 8_000)
        time.sleep(0.5)
    assert "8000 images" in a_sentence(answer) or "8,000" in a_sentence(answer)
    assert len(times) >= 5 and max(times) < HEALTHZ_BOUND_S, sorted(times)[-5:]


def test_inputs_of_the_wrong_kind_get_a_sentence(hub):
    """A value a component cannot read would reach the client as gradio's bare 'Error'."""
    _, url = hub
    digit = file_data(upload(url, "classification", DIGIT_EXAMPLES / "digit_7.png"))
    a_sentence(explain(url, digit, window="abc"))  # a slider
    a_sentence(explain(url, "/etc/passwd"))  # an image that is no FileData
    a_sentence(embedding_map(url, [1, 2, 3, 4, 5]))  # files
    a_sentence(call(url, "translation", ["A red 3.", "en", "de", "scenes-marian", "torch", None, 32]))
