"""Which device computes: one check for every place that takes a ``device`` (the loop, the
labelling service's retraining, the command line).

Models, predictions and selections all accept a ``torch.device`` or its name; the library
keeps random draws on CPU generators, so the same seed gives the same masks and draws on every
device, and moves only what the work needs.
"""

from __future__ import annotations

import torch

#: The names accepted besides a torch.device: cpu (or cpu:0), cuda, cuda:N and auto (cuda when there is one).
DEVICE_HELP = "cpu, cuda, cuda:N or auto"


def resolve_device(device, name: str = "device") -> torch.device:
    """``device`` (None = cpu) as a ``torch.device`` that exists here, or a ``ValueError`` that
    names the argument and says what this machine has."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        text = str(device)
    elif isinstance(device, str):
        text = device.strip().lower()
    else:
        raise ValueError(f"{name} must be {DEVICE_HELP}, got {device!r}")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu:0":  # torch's own name for the one CPU device
        text = "cpu"
    if text != "cpu" and text != "cuda" and not (text.startswith("cuda:") and text[5:].isdigit()):
        raise ValueError(f"{name} must be {DEVICE_HELP}, got {device!r}")
    resolved = torch.device(text)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={device!r} but no CUDA device is available (torch {torch.__version__}); use cpu")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"{name}={device!r} but this machine has {count} CUDA device(s): cuda:0 to cuda:{count - 1}")
    return resolved


def available_devices() -> list[str]:
    """'cpu' and, where CUDA works, 'cuda' (what device-parametrised tests run on)."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
