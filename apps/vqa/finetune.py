"""Transfer learning for visual question answering: a vision encoder-decoder that reads the
question as its decoder prompt and writes the answer, onto your own image-question-answer data.

Data (`--data`): a JSONL file as the scene world writes it (rows {"image": path relative to the
file, "qa": [{"question": text or {"en": .., "de": ..}, "answer": the same}]}, or flat rows with
`question` and `answer`), a folder with `metadata.csv` (columns `file_name`, `question`,
`answer`), or (`--dataset NAME`) a `datasets` dataset with `image`, `question` and `answer`
columns. Accuracy (exact answer) per question type on `--eval-data`, against each type's
always-the-most-common-answer prior from the training answers.

    # the embedded VQA model: the embedded captioner (which reads digits) taught to answer
    demohub finetune vqa --data data/scenes-train/text.jsonl --eval-data data/scenes-test/text.jsonl \\
        --out models/vqa/scenes-vqa --model models/captioning/scenes-captioner

Everything else (freezing the vision encoder, the per-patch digit loss on the scene world's
masks, schedule, early stopping, `--resume`, mixed precision, metrics.json, card, push to
Hub) is the captioning script's: see apps/captioning/finetune.py.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from apps.captioning import finetune as captioning
from apps.captioning.finetune import Example
from shared import training
from shared.errors import UserError
from shared.inference.pipelines import question_prompt

TASK = "vqa"
# question type by its opening words (the scene world's five, English and German); others: "other"
KINDS = {"count": ("how many", "wie viele"), "is_there": ("is there", "gibt es"),
         "colour": ("what colour", "what color", "welche farbe"), "left_of": ("is the", "ist die"),
         "where": ("where is", "wo ist")}


def kind_of(question: str) -> str:
    text = question.strip().lower()
    return next((kind for kind, starts in KINDS.items() if text.startswith(starts)), "other")


@dataclass
class VqaArguments(captioning.CaptionArguments):
    model: str = field(default="models/captioning/scenes-captioner",
                       metadata={"help": "Registry name, local model folder, or repo_id@40-hex-revision."})
    max_length: int = field(default=32, metadata={"help": "Tokens of question and answer together."})
    with_captions: bool = field(default=False, metadata={"help": "Also learn the data's captions: one model for "
                                                                 "captioning and VQA (the embedded models)."})
    kinds: str = field(default="", metadata={"help": "Learn only these question kinds, comma-separated ("
                                                     "count, is_there, colour, left_of, where, other): a curriculum "
                                                     "stage that gives one hard kind all the steps. Held-out "
                                                     "figures still cover every kind."})
    epochs: int = 3
    learning_rate: float = 5e-4

    def kind_set(self) -> set[str]:
        return {kind.strip() for kind in self.kinds.split(",") if kind.strip()}

    def check(self) -> None:
        super().check()
        if unknown := self.kind_set() - {*KINDS, "other"}:
            raise UserError(f"--kinds: {', '.join(sorted(unknown))} is not a question kind "
                            f"(the kinds: {', '.join([*KINDS, 'other'])}).")


def _texts(value, where: str) -> list[tuple[str | None, str]]:
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, str):
        return [(None, value)]
    raise UserError(f"{where}: a question or answer must be text or {{language: text}}.")


def qa_examples(rows, where: str) -> list[Example]:
    examples = []
    for row, folder in rows:
        image = captioning.image_of(row, folder, where)
        pairs = row.get("qa") or [{"question": row.get("question"), "answer": row.get("answer")}]
        mask = captioning._mask_beside(Path(image)) if isinstance(image, str) else None
        for pair in pairs:
            if not pair.get("question") or pair.get("answer") is None:
                raise UserError(f"{where}: a row has no question or answer (`qa`, or `question` and `answer`).")
            answers = dict(_texts(pair["answer"], where))
            for lang, question in _texts(pair["question"], where):
                answer = answers.get(lang, next(iter(answers.values())))
                examples.append(Example(image, str(answer).strip(), lang or row.get("lang"), question.strip(),
                                        kind_of(question), mask))
    return examples


def evaluate(model, processor, held_out: list[Example], args, train: list[Example] | None = None) -> dict:
    """Exact-answer accuracy overall and per language and question type (greedy)."""
    pixels = captioning.pixel_values(processor, [e.image for e in held_out])
    prompts = [question_prompt(processor.tokenizer, e.question) for e in held_out]
    answers = captioning.generate_texts(model, processor, pixels, prompts, num_beams=args.num_beams,
                                        max_new_tokens=8)
    right = [a.lower() == e.text.lower() for a, e in zip(answers, held_out, strict=True)]
    metrics = {"test_questions": len(held_out), "test_accuracy": sum(right) / len(right)}
    groups: dict[str, list[bool]] = defaultdict(list)
    for ok, e in zip(right, held_out, strict=True):
        groups[e.kind].append(ok)
        groups[f"{e.lang}_{e.kind}"].append(ok)
        groups[str(e.lang)].append(ok)
    metrics.update({f"test_accuracy_{name}": sum(v) / len(v) for name, v in sorted(groups.items())})
    metrics.update({f"test_questions_{name}": len(v) for name, v in sorted(groups.items())})
    if train:  # each type's most common training answer (per language), always given: the prior to beat
        common = {key: Counter(e.text for e in train if (e.lang, e.kind) == key).most_common(1)[0][0]
                  for key in {(e.lang, e.kind) for e in train}}

        def prior(some: list[Example]) -> float:
            return sum(e.text == common.get((e.lang, e.kind)) for e in some) / len(some)

        for kind in sorted({e.kind for e in held_out}):
            metrics[f"prior_accuracy_{kind}"] = prior([e for e in held_out if e.kind == kind])
        metrics["prior_accuracy"] = prior(held_out)
    return metrics


def model_card(out: Path, args, metrics: dict, argv: list[str]) -> str:
    origin = f"`{args.model}`" + (" (architecture only, trained from scratch)" if args.from_scratch else "")
    lines = [f"# {out.name}", "", f"Visual question answering model trained by `apps/vqa/finetune.py` from {origin}",
             f"on `{args.data or args.dataset}`: a vision encoder-decoder that reads the question as its decoder",
             "prompt and writes the answer.", ""]
    if "test_accuracy" in metrics:
        lines.append(f"Held-out `{args.eval_data or 'test split'}` ({metrics['test_questions']} questions, "
                     f"greedy): **accuracy {metrics['test_accuracy']:.3f}** "
                     f"(prior {metrics.get('prior_accuracy', 0):.3f})")
        lines += ["", "| question type | questions | accuracy | prior (most common training answer) |",
                  "| --- | --- | --- | --- |"]
        for kind in (*KINDS, "other"):
            if f"test_accuracy_{kind}" in metrics:
                lines.append(f"| {kind} | {metrics[f'test_questions_{kind}']} | {metrics[f'test_accuracy_{kind}']:.3f} "
                             f"| {metrics.get(f'prior_accuracy_{kind}', float('nan')):.3f} |")
        lines.append("")
    lines += [f"- Validation loss: {metrics['eval_loss']:.4f}",
              "- All metrics (also per language): `metrics.json`; arguments: `finetune_args.json`", "",
              "Rebuild:", "", "```", f"demohub finetune {TASK} " + shlex.join(argv), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = training.parse(argv, VqaArguments, f"demohub finetune {TASK}", __doc__)
    kinds = args.kind_set()
    train: list[Example] = []

    def examples_of(rows, where):  # the questions (and with --with-captions the captions) of the same images
        some = qa_examples(rows, where) + (captioning.caption_examples(rows, where) if args.with_captions else [])
        if not train:  # the training rows: all of them set the priors, --kinds picks what is learned
            train.extend(some)
            return [e for e in some if e.question is None or not kinds or e.kind in kinds]
        return some

    def evaluate_all(model, processor, held, a):
        questions = [e for e in held if e.question is not None]
        metrics = evaluate(model, processor, questions, a, [e for e in train if e.question is not None])
        captions = [e for e in held if e.question is None]
        if captions:
            metrics |= captioning.evaluate_captions(model, processor, captions, a.num_beams, a.max_length)
        return metrics

    def card(out, a, metrics, argv):
        if not a.with_captions:
            return model_card(out, a, metrics, argv)
        return captioning.model_card(out, a, metrics, argv, task=TASK) + "\n" + "\n".join(
            model_card(out, a, metrics, argv).splitlines()[5:-8]) + "\n"

    return captioning.run(args, argv, examples_of, evaluate_all, card, TASK)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
