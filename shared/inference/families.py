"""How each encoder-decoder family meets the one generation path (seq2seq.py, search.py).

    family = families.of(model)
    hidden = family.encode(inputs)                     # what the decoder attends to
    logits, cache = family.decode(ids, hidden, mask, cache)
    start = family.prompt(inputs)                      # the decoder ids generate() starts from

Two families, each as transformers' own `generate()` runs it:

- `EncoderDecoder`: models transformers runs as one encoder-decoder (Marian, M2M100, a
  VisionEncoderDecoder such as ViT + TrOCR or GPT-2). Encoder: `model.get_encoder()`; decoder:
  the model with `encoder_outputs`; start token: `decoder_start_token_id`; a prompt is given as
  `decoder_input_ids` (a question, for VQA).
- `Blip`: BlipForConditionalGeneration (captions) and BlipForQuestionAnswering. Encoder: the
  vision model, then for VQA the text encoder over the question (attending to the image);
  decoder: `text_decoder`. BlipConfig has no `decoder_start_token_id`: BLIP's generate() starts
  from the text bos (`[DEC]`), stops at `[SEP]`, pads with the text pad, and attends to every
  encoder position (a mask of ones, even over a padded question). A caption prompt comes as the
  processor's `input_ids`: BLIP puts `[DEC]` in place of `[CLS]` and drops the final `[SEP]`.
"""

from __future__ import annotations

import copy
import inspect

import torch
from transformers import GenerationConfig

from shared.errors import UserError


class EncoderDecoder:
    def __init__(self, model):
        self.model = model
        self.generation_config = model.generation_config
        start = self.generation_config.decoder_start_token_id  # where generate() looks first
        self.start_token_id = start if start is not None else model.config.decoder_start_token_id
        main = model.main_input_name
        self.encoder_inputs = ("input_ids", "attention_mask") if main == "input_ids" else (main,)
        self.positions = getattr(model.config, "max_position_embeddings", None)  # what generate() caps lengths at

    def encode(self, inputs: dict) -> torch.Tensor:
        return self.model.get_encoder()(**{k: inputs[k] for k in self.encoder_inputs}).last_hidden_state

    def encoder_mask(self, inputs: dict, hidden):
        """The mask over encoder positions (the source's, or none for pixels: all ones)."""
        if "attention_mask" in self.encoder_inputs:
            return inputs["attention_mask"]
        return _ones_like_positions(hidden)

    def decode(self, ids, hidden, mask, cache=None):
        return _step_with_cache(self.model, cache, encoder_outputs=(hidden,), attention_mask=mask,
                                decoder_input_ids=ids)

    def prompt(self, inputs: dict, rows: int) -> torch.Tensor:
        """`decoder_input_ids` with the start token in front where it is missing (as generate()),
        else the start token alone."""
        given = inputs.get("decoder_input_ids")
        if given is None:
            return torch.full((rows, 1), self.start_token_id, dtype=torch.long)
        given = given.cpu().long()
        if (given[:, 0] == self.start_token_id).all():
            return given
        return torch.cat([torch.full((rows, 1), self.start_token_id), given], dim=1)


class Blip:
    def __init__(self, model):
        self.model = model
        text = model.config.text_config
        self.start_token_id = text.bos_token_id
        self.answers_questions = hasattr(model, "text_encoder")  # BlipForQuestionAnswering
        self.encoder_inputs = ("pixel_values", "input_ids", "attention_mask") if self.answers_questions \
            else ("pixel_values",)
        # what BLIP's generate() hands its text decoder's generate()
        self.generation_config: GenerationConfig = copy.deepcopy(model.text_decoder.generation_config)
        self.generation_config.eos_token_id = text.sep_token_id
        self.generation_config.pad_token_id = text.pad_token_id
        self.positions = text.max_position_embeddings

    def encode(self, inputs: dict) -> torch.Tensor:
        image = self.model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        if not self.answers_questions:
            return image
        return self.model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                       encoder_hidden_states=image,
                                       encoder_attention_mask=_ones_like_positions(image), return_dict=False)[0]

    def encoder_mask(self, inputs: dict, hidden):
        return _ones_like_positions(hidden)

    def decode(self, ids, hidden, mask, cache=None):
        return _step_with_cache(self.model.text_decoder, cache, input_ids=ids, encoder_hidden_states=hidden,
                                encoder_attention_mask=mask)

    def prompt(self, inputs: dict, rows: int) -> torch.Tensor:
        given = None if self.answers_questions else inputs.get("input_ids")
        if given is None:
            return torch.full((rows, 1), self.start_token_id, dtype=torch.long)
        given = given.cpu().long().clone()
        given[:, 0] = self.start_token_id
        return given[:, :-1]


def _ones_like_positions(hidden):
    """A mask of ones over (batch, positions) of `hidden`, numpy or torch like it."""
    if isinstance(hidden, torch.Tensor):
        return torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    import numpy as np

    return np.ones(hidden.shape[:2], dtype=np.int64)


def of(model) -> EncoderDecoder | Blip:
    """The family of a loaded model; a model of neither (a classifier such as ViLT, a decoder-only
    captioner) is refused with a sentence."""
    if model.config.model_type == "blip":
        return Blip(model)
    if model.config.is_encoder_decoder:
        return EncoderDecoder(model)
    raise UserError(f"{type(model).__name__} is not an encoder-decoder: the onnx backend and decoder scores "
                    "cover vision encoder-decoders, BLIP and translation models; choose the torch backend.")


def takes_prompt(model) -> bool:
    """Whether a captioner reads a text prompt: a BLIP captioner continues one (conditional
    captioning); a vision encoder-decoder starts from its start token (or a language token) alone."""
    return model.config.model_type == "blip" and not hasattr(model, "text_encoder")


def _step_with_cache(decoder, cache, **inputs) -> tuple:
    """(logits, cache) of one decoder call. transformers 5 renames `past_key_values` to `cache`
    (the old name warns until 5.40): pass and read the name this version's model takes."""
    name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    out = decoder(**inputs, **{name: cache}, use_cache=True)
    return out.logits, out[name]
