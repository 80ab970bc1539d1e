"""The one preprocessing path shared by training and inference.

Slices become float32 ``(N, 256, 256, 3)`` in [0, 1]: uint8 is divided by 255, other
dtypes are rescaled by the volume's 0.5-99.5 percentile range, grey-scale (FLAIR only)
is replicated to the three channels, and slices of another size are resized bilinearly.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

MODEL_SIZE = (256, 256)


def as_channels_last(volume: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return ``(Z, Y, X, C)`` with C in {1, 3} and whether the input was a single 2D slice."""
    v = np.asarray(volume)
    single = False
    if v.ndim == 2:
        v, single = v[None, ..., None], True
    elif v.ndim == 3 and v.shape[-1] in (3, 4) and min(v.shape[:2]) > 4:
        v, single = v[None], True
    elif v.ndim == 3:
        v = v[..., None]
    elif not (v.ndim == 4 and v.shape[-1] in (1, 3, 4)):
        raise InputError(
            f"array of shape {v.shape} cannot be segmented; expected (Y, X), (Y, X, 3), "
            "(Z, Y, X) or (Z, Y, X, 3)"
        )
    if v.shape[-1] == 4:
        v = v[..., :3]
    if v.size == 0:
        raise InputError(f"array of shape {v.shape} is empty")
    return v, single


def intensity_range(volume: np.ndarray) -> tuple[float, float]:
    """Range that maps the volume to [0, 1]: (0, 255) for uint8, robust percentiles otherwise."""
    if volume.dtype == np.uint8:
        return 0.0, 255.0
    if volume.dtype == bool:
        return 0.0, 1.0
    lo, hi = np.percentile(volume, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def to_model_input(
    slices: np.ndarray, value_range: tuple[float, float], size: tuple[int, int] = MODEL_SIZE
) -> np.ndarray:
    """Scale ``(N, Y, X, C)`` slices to float32 ``(N, *size, 3)`` in [0, 1]."""
    lo, hi = value_range
    x = (slices.astype(np.float32) - lo) / (hi - lo)
    np.clip(x, 0.0, 1.0, out=x)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if x.shape[1:3] != tuple(size):
        x = resize_slices(x, size, order=1)
    return x


def resize_slices(x: np.ndarray, size: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resize ``(N, Y, X[, C])`` slices to ``size`` (no anti-aliasing, to stay sharp)."""
    from skimage.transform import resize

    out_shape = (x.shape[0], *size, *x.shape[3:])
    return resize(x, out_shape, order=order, preserve_range=True, anti_aliasing=False).astype(
        np.float32
    )
