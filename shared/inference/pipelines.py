"""Task adapters for the pipelines transformers 5 removed: model + tokenizer + `generate`.

    translate = TranslationPipeline(model, tokenizer)                     # torch: model.generate
    translate = TranslationPipeline(model, tokenizer, generate=onnx.generate)  # same call, onnxruntime
    translate(["a red 3", "is there a 5?"], src_lang="en", tgt_lang="de", num_beams=4, max_new_tokens=64)
    # [{"translation_text": "eine rote 3"}, {"translation_text": "gibt es eine 5?"}]

The call keeps the old `pipeline("translation")`'s arguments and answer: text or a list of
texts; `src_lang`/`tgt_lang`; `return_text`, `return_tensors`, `clean_up_tokenization_spaces`,
`truncation`; every other keyword goes to `generate`. Multilingual tokenizers that know a
translation direction (M2M100, NLLB) prepare their inputs themselves, as the pipeline let
them; a Marian tokenizer with target-language tokens (`>>de<<`) gets the token put in front.
`ImageToTextPipeline` and `VisualQuestionAnsweringPipeline` keep the removed image-to-text and
visual-question-answering pipelines' calls and answers the same way, with an image processor
in front and, for the ONNX backend, `generate` and `decoder_step` from shared/seq2seq.py; what
differs between vision encoder-decoders and BLIP lives in shared/inference/families.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from shared.errors import UserError
from shared.inference import families, search
from shared.inference.families import takes_prompt


def target_language_token(tokenizer, tgt_lang: str | None) -> str:
    """`>>de<<` when the tokenizer is a multi-target Marian one that knows the language, else ""."""
    codes = getattr(tokenizer, "supported_language_codes", None) or []
    token = f">>{tgt_lang}<<"
    return token if tgt_lang and token in codes else ""


def translation_inputs(tokenizer, texts: list[str], src_lang: str | None, tgt_lang: str | None,
                       **tokenizer_kwargs) -> dict:
    """Token ids (and `forced_bos_token_id` for multilingual models) for `generate`."""
    if hasattr(tokenizer, "_build_translation_inputs"):  # M2M100, NLLB: the pipeline's own hook
        return dict(tokenizer._build_translation_inputs(texts, src_lang=src_lang, tgt_lang=tgt_lang,
                                                        **tokenizer_kwargs))
    token = target_language_token(tokenizer, tgt_lang)
    return dict(tokenizer([f"{token} {t}" if token else t for t in texts], **tokenizer_kwargs))


class TranslationPipeline:
    def __init__(self, model, tokenizer, generate: Callable | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.generate = generate or model.generate

    def __call__(self, texts: str | list[str], src_lang: str | None = None, tgt_lang: str | None = None,
                 return_tensors: bool = False, return_text: bool = True,
                 clean_up_tokenization_spaces: bool = False, truncation: bool | str = False,
                 **generate_kwargs) -> list[dict]:
        batch = [texts] if isinstance(texts, str) else list(texts)
        inputs = translation_inputs(self.tokenizer, batch, src_lang, tgt_lang, padding=True,
                                    truncation=truncation, return_tensors="pt")
        device = self.model.device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        with torch.inference_mode():
            token_ids = self.generate(**inputs, **generate_kwargs)
        answers = []
        for row in token_ids:
            answer = {}
            if return_tensors:
                answer["translation_token_ids"] = row
            if return_text:
                answer["translation_text"] = self.tokenizer.decode(
                    row, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up_tokenization_spaces)
            answers.append(answer)
        return answers


def question_prompt(tokenizer, question: str) -> list[int]:
    """A question as a vision encoder-decoder's decoder prompt (after its start token): the
    question's tokens, then the separator (`<sep>`, or the end token where there is none)."""
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return tokenizer(" " + question.strip(), add_special_tokens=False)["input_ids"] + [sep]


def torch_decoder_step(model, rows: torch.Tensor, **encoder_inputs):
    """The torch twin of `Seq2SeqOnnx.decoder_step`: next-token logits for decoder ids, one row per
    entry of `rows`, over the encoder's output for `encoder_inputs` (no cache: answers are short)."""
    family = families.of(model)
    inputs = {k: v.to(model.device) for k, v in encoder_inputs.items() if k in family.encoder_inputs}
    index = rows.to(model.device)
    with torch.inference_mode():
        hidden = family.encode(inputs)
        hidden, mask = hidden[index], family.encoder_mask(inputs, hidden)[index]

    def step(decoder_input_ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            logits, _ = family.decode(decoder_input_ids.to(model.device), hidden, mask)
        return logits[:, -1].float().cpu()

    return step


class ImageToTextPipeline:
    """The removed `pipeline("image-to-text")`: images in, [{"generated_text"}] out per image.

    `caption(image, max_new_tokens=20, num_beams=4, num_return_sequences=3)` gives the 3 best beams;
    with `return_scores=True` each also has "score": the mean log-probability of its new tokens
    (end token included) as a probability, computed with the decoder the same way on both backends,
    and "finished": whether it reached its end token (else the token limit cut it).
    A prompt (BLIP) is one text for every image.
    """

    def __init__(self, model, processor, generate: Callable | None = None, decoder_step: Callable | None = None):
        self.model, self.processor = model, processor
        self.generate = generate or model.generate
        self.decoder_step = decoder_step or (lambda rows, **inputs: torch_decoder_step(model, rows, **inputs))

    def __call__(self, images, prompt: str | None = None, max_new_tokens: int | None = None,
                 return_scores: bool = False, **generate_kwargs) -> list:
        single = not isinstance(images, list | tuple)
        batch = [images] if single else list(images)
        if prompt is not None and not takes_prompt(self.model):
            raise UserError(f"{type(self.model).__name__} takes no text prompt; leave the prompt empty.")
        inputs = self.processor(images=batch, text=[prompt] * len(batch) if prompt else None, return_tensors="pt")
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        if max_new_tokens is not None:
            generate_kwargs["max_new_tokens"] = max_new_tokens
        with torch.inference_mode():
            token_ids = self.generate(**inputs, **generate_kwargs).cpu()
        per_image = len(token_ids) // len(batch)
        texts = [t.strip() for t in self.processor.tokenizer.batch_decode(token_ids, skip_special_tokens=True)]
        answers = [{"generated_text": t} for t in texts]
        if return_scores:
            # the start (and a prompt), then a forced language token where one was asked for
            prefix = families.of(self.model).prompt(inputs, len(batch)).shape[1]
            prefix += "forced_bos_token_id" in generate_kwargs
            scores = self.scores(inputs, token_ids, per_image, prefix)
            eos = end_token(self.model)
            for answer, score, row in zip(answers, scores, token_ids[:, prefix:].tolist(), strict=True):
                answer["score"] = score
                answer["finished"] = eos in row  # it reached its end token, not the token limit
        grouped = [answers[i * per_image:(i + 1) * per_image] for i in range(len(batch))]
        return grouped[0] if single else grouped

    def scores(self, inputs: dict, token_ids: torch.Tensor, per_image: int, prefix: int) -> list[float]:
        """exp(mean log-probability) of each generated caption's tokens after the first `prefix`
        (which generate() was told), up to its end token."""
        eos = end_token(self.model)
        continuations = []
        for row in token_ids[:, prefix:].tolist():
            continuations.append(row[:row.index(eos) + 1] if eos in row else row)
        rows = torch.arange(len(token_ids)) // per_image
        step = self.decoder_step(rows, **inputs)
        log_probs = search.continuation_log_probs(step, token_ids[:, :prefix], continuations)
        return [float(torch.exp(lp / len(c))) for lp, c in zip(log_probs, continuations, strict=True)]


def end_token(model) -> int | None:
    """The token generate() stops at (the first, where there are several)."""
    eos = families.of(model).generation_config.eos_token_id
    return eos if isinstance(eos, int) or eos is None else (list(eos) or [None])[0]


class VisualQuestionAnsweringPipeline:
    """The removed `pipeline("visual-question-answering")`: an image and a question in,
    [{"score", "answer"}] (the `top_k` best) out.

    Classifier models (ViLT) score their answer vocabulary with a sigmoid, as the old pipeline
    did. Generative models (a vision encoder-decoder reading the question as its decoder prompt,
    or BLIP reading it with its text encoder) answer with `generate` (the first answer returned);
    the rest of their top-k are candidate answers (the model's `answers` list, or, for a model
    without one, its `top_k` best beams) scored by the decoder in one batched pass with it: each
    answer's probability, end token included, the same on both backends.
    """

    def __init__(self, model, processor, generate: Callable | None = None, decoder_step: Callable | None = None,
                 candidates: list[str] | None = None):
        self.model, self.processor, self.candidates = model, processor, list(candidates or [])
        self.generate = generate or getattr(model, "generate", None)  # a classifier (ViLT) has none
        self.decoder_step = decoder_step or (lambda rows, **inputs: torch_decoder_step(model, rows, **inputs))
        self.classifier = hasattr(model, "classifier") and model.config.model_type != "blip"

    def __call__(self, image, question: str, top_k: int = 1, **generate_kwargs) -> list[dict]:
        if self.classifier:
            inputs = self.processor(images=image, text=question, return_tensors="pt").to(self.model.device)
            with torch.inference_mode():
                probs = self.model(**inputs).logits.sigmoid()[0]
            scores, ids = probs.topk(min(top_k, len(probs)))
            return [{"score": float(s), "answer": self.model.config.id2label[int(i)]}
                    for s, i in zip(scores, ids, strict=True)]
        tokenizer, family = self.processor.tokenizer, families.of(self.model)
        if isinstance(family, families.Blip):  # the question goes to BLIP's text encoder
            inputs = dict(self.processor(images=[image], text=[question], return_tensors="pt"))
        else:  # the question is the decoder's prompt, after its start token
            inputs = {"pixel_values": self.processor(images=[image], return_tensors="pt")["pixel_values"],
                      "decoder_input_ids": torch.tensor([[family.start_token_id,
                                                          *question_prompt(tokenizer, question)]])}
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        prompt = family.prompt(inputs, 1)

        def generated(**settings) -> list[list[int]]:
            with torch.inference_mode():
                out = self.generate(**inputs, **{**generate_kwargs, **settings}).cpu()
            return out[:, prompt.shape[1]:].tolist()

        def text(tokens: list[int]) -> str:
            return tokenizer.decode(tokens, skip_special_tokens=True).strip()

        (own,) = generated()
        answer, eos = text(own), end_token(self.model)
        others = self.candidates
        if not others and top_k > 1:  # no answer list: the k best beams are the candidates
            beams = max(top_k, generate_kwargs.get("num_beams") or 1)
            others = [text(row) for row in generated(num_beams=beams, num_return_sequences=top_k)]
        candidates = [answer, *(c for c in dict.fromkeys(others) if c and c != answer)]
        # generate()'s own tokens for its answer (up to its end token); the candidates' tokens for the rest
        own = own[:own.index(eos) + 1] if eos in own else own
        continuations = [own] + [tokenizer(" " + c, add_special_tokens=False)["input_ids"] + [eos]
                                 for c in candidates[1:]]
        step = self.decoder_step(torch.zeros(len(candidates), dtype=torch.long), **inputs)
        log_probs = search.continuation_log_probs(step, prompt.repeat(len(candidates), 1), continuations)
        scores = log_probs.exp().tolist()
        # generate()'s answer first, as the old pipeline answered; then the other candidates by score
        ranked = [(scores[0], answer), *sorted(zip(scores[1:], candidates[1:], strict=True), key=lambda p: -p[0])]
        return [{"score": s, "answer": c} for s, c in ranked[:top_k]]
