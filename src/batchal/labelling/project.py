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
import threading
from pathlib import Path
from typing import Optional

import torch

from batchal.acquisition.coreset import k_center_greedy
from batchal.acquisition.registry import get_strategy, select, strategies
from batchal.bayesian.predict import predict_embeddings, predict_log_probs
from batchal.data.files import DataError
from batchal.data.images import load_image
from batchal.devices import resolve_device
from batchal.labelling.store import Store
from batchal.models import create_model, model_names
from batchal.training import TrainConfig, accuracy, train_model

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
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
) -> Store:
    """Register every readable PNG/JPEG under ``images_dir`` (recursively). Unreadable files and
    links out of the folder are skipped and listed (``Store.meta()["skipped"]``), never fatal."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ValueError(f"--images {images_dir}: not a folder")
    classes = [c.strip() for c in classes]
    if len(classes) < 2 or any(not c for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"--classes must name at least two distinct, non-empty classes, got {classes!r}")
    if strategy not in strategies():
        raise ValueError(f"--strategy must be one of {', '.join(strategies())}; got {strategy!r}")
    if model not in model_names():
        raise ValueError(f"--model must be one of {', '.join(model_names())}; got {model!r}")
    for name, value in (("batch_size", batch_size), ("image_size", image_size), ("mc_samples", mc_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
    if model == "mnist_cnn" and image_size < 12:
        raise ValueError("--image-size must be >= 12 for the mnist_cnn model")
    paths, skipped = _scan_images(images_dir, image_size, grayscale)
    if not paths:
        reason = f" ({len(skipped)} skipped: {skipped[0]['path']}: {skipped[0]['reason']}, ...)" if skipped else ""
        raise ValueError(f"--images {images_dir}: no PNG or JPEG images found" + (f" that can be read{reason}" if skipped else ""))
    meta = {"classes": classes, "model": model, "strategy": strategy, "batch_size": batch_size,
            "image_size": image_size, "grayscale": grayscale, "mc_samples": mc_samples,
            "images_root": str(images_dir.resolve()), "skipped": skipped}
    return Store.create(Path(project_dir), meta, paths)


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
        if self._features is None:
            ids, images = [], []
            for item in self.store.item_paths():
                path = self.servable_path(item)
                try:
                    if path is None:
                        raise DataError("no longer a file inside the images folder")
                    images.append(load_image(path, self.meta["image_size"], self.meta["grayscale"]))
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
        }

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
        flat = torch.nn.functional.avg_pool2d(x, 2).flatten(1) if x.shape[-1] >= 8 else x.flatten(1)
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
        model = create_model(self.meta["model"], tuple(x.shape[1:]), len(self.classes))
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
        # The accuracy row and the batch commit together: a crash in between leaves neither, so a
        # retry never writes a second accuracy row for the same labels.
        self.store.add_batch(strategy, [pool[p] for p in selection.indices.tolist()], accuracy=estimate)
