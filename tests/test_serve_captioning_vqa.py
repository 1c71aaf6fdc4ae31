"""The captioning and VQA apps through the served hub, as an API client drives them."""

import pytest
from gradio_client import Client, handle_file

from tests.conftest import REPO

pytestmark = pytest.mark.slow
SCENE = REPO / "apps" / "detection" / "examples" / "scene_0.png"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_captioning_endpoint_answers(hub_url, backend):
    client = Client(f"{hub_url}/captioning/", verbose=False)
    best, captions, served = client.predict(image=handle_file(str(SCENE)), lang="de", prompt="",
                                            model="scenes-captioner", backend=backend, num_beams=3, num_captions=2,
                                            max_new_tokens=24, repetition_penalty=1.0, no_repeat_ngram_size=0,
                                            api_name="/captioning")
    assert best and len(captions["data"]) == 2 and captions["data"][0][0] == best
    assert "scenes-captioner" in served and f"on **{backend}**" in served
    with pytest.raises(Exception, match="takes no text prompt"):
        client.predict(image=handle_file(str(SCENE)), lang="en", prompt="a photo of", model="scenes-captioner",
                       backend="torch", num_beams=1, num_captions=1, max_new_tokens=8, repetition_penalty=1.0,
                       no_repeat_ngram_size=0, api_name="/captioning")


def test_vqa_endpoint_answers_every_question_in_order(hub_url):
    client = Client(f"{hub_url}/vqa/", verbose=False)
    questions = "how many digits are there?\nwhat colour is the 1?"
    table, served = client.predict(image=handle_file(str(SCENE)), questions=questions, model="scenes-vqa",
                                   backend="onnx", top_k=3, api_name="/vqa")
    assert [row[0] for row in table["data"]] == questions.splitlines() and all(row[1] for row in table["data"])
    assert "scenes-vqa" in served
    with pytest.raises(Exception, match="limit is 500"):
        client.predict(image=handle_file(str(SCENE)), questions="x" * 501, model="scenes-vqa", backend="torch",
                       top_k=3, api_name="/vqa")


def test_bad_settings_and_questions_get_one_sentence_through_the_api(hub_url):
    """The issue's "Bad input" list, as an API client sends it (past the browser's limits)."""
    captioning = Client(f"{hub_url}/captioning/", verbose=False)
    ask = dict(image=handle_file(str(SCENE)), lang="en", prompt="", model="scenes-captioner", backend="torch",
               num_beams=1, num_captions=1, max_new_tokens=8, repetition_penalty=1.0, no_repeat_ngram_size=0,
               api_name="/captioning")
    for settings, words in [({"lang": "fr"}, "does not caption in 'fr'"),
                            ({"num_beams": 2, "num_captions": 3}, "cannot exceed num_beams"),
                            ({"num_beams": 9}, "num_beams|maximum"),
                            ({"max_new_tokens": 500}, "max_new_tokens|maximum")]:
        with pytest.raises(Exception, match=words):
            captioning.predict(**{**ask, **settings})
    vqa = Client(f"{hub_url}/vqa/", verbose=False)
    for questions, words in [("", "Question 1 is empty"), ("   \n  ", "Question 1 is empty"),
                             ("is there a 3?\n" * 17, "the limit is 16")]:
        with pytest.raises(Exception, match=words):
            vqa.predict(image=handle_file(str(SCENE)), questions=questions, model="scenes-vqa", backend="torch",
                        top_k=3, api_name="/vqa")
