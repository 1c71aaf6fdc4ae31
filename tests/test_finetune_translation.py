"""Translation fine-tuning: TSV, JSONL and `datasets` input, BLEU/chrF, the encoder frozen, the
output folder served by the app, and a from-scratch run with its own SentencePiece vocabulary."""

import json

import pytest
import torch
from safetensors.torch import load_file

from apps.translation import finetune, task
from shared.data import scenes
from shared.errors import UserError
from shared.models import registry

pytestmark = pytest.mark.slow


def scene_pairs(seed: int, n: int) -> list[dict]:
    return [p for i in range(n) for p in scenes.sentence_pairs(scenes.make_scene(seed, i))]


def write_tsv(path, pairs, src="en", tgt="de"):
    path.write_text("".join(f"{p[src]}\t{p[tgt]}\n" for p in pairs), encoding="utf-8")
    return path


def test_transfer_from_the_embedded_model_with_a_frozen_encoder(tmp_path):
    """German -> English only, from TSV; the encoder's weights must not move."""
    data = write_tsv(tmp_path / "train.tsv", scene_pairs(7, 40), "de", "en")
    held = write_tsv(tmp_path / "held.tsv", scene_pairs(8, 10), "de", "en")
    out = tmp_path / "de-en"
    metrics = finetune.main(["--data", str(data), "--eval-data", str(held), "--out", str(out), "--source-lang", "de",
                             "--target-lang", "en", "--freeze-encoder", "--epochs", "1", "--batch-size", "16",
                             "--learning-rate", "1e-4"])
    assert metrics["test_de_en_bleu"] >= 90 and metrics["test_de_en_chrf"] >= 90
    assert json.loads((out / "metrics.json").read_text())["eval_bleu"] == metrics["eval_bleu"]
    before = load_file(registry.MODELS_DIR / "translation" / "scenes-marian" / "model.safetensors")
    after = load_file(out / "model.safetensors")
    encoder = [k for k in before if k.startswith("model.encoder.layers")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("model.decoder.layers"))

    entry = registry.add_local(task.TASK, out, name="finetuned-de-en")
    result = task.translate("Wie viele Ziffern gibt es?", "de", "en", model=entry.name, num_beams=1)
    assert result["translation"] == "How many digits are there?"


def test_from_scratch_with_its_own_vocabulary_from_a_datasets_folder(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    for split, seed, n in (("train", 3, 30), ("test", 4, 5)):
        rows = [{"translation": p} for p in scene_pairs(seed, n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scratch"
    metrics = finetune.main(["--dataset", str(folder), "--out", str(out), "--model", "apps/translation/scenes_recipe",
                             "--from-scratch", "--both-directions", "--vocab-size", "100", "--epochs", "1"])
    assert {"test_en_de_bleu", "test_de_en_chrf", "eval_bleu"} <= set(metrics)  # one epoch: measured, not good
    assert {"source.spm", "target.spm", "vocab.json", "generation_config.json"} <= {p.name for p in out.iterdir()}
    vocab = json.loads((out / "vocab.json").read_text())
    assert {">>de<<", ">>en<<", "</s>", "<pad>"} <= set(vocab) and "held-out" in (out / "README.md").read_text()


@pytest.mark.parametrize("argv, words", [
    (["--data", "/no/such.tsv"], "no such file"),
    (["--data", "{tsv}", "--source-lang", "de", "--target-lang", "de"], "must differ"),
    (["--data", "{bad}"], "expected a en/de sentence pair"),
])
def test_arguments_and_data_are_checked_with_a_sentence(tmp_path, argv, words):
    tsv = write_tsv(tmp_path / "ok.tsv", scene_pairs(9, 2))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"translation": {"en": "a red 3"}}\n')
    argv = [a.format(tsv=tsv, bad=bad) for a in argv]
    with pytest.raises(UserError, match=words):
        finetune.main([*argv, "--out", str(tmp_path / "out")])


def test_a_run_resumes_from_its_last_checkpoint(tmp_path):
    data = write_tsv(tmp_path / "train.tsv", scene_pairs(5, 20))
    out = tmp_path / "resumed"
    common = ["--data", str(data), "--out", str(out), "--batch-size", "16", "--keep-checkpoints"]
    finetune.main([*common, "--epochs", "1"])
    metrics = finetune.main([*common, "--epochs", "2", "--resume"])
    assert metrics["epochs_run"] == 2.0
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1].startswith("checkpoint-")
