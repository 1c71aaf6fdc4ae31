"""Greedy and beam search for encoder-decoder models, over any decoder step function.

    tokens = greedy_search(step, start_ids, settings)
    tokens = beam_search(step, reorder, start_ids, settings)

`step(decoder_input_ids) -> logits` gives the next-token logits (rows x vocab) for the token
ids so far; `reorder(rows)` tells a cached decoder which rows beam search keeps. The search
follows transformers 5.23's `GenerationMixin._sample` (greedy) and `_beam_search` step for
step (generation/utils.py), with transformers' own logits processors, so that on the same
logits it picks the same tokens as `model.generate()`: the ONNX backend's answers are then
`generate()`'s answers. Tensors are small torch CPU tensors; the decoder may run anywhere.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import GenerationConfig
from transformers.generation import logits_process as lp

from shared.errors import UserError

Step = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SearchSettings:
    """What one `generate()` call asks for, resolved against the model's generation config."""

    config: GenerationConfig
    max_length: int  # decoder tokens including the start token
    eos_ids: torch.Tensor
    pad_id: int
    processors: lp.LogitsProcessorList


# generation-config fields the ONNX search does not implement, with the value that means "off"
_UNSUPPORTED = {"do_sample": False, "num_return_sequences": 1, "sequence_bias": None, "suppress_tokens": None,
                "begin_suppress_tokens": None, "encoder_no_repeat_ngram_size": 0, "guidance_scale": None,
                "exponential_decay_length_penalty": None, "constraints": None, "force_words_ids": None}


def settings(generation_config: GenerationConfig, start_length: int = 1, positions: int | None = None,
             **kwargs) -> SearchSettings:
    """`generate(**kwargs)`'s settings: the model's generation config updated with `kwargs`,
    lengths counted as transformers counts them, and its logits processors in its order.
    `positions`: the `max_position_embeddings` of the model generate() runs on, where it has one."""
    # neither the call nor the model sets a length: generate() allows 20 tokens after the prompt
    default_length = kwargs.get("max_length") is None and generation_config.max_length is None
    config = copy.deepcopy(generation_config)
    # what generate() does: the model's settings, transformers' defaults where unset, then the call's
    config.update(**GenerationConfig._get_default_generation_params(), defaults_only=True)
    unused = config.update(**kwargs)
    if unused:
        raise UserError(f"Unknown generation settings: {', '.join(sorted(unused))}.")
    for name, off in _UNSUPPORTED.items():
        value = getattr(config, name, None)
        if name == "num_return_sequences" and value is not None and value <= config.num_beams:
            continue  # the n best beams: beam search keeps them anyway
        if value is not None and value != off:
            raise UserError(f"The onnx backend does not support {name}={value!r}; use the torch backend.")
    max_length = config.max_length if config.max_new_tokens is None else start_length + config.max_new_tokens
    if default_length and config.max_new_tokens is None:
        max_length = min(config.max_length + start_length, positions or config.max_length + start_length)
    eos = config.eos_token_id
    eos_ids = torch.tensor([] if eos is None else [eos] if isinstance(eos, int) else list(eos), dtype=torch.long)
    pad_id = config.pad_token_id if config.pad_token_id is not None else int(eos_ids[0])

    processors = lp.LogitsProcessorList()
    if config.repetition_penalty not in (None, 1.0):
        processors.append(lp.RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.no_repeat_ngram_size:
        processors.append(lp.NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
    if config.bad_words_ids is not None:
        processors.append(lp.NoBadWordsLogitsProcessor(config.bad_words_ids, eos_ids))
    if config.min_length and len(eos_ids):
        processors.append(lp.MinLengthLogitsProcessor(config.min_length, eos_ids))
    if config.min_new_tokens and len(eos_ids):
        processors.append(lp.MinNewTokensLengthLogitsProcessor(start_length, config.min_new_tokens, eos_ids))
    if config.forced_bos_token_id is not None:
        processors.append(lp.ForcedBOSTokenLogitsProcessor(config.forced_bos_token_id))
    if config.forced_eos_token_id is not None:
        processors.append(lp.ForcedEOSTokenLogitsProcessor(max_length, config.forced_eos_token_id))
    if config.remove_invalid_values:
        processors.append(lp.InfNanRemoveLogitsProcessor())
    if config.renormalize_logits:
        processors.append(lp.LogitNormalization())
    return SearchSettings(config, max_length, eos_ids, pad_id, processors)


def _process(s: SearchSettings, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The processors one after another (LogitsProcessorList does the same, but inspects each
    processor's signature on every call: a fifth of a small model's generation time)."""
    for processor in s.processors:
        scores = processor(input_ids, scores)
    return scores


def _is_done(sequences: torch.Tensor, s: SearchSettings) -> torch.Tensor:
    """transformers' MaxLengthCriteria and EosTokenCriteria on the last token."""
    at_max = torch.full(sequences.shape[:1], sequences.shape[-1] >= s.max_length)
    return at_max | torch.isin(sequences[:, -1], s.eos_ids)


def greedy_search(step: Step, input_ids: torch.Tensor, s: SearchSettings) -> torch.Tensor:
    unfinished = torch.ones(len(input_ids), dtype=torch.bool)
    while True:
        scores = _process(s, input_ids, step(input_ids).float())
        next_tokens = torch.where(unfinished, scores.argmax(-1), s.pad_id)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        unfinished &= ~_is_done(input_ids, s)
        if not unfinished.any():
            return input_ids


def _gather(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows `indices` (batch x picked) of tensor (batch x beams x ...)."""
    while indices.dim() < tensor.dim():
        indices = indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, indices, dim=1)


def beam_search(step: Step, reorder: Callable[[torch.Tensor], None], input_ids: torch.Tensor,
                s: SearchSettings) -> torch.Tensor:
    """`input_ids` has num_beams rows per input (beams of one input are adjacent)."""
    k = s.config.num_beams
    length_penalty, early_stopping = s.config.length_penalty, s.config.early_stopping
    batch, prompt_len = len(input_ids) // k, input_ids.shape[-1]
    keep = max(2, 1 + len(s.eos_ids)) * k
    top_k_mask = torch.arange(keep) < k
    fill = s.pad_id if s.config.pad_token_id is not None and s.pad_id else int(s.eos_ids[0])  # as transformers

    running = torch.full((batch, k, s.max_length), fill, dtype=torch.long)
    running[:, :, :prompt_len] = input_ids.view(batch, k, -1)
    finished = running.clone()
    running_scores = torch.zeros(batch, k)
    running_scores[:, 1:] = -1e9
    finished_scores = torch.full((batch, k), -1e9)
    finished_lengths = torch.zeros(batch, k, dtype=torch.long)
    is_finished = torch.zeros(batch, k, dtype=torch.bool)
    improvable = torch.ones(batch, 1, dtype=torch.bool)
    cur_len = prompt_len
    while True:
        flat = running[:, :, :cur_len].reshape(batch * k, cur_len)
        log_probs = _process(s, flat, torch.log_softmax(step(flat).float(), dim=-1))
        vocab = log_probs.shape[-1]
        log_probs = (log_probs.view(batch, k, vocab) + running_scores[:, :, None]).view(batch, k * vocab)

        # the `keep` best continuations over all beams
        top_scores, top_indices = torch.topk(log_probs, keep)
        source_beams = top_indices // vocab
        candidates = _gather(running, source_beams)
        candidates[:, :, cur_len] = top_indices % vocab
        done = _is_done(candidates[:, :, :cur_len + 1].reshape(batch * keep, -1), s).view(batch, keep)

        # the best `k` unfinished ones run on
        open_scores = top_scores + done.float() * -1e9
        chosen = torch.topk(open_scores, k)[1]
        running = _gather(candidates, chosen)
        running_scores = _gather(open_scores, chosen)
        reorder((_gather(source_beams, chosen) + torch.arange(batch)[:, None] * k).flatten())

        # finished ones among the top `k` compete for the `k` finished slots
        just_finished = done & top_k_mask[None, :]
        scores = top_scores / ((cur_len + 1 - prompt_len) ** length_penalty)
        scores += (is_finished.all(-1, keepdim=True) & (early_stopping is True)).float() * -1e9
        scores += (~improvable).float() * -1e9
        scores += (~just_finished).float() * -1e9
        merged_scores = torch.cat([finished_scores, scores], dim=1)
        best = torch.topk(merged_scores, k)[1]
        finished = _gather(torch.cat([finished, candidates], dim=1), best)
        finished_scores = _gather(merged_scores, best)
        lengths = torch.full((batch, keep), cur_len + 1 - prompt_len)
        finished_lengths = _gather(torch.cat([finished_lengths, lengths], dim=1), best)
        is_finished = _gather(torch.cat([is_finished, just_finished], dim=1), best)

        cur_len += 1
        if early_stopping == "never" and length_penalty > 0.0:
            best_length = s.max_length - prompt_len
        else:
            best_length = cur_len - prompt_len
        best_running = running_scores[:, :1] / (best_length ** length_penalty)
        worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True)[0], -1.0e9)
        improvable &= (best_running > worst_finished).any(dim=-1, keepdim=True)
        if not (improvable.any() and not (is_finished.all() and early_stopping is True) and not done.all()):
            break
    # the n best finished beams of each input, cut to the longest of them (as transformers returns them)
    n = s.config.num_return_sequences or 1
    length = prompt_len + int(finished_lengths[:, :n].max())
    return finished[:, :n, :length].reshape(batch * n, length)


def continuation_log_probs(step: Step, prefix: torch.Tensor, continuations: list[list[int]]) -> torch.Tensor:
    """The log-probability of each continuation after its row of `prefix`, token by token with
    the tokens themselves fed back (teacher forcing): how a generative model scores candidate
    answers. One row per continuation; the rows go through `step` together."""
    lengths = torch.tensor([len(c) for c in continuations])
    targets = torch.tensor([c + [c[-1]] * (int(lengths.max()) - len(c)) for c in continuations])
    total, ids = torch.zeros(len(continuations)), prefix
    for t in range(targets.shape[1]):
        picked = torch.log_softmax(step(ids).float(), dim=-1).gather(1, targets[:, t:t + 1])[:, 0]
        total += torch.where(t < lengths, picked, torch.zeros_like(picked))
        ids = torch.cat([ids, targets[:, t:t + 1]], dim=1)
    return total
