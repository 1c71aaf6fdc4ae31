"""Captioning, the recipe: image -> pixel values -> generate -> caption(s).

    from apps.captioning.task import caption
    caption("scene.png", lang="de", num_beams=4, num_captions=3, backend="onnx")

The image is decoded at the shared boundary (shared/images.py), every setting is checked here
(API clients skip the browser's limits), and the task adapter (shared/pipelines.py) generates on
`model.generate()` or on the ONNX graphs (shared/seq2seq.py). Unset generation settings mean
the model's own generation config. Each caption's score is the mean probability of its tokens
(geometric mean, end token included), scored by the decoder the same way on both backends.
"""

from __future__ import annotations

import itertools
import time

from transformers import AutoModelForImageTextToText, AutoProcessor

from shared import timing
from shared.contract import Result, beyond_what_it_knows, cut_at_the_token_limit
from shared.data import scenes
from shared.errors import UserError
from shared.inference import backends, export, families, seq2seq
from shared.inference.graphs import OnnxForm
from shared.inference.pipelines import ImageToTextPipeline, takes_prompt
from shared.inputs import images, text
from shared.inputs.checks import number_in, whole_number
from shared.models.loader import LoadedModel, TaskModels, transformers_loader

TASK = "captioning"
MODELS = TaskModels(TASK, transformers_loader(AutoModelForImageTextToText, AutoProcessor))
LANGUAGE_NAMES = {"en": "English", "de": "German"}
MAX_BEAMS = 8
MAX_NEW_TOKENS = 128
MAX_PROMPT_CHARACTERS = 500
MAX_NGRAM = 10


def onnx_form(loaded: LoadedModel, sample_feeds=None) -> OnnxForm:
    """The three graphs (shared/inference/seq2seq.py) of a vision encoder-decoder or a BLIP, with
    the encoder inputs its family reads, checked on scenes (`sample_feeds(n)`: scene images)."""
    export.check_exportable(loaded)  # ViLT and other torch-only models stop here, with a sentence
    feeds = sample_feeds or (lambda n: sample_encoder_feeds(loaded, n))
    return seq2seq.form(loaded, families.of(loaded.model).encoder_inputs, feeds)


def onnx_generator(loaded: LoadedModel, form: OnnxForm | None = None) -> seq2seq.Seq2SeqOnnx:
    """The ONNX generator (exported and checked on first use, cached)."""
    return backends.runner(loaded, "onnx", form or onnx_form(loaded))


def sample_images(n: int) -> list:
    return [scenes.make_scene(1, i).image for i in range(n)]


def sample_encoder_feeds(loaded: LoadedModel, n: int) -> dict:
    return {"pixel_values": loaded.processor(images=sample_images(n), return_tensors="np")["pixel_values"]}


def pipeline(loaded: LoadedModel, backend: str) -> ImageToTextPipeline:
    if backends.check_backend(backend, loaded.asked_for) == "onnx":
        onnx = onnx_generator(loaded)
        return ImageToTextPipeline(loaded.model, loaded.processor, generate=onnx.generate,
                                   decoder_step=onnx.decoder_step)
    return ImageToTextPipeline(loaded.model, loaded.processor)


def languages(entry) -> tuple[str, ...]:
    return entry.languages or ("en",)


def language_settings(loaded: LoadedModel, lang: str | None) -> dict:
    """`forced_bos_token_id` of the language token where the model names languages (the embedded
    model's `<en>`, `<de>`); a language the model does not speak is refused."""
    spoken = languages(loaded.entry)
    lang = lang or spoken[0]
    if lang not in spoken:
        names = ", ".join(f"{code} ({LANGUAGE_NAMES.get(code, code)})" for code in spoken)
        shown = repr(lang) if isinstance(lang, str) and len(lang) <= 16 else "that language"  # no echo of a long text
        raise UserError(f"{loaded.entry.name} does not caption in {shown}; it speaks: {names}.")
    tokenizer = loaded.processor.tokenizer
    token = tokenizer.convert_tokens_to_ids(f"<{lang}>")
    return {} if token is None or token == tokenizer.unk_token_id else {"forced_bos_token_id": token}


def check_settings(num_beams, num_captions, max_new_tokens, min_new_tokens, repetition_penalty,
                   no_repeat_ngram_size) -> dict:
    """The generation settings that were given, checked; unset ones stay the model's own."""
    settings = {}
    num_captions = whole_number("num_captions", num_captions, 1, MAX_BEAMS)
    if num_beams is not None:
        settings["num_beams"] = whole_number("num_beams", num_beams, 1, MAX_BEAMS)
        if num_captions > settings["num_beams"]:
            raise UserError(f"num_captions ({num_captions}) cannot exceed num_beams ({settings['num_beams']}): "
                            "the captions are the best beams. Raise num_beams.")
    elif num_captions > 1:
        settings["num_beams"] = num_captions
    if num_captions > 1:
        settings["num_return_sequences"] = num_captions
    if max_new_tokens is not None:
        settings["max_new_tokens"] = whole_number("max_new_tokens", max_new_tokens, 1, MAX_NEW_TOKENS)
    if min_new_tokens is not None:
        high = settings.get("max_new_tokens", MAX_NEW_TOKENS)
        settings["min_new_tokens"] = whole_number("min_new_tokens", min_new_tokens, 0, high)
    if repetition_penalty is not None:
        settings["repetition_penalty"] = number_in("repetition_penalty", repetition_penalty, 1.0, 2.0)
    if no_repeat_ngram_size is not None:
        settings["no_repeat_ngram_size"] = whole_number("no_repeat_ngram_size", no_repeat_ngram_size, 0, MAX_NGRAM)
    return settings


def check_length(loaded: LoadedModel, settings: dict) -> None:
    """New tokens must fit the decoder's positions (past them is an index error, on CUDA a poisoned
    process): room for the start and a language token."""
    positions = getattr(loaded.model.config.get_text_config(decoder=True), "max_position_embeddings", None)
    limit = min(MAX_NEW_TOKENS, positions - 2) if positions else MAX_NEW_TOKENS
    for name in ("max_new_tokens", "min_new_tokens"):
        if settings.get(name, 0) > limit:
            raise UserError(f"{name} must be a whole number up to {limit} for {loaded.entry.name} (its decoder "
                            f"holds {positions} positions); got {settings[name]}.")


def check_prompt(loaded: LoadedModel, prompt, settings: dict) -> str | None:
    """A prompt for a model that continues one, leaving the decoder room for the new tokens
    (generate()'s default is 20)."""
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        return None
    if not takes_prompt(loaded.model):
        raise UserError(f"{loaded.entry.name} takes no text prompt; leave the prompt empty "
                        "(a BLIP captioner continues a prompt).")
    prompt = text.clean_text(prompt, MAX_PROMPT_CHARACTERS)
    positions = loaded.model.config.get_text_config(decoder=True).max_position_embeddings
    new_tokens = settings.get("max_new_tokens", 20)
    ids = loaded.processor.tokenizer(prompt, return_tensors="pt")["input_ids"]
    tokens = families.of(loaded.model).prompt({"input_ids": ids}, 1).shape[1]  # as the decoder reads it
    if tokens + new_tokens > positions:
        raise UserError(f"The prompt is {tokens} tokens long; with {new_tokens} new tokens {loaded.entry.name} "
                        f"reads at most {positions - new_tokens}. Shorten the prompt or ask for fewer new tokens.")
    return prompt


@timing.whole_request
def caption(image, model: str | None = None, backend: str = "torch", lang: str | None = None,
            prompt: str | None = None, num_beams=None, num_captions=1, max_new_tokens=None, min_new_tokens=None,
            repetition_penalty=None, no_repeat_ngram_size=None, fallback: bool = False) -> Result:
    """Image -> Result with `caption` (the best) and `captions`: [{text, score}]."""
    decoded = images.decode_image(image)
    settings = check_settings(num_beams, num_captions, max_new_tokens, min_new_tokens, repetition_penalty,
                              no_repeat_ngram_size)
    backends.check_backend(backend)
    loaded = MODELS.load(MODELS.resolve(model).name, fallback=fallback)
    check_length(loaded, settings)
    settings.update(language_settings(loaded, lang))
    prompt = check_prompt(loaded, prompt, settings)
    describe = pipeline(loaded, backend)
    started = time.perf_counter()
    answers = describe(decoded.image, prompt=prompt, return_scores=True, **settings)
    latency_ms = (time.perf_counter() - started) * 1e3
    captions = [{"text": a["generated_text"], "score": None if a["score"] is None else round(a["score"], 6)}
                for a in answers]
    limit = settings.get("max_new_tokens", loaded.model.generation_config.max_new_tokens)
    cut = cut_at_the_token_limit(sum(not a["finished"] for a in answers), len(answers), "caption", limit)
    return Result(loaded, backend, latency_ms, {"caption": captions[0]["text"], "captions": captions},
                  notes=[*decoded.notes, *beyond_what_it_knows(loaded, decoded.image), *ranked_otherwise(captions),
                         *cut])


def ranked_otherwise(captions: list[dict]) -> list[str]:
    """A note where beam search's order and the scores shown disagree: it ranks with the repetition
    penalty and no-repeat rule applied and its length penalty; the score is the model's own mean
    token probability, without them (a visitor saw a lower caption scored higher, unexplained)."""
    scores = [c["score"] for c in captions if c["score"] is not None]
    if all(a >= b for a, b in itertools.pairwise(scores)):
        return []
    return ["The captions are in beam search's order, which applies the repetition settings and the length "
            "penalty; each score is the model's own mean token probability without them, so a lower caption "
            "can score higher."]
