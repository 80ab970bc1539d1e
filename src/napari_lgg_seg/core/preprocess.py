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
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_values(data: np.ndarray, where: str = "image") -> None:
    """Refuse data that cannot be segmented: complex or non-numeric dtypes, NaN or
    infinite values, and float values beyond the float32 range the model computes in.
    ``where`` (a file name) starts the message. Works slice by slice, without a full copy."""
    a = np.asarray(data)
    if np.iscomplexobj(a):
        raise InputError(f"{where}: complex-valued data ({a.dtype}) cannot be segmented; give real intensities")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise InputError(f"{where}: data of type {a.dtype} is not numeric")
    if not np.issubdtype(a.dtype, np.floating) or a.size == 0:
        return
    bad = big = 0
    step = 1 << 22  # elements per chunk: the boolean temporaries stay small
    if a.flags.c_contiguous or a.ndim < 2:
        flat = a.reshape(-1)
        parts = (flat[i : i + step] for i in range(0, flat.size, step))
    else:
        parts = iter(a)
    for part in parts:
        finite = np.isfinite(part)
        bad += int(part.size - np.count_nonzero(finite))
        if a.dtype.itemsize > 4:
            big += int(np.count_nonzero(np.abs(part[finite]) > _FLOAT32_MAX))
    if bad:
        raise InputError(f"{where}: {bad} NaN or infinite value(s) in the data; fix or mask them first")
    if big:
        raise InputError(f"{where}: {big} value(s) beyond the float32 range (|v| > {_FLOAT32_MAX:.3g})")


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
    check_values(v)
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
