"""Removing small connected components without doubling a volume's memory."""

from __future__ import annotations

import numpy as np


def _label(labels: np.ndarray):
    """3D face-connected components with the smallest label dtype that fits."""
    from scipy import ndimage

    for dtype in (np.uint16, np.int32):
        out = np.empty(labels.shape, dtype)
        try:
            n = ndimage.label(labels, output=out)  # non-zero voxels are features: no bool copy
        except RuntimeError:  # more components than the dtype can number
            del out
            continue
        return out, int(n)
    raise AssertionError("unreachable: int32 numbers every possible component")


def remove_small_components(labels: np.ndarray, min_size: int, chunk_voxels: int = 1 << 20) -> np.ndarray:
    """Drop connected components (3D, face-connected) smaller than ``min_size`` voxels.

    Returns a 0/1 array of ``labels``' dtype. The component numbers take 2 bytes a voxel
    (uint16) unless there are more than 65,535 components; sizes and result are computed
    about ``chunk_voxels`` voxels at a time, so no other full-size temporary is made.
    """
    if min_size <= 1 or not labels.any():
        return labels
    comp, n = _label(labels)
    chunk = max(1, chunk_voxels // max(1, int(np.prod(labels.shape[1:]))))
    sizes = np.zeros(n + 1, np.int64)
    for z in range(0, labels.shape[0], chunk):  # bincount casts to intp: 8 bytes a voxel at once
        sizes += np.bincount(comp[z : z + chunk].reshape(-1), minlength=n + 1)
    keep = sizes >= min_size
    keep[0] = False
    out = np.empty(labels.shape, labels.dtype)
    for z in range(0, labels.shape[0], chunk):
        out[z : z + chunk] = keep[comp[z : z + chunk]]
    return out
