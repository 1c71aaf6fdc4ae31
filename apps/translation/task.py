"""Translation, the recipe: text -> sentences -> batches of token ids -> generate -> text.

    from apps.translation.task import translate
    translate("A red 3 to the left of a blue 7.", src="en", tgt="de", backend="onnx")

The text is cleaned and split into sentences (and over-long sentences into pieces that fit the
model), translated in batches by the task adapter (shared/pipelines.py) on `model.generate()`
or on the ONNX graphs (shared/seq2seq.py), and joined again line by line.
"""

from __future__ import annotations

import time

from shared import backends, loader, registry, text
from shared.checks import whole_number
from shared.errors import UserError
from shared.loader import LoadedModel
from shared.pipelines import TranslationPipeline, translation_inputs
from shared.registry import ModelEntry
from shared.seq2seq import Seq2SeqOnnx, export_graphs

TASK = "translation"
LANGUAGES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
             "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "ru": "Russian", "uk": "Ukrainian",
             "zh": "Chinese", "ja": "Japanese", "ar": "Arabic", "hi": "Hindi"}
OPUS_MT = "opus-mt"  # the choice that means "Helsinki-NLP/opus-mt-{src}-{tgt}", picked by the languages
MAX_BEAMS = 8
MAX_NEW_TOKENS = 512
BATCH_SIZE = 8  # sentences per generate() call
EXAMPLES = {"en": ["A red 3 to the left of a blue 7.", "is there an 8?", "what colour is the 5?"],
            "de": ["Eine grüne 6 über einer gelben 2.", "wie viele ziffern gibt es?"]}


def pick_model(name: str | None, src: str, tgt: str) -> ModelEntry:
    """The registry entry for `name` (opus-mt: the pair's Marian model), checked to know src -> tgt."""
    for code in (src, tgt):
        if code not in LANGUAGES:
            raise UserError(f"Unknown language {code!r}; choose one of: {', '.join(LANGUAGES)}.")
    if src == tgt:
        raise UserError("Source and target language are the same: choose two different languages.")
    if name == OPUS_MT:
        name = f"Helsinki-NLP/opus-mt-{src}-{tgt}"
        if name not in {e.name for e in registry.entries(TASK)}:
            raise UserError(f"No curated opus-mt model translates {src} -> {tgt}; choose facebook/m2m100_418M.")
    entry = registry.resolve(TASK, name)
    if entry.source != "local" and not entry.translates(src, tgt):
        able = [e.name for e in registry.entries(TASK) if e.translates(src, tgt)]
        raise UserError(f"{entry.name} does not translate {LANGUAGES[src]} to {LANGUAGES[tgt]}"
                        + (f"; these do: {', '.join(able)}." if able else "; no offered model does."))
    return entry


def onnx_generator(loaded: LoadedModel) -> Seq2SeqOnnx:
    """The model's ONNX graphs with a `generate()`, exported and checked on first use, cached."""
    if not loaded.entry.onnx:
        raise UserError(f"{loaded.entry.name} is not marked as exportable to ONNX; use the torch backend.")

    def build() -> Seq2SeqOnnx:
        return Seq2SeqOnnx(export_graphs(loaded, sample_encoder_feeds(loaded, 2)), loaded)

    key = ("onnx-seq2seq", loaded.entry.name, str(loaded.device))
    return loader.cache.get(key, build, lambda g: sum(p.stat().st_size for p in g.paths.values()))


def pipeline(loaded: LoadedModel, backend: str) -> TranslationPipeline:
    if backend not in backends.BACKENDS:
        raise UserError(f"Unknown backend {backend!r}; choose one of: {', '.join(backends.BACKENDS)}.")
    generate = onnx_generator(loaded).generate if backend == "onnx" else None
    return TranslationPipeline(loaded.model, loaded.processor, generate=generate)


def first_pair(entry: ModelEntry) -> tuple[str, str]:
    if entry.pairs:
        src, tgt = entry.pairs[0].split("-")
        return src, tgt
    return (entry.languages[0], entry.languages[1]) if len(entry.languages) > 1 else ("en", "de")


def sample_texts(loaded: LoadedModel, n: int) -> tuple[list[str], str, str]:
    """`n` example sentences in the model's first source language (cycled), with that pair."""
    src, tgt = first_pair(loaded.entry)
    examples = EXAMPLES.get(src, EXAMPLES["en"])
    return [examples[i % len(examples)] for i in range(n)], src, tgt


def sample_encoder_feeds(loaded: LoadedModel, n: int) -> dict:
    texts, src, tgt = sample_texts(loaded, n)
    inputs = translation_inputs(loaded.processor, texts, src, tgt, padding=True, return_tensors="np")
    return {name: inputs[name] for name in ("input_ids", "attention_mask")}


def token_limit(loaded: LoadedModel) -> int:
    """Source tokens a sentence may have: the tokenizer's limit, at most the model's positions."""
    positions = getattr(loaded.model.config, "max_position_embeddings", 512)
    return min(int(loaded.processor.model_max_length), positions) - 2  # room for language and end tokens


def sentences_of(loaded: LoadedModel, cleaned: str) -> list[list[str]]:
    """Per line of the text, the pieces to translate: sentences, long ones cut at word boundaries."""
    limit = token_limit(loaded)

    def count(piece: str) -> int:
        return len(loaded.processor(piece, add_special_tokens=False)["input_ids"])

    return [[piece for sentence in text.split_sentences(line) for piece in
             (text.split_long(sentence, count, limit) if count(sentence) > limit else [sentence])]
            for line in cleaned.splitlines() if line.strip()]


def unknown_characters(loaded: LoadedModel, pieces: list[str]) -> set[str]:
    """Characters the tokenizer cannot represent (read as <unk>): said in a note, not an error."""
    unk = loaded.processor.unk_token_id
    if unk is None:
        return set()
    unknown = set()
    for piece in pieces:
        for word in piece.split():
            if unk in loaded.processor(word, add_special_tokens=False)["input_ids"]:
                unknown.update(c for c in word if unk in loaded.processor(c, add_special_tokens=False)["input_ids"])
    return unknown


def check_settings(num_beams, max_new_tokens) -> tuple[int, int]:
    return (whole_number("num_beams", num_beams, 1, MAX_BEAMS),
            whole_number("max_new_tokens", max_new_tokens, 1, MAX_NEW_TOKENS))


def translate(source_text, src: str = "en", tgt: str = "de", model: str | None = None, backend: str = "torch",
              num_beams: int = 4, max_new_tokens: int = 128, fallback: bool = False) -> dict:
    """Text -> {translation, model, backend, latency_ms, sentences, notes}.

    With `fallback` (the UI), a Hub model that cannot be loaded here is replaced by the embedded
    model when that one knows the pair, and the notes say so; the CLI fails instead.
    """
    cleaned = text.clean_text(source_text)
    num_beams, max_new_tokens = check_settings(num_beams, max_new_tokens)
    entry = pick_model(model, src, tgt)
    if fallback:
        loaded, notice = loader.load_or_fallback(TASK, entry.name, accepts=lambda e: e.translates(src, tgt))
    else:
        loaded, notice = loader.load_model(TASK, entry.name), ""
    lines = sentences_of(loaded, cleaned)
    pieces = [piece for line in lines for piece in line]
    translate_batch = pipeline(loaded, backend)
    limit = min(max_new_tokens, token_limit(loaded) + 2)
    started = time.perf_counter()
    translated = []
    for i in range(0, len(pieces), BATCH_SIZE):
        answers = translate_batch(pieces[i:i + BATCH_SIZE], src_lang=src, tgt_lang=tgt, num_beams=num_beams,
                                  max_new_tokens=limit)
        translated += [answer["translation_text"] for answer in answers]
    latency_ms = (time.perf_counter() - started) * 1e3
    out, rest = [], iter(translated)
    for line in lines:
        out.append(" ".join(next(rest) for _ in line))
    notes = [notice] if notice else []
    unknown = unknown_characters(loaded, pieces)
    if unknown:
        notes.append(f"{loaded.entry.name} does not know these characters and read them as unknown: "
                     f"{' '.join(sorted(unknown)[:20])}")
    return {"translation": "\n".join(out), "model": loaded.entry.name, "backend": backend,
            "latency_ms": round(latency_ms, 2), "sentences": len(pieces), "notes": notes}
