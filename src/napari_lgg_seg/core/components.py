"""Removing small connected components without doubling a volume's memory."""

from __future__ import annotations

import numpy as np


def label_components(labels: np.ndarray) -> tuple[np.ndarray, int]:
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
    comp, n = label_components(labels)
    keep = component_sizes(comp, n, chunk_voxels) >= min_size
    keep[0] = False
    return select_components(comp, keep, labels.dtype, chunk_voxels)


def _chunk(shape: tuple[int, ...], chunk_voxels: int) -> int:
    return max(1, chunk_voxels // max(1, int(np.prod(shape[1:]))))


def component_sizes(comp: np.ndarray, n: int, chunk_voxels: int = 1 << 20) -> np.ndarray:
    """Voxels of each component number 0..n, counted a chunk of slices at a time
    (bincount casts to intp: 8 bytes a voxel if done at once)."""
    sizes = np.zeros(n + 1, np.int64)
    step = _chunk(comp.shape, chunk_voxels)
    for z in range(0, comp.shape[0], step):
        sizes += np.bincount(comp[z : z + step].reshape(-1), minlength=n + 1)
    return sizes


def select_components(comp: np.ndarray, keep: np.ndarray, dtype=np.uint8, chunk_voxels: int = 1 << 20) -> np.ndarray:
    """0/1 array of ``dtype``: 1 where the component number is marked in ``keep``."""
    out = np.empty(comp.shape, dtype)
    step = _chunk(comp.shape, chunk_voxels)
    for z in range(0, comp.shape[0], step):
        out[z : z + step] = keep[comp[z : z + step]]
    return out
