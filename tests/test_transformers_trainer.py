"""Hugging Face Trainer path: selection from the model a Trainer holds, its own test DataLoader
(dynamic padding, label columns) and the worked text-classification example, all offline on a
tiny randomly initialised BERT built from a config."""

import csv
import json
import random
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import batchal  # noqa: E402
from batchal.integrations.transformers import query, trainer_embeddings, trainer_log_probs  # noqa: E402
from conftest import REPO  # noqa: E402


def tiny_bert(num_labels=3):
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=32, num_labels=num_labels, hidden_dropout_prob=0.2,
                                     attention_probs_dropout_prob=0.2)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


class Texts(torch.utils.data.Dataset):
    """Token sequences of different lengths with labels, longest first."""

    def __init__(self, n=14, seed=0):
        rng = random.Random(seed)
        lengths = sorted((rng.randint(3, 12) for _ in range(n)), reverse=True)
        self.items = [{"input_ids": [rng.randint(1, 39) for _ in range(L)], "labels": rng.randint(0, 2)} for L in lengths]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def pad(rows, length=None):
    length = length or max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [0] * (length - len(r["input_ids"])) for r in rows])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.tensor([r["labels"] for r in rows])}


def trainer_for(model, tmp_path, eval_batch=4):
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "t"), per_device_eval_batch_size=eval_batch, report_to=[],
                                          use_cpu=True, disable_tqdm=True)
    return transformers.Trainer(model=model, args=args, data_collator=pad)


def test_trainer_predictions_equal_batchals_on_the_padded_pool(tmp_path):
    pool = Texts()
    trainer = trainer_for(tiny_bert(), tmp_path)
    lp = trainer_log_probs(trainer, pool, k=6, seed=3)  # chunks of 4, each padded to its own longest
    assert lp.shape == (14, 6, 3) and not torch.allclose(lp[:, 0], lp[:, 1])
    # The same K models on the whole pool padded at once: the masks grew with the sequences, so
    # a token keeps its masks whatever its chunk's padding.
    whole = pad(pool.items)
    whole.pop("labels")
    direct = batchal.predict_log_probs(trainer.model, whole, k=6, seed=3, batch_size=14)
    assert torch.allclose(lp, direct, atol=1e-5)
    emb, lp1 = trainer_embeddings(trainer, pool)
    assert emb.shape == (14, 16) and lp1.shape == (14, 1, 3)


def test_query_selects_distinct_pool_positions_with_each_kind_of_strategy(tmp_path):
    pool = Texts()
    trainer = trainer_for(tiny_bert(), tmp_path)
    for strategy in ("batchbald", "badge", "coreset", "margin", "random"):
        picks = query(trainer, pool, 4, strategy=strategy, k=5, seed=0)
        assert len(picks) == len(set(picks)) == 4 and all(0 <= p < len(pool) for p in picks), strategy
    # batchal.acquire's seeding, as every entry point: round 0's scoring and selection seeds.
    from batchal.acquire import SEED_SCORE, SEED_SELECT, round_seed

    bald = trainer_log_probs(trainer, pool, k=5, seed=round_seed(0, 0, SEED_SCORE))
    expected = batchal.select("batchbald", 4, log_probs_N_K_C=bald, seed=round_seed(0, 0, SEED_SELECT)).indices.tolist()
    assert query(trainer, pool, 4, strategy="batchbald", k=5, seed=0) == expected
    shuffling = torch.utils.data.DataLoader(pool, batch_size=4, shuffle=True, collate_fn=pad)
    with pytest.raises(ValueError, match="shuffles"):
        batchal.predict_log_probs(trainer.model, shuffling, k=2)


def test_the_text_classification_example_runs_offline_on_a_csv(tmp_path):
    pytest.importorskip("tokenizers")
    rng = random.Random(0)
    words = {"sport": "goal match team score league coach", "food": "bread cheese soup bake taste salt", "tech": "chip code server cloud data bug"}
    with open(tmp_path / "news.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "topic"])
        for n in range(150):
            topic = list(words)[n % 3]
            writer.writerow([" ".join(rng.choice(words[topic].split() + ["the", "a", "today"]) for _ in range(rng.randint(4, 10))), topic])
    out = tmp_path / "history.json"
    result = subprocess.run([sys.executable, str(REPO / "examples" / "text_classification.py"), str(tmp_path / "news.csv"),
                             "--label-column", "topic", "--rounds", "2", "--batch-size", "8", "--initial", "12", "--epochs", "3",
                             "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("round")]
    assert [line.split(":")[0] for line in lines] == ["round 0", "round 1", "round 2"]
    history = json.loads(out.read_text())
    assert [len(h["labelled_rows"]) for h in history] == [12, 20, 28]
    rows = [r for h in history for r in h["labelled_rows"]]
    assert len(set(history[-1]["labelled_rows"])) == 28 and max(rows) < 150  # CSV row numbers, each labelled once
    bad = subprocess.run([sys.executable, str(REPO / "examples" / "text_classification.py"), str(tmp_path / "news.csv"),
                          "--label-column", "nope"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode != 0 and "no column nope" in bad.stderr
