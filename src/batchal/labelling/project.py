"""A labelling project: images to label, the model, and the batches the strategy asks for.

``init_project`` registers every PNG/JPEG image of a folder; ``Project`` serves batches,
takes labels and, when asked for the next batch, retrains in a background thread and selects
it with the project's strategy. The first batch (no labels yet) and any batch before two
classes are labelled are chosen for diversity: k-center greedy on the downsampled pixels,
seeded with the labelled items. The model's accuracy is estimated on a held-out slice of the
labelled items (every 5th, by item id), which also drives early stopping.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from batchal.acquisition.coreset import k_center_greedy
from batchal.acquisition.scores import predictive_probs
from batchal.acquisition.registry import get_strategy, select, strategies
from batchal.bayesian.predict import predict_embeddings, predict_log_probs
from batchal.data.files import DataError
from batchal.data.images import IMAGE_SUFFIXES, load_image
from batchal.devices import resolve_device
from batchal.labelling.store import Store
from batchal.models import create_model, load_model, model_names
from batchal.stopping import AccuracyPlateau, StabilizingPredictions, cohen_kappa
from batchal.training import TrainConfig, accuracy, train_model

HOLD_OUT_EVERY = 5


def _scan_images(images_dir: Path, image_size: int, grayscale: bool) -> tuple[list[str], list[dict]]:
    """Image files under ``images_dir`` (relative paths, sorted) and those skipped, with why:
    files that cannot be decoded (truncated, not an image) and links that lead out of the folder."""
    root = images_dir.resolve()
    found, skipped = [], []
    for path in sorted(images_dir.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not (path.is_file() or path.is_symlink()):
            continue
        relative = path.relative_to(images_dir).as_posix()
        target = path.resolve()
        if not target.is_relative_to(root):
            skipped.append({"path": relative, "reason": "a link to a file outside the images folder"})
            continue
        if not target.is_file():
            skipped.append({"path": relative, "reason": "not a regular file"})
            continue
        try:
            load_image(target, image_size, grayscale)
        except DataError as exc:
            skipped.append({"path": relative, "reason": str(exc).split(": ", 1)[-1]})
            continue
        found.append(relative)
    return found, skipped


def init_project(
    project_dir,
    images_dir,
    classes: list[str],
    *,
    model: str = "mnist_cnn",
    strategy: str = "batchbald",
    batch_size: int = 10,
    image_size: int = 28,
    grayscale: bool = True,
    mc_samples: int = 20,
    weights=None,
    features=None,
    labels=None,
    stop_patience: int = 3,
) -> Store:
    """Register every readable PNG/JPEG under ``images_dir`` (recursively). Unreadable files and
    links out of the folder are skipped and listed (``Store.meta()["skipped"]``), never fatal.

    model: a registered model, trained from scratch each round, or the user's ``MODULE:FACTORY``
    (an ``nn.Module`` factory, its dropout made consistent, fine-tuned each round from
    ``weights`` when given; its ``input_size`` / ``input_channels`` / ``mean`` / ``std``
    attributes, where present, decide the input size and normalisation).
    features: a ``.npy`` file of one feature row per image, in the order of the images' sorted
    relative paths (``.npz`` with ``paths`` and ``features`` arrays to give the order), computed
    by any backbone: a Bayesian head (an MLP with consistent MC dropout) is then trained on the
    labelled rows.
    labels: a CSV of ``path,label`` rows (paths relative to the images folder) already labelled.
    stop_patience: batches without a better held-out accuracy before the page suggests stopping.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ValueError(f"--images {images_dir}: not a folder")
    classes = [c.strip() for c in classes]
    if len(classes) < 2 or any(not c for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"--classes must name at least two distinct, non-empty classes, got {classes!r}")
    if strategy not in strategies():
        raise ValueError(f"--strategy must be one of {', '.join(strategies())}; got {strategy!r}")
    user_model = model not in model_names()
    if user_model and ":" not in str(model):
        raise ValueError(f"--model must be one of {', '.join(model_names())} or MODULE:FACTORY; got {model!r}")
    if features is not None and user_model:
        raise ValueError("--features trains batchal's own head on your features; give either --features or a MODULE:FACTORY --model")
    if weights is not None and not user_model:
        raise ValueError("--weights needs a MODULE:FACTORY --model (registered models train from scratch)")
    for name, value in (("batch_size", batch_size), ("image_size", image_size), ("mc_samples", mc_samples), ("stop_patience", stop_patience)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
    mean = std = None
    if user_model:
        probe = load_model(model, (1, 1, 1), len(classes), weights)  # the input size may come from the model
        image_size = int(getattr(probe, "input_size", image_size))
        grayscale = int(getattr(probe, "input_channels", 1 if grayscale else 3)) == 1
        mean, std = getattr(probe, "mean", None), getattr(probe, "std", None)
        _check_output(probe, (1 if grayscale else 3, image_size, image_size), len(classes), model)
    elif model == "mnist_cnn" and image_size < 12 and features is None:
        raise ValueError("--image-size must be >= 12 for the mnist_cnn model")
    paths, skipped = _scan_images(images_dir, image_size, grayscale)
    if not paths:
        reason = f" ({len(skipped)} skipped: {skipped[0]['path']}: {skipped[0]['reason']}, ...)" if skipped else ""
        raise ValueError(f"--images {images_dir}: no PNG or JPEG images found" + (f" that can be read{reason}" if skipped else ""))
    meta = {"classes": classes, "model": "mlp" if features is not None else model, "strategy": strategy, "batch_size": batch_size,
            "image_size": image_size, "grayscale": grayscale, "mc_samples": mc_samples,
            "images_root": str(images_dir.resolve()), "skipped": skipped, "stop_patience": stop_patience,
            "weights": str(Path(weights).resolve()) if weights else None,
            "mean": _as_list(mean), "std": _as_list(std)}
    if features is not None:
        meta["features"], meta["feature_rows"] = _feature_rows(Path(features), paths, skipped)
    imported = _read_labels_csv(Path(labels), paths, classes) if labels is not None else []
    store = Store.create(Path(project_dir), meta, paths)
    if imported:
        ids = {path: item for item, path in store.item_paths().items()}
        store.add_labels([(ids[path], label) for path, label in imported], annotator="import")
    return store


def _as_list(value):
    if value is None:
        return None
    return [float(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]


def _check_output(model, input_shape, num_classes: int, spec: str) -> None:
    """The user's model must map one input of the project's shape to C logits."""
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape))
    except Exception as exc:  # any failure of the user's forward pass is reported, with the shape tried
        raise ValueError(f"--model {spec} failed on an input of shape {(1, *input_shape)} ({type(exc).__name__}: {exc}); "
                         "set its input_size / input_channels attributes or --image-size / --rgb") from None
    if out.dim() != 2 or out.shape != (1, num_classes):
        raise ValueError(f"--model {spec} returned shape {tuple(out.shape)} for one input; expected (1, {num_classes}): one logit per class")


def _feature_rows(path: Path, paths: list[str], skipped: list[dict]) -> tuple[str, list[int]]:
    """The features file and, for each registered image (in order), its row."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--features {path}: not a readable .npy / .npz file ({exc})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        if "features" not in data or "paths" not in data:
            raise ValueError(f"--features {path}: an .npz needs arrays 'features' and 'paths'")
        array, order = data["features"], [str(p) for p in data["paths"]]
    else:
        array = data
        order = sorted(paths + [entry["path"] for entry in skipped])  # every image found, in sorted order
        if len(order) != array.shape[0]:
            raise ValueError(f"--features {path} has {array.shape[0]} rows but the folder holds {len(order)} images; "
                             "one row per image in sorted path order (or an .npz with 'paths')")
    if array.ndim != 2 or array.dtype.kind not in "fiu" or not np.isfinite(array).all():
        raise ValueError(f"--features {path}: expected a finite numeric array [images, features], got shape {array.shape}, dtype {array.dtype}")
    row_of = {p: n for n, p in enumerate(order)}
    missing = [p for p in paths if p not in row_of]
    if missing:
        raise ValueError(f"--features {path} has no row for {len(missing)} image(s), e.g. {missing[0]}")
    return str(path.resolve()), [row_of[p] for p in paths]


def _read_labels_csv(path: Path, paths: list[str], classes: list[str]) -> list[tuple[str, str]]:
    import csv

    known = set(paths)
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f), start=1):
                if not row or (number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]):
                    continue
                if len(row) != 2:
                    raise ValueError(f"--labels {path}, line {number}: expected path,label, got {row!r}")
                item, label = row[0].strip(), row[1].strip()
                if item not in known:
                    raise ValueError(f"--labels {path}, line {number}: {item!r} is not a registered image (paths are relative to --images)")
                if label not in classes:
                    raise ValueError(f"--labels {path}, line {number}: label {label!r} is not one of {', '.join(classes)}")
                rows.append((item, label))
    except FileNotFoundError:
        raise ValueError(f"--labels {path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"--labels {path}: not UTF-8 text ({exc})") from None
    return rows


class Project:
    def __init__(self, project_dir, train_config: Optional[TrainConfig] = None, device=None):
        """device: where the model retrains, scores and selects (cpu, cuda, cuda:N or auto)."""
        self.device = resolve_device(device)
        self.dir = Path(project_dir)
        self.store = Store(self.dir)
        self.meta = self.store.meta()
        self.classes: list[str] = self.meta["classes"]
        self.train_config = train_config or TrainConfig(epoch_samples=1024, max_epochs=15, patience=3)
        self._features: Optional[torch.Tensor] = None
        self.unreadable: dict[int, str] = {}  # items whose image could not be read when loaded
        self._item_ids: Optional[list[int]] = None
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.state = "idle"
        self.error: Optional[str] = None
        self.round = 0

    # --- images ---
    def features(self) -> tuple[list[int], torch.Tensor]:
        """Every item's model input, loaded once (item ids in order, tensor N x C x H x W)."""
        if self._features is None and self.meta.get("features"):
            array = np.load(self.meta["features"], mmap_mode="r")
            if isinstance(array, np.lib.npyio.NpzFile):
                array = array["features"]
            ids = list(self.store.item_paths())
            self._item_ids = ids
            self._features = torch.from_numpy(np.asarray(array[self.meta["feature_rows"]], dtype=np.float32))
        if self._features is None:
            ids, images = [], []
            for item in self.store.item_paths():
                path = self.servable_path(item)
                try:
                    if path is None:
                        raise DataError("no longer a file inside the images folder")
                    images.append(load_image(path, self.meta["image_size"], self.meta["grayscale"], self.meta.get("mean"), self.meta.get("std")))
                    ids.append(item)
                except DataError as exc:  # damaged after init: skipped and shown in status, never fatal
                    self.unreadable[item] = str(exc)
            self._item_ids, self._features = ids, torch.stack(images)
        return self._item_ids, self._features

    def image_path(self, item_id: int) -> Optional[Path]:
        """Where the item's image is registered (None: no such item). Projects made before
        ``images_root`` existed hold absolute paths."""
        path = self.store.item_path(item_id)
        if path is None:
            return None
        root = self.meta.get("images_root")
        return Path(root) / path if root else Path(path)

    def servable_path(self, item_id: int) -> Optional[Path]:
        """The item's image file if it is still a regular file inside the images folder, checked
        at every request (a link swapped in after ``init`` that leads out is refused)."""
        path = self.image_path(item_id)
        if path is None:
            return None
        root = self.meta.get("images_root")
        target = path.resolve()
        inside = target.is_relative_to(Path(root).resolve()) if root else target == path
        return target if inside and target.is_file() else None

    # --- batches and labels ---
    def current_batch(self) -> tuple[int, list[int]]:
        with self._lock:
            batch = self.store.current_batch()
            if batch is None:
                self.store.add_batch("diversity", self._diverse_batch())
                batch = self.store.current_batch()
        return batch

    def add_label(self, item_id: int, label: str, annotator: Optional[str] = None) -> int:
        if self.store.item_path(item_id) is None:
            raise KeyError(f"no item with id {item_id}")
        if label not in self.classes:
            raise ValueError(f"label must be one of {', '.join(self.classes)}; got {label!r}")
        return self.store.add_label(item_id, label, annotator)

    def request_next(self) -> str:
        """Start retraining and selecting the next batch in the background (no-op if already running)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self.state
            if not self._pool(self.store.current_labels()):
                return "done"  # everything is labelled: nothing to train for, no empty batch written
            self.state, self.error = "training", None
            self._thread = threading.Thread(target=self._next_batch_safely, daemon=True)
            self._thread.start()
            return self.state

    def wait(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict:
        labels = self.store.current_labels()
        batch = self.store.current_batch()
        batch_ids = batch[1] if batch else []
        counts = {c: 0 for c in self.classes}
        for label in labels.values():
            counts[label] = counts.get(label, 0) + 1
        return {
            "items": self.store.item_count(),
            "labelled": len(labels),
            "label_counts": counts,
            "batch_id": batch[0] if batch else None,
            "batch_size": len(batch_ids),
            "batch_labelled": sum(1 for i in batch_ids if i in labels),
            "state": self.state,
            "error": self.error,
            "strategy": self.meta["strategy"],
            "classes": self.classes,
            "accuracy": self.store.accuracy_history(),
            "skipped": self.meta.get("skipped", []) + [{"id": i, "reason": r} for i, r in self.unreadable.items()],
            "done": not self._pool(labels),
            "batches": self.store.batch_history(),
            "stop_hint": self.stop_hint(),
        }

    def undo(self, annotator: Optional[str] = None) -> Optional[dict]:
        """Undo the last label (a new history row; nothing is deleted)."""
        done = self.store.undo_last_label(annotator)
        if done is None:
            return None
        item, restored, row = done
        return {"id": item, "label": restored or None, "label_id": row}

    def stop_hint(self) -> Optional[str]:
        """A suggestion to stop: the held-out accuracy has not improved for ``stop_patience``
        batches, or the predictions on the unlabelled items have stabilised (Cohen's kappa
        between consecutive models >= 0.99 on average over the last 3 batches)."""
        accuracies = [row["accuracy"] for row in self.store.accuracy_history()]
        plateau = AccuracyPlateau(patience=int(self.meta.get("stop_patience", 3)))
        stable = StabilizingPredictions()
        kappas = [b["kappa"] for b in self.store.batch_history()]
        reasons = []
        if plateau.should_stop(accuracies):
            reasons.append(plateau.describe(accuracies))
        if stable.should_stop(kappas):
            reasons.append(stable.describe(kappas))
        return ("Consider stopping: " + "; ".join(reasons) + ".") if reasons else None

    def _new_model(self, input_shape: tuple) -> torch.nn.Module:
        spec = self.meta["model"]
        if spec in model_names():
            return create_model(spec, input_shape, len(self.classes))
        return load_model(spec, input_shape, len(self.classes), self.meta.get("weights"))

    def _save_weights(self, model: torch.nn.Module) -> None:
        """The latest trained model's state dict, at PROJECT/model.pt (written atomically)."""
        tmp = self.dir / "model.pt.tmp"
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, self.dir / "model.pt")

    # --- background work ---
    def _next_batch_safely(self) -> None:
        try:
            self._next_batch()
            self.state = "idle"
        except Exception as exc:  # reported on the page and in /api/status, never silently retried
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            logging.getLogger(__name__).exception("retraining or selection failed")

    def _pool(self, labels: dict[int, str]) -> list[int]:
        ids, _ = self.features()
        return [i for i in ids if i not in labels]

    def _diverse_batch(self, labels: Optional[dict[int, str]] = None) -> list[int]:
        labels = labels if labels is not None else self.store.current_labels()
        ids, x = self.features()
        position = {item: n for n, item in enumerate(ids)}
        pool = self._pool(labels)
        if not pool:
            return []
        flat = torch.nn.functional.avg_pool2d(x, 2).flatten(1) if x.dim() == 4 and x.shape[-1] >= 8 else x.flatten(1)
        labelled = flat[[position[i] for i in labels]] if labels else None
        picks, _ = k_center_greedy(flat[[position[i] for i in pool]], min(self.meta["batch_size"], len(pool)), labelled)
        return [pool[p] for p in picks]

    def _next_batch(self) -> None:
        labels = self.store.current_labels()
        pool = self._pool(labels)
        if not pool:
            return
        if len(set(labels.values())) < 2:
            self.store.add_batch("diversity", self._diverse_batch(labels))
            return
        self.round += 1
        ids, x = self.features()
        position = {item: n for n, item in enumerate(ids)}
        labelled_ids = sorted(labels)
        held_out = labelled_ids[HOLD_OUT_EVERY - 1 :: HOLD_OUT_EVERY]
        held_out_set = set(held_out)
        train_ids = [i for i in labelled_ids if i not in held_out_set]
        y_of = lambda items: torch.tensor([self.classes.index(labels[i]) for i in items], dtype=torch.long)
        x_of = lambda items: x[[position[i] for i in items]]
        torch.manual_seed(len(labels))
        model = self._new_model(tuple(x.shape[1:]))
        train_model(model, x_of(train_ids), y_of(train_ids), x_of(held_out) if held_out else None,
                    y_of(held_out) if held_out else None, self.train_config,
                    generator=torch.Generator().manual_seed(len(labels)), device=self.device)
        estimate = None
        if held_out:
            estimate = (len(labels), accuracy(model, x_of(held_out), y_of(held_out), device=self.device), len(held_out))
        self.state = "selecting"
        strategy = self.meta["strategy"]
        spec = get_strategy(strategy)
        pool_x = x_of(pool)
        inputs = {}
        if spec.needs_embeddings or strategy == "coreset":
            embeddings, log_probs_1 = predict_embeddings(model, pool_x, device=self.device)
            inputs["embeddings_N_D"] = embeddings
            if spec.needs_log_probs:
                inputs["log_probs_N_K_C"] = log_probs_1
        elif spec.needs_log_probs:
            inputs["log_probs_N_K_C"] = predict_log_probs(model, pool_x, self.meta["mc_samples"], seed=self.round, device=self.device)
        else:
            inputs["embeddings_N_D"] = torch.zeros(len(pool), 1)
        options = {"num_samples": max(self.meta["mc_samples"], 10_000)} if strategy == "batchbald" else {}
        inputs = {name: value.to(self.device) for name, value in inputs.items()}
        selection = select(strategy, min(self.meta["batch_size"], len(pool)), seed=self.round, **inputs, **options)
        # Suggestions: the model's mean prediction for every unlabelled item (MC average where
        # the strategy sampled, the dropout-off prediction otherwise).
        lp = inputs.get("log_probs_N_K_C")
        if lp is None:
            lp = predict_log_probs(model, pool_x, self.meta["mc_samples"], seed=self.round, device=self.device)
        probs = predictive_probs(lp).cpu()
        best_p, best_c = probs.max(1)
        predictions = [(item, self.classes[int(c)], float(p)) for item, c, p in zip(pool, best_c, best_p)]
        picks = selection.indices.tolist()
        details = [(self.classes[int(best_c[p])], float(best_p[p]), float(selection.scores[n])) for n, p in enumerate(picks)]
        information = float(selection.scores[-1]) if strategy == "batchbald" else float(selection.scores.sum())
        # Stabilizing predictions: agreement with the previous model on the items both predicted.
        before = self.store.predictions()
        common = [(before[item][0], label) for item, label, _ in predictions if item in before]
        kappa = cohen_kappa(*zip(*common)) if len(common) >= 10 else None
        self._save_weights(model)
        # The accuracy row, the batch and the predictions commit together: a crash in between
        # leaves none of them, so a retry never writes a second accuracy row for the same labels.
        self.store.add_batch(strategy, [pool[p] for p in picks], accuracy=estimate, details=details,
                             information=information, predictions=predictions, kappa=kappa)
