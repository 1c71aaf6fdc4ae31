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
The captioning and VQA adapters will have the same shape with an image processor in front.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


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
