"""The VQA script's held-out figures for a finished model on another held-out set (the cards' second seed):

    PYTHONPATH=. python docs/captioning/held_out.py MODEL_FOLDER --eval-data data/scenes-test2-where/text.jsonl \
        --train-data data/scenes-where/text.jsonl --out MODEL_FOLDER/metrics_seed2.json

The same functions as `demohub finetune vqa --with-captions` runs at its end (answers per question
type against each type's prior from the training answers, greedy; BLEU, chrF and object scores per
language), so the two seeds' figures are measured alike.
"""

import argparse
import json

import torch
from transformers import VisionEncoderDecoderModel

from apps.captioning import finetune as captioning
from apps.vqa import finetune as vqa
from shared import training


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--eval-data", required=True)
    parser.add_argument("--train-data", required=True, help="the training rows, for each question type's prior")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = VisionEncoderDecoderModel.from_pretrained(args.model).eval()
    processor = captioning.load_processor(args.model)
    settings = argparse.Namespace(num_beams=1, max_length=model.generation_config.max_length)
    held = captioning.read_rows(args.eval_data)
    train = vqa.qa_examples(captioning.read_rows(args.train_data), args.train_data)
    metrics = vqa.evaluate(model, processor, vqa.qa_examples(held, args.eval_data), settings, train)
    metrics |= captioning.evaluate_captions(model, processor, captioning.caption_examples(held, args.eval_data),
                                            settings.num_beams, settings.max_length)
    metrics = training.rounded(metrics)
    print(json.dumps(metrics, indent=2, ensure_ascii=False))
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
