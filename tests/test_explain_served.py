"""The Explain panel of the classification page, served by `demohub serve`: through gradio_client
and in a real browser (Debian's chromium driven by playwright)."""

import pytest
from gradio_client import Client, handle_file
from PIL import Image

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
