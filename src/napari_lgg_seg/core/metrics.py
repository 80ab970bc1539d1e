"""Overlap metrics and abnormality volume, in numpy only.

Rule for empty inputs: when both masks are empty, Dice and IoU are 1.0 (perfect
agreement that there is nothing); when only one is empty they are 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InputError


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"shapes differ: {a.shape} vs {b.shape}; Dice/IoU need masks of one shape")
    return a > 0, b > 0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A|+|B|) of two binary masks (non-zero = foreground)."""
    a, b = _pair(a, b)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union |A∩B| / |A∪B| of two binary masks."""
    a, b = _pair(a, b)
    union = int(np.logical_or(a, b).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(a, b).sum()) / union


def per_slice(a: np.ndarray, b: np.ndarray) -> list[dict]:
    """Per-slice rows along axis 0: slice index, Dice, IoU and voxels in each mask."""
    a, b = _pair(a, b)
    if a.ndim < 3:
        a, b = a[None], b[None]
    rows = []
    for i, (sa, sb) in enumerate(zip(a, b)):
        rows.append(
            {
                "slice": i,
                "dice": dice(sa, sb),
                "iou": iou(sa, sb),
                "voxels_a": int(sa.sum()),
                "voxels_b": int(sb.sum()),
            }
        )
    return rows


def abnormality_volume(labels: np.ndarray, voxel_size: Sequence[float] | None = None) -> dict:
    """Voxels labelled non-zero, slices involved and, given a voxel size (mm), volume in mm^3."""
    lab = np.asarray(labels) > 0
    voxels = int(lab.sum())
    slices = int(lab.reshape(lab.shape[0], -1).any(axis=1).sum()) if lab.ndim >= 3 else int(voxels > 0)
    out = {"voxels": voxels, "slices": slices, "mm3": None}
    if voxel_size is not None:
        out["mm3"] = float(voxels * float(np.prod(voxel_size)))
    return out


def format_volume(summary: dict, total_slices: int | None = None, *, ascii: bool = False) -> str:
    """One line for an ``abnormality_volume`` summary, e.g.
    ``1,234 voxels in 5 of 36 slices, 370.2 mm³ (0.37 ml)`` (``mm^3`` when ``ascii``);
    the volume only when the voxel size is known."""
    n = summary["slices"]
    of = f" of {total_slices}" if total_slices is not None else ""
    text = f"{summary['voxels']:,} voxels in {n}{of} slice{'s' if (total_slices or n) != 1 else ''}"
    if summary.get("mm3") is not None:
        text += f", {summary['mm3']:,.1f} {'mm^3' if ascii else 'mm³'} ({summary['mm3'] / 1000:,.2f} ml)"
    return text
