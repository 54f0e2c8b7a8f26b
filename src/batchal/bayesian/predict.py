"""Pool predictions: MC-dropout log-probabilities (N x K x C) and penultimate features (N x D).

Both run the model in eval mode (BatchNorm statistics are never updated while scoring; the
caller's train/eval flags are restored afterwards), without gradients, chunk by chunk.

Inputs: a tensor [N, ...], a torch Dataset (items ``x``, ``(x, y, ...)`` or dicts), or a dict of
tensors [N, ...] (columns, as a tokenizer returns them). A dict batch is passed as keyword
arguments (``model(**batch)``, the Hugging Face convention), and the model may return logits,
a tuple (logits first) or an object with ``.logits``. For dict batches every tensor is repeated
K times before the model (``expand_input``), so attention masks and the like keep their rows.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from batchal.checks import check_positive_int
from batchal.bayesian.dropout import mc_dropout
from batchal.devices import resolve_device

Data = Union[torch.Tensor, Dataset, dict, DataLoader]


def _rows(x) -> int:
    if isinstance(x, dict):
        first = next((v for v in x.values() if isinstance(v, torch.Tensor) and v.dim()), None)
        if first is None:
            raise ValueError(f"a dict batch needs at least one tensor with a batch dimension; got keys {', '.join(map(str, x))}")
        return first.shape[0]
    return x.shape[0]


def _to(x, device):
    if isinstance(x, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in x.items()}
    return x.to(device)


def _call(model: nn.Module, x) -> torch.Tensor:
    """The model's logits for a batch: ``model(**x)`` for a dict, ``model(x)`` otherwise."""
    return logits_of(model(**x) if isinstance(x, dict) else model(x))


def logits_of(out) -> torch.Tensor:
    """A model's output as logits: an object with ``.logits`` (Hugging Face) or a tuple (logits
    first) is unpacked; anything else that is not a tensor is refused in one line."""
    if hasattr(out, "logits"):
        out = out.logits
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the model returned {type(out).__name__}; expected logits (a tensor), a tuple or an object with .logits")
    return out


def _is_dict_data(data) -> bool:
    if isinstance(data, dict):
        return True
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, Dataset) and len(data):
        return isinstance(data[0], dict)
    return False


def batches(data: Data, batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(data, dict):
        n = num_items(data)
        if n == 0:
            raise ValueError("data is a dict of empty tensors; nothing to predict")
        for start in range(0, n, batch_size):
            yield {k: v[start : start + batch_size] if isinstance(v, torch.Tensor) and v.dim() else v for k, v in data.items()}
        return
    if isinstance(data, torch.Tensor):
        if data.dim() < 1 or data.shape[0] == 0:
            raise ValueError(f"data must be a non-empty tensor of inputs [N, ...], got shape {tuple(data.shape)}")
        for start in range(0, data.shape[0], batch_size):
            yield data[start : start + batch_size]
        return
    if isinstance(data, (Dataset, DataLoader)):
        # A DataLoader is used as it is (its collator pads, its batch size counts): it must not shuffle.
        loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, shuffle=False)
        if isinstance(loader.sampler, torch.utils.data.RandomSampler):
            raise ValueError("the DataLoader shuffles: predictions would not follow the pool's order; pass shuffle=False")
        for batch in loader:
            yield batch[0] if isinstance(batch, (tuple, list)) else batch
        return
    raise ValueError(f"data must be a torch.Tensor of inputs, a dict of tensors, a torch Dataset or a DataLoader, got {type(data).__name__}")


def num_items(data: Data) -> int:
    if isinstance(data, dict):
        return _rows(data)
    if isinstance(data, DataLoader):
        return len(data.dataset)
    return data.shape[0] if isinstance(data, torch.Tensor) else len(data)


@contextlib.contextmanager
def _channels_last(model: nn.Module, enabled: Optional[bool], device: torch.device):
    """Run 2-d convolutions in channels-last layout (about 1.6x faster for the paper's CNN on the
    CPU), restoring the parameters' layout afterwards. None: on for CPU models with Conv2d."""
    if enabled is None:
        enabled = device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if not enabled:
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _first(x):
    return {k: v[:1] if isinstance(v, torch.Tensor) and v.dim() else v for k, v in x.items()} if isinstance(x, dict) else x[:1]


def _check_input_fits(model: nn.Module, data, device) -> None:
    """One input through the model, dropout off, before any MC sampling: a model that cannot take
    the data's input shape is reported as that (not as a problem of the K-fold expansion)."""
    first = data
    shape = {k: tuple(v.shape) for k, v in first.items() if isinstance(v, torch.Tensor)} if isinstance(first, dict) else tuple(first.shape)
    with eval_mode(model):
        try:
            _call(model, _to(first, device))
        except Exception as exc:  # the user's model: any failure here is about the input it was given
            raise ValueError(f"the model fails on one input of shape {shape} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); check that the data's input shape is what the model expects") from None


def device_of(model: nn.Module, device) -> torch.device:
    if device is not None:
        return resolve_device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def predict_log_probs(
    model: nn.Module,
    data: Data,
    k: int,
    batch_size: int = 256,
    *,
    seed=None,
    device=None,
    expand_input: bool = False,
    channels_last: Optional[bool] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> torch.Tensor:
    """log p(y | x_n, w_k) for every input and each of K consistent dropout masks.

    The model returns logits (or log-probabilities) of shape [rows, C]; the K masks are drawn
    once (from ``seed``) and shared by every chunk of ``batch_size`` inputs. Layers before the
    first dropout layer run once per input. ``channels_last`` runs 2-d convolutions in that
    layout (default: on the CPU when the model has any; parameters restored afterwards).
    Returns a float32 CPU tensor N x K x C (N x K x C x H x W for a model with dense outputs
    [rows, C, H, W], segmentation). ``progress(done, total)`` is called after every chunk.
    """
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    device = device_of(model, device)
    total = num_items(data)
    out: Optional[torch.Tensor] = None
    done = 0
    failure = None
    expand_input = expand_input or _is_dict_data(data)  # masks and positions must keep their rows
    with eval_mode(model), _channels_last(model, channels_last, device), mc_dropout(model, k, seed=seed, expand_input=expand_input):
        for x in batches(data, batch_size):
            B = _rows(x)
            try:
                logits = _call(model, _to(x, device))
            except RuntimeError as exc:
                failure = (exc, _first(x))
                break
            if logits.dim() < 2 or logits.shape[0] != B * k:
                raise RuntimeError(
                    f"inside mc_dropout the model returned shape {tuple(logits.shape)}; expected [{B * k}, C] (B*K rows)"
                    + ("" if expand_input else "; if some path to the output skips dropout, pass expand_input=True")
                )
            # Dense outputs [B*K, C, H, W, ...] (segmentation) keep their spatial sizes: N x K x C x H x W.
            log_probs_b_K_C = F.log_softmax(logits.float(), dim=1).view(B, k, *logits.shape[1:]).cpu()
            if out is None:
                out = torch.empty(total, k, *log_probs_b_K_C.shape[2:], dtype=torch.float32)
            out[done : done + B] = log_probs_b_K_C
            done += B
            if progress is not None:
                progress(done, total)
    if failure is not None:
        exc, one = failure
        _check_input_fits(model, one, device)  # a wrong input shape is named as such
        if expand_input or k == 1:
            raise exc
        # Most often a path to the output that skips dropout meets the expanded B*K rows.
        raise RuntimeError(
            f"{exc}\n(the model failed inside mc_dropout(k={k}), where the first dropout layer expands B inputs to "
            "B*K rows; if some path to the output skips dropout, pass expand_input=True)"
        ) from exc
    return out


class FeatureLayerError(RuntimeError):
    """The model's feature layer did not run exactly once in a forward pass."""


def last_linear_layer(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` in the model's module order: its input is the penultimate features."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear layer; pass layer= (the module whose input is the penultimate features)")
    return linears[-1]


def predict_embeddings(
    model: nn.Module,
    data: Data,
    batch_size: int = 256,
    *,
    layer: Optional[nn.Module] = None,
    device=None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (dropout off) penultimate features and log-probabilities in one pass.

    ``layer`` is the module whose *input* is the feature vector (default: the last nn.Linear).
    Returns ``(embeddings_N_D, log_probs_N_1_C)``, float32 on the CPU, ready for ``badge``,
    ``coreset`` and ``kdpp``.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    layer = layer if layer is not None else last_linear_layer(model)
    device = device_of(model, device)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda module, args: captured.append(args[0].flatten(1).float().cpu()))
    features, log_probs = [], []
    total, done = num_items(data), 0
    try:
        with eval_mode(model):
            for x in batches(data, batch_size):
                captured.clear()
                logits = _call(model, _to(x, device))
                if len(captured) != 1:
                    raise FeatureLayerError(f"the feature layer ran {len(captured)} times in one forward pass; expected once (pass layer=)")
                features.append(captured[0])
                log_probs.append(F.log_softmax(logits.float(), dim=1).cpu()[:, None, :])
                done += _rows(x)
                if progress is not None:
                    progress(done, total)
    finally:
        handle.remove()
    return torch.cat(features), torch.cat(log_probs)
