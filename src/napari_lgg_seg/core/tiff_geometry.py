"""Voxel size in TIFF files (ImageJ ``spacing`` and resolution tags) and the marker that
tells our labels TIFFs apart from images."""

from __future__ import annotations

import os
from pathlib import Path

#: ImageJ metadata key set on every labels TIFF this plugin writes
LABELS_MARKER_KEY = "napari_lgg_seg"
LABELS_MARKER_VALUE = "labels"

_UNIT_MM = {"mm": 1.0, "millimeter": 1.0, "millimetre": 1.0, "cm": 10.0, "m": 1000.0,
            "micron": 1e-3, "um": 1e-3, "\u00b5m": 1e-3, "\\u00b5m": 1e-3, "nm": 1e-6}  # looked up lower-cased


def _per_unit(tag) -> float | None:
    if tag is None:
        return None
    value = tag.value
    try:
        num, den = value if isinstance(value, tuple) else (value, 1)
        ppu = float(num) / float(den)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return ppu if ppu > 0 else None


def tiff_info(path: str | os.PathLike) -> tuple[tuple[float, float, float] | None, bool]:
    """(voxel size in mm along Z, Y, X or None, whether this is a labels TIFF we wrote).

    Only ImageJ TIFFs with a length unit carry a voxel size; a plain TIFF's resolution is
    usually a print resolution (72 dpi) and is ignored. Unreadable files give (None, False).
    """
    import tifffile

    try:
        with tifffile.TiffFile(Path(path)) as tf:
            ij = tf.imagej_metadata or {}
            tags = tf.pages[0].tags
            x_ppu, y_ppu = _per_unit(tags.get("XResolution")), _per_unit(tags.get("YResolution"))
    except Exception:
        return None, False
    is_labels = str(ij.get(LABELS_MARKER_KEY, "")) == LABELS_MARKER_VALUE
    factor = _UNIT_MM.get(str(ij.get("unit", "")).strip().lower())
    if factor is None or x_ppu is None or y_ppu is None:
        return None, is_labels
    try:
        z = float(ij.get("spacing", 1.0)) * factor
    except (TypeError, ValueError):
        return None, is_labels
    voxel = (z, factor / y_ppu, factor / x_ppu)
    if not all(0 < v < 1e6 for v in voxel):
        return None, is_labels
    return voxel, is_labels


def imagej_kwargs(voxel_size, *, labels: bool) -> dict:
    """``tifffile.imwrite`` arguments for an ImageJ (Z, Y, X) stack with this voxel size."""
    metadata: dict = {"axes": "ZYX"}
    if labels:
        metadata[LABELS_MARKER_KEY] = LABELS_MARKER_VALUE
    kwargs: dict = {"imagej": True, "metadata": metadata}
    if voxel_size is not None:
        z, y, x = (float(v) for v in voxel_size)
        metadata.update(spacing=z, unit="mm")
        kwargs["resolution"] = (1.0 / x, 1.0 / y)
    return kwargs
