"""Models with consistent MC dropout, and a registry so users can plug in their own.

``create_model(name, input_shape, num_classes)`` builds a fresh model. Built in:
- ``mnist_cnn``: BatchBALD's MNIST model: conv 1->32 (5x5), dropout2d 0.5, maxpool 2, relu;
  conv 32->64 (5x5), dropout2d, maxpool 2, relu; linear 1024->128, dropout 0.5, relu; linear 128->C.
- ``emnist_cnn``: BatchBALD's EMNIST model: conv 32, 64, 128 (3x3), each followed by dropout2d,
  max-pools after the first and third; linear 2048->512, dropout, relu; linear 512->C.
- ``mlp``: flatten, two hidden layers of 256 with dropout 0.5 (tabular data and 8x8 digits).

Layer order: a channel-wise dropout mask m >= 0 commutes with max-pooling and ReLU
(max(m x) = m max(x), relu(m x) = m relu(x)), so "conv, dropout2d, maxpool, relu" and "conv,
maxpool, relu, dropout2d" compute the same function, in training and under MC dropout, with
the same random masks. The CNNs use the second order: the layers before the first dropout
(run once per input, not K times) then include the first pooling, and each dropout acts on
maps 4x smaller, which makes MC scoring about twice as fast (tested equal to the paper's order).

A user model is any ``nn.Module`` returning logits; register a factory
``f(input_shape, num_classes) -> nn.Module`` with ``register_model``. Its ``nn.Dropout`` layers
are converted to consistent MC dropout by ``create_model``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from batchal.bayesian.dropout import ConsistentMCDropout, ConsistentMCDropout2d, convert_dropout

ModelFactory = Callable[[tuple[int, ...], int], nn.Module]


def _conv_out(size: int, kernel: int) -> int:
    return size - kernel + 1


def mnist_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"mnist_cnn needs image inputs [channels, height, width], got input shape {input_shape}")
    channels, height, width = input_shape
    h = _conv_out(_conv_out(height, 5) // 2, 5) // 2
    w = _conv_out(_conv_out(width, 5) // 2, 5) // 2
    if h < 1 or w < 1:
        raise ValueError(f"mnist_cnn needs images of at least 12x12 pixels, got {height}x{width}; use the 'mlp' model")
    return nn.Sequential(
        nn.Conv2d(channels, 32, 5), nn.MaxPool2d(2), nn.ReLU(), ConsistentMCDropout2d(0.5),
        nn.Conv2d(32, 64, 5), nn.MaxPool2d(2), nn.ReLU(), ConsistentMCDropout2d(0.5),
        nn.Flatten(), nn.Linear(64 * h * w, 128), ConsistentMCDropout(0.5), nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def emnist_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"emnist_cnn needs image inputs [channels, height, width], got input shape {input_shape}")
    channels, height, width = input_shape
    side = lambda s: _conv_out(_conv_out(_conv_out(s, 3) // 2, 3), 3) // 2
    h, w = side(height), side(width)
    if h < 1 or w < 1:
        raise ValueError(f"emnist_cnn needs images of at least 14x14 pixels, got {height}x{width}")
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3), nn.MaxPool2d(2), nn.ReLU(), ConsistentMCDropout2d(0.5),
        nn.Conv2d(32, 64, 3), nn.ReLU(), ConsistentMCDropout2d(0.5),
        nn.Conv2d(64, 128, 3), nn.MaxPool2d(2), nn.ReLU(), ConsistentMCDropout2d(0.5),
        nn.Flatten(), nn.Linear(128 * h * w, 512), ConsistentMCDropout(0.5), nn.ReLU(),
        nn.Linear(512, num_classes),
    )


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 256) -> nn.Module:
    features = math.prod(input_shape)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(features, hidden), ConsistentMCDropout(0.5), nn.ReLU(),
        nn.Linear(hidden, hidden), ConsistentMCDropout(0.5), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


from batchal.models_badge import badge_mlp, resnet18_narrow, vgg16  # noqa: E402

_MODELS: dict[str, ModelFactory] = {"mnist_cnn": mnist_cnn, "emnist_cnn": emnist_cnn, "mlp": mlp,
                                    "badge_mlp": badge_mlp, "resnet18_narrow": resnet18_narrow, "vgg16": vgg16}


def register_model(name: str, factory: ModelFactory) -> None:
    """Register ``factory(input_shape, num_classes) -> nn.Module`` under ``name``."""
    if name in _MODELS:
        raise ValueError(f"a model named {name!r} is already registered")
    _MODELS[name] = factory


def model_names() -> list[str]:
    return list(_MODELS)


def create_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if name not in _MODELS:
        raise ValueError(f"model must be one of {', '.join(_MODELS)}; got {name!r}")
    # Models without dropout (BADGE's) are deliberate: they are scored with K = 1.
    return convert_dropout(_MODELS[name](tuple(input_shape), num_classes), warn=False)


def default_model(dataset_name: str, input_shape: tuple[int, ...]) -> str:
    """The paper's model for a data set: the EMNIST CNN for EMNIST, the MNIST CNN for 28x28 images, else the MLP."""
    if "emnist" in dataset_name:
        return "emnist_cnn"
    if len(input_shape) == 3 and min(input_shape[1:]) >= 12:
        return "mnist_cnn"
    return "mlp"


def load_model(spec: str, input_shape: tuple[int, ...], num_classes: Optional[int] = None, weights=None) -> nn.Module:
    """A model from a registered name (``mnist_cnn``, ...) or a user's ``MODULE:FACTORY``
    (``package.module:make_model`` or ``path/to/file.py:make_model``, called with no arguments or
    with ``(input_shape, num_classes)``, whichever its signature asks for),
    its dropout made consistent, with the state dict in ``weights`` (a ``.pt`` file) loaded.
    Registered names need ``num_classes``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"--model must be a registered model ({', '.join(_MODELS)}) or MODULE:FACTORY, got {spec!r}")
    if spec in _MODELS:
        if num_classes is None:
            raise ValueError(f"--model {spec} needs the number of classes (--num-classes)")
        model = create_model(spec, input_shape, num_classes)
    elif ":" in spec:
        module_name, _, factory_name = spec.rpartition(":")
        module = _import_module(module_name, spec)
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            raise ValueError(f"--model {spec}: {module_name} has no callable {factory_name!r}")
        model = _call_factory(factory, spec, input_shape, num_classes)
        if not isinstance(model, nn.Module):
            raise ValueError(f"--model {spec}: {factory_name}() returned {type(model).__name__}, expected a torch.nn.Module")
        convert_dropout(model)
    else:
        raise ValueError(f"--model must be a registered model ({', '.join(_MODELS)}) or MODULE:FACTORY, got {spec!r}")
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ValueError(f"--weights {weights}: no such file") from None
        except Exception as exc:  # torch raises several types for a damaged or foreign file
            raise ValueError(f"--weights {weights}: not a PyTorch state dict file ({type(exc).__name__}: {exc})") from None
        if not isinstance(state, dict):
            raise ValueError(f"--weights {weights}: expected a state dict (torch.save(model.state_dict(), ...)), got {type(state).__name__}")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"--weights {weights} do not fit --model {spec}: {exc}") from None
    return model.eval()


def _call_factory(factory, spec: str, input_shape, num_classes):
    """``factory()`` or ``factory(input_shape, num_classes)``, whichever its signature takes; any
    other signature, or a failure inside it, is one line naming the spec."""
    import inspect

    try:
        params = [p for p in inspect.signature(factory).parameters.values()
                  if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    if len(params) == 2:
        args = (tuple(input_shape), num_classes)
    elif not params:
        args = ()
    else:
        raise ValueError(f"--model {spec}: the factory must take no arguments or (input_shape, num_classes); "
                         f"it requires {', '.join(p.name for p in params)}")
    try:
        return factory(*args)
    except Exception as exc:  # the user's code: reported in one line, with what it was called with
        raise ValueError(f"--model {spec}: calling it with {args or 'no arguments'} failed ({type(exc).__name__}: {exc})") from None


def _import_module(name: str, spec: str):
    import importlib
    import importlib.util
    from pathlib import Path

    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"--model {spec}: no such file {path}")
        module_spec = importlib.util.spec_from_file_location(f"batchal_user_model_{abs(hash(str(path.resolve())))}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ValueError(f"--model {spec}: cannot import {name} ({exc})") from None
