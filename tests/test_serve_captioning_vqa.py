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
    questions = "how many digits are there?\nwhat colour is the 6?"
    table, served = client.predict(image=handle_file(str(SCENE)), questions=questions, model="scenes-vqa",
                                   backend="onnx", top_k=3, api_name="/vqa")
    assert [row[0] for row in table["data"]] == questions.splitlines() and all(row[1] for row in table["data"])
    assert "scenes-vqa" in served
    with pytest.raises(Exception, match="limit is 500"):
        client.predict(image=handle_file(str(SCENE)), questions="x" * 501, model="scenes-vqa", backend="torch",
                       top_k=3, api_name="/vqa")
