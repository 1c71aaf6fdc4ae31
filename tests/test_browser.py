"""The hub's pages in a real browser: Debian's chromium driven by playwright."""

import math
import os
import re
import shutil

import pytest

from tests.conftest import DIGIT_EXAMPLES, REPO

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def page():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (make setup installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        yield browser.new_page(viewport={"width": 1280, "height": 900})
        browser.close()


def test_upload_classify_and_read_the_answer(page, hub_url, tmp_path):
    page.goto(f"{hub_url}/classification/")
    page.get_by_text("Image classification").first.wait_for()
    assert "digits-convnext" in page.content() and "Apache-2.0" in page.content()  # licence shown

    page.locator("input[type=file]").first.set_input_files(str(DIGIT_EXAMPLES / "digit_7.png"))
    page.get_by_role("button", name="Classify").click()
    page.get_by_text("Served by").wait_for(timeout=30_000)
    answer = page.locator("body").inner_text()
    assert "digits-convnext" in answer and "on torch" in answer
    assert page.get_by_test_id("label-output-value").inner_text().strip().startswith("7")
    page.screenshot(path=str(tmp_path / "classification.png"), full_page=True)


def test_a_corrupt_upload_shows_the_reason_and_no_earlier_answer(page, hub_url, tmp_path):
    page.goto(f"{hub_url}/classification/")
    page.locator("input[type=file]").first.set_input_files(str(DIGIT_EXAMPLES / "digit_7.png"))
    page.get_by_role("button", name="Classify").click()
    page.get_by_text("Served by").wait_for(timeout=30_000)
    fake = tmp_path / "fake.png"
    fake.write_bytes((REPO / "pyproject.toml").read_bytes())
    page.locator("input[type=file]").first.set_input_files(str(fake))
    page.get_by_role("button", name="Classify").click()
    page.get_by_text("not an image this app can read").first.wait_for(timeout=30_000)
    # the answer to the digit is gone: under the error badge there is nothing of an earlier input
    assert page.get_by_text("Served by").count() == 0
    assert not page.get_by_test_id("label-output-value").count() or \
        not page.get_by_test_id("label-output-value").inner_text().strip()


def test_generative_page_draws_a_grid(page, hub_url):
    page.goto(f"{hub_url}/generative/")
    page.get_by_role("button", name="Sample").click()
    page.get_by_text("Served by").wait_for(timeout=30_000)
    assert "digits-gan" in page.locator("body").inner_text()
    assert page.locator("img[src*='.png']").count() >= 1  # the grid arrived as an image


def test_adversarial_page_attacks_and_plots(page, hub_url):
    page.goto(f"{hub_url}/adversarial/")
    page.locator("input[type=file]").first.set_input_files(str(DIGIT_EXAMPLES / "digit_7.png"))
    page.get_by_role("button", name="Attack").click()
    page.get_by_text("Served by").wait_for(timeout=60_000)
    text = page.locator("body").inner_text()
    assert "fooled" in text and "ONNX backend on the adversarial image" in text


def test_adversarial_result_captions_are_whole_and_clear_of_the_buttons(page, hub_url, tmp_path):
    page.goto(f"{hub_url}/adversarial/")
    page.locator("input[type=file]").first.set_input_files(str(DIGIT_EXAMPLES / "digit_3.png"))
    page.get_by_role("button", name="Attack").click()
    page.get_by_text("Served by").wait_for(timeout=60_000)
    page.screenshot(path=str(tmp_path / "adversarial.png"), full_page=True)
    captions = page.locator(".adversarial-caption").filter(has_not=page.locator(".adversarial-caption"))  # innermost
    assert captions.all_inner_texts() == ["Original (model input)", "Perturbation (amplified)", "Adversarial"]
    for i, result in enumerate(page.locator(".adversarial-result").all()):
        caption = captions.nth(i)
        assert caption.evaluate("e => e.scrollWidth <= e.clientWidth")  # not cut
        text, picture = caption.bounding_box(), result.bounding_box()
        assert text["y"] >= picture["y"] + picture["height"] - 1  # below the picture and its buttons
        for button in result.locator("button").all():
            box = button.bounding_box()
            assert box is None or box["y"] + box["height"] <= text["y"]
    assert "1 steps" not in page.locator("body").inner_text()


def test_words_on_the_pages_are_for_users(page, hub_url):
    """Repo ids appear only in model choices and model lines, never as a field's label."""
    page.goto(f"{hub_url}/generative/")
    page.get_by_role("tab", name="VAE: encode an image").click()
    labels = page.locator("label, [data-testid=block-label], .block-title").all_inner_texts()
    assert labels and not [label for label in labels if re.search(r"[\w.-]+/[\w.-]+", label)], labels


def test_translation_page_swaps_and_translates(page, hub_url):
    page.goto(f"{hub_url}/translation/")
    text, translation = page.locator("textarea").nth(0), page.locator("textarea").nth(1)  # input, output
    # the page opens with its example as text (a placeholder looked like text): Translate at once works
    assert text.input_value() == "A red 3 to the left of a blue 7."
    page.get_by_role("button", name="Translate").click()
    page.get_by_text("Served by").wait_for(timeout=30_000)
    assert translation.input_value().startswith("Eine rote 3")
    text.fill("Is there an 8?")
    page.get_by_role("button", name="Translate").click()
    page.wait_for_function("document.querySelectorAll('textarea')[1].value === 'Gibt es eine 8?'", timeout=30_000)
    assert "scenes-marian" in page.locator("body").inner_text() and "Apache-2.0" in page.content()

    page.get_by_role("button", name="Swap").click()  # the languages swap and the translation becomes the text
    page.wait_for_function("document.querySelectorAll('textarea')[0].value === 'Gibt es eine 8?'", timeout=10_000)
    page.get_by_role("button", name="Translate").click()
    page.wait_for_function("document.querySelectorAll('textarea')[1].value === 'Is there an 8?'", timeout=30_000)


def test_translation_page_streams_the_translation_as_sentences_finish(page, hub_url):
    from apps.translation.task import BATCH_SIZE

    sentences = 12 * BATCH_SIZE  # twelve batches (3,200 characters): long enough to watch on a busy machine
    page.goto(f"{hub_url}/translation/")
    page.locator("textarea").nth(0).fill(" ".join(["A red 3 to the left of a blue 7."] * sentences))
    # every few ms, what the translation box and the page say, until the answer is in
    page.evaluate("""() => { window.seen = []; window.watch = setInterval(() => window.seen.push(
        [document.querySelectorAll('textarea')[1].value, document.body.innerText.includes('sentences done')]), 5); }""")
    page.get_by_role("button", name="Translate").click()
    page.get_by_text("Served by").wait_for(timeout=60_000)
    seen = page.evaluate("() => { clearInterval(window.watch); return window.seen; }")
    texts = [text for text, _ in seen if text]
    full = " ".join(["Eine rote 3 links von einer blauen 7."] * sentences)
    assert texts[-1] == full
    assert len(set(texts)) >= 2 and all(full.startswith(text) for text in texts)  # parts first, then the whole
    assert any(said for _, said in seen)  # "n of N sentences done" while it ran


SCENE = REPO / "apps" / "detection" / "examples" / "scene_0.png"  # held out: seed 1


def test_captioning_page_captions_an_upload(page, hub_url):
    page.goto(f"{hub_url}/captioning/")
    page.get_by_text("Image captioning").first.wait_for()
    page.locator("input[type=file]").first.set_input_files(str(SCENE))
    page.get_by_role("button", name="Caption", exact=True).click()
    page.get_by_text("Served by").wait_for(timeout=60_000)
    caption = page.get_by_label("Caption", exact=True).input_value()
    assert caption.startswith("a ")
    page.wait_for_function("c => document.body.innerText.includes(c)", arg=caption,
                           timeout=30_000)  # the best beam, in the table of beams (a textbox value is not innerText)
    assert "scenes-captioner" in page.locator("body").inner_text() and "Apache-2.0" in page.content()


def test_vqa_page_answers_each_question_with_its_top_k(page, hub_url):
    page.goto(f"{hub_url}/vqa/")
    page.get_by_text("Visual question answering").first.wait_for()
    page.locator("input[type=file]").first.set_input_files(str(SCENE))
    page.get_by_label("Questions (one per line)").fill("how many digits are there?\nis there a 7?")
    page.get_by_role("button", name="Answer", exact=True).click()
    page.get_by_text("Served by").wait_for(timeout=60_000)
    page.wait_for_function("() => document.body.innerText.includes('is there a 7?')",
                           timeout=30_000)  # a row of the answers' table
    table = page.locator("body").inner_text()
    assert "how many digits are there?" in table
    assert len(re.findall(r"\([01]\.\d\d\)", table)) >= 2 * 5  # top 5 answers with scores, per question
    assert "scenes-vqa" in page.locator("body").inner_text()


# Strokes of a digit in a unit square (0,0 top left), as a person draws them with the mouse.
STROKES = {
    "1": [[(0.45, 0.2), (0.55, 0.12), (0.55, 0.88)]],
    "7": [[(0.22, 0.15), (0.78, 0.15), (0.6, 0.5), (0.45, 0.88)]],
    "0": [[(0.5 + 0.26 * math.sin(2 * math.pi * t / 24), 0.5 - 0.36 * math.cos(2 * math.pi * t / 24))
           for t in range(25)]],
}


def draw(page, strokes):
    """Draw `strokes` with the mouse on the first sketchpad of the page (its square drawing area
    sits in the middle of the canvas element, about 80% of its height)."""
    page.get_by_role("button", name="Brush").first.click()
    canvas = page.locator("canvas").first
    canvas.wait_for()
    box = canvas.bounding_box()
    side = 0.8 * min(box["width"], box["height"])
    left, top = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    for stroke in strokes:
        page.mouse.move(left + stroke[0][0] * side, top + stroke[0][1] * side)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(left + x * side, top + y * side, steps=6)
        page.mouse.up()


@pytest.mark.parametrize("digit", list(STROKES))
def test_a_digit_drawn_with_the_mouse_is_read(page, hub_url, digit):
    page.goto(f"{hub_url}/classification/")
    page.get_by_text("Image classification").first.wait_for()
    draw(page, STROKES[digit])
    page.get_by_role("button", name="Read the drawing").click()
    page.get_by_text("Served by").wait_for(timeout=30_000)
    assert page.get_by_test_id("label-output-value").inner_text().strip().startswith(digit)


def test_a_drawn_digit_can_be_attacked(page, hub_url):
    page.goto(f"{hub_url}/adversarial/")
    draw(page, STROKES["7"])
    page.get_by_role("button", name="Use the drawing").click()
    page.get_by_text("Served by").wait_for(timeout=60_000)
    assert page.get_by_test_id("label-output-value").first.inner_text().strip().startswith("7")  # before the attack


def test_examples_follow_the_model(page, hub_url):
    page.goto(f"{hub_url}/classification/")
    page.locator("img[src*='digit_3']").first.wait_for(timeout=30_000)  # digits for the digits model
    assert page.locator("img[src*='chelsea']").count() == 0

    model = page.get_by_label("Model", exact=True)
    model.click()
    page.get_by_role("option", name="google/vit-base-patch16-224", exact=False).first.click()
    page.locator("img[src*='chelsea']").first.wait_for(timeout=30_000)  # photos for an ImageNet model
    assert page.locator("img[src*='digit_3']").count() == 0


def test_picking_another_model_clears_the_last_model_s_answer(page, hub_url):
    page.goto(f"{hub_url}/classification/")
    page.locator("input[type=file]").first.set_input_files(str(DIGIT_EXAMPLES / "digit_7.png"))
    page.get_by_role("button", name="Classify").click()
    page.get_by_text("Served by").wait_for(timeout=30_000)
    page.get_by_label("Model", exact=True).click()
    page.get_by_role("option", name="efficientnet-lite0", exact=False).first.click()
    page.wait_for_function("() => !document.body.innerText.includes('Served by')", timeout=10_000)
    assert not page.get_by_test_id("label-output-value").count() or \
        not page.get_by_test_id("label-output-value").inner_text().strip()


def test_a_visitor_picks_the_photo_model_and_a_photo_example_is_read(page, hub_url):
    """Offline too: efficientnet-lite0 (ImageNet, embedded) reads the cat example as a cat."""
    page.goto(f"{hub_url}/classification/")
    page.get_by_label("Model", exact=True).click()
    page.get_by_role("option", name="efficientnet-lite0", exact=False).first.click()
    page.locator("img[src*='chelsea']").first.click(timeout=30_000)
    page.get_by_role("button", name="Classify").click()
    page.get_by_text("Served by efficientnet-lite0").first.wait_for(timeout=60_000)
    assert page.get_by_test_id("label-output-value").first.inner_text().strip() in {"tiger cat", "tabby",
                                                                                     "Egyptian cat"}
    assert "knows only" not in page.locator("body").inner_text()


def test_a_clicked_example_shows_its_picture_in_the_input(page, hub_url):
    """Under the hub, gradio wrote the clicked example's URL without the app's path: a broken picture."""
    for app, example in (("classification", "digit_3"), ("detection", "scene_0")):
        page.goto(f"{hub_url}/{app}/")
        page.locator(f"img[src*='{example}']").first.click(timeout=30_000)
        page.wait_for_function(
            "name => { const shown = [...document.querySelectorAll('img')].filter(i => i.src.includes(name));"
            " return shown.length >= 2 && shown.every(i => i.complete && i.naturalWidth > 0); }",
            arg=example, timeout=30_000)  # the example's thumbnail and the input's picture, both loaded


def test_the_landing_page_has_a_working_card_per_app(page, hub_url):
    from shared import apps

    page.goto(f"{hub_url}/")
    assert page.locator("link[rel=icon]").count() == 1
    for name, spec in apps.specs().items():
        card = page.locator(f"#app-{name}")
        text = card.inner_text()
        assert spec.title in text and spec.summary in text and "Apache-2.0" in text and "ready" in text
        assert card.locator(".example img").count() == 1 or name == "translation", name  # a picture, or a sentence
        assert card.locator(f"a[href='/{name}/?view=api']").count() == 1
    for name, spec in apps.specs().items():
        page.goto(f"{hub_url}/")
        page.locator(f"#app-{name}").get_by_role("link", name="Open the app").click()
        page.wait_for_url(f"{hub_url}/{name}/")
        page.get_by_text(spec.title).first.wait_for(timeout=30_000)  # the app's page, served
        assert page.locator("#demohub-degraded").count() == 0


def test_translation_shows_the_count_and_refuses_past_the_limit_without_cutting(page, hub_url):
    from shared.inputs.text import MAX_CHARACTERS

    page.goto(f"{hub_url}/translation/")
    text = page.locator("textarea").nth(0)
    text.fill("Is there an 8? " * (MAX_CHARACTERS // 15) + "x" * (MAX_CHARACTERS % 15 + 1))
    page.get_by_text(f"{MAX_CHARACTERS + 1:,} / {MAX_CHARACTERS:,} characters").wait_for(timeout=10_000)
    assert len(text.input_value()) == MAX_CHARACTERS + 1  # nothing cut
    page.get_by_role("button", name="Translate").click()
    refusal = f"The text has {MAX_CHARACTERS + 1:,} characters; the limit is {MAX_CHARACTERS:,}."
    page.get_by_text(refusal).first.wait_for(timeout=30_000)  # the API's own sentence
