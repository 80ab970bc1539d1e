"""Context across slices (2.5D input): each slice goes to the network together with its
``k`` neighbours on either side, as extra channels.

A model with context ``k`` takes ``3 * (2k + 1)`` channels: the three sequences of slice
``z - k``, then of ``z - k + 1``, ..., then of ``z + k``; the slice itself is the middle
group. At the ends of a volume the first / last slice stands in for the missing
neighbours. Context 0 is the plain 2D input of 3 channels. The context of a model is
read from its input channels, so a ``.keras`` file needs no extra metadata.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError, ModelError

SEQUENCES = 3
MAX_CONTEXT = 3


def channels_for(context: int) -> int:
    """Input channels of a model with ``context`` neighbours on either side."""
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or not 0 <= context <= MAX_CONTEXT:
        raise InputError(f"context slices must be a whole number from 0 to {MAX_CONTEXT}, not {context!r}")
    return SEQUENCES * (2 * int(context) + 1)


def context_of_channels(channels: int, source: str = "model") -> int:
    """The context ``k`` of a model with ``channels`` input channels (3, 9, 15, 21)."""
    groups, rest = divmod(int(channels), SEQUENCES)
    if rest or groups % 2 == 0 or (groups - 1) // 2 > MAX_CONTEXT:
        raise ModelError(
            f"{source}: {channels} input channels; expected 3 (one slice) or 3 x an odd number of "
            f"slices up to {channels_for(MAX_CONTEXT)} (the slice and its neighbours)"
        )
    return (groups - 1) // 2


def context_of_input(shape, source: str = "model") -> int:
    """The context of a model with input ``shape`` (N, Y, X, C); ModelError naming the
    shape when it is not one this plugin's U-Nets take."""
    shape = tuple(shape)
    try:
        if len(shape) != 4 or shape[-1] is None:
            raise ModelError("no channel axis")
        return context_of_channels(shape[-1], source)
    except ModelError:
        raise ModelError(f"{source} input shape {shape} is not (None, Y, X, 3), or 9, 15 or 21 channels "
                         "for a slice with its neighbours") from None


def model_context(model) -> int:
    """The context of a Keras model or int8 engine, from its input shape."""
    return context_of_input(model.input_shape, getattr(model, "name", "model"))


def neighbour_index(start: int, stop: int, z: int, context: int) -> np.ndarray:
    """``(stop - start, 2k + 1)`` indices of the slices ``start..stop-1`` of a ``z``-slice
    volume and their neighbours, clipped to the volume."""
    offsets = np.arange(-context, context + 1)
    return np.clip(np.arange(start, stop)[:, None] + offsets, 0, z - 1)


def patient_neighbours(patient: np.ndarray, context: int) -> np.ndarray:
    """For slices of several patients stored one patient after another, in slice order
    (as a ``SliceSet``): ``(N, 2k + 1)`` indices of each slice's neighbours within its own
    patient (clipped at that patient's first and last slice)."""
    patient = np.asarray(patient)
    n = len(patient)
    idx = np.empty((n, 2 * context + 1), np.intp)
    bounds = np.flatnonzero(np.r_[True, patient[1:] != patient[:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        idx[lo:hi] = lo + neighbour_index(0, hi - lo, hi - lo, context)
    return idx


def stack_context(slices: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Gather ``slices`` ``(N, Y, X, 3)`` at ``index`` ``(B, 2k + 1)`` into model input
    ``(B, Y, X, 3 * (2k + 1))`` (the neighbour groups in slice order)."""
    b, g = index.shape
    picked = slices[index.reshape(-1)]
    y, x, c = picked.shape[1:]
    return np.moveaxis(picked.reshape(b, g, y, x, c), 1, 3).reshape(b, y, x, g * c)


def slices_with_context(images: np.ndarray, ids, neighbours: np.ndarray | None) -> np.ndarray:
    """Model input float32 in [0, 1] for the uint8 ``images`` (N, Y, X, 3) of a
    ``SliceSet`` at ``ids``: the slices themselves, or with ``neighbours`` (from
    ``patient_neighbours``) each slice with its neighbours."""
    picked = images[ids] if neighbours is None else stack_context(images, neighbours[ids])
    return picked.astype(np.float32) / 255.0


def centre(inputs: np.ndarray) -> np.ndarray:
    """The slice itself (the middle 3 channels) of model input with context."""
    groups = inputs.shape[-1] // SEQUENCES
    mid = groups // 2
    return inputs[..., mid * SEQUENCES : (mid + 1) * SEQUENCES]


def expand_first_kernel(weights: list[np.ndarray], context: int, share: float = 0.0) -> list[np.ndarray]:
    """Weights of a 3-channel U-Net (``get_weights()`` order) made to fit one with
    ``context``. Each neighbour slice gets ``share`` x the first kernel and the slice
    itself the rest (1 - 2k x share). With ``share`` 0 (what training does) the expanded
    model starts out computing exactly what the 2D one did; with more, it does so where
    neighbouring slices are alike, and the neighbours start with weight that an optimiser
    at fine-tuning rates can shape (from 0 it hardly moves them)."""
    first = np.asarray(weights[0])
    if first.ndim != 4 or first.shape[2] != SEQUENCES:
        raise ModelError(f"first kernel of shape {first.shape} is not that of a 3-channel U-Net")
    own = 1.0 - 2 * context * share
    if share < 0 or own <= 0:
        raise InputError(f"neighbour share {share} must be >= 0 and leave the slice itself some weight")
    kernel = np.zeros((*first.shape[:2], channels_for(context), first.shape[3]), first.dtype)
    for g in range(2 * context + 1):
        kernel[:, :, g * SEQUENCES : (g + 1) * SEQUENCES] = (own if g == context else share) * first
    return [kernel, *weights[1:]]
