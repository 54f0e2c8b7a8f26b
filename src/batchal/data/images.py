"""Image files as model inputs: decoded with Pillow (an optional dependency), converted to
grayscale or RGB, resized to a square and scaled to [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch

from batchal.data.files import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_image(path, image_size: int, grayscale: bool, mean=None, std=None, max_pixels: int = 40_000_000) -> torch.Tensor:
    """One image as a float32 tensor [1 or 3, image_size, image_size]: (x - mean) / std per channel
    with x in [0, 1] (default mean = std = 0.5, which gives [-1, 1]). An image of more than
    ``max_pixels`` pixels is refused before it is decoded (a decompression bomb)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ValueError("reading images needs Pillow: pip install -c constraints.txt -e '.[ray]' (or '.[label]')") from None
    try:
        with Image.open(path) as img:
            if img.width * img.height > max_pixels:
                raise DataError(f"{path}: {img.width}x{img.height} pixels, over the {max_pixels:,}-pixel limit (a decompression bomb?)")
            img = img.convert("L" if grayscale else "RGB").resize((image_size, image_size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.float32) / 255.0
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    x = torch.from_numpy(array)
    x = x[None] if grayscale else x.permute(2, 0, 1)
    mean = torch.tensor(0.5 if mean is None else mean, dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.tensor(0.5 if std is None else std, dtype=torch.float32).reshape(-1, 1, 1)
    return (x - mean) / std


def channel_stats(x_N_C_H_W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of images in [0, 1] (each [1, C, 1, 1]): what your
    own images are standardised with, by ``batchal run`` and by the labelling service alike."""
    mean = x_N_C_H_W.mean(dim=(0, 2, 3), keepdim=True)
    std = x_N_C_H_W.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    return mean, std
