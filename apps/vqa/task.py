"""Visual question answering, the recipe: image + questions -> answers with scores and top-k.

    from apps.vqa.task import answer
    answer("scene.png", ["how many digits are there?", "what colour is the 7?"], top_k=3, backend="onnx")

The image is decoded at the shared boundary (shared/images.py) and every question checked here.
A generative model (a vision encoder-decoder reading the question as its decoder prompt) answers
with `generate` on torch or on the ONNX graphs (shared/seq2seq.py); its top-k are candidate
answers (the model folder's `answers.json`) scored by the decoder, the same way on both
backends. BLIP reads the question with its text encoder and answers with its decoder, on both
backends too; with no answer list, its top-k are its best beams, scored the same way. A
classifier (ViLT) scores its answer vocabulary with a sigmoid, on torch.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoModelForVisualQuestionAnswering, AutoProcessor

from apps.captioning import task as captioning
from shared import timing
from shared.contract import Result, beyond_its_words, beyond_what_it_knows
from shared.data import scenes
from shared.errors import UserError
from shared.inference import backends, families
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
    return model_class.from_pretrained(folder, dtype=dtype, use_safetensors=entry.use_safetensors), processor


MODELS = TaskModels(TASK, from_pretrained)


def onnx_form(loaded: LoadedModel):
    """The graphs of captioning (shared/inference/seq2seq.py): for a vision encoder-decoder the
    question is a decoder prompt; BLIP's encoder also reads it, so its export is checked on the
    scenes' own questions."""
    return captioning.onnx_form(loaded, lambda n: sample_encoder_feeds(loaded, n))


def sample_encoder_feeds(loaded: LoadedModel, n: int) -> dict:
    """Scene images with a question each: for BLIP its text encoder's input (export checks it);
    for a vision encoder-decoder one question as every row's decoder prompt (the encoder reads
    only the image; `demohub bench vqa` generates after the prompt)."""
    feeds, family = captioning.sample_encoder_feeds(loaded, n), families.of(loaded.model)
    tokenizer = loaded.processor.tokenizer
    if "input_ids" in family.encoder_inputs:
        questions = [scenes.make_scene(1, i).qa[i % 2]["question"]["en"] for i in range(n)]
        tokens = tokenizer(questions, padding=True, return_tensors="np")
        return {**feeds, "input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    prompt = [family.start_token_id, *question_prompt(tokenizer, scenes.make_scene(1, 0).qa[0]["question"]["en"])]
    return {**feeds, "decoder_input_ids": np.array([prompt] * n, dtype=np.int64)}


def onnx_generator(loaded: LoadedModel):
    """The ONNX generator (exported and checked on first use, cached)."""
    return captioning.onnx_generator(loaded, onnx_form(loaded))


def candidate_answers(loaded: LoadedModel) -> list[str]:
    """The answers a generative model was trained to give (`answers.json` beside it), for its top-k."""
    path = loaded.folder / "answers.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def pipeline(loaded: LoadedModel, backend: str) -> VisualQuestionAnsweringPipeline:
    if backends.check_backend(backend, loaded.asked_for) == "onnx":
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
    """A question must fit the positions of what reads it (past them is an index error): a vision
    encoder-decoder's decoder, with room left for the answer, or BLIP's or ViLT's text encoder."""
    tokenizer, config = loaded.processor.tokenizer, loaded.model.config
    if config.model_type == "vision-encoder-decoder":
        limit = config.get_text_config(decoder=True).max_position_embeddings - MAX_ANSWER_TOKENS - 2
        lengths = [len(question_prompt(tokenizer, question)) for question in questions]
    else:
        limit = config.get_text_config().max_position_embeddings
        lengths = [len(tokenizer(question)["input_ids"]) for question in questions]
    for number, tokens in enumerate(lengths, start=1):
        if tokens > limit:
            raise UserError(f"Question {number} is {tokens} tokens long; {loaded.entry.name} reads at most {limit}. "
                            "Ask a shorter question.")


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(score, 6)


def as_learnt(entry, question: str) -> str:
    """A question as the scenes' VQA model learnt them, in lower case and ending in "?" ("Is there an 8?"
    was answered "4" at 0.997, "What colour is the 9?" "nein"); other models' questions as they are."""
    if entry.words != "scene questions":
        return question
    return re.sub(r"\s+", " ", question.strip().lower()).rstrip("?.! ") + "?"


def unlike_its_questions(entry, number: int, question: str) -> list[str]:
    """The note for a question of known words in a form the scenes' VQA model never learnt: "is there a
    red 3?" got "yes" at 0.94 in a scene with no 3, without a word (found by a visitor)."""
    if entry.words != "scene questions" or scenes.question_form(question) in scenes.question_forms():
        return []
    return [f"Question {number} is not in a form {entry.name} learnt (such as \"is there a 3?\" or \"what colour "
            "is the 3?\"): its answer is a guess."]


def not_an_answer(model: str, number: int, likeliest: dict, learnt: list[str]) -> list[str]:
    """The note for a generated answer that is none: an empty output (shown, a blank cell scored 0.97)
    or, for a model with an answer list, one outside it ("b" at 0.99 to "how many blue digits are
    there?"; found by a visitor and an evaluator). Either is what the embedded model writes for a
    question unlike those it learnt; an empty one is dropped and the other candidates keep their
    own probabilities."""
    text, score = likeliest["answer"].strip(), likeliest["score"]
    if text and (not learnt or text in learnt):
        return []
    scored = "" if score is None else f", {score:.2f}"
    if not text:
        return [f"{model} found no answer to question {number} (its likeliest output{scored}, was empty): "
                "the question is unlike those it learnt, and the answers shown are its unlikely ones."]
    return [f"{model}'s answer to question {number}, {text!r}{scored}, is none of the {len(learnt)} answers it "
            "learnt: the question is unlike those it learnt, so the answer is a guess."]


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
    answers, notes = [], [*decoded.notes, *beyond_what_it_knows(loaded, decoded.image)]
    learnt, recased = candidate_answers(loaded), []
    for number, question in enumerate(batch, start=1):
        asked = as_learnt(loaded.entry, question)
        if asked != question:
            recased.append(number)
        ranked = ask(decoded.image, asked, top_k=top_k, max_new_tokens=MAX_ANSWER_TOKENS)
        notes += not_an_answer(loaded.entry.name, number, ranked[0], learnt)
        ranked = [r for r in ranked if r["answer"].strip()] or [{"answer": "", "score": None}]
        answers.append({"question": question, "answer": ranked[0]["answer"], "score": _rounded(ranked[0]["score"]),
                        "top_k": [{"answer": r["answer"], "score": _rounded(r["score"])} for r in ranked
                                  if r["answer"]]})
        unknown_words = beyond_its_words(loaded.entry, question)
        notes += unknown_words or unlike_its_questions(loaded.entry, number, asked)
    if recased:
        which = f"questions {', '.join(map(str, recased))} were" if len(recased) > 1 else f"question {recased[0]} was"
        notes.append(f"{loaded.entry.name} learnt its questions in lower case, ending in \"?\": {which} asked so.")
    latency_ms = (time.perf_counter() - started) * 1e3
    return Result(loaded, backend, latency_ms, {"answers": answers}, notes=list(dict.fromkeys(notes)))
