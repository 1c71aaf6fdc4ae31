"""Visual question answering, the recipe: image + questions -> answers with scores and top-k.

    from apps.vqa.task import answer
    answer("scene.png", ["how many digits are there?", "what colour is the 7?"], top_k=3, backend="onnx")

The image is decoded at the shared boundary (shared/images.py) and every question checked here.
A generative model (a vision encoder-decoder reading the question as its decoder prompt) answers
with `generate` on torch or on the ONNX graphs (shared/seq2seq.py); its top-k are candidate
answers (the model folder's `answers.json`) scored by the decoder, the same way on both
backends. A classifier (ViLT) scores its answer vocabulary with a sigmoid, on torch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoModelForVisualQuestionAnswering, AutoProcessor

from apps.captioning import task as captioning
from apps.captioning.task import onnx_generator
from shared import timing
from shared.contract import Result
from shared.errors import UserError
from shared.inference import backends
from shared.inference.pipelines import VisualQuestionAnsweringPipeline, question_prompt
from shared.inputs import images, text
from shared.inputs.checks import whole_number
from shared.models.loader import LoadedModel, TaskModels
from shared.models.registry import ModelEntry

TASK = "vqa"
MAX_QUESTIONS = 16
MAX_QUESTION_CHARACTERS = 500
MAX_TOP_K = 10
MAX_ANSWER_TOKENS = 16  # answers are a few words; a question prompt may be longer than the model's max_length


def from_pretrained(folder: Path, entry: ModelEntry, dtype: torch.dtype):
    """BLIP and ViLT load as VQA models; a vision encoder-decoder answerer as an image-text-to-text one."""
    config = json.loads((folder / "config.json").read_text())
    model_class = (AutoModelForImageTextToText if config.get("model_type") == "vision-encoder-decoder"
                   else AutoModelForVisualQuestionAnswering)
    processor = AutoProcessor.from_pretrained(folder)
    return model_class.from_pretrained(folder, dtype=dtype, use_safetensors=True), processor


MODELS = TaskModels(TASK, from_pretrained)


def onnx_form(loaded: LoadedModel):
    """The vision encoder-decoder's graphs, as for captioning (the question is a decoder prompt)."""
    return captioning.onnx_form(loaded)


def candidate_answers(loaded: LoadedModel) -> list[str]:
    """The answers a generative model was trained to give (`answers.json` beside it), for its top-k."""
    path = loaded.folder / "answers.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def pipeline(loaded: LoadedModel, backend: str) -> VisualQuestionAnsweringPipeline:
    if backends.check_backend(backend, loaded.entry) == "onnx":
        onnx = onnx_generator(loaded)
        return VisualQuestionAnsweringPipeline(loaded.model, loaded.processor, generate=onnx.generate,
                                               decoder_step=onnx.decoder_step, candidates=candidate_answers(loaded))
    return VisualQuestionAnsweringPipeline(loaded.model, loaded.processor, candidates=candidate_answers(loaded))


def check_questions(questions) -> list[str]:
    """One question or a list of them: each non-empty and at most 500 characters, at most 16."""
    batch = [questions] if isinstance(questions, str) or questions is None else list(questions)
    if not batch:
        raise UserError("No question given: ask at least one question about the image.")
    if len(batch) > MAX_QUESTIONS:
        raise UserError(f"{len(batch)} questions were asked; the limit is {MAX_QUESTIONS} at a time. "
                        "Split them into several requests.")
    checked = []
    for number, question in enumerate(batch, start=1):
        if question is None or (isinstance(question, str) and not question.strip()):
            raise UserError(f"Question {number} is empty: type a question about the image.")
        if isinstance(question, str) and len(question) > MAX_QUESTION_CHARACTERS:
            raise UserError(f"Question {number} has {len(question):,} characters; the limit is "
                            f"{MAX_QUESTION_CHARACTERS}. Ask a shorter question.")
        checked.append(text.clean_text(question, MAX_QUESTION_CHARACTERS))
    return checked


def check_lengths(loaded: LoadedModel, questions: list[str]) -> None:
    """A generative model reads the question into its decoder: it must leave room for the answer."""
    if loaded.model.config.model_type != "vision-encoder-decoder":
        return
    positions = loaded.model.config.get_text_config(decoder=True).max_position_embeddings
    limit = positions - MAX_ANSWER_TOKENS - 2
    for number, question in enumerate(questions, start=1):
        tokens = len(question_prompt(loaded.processor.tokenizer, question))
        if tokens > limit:
            raise UserError(f"Question {number} is {tokens} tokens long; {loaded.entry.name} reads at most {limit}. "
                            "Ask a shorter question.")


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(score, 6)  # None: a model that does not score answers (BLIP)


@timing.whole_request
def answer(image, questions, model: str | None = None, backend: str = "torch", top_k=5,
           fallback: bool = False) -> Result:
    """Image + question(s) -> Result with `answers`: [{question, answer, score, top_k: [{answer, score}]}],
    one per question, in order."""
    decoded = images.decode_image(image)
    batch = check_questions(questions)
    top_k = whole_number("top_k", top_k, 1, MAX_TOP_K)
    backends.check_backend(backend)
    loaded = MODELS.load(MODELS.resolve(model).name, fallback=fallback)
    check_lengths(loaded, batch)
    ask = pipeline(loaded, backend)
    started = time.perf_counter()
    answers = []
    for question in batch:
        ranked = ask(decoded.image, question, top_k=top_k, max_new_tokens=MAX_ANSWER_TOKENS)
        answers.append({"question": question, "answer": ranked[0]["answer"], "score": _rounded(ranked[0]["score"]),
                        "top_k": [{"answer": r["answer"], "score": _rounded(r["score"])} for r in ranked]})
    latency_ms = (time.perf_counter() - started) * 1e3
    return Result(loaded, backend, latency_ms, {"answers": answers}, notes=decoded.notes)
