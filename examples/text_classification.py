"""Active learning for text classification with a Hugging Face Trainer, offline, on your own CSV.

    python examples/text_classification.py my.csv --text-column text --label-column label \
        --rounds 5 --batch-size 16 --strategy batchbald

Each round fine-tunes a small BERT-style classifier with ``transformers.Trainer`` on the labelled
rows, scores the unlabelled rows with consistent MC dropout and picks a batch with
``batchal.integrations.transformers.query``; the CSV's labels play the annotator. Nothing is
downloaded: the word-level tokenizer is trained on the CSV itself (``tokenizers``) and the model
is built from a config, randomly initialised. With a checkpoint on disk, pass ``--model DIR``
(``AutoModelForSequenceClassification`` and ``AutoTokenizer`` read it with ``local_files_only``).

Prints one line per round: labels so far and accuracy on a held-out 20% of the rows. Item ids
are the CSV's row numbers (0 = the first row after the header), written to ``--out`` as JSON.
"""

import argparse
import csv
import json
import random
import sys
from pathlib import Path

import torch


def read_rows(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (text_column, label_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit(f"{path}: no column {', '.join(missing)} (columns: {', '.join(reader.fieldnames or [])})")
        rows = [(r[text_column], r[label_column]) for r in reader]
    if len({label for _, label in rows}) < 2:
        raise SystemExit(f"{path}: column {label_column!r} holds fewer than two classes")
    return [t for t, _ in rows], [label for _, label in rows]


def build(texts: list[str], num_labels: int, model_dir: str | None, max_length: int):
    import transformers

    if model_dir:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels, local_files_only=True)
        return tokenizer, model
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]"], min_frequency=1))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]")
    config = transformers.BertConfig(vocab_size=raw.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=max_length, num_labels=num_labels,
                                     hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    return tokenizer, transformers.BertForSequenceClassification(config)


class Rows(torch.utils.data.Dataset):
    def __init__(self, encodings: dict, labels: list[int], rows: list[int]):
        self.encodings, self.labels, self.rows = encodings, labels, rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        return {**{k: v[row] for k, v in self.encodings.items()}, "labels": self.labels[row]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--strategy", default="batchbald")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--initial", type=int, default=20, help="random rows labelled before the first round")
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--model", help="a local checkpoint folder (default: a small BERT built from a config)")
    parser.add_argument("--out", type=Path, help="write the labelled row numbers per round here (JSON)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import transformers

    from batchal.integrations.transformers import query
    from batchal.threads import use_threads

    use_threads(None)
    transformers.set_seed(args.seed)
    texts, names = read_rows(args.csv, args.text_column, args.label_column)
    classes = sorted(set(names))
    labels = [classes.index(n) for n in names]
    tokenizer, model = build(texts, len(classes), args.model, args.max_length)
    encodings = {k: torch.tensor(v) for k, v in tokenizer(texts, truncation=True, max_length=args.max_length, padding="max_length").items()
                 if k in ("input_ids", "attention_mask")}
    order = list(range(len(texts)))
    random.Random(args.seed).shuffle(order)
    test_rows, rest = order[: len(order) // 5], order[len(order) // 5:]
    labelled, pool = rest[: args.initial], rest[args.initial:]
    training_args = transformers.TrainingArguments(output_dir=str(Path(args.out or ".").resolve().parent / ".al-trainer"), report_to=[],
                                                   num_train_epochs=args.epochs, per_device_train_batch_size=16,
                                                   per_device_eval_batch_size=64, learning_rate=1e-3, save_strategy="no",
                                                   logging_strategy="no", use_cpu=True, seed=args.seed, disable_tqdm=True)
    history = []
    for round_ in range(args.rounds + 1):
        trainer = transformers.Trainer(model=model, args=training_args, train_dataset=Rows(encodings, labels, labelled))
        trainer.train()
        predictions = trainer.predict(Rows(encodings, labels, test_rows)).predictions
        accuracy = float((predictions.argmax(-1) == [labels[r] for r in test_rows]).mean())
        print(f"round {round_}: {len(labelled)} labels, test accuracy {accuracy:.3f}", flush=True)
        history.append({"round": round_, "labelled_rows": list(labelled), "test_accuracy": accuracy})
        if round_ == args.rounds or not pool:
            break
        picks = query(trainer, Rows(encodings, labels, pool), min(args.batch_size, len(pool)), strategy=args.strategy, seed=round_)
        chosen = [pool[p] for p in picks]  # positions in the pool -> the CSV's row numbers
        labelled += chosen  # here a person would label texts[chosen]
        taken = set(chosen)
        pool = [r for r in pool if r not in taken]
    if args.out:
        args.out.write_text(json.dumps(history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
