"""The active-learning loop with simulated labelling (the data set's own labels), resumable.

One run = one data set, one strategy, one seed, in one directory:
- ``config.json``: the fully resolved configuration;
- ``results.jsonl``: one JSON object per round, appended atomically (one write + fsync), with
  ``round``, ``labelled`` (labelled-set size the round trained on), ``test_accuracy``,
  ``test_nll``, ``acquired`` (dataset indices), ``acquired_labels``, ``scores``, ``seconds``
  (``train``, ``evaluate``, ``score``, ``select``), ``batch_diagnostics`` (BADGE's log-determinant of the
  acquired batch's gradient-embedding Gram matrix and mean embedding norm) and, on the last
  round, ``stop_reason``.

Every random choice of round r is seeded from (seed, r), and the labelled set is rebuilt from
the file, so running the same command after a kill resumes at the first missing round and the
finished results equal those of an uninterrupted run (on the CPU; GPU kernels may differ).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

import torch

from batchal.acquisition.badge import batch_diagnostics
from batchal.acquire import (
    SEED_EVALUATE, SEED_SPLITS, SEED_STOP_SET, SEED_TRAIN, SEED_TRAIN_ORDER, ModelPredictions, acquire, round_seed,
)
from batchal.run_files import RunFileError, append_row, atomic_write, exclusive, read_config, read_results
from batchal.acquisition.registry import get_strategy, strategies
from batchal.acquisition.scores import predictive_probs
from batchal.bayesian.predict import FeatureLayerError, predict_embeddings
from batchal.bayesian.ensemble import ensemble_log_probs, train_ensemble
from batchal.devices import resolve_device
from batchal.stopping import StabilizingPredictions, cohen_kappa, parse_stop
from batchal.data.dataset import long_tailed
from batchal.data.datasets import REPEATED_PREFIX, Dataset, dataset_names, load_dataset
from batchal.data.user import fingerprint, is_user_dataset
from batchal.models import create_model, default_model, load_model, model_names
from batchal.training import TrainConfig, evaluate, metrics_of, train_model

_VALIDATION_DEFAULTS = {"digits": 100, "letter": 1000, "emnist-balanced": 16_384}

#: The BatchBALD paper's one fixed initial set, used for every seed and strategy (REFERENCE.md
#: 5b): indices into MNIST's training file, in file order.
INITIAL_PRESETS = {"batchbald-paper": [38043, 40091, 17418, 2094, 39879, 3133, 5011, 40683, 54379, 24287,
                                       9849, 59305, 39508, 39356, 8758, 52579, 13655, 7636, 21562, 41329]}


def fixed_initial_indices(value) -> list[int]:
    """``initial_indices`` as a list: a preset name, a list of ints, or a text file of them."""
    if isinstance(value, str):
        if value in INITIAL_PRESETS:
            return list(INITIAL_PRESETS[value])
        try:
            value = [int(v) for v in Path(value).read_text().replace(",", " ").split()]
        except FileNotFoundError:
            raise ValueError(f"initial_indices {value!r}: neither a preset ({', '.join(INITIAL_PRESETS)}) nor a file") from None
        except ValueError:
            raise ValueError(f"initial_indices file {value!r}: expected whole numbers separated by commas or spaces") from None
    if not isinstance(value, (list, tuple)) or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in value):
        raise ValueError(f"initial_indices must be a preset name, a file or a list of indices >= 0, got {str(value)[:80]!r}")
    if len(set(value)) != len(value):
        raise ValueError("initial_indices lists an index twice")
    return list(value)


@dataclass
class ExperimentConfig:
    dataset: str = "repeated-digits"
    strategy: str = "batchbald"
    acquisition_size: int = 10
    initial_size: int = 20
    budget: int = 300
    target_accuracy: Optional[float] = None
    mc_samples: int = 100
    test_mc_samples: Optional[int] = None  # default: mc_samples
    num_samples: int = 40_000  # BatchBALD's joint-entropy samples
    prefilter: Optional[int] = None  # BatchBALD: only the top-m points by BALD compete (None: all)
    pool_subsample: Optional[int] = None  # score this many random pool items per round (copies of one item together)
    validation_size: Optional[int] = None  # default: 1,024 per copy (digits 100, letter 1,000, EMNIST 16,384)
    seed: int = 0
    model: Optional[str] = None  # default: the paper's model for the data set
    copies: int = 3  # repeated-* data sets
    noise_std: float = 0.1
    eval_batch_size: int = 512
    train: TrainConfig = field(default_factory=TrainConfig)
    data_dir: Optional[str] = None
    device: str = "cpu"
    posterior: str = "mc_dropout"  # or "ensemble": `members` models trained per round are the K samples
    members: int = 5  # ensemble size (posterior = "ensemble")
    stop: Optional[str] = None  # a stopping rule: stabilizing[:THRESHOLD[:WINDOW]] or plateau[:PATIENCE]
    initial_selection: str = "balanced"  # or "random" (BADGE's protocol: not class-balanced)
    label_column: Optional[str] = None  # your own table (--dataset FILE.csv/.parquet): the class column
    image_size: int = 28  # your own image folder or tar: the square size images are resized to
    rgb: bool = False  # your own images: keep colour
    initial_indices: Optional[Any] = None  # fixed initial training indices, or the preset "batchbald-paper"
    imbalance: Optional[float] = None  # a long-tailed training pool: the rarest class keeps this fraction (data.dataset.long_tailed)
    balance: bool = False  # balance each batch by predicted class (batchal.acquire.balance_batch's rule)

    def __post_init__(self):
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        if self.dataset not in dataset_names() and not is_user_dataset(self.dataset):
            raise ValueError(f"dataset must be one of {', '.join(dataset_names())}, or a path to your own data "
                             f"(a folder train/<class>/..., a .tar of one, .npz, .csv or .parquet); got {self.dataset!r}")
        if self.strategy not in strategies("classification"):
            kind = "" if self.strategy not in strategies() else f" ({self.strategy} is a {get_strategy(self.strategy).kind} strategy: " \
                "batchal run simulates single-label classification; call batchal.select with its inputs)"
            raise ValueError(f"strategy must be one of {', '.join(strategies('classification'))}; got {self.strategy!r}{kind}")
        if self.model is not None and self.model not in model_names() and ":" not in str(self.model):
            raise ValueError(f"model must be one of {', '.join(model_names())} or your own MODULE:FACTORY "
                             f"(package.module:fn or file.py:fn); got {self.model!r}")
        if self.model is not None and ":" in str(self.model):
            module, _, factory = str(self.model).rpartition(":")
            if module.endswith(".py"):  # resolved now: a resumed run or a Ray worker elsewhere finds the same file
                self.model = f"{Path(module).resolve()}:{factory}"
        ints = {
            "acquisition_size": 1, "initial_size": 0, "budget": 1, "mc_samples": 1, "num_samples": 1, "seed": 0,
            "copies": 1, "eval_batch_size": 1,
        }
        for name, minimum in ints.items():
            _check_int(name, getattr(self, name), minimum)
        for name in ("test_mc_samples", "pool_subsample", "prefilter"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        if self.validation_size is not None:
            _check_int("validation_size", self.validation_size, 0)
        if self.budget < self.initial_size:
            raise ValueError(f"budget={self.budget} is smaller than initial_size={self.initial_size}; expected budget >= initial_size")
        if self.target_accuracy is not None and not (isinstance(self.target_accuracy, (int, float)) and 0 < self.target_accuracy <= 1):
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy!r}")
        if not isinstance(self.noise_std, (int, float)) or not self.noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std!r}")
        if "num_samples" in get_strategy(self.strategy).options and self.num_samples < self.mc_samples:
            raise ValueError(f"num_samples={self.num_samples} is smaller than mc_samples={self.mc_samples}; expected num_samples >= mc_samples")
        resolve_device(self.device)
        if self.posterior not in ("mc_dropout", "ensemble"):
            raise ValueError(f"posterior must be mc_dropout or ensemble, got {self.posterior!r}")
        _check_int("members", self.members, 1)
        parse_stop(self.stop)
        if self.initial_selection not in ("balanced", "random"):
            raise ValueError(f"initial_selection must be balanced or random, got {self.initial_selection!r}")
        if not isinstance(self.balance, bool):
            raise ValueError(f"balance must be true or false, got {self.balance!r}")
        if self.imbalance is not None and (isinstance(self.imbalance, bool) or not isinstance(self.imbalance, (int, float))
                                           or not 0 < self.imbalance <= 1):
            raise ValueError(f"imbalance must be a ratio in (0, 1] (the rarest class keeps this fraction), got {self.imbalance!r}")
        if self.initial_indices is not None:
            indices = fixed_initial_indices(self.initial_indices)
            if len(indices) != self.initial_size:
                raise ValueError(f"initial_indices holds {len(indices)} indices but initial_size is {self.initial_size}; give both alike")

    def resolved(self, data: Dataset) -> "ExperimentConfig":
        """A copy with every default filled in from the data set."""
        out = dataclasses.replace(self)
        out.test_mc_samples = self.test_mc_samples or self.mc_samples
        out.model = self.model or default_model(self.dataset, data.input_shape)
        if self.validation_size is None and is_user_dataset(self.dataset) and self.dataset not in dataset_names():
            out.validation_size = min(1024, len(data.train_y) // 10)  # your own data: 10% of it, at most 1,024
        elif self.validation_size is None:
            base = self.dataset[len(REPEATED_PREFIX):] if self.dataset.startswith(REPEATED_PREFIX) else self.dataset
            copies = self.copies if self.dataset.startswith(REPEATED_PREFIX) else 1
            out.validation_size = _VALIDATION_DEFAULTS.get(base, 1024) * copies
        if out.device == "auto":
            out.device = resolve_device("auto").type
        needed = out.validation_size + out.initial_size
        if needed >= len(data.train_y):
            raise ValueError(f"validation_size + initial_size = {needed} leaves no pool in {self.dataset}'s {len(data.train_y)} training points")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"] = self.train.to_dict()
        if not d["balance"]:  # written only when set, so the folders of earlier runs resume as they are
            del d["balance"]
        return d


# Keys that may differ between an interrupted run and its resumption.
_RESUME_FREE_KEYS = {"data_dir", "device"}


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class Progress(Protocol):
    """Callbacks of a run; ``resumed(round, labelled)`` is optional and called once when a run
    continues from its results file."""

    def round_started(self, round: int, labelled: int) -> None: ...
    def epoch_done(self, record: dict) -> None: ...
    def round_done(self, row: dict) -> None: ...


def balanced_initial_indices(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` indices (positions in ``labels``) with classes as balanced as possible."""
    if size == 0:
        return torch.empty(0, dtype=torch.long)
    classes = labels.unique()
    per_class = [size // len(classes)] * len(classes)
    for i in torch.randperm(len(classes), generator=generator)[: size % len(classes)].tolist():
        per_class[i] += 1
    chosen = []
    for c, n in zip(classes.tolist(), per_class):
        members = (labels == c).nonzero().flatten()
        if n > len(members):
            raise ValueError(f"class {c} has only {len(members)} examples; cannot draw {n} for a balanced initial set")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:n]])
    return torch.cat(chosen)


@dataclass
class Splits:
    validation: torch.Tensor
    initial: torch.Tensor

    @staticmethod
    def make(data: Dataset, config: ExperimentConfig) -> "Splits":
        g = torch.Generator().manual_seed(round_seed(config.seed, 0, SEED_SPLITS))
        if config.initial_indices is not None:
            # The paper's way: a fixed initial set, then the validation set drawn per seed from the rest.
            initial = torch.tensor(fixed_initial_indices(config.initial_indices), dtype=torch.long)
            if len(initial) and int(initial.max()) >= len(data.train_y):
                raise ValueError(f"initial_indices: index {int(initial.max())} is outside the {len(data.train_y)} training points")
            taken = torch.zeros(len(data.train_y), dtype=torch.bool)
            taken[initial] = True
            order = torch.randperm(len(data.train_y), generator=g)
            order = order[~taken[order]]
            return Splits(validation=order[: config.validation_size], initial=initial)
        order = torch.randperm(len(data.train_y), generator=g)
        validation = order[: config.validation_size]
        rest = order[config.validation_size :]
        if config.initial_selection == "random":
            initial = rest[: config.initial_size]
        else:
            initial = rest[balanced_initial_indices(data.train_y[rest], config.initial_size, g)]
        return Splits(validation=validation, initial=initial)


def check_rows_match(rows: list[dict], config: "ExperimentConfig", path: Path, dataset_size: int, unavailable: set,
                     labels: Optional[torch.Tensor] = None) -> None:
    """Refuse rows that this run's configuration could not have written (``RunFileError``),
    including acquired labels that are not the data set's labels of those items."""
    expected = config.initial_size
    for number, row in enumerate(rows, start=1):
        where = f"{path}, line {number}"
        if row["labelled"] != expected:
            raise RunFileError(
                f"{where}: {row['labelled']} labelled where this run's configuration gives {expected} "
                f"(initial_size {config.initial_size} plus earlier acquisitions); the rows belong to another configuration"
            )
        if len(row["acquired"]) > config.acquisition_size:
            raise RunFileError(f"{where}: {len(row['acquired'])} items acquired, more than acquisition_size = {config.acquisition_size}")
        if not row["acquired"] and "stop_reason" not in row:
            raise RunFileError(f"{where}: a round that acquired nothing and did not stop")
        for i in row["acquired"]:
            if i >= dataset_size:
                raise RunFileError(f"{where}: acquired index {i} is outside the data set ({dataset_size} training points)")
            if i in unavailable:
                raise RunFileError(f"{where}: acquired index {i} is in this run's validation or initial set")
        if labels is not None:
            for i, label in zip(row["acquired"], row["acquired_labels"]):
                if label != int(labels[i]):
                    raise RunFileError(f"{where}: acquired item {i} is recorded with label {label!r} but the data set labels it "
                                       f"{int(labels[i])}; the file was edited or belongs to other data")
        expected += len(row["acquired"])


def _write_config(run_dir: Path, config: ExperimentConfig) -> None:
    """Write the folder's configuration, or check the new one against it: only the keys in
    ``_RESUME_FREE_KEYS`` may differ, and the budget may grow (it is then rewritten)."""
    path = run_dir / "config.json"
    results = run_dir / "results.jsonl"
    new = config.to_dict()
    if path.exists():
        old = read_config(path)
        diff = sorted(k for k in set(old) | set(new) if k not in _RESUME_FREE_KEYS and old.get(k) != new.get(k))
        grown = diff == ["budget"] and isinstance(old.get("budget"), int) and new["budget"] > old["budget"]
        if diff and not grown:
            raise ValueError(
                f"{run_dir} holds a run with a different configuration ({', '.join(diff)} differ; {path}); "
                "choose another output directory (only --budget may grow on an existing run)"
            )
        if grown:
            atomic_write(path, (json.dumps(new, indent=2) + "\n").encode())
        return
    if results.exists() and results.stat().st_size:
        raise RunFileError(
            f"{results} has rows but {path} is missing, so the configuration that wrote them is unknown; "
            "restore config.json or choose another output directory"
        )
    atomic_write(path, (json.dumps(new, indent=2) + "\n").encode())


def build_model(spec: str, input_shape: tuple, num_classes: int):
    """A fresh model: a registered name, or your ``MODULE:FACTORY`` (called with ``(input_shape,
    num_classes)`` or with no arguments, its ``nn.Dropout`` made consistent), in train mode."""
    if spec in model_names():
        return create_model(spec, input_shape, num_classes)
    return load_model(spec, input_shape, num_classes).train()


def _check_fingerprint(run_dir: Path, found: dict) -> None:
    """Your own data: the run folder keeps the data's fingerprint (data.json) and a resumed run on
    other data (other rows, labels or values) is refused."""
    path = run_dir / "data.json"
    if path.exists():
        try:
            recorded = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError) as exc:
            raise RunFileError(f"{path}: not a readable data fingerprint ({exc}); move it away to start a new run there") from None
        if recorded != found:
            differ = sorted(k for k in set(recorded) | set(found) if recorded.get(k) != found.get(k))
            raise RunFileError(f"{run_dir} was run on other data ({', '.join(differ)} differ: recorded {recorded}, now {found}); "
                               "choose another output directory")
        return
    atomic_write(path, (json.dumps(found) + "\n").encode())


def run_experiment(config: ExperimentConfig, run_dir: os.PathLike, *, data: Optional[Dataset] = None, progress: Optional[Progress] = None) -> list[dict]:
    """Run (or resume) one active-learning experiment; returns every round's row. A second
    process on the same ``run_dir`` while this one runs gets a RunInUseError (a RunFileError)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(run_dir):
        return _run_experiment(config, run_dir, data, progress)


def _open_run(config: ExperimentConfig, run_dir: Path, data: Dataset) -> tuple[list[dict], "Splits"]:
    """The run folder's rows so far, checked against this configuration (written, or checked
    against the one there), and the run's splits. A grown budget reopens a finished run."""
    results_path = run_dir / "results.jsonl"
    if is_user_dataset(config.dataset) and config.dataset not in dataset_names():
        _check_fingerprint(run_dir, fingerprint(data))
    rows = read_results(results_path)  # checked before the configuration may change
    _write_config(run_dir, config)
    splits = Splits.make(data, config)
    check_rows_match(rows, config, results_path, len(data.train_y), set(splits.initial.tolist()) | set(splits.validation.tolist()),
                     labels=data.train_y)
    if rows and rows[-1].get("stop_reason") == "budget" and rows[-1]["labelled"] < config.budget:
        # The budget grew: the final round is run again, now acquiring, and the run goes on.
        rows.pop()
        atomic_write(results_path, b"".join((json.dumps(row) + "\n").encode() for row in rows))
    return rows, splits


def _stop_set(rule, data: Dataset, splits: "Splits", config: ExperimentConfig) -> Optional[torch.Tensor]:
    """Stabilizing predictions' fixed stop set: inputs unlabelled at the start (Bloodgood & Vijay-Shanker 2009)."""
    if not isinstance(rule, StabilizingPredictions):
        return None
    start_pool = torch.tensor(sorted(set(range(len(data.train_y))) - set(splits.initial.tolist()) - set(splits.validation.tolist())))
    g_stop = torch.Generator().manual_seed(round_seed(config.seed, 0, SEED_STOP_SET))
    return data.train_x[start_pool[torch.randperm(len(start_pool), generator=g_stop)[: rule.stop_set_size]]]


def train_round(config: ExperimentConfig, data: Dataset, labelled: list[int], val_x, val_y, round_: int, device,
                 progress: Optional[Progress]) -> tuple[list, list]:
    """The round's posterior: one model (MC dropout) or ``members`` (an ensemble), trained on the labelled set."""
    labelled_t = torch.tensor(labelled, dtype=torch.long)
    histories: list = []

    def fit(model, generator):
        if labelled:
            histories.append(train_model(model, data.train_x[labelled_t], data.train_y[labelled_t], val_x, val_y, config.train,
                                         generator=generator, device=device, on_epoch=progress.epoch_done if progress else None))

    if config.posterior == "ensemble":
        models = train_ensemble(lambda: build_model(config.model, data.input_shape, data.num_classes).to(device),
                                config.members, fit, seed=round_seed(config.seed, round_, SEED_TRAIN))
    else:
        torch.manual_seed(round_seed(config.seed, round_, SEED_TRAIN))
        models = [build_model(config.model, data.input_shape, data.num_classes).to(device)]
        fit(models[0], torch.Generator().manual_seed(round_seed(config.seed, round_, SEED_TRAIN_ORDER)))
    return models, histories


def evaluate_round(models: list, data: Dataset, config: ExperimentConfig, round_: int, device) -> dict:
    if config.posterior == "ensemble":
        return metrics_of(ensemble_log_probs(models, data.test_x, config.eval_batch_size, device=device), data.test_y)
    return evaluate(models[0], data.test_x, data.test_y, config.test_mc_samples, config.eval_batch_size,
                    seed=round_seed(config.seed, round_, SEED_EVALUATE), device=device)


def _acquire_round(config: ExperimentConfig, data: Dataset, models: list, rows: list[dict], pool: torch.Tensor, labelled: list[int],
                   round_: int, device) -> tuple[dict, dict]:
    """The round's acquisition through batchal.acquire: what the row records of it."""
    spec = get_strategy(config.strategy)
    model = models[0]
    batch_size = min(config.acquisition_size, config.budget - len(labelled), len(pool))
    protocol = {"num_samples": config.num_samples, "prefilter": config.prefilter}
    # A stateful strategy (ALBL): its state lives in the rows.
    options = _albl_options(rows, model, data, config) if spec.stateful else None
    acquisition = acquire(config.strategy, ModelPredictions(models, data.train_x, batch_size=config.eval_batch_size, device=device),
                          pool.tolist(), batch_size, labelled=labelled, seed=config.seed, round_=round_,
                          mc_samples=config.mc_samples, subsample=config.pool_subsample,
                          group_size=_group_size(config, data), options=options, protocol=protocol, device=device,
                          balance=[int(data.train_y[i]) for i in labelled] if config.balance else None)
    selection = acquisition.selection
    acquired = acquisition.picked  # dataset indices, mapped back from the candidates by the seam
    out: dict[str, Any] = {}
    try:
        emb_b_D, log_probs_b_1_C = predict_embeddings(model, data.train_x[acquired], config.eval_batch_size, device=config.device)
        out["batch_diagnostics"] = batch_diagnostics(log_probs_b_1_C, emb_b_D)
    except FeatureLayerError:  # a user model without a last linear layer on its output path
        out["batch_diagnostics"] = None
    if "state" in selection.info:
        out["strategy_state"] = {**selection.info["state"], "queried": _albl_queried(rows) + [
            [i, q] for i, q in zip(acquired, selection.scores.tolist())]}
    out.update({
        "acquired": acquired,
        **({"acquired_ids": [data.train_ids[i] for i in acquired]} if data.train_ids is not None else {}),
        "acquired_labels": data.train_y[acquired].tolist(),
        "scores": selection.scores.tolist(),
    })
    return out, acquisition.seconds


def config_dataset(config: ExperimentConfig, progress=None) -> Dataset:
    """The data set a configuration names, loaded with its options (before ``imbalance``'s long tail,
    which the runner applies to whatever data it is given); ``progress`` as ``load_dataset``'s."""
    return load_dataset(config.dataset, config.data_dir, progress=progress, copies=config.copies, noise_std=config.noise_std,
                        label_column=config.label_column, image_size=config.image_size, rgb=config.rgb)


def _run_experiment(config: ExperimentConfig, run_dir: Path, data: Optional[Dataset], progress: Optional[Progress]) -> list[dict]:
    if data is None:
        data = config_dataset(config)
    if config.imbalance is not None:  # the same long-tailed pool for every strategy and seed
        data = long_tailed(data, config.imbalance)
    config = config.resolved(data)
    results_path = run_dir / "results.jsonl"
    rows, splits = _open_run(config, run_dir, data)
    if rows and "stop_reason" in rows[-1]:
        return rows
    if progress and rows and hasattr(progress, "resumed"):
        progress.resumed(len(rows), rows[-1]["labelled"] + len(rows[-1]["acquired"]))
    labelled = splits.initial.tolist() + [i for row in rows for i in row["acquired"]]
    unavailable = set(labelled) | set(splits.validation.tolist())
    pool = torch.tensor([i for i in range(len(data.train_y)) if i not in unavailable], dtype=torch.long)
    device = torch.device(config.device)
    val_x, val_y = data.train_x[splits.validation], data.train_y[splits.validation]
    rule = parse_stop(config.stop)
    stop_x = _stop_set(rule, data, splits, config)

    for round_ in range(len(rows), 10**9):
        if progress:
            progress.round_started(round_, len(labelled))
        start = time.perf_counter()
        models, histories = train_round(config, data, labelled, val_x, val_y, round_, device, progress)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        metrics = evaluate_round(models, data, config, round_, device)
        evaluate_seconds = time.perf_counter() - start
        row = {
            "round": round_, "labelled": len(labelled), "test_accuracy": metrics["accuracy"], "test_nll": metrics["nll"],
            "test_macro_f1": metrics["macro_f1"], "test_recall": metrics["recall"],
            "acquired": [], "acquired_labels": [], "scores": [],
            "seconds": {"train": train_seconds, "evaluate": evaluate_seconds, "score": 0.0, "select": 0.0},
        }
        if histories and config.train.until_accuracy is not None:
            last = histories[0][-1]
            row["training"] = {"epochs": last["epoch"], "train_accuracy": last["train_accuracy"],
                               "reinitialised": last["reinitialised"], "capped": last["capped"]}
        rule_stop = _apply_stopping_rule(rule, row, rows, models, val_x, val_y, stop_x, config) if rule is not None else None
        stop = None
        if len(labelled) >= config.budget:
            stop = "budget"
        elif config.target_accuracy is not None and metrics["accuracy"] >= config.target_accuracy:
            stop = "target_accuracy"
        elif len(pool) == 0:
            stop = "pool_exhausted"
        elif rule_stop is not None:
            stop = rule_stop
        if stop is None:
            acquired_row, seconds = _acquire_round(config, data, models, rows, pool, labelled, round_, device)
            row.update(acquired_row)
            row["seconds"].update(seconds)
            labelled.extend(row["acquired"])
            acquired_set = set(row["acquired"])
            pool = pool[torch.tensor([i not in acquired_set for i in pool.tolist()], dtype=torch.bool)]
        else:
            row["stop_reason"] = stop
        append_row(results_path, row)
        rows.append(row)
        if progress:
            progress.round_done(row)
        if stop is not None:
            return rows
    raise AssertionError("unreachable")


def _albl_queried(rows: list[dict]) -> list:
    previous = [r["strategy_state"] for r in rows if r.get("strategy_state")]
    return list(previous[-1]["queried"]) if previous else []


def _albl_options(rows: list[dict], model, data: Dataset, config: ExperimentConfig) -> dict:
    """ALBL's state from the last row, updated with the reward of the model just trained:
    IW-ACC on every point ALBL has queried (REFERENCE.md 4b; batchal.acquisition.albl)."""
    from batchal.acquisition import albl

    budget = max(1, config.budget - config.initial_size)
    previous = [r["strategy_state"] for r in rows if r.get("strategy_state")]
    if not previous:
        return {"state": None, "budget": budget}
    state = {k: v for k, v in previous[-1].items() if k != "queried"}
    queried = previous[-1]["queried"]
    items = [i for i, _ in queried]
    predicted = _mean_predictions([model], data.train_x[items], config).cpu()
    correct = (predicted == data.train_y[items]).tolist()
    reward = albl.iw_accuracy(correct, [q for _, q in queried], len(data.train_y), budget)
    pool_size = len(data.train_y) - config.initial_size - config.validation_size - len(items)
    return {"state": albl.update(state, reward, pool_size, budget), "budget": budget}


def _mean_predictions(models, x, config: ExperimentConfig) -> torch.Tensor:
    """The classes the round's posterior predicts (dropout off; ensembles: the averaged prediction)."""
    return predictive_probs(ensemble_log_probs(models, x, config.eval_batch_size, device=config.device)).argmax(1)


def _apply_stopping_rule(rule, row: dict, rows: list[dict], models, val_x, val_y, stop_x, config: ExperimentConfig) -> Optional[str]:
    """Record what the rule looks at in the row (validation accuracy; stop-set predictions and
    kappa against the previous round) and return its stop reason when it says stop."""
    if isinstance(rule, StabilizingPredictions):
        predictions = _mean_predictions(models, stop_x, config).tolist()
        previous = rows[-1].get("stop_predictions") if rows else None
        row["stop_predictions"] = predictions
        row["stop_kappa"] = cohen_kappa(previous, predictions) if previous is not None else None
        return rule.reason if rule.should_stop([r.get("stop_kappa") for r in rows] + [row["stop_kappa"]]) else None
    row["validation_accuracy"] = float((_mean_predictions(models, val_x, config).cpu() == val_y).double().mean()) if len(val_y) else 0.0
    history = [r["validation_accuracy"] for r in rows if "validation_accuracy" in r] + [row["validation_accuracy"]]
    return rule.reason if rule.should_stop(history) else None


def _group_size(config: ExperimentConfig, data: Dataset) -> Optional[int]:
    """For repeated-* data sets, the size of one copy (item i's copies are i + j * size)."""
    if config.dataset.startswith(REPEATED_PREFIX):
        return len(data.train_y) // config.copies
    return None


#: The counting of ``labels_to_reach``, printed under every labels-needed table.
COUNTING_NOTE = (
    "Labels to X%: the labelled-set size (initial set included) at the first round whose model reaches X% test "
    "accuracy, minus b, the acquisition size (the BatchBALD paper's Table 1 counting); the initial set's size when "
    "the model trained on it alone reaches X%. So a run can show 30 labels to 80% while its accuracy at 30 labels was lower."
)


def labels_to_reach(rows: list[dict], threshold: float, acquisition_size: int) -> Optional[int]:
    """BatchBALD's Table 1 counting: the labelled-set size (initial set included) at the first
    round reaching the threshold, minus the acquisition size; None if never reached. When the
    model trained on the initial set alone reaches it (the first round), that set's size."""
    for n, row in enumerate(rows):
        if row["test_accuracy"] >= threshold:
            return row["labelled"] if n == 0 else row["labelled"] - acquisition_size
    return None


def summarise(rows: list[dict]) -> dict:
    return {
        "rounds": len(rows),
        "final_labelled": rows[-1]["labelled"] if rows else 0,
        "final_accuracy": rows[-1]["test_accuracy"] if rows else math.nan,
    }
