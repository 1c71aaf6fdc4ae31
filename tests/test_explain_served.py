"""The Explain panel of the classification page, served by `demohub serve`: through gradio_client
and in a real browser (Debian's chromium driven by playwright)."""

import time

import pytest
from gradio_client import Client, handle_file
from gradio_client.utils import Status
from PIL import Image

from shared.data.digits import digit_image, split
from shared.data.examples import PHOTOS
from tests.conftest import DIGIT_EXAMPLES
from tests.test_browser import page  # noqa: F401 - the browser fixture

pytestmark = pytest.mark.slow


def explain(client, **settings):
    request = dict(image=handle_file(str(DIGIT_EXAMPLES / "digit_7.png")), model="digits-convnext", backend="torch",
                   method="gradcam", label="", window=0, stride=0)
    return client.predict(**{**request, **settings}, api_name="/explain")


def test_explain_through_gradio_client(hub_url):
    client = Client(f"{hub_url}/classification/", verbose=False)
    heatmap, summary, served = explain(client, method="occlusion", backend="onnx", window=8, stride=4)
    assert Image.open(heatmap).size[0] > 300  # the picture with its colour bar
    assert "**occlusion** for **7**" in summary and "Deletion check" in summary
    assert "on **onnx**" in served and "digits-convnext" in served
    with pytest.raises(Exception, match="has no label 'cat'"):
        explain(client, label="cat")
    with pytest.raises(Exception, match="larger than the model's input"):
        explain(client, method="occlusion", window=40)
    drawn, summary, _ = explain(client, image=None, method="class-visualisation", label="7")
    assert Image.open(drawn).size[0] > 500 and "What the model thinks **7** looks like" in summary


@pytest.mark.browser
def test_the_explain_panel_shows_a_heat_map(page, hub_url, tmp_path):  # noqa: F811
    page.goto(f"{hub_url}/classification/")
    page.get_by_text("Explain: which pixels the answer depends on").first.wait_for()
    page.locator("input[type=file]").first.set_input_files(str(DIGIT_EXAMPLES / "digit_7.png"))
    page.get_by_label("gradcam").check()
    page.get_by_role("button", name="Explain", exact=True).click()
    page.get_by_text("Deletion check").wait_for(timeout=60_000)
    heatmap = page.locator("#heatmap img")
    heatmap.wait_for()
    assert page.evaluate("(img) => img.naturalWidth", heatmap.element_handle()) > 300
    assert "gradcam for 7" in page.locator("body").inner_text()
    page.screenshot(path=str(tmp_path / "explain.png"), full_page=True)


@pytest.mark.browser
def test_the_embedding_map_panel_maps_uploads_and_lists_neighbours(page, hub_url, tmp_path):  # noqa: F811
    pixels, labels = split()["test"]
    files = [tmp_path / f"held_out_{i}_{labels[i]}.png" for i in range(8)]
    for i, file in enumerate(files):
        digit_image(pixels[i]).save(file)
    page.goto(f"{hub_url}/classification/")
    page.get_by_text("Embedding map: how the model arranges images").first.click()
    page.locator("input[type=file][multiple]").first.set_input_files([str(f) for f in files])
    page.get_by_role("button", name="Map", exact=True).click()
    page.get_by_text("coloured by their predicted label").wait_for(timeout=60_000)
    assert page.locator("canvas, svg.marks").count() > 0  # the scatter plot (vega) is drawn
    neighbours = page.locator(".thumbnail-item")  # the chosen image and its 5 nearest, in the gallery
    neighbours.nth(5).wait_for(timeout=30_000)
    assert neighbours.count() == 6
    assert f"0: {files[0].name}" in page.locator("body").inner_text()  # the dropdown names the first upload
    page.screenshot(path=str(tmp_path / "embedding-map.png"), full_page=True)


def test_a_long_occlusion_does_not_hold_a_quick_map_behind_it(hub_url):
    """Two occlusions of a photo model with a fine window run for seconds; a saliency map asked for
    after them answers while they still run (one at a time, it waited for both)."""
    client = Client(f"{hub_url}/classification/", verbose=False)
    cat = handle_file(str(PHOTOS["cat"]))
    slow = [client.submit(image=cat, model="efficientnet-lite0", backend="onnx", method="occlusion", label="",
                          window=16, stride=8, api_name="/explain") for _ in range(2)]
    deadline = time.monotonic() + 30
    while not all(job.status().code in (Status.IN_QUEUE, Status.PROCESSING) for job in slow):  # both sent first
        assert time.monotonic() < deadline and not any(job.done() for job in slow)
        time.sleep(0.05)
    _, summary, _ = explain(client, method="saliency")
    assert "**saliency** for **7**" in summary
    assert not any(job.done() for job in slow), "the saliency map waited for the occlusions"
    for job in slow:
        assert "**occlusion**" in job.result()[1]
