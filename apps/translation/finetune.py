"""Transfer learning for translation: any Hub or local seq2seq model onto your parallel text.

Data: a TSV file (source<TAB>target per line), a JSONL file (rows {"translation": {"en": ..,
"de": ..}}, the `datasets` translation format, or {"en": .., "de": ..}), or a `datasets`
dataset with a `translation` column (`--dataset NAME`). `--eval-data` names a held-out file of
the same form; BLEU and chrF (sacrebleu) on a validation split drive early stopping.

    # Marian opus-mt onto your own en-de sentences, encoder frozen
    demohub finetune translation --data my_pairs.tsv --out runs/en-de \\
        --model Helsinki-NLP/opus-mt-en-de --freeze-encoder

    # the embedded model, from scratch with its own SentencePiece vocabulary, both directions
    demohub data synth --out data/scenes-text --n 12000 --seed 0 --text-only --max-repeats 10
    demohub data synth --out data/scenes-text-test --n 300 --seed 1 --text-only
    demohub finetune translation --data data/scenes-text/translation.jsonl \\
        --eval-data data/scenes-text-test/translation.jsonl --out models/translation/scenes-marian \\
        --model apps/translation/scenes_recipe --from-scratch --both-directions --epochs 8 \\
        --validation-fraction 0.05

With `--both-directions` the model learns source->target and target->source; the source text
starts with a `>>lang<<` token naming the target, as in Marian's multilingual opus-mt models.
Features: AdamW with warm-up and cosine decay, early stopping on validation BLEU, checkpoints
each epoch (`--resume`), mixed precision on GPU, a progress bar, metrics.json, a model card
and `--push-to-hub REPO`.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sacrebleu
from datasets import Dataset, concatenate_datasets, load_dataset
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    EarlyStoppingCallback,
    GenerationConfig,
    MarianTokenizer,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    set_seed,
)

from shared import training
from shared.errors import UserError
from shared.inference.pipelines import translation_inputs
from shared.models import loader, registry

TASK = "translation"
Pair = tuple[str, str]


@dataclass
class TranslationArguments(training.TrainingOptions):
    data: str = field(default="", metadata={"help": "TSV or JSONL file of sentence pairs."})
    dataset: str | None = field(default=None, metadata={"help": "A `datasets` dataset with a `translation` column "
                                                                "instead of --data; its test split is held out."})
    eval_data: str | None = field(default=None, metadata={"help": "Held-out TSV/JSONL for the final BLEU."})
    source_lang: str = "en"
    target_lang: str = "de"
    both_directions: bool = field(default=False, metadata={"help": "Also learn target->source (>>lang<< tokens)."})
    model: str = field(default="scenes-marian",
                       metadata={"help": "Registry name, local model folder, or repo_id@40-hex-revision."})
    freeze_encoder: bool = field(default=False, metadata={"help": "Train the decoder only (embeddings shared "
                                                                   "with the encoder stay frozen too)."})
    vocab_size: int = field(default=400, metadata={"help": "--from-scratch: SentencePiece vocabulary size."})
    max_length: int = field(default=128, metadata={"help": "Tokens per sentence, source and target."})
    num_beams: int = field(default=4, metadata={"help": "Beam size of the held-out evaluation."})
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 3

    def check(self) -> None:
        super().check()
        if self.dataset is None and not Path(self.data).is_file():
            raise UserError(f"--data {self.data!r}: no such file (or give --dataset NAME).")
        if self.source_lang == self.target_lang:
            raise UserError("--source-lang and --target-lang must differ.")


def read_pairs(path: str | Path, src: str, tgt: str) -> list[Pair]:
    """(source, target) pairs from a TSV or JSONL file; blank lines are skipped."""
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            if str(path).endswith(".tsv"):
                source, target = line.split("\t")[:2]
            else:
                row = json.loads(line)
                row = row.get("translation", row)
                source, target = row[src], row[tgt]
        except (ValueError, KeyError) as err:
            raise UserError(f"{path}:{number}: expected a {src}/{tgt} sentence pair ({err}).") from None
        pairs.append((source.strip(), target.strip()))
    if not pairs:
        raise UserError(f"{path} holds no sentence pairs.")
    return pairs


def load_pairs(args: TranslationArguments) -> tuple[list[Pair], list[Pair] | None]:
    """(training pairs, held-out pairs or None) from --data/--eval-data or a `datasets` dataset."""
    src, tgt = args.source_lang, args.target_lang
    if args.dataset is None:
        return read_pairs(args.data, src, tgt), read_pairs(args.eval_data, src, tgt) if args.eval_data else None
    splits = load_dataset(args.dataset)
    rows = {name: [(r[src], r[tgt]) for r in split["translation"]] for name, split in splits.items()}
    held_out = rows.get("test") or rows.get("validation")
    return rows["train"], held_out


def train_tokenizer(pairs: list[Pair], languages: list[str], folder: Path, vocab_size: int,
                    max_length: int) -> MarianTokenizer:
    """A SentencePiece unigram vocabulary shared by both languages, in Marian's files
    (source.spm = target.spm, vocab.json); `>>lang<<` tokens name target languages."""
    import sentencepiece

    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([text for pair in pairs for text in pair]), model_prefix=str(folder / "spm"),
        vocab_size=vocab_size, model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, minloglevel=2)
    pieces = [line.split("\t")[0] for line in (folder / "spm.vocab").read_text(encoding="utf-8").splitlines()]
    specials = ["</s>", "<unk>", *(f">>{lang}<<" for lang in languages)]
    vocab = specials + [p for p in pieces if p not in specials and p != "<unk>"] + ["<pad>"]
    (folder / "vocab.json").write_text(json.dumps({piece: i for i, piece in enumerate(vocab)}, ensure_ascii=False))
    return MarianTokenizer(source_spm=str(folder / "spm.model"), target_spm=str(folder / "spm.model"),
                           vocab=str(folder / "vocab.json"), model_max_length=max_length)


def build(args: TranslationArguments, folder: Path, pairs: list[Pair], scratch: Path):
    """(model, tokenizer): from the folder's weights, or its config alone with a new vocabulary."""
    if not args.from_scratch:
        if not any(folder.glob("*.safetensors")):
            raise UserError(f"{folder} has no safetensors weights; add --from-scratch to train its config.")
        return (AutoModelForSeq2SeqLM.from_pretrained(folder, use_safetensors=True),
                AutoTokenizer.from_pretrained(folder))
    languages = [args.target_lang, args.source_lang] if args.both_directions else []
    tokenizer = train_tokenizer(pairs, languages, scratch, args.vocab_size, args.max_length)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    config = AutoConfig.from_pretrained(folder, vocab_size=len(tokenizer), decoder_vocab_size=len(tokenizer),
                                        eos_token_id=eos, forced_eos_token_id=eos, pad_token_id=pad,
                                        decoder_start_token_id=pad)
    model = AutoModelForSeq2SeqLM.from_config(config)
    # what opus-mt models ship: beam search of 4, never the pad token, renormalised scores
    model.generation_config = GenerationConfig(
        bad_words_ids=[[pad]], decoder_start_token_id=pad, eos_token_id=eos, forced_eos_token_id=eos,
        pad_token_id=pad, max_length=args.max_length, num_beams=4, renormalize_logits=True)
    return model, tokenizer


def directions(args: TranslationArguments) -> list[tuple[str, str]]:
    forward = (args.source_lang, args.target_lang)
    return [forward, forward[::-1]] if args.both_directions else [forward]


def encode(tokenizer, pairs: list[Pair], src: str, tgt: str, max_length: int) -> Dataset:
    """Token ids and labels of `pairs` translated src -> tgt (the pairs are (src, tgt) texts)."""
    inputs = translation_inputs(tokenizer, [s for s, _ in pairs], src, tgt, max_length=max_length, truncation=True)
    labels = tokenizer(text_target=[t for _, t in pairs], max_length=max_length, truncation=True)["input_ids"]
    return Dataset.from_dict({"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                              "labels": labels})


def bleu_metrics(tokenizer):
    def compute(evaluation) -> dict[str, float]:
        predictions, labels = evaluation.predictions, evaluation.label_ids
        predictions = np.where(predictions < 0, tokenizer.pad_token_id, predictions)
        labels = np.where(labels < 0, tokenizer.pad_token_id, labels)
        hypotheses = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        return {"bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
                "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score}

    return compute


def model_card(out: Path, args: TranslationArguments, metrics: dict, argv: list[str]) -> str:
    origin = f"`{args.model}`" + (" (architecture only, trained from scratch)" if args.from_scratch else "")
    lines = [f"# {out.name}", "", f"Translation model trained by `apps/translation/finetune.py` from {origin}",
             f"on `{args.data or args.dataset}`.", ""]
    for src, tgt in directions(args):
        key = f"test_{src}_{tgt}"
        if f"{key}_bleu" in metrics:
            lines.append(f"- {src} -> {tgt}, held-out `{args.eval_data or 'test split'}` "
                         f"({metrics[f'{key}_pairs']} pairs, beam {args.num_beams}): "
                         f"**BLEU {metrics[f'{key}_bleu']:.2f}**, chrF {metrics[f'{key}_chrf']:.2f}; "
                         f"on the {metrics[f'{key}_unseen_pairs']} pairs whose source it never saw in "
                         f"training: BLEU {metrics[f'{key}_unseen_bleu']:.2f}")
    lines += [f"- Validation BLEU (greedy): {metrics['eval_bleu']:.2f}",
              "- All metrics: `metrics.json`; arguments: `finetune_args.json`", "",
              "Rebuild:", "", "```", "demohub finetune translation " + shlex.join(argv), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = training.parse(argv, TranslationArguments, "demohub finetune translation", __doc__)
    set_seed(args.seed)
    folder = loader.model_folder(registry.resolve(TASK, args.model or None))
    pairs, held_out = load_pairs(args)
    order = np.random.default_rng(args.seed).permutation(len(pairs))
    cut = max(1, int(len(pairs) * args.validation_fraction))
    train_pairs, validation_pairs = [pairs[i] for i in order[cut:]], [pairs[i] for i in order[:cut]]

    with tempfile.TemporaryDirectory() as scratch:
        model, tokenizer = build(args, folder, train_pairs, Path(scratch))
        if args.freeze_encoder:
            for parameter in model.get_encoder().parameters():
                parameter.requires_grad = False

        def both_ways(some: list[Pair]) -> Dataset:
            parts = []
            for src, tgt in directions(args):
                oriented = some if src == args.source_lang else [(t, s) for s, t in some]
                parts.append(encode(tokenizer, oriented, src, tgt, args.max_length))
            return concatenate_datasets(parts)

        train_set = both_ways(train_pairs).shuffle(seed=args.seed)
        trainer = Seq2SeqTrainer(
            model=model, processing_class=tokenizer, data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
            args=training.trainer_arguments(
                args, len(train_set), "bleu", Seq2SeqTrainingArguments, predict_with_generate=True,
                generation_max_length=args.max_length, generation_num_beams=1),
            train_dataset=train_set, eval_dataset=both_ways(validation_pairs), compute_metrics=bleu_metrics(tokenizer),
            callbacks=[EarlyStoppingCallback(early_stopping_patience=args.patience)])
        result = trainer.train(resume_from_checkpoint=True if args.resume else None)
        training.reload_best(trainer, AutoModelForSeq2SeqLM)
        trainer.remove_callback(EarlyStoppingCallback)  # the held-out evaluations below report other metrics

        metrics = {"train_loss": result.training_loss, "epochs_run": trainer.state.epoch,
                   "train_pairs": len(train_pairs)}
        metrics.update(trainer.evaluate(metric_key_prefix="eval"))
        seen = {text for pair in train_pairs for text in pair}
        for src, tgt in directions(args) if held_out else []:
            oriented = held_out if src == args.source_lang else [(t, s) for s, t in held_out]
            unseen = [pair for pair in oriented if pair[0] not in seen]
            key = f"test_{src}_{tgt}"
            for prefix, some in ((key, oriented), (f"{key}_unseen", unseen)):
                scores = trainer.evaluate(encode(tokenizer, some, src, tgt, args.max_length),
                                          metric_key_prefix=prefix, num_beams=args.num_beams)
                metrics.update({f"{prefix}_pairs": len(some), f"{prefix}_bleu": scores[f"{prefix}_bleu"],
                                f"{prefix}_chrf": scores[f"{prefix}_chrf"]})
        metrics = training.rounded(metrics)
        training.save(trainer, tokenizer, args, metrics, model_card(Path(args.out), args, metrics, argv))
    return metrics


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
