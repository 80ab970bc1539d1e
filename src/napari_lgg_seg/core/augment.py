"""Random geometric and grey-value augmentation of (image, mask) slices, in numpy/scipy.

One coordinate map per sample combines crop, shift, rotation, zoom, flip and an elastic
deformation (Gaussian displacements on a coarse 3x3 grid, smoothly interpolated), so the
image and its mask get exactly the same transform and are resampled only once.
A missing sequence is simulated as the dataset stores one: the FLAIR channel copied in
its place (which is also what a FLAIR-only stack becomes at inference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class AugmentConfig:
    max_shift: float = 0.1  # fraction of the slice size
    max_rotation: float = 15.0  # degrees
    zoom_range: tuple[float, float] = (0.9, 1.1)
    flip: bool = True  # left-right
    elastic_sigma: float = 10.0  # px, std of the coarse-grid displacements
    elastic_grid: int = 3
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.8, 1.2)
    gamma_sigma: float = 0.2
    missing_sequence: float = 0.0  # probability that pre- and/or post-contrast become FLAIR


def _elastic_field(rng: np.random.Generator, shape: tuple[int, int], cfg: AugmentConfig) -> np.ndarray:
    coarse = rng.normal(0.0, cfg.elastic_sigma, size=(2, cfg.elastic_grid, cfg.elastic_grid))
    factors = (shape[0] / cfg.elastic_grid, shape[1] / cfg.elastic_grid)
    return np.stack([ndimage.zoom(c, factors, order=3, mode="nearest") for c in coarse])[
        :, : shape[0], : shape[1]
    ]


def sample_coordinates(
    rng: np.random.Generator,
    image_shape: tuple[int, int],
    out_shape: tuple[int, int],
    center: tuple[float, float],
    cfg: AugmentConfig | None,
) -> np.ndarray:
    """Input coordinates ``(2, *out_shape)`` for an output window centred on ``center``."""
    oy, ox = np.meshgrid(
        np.arange(out_shape[0], dtype=np.float32) - (out_shape[0] - 1) / 2,
        np.arange(out_shape[1], dtype=np.float32) - (out_shape[1] - 1) / 2,
        indexing="ij",
    )
    if cfg is None:
        return np.stack([oy + center[0], ox + center[1]])
    theta = np.deg2rad(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    zoom = rng.uniform(*cfg.zoom_range)
    flip = -1.0 if (cfg.flip and rng.random() < 0.5) else 1.0
    c, s = np.cos(theta) / zoom, np.sin(theta) / zoom
    shift = rng.uniform(-cfg.max_shift, cfg.max_shift, size=2) * np.asarray(image_shape)
    yy = c * oy - s * ox * flip + center[0] + shift[0]
    xx = s * oy + c * ox * flip + center[1] + shift[1]
    field = _elastic_field(rng, image_shape, cfg)
    iy = np.clip(np.rint(yy), 0, image_shape[0] - 1).astype(np.intp)
    ix = np.clip(np.rint(xx), 0, image_shape[1] - 1).astype(np.intp)
    return np.stack([yy + field[0][iy, ix], xx + field[1][iy, ix]])


def warp(image: np.ndarray, mask: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resample a float image ``(Y, X, C)`` (bilinear) and binary mask (kept binary)."""
    img = np.stack(
        [ndimage.map_coordinates(image[..., ch], coords, order=1, mode="constant") for ch in range(image.shape[-1])],
        axis=-1,
    )
    msk = ndimage.map_coordinates(mask.astype(np.float32), coords, order=1, mode="constant") > 0.5
    return img, msk.astype(np.float32)


def grey_values(rng: np.random.Generator, image: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """Random brightness, contrast and gamma on an image in [0, 1]."""
    x = np.clip(image, 0.0, 1.0) ** float(np.exp(rng.normal(0.0, cfg.gamma_sigma)))
    mean = x.mean()
    x = (x - mean) * rng.uniform(*cfg.contrast) + mean + rng.uniform(-cfg.brightness, cfg.brightness)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def substitute_flair(rng: np.random.Generator, image: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """With probability ``cfg.missing_sequence``, replace the pre-contrast, the
    post-contrast or both channels (equally likely) of a ``(Y, X, 3)`` image by FLAIR.
    An image with context (``(Y, X, 3 * n)``: n slices of 3 sequences) loses the same
    sequences in every slice, as a stack without them would."""
    if image.shape[-1] % 3 or rng.random() >= cfg.missing_sequence:
        return image
    out = image.copy()
    for ch in ((0,), (2,), (0, 2))[rng.integers(3)]:
        out[..., ch::3] = image[..., 1::3]
    return out
