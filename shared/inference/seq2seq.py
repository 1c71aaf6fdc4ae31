"""Encoder-decoder generation on onnxruntime: three exported graphs and a search over them.

    form = seq2seq.form(loaded, ("input_ids", "attention_mask"), encoder_feeds)   # an OnnxForm
    generate = backends.runner(loaded, "onnx", form)                               # exported, checked, cached
    token_ids = generate(**tokenizer(texts, return_tensors="pt", padding=True), num_beams=4)

`Seq2SeqOnnx.generate` has `model.generate()`'s signature and answers (see search.py), so a task
adapter takes either (pipelines.py). The graphs:

- `encoder`: the model's encoder inputs (token ids and mask, or pixel values) -> encoder_hidden_states
- `decoder`: the first step (and every step without a cache): decoder_input_ids, encoder_hidden_states,
  encoder_attention_mask -> next-token logits and each layer's self- and cross-attention keys/values
- `decoder_with_past`: one token with the keys/values so far -> logits and the self-attention
  keys/values one longer. Cross-attention keys/values are computed once, in the first step.

The decoder modules rebuild transformers' `EncoderDecoderCache` from flat tensors and call the
model's family (families.py) for the encoder and a decoder step, so every family exports this way:
Marian and M2M100, a VisionEncoderDecoder (ViT + TrOCR or GPT-2: captioning, and VQA with the
question as a decoder prompt) with `encoder_inputs=("pixel_values",)`, and BLIP (its vision model,
plus its text encoder over the question for VQA; its text decoder) with the family's inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from shared.inference import export, families, search
from shared.inference.graphs import Feeds, OnnxForm, OnnxSpec
from shared.inference.sessions import ort_session
from shared.models.loader import LoadedModel

TOLERANCE = dict(atol=1e-4, rtol=1e-3)  # |onnx - torch| <= atol + rtol * |torch| on logits and keys/values


def _layer_names(prefix: str, layers: int, kinds=("key", "value")) -> tuple[str, ...]:
    return tuple(f"{prefix}.{i}.{kind}" for i in range(layers) for kind in kinds)


def _past_names(layers: int) -> tuple[str, ...]:
    """Per layer: self-attention key, value, then cross-attention key, value (the cache's layout)."""
    return tuple(name for i in range(layers)
                 for name in (f"past.{i}.key", f"past.{i}.value", f"cross.{i}.key", f"cross.{i}.value"))


@dataclass(frozen=True)
class Seq2SeqSpecs:
    encoder: OnnxSpec
    decoder: OnnxSpec
    decoder_with_past: OnnxSpec
    layers: int


def specs(encoder_inputs: tuple[str, ...], layers: int) -> Seq2SeqSpecs:
    batch, source = {0: "batch"}, {0: "batch", 1: "source"}
    sequence_axes = {"input_ids": source, "attention_mask": source, "pixel_values": batch}
    encoder = OnnxSpec(encoder_inputs, ("encoder_hidden_states",),
                       {name: sequence_axes.get(name, batch) for name in encoder_inputs}, **TOLERANCE)
    decoder = OnnxSpec(
        ("decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask"),
        ("logits", *_layer_names("present", layers), *_layer_names("cross", layers)),
        {"decoder_input_ids": {0: "batch", 1: "decoder"}, "encoder_hidden_states": source,
         "encoder_attention_mask": source}, **TOLERANCE)
    past = _past_names(layers)
    decoder_with_past = OnnxSpec(
        ("decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask", *past),
        ("logits", *_layer_names("present", layers)),
        {"decoder_input_ids": batch, "encoder_hidden_states": source, "encoder_attention_mask": source,
         **{name: {0: "batch", 2: "past" if name.startswith("past") else "source"} for name in past}},
        **TOLERANCE)
    return Seq2SeqSpecs(encoder, decoder, decoder_with_past, layers)


class EncoderGraph(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, spec: OnnxSpec):
        super().__init__()
        self.model, self.family, self.names = model, families.of(model), spec.input_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.family.encode(dict(zip(self.names, inputs, strict=True))),)


class DecoderGraph(torch.nn.Module):
    """One decoder step on flat tensors: with past keys/values (`decoder_with_past`) or without."""

    def __init__(self, model: torch.nn.Module, spec: OnnxSpec):
        super().__init__()
        self.model, self.family, self.with_past = model, families.of(model), len(spec.input_names) > 3

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        decoder_input_ids, encoder_hidden_states, encoder_attention_mask, *past = inputs
        cache = None
        if self.with_past:
            layers = [past[i:i + 4] for i in range(0, len(past), 4)]
            cache = EncoderDecoderCache(DynamicCache([layer[:2] for layer in layers]),
                                        DynamicCache([layer[2:] for layer in layers]))
        logits, cache = self.family.decode(decoder_input_ids, encoder_hidden_states, encoder_attention_mask, cache)
        present = [t for layer in cache.self_attention_cache.layers for t in (layer.keys, layer.values)]
        if self.with_past:
            return (logits[:, -1], *present)
        cross = [t for layer in cache.cross_attention_cache.layers for t in (layer.keys, layer.values)]
        return (logits[:, -1], *present, *cross)


def sample_feeds(loaded: LoadedModel, graphs: Seq2SeqSpecs, encoder_feeds: Feeds) -> dict[str, Feeds]:
    """Inputs for checking each graph: the real encoder inputs, then what torch's own encoder
    and first decoder steps make of them (three decoder tokens, so the axes stay dynamic)."""
    model = loaded.model
    (hidden,) = export.torch_outputs(model, graphs.encoder, encoder_feeds, EncoderGraph)
    rows, family = len(hidden), families.of(model)
    mask = family.encoder_mask(encoder_feeds, hidden)
    start = family.start_token_id
    tokens = np.array([[start, 5, 6]] * rows, dtype=np.int64) % model.config.get_text_config(decoder=True).vocab_size
    decoder = {"decoder_input_ids": tokens, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
    outputs = export.torch_outputs(model, graphs.decoder, decoder, DecoderGraph)
    kv = dict(zip(graphs.decoder.output_names[1:], outputs[1:], strict=True))
    with_past = {"decoder_input_ids": tokens[:, -1:], "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
    for i in range(graphs.layers):  # the keys/values of the first two tokens, as the cache holds them
        with_past.update({f"past.{i}.key": kv[f"present.{i}.key"][:, :, :2], f"past.{i}.value":
                          kv[f"present.{i}.value"][:, :, :2], f"cross.{i}.key": kv[f"cross.{i}.key"],
                          f"cross.{i}.value": kv[f"cross.{i}.value"]})
    return {"encoder": encoder_feeds, "decoder": decoder, "decoder_with_past": with_past}


def decoder_layers(config) -> int:
    """Marian, M2M100, BART: `decoder_layers`; a VisionEncoderDecoder: its text decoder's layers
    (`decoder_layers` where it has them: a Marian text config's `num_hidden_layers` is the encoder's)."""
    text = config.get_text_config(decoder=True)
    return getattr(config, "decoder_layers", None) or getattr(text, "decoder_layers", None) or text.num_hidden_layers


def form(loaded: LoadedModel, encoder_inputs: tuple[str, ...], encoder_feeds: Callable[[int], Feeds]) -> OnnxForm:
    """The three graphs of an encoder-decoder, checked on `encoder_feeds(n)` (real inputs) and what
    torch's encoder and first decoder steps make of them; onnx runs them with `Seq2SeqOnnx.generate`."""
    graphs = specs(encoder_inputs, decoder_layers(loaded.model.config))
    return OnnxForm(
        graphs={"encoder": graphs.encoder, "decoder": graphs.decoder, "decoder_with_past": graphs.decoder_with_past},
        sample_feeds=lambda n: sample_feeds(loaded, graphs, encoder_feeds(n)),
        run_torch=lambda loaded: loaded.model.generate,
        run_onnx=lambda paths, loaded: Seq2SeqOnnx(paths, loaded, graphs),
        wraps={"encoder": EncoderGraph, "decoder": DecoderGraph, "decoder_with_past": DecoderGraph},
        generates=True,
    )


class Seq2SeqOnnx:
    """`generate()` over onnxruntime sessions of the three graphs.

    The encoder runs once on all threads; each decoder step runs on `decoder_threads` (1): a step
    is a few small matrix products, and handing them between threads costs more than it saves
    (scenes-marian on 2 cores, batch 1, greedy: 9.6 ms per sentence on 1 thread, 12.5 ms on 2).

    On a GPU the self-attention keys/values stay on it from step to step (IO binding: each step
    reads the cache where the last one wrote it, beam search reorders it there) and only the
    logits come back; `bind_cache=True` takes the same path on the CPU (the tests check its tokens).
    """

    def __init__(self, paths: dict[str, Path], loaded: LoadedModel, graphs: Seq2SeqSpecs, decoder_threads: int = 1,
                 bind_cache: bool | None = None):
        self.specs, self.decoder_threads = graphs, decoder_threads
        self.sessions = {name: ort_session(path, loaded.device, spinning=False,
                                           intra_op_threads=None if name == "encoder" else decoder_threads)
                         for name, path in paths.items()}
        self.inputs = {name: {i.name for i in s.get_inputs()} for name, s in self.sessions.items()}
        on_gpu = self.sessions["decoder_with_past"].get_providers()[0] != "CPUExecutionProvider"
        self.cache_device = loaded.device if (on_gpu if bind_cache is None else bind_cache) else None
        self.family = families.of(loaded.model)
        self.generation_config = self.family.generation_config
        self.decoder_start_token_id = self.family.start_token_id
        self.paths = paths

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self.generate(*args, **kwargs)

    def _run(self, graph: str, feeds: Feeds) -> list[np.ndarray]:
        # the exporter drops inputs a graph never reads (the hidden states, once cross keys/values are cached)
        return self.sessions[graph].run(None, {k: v for k, v in feeds.items() if k in self.inputs[graph]})

    def generate(self, input_ids=None, attention_mask=None, pixel_values=None, decoder_input_ids=None,
                 use_cache: bool = True, **generate_kwargs) -> torch.Tensor:
        """Token ids as `model.generate()` returns them (greedy, or beam search with num_beams > 1);
        a prompt (a question for a vision encoder-decoder, a caption's start for BLIP) comes as the
        model's own generate() takes it, one row per input, all of one length."""
        rows = len(next(t for t in (input_ids, pixel_values) if t is not None))
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values,
                 "decoder_input_ids": decoder_input_ids}
        prompt = self.family.prompt(given, rows)
        settings = search.settings(self.generation_config, start_length=prompt.shape[1],
                                   positions=self.family.positions, **generate_kwargs)
        encoder_feeds = {name: given[name].cpu().numpy() for name in self.specs.encoder.input_names}
        (hidden,) = self._run("encoder", encoder_feeds)
        mask = self.family.encoder_mask(encoder_feeds, hidden)
        beams = settings.config.num_beams
        if beams > 1:
            hidden, mask = np.repeat(hidden, beams, axis=0), np.repeat(mask, beams, axis=0)
        decoder = _DecoderRun(self, hidden, mask, use_cache)
        start = prompt.repeat_interleave(beams, dim=0)
        if beams > 1:
            return search.beam_search(decoder.step, decoder.reorder, start, settings)
        return search.greedy_search(decoder.step, start, settings)

    def _run_bound(self, graph: str, host_feeds: Feeds, cache: dict[str, torch.Tensor],
                   output_shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        """One run that reads `cache` where it lies and writes each output into a new fp32 tensor of
        its shape on `cache_device` (IO binding): none of the cache is copied to or from the host."""
        binding = self.sessions[graph].io_binding()
        for name, array in host_feeds.items():
            if name in self.inputs[graph]:
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
        outputs = {name: torch.empty(shape, dtype=torch.float32, device=self.cache_device)
                   for name, shape in output_shapes.items()}
        for bind, tensors in ((binding.bind_input, cache), (binding.bind_output, outputs)):
            for name, tensor in tensors.items():
                bind(name, tensor.device.type, tensor.device.index or 0, np.float32, tuple(tensor.shape),
                     tensor.data_ptr())
        if self.cache_device.type == "cuda":
            torch.cuda.synchronize(self.cache_device)  # what torch wrote (a reordered cache) is there
        self.sessions[graph].run_with_iobinding(binding)  # returns once the outputs are written
        return outputs

    def decoder_step(self, rows: torch.Tensor, **encoder_inputs) -> search.Step:
        """A decoder step function over the encoder's output for `encoder_inputs`, one row per entry
        of `rows` (which input each row reads): for scoring candidate answers (search.continuation_log_probs)."""
        feeds = {name: encoder_inputs[name].cpu().numpy() for name in self.specs.encoder.input_names}
        (hidden,) = self._run("encoder", feeds)
        mask = self.family.encoder_mask(feeds, hidden)
        index = rows.cpu().numpy()
        return _DecoderRun(self, hidden[index], mask[index], use_cache=True).step


class _DecoderRun:
    """The decoder's state during one `generate()`: the encoder's output and the cache so far."""

    def __init__(self, onnx: Seq2SeqOnnx, hidden: np.ndarray, mask: np.ndarray, use_cache: bool):
        self.onnx, self.use_cache = onnx, use_cache
        self.feeds = {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        self.past: list[np.ndarray] = []  # self-attention key, value per layer
        self.cross: list[np.ndarray] = []  # cross-attention key, value per layer

    def step(self, input_ids: torch.Tensor) -> torch.Tensor:
        layers = self.onnx.specs.layers
        if not self.use_cache or not self.past:  # the whole prefix through the cache-less graph
            logits, *kv = self.onnx._run("decoder", {"decoder_input_ids": input_ids.numpy(), **self.feeds})
            if self.use_cache and self.onnx.cache_device is not None:  # from here on the cache stays there
                kv = [torch.from_numpy(tensor).to(self.onnx.cache_device) for tensor in kv]
            self.past, self.cross, self.vocab_size = kv[:2 * layers], kv[2 * layers:], logits.shape[-1]
            return torch.from_numpy(logits)
        feeds = {"decoder_input_ids": input_ids[:, -1:].numpy(), **self.feeds}
        if self.onnx.cache_device is not None:
            return self._bound_step(feeds, len(input_ids))
        for i in range(layers):
            feeds.update({f"past.{i}.key": self.past[2 * i], f"past.{i}.value": self.past[2 * i + 1],
                          f"cross.{i}.key": self.cross[2 * i], f"cross.{i}.value": self.cross[2 * i + 1]})
        logits, *self.past = self.onnx._run("decoder_with_past", feeds)
        return torch.from_numpy(logits)

    def _bound_step(self, feeds: Feeds, rows: int) -> torch.Tensor:
        cache, shapes = {}, {"logits": (rows, self.vocab_size)}
        for i in range(self.onnx.specs.layers):
            for j, kind in enumerate(("key", "value")):
                past = self.past[2 * i + j]
                cache |= {f"past.{i}.{kind}": past, f"cross.{i}.{kind}": self.cross[2 * i + j]}
                shapes[f"present.{i}.{kind}"] = (*past.shape[:2], past.shape[2] + 1, *past.shape[3:])
        outputs = self.onnx._run_bound("decoder_with_past", feeds, cache, shapes)
        self.past = [outputs[name] for name in shapes if name != "logits"]
        return outputs["logits"].cpu()

    def reorder(self, rows: torch.Tensor) -> None:
        """Beam search kept `rows`: their self-attention cache follows them. Cross-attention keys
        and values are the same for every beam of an input, and beams never change input."""
        if self.use_cache and self.onnx.cache_device is not None:  # bound: reordered where it lies
            index = rows.to(self.onnx.cache_device)
            self.past = [tensor.index_select(0, index) for tensor in self.past]
        elif self.use_cache:
            index = rows.numpy()
            self.past = [tensor[index] for tensor in self.past]
