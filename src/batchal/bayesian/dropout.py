"""Consistent MC dropout: K dropout masks drawn once per acquisition, shared by every pool chunk.

Each mask set is one fixed model w_k, so the K predictions of every pool point come from the
same K models and joint entropies across points (BatchBALD) are meaningful. Ordinary dropout
redraws masks per example and per call: the K "samples" of two points would then come from
unrelated models.

- Outside ``mc_dropout``: ordinary per-example dropout in training mode, identity in eval mode.
- Inside ``with mc_dropout(model, k, seed=...)``: every consistent dropout layer draws its mask
  of shape [K, features] (channel-wise: [K, channels, 1, ...]) on first use and reuses it
  until the context ends, whatever the chunk. The first dropout layer reached in a forward
  pass turns its batch of B inputs into B*K (one copy per mask), so the layers before it run
  once per input; the model's output then has B*K rows, input-major.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn

from batchal.checks import check_positive_int, check_random_state


@dataclass
class _MCState:
    k: int
    generator: torch.Generator
    expand_input: bool
    expanded: bool = False
    rows: int = 0  # inputs in the current forward pass, before expansion


class _ConsistentDropout(nn.Module):
    channelwise = False

    def __init__(self, p: float = 0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)
        self._mc: Optional[_MCState] = None
        self._mask: Optional[torch.Tensor] = None

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def _mask_shape(self, feature_shape: torch.Size) -> tuple[int, ...]:
        if self.channelwise:
            if len(feature_shape) < 2:
                raise ValueError(f"{type(self).__name__} expects inputs [batch, channels, ...], got features {tuple(feature_shape)}")
            return (feature_shape[0],) + (1,) * (len(feature_shape) - 1)
        return tuple(feature_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._mc is None:
            if not self.training or self.p == 0:
                return x
            # Ordinary dropout: a fresh mask per example (per channel when channel-wise).
            shape = (x.shape[0],) + self._mask_shape(x.shape[1:])
            keep = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
            return x * keep / (1 - self.p)
        state = self._mc
        K = state.k
        if not state.expanded:
            x = x.unsqueeze(1).expand(x.shape[0], K, *x.shape[1:])
            state.expanded = True
        else:
            if x.shape[0] % K or (K > 1 and x.shape[0] == state.rows):
                raise RuntimeError(
                    f"a batch of {x.shape[0]} rows reached {type(self).__name__} inside mc_dropout(k={K}) after an earlier "
                    f"dropout layer had already expanded the {state.rows} inputs to {state.rows * K} rows: some path to this "
                    "layer skips the first dropout layer (parallel branches?); pass expand_input=True to repeat the input "
                    "K times before the model instead"
                )
            x = x.view(-1, K, *x.shape[1:])
        mask = self.mask(x.shape[2:]).to(device=x.device, dtype=x.dtype)
        return (x * mask).reshape(-1, *x.shape[2:])

    def mask(self, feature_shape: torch.Size) -> torch.Tensor:
        """The K masks of this acquisition (scaled by 1 / (1 - p)), drawn on first use."""
        if self._mc is None:
            raise RuntimeError("masks exist only inside mc_dropout(...)")
        shape = (self._mc.k,) + self._mask_shape(torch.Size(feature_shape))
        if self._mask is None:
            keep = torch.rand(shape, generator=self._mc.generator) >= self.p
            self._mask = keep.float() / (1 - self.p)
        elif self._mask.shape != shape:
            if len(shape) != self._mask.dim():
                raise RuntimeError(f"{type(self).__name__} got features {tuple(feature_shape)} but its masks were drawn for {tuple(self._mask.shape[1:])}")
            # Sequences padded to different lengths per chunk (dynamic padding): the masks grow to
            # the longest seen, the new positions drawn afresh and the old ones kept, and each
            # chunk takes its leading part, so a token keeps its K masks whatever the padding.
            grown = tuple(max(a, b) for a, b in zip(self._mask.shape, shape))
            if grown != tuple(self._mask.shape):
                keep = (torch.rand(grown, generator=self._mc.generator) >= self.p).float() / (1 - self.p)
                keep[tuple(slice(0, n) for n in self._mask.shape)] = self._mask
                self._mask = keep
            return self._mask[tuple(slice(0, n) for n in shape)]
        return self._mask


class ConsistentMCDropout(_ConsistentDropout):
    """Element-wise dropout whose K masks (shape [K, features]) are fixed for a whole acquisition."""


class ConsistentMCDropout2d(_ConsistentDropout):
    """Channel-wise dropout (like ``nn.Dropout2d``, any number of spatial dimensions) whose K masks
    (shape [K, channels, 1, ...]) are fixed for a whole acquisition."""

    channelwise = True


def consistent_dropout_layers(model: nn.Module) -> list[_ConsistentDropout]:
    return [m for m in model.modules() if isinstance(m, _ConsistentDropout)]


class DropoutWarning(UserWarning):
    """A model whose MC-dropout samples would all be equal (no dropout, or dropout with p = 0)."""


def convert_dropout(model: nn.Module, warn: bool = True) -> nn.Module:
    """Replace, in place, every ``nn.Dropout`` by ``ConsistentMCDropout`` and every
    ``nn.Dropout1d/2d/3d`` by ``ConsistentMCDropout2d`` (same p). Returns the model.

    Warns (``DropoutWarning``) when the model then has no dropout layer to sample (its dropout,
    if any, is functional ``F.dropout``, which cannot be converted) or only layers with p = 0
    (common in pretrained and Hugging Face models): every MC sample would be the same, and
    BALD and BatchBALD would score nothing but rounding noise."""
    _convert(model)
    layers = consistent_dropout_layers(model)
    if not warn:
        return model
    if not layers:
        import warnings

        warnings.warn(f"convert_dropout found no nn.Dropout module in {type(model).__name__}: its K MC-dropout samples would be "
                      "identical (functional F.dropout cannot be converted; add nn.Dropout modules, or use "
                      "posterior='ensemble', or a strategy that needs no samples such as badge or margin)", DropoutWarning, stacklevel=2)
    elif all(layer.p == 0 for layer in layers):
        import warnings

        warnings.warn(f"every dropout layer of {type(model).__name__} has p = 0 (usual in pretrained models): its K MC-dropout "
                      "samples would be identical; set p > 0 on them (e.g. 0.1) before scoring", DropoutWarning, stacklevel=2)
    return model


def _convert(model: nn.Module) -> None:
    for name, child in list(model.named_children()):
        if isinstance(child, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):
            setattr(model, name, ConsistentMCDropout2d(child.p))
        elif isinstance(child, nn.Dropout):
            setattr(model, name, ConsistentMCDropout(child.p))
        else:
            _convert(child)


@contextlib.contextmanager
def mc_dropout(model: nn.Module, k: int, seed=None, expand_input: bool = False) -> Iterator[nn.Module]:
    """Within the context, ``model(x)`` for x of B inputs returns B*K rows (input-major): the
    predictions of the K fixed dropout masks drawn for this context.

    seed: None, an int or a ``torch.Generator`` for the masks.
    expand_input: repeat the input K times before the model instead of expanding at the first
    dropout layer; slower, but right for models where some path to the output skips dropout.
    """
    k = check_positive_int(k, "k")
    layers = consistent_dropout_layers(model)
    if not layers and k == 1:  # one deterministic prediction (BADGE's protocol): nothing to sample
        yield model
        return
    if not layers:
        raise ValueError(
            "model has no ConsistentMCDropout / ConsistentMCDropout2d layers, so its K predictions would be "
            "identical; call batchal.convert_dropout(model) first (or build it with those layers)"
        )
    if any(layer._mc is not None for layer in layers):
        raise RuntimeError("mc_dropout contexts cannot be nested on the same model")
    state = _MCState(k=k, generator=check_random_state(seed), expand_input=expand_input)

    def begin_forward(module, args, kwargs):
        state.expanded = False
        tensors = [a for a in args if isinstance(a, torch.Tensor) and a.dim()] + [
            v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.dim()]  # model(x) or model(**batch)
        state.rows = tensors[0].shape[0] if tensors else 0
        if state.expand_input:
            state.expanded = True
            rep = lambda v: v.repeat_interleave(k, dim=0) if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == state.rows else v
            return tuple(rep(a) for a in args), {name: rep(v) for name, v in kwargs.items()}
        return None

    handle = model.register_forward_pre_hook(begin_forward, with_kwargs=True)
    for layer in layers:
        layer._mc, layer._mask = state, None
    try:
        yield model
    finally:
        handle.remove()
        for layer in layers:
            layer._mc, layer._mask = None, None
