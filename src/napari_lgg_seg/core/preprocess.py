"""The one preprocessing path shared by training and inference.

Slices become float32 ``(N, 256, 256, 3)`` in [0, 1]. Each channel of a volume is
divided by the 99.5th percentile of its non-zero voxels (so 0 stays background and the
brain's brightest tissue maps near 1 whatever the scanner's grey-value scale) and
clipped; grey-scale (FLAIR only) is replicated to the three channels, and slices of
another size are resized bilinearly. Statistics come from the whole volume, so a volume
is normalised the same way whether it is segmented at once or in batches.
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


def intensity_range(volume: np.ndarray, percentile: float = 99.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (low, high) of a ``(Z, Y, X, C)`` volume: low is 0 (or the minimum when
    there are negative values), high the ``percentile`` of the voxels above low."""
    v = np.asarray(volume)
    channels = v.shape[-1]
    lows = np.zeros(channels, np.float32)
    highs = np.ones(channels, np.float32)
    # a strided sample keeps this cheap on long stacks; percentiles barely move
    step = max(1, int(np.ceil(v[..., 0].size / 2_000_000)))
    for c in range(channels):
        values = v[..., c].reshape(-1)[::step].astype(np.float32)
        lows[c] = min(0.0, float(values.min()))
        fg = values[values > lows[c]]
        if fg.size:
            highs[c] = float(np.percentile(fg, percentile))
        if highs[c] <= lows[c]:
            highs[c] = lows[c] + 1.0
    return lows, highs


def to_model_input(
    slices: np.ndarray, value_range: tuple[np.ndarray, np.ndarray], size: tuple[int, int] = MODEL_SIZE
) -> np.ndarray:
    """Scale ``(N, Y, X, C)`` slices with ``intensity_range`` of their volume to float32
    ``(N, *size, 3)`` in [0, 1]."""
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


def flair_channel(image: np.ndarray) -> np.ndarray:
    """The FLAIR channel ``(Z, Y, X)`` of a ``(Z, Y, X, 3)`` volume; grey volumes as they are."""
    img = np.asarray(image)
    if img.ndim == 4:
        return img[..., 1] if img.shape[-1] >= 2 else img[..., 0]
    if img.ndim == 3:
        return img
    if img.ndim == 2:
        return img[None]
    raise InputError(f"image of shape {img.shape} cannot be shown; expected (Z, Y, X[, 3])")
