"""Training as in BatchBALD's protocol, every knob configurable, and MC evaluation.

Each round trains a fresh model: Adam, mini-batches of ``batch_size``, an "epoch" of a fixed
``epoch_samples`` examples drawn with replacement from the labelled set (so epochs cost the same
whatever the labelled-set size), at most ``max_epochs``, early stopping on validation accuracy
(dropout off) with ``patience``, best weights restored.

``sampler`` picks how an epoch is drawn: ``replacement`` (i.i.d. draws, the default), ``paper``
(the BatchBALD code's ``randperm(epoch_samples) % n``: every labelled point seen almost equally
often) or ``pass`` (one shuffled pass over the labelled set, BADGE's code).

BADGE's protocol (``until_accuracy=0.99``): no validation and no early stopping; train until the
epoch's running training accuracy reaches ``until_accuracy``; every gradient element clamped to
``[-grad_clamp, grad_clamp]``; re-initialised when, at a multiple of ``reinit_every`` epochs, the
accuracy is still below ``reinit_below`` (REFERENCE.md 4b). The authors' code has no epoch cap;
``max_epochs`` is kept as a stated safety cap, and the history says whether it was hit.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from batchal.bayesian.predict import predict_log_probs
from batchal.devices import resolve_device


@dataclass
class TrainConfig:
    lr: float = 1e-3
    batch_size: int = 64
    epoch_samples: int = 5056
    max_epochs: int = 30
    patience: int = 3
    weight_decay: float = 0.0
    sampler: str = "replacement"
    until_accuracy: Optional[float] = None  # BADGE: train until the running training accuracy reaches this
    grad_clamp: Optional[float] = None  # BADGE: clamp every gradient element to [-v, v]
    reinit_every: int = 1000
    reinit_below: float = 0.2

    def __post_init__(self):
        if self.sampler not in ("replacement", "paper", "pass"):
            raise ValueError(f"train.sampler must be replacement, paper or pass, got {self.sampler!r}")
        for name, low, high in (("until_accuracy", 0.0, 1.0), ("grad_clamp", 0.0, math.inf)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high):
                raise ValueError(f"train.{name} must be None or in ({low}, {high}], got {value!r}")
        checks = {
            "lr": self.lr > 0, "batch_size": self.batch_size >= 1, "epoch_samples": self.epoch_samples >= 1,
            "max_epochs": self.max_epochs >= 1, "patience": self.patience >= 1, "weight_decay": self.weight_decay >= 0,
            "reinit_every": self.reinit_every >= 1, "reinit_below": 0 <= self.reinit_below <= 1,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok:
                raise ValueError(f"train.{name} has an invalid value {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024, device=None) -> float:
    """Deterministic accuracy (eval mode: dropout off), on ``device`` (default: the model's)."""
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size].to(device))
            correct += int((logits.argmax(1).cpu() == y[start : start + batch_size].cpu()).sum())
    model.train(was_training)
    return correct / max(1, len(x))


def train_model(
    model: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: Optional[torch.Tensor],
    val_y: Optional[torch.Tensor],
    config: TrainConfig,
    *,
    generator: Optional[torch.Generator] = None,
    device=None,
    on_epoch: Optional[Callable[[dict], None]] = None,
) -> list[dict]:
    """Train in place; returns the per-epoch history (epoch, train_loss, val_accuracy, best)."""
    if len(train_x) == 0:
        raise ValueError("cannot train on an empty labelled set; use an initial size >= 1")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    device = resolve_device(device)
    model.to(device)
    if config.until_accuracy is not None:
        return _train_until_accuracy(model, train_x, train_y, config, generator, device, on_epoch)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    has_val = val_x is not None and len(val_x) > 0
    best_acc, best_state, stale = -1.0, None, 0
    history = []
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        order = epoch_order(config, len(train_x), generator)
        total_loss = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(train_x[idx].to(device)), train_y[idx].to(device))
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(idx)
        record = {"epoch": epoch, "train_loss": total_loss / len(order)}
        if has_val:
            acc = accuracy(model, val_x, val_y, device=device)
            record["val_accuracy"] = acc
            if acc > best_acc:
                best_acc, stale = acc, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        record["best"] = stale == 0
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if has_val and stale >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def train_then_refit(new_model: Callable[[], nn.Module], fit_x: torch.Tensor, fit_y: torch.Tensor, stop_x: Optional[torch.Tensor],
                     stop_y: Optional[torch.Tensor], config: TrainConfig, seed: int, device=None,
                     on_epoch: Optional[Callable[[dict], None]] = None) -> nn.Module:
    """Early stopping when every label is precious (the labelling service: no free validation set).
    The number of epochs is chosen as ``train_model`` chooses it, on ``stop_x`` held out; then a
    fresh model is trained on all the labels (fit and stop) for that many epochs. Without a stop
    set, one model trained on ``fit`` (``config.max_epochs``, as ``train_model`` without validation)."""
    torch.manual_seed(seed)
    model = new_model()
    history = train_model(model, fit_x, fit_y, stop_x, stop_y, config, generator=torch.Generator().manual_seed(seed), device=device,
                          on_epoch=on_epoch)
    if stop_x is None or len(stop_x) == 0:
        return model
    best = max(record["epoch"] for record in history if record["best"])
    torch.manual_seed(seed)
    model = new_model()
    train_model(model, torch.cat([fit_x, stop_x]), torch.cat([fit_y, stop_y]), None, None, dataclasses.replace(config, max_epochs=best),
                generator=torch.Generator().manual_seed(seed), device=device, on_epoch=on_epoch)
    return model


def epoch_order(config: TrainConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """The labelled-set positions one epoch visits, in order (see ``sampler``)."""
    if config.sampler == "pass":
        return torch.randperm(n, generator=generator)
    if config.sampler == "paper":
        return torch.randperm(config.epoch_samples, generator=generator) % n
    return torch.randint(n, (config.epoch_samples,), generator=generator)


def _reinitialise(model: nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


def _train_until_accuracy(model, train_x, train_y, config: TrainConfig, generator, device, on_epoch) -> list[dict]:
    """BADGE's rule: epochs of one shuffled pass until the running training accuracy (the
    fraction of the epoch's examples classified right as they were trained on) reaches
    ``until_accuracy``; see the module docstring."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict] = []
    reinitialised = 0
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        order = epoch_order(config, len(train_x), generator)
        total_loss, correct = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            xb, yb = train_x[idx].to(device), train_y[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            if config.grad_clamp is not None:
                for p in model.parameters():
                    if p.grad is not None:
                        p.grad.clamp_(-config.grad_clamp, config.grad_clamp)
            optimizer.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        train_accuracy = correct / len(order)
        record = {"epoch": epoch, "train_loss": total_loss / len(order), "train_accuracy": train_accuracy,
                  "reinitialised": reinitialised, "capped": False}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if train_accuracy >= config.until_accuracy:
            break
        if epoch % config.reinit_every == 0 and train_accuracy < config.reinit_below:
            _reinitialise(model)
            optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            reinitialised += 1
    else:
        history[-1]["capped"] = True
    model.eval()
    return history


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, batch_size: int = 512, seed=0, device=None) -> dict:
    """Test accuracy and NLL of the MC-averaged prediction log mean_k p(y | x, w_k)."""
    return metrics_of(predict_log_probs(model, x, k, batch_size, seed=seed, device=device), y)


def metrics_of(log_probs_N_K_C: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy and NLL of the averaged prediction log mean_k p(y | x, w_k) (MC samples or ensemble
    members), with each class's recall (None for a class absent from ``y``) and the macro-F1 over
    the classes present: what rare classes get, which accuracy hides."""
    mean_log_probs_N_C = torch.logsumexp(log_probs_N_K_C.double(), dim=1) - math.log(log_probs_N_K_C.shape[1])
    nll = float(-mean_log_probs_N_C[torch.arange(len(y)), y].mean())
    predicted = mean_log_probs_N_C.argmax(1)
    acc = float((predicted == y).double().mean())
    recall, f1 = [], []
    for c in range(mean_log_probs_N_C.shape[1]):
        true, chosen = y == c, predicted == c
        hits = int((true & chosen).sum())
        if int(true.sum()) == 0:
            recall.append(None)
            continue
        recall.append(hits / int(true.sum()))
        precision = hits / int(chosen.sum()) if int(chosen.sum()) else 0.0
        f1.append(2 * precision * recall[-1] / (precision + recall[-1]) if precision + recall[-1] > 0 else 0.0)
    return {"accuracy": acc, "nll": nll, "recall": recall, "macro_f1": float(sum(f1) / len(f1)) if f1 else math.nan}
