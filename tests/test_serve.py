"""`demohub serve` end to end, through gradio_client as an API user drives it."""

import io
import json
import urllib.request

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from shared.data.examples import PHOTOS
from shared.inference import bf16
from tests.conftest import DIGIT_EXAMPLES, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(hub_url):
    return Client(f"{hub_url}/classification/", verbose=False)


def classify(client, path, model="digits-convnext", backend="torch", top_k=5):
    return client.predict(image=handle_file(str(path)), model=model, backend=backend, top_k=top_k,
                          api_name="/classification")


def test_health_routes_and_landing_page(hub_url):
    assert json.load(urllib.request.urlopen(f"{hub_url}/healthz")) == {"status": "ok"}
    ready = json.load(urllib.request.urlopen(f"{hub_url}/readyz"))
    assert ready["ready"] is True and ready["status"] == "ok" and all(app["ready"] for app in ready["apps"].values())
    landing = urllib.request.urlopen(f"{hub_url}/").read().decode()
    assert all(f'href="/{app}/"' in landing for app in ("classification", "generative", "adversarial"))
    digits_backends = "torch, onnx, int8 or bf16" if bf16.available() else "torch, onnx or int8"
    assert f"backends: {digits_backends}" in landing and "backends: torch or onnx" in landing  # as each offers
    adversarial_card = landing[landing.index('id="app-adversarial"'):].split("</section>")[0]
    assert "backend: torch." in adversarial_card  # no backend choice: the attack needs torch's gradients
    icon = httpx.get(f"{hub_url}/favicon.ico", timeout=10)  # what the apps' pages ask for
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in icon.content


def test_one_public_endpoint(client):
    """The app's own, plus /explain (issue #14: the heat maps through gradio_client too)."""
    assert list(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == [
        "/classification", "/explain"]


@pytest.mark.parametrize("backend", ["torch", "onnx", "int8", "bf16"])
def test_served_answer(client, backend):
    if backend == "bf16" and not bf16.available():
        pytest.skip("needs OpenVINO and a CPU with bf16 instructions")
    labels, served = classify(client, DIGIT_EXAMPLES / "digit_7.png", backend=backend)
    assert labels["label"] == "7" and len(labels["confidences"]) == 5
    precision = backend if backend in ("int8", "bf16") else "fp32"
    assert f"on **{backend}** ({precision})" in served
    assert "digits-convnext" in served and "Apache-2.0" in served and " ms" in served


def test_a_backend_the_model_does_not_offer_is_one_sentence_over_the_api(client):
    """The page hides it; an API client that asks anyway gets the reason, and the app keeps serving."""
    with pytest.raises(Exception, match="bf16 is not offered for efficientnet-lite0"):
        classify(client, PHOTOS["cat"], model="efficientnet-lite0", backend="bf16")
    labels, _ = classify(client, DIGIT_EXAMPLES / "digit_7.png", backend="onnx")
    assert labels["label"] == "7"


def test_offline_hub_model_falls_back_and_says_so(client):
    labels, served = classify(client, PHOTOS["cat"], model="google/vit-base-patch16-224")
    assert "Served by **efficientnet-lite0**" in served  # the embedded model of the same (ImageNet) labels
    assert "google/vit-base-patch16-224 is not in the local Hugging Face cache" in served
    assert "cat" in labels["label"], labels


def bad_uploads(tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((PHOTOS["coffee"]).read_bytes()[:5000])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (7000, 7000)).save(bomb)
    return [(REPO / "pyproject.toml", "not an image"), (truncated, "damaged or truncated"),
            (empty, "empty"), (bomb, "megapixels")]


def test_bad_uploads_get_a_sentence_and_the_server_keeps_serving(client, tmp_path):
    for path, words in bad_uploads(tmp_path):
        with pytest.raises(Exception) as caught:
            classify(client, path)
        assert words in str(caught.value), (path, caught.value)
    labels, _ = classify(client, DIGIT_EXAMPLES / "digit_3.png")
    assert labels["label"] == "3"


@pytest.mark.parametrize("settings, words", [
    ({"top_k": 500}, "greater than maximum value 20"),  # gradio 6 checks the slider's range
    ({"backend": "tensorflow"}, "tensorflow"),
    ({"model": "/etc/passwd"}, "is not one of the choices"),
])
def test_limits_are_checked_on_the_server(client, settings, words):
    with pytest.raises(Exception) as caught:
        classify(client, PHOTOS["cat"], **settings)
    assert words in str(caught.value)


def test_rgba_upload_is_answered(client, tmp_path):
    rgba = tmp_path / "rgba.png"
    buffer = io.BytesIO()
    Image.open(PHOTOS["astronaut"]).convert("RGBA").save(buffer, format="PNG")
    rgba.write_bytes(buffer.getvalue())
    labels, served = classify(client, rgba, top_k=2)
    assert len(labels["confidences"]) == 2


def test_the_app_runs_alone_as_a_space_does(tmp_path):
    """`python apps/classification/app.py`, the Space's app_file, serves the same endpoint."""
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import free_port

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    app = subprocess.Popen([sys.executable, "apps/classification/app.py"], cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                standalone = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.5)
        labels, served = classify(standalone, DIGIT_EXAMPLES / "digit_7.png", backend="onnx")
        assert labels["label"] == "7" and "on **onnx**" in served
    finally:
        app.terminate()
        app.wait(timeout=20)


def test_generative_endpoint_draws_a_grid(hub_url):
    generative = Client(f"{hub_url}/generative/", verbose=False)
    grid, served = generative.predict(seed=3, n=9, label="5", truncation=1.0, model="digits-gan", backend="onnx",
                                      api_name="/generative")
    assert Image.open(grid).size == (3 * 34 * 4, 3 * 34 * 4) and "digits-gan" in served and "onnx" in served
    with pytest.raises(Exception, match="less than minimum value 0"):  # gr.Number checks its range
        generative.predict(seed=-5, n=9, label="5", truncation=1.0, model="digits-gan", backend="torch",
                           api_name="/generative")


def test_adversarial_endpoint_fools_and_reports(hub_url):
    adversarial = Client(f"{hub_url}/adversarial/", verbose=False)
    original, perturbation, adversarial_image, before, after, summary = adversarial.predict(
        image=handle_file(str(DIGIT_EXAMPLES / "digit_7.png")), model="digits-convnext", attack="pgd", eps=0.1,
        steps=10, step_size=0, target="none", transfer_model="digits-convnext-robust", api_name="/adversarial")
    assert before["label"] == "7" and after["label"] != "7" and "**fooled**" in summary
    assert "ONNX backend" in summary and "digits-convnext-robust" in summary
    with pytest.raises(Exception, match="less than minimum value 1"):  # gradio checks the slider's range
        adversarial.predict(image=handle_file(str(DIGIT_EXAMPLES / "digit_7.png")), model="digits-convnext",
                            attack="pgd", eps=0.1, steps=0, step_size=0, target="none",
                            transfer_model="digits-convnext-robust", api_name="/adversarial")


def test_detection_endpoint_draws_boxes(hub_url):
    detection = Client(f"{hub_url}/detection/", verbose=False)
    scene = REPO / "apps" / "detection" / "examples" / "scene_0.png"
    annotated, table, served = detection.predict(image=handle_file(str(scene)), model="digits-rtdetr",
                                                 backend="onnx", threshold=0.5, classes="", max_detections=20,
                                                 api_name="/detection")
    assert annotated["annotations"] and len(table["data"]) == len(annotated["annotations"])
    assert "digits-rtdetr" in served and "onnx" in served
    with pytest.raises(Exception, match="no class 'dog'"):
        detection.predict(image=handle_file(str(scene)), model="digits-rtdetr", backend="torch", threshold=0.5,
                          classes="dog", max_detections=20, api_name="/detection")


def test_segmentation_endpoint_overlays_classes(hub_url):
    segmentation = Client(f"{hub_url}/segmentation/", verbose=False)
    scene = REPO / "apps" / "detection" / "examples" / "scene_0.png"
    picture, legend, table, served = segmentation.predict(image=handle_file(str(scene)), model="digits-upernet",
                                                          backend="torch", opacity=0.6, api_name="/segmentation")
    assert Image.open(picture).size == (512, 512) and "background" in legend  # the 128-px scene, shown 4x
    assert table["data"][0][0] == "background" and "digits-upernet" in served


@pytest.mark.parametrize("app, settings", [
    ("detection", {"model": "digits-rtdetr", "backend": "torch", "threshold": 0.5, "classes": "",
                   "max_detections": 20}),
    ("segmentation", {"model": "digits-upernet", "backend": "torch", "opacity": 0.5}),
])
def test_bad_uploads_get_the_same_sentences_in_every_image_app(hub_url, tmp_path, app, settings):
    other = Client(f"{hub_url}/{app}/", verbose=False)
    for path, words in bad_uploads(tmp_path):
        with pytest.raises(Exception) as caught:
            other.predict(image=handle_file(str(path)), **settings, api_name=f"/{app}")
        assert words in str(caught.value), (app, path, caught.value)


def test_translation_streams_as_batches_of_sentences_finish(hub_url):
    from apps.translation.task import BATCH_SIZE

    client = Client(f"{hub_url}/translation/", verbose=False)
    sentences = 2 * BATCH_SIZE + 3
    job = client.submit(text=" ".join(["Is there an 8?"] * sentences), src_lang="en", tgt_lang="de",
                        model="scenes-marian", backend="torch", api_name="/translation")
    translated, served = job.result(timeout=120)
    updates = job.outputs()
    assert translated == " ".join(["Gibt es eine 8?"] * sentences) and f"{sentences} sentences" in served
    assert [text for text, _ in updates] == [" ".join(["Gibt es eine 8?"] * n)
                                              for n in (BATCH_SIZE, 2 * BATCH_SIZE, sentences)]
    assert updates[0][1] == f"Translating: {BATCH_SIZE} of {sentences} sentences done."


def test_translation_endpoint_translates_and_refuses_bad_text(hub_url):
    client = Client(f"{hub_url}/translation/", verbose=False)
    ask = dict(src_lang="en", tgt_lang="de", model="scenes-marian", num_beams=4, max_new_tokens=128,
               api_name="/translation")
    for backend in ("torch", "onnx"):
        translated, served = client.predict(text="A red 3 to the left of a blue 7.\nIs there an 8?",
                                            backend=backend, **ask)
        assert translated == "Eine rote 3 links von einer blauen 7.\nGibt es eine 8?"
        assert f"on **{backend}**" in served and "2 sentences" in served
    for text, settings, words in [("", {}, "empty"), ("\x00\x01", {}, "empty"), ("x" * 6000, {}, "5,000"),
                                  ("hi", {"tgt_lang": "fr"}, "does not translate"),
                                  ("hi", {"num_beams": 50}, "num_beams|maximum")]:
        with pytest.raises(Exception, match=words):
            client.predict(text=text, backend="torch", **{**ask, **settings})
    assert client.predict(text="Wie viele Ziffern gibt es?", backend="torch",
                          **{**ask, "src_lang": "de", "tgt_lang": "en"})[0] == "How many digits are there?"


def test_a_clicked_example_is_served_from_the_app_s_own_path(hub_url):
    """A click on an example calls gradio's direct route, which wrote the file's URL without the mount's
    path under the hub (a 404: a broken picture on every image page)."""
    config = httpx.get(f"{hub_url}/classification/config", timeout=10).json()
    load = next(d for d in config["dependencies"] if d.get("api_name") == "load_example")
    answer = httpx.post(f"{hub_url}/classification/gradio_api/run/predict", timeout=30, json={
        "data": [0], "fn_index": load["id"], "session_hash": "examples", "trigger_id": load["targets"][0][0]})
    url = answer.json()["data"][0]["value"]["url"]
    assert url.startswith(f"{hub_url}/classification/gradio_api/file=")
    assert httpx.get(url, timeout=10).status_code == 200
