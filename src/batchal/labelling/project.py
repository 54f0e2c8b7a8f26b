"""A labelling project: images to label, the model, and the batches the strategy asks for.

``init_project`` registers every PNG/JPEG image of a folder; ``Project`` serves batches,
takes labels and, when asked for the next batch, retrains in a background thread and selects
it with the project's strategy. The first batch (no labels yet) and any batch before two
classes are labelled are chosen for diversity: k-center greedy on the downsampled pixels,
seeded with the labelled items. Every batch also carries a few items drawn uniformly at random
(the audit items of ``batchal.labelling.quality``): the model's accuracy on them, never trained
on while it is estimated, is the honest estimate shown with its 95% interval; early stopping
uses its own split of the training labels.

At real size: the decoded inputs are cached at ``init`` (``inputs.npy``, float16) and memory-
mapped by every ``serve``; each round scores at most ``score_candidates`` pool items (a
uniformly random subset, 1,000 by default, seeded by the round), so the next batch is ready in
seconds whatever the folder's size.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from batchal.acquisition.coreset import k_center_greedy
from batchal.acquisition.scores import predictive_probs
from batchal.acquire import ModelPredictions, acquire, candidates_of
from batchal.acquisition.registry import get_strategy, strategies
from batchal.bayesian.predict import predict_log_probs
from batchal.data.files import DataError
from batchal.data.images import IMAGE_SUFFIXES, channel_stats, load_image
from batchal.devices import resolve_device
from batchal.labelling import quality
from batchal.labelling.relabel import labelled_scores, new_scores, relabel_choice, weight
from batchal.labelling.background import BackgroundTrainer
from batchal.labelling.store import UNLABELLED, Store
from batchal.models import create_model, load_model, model_names
from batchal.stopping import StabilizingPredictions, cohen_kappa
from batchal.training import TrainConfig, train_then_refit

#: Every k-th training label (by a hash of its id) is the early-stopping split; audit items are never in it.
EARLY_STOP_EVERY = 5
#: With background training, how long "next" waits for a training under way before it selects
#: with the newest finished model.
FRESH_WAIT_SECONDS = 5.0
#: Pool items scored per round (a random subset when the pool is larger): the batch in seconds on
#: 20,000 images. Scoring is the round's largest cost (K forward passes per item): on 2 cores, 1,000
#: candidates with the default CNN and K = 20 take about 4 s (results/benchmarks/labelling.txt).
SCORE_CANDIDATES = 1_000
#: Cached decoded inputs, written at init.
INPUTS_FILE = "inputs.npy"
#: Largest image accepted, in pixels (a decompression bomb is refused before it is decoded).
MAX_PIXELS = 40_000_000
#: Keys the page keeps for itself: next, undo, skip (unsure), bad image, zoom.
RESERVED_KEYS = ("n", "u", "s", "x", "z")
#: Default class keys, in order: digits (1-9, 0), then letters that are not reserved.
DEFAULT_KEYS = list("1234567890") + [c for c in "abcdefghijklmopqrtvwy" if c not in RESERVED_KEYS]


def default_keys(classes: list[str]) -> list[Optional[str]]:
    """Classes named by single distinct digits get their own digit; otherwise digits then
    letters in order; classes beyond those get no key (their buttons still work)."""
    if all(len(c) == 1 and c.isdigit() for c in classes) and len(set(classes)) == len(classes):
        return list(classes)
    return [DEFAULT_KEYS[i] if i < len(DEFAULT_KEYS) else None for i in range(len(classes))]


def read_classes_file(path) -> tuple[list[str], list[Optional[str]], list[Optional[str]]]:
    """A label file: one class a line, ``name[,key[,description]]`` (CSV; blank lines and lines
    starting with # ignored). Returns names, keys (None: the default) and descriptions."""
    import csv

    names, keys, descriptions = [], [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f), start=1):
                if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                    continue
                if len(row) > 3:
                    raise ValueError(f"--classes-file {path}, line {number}: expected name[,key[,description]], got {len(row)} fields")
                names.append(row[0].strip())
                key = row[1].strip() if len(row) > 1 and row[1].strip() else None
                if key is not None and (len(key) != 1 or key.lower() in RESERVED_KEYS or not key.isprintable() or key == " "):
                    raise ValueError(f"--classes-file {path}, line {number}: key {key!r} must be one character other than "
                                     f"{', '.join(RESERVED_KEYS)} (the page's own keys)")
                keys.append(key)
                descriptions.append(row[2].strip() if len(row) > 2 and row[2].strip() else None)
    except FileNotFoundError:
        raise ValueError(f"--classes-file {path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"--classes-file {path}: not UTF-8 text ({exc})") from None
    given = [k for k in keys if k is not None]
    if len(set(given)) != len(given):
        raise ValueError(f"--classes-file {path}: a key is given to two classes")
    return names, keys, descriptions


def resolve_keys(classes: list[str], keys: Optional[list[Optional[str]]]) -> list[Optional[str]]:
    """The given keys, with defaults (not already taken) for the classes that have none."""
    defaults = default_keys(classes)
    if not keys:
        return defaults
    taken = {k for k in keys if k is not None}
    spare = [k for k in DEFAULT_KEYS if k not in taken]
    return [k if k is not None else (spare.pop(0) if spare else None) for k in keys]


#: Ways to take an item out of the pool without a label.
FLAG_KINDS = ("unsure", "bad_image")


def _walk(images_dir: Path):
    """Every path under the folder, sorted, without following links to folders (no loops)."""
    for dirpath, dirnames, filenames in os.walk(images_dir, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            yield Path(dirpath) / name


def regular_file_inside(path: Path, root: Path) -> tuple[Optional[Path], Optional[str]]:
    """(the resolved file, None) when ``path`` is a regular file inside ``root``, else (None, why):
    a link out of the folder, a link loop, a FIFO, a device or a folder."""
    try:
        target = path.resolve(strict=True)
        mode = os.stat(target).st_mode
    except RuntimeError:
        return None, "a symbolic link loop"
    except OSError as exc:
        return None, "a link loop or a broken link" if path.is_symlink() else f"not readable ({exc.strerror})"
    if not target.is_relative_to(root):
        return None, "a link to a file outside the images folder"
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
        return None, kind
    return target, None


def _scan_images(images_dir: Path, image_size: int, grayscale: bool, mean=None, std=None) -> tuple[list[str], list[dict], list[torch.Tensor]]:
    """Image files under ``images_dir`` (relative paths, sorted), their decoded inputs, and those
    skipped, with why: files that cannot be decoded (truncated, not an image, a decompression
    bomb), FIFOs, devices, link loops and links that lead out of the folder. Never fatal."""
    root = images_dir.resolve()
    found, skipped, inputs = [], [], []
    for path in _walk(images_dir):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        relative = path.relative_to(images_dir).as_posix()
        target, why = regular_file_inside(path, root)
        if target is None:
            skipped.append({"path": relative, "reason": why})
            continue
        try:
            inputs.append(load_image(target, image_size, grayscale, mean, std, max_pixels=MAX_PIXELS))
        except DataError as exc:
            skipped.append({"path": relative, "reason": str(exc).split(": ", 1)[-1]})
            continue
        found.append(relative)
    return found, skipped, inputs


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
    keys: Optional[list[Optional[str]]] = None,
    descriptions: Optional[list[Optional[str]]] = None,
    overlap: int = 1,
    relabel: bool = False,
    audit_fraction: float = quality.AUDIT_FRACTION,
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
    stop_patience: the window, in batches, of the stop hint's paired comparison.
    keys, descriptions: per class (``read_classes_file``); keys default to digits then letters.
    overlap: labels each item needs from different annotators (1: each item labelled once).
    relabel: with two annotators or more, a batch may ask another label of a doubtful labelled
    item instead of a label on a new one (``batchal.labelling.relabel``: ActiveLab's rule).
    audit_fraction: random audit items per strategy pick (at least one per batch): more give a
    tighter accuracy estimate and comparison with random, at that many more labels.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ValueError(f"--images {images_dir}: not a folder")
    classes = [c.strip() for c in classes]
    if len(classes) < 2 or any(not c for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"--classes must name at least two distinct, non-empty classes, got {classes!r}")
    for name, given in (("keys", keys), ("descriptions", descriptions)):
        if given is not None and len(given) != len(classes):
            raise ValueError(f"{name}: {len(given)} given for {len(classes)} classes")
    if not isinstance(relabel, bool):
        raise ValueError(f"relabel must be true or false, got {relabel!r}")
    if isinstance(audit_fraction, bool) or not isinstance(audit_fraction, (int, float)) or not 0 < audit_fraction <= 1:
        raise ValueError(f"--audit-fraction must be a number in (0, 1], got {audit_fraction!r}")
    if strategy not in strategies("classification"):
        raise ValueError(f"--strategy must be one of {', '.join(strategies('classification'))}; got {strategy!r}")
    user_model = model not in model_names()
    if user_model and ":" not in str(model):
        raise ValueError(f"--model must be one of {', '.join(model_names())} or MODULE:FACTORY; got {model!r}")
    if features is not None and user_model:
        raise ValueError("--features trains batchal's own head on your features; give either --features or a MODULE:FACTORY --model")
    if weights is not None and not user_model:
        raise ValueError("--weights needs a MODULE:FACTORY --model (registered models train from scratch)")
    for name, value in (("batch_size", batch_size), ("image_size", image_size), ("mc_samples", mc_samples),
                        ("stop_patience", stop_patience), ("overlap", overlap)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
    mean = std = None
    if user_model:
        probe = load_model(model, (1 if grayscale else 3, image_size, image_size), len(classes), weights)  # the input size may come from the model
        image_size = int(getattr(probe, "input_size", image_size))
        grayscale = int(getattr(probe, "input_channels", 1 if grayscale else 3)) == 1
        mean, std = getattr(probe, "mean", None), getattr(probe, "std", None)
        _check_output(probe, (1 if grayscale else 3, image_size, image_size), len(classes), model)
    elif model == "mnist_cnn" and image_size < 12 and features is None:
        raise ValueError("--image-size must be >= 12 for the mnist_cnn model")
    standardise = not user_model and features is None
    if standardise:  # batchal run's inputs for your own images: decoded to [0, 1], then standardised per channel
        mean, std = (0.0, 1.0) if grayscale else ([0.0] * 3, [1.0] * 3)
    paths, skipped, decoded = _scan_images(images_dir, image_size, grayscale, mean, std)
    if standardise and decoded:
        stacked = torch.stack(decoded)
        channel_mean, channel_std = channel_stats(stacked)
        decoded = list((stacked - channel_mean) / channel_std)
        mean, std = channel_mean.flatten().tolist(), channel_std.flatten().tolist()
    if not paths:
        reason = f" ({len(skipped)} skipped: {skipped[0]['path']}: {skipped[0]['reason']}, ...)" if skipped else ""
        raise ValueError(f"--images {images_dir}: no PNG or JPEG images found" + (f" that can be read{reason}" if skipped else ""))
    if user_model:
        model = absolute_model_spec(model)
    meta = {"classes": classes, "model": "mlp" if features is not None else model, "strategy": strategy, "batch_size": batch_size,
            "image_size": image_size, "grayscale": grayscale, "mc_samples": mc_samples,
            "images_root": str(images_dir.resolve()), "skipped": skipped, "stop_patience": stop_patience,
            "weights": str(Path(weights).resolve()) if weights else None,
            "mean": _as_list(mean), "std": _as_list(std), "overlap": overlap, "relabel": relabel, "audit_fraction": float(audit_fraction),
            "keys": list(keys) if keys else None, "descriptions": list(descriptions) if descriptions else None}
    if features is not None:
        meta["features"], meta["feature_rows"] = _feature_rows(Path(features), paths, skipped)
    imported = _read_labels_csv(Path(labels), paths, classes) if labels is not None else []
    meta["inputs_cache"] = INPUTS_FILE if features is None else None
    store = Store.create(Path(project_dir), meta, paths)
    if features is None:  # every serve memory-maps these instead of decoding the folder again
        tmp = Path(project_dir) / (INPUTS_FILE + ".tmp.npy")
        np.save(tmp, torch.stack(decoded).numpy().astype(np.float16))
        os.replace(tmp, Path(project_dir) / INPUTS_FILE)
    if imported:
        ids = {path: item for item, path in store.item_paths().items()}
        store.add_labels([(ids[path], label) for path, label in imported], annotator="import")
    return store


def absolute_model_spec(spec: str) -> str:
    """A ``file.py:factory`` spec with the file's absolute path (a module spec unchanged), so that
    serving from another folder finds it."""
    module, _, factory = spec.rpartition(":")
    if module.endswith(".py"):
        return f"{Path(module).resolve()}:{factory}"
    return spec


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
    def __init__(self, project_dir, train_config: Optional[TrainConfig] = None, device=None, overlap: Optional[int] = None,
                 score_candidates: int = SCORE_CANDIDATES, background: bool = False, relabel: Optional[bool] = None,
                 compare_random: bool = False):
        """train_config: the training protocol (default: ``batchal run``'s, ``TrainConfig()``).
        device: where the model retrains, scores and selects (cpu, cuda, cuda:N or auto).
        overlap: labels each item needs from different annotators (default: the project's, 1).
        score_candidates: pool items scored per round (a random subset of a larger pool).
        background: train on the labels so far while the person labels (``batchal label serve``
        does): the next batch is then chosen by the newest finished model at once instead of
        waiting for a training on the last labels (``status()["model_labels"]`` says how many
        labels the model that chose the current batch was trained on).
        relabel: ask another label of doubtful labelled items when it is worth more than a new
        one (``batchal.labelling.relabel``; default: the project's, off).
        compare_random: after each batch, compare in a background thread the strategy's labels
        with random ones at equal counts on the audit items (``versus_random``; ``batchal label
        serve`` does; it costs 2 x ``quality.VERSUS_FOLDS`` small trainings per batch)."""
        self.device = resolve_device(device)
        self.dir = Path(project_dir)
        self.store = Store(self.dir)
        self.meta = self.store.meta()
        self.classes: list[str] = self.meta["classes"]
        self.overlap = int(overlap if overlap is not None else self.meta.get("overlap", 1))
        if self.overlap < 1:
            raise ValueError(f"--overlap must be an integer >= 1, got {overlap!r}")
        self.relabel = bool(relabel if relabel is not None else self.meta.get("relabel", False))
        if isinstance(score_candidates, bool) or not isinstance(score_candidates, int) or score_candidates < 1:
            raise ValueError(f"score_candidates must be an integer >= 1, got {score_candidates!r}")
        self.score_candidates = score_candidates
        # batchal run's protocol (epochs of 5,056 examples, at most 30, early stopping after 3
        # without progress): the labeller gets the model the papers' reproductions get.
        self.train_config = train_config or TrainConfig()
        self.background = BackgroundTrainer(self._train_job) if background else None
        #: Seconds "next" may wait for the training under way (the rest of the 10 s budget is scoring and selection).
        self.fresh_wait = FRESH_WAIT_SECONDS
        self.model_labels: Optional[int] = None  # training labels of the model that chose the current batch (this session)
        self._features: Optional[torch.Tensor] = None
        self.unreadable: dict[int, str] = {}  # items whose image could not be read when loaded
        self._item_ids: Optional[list[int]] = None
        self._position: Optional[dict[int, int]] = None
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.state = "idle"
        self.error: Optional[str] = None
        self.round = self.store.batch_count()
        self.timings: dict[str, float] = {}  # seconds of the last round's training, scoring and selection
        self.compare_random = compare_random
        self._versus_thread: Optional[threading.Thread] = None
        self._versus_due = False
        self.check_model()

    def check_model(self) -> None:
        """A user model's file must still be where the project says (checked at serve, not at the first retrain)."""
        spec = self.meta["model"]
        module = spec.rpartition(":")[0] if ":" in spec else ""
        if module.endswith(".py") and not Path(module).is_file():
            raise ValueError(f"the project's model file {module} is missing (the project was made with --model {spec}); "
                             "put it back or make the project again")

    # --- images ---
    def features(self) -> tuple[list[int], torch.Tensor]:
        """Every item's model input, loaded once (item ids in order, tensor N x C x H x W): the
        inputs cached at init (memory-mapped), the features file, or (projects made before the
        cache) the images decoded again."""
        if self._features is not None:
            return self._item_ids, self._features
        ids = list(self.store.item_paths())
        cache = self.dir / self.meta["inputs_cache"] if self.meta.get("inputs_cache") else None
        if self.meta.get("features"):
            array = np.load(self.meta["features"], mmap_mode="r")
            if isinstance(array, np.lib.npyio.NpzFile):
                array = array["features"]
            self._item_ids = ids
            self._features = torch.from_numpy(np.asarray(array[self.meta["feature_rows"]], dtype=np.float32))
        elif cache is not None and cache.is_file():
            array = np.load(cache, mmap_mode="r")
            if array.shape[0] != len(ids):
                raise ValueError(f"{cache} holds {array.shape[0]} inputs for {len(ids)} items; the project is damaged")
            self._item_ids, self._features = ids, torch.from_numpy(np.asarray(array, dtype=np.float32))
        else:
            kept, images = [], []
            for item in ids:
                path = self.servable_path(item)
                try:
                    if path is None:
                        raise DataError("no longer a file inside the images folder")
                    images.append(load_image(path, self.meta["image_size"], self.meta["grayscale"], self.meta.get("mean"),
                                             self.meta.get("std"), max_pixels=MAX_PIXELS))
                    kept.append(item)
                except DataError as exc:  # damaged after init: skipped and shown in status, never fatal
                    self.unreadable[item] = str(exc)
            self._item_ids, self._features = kept, torch.stack(images)
        return self._item_ids, self._features

    def positions(self) -> dict[int, int]:
        """Item id -> its row in ``features()``, computed once (every label asks for a training split)."""
        if self._position is None:  # features() are loaded once, so their order never changes
            self._position = {item: n for n, item in enumerate(self.features()[0])}
        return self._position

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
        at every request (a link swapped in after ``init`` that leads out, a loop, a FIFO or a
        device is refused)."""
        path = self.image_path(item_id)
        if path is None:
            return None
        root = self.meta.get("images_root")
        target, _ = regular_file_inside(path, Path(root).resolve() if root else path.parent.resolve())
        if target is not None and not root and target != path:
            return None
        return target

    # --- batches and labels ---
    def current_batch(self) -> tuple[int, list[int]]:
        with self._lock:
            batch = self.store.current_batch()
            if batch is None:
                labels = self.store.current_labels()
                picks = self._diverse_batch(labels)
                audit = self._audit_items(labels, set(picks), len(picks), seed=0)
                self._add_batch("diversity", picks, audit)
                batch = self.store.current_batch()
        return batch

    def keys(self) -> list[Optional[str]]:
        """The keyboard key of each class (None: no key; its button still works)."""
        return resolve_keys(self.classes, self.meta.get("keys"))

    def batch_for(self, annotator: str) -> tuple[int, list[int]]:
        """The current batch's items this annotator should label (``Store.claim``)."""
        batch_id, items = self.current_batch()
        return batch_id, self.store.claim(annotator, items, self.overlap)

    def add_label(self, item_id: int, label: str, annotator: Optional[str] = None, supervisor: bool = True) -> int:
        """Record a label. A named annotator (``supervisor=False``: a personal token) may not label
        an item another annotator holds, nor one that already has its ``overlap`` labels
        (``PermissionError`` saying who holds it); the owner may (corrections, imports)."""
        if self.store.item_path(item_id) is None:
            raise KeyError(f"no item with id {item_id}")
        if label not in self.classes:
            raise ValueError(f"label must be one of {', '.join(self.classes)}; got {label!r}")
        busy = None if supervisor else self.store.holder(item_id, annotator or "", self.overlap)
        if busy is not None:
            raise PermissionError(busy)
        row = self.store.add_label(item_id, label, annotator)
        self.train_in_background()
        return row

    def withdraw_label(self, item_id: int, annotator: Optional[str] = None) -> int:
        """Withdraw this annotator's label of the item (a new history row meaning 'not labelled';
        other annotators' labels stand)."""
        if self.store.item_path(item_id) is None:
            raise KeyError(f"no item with id {item_id}")
        row = self.store.add_label(item_id, UNLABELLED, annotator)
        self.train_in_background()
        return row

    def flag(self, item_id: int, kind: str, note: Optional[str] = None, annotator: Optional[str] = None) -> int:
        """Take an item out of the pool without a label: ``unsure`` or ``bad_image``, with an optional note."""
        if self.store.item_path(item_id) is None:
            raise KeyError(f"no item with id {item_id}")
        if kind not in FLAG_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FLAG_KINDS)}; got {kind!r}")
        if note is not None and (not isinstance(note, str) or len(note) > 500):
            raise ValueError("note must be a string of at most 500 characters")
        return self.store.add_flag(item_id, kind, note, annotator)

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

    def _label_counts(self, labels: Optional[dict] = None) -> dict[str, int]:
        """Labels per class (every class listed)."""
        counts = {c: 0 for c in self.classes}
        for label in (self.store.current_labels() if labels is None else labels).values():
            counts[label] = counts.get(label, 0) + 1
        return counts

    def status(self) -> dict:
        labels = self.store.current_labels()
        batch = self.store.current_batch()
        batch_ids = batch[1] if batch else []
        counts = self._label_counts(labels)
        flagged = self.store.flagged()
        given = self.store.annotator_labels()
        again = self.store.relabel_items()
        history = self.store.accuracy_history()  # read once per status: the page polls it twice a second
        batches = self.store.batch_history()
        accuracy = [{k: v for k, v in row.items() if k != "per_item"} for row in history]
        return {
            "items": self.store.item_count(),
            "labelled": len(labels),
            "label_counts": counts,
            "flagged": len(flagged),
            "batch_id": batch[0] if batch else None,
            "batch_size": len(batch_ids),
            "batch_labelled": sum(1 for i in batch_ids if i in flagged or (i in labels and len(given.get(i, {})) >= again.get(i, 0))),
            "second_opinions": len(again),
            "state": self.state,
            "error": self.error,
            "strategy": self.meta["strategy"],
            "classes": self.classes,
            "accuracy": accuracy,
            "skipped": self.meta.get("skipped", []) + [{"id": i, "reason": r} for i, r in self.unreadable.items()],
            "done": not self._pool(labels),
            "batches": batches,
            "stop_hint": self.stop_hint(history, counts, batches),
            "chance_warning": quality.chance_warning(history, quality.chance_level(len(self.classes), counts)),
            "annotators": self.store.annotators(),
            "overlap": self.overlap,
            "agreement": quality.agreement(given),
            "timings": self.timings,
            "model_labels": self.model_labels,
            # The strategy's registry record says what a card's score is: BatchBALD's cards show each pick's own gain.
            "score_is_gain": get_strategy(self.meta["strategy"]).running_total,
            "training": self.background is not None and self.background.busy,
            "versus_random": self.meta.get("versus_random"),
        }

    def undo(self, annotator: Optional[str] = None) -> Optional[dict]:
        """Undo this annotator's last label (a new history row; nothing is deleted; other annotators' labels untouched)."""
        done = self.store.undo_last_label(annotator)
        if done is None:
            return None
        self.train_in_background()
        item, restored, row = done
        return {"id": item, "label": restored or None, "label_id": row}

    def stop_hint(self, history: Optional[list] = None, counts: Optional[dict] = None, batches: Optional[list] = None) -> Optional[str]:
        """A suggestion to stop: the paired gain on the audit items over the last batches is
        below the estimate's precision (``quality.stop_hint``), or the predictions on the
        unlabelled items have stabilised (Cohen's kappa between consecutive models >= 0.99 on
        average over the last 3 batches). ``history``, ``counts``, ``batches``: the accuracy
        history, labels per class and batch history when the caller has read them already."""
        reasons = []
        history = self.store.accuracy_history() if history is None else history
        chance = quality.chance_level(len(self.classes), self._label_counts() if counts is None else counts)
        if not quality.above_chance(history, chance):
            return None  # a model not shown to beat chance is not done, however stable it looks
        gain = quality.stop_hint(history, window=int(self.meta.get("stop_patience", 3)), chance=chance)
        if gain:
            reasons.append(gain)
        stable = StabilizingPredictions()
        kappas = [b["kappa"] for b in (self.store.batch_history() if batches is None else batches)]
        if stable.should_stop(kappas):
            reasons.append(stable.describe(kappas))
        return ("Consider stopping: " + "; ".join(reasons) + ".") if reasons else None

    def review(self, confident: float = 0.9) -> list[dict]:
        """Items to look at again: where annotators disagree, and labelled items where the latest
        model confidently (probability >= ``confident``) predicts another class."""
        given = self.store.annotator_labels()
        labels = self.store.current_labels()
        out = [{"id": i, "reason": "annotators disagree", "labels": {a or "(owner)": l for a, (l, _) in given[i].items()}}
               for i in quality.agreement(given)["disagreements"]]
        for item, (predicted, p) in self.store.labelled_predictions().items():
            if item in labels and predicted != labels[item] and p >= confident:
                out.append({"id": item, "reason": f"the model says {predicted} ({p * 100:.0f}%)", "labels": {"current": labels[item]}})
        return out

    def _new_model(self, input_shape: tuple) -> torch.nn.Module:
        spec = self.meta["model"]
        if spec in model_names():
            return create_model(spec, input_shape, len(self.classes))
        return load_model(spec, input_shape, len(self.classes), self.meta.get("weights"))

    def _save_weights(self, model: torch.nn.Module, name: str = "model.pt") -> Path:
        """A trained model's state dict, at PROJECT/NAME (written atomically)."""
        tmp = self.dir / (name + ".tmp")
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, self.dir / name)
        return self.dir / name

    def train_final_model(self) -> Path:
        """A model trained on every label (audit items included), saved as PROJECT/final-model.pt: the one to export."""
        labels = self.store.current_labels()
        if len(set(labels.values())) < 2:
            raise ValueError(f"{self.dir}: label items of two classes at least before exporting a model")
        ids, x = self.features()
        position = self.positions()
        items = [i for i in sorted(labels) if i in position]
        model, _ = self._train(items, labels, x, position)
        return self._save_weights(model, "final-model.pt")

    # --- background work ---
    def _next_batch_safely(self) -> None:
        try:
            self._next_batch()
            self.state = "idle"
        except Exception as exc:  # reported on the page and in /api/status, never silently retried
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            logging.getLogger(__name__).exception("retraining or selection failed")
            return
        if self.compare_random:
            with self._lock:
                self._versus_due = True  # a comparison under way runs once more when it ends
                if self._versus_thread is None or not self._versus_thread.is_alive():
                    self._versus_thread = threading.Thread(target=self._update_versus_random, daemon=True)
                    self._versus_thread.start()

    def _update_versus_random(self) -> None:
        while True:
            with self._lock:
                if not self._versus_due:
                    return
                self._versus_due = False
            try:
                before = self.meta.get("versus_random") or {}
                labels = self.store.current_labels()
                ready = sum(1 for i in self.store.chosen_and_random()[1] if i in labels)
                if before.get("result") is not None and ready < before.get("random_items", 0) + quality.VERSUS_NEW_ITEMS:
                    continue  # too few new random labels to change the answer: not worth 2 x VERSUS_FOLDS trainings yet
                labelled_random, result = self.versus_random()
                shown = {"result": result, "text": quality.versus_random_text(result, labelled_random), "random_items": labelled_random}
                self.store.set_meta("versus_random", shown)
                self.meta["versus_random"] = shown
            except Exception:  # a failed comparison never stops labelling; it is logged and retried after the next batch
                logging.getLogger(__name__).exception("the comparison with random failed")

    def versus_random(self) -> tuple[int, Optional[dict]]:
        """(labelled audit items, the comparison or None while fewer than ``quality.VERSUS_MIN_ITEMS``):
        the strategy's first m labels against m random ones (the audit items), each fold of the
        audit items held out in turn (``quality`` module docstring). The comparison:
        ``quality.paired_difference``'s dict (a: the strategy's, b: random's) with ``labels``, m."""
        labels = self.store.current_labels()
        position = self.positions()
        chosen, random_items = self.store.chosen_and_random()
        chosen = [i for i in chosen if i in labels and i in position]
        random_items = [i for i in random_items if i in labels and i in position]
        if len(random_items) < quality.VERSUS_MIN_ITEMS:
            return len(random_items), None
        x = self.features()[1]
        folds = min(quality.VERSUS_FOLDS, len(random_items))
        ours, theirs, sizes = [], [], []
        for fold in range(folds):
            held = random_items[fold::folds]
            held_set = set(held)
            train_random = [i for i in random_items if i not in held_set]
            train_chosen = chosen[: len(train_random)]
            if len(train_chosen) < len(train_random) or min(len({labels[i] for i in t}) for t in (train_random, train_chosen)) < 2:
                return len(random_items), None  # too few chosen labels, or one class only: no fair comparison yet
            sizes.append(len(train_random))
            for items, outcomes in ((train_chosen, ours), (train_random, theirs)):
                # Seeded by the fold: the same labels give the same comparison (when no other training runs at once:
                # trainings seed torch's global generator, so two at once interleave it).
                model, x_of = self._train(items, labels, x, position, seed=fold)
                predicted = _predict(model, x_of(held), self.device)
                outcomes += [int(self.classes[int(c)] == labels[i]) for i, c in zip(held, predicted)]
        return len(random_items), {**quality.paired_difference(ours, theirs), "labels": int(round(float(np.mean(sizes))))}

    def _pool(self, labels: dict[int, str]) -> list[int]:
        ids, _ = self.features()
        flagged = self.store.flagged()
        return [i for i in ids if i not in labels and i not in flagged]

    def _diverse_batch(self, labels: Optional[dict[int, str]] = None) -> list[int]:
        labels = labels if labels is not None else self.store.current_labels()
        ids, x = self.features()
        position = self.positions()
        pool = self._pool(labels)
        if not pool:
            return []
        pool = self._candidates(pool)
        flat = torch.nn.functional.avg_pool2d(x, 2).flatten(1) if x.dim() == 4 and x.shape[-1] >= 8 else x.flatten(1)
        known = [position[i] for i in labels if i in position]
        labelled = flat[known] if known else None
        picks, _ = k_center_greedy(flat[[position[i] for i in pool]], min(self.meta["batch_size"], len(pool)), labelled)
        return [pool[p] for p in picks]

    def _candidates(self, pool: list[int]) -> list[int]:
        """The pool items this round scores: all of them, or ``score_candidates`` drawn uniformly
        (seeded by the round), in pool order."""
        return sorted(candidates_of(pool, self.score_candidates, self.meta.get("seed", 0), self.round))

    def _audit_items(self, labels: dict[int, str], picked: set, batch_size: int, seed: int) -> list[int]:
        """Uniformly random pool items (not picked, not labelled, not flagged) for the estimate."""
        rest = [i for i in self._pool(labels) if i not in picked]
        if not rest or batch_size == 0:
            return []
        g = torch.Generator().manual_seed(1_000_003 + seed)
        take = torch.randperm(len(rest), generator=g)[: quality.audit_count(batch_size, self.meta.get("audit_fraction", quality.AUDIT_FRACTION))].tolist()
        return [rest[i] for i in take]

    def _add_batch(self, strategy: str, picks: list[int], audit: list[int], details=None, relabel=None, **fields) -> None:
        """The batch with its audit items at random positions (the labeller cannot tell them
        apart, so they are labelled with the same care). ``relabel``: per pick, 0 or the labels a
        relabelled item needs in all."""
        g = torch.Generator().manual_seed(len(picks) * 7919 + self.round)
        entries = [(i, d, False, r) for i, d, r in zip(picks, details or [(None, None, None)] * len(picks), relabel or [0] * len(picks))]
        entries += [(i, (None, None, None), True, 0) for i in audit]
        order = torch.randperm(len(entries), generator=g).tolist() if audit else list(range(len(entries)))
        entries = [entries[k] for k in order]
        self.store.add_batch(strategy, [e[0] for e in entries], details=[e[1] for e in entries], audit=[e[2] for e in entries],
                             relabel=[e[3] for e in entries], **fields)

    def _second_opinions(self, pick_probs: np.ndarray, labelled_probs: dict[int, np.ndarray], labels: dict[int, str],
                         estimate: Optional[tuple], flagged: set) -> list[tuple[int, int]]:
        """Labelled items to ask one more label of instead of the strategy's last picks, with the
        labels each then needs in all (``batchal.labelling.relabel``'s rule). Audit items, flagged
        items and items every annotator has labelled are never asked again."""
        given = self.store.annotator_labels()
        team = len(self.store.annotators()) + 1  # the named annotators and the owner
        audit = self.store.audit_items()
        chance = quality.chance_level(len(self.classes), self._label_counts(labels))
        reliable = quality.reliability(given)
        annotator_weight = {name: weight(r["agreement"], chance) for name, r in reliable.items()}
        mean_weight = float(np.mean(list(annotator_weight.values()))) if annotator_weight else 1.0
        counts = [len(given[i]) for i in labels if i in given]
        model_weight = weight(estimate[1] if estimate else None, chance) * math.sqrt(np.mean(counts) if counts else 1.0)
        index = {c: n for n, c in enumerate(self.classes)}
        open_items = {item: [(index[label], annotator_weight.get(who or "(owner)", mean_weight)) for who, (label, _) in given[item].items()]
                      for item in labelled_probs if item in given and item in labels and item not in audit and item not in flagged
                      and len(given[item]) < team}
        scored = labelled_scores({i: labelled_probs[i] for i in open_items}, open_items, model_weight, mean_weight)
        chosen = relabel_choice(new_scores(pick_probs, model_weight, mean_weight).tolist(), scored)
        return [(item, len(given[item]) + 1) for item in chosen]

    def _train(self, train_ids: list[int], labels: dict[int, str], x: torch.Tensor, position: dict[int, int], seed: Optional[int] = None):
        """A fresh model trained on ``train_ids``: its epochs chosen by early stopping on every
        EARLY_STOP_EVERY-th of them (by id), then trained on all of them for that many epochs
        (``batchal.training.train_then_refit``: batchal run's protocol without a free validation set)."""
        stop_ids = [i for i in train_ids if (i * 2654435761) % 2**32 % EARLY_STOP_EVERY == 0] if len(train_ids) >= 10 else []
        stop_set = set(stop_ids)
        fit_ids = [i for i in train_ids if i not in stop_set]
        y_of = lambda items: torch.tensor([self.classes.index(labels[i]) for i in items], dtype=torch.long)
        x_of = lambda items: x[[position[i] for i in items]]
        model = train_then_refit(lambda: self._new_model(tuple(x.shape[1:])), x_of(fit_ids), y_of(fit_ids),
                                 x_of(stop_ids) if stop_ids else None, y_of(stop_ids) if stop_ids else None, self.train_config,
                                 seed=len(labels) if seed is None else seed, device=self.device,
                                 on_epoch=self.background.check if self.background is not None else None)
        return model, x_of

    def _training_split(self, labels: dict[int, str], position: dict[int, int]) -> tuple[list[int], list[int], list[int]]:
        """(labelled ids, audit items among them, the ids the model trains on): audit items are held
        out for the accuracy estimate unless the training labels would lack a class they hold."""
        audit_all = self.store.audit_items()
        labelled_ids = [i for i in sorted(labels) if i in position]
        audited = [i for i in labelled_ids if i in audit_all]
        train_ids = [i for i in labelled_ids if i not in audit_all]
        if len({labels[i] for i in train_ids}) < 2:  # the audit items hold a class the training labels lack
            return labelled_ids, [], labelled_ids
        return labelled_ids, audited, train_ids

    @staticmethod
    def _training_key(train_ids: list[int], labels: dict[int, str]) -> tuple:
        return tuple((i, labels[i]) for i in train_ids)

    def _train_job(self, job: tuple[list[int], dict[int, str]]):
        train_ids, labels = job
        return self._train(train_ids, labels, self.features()[1], self.positions())[0], len(train_ids)

    def close(self) -> None:
        """Stop background training (the one under way ends at its next epoch): call before exiting."""
        if self.background is not None:
            self.background.close()
        self.wait(30)
        if self._versus_thread is not None:
            self._versus_thread.join(120)

    def train_in_background(self) -> None:
        """Ask the background trainer for a model of the current labels (background projects only)."""
        if self.background is None:
            return
        labels = self.store.current_labels()
        _, _, train_ids = self._training_split(labels, self.positions())
        if len({labels[i] for i in train_ids}) >= 2:
            self.background.request(self._training_key(train_ids, labels), (train_ids, dict(labels)))

    def _model_for(self, train_ids: list[int], labels: dict[int, str], x: torch.Tensor, position: dict[int, int]):
        """(model, labels it trained on): the model of these labels, trained now; with background
        training, the one already trained for them, else the newest finished one at once."""
        key = self._training_key(train_ids, labels)
        if self.background is not None:
            ready = self.background.ready(key)
            if ready is not None:
                return ready
            newest = self.background.newest()
            if newest is not None:  # a training under way may end within the latency budget: a fresher model
                newest = self.background.wait_for_running(self.fresh_wait)
                self.background.request(key, (train_ids, dict(labels)))  # the next batch gets it
                return newest[1]
        model = self._train(train_ids, labels, x, position)[0]
        if self.background is not None:
            self.background.offer(key, (model, len(train_ids)))
        return model, len(train_ids)

    def _next_batch(self) -> None:
        labels = self.store.current_labels()
        pool = self._pool(labels)
        if not pool:
            return
        self.round += 1
        if len(set(labels.values())) < 2:
            picks = self._diverse_batch(labels)
            self._add_batch("diversity", picks, self._audit_items(labels, set(picks), len(picks), self.round))
            return
        ids, x = self.features()
        position = self.positions()
        labelled_ids, audited, train_ids = self._training_split(labels, position)
        started = time.perf_counter()
        model, trained_on = self._model_for(train_ids, labels, x, position)
        x_of = lambda items: x[[position[i] for i in items]]  # noqa: E731
        self.timings = {"train": time.perf_counter() - started}
        estimate = None
        if audited:
            with torch.no_grad():
                predicted = _predict(model, x_of(audited), self.device)
            per_item = {i: int(self.classes[int(c)] == labels[i]) for i, c in zip(audited, predicted)}
            right = sum(per_item.values())
            low, high = quality.wilson_interval(right, len(audited))
            estimate = (len(labels), right / len(audited), len(audited), low, high, per_item)
        self.state = "selecting"
        strategy = self.meta["strategy"]
        acquisition = acquire(strategy, ModelPredictions([model], x, batch_size=512, device=self.device),
                              [position[i] for i in pool], self.meta["batch_size"], labelled=[position[i] for i in labelled_ids],
                              # round_: the new batch's index (0 for the first), as the runner counts its rounds
                              seed=self.meta.get("seed", 0), round_=self.round - 1, mc_samples=self.meta["mc_samples"],
                              subsample=self.score_candidates, device=self.device)
        selection = acquisition.selection
        candidates = [ids[p] for p in acquisition.candidates]  # input positions -> item ids, for every scored item
        pool_x = x_of(candidates)
        self.timings.update(acquisition.seconds)
        # Suggestions: the model's mean prediction for every scored item (MC average where the
        # strategy sampled, the dropout-off prediction otherwise), and for the labelled items
        # (what the review view compares their labels with).
        lp = acquisition.inputs.get("log_probs_N_K_C")
        if lp is None:
            lp = predict_log_probs(model, pool_x, self.meta["mc_samples"], seed=self.round, device=self.device)
        probs = predictive_probs(lp).cpu()
        best_p, best_c = probs.max(1)
        predictions = [(item, self.classes[int(c)], float(p)) for item, c, p in zip(candidates, best_c, best_p)]
        if labelled_ids:
            lab_probs = predictive_probs(predict_log_probs(model, x_of(labelled_ids), 1, seed=0, device=self.device)).cpu()
            lab_p, lab_c = lab_probs.max(1)
            predictions += [(item, self.classes[int(c)], float(p)) for item, c, p in zip(labelled_ids, lab_c, lab_p)]
        scores = selection.gains.tolist()  # each pick's own contribution (a running total's differences)
        # Items labelled or flagged while the model trained never enter the new batch.
        now_taken = set(self.store.current_labels()) | set(self.store.flagged())
        kept = [(n, p) for n, p in enumerate(selection.indices.tolist()) if candidates[p] not in now_taken]
        picks = [candidates[p] for _, p in kept]
        details = [(self.classes[int(best_c[p])], float(best_p[p]), float(scores[n])) for n, p in kept]
        relabel_to = [0] * len(picks)
        if self.relabel and labelled_ids and len(self.store.annotators()) >= 2:
            # The labelled items' mean prediction over K dropout masks, as the picks' (one mask is too noisy a score).
            mean_probs = predictive_probs(predict_log_probs(model, x_of(labelled_ids), self.meta["mc_samples"], seed=self.round,
                                                            device=self.device)).cpu().numpy()
            labelled_probs = dict(zip(labelled_ids, mean_probs))
            again = self._second_opinions(probs[[p for _, p in kept]].numpy(), labelled_probs, labels, estimate, set(self.store.flagged()))
            if again:  # ActiveLab's answer: these labelled items take the slots of the strategy's last picks
                keep = len(picks) - len(again)
                picks = picks[:keep] + [item for item, _ in again]
                details = details[:keep] + [(self.classes[int(labelled_probs[i].argmax())], float(labelled_probs[i].max()), None)
                                            for i, _ in again]
                relabel_to = relabel_to[:keep] + [target for _, target in again]
        information = selection.total
        # Stabilizing predictions: agreement with the previous model on the items both predicted.
        before = self.store.predictions()
        common = [(before[item][0], label) for item, label, _ in predictions if item in before and item not in labels]
        kappa = cohen_kappa(*zip(*common)) if len(common) >= 10 else None
        self._save_weights(model)
        taken_now = {**labels, **{i: "" for i in now_taken}}
        audit = self._audit_items(taken_now, set(picks), len(picks), self.round)
        # The accuracy row, the batch and the predictions commit together: a crash in between
        # leaves none of them, so a retry never writes a second accuracy row for the same labels.
        self._add_batch(strategy, picks, audit, details=details, accuracy=estimate, information=information,
                        predictions=predictions, kappa=kappa, relabel=relabel_to)
        self.model_labels = trained_on
        self.train_in_background()  # labels given meanwhile, or the labels a stale model lacked


def _predict(model: torch.nn.Module, x: torch.Tensor, device) -> torch.Tensor:
    """Classes predicted with dropout off."""
    model.eval()
    out = []
    for start in range(0, len(x), 1024):
        out.append(model(x[start : start + 1024].to(device)).argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
