"""Translation, the recipe: text -> sentences -> batches of token ids -> generate -> text.

    from apps.translation.task import translate
    translate("A red 3 to the left of a blue 7.", src_lang="en", tgt_lang="de", backend="onnx").answer
    # {"translation": "Eine rote 3 links von einer blauen 7.", "sentences": 1}

The text is cleaned and split into sentences (and over-long sentences into pieces that fit the
model), translated in batches by the task adapter (shared/inference/pipelines.py) on
`model.generate()` or on the ONNX graphs (shared/inference/seq2seq.py), and joined again line
by line. Generation settings left unset are the model's own (its generation config), as with
`generate()` and the removed pipeline.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Callable

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

from shared import timing
from shared.contract import Result, beyond_its_words, cut_at_the_token_limit
from shared.data import scenes
from shared.errors import UserError, shown
from shared.inference import backends, seq2seq
from shared.inference.graphs import OnnxForm
from shared.inference.pipelines import TranslationPipeline, translation_inputs
from shared.inputs.checks import whole_number
from shared.inputs.text import clean_text, split_long, split_sentences
from shared.models import registry
from shared.models.loader import LoadedModel, TaskModels, transformers_loader
from shared.models.registry import ModelEntry

TASK = "translation"
MODELS = TaskModels(TASK, transformers_loader(AutoModelForSeq2SeqLM, AutoTokenizer))
LANGUAGES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
             "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "ru": "Russian", "uk": "Ukrainian",
             "zh": "Chinese", "ja": "Japanese", "ar": "Arabic", "hi": "Hindi"}
OPUS_MT = "opus-mt"  # a registry family: the language pair picks its model
MAX_BEAMS = 8
MAX_NEW_TOKENS = 512
BATCH_SIZE = 8  # sentences per generate() call
# What one request of the page may take: 5,000 characters at the defaults take 30-45 s with an opus-mt
# model on 2 cores, but 8 beams of 512 tokens each take several times that. Past it the translation
# stops after the batch under way and says so (the CLI has no limit).
PAGE_TIME_LIMIT_S = 120.0
EXAMPLES = {"en": ["A red 3 to the left of a blue 7.", "is there an 8?", "what colour is the 5?"],
            "de": ["Eine grüne 6 über einer gelben 2.", "wie viele ziffern gibt es?"]}


def pick_model(name: str | None, src_lang: str, tgt_lang: str) -> ModelEntry:
    """The registry entry for `name` (a family such as opus-mt: its model for the pair), checked to
    know src_lang -> tgt_lang (a model added by path or revision is taken at its word)."""
    for code in (src_lang, tgt_lang):
        if not isinstance(code, str) or code not in LANGUAGES:  # a list from an API client is unhashable
            raise UserError(f"Unknown language {shown(code)}; choose one of: {', '.join(LANGUAGES)}.")
    if src_lang == tgt_lang:
        raise UserError("Source and target language are the same: choose two different languages.")
    family = [e for e in registry.entries(TASK) if name and e.family == name]
    if family:
        able = [e for e in family if e.translates(src_lang, tgt_lang)]
        if not able:
            raise UserError(f"No curated {name} model translates {src_lang} -> {tgt_lang}; "
                            "choose facebook/m2m100_418M.")
        return able[0]
    entry = MODELS.resolve(name)
    if entry.knows_languages and not entry.translates(src_lang, tgt_lang):
        able = [e.name for e in registry.entries(TASK) if e.translates(src_lang, tgt_lang)]
        raise UserError(f"{entry.name} does not translate {LANGUAGES[src_lang]} to {LANGUAGES[tgt_lang]}"
                        + (f"; these do: {', '.join(able)}." if able else "; no offered model does."))
    return entry


def onnx_form(loaded: LoadedModel) -> OnnxForm:
    return seq2seq.form(loaded, ("input_ids", "attention_mask"), lambda n: sample_encoder_feeds(loaded, n))


def pipeline(loaded: LoadedModel, backend: str) -> TranslationPipeline:
    generate = backends.runner(loaded, backend, onnx_form(loaded))
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


def decoder_limit(loaded: LoadedModel) -> int:
    """New tokens the decoder can write: its positions, less the start token."""
    return getattr(loaded.model.config, "max_position_embeddings", MAX_NEW_TOKENS + 1) - 1


def sentences_of(loaded: LoadedModel, cleaned: str) -> list[list[str]]:
    """Per line of the text, the pieces to translate: sentences, long ones cut at word boundaries
    (and a word too long for the model alone into pieces of characters): nothing is dropped."""
    limit = token_limit(loaded)

    def count(piece: str) -> int:
        return len(loaded.processor(piece, add_special_tokens=False)["input_ids"])

    return [[piece for sentence in split_sentences(line) for piece in
             (split_long(sentence, count, limit) if count(sentence) > limit else [sentence])]
            for line in cleaned.splitlines() if line.strip()]


def terms(text: str, lang: str, entry: ModelEntry) -> Counter:
    """The words a translation must carry over: its numbers, and for the scenes' translator the colours
    (each as its English name, so that both sides of a pair compare)."""
    found = Counter(re.findall(r"\d+", text))
    if entry.words == "scenes":
        names = {(en if lang == "en" else de): en for en, (_, de) in scenes.COLOURS.items()}
        endings = "" if lang == "en" else "(?:e|er|en|es|em)?"  # German adjectives: rote, roter, blauen...
        pattern = rf"\b({'|'.join(names)}){endings}\b"
        found.update(names[stem] for stem in re.findall(pattern, text.lower()))
    return found


def unfaithful(entry: ModelEntry, src_lang: str, tgt_lang: str, sources: list[str], translations: list[str]) -> str:
    """The note for translations that lost or gained a number (or a scene's colour): "is there a red 3?"
    came back as "gibt es eine 3?", "the 5 is green." as "ist." (an outside evaluator), "Ein roter Hund."
    as "A red 6, above a red 0." (a visitor), each without a word."""
    done = sources[:len(translations)]  # a translation stopped at its time limit has the first ones only
    changed = [i for i, (source, target) in enumerate(zip(done, translations, strict=True), start=1)
               if terms(source, src_lang, entry) != terms(target, tgt_lang, entry)]
    if not changed:
        return ""
    kept = "numbers and colours" if entry.words == "scenes" else "numbers"
    which = ", ".join(map(str, changed[:10])) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
    if len(changed) == 1:
        return (f"The {kept} of sentence {which} differ between the source and its translation: a word was left "
                "out or made up; check it.")
    return (f"The {kept} of sentences {which} differ between the source and its translation: a word was left "
            "out or made up; check those sentences.")


def cut_short(loaded: LoadedModel, translations: list[str], max_new_tokens: int | None) -> int:
    """How many translations used (about) every token `max_new_tokens` allowed, so their end may be
    missing: re-tokenised, a translation can count one token fewer than were generated."""
    if not max_new_tokens:
        return 0
    return sum(len(loaded.processor(text_target=text, add_special_tokens=False)["input_ids"]) >= max_new_tokens - 1
               for text in translations)


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


def generation_settings(num_beams=None, max_new_tokens=None) -> dict:
    """The settings the caller set, checked; unset ones are left to the model's generation config."""
    settings = {}
    if num_beams is not None:
        settings["num_beams"] = whole_number("num_beams", num_beams, 1, MAX_BEAMS)
    if max_new_tokens is not None:
        settings["max_new_tokens"] = whole_number("max_new_tokens", max_new_tokens, 1, MAX_NEW_TOKENS)
    return settings


def generation_defaults(name: str | None) -> dict:
    """The model's own beam count and new-token budget, read from its generation config where its
    files are here (what the page shows as its defaults); {} where they are not."""
    entry = MODELS.resolve(name)
    folder = entry.local_dir
    if folder is None or not (folder / "generation_config.json").is_file():
        return {}
    config = GenerationConfig.from_pretrained(folder)
    # max_length counts the decoder's start token; max_new_tokens does not
    return {"num_beams": config.num_beams, "max_new_tokens": config.max_new_tokens or max(1, config.max_length - 1)}


def in_lines(lines: list[list[str]], translated: list[str]) -> str:
    """The translated pieces, as far as they go, put back into the text's lines."""
    out, rest = [], iter(translated)
    for line in lines:
        done = list(itertools.islice(rest, len(line)))
        if line and not done:
            break
        out.append(" ".join(done))
        if len(done) < len(line):
            break
    return "\n".join(out)


@timing.whole_request
def translate(text, src_lang: str = "en", tgt_lang: str = "de", model: str | None = None, backend: str = "torch",
              num_beams: int | None = None, max_new_tokens: int | None = None, fallback: bool = False,
              on_progress: Callable[[int, int, str], None] = lambda done, total, so_far: None,
              time_limit_s: float | None = None) -> Result:
    """Text -> Result with `translation` and `sentences` (how many pieces were translated);
    `on_progress(done, total, so_far)` hears, batch by batch, how many sentences are translated
    and the translation so far (what the page streams). Past `time_limit_s` no batch is started:
    the answer is the sentences translated by then, and a note says how many of how many.

    With `fallback` (the UI), a Hub model that cannot be loaded here is replaced by the embedded
    model when that one knows the pair, and the notes say so; the CLI fails instead.
    """
    cleaned = clean_text(text)
    settings = generation_settings(num_beams, max_new_tokens)
    entry = pick_model(model, src_lang, tgt_lang)
    loaded = MODELS.load(entry.name, fallback=fallback, accepts=lambda e: e.translates(src_lang, tgt_lang))
    notes = []
    most = decoder_limit(loaded)
    if settings.get("max_new_tokens", 0) > most:
        notes.append(f"max_new_tokens {settings['max_new_tokens']} is more than {loaded.entry.name} can write "
                     f"in one sentence: used {most}.")
        settings["max_new_tokens"] = most
    lines = sentences_of(loaded, cleaned)
    pieces = [piece for line in lines for piece in line]
    translate_batch = pipeline(loaded, backend)
    started = time.perf_counter()
    translated = []
    for i in range(0, len(pieces), BATCH_SIZE):
        if time_limit_s is not None and i and time.perf_counter() - started > time_limit_s:
            notes.append(f"stopped after {time_limit_s:.0f} s, the limit of one request, with {i:,} of the "
                         f"{len(pieces):,} sentences translated: send the rest as another request.")
            break
        answers = translate_batch(pieces[i:i + BATCH_SIZE], src_lang=src_lang, tgt_lang=tgt_lang, **settings)
        translated += [answer["translation_text"] for answer in answers]
        on_progress(len(translated), len(pieces), in_lines(lines, translated))
    latency_ms = (time.perf_counter() - started) * 1e3
    notes += beyond_its_words(loaded.entry, cleaned)
    notes += [note for note in [unfaithful(loaded.entry, src_lang, tgt_lang, pieces, translated)] if note]
    cut = cut_short(loaded, translated, settings.get("max_new_tokens"))
    notes += cut_at_the_token_limit(cut, len(translated), "sentence", settings.get("max_new_tokens"))
    unknown = unknown_characters(loaded, pieces)
    if unknown:
        notes.append(f"{loaded.entry.name} does not know these characters and read them as unknown: "
                     f"{' '.join(sorted(unknown)[:20])}")
    answer = {"translation": in_lines(lines, translated), "sentences": len(translated)}
    return Result(loaded, backend, latency_ms, answer, notes=notes)


def held_out_bleu(loaded: LoadedModel, generate: Callable) -> dict:
    """BLEU (sacrebleu's corpus score, as a fraction) of each direction between English and German
    the model knows, on the held-out scenes' sentence pairs, decoded with the model's own settings
    as the app serves them: the int8 check of `demohub export translation --quantize`. Only for the
    embedded models, which learnt the scenes' language: for a Hub model these 89 words are no
    held-out set of what it was trained on (nothing: no int8 offered)."""
    if loaded.entry.source != "embedded":
        return {}
    import sacrebleu

    from shared.data.scenes import HELD_OUT_SCENES, HELD_OUT_SEED, translation_pairs

    pairs = list(translation_pairs(HELD_OUT_SCENES, HELD_OUT_SEED))  # 738 pairs
    translate_batch = TranslationPipeline(loaded.model, loaded.processor, generate=generate)
    scores = {}
    for src, tgt in (("en", "de"), ("de", "en")):
        if not loaded.entry.translates(src, tgt):
            continue
        oriented = pairs if src == "en" else [(de, en) for en, de in pairs]
        sources, references = [s for s, _ in oriented], [t for _, t in oriented]
        hypotheses = [answer["translation_text"] for i in range(0, len(sources), BATCH_SIZE)
                      for answer in translate_batch(sources[i:i + BATCH_SIZE], src_lang=src, tgt_lang=tgt)]
        scores[f"scenes_bleu_{src}_{tgt}"] = round(sacrebleu.corpus_bleu(hypotheses, [references]).score / 100, 4)
    return scores
