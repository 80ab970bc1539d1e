"""Overview figure: a few slices as rows, columns MRI (FLAIR), ground truth, prediction.

numpy only for the composition; imageio writes the PNG (atomically). Pillow, which
imageio depends on, draws the column titles when it is available.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import atomic_write
from .preprocess import flair_channel  # noqa: F401 - moved there; kept importable from here

TRUTH_RGB = (40, 220, 60)  # green
PRED_RGB = (230, 40, 200)  # magenta
_ALPHA = 0.35
_GAP = 4
_HEADER = 18


def to_uint8(vol: np.ndarray) -> np.ndarray:
    """Grey values scaled to uint8 (uint8 as is, others by the 0.5-99.5 percentile range)."""
    v = np.asarray(vol)
    if v.dtype == np.uint8:
        return v
    lo, hi = np.percentile(v, [0.5, 99.5]) if v.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1
    return (np.clip((v.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def pick_slices(truth: np.ndarray | None, pred: np.ndarray | None, n_slices: int, max_rows: int = 4) -> list[int]:
    """Up to ``max_rows`` slice indices spread over the slices that show abnormality in the
    ground truth or the prediction (the middle slices when neither shows any)."""
    present = np.zeros(n_slices, bool)
    for m in (truth, pred):
        if m is not None:
            present |= np.asarray(m).reshape(n_slices, -1).any(axis=1)
    cand = np.flatnonzero(present)
    if cand.size == 0:
        cand = np.arange(n_slices)
    if cand.size <= max_rows:
        return cand.tolist()
    # evenly spread, favouring the central (usually largest) part of the lesion
    pos = np.linspace(0, cand.size - 1, max_rows + 2)[1:-1]
    return sorted(set(int(cand[int(round(p))]) for p in pos))


def _outline(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:] &= m[:-1]
    inner[:-1] &= m[1:]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def overlay(grey: np.ndarray, mask: np.ndarray | None, rgb: tuple[int, int, int]) -> np.ndarray:
    """RGB uint8 slice: the grey slice with ``mask`` tinted and outlined in ``rgb``."""
    out = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    if mask is not None:
        m = np.asarray(mask) > 0
        color = np.array(rgb, np.float32)
        out[m] = (1 - _ALPHA) * out[m] + _ALPHA * color
        out[_outline(m)] = color
    return out.astype(np.uint8)


def compose_overview(
    image: np.ndarray,
    truth: np.ndarray | None,
    pred: np.ndarray | None,
    *,
    max_rows: int = 4,
    slices: list[int] | None = None,
    titles: bool = True,
) -> np.ndarray:
    """RGB uint8 figure: one row per chosen slice; columns FLAIR, FLAIR + ground truth
    (green), FLAIR + prediction (magenta). Missing truth/prediction columns stay plain."""
    grey = to_uint8(flair_channel(image))
    z, h, w = grey.shape
    for name, m in (("ground truth", truth), ("prediction", pred)):
        if m is not None and np.asarray(m).shape != (z, h, w):
            raise InputError(f"{name} of shape {np.asarray(m).shape} does not match the image ({z}, {h}, {w})")
    rows = slices if slices is not None else pick_slices(truth, pred, z, max_rows)
    top = _HEADER if titles else 0
    fig = np.zeros((top + len(rows) * (h + _GAP) - _GAP, 3 * w + 2 * _GAP, 3), np.uint8)
    for r, k in enumerate(rows):
        y0 = top + r * (h + _GAP)
        cols = [
            overlay(grey[k], None, TRUTH_RGB),
            overlay(grey[k], None if truth is None else truth[k], TRUTH_RGB),
            overlay(grey[k], None if pred is None else pred[k], PRED_RGB),
        ]
        for c, tile in enumerate(cols):
            x0 = c * (w + _GAP)
            fig[y0 : y0 + h, x0 : x0 + w] = tile
    if titles:
        fig = _draw_titles(fig, w, ["FLAIR", "ground truth", "prediction"], rows)
    return fig


def _draw_titles(fig: np.ndarray, w: int, names: list[str], rows: list[int]) -> np.ndarray:
    try:
        from PIL import Image, ImageDraw
    except ImportError:  # pragma: no cover - Pillow comes with imageio
        return fig
    img = Image.fromarray(fig)
    draw = ImageDraw.Draw(img)
    colors = [(230, 230, 230), TRUTH_RGB, PRED_RGB]
    for c, (name, col) in enumerate(zip(names, colors)):
        draw.text((c * (w + _GAP) + 4, 3), name, fill=col)
    h = (fig.shape[0] - _HEADER + _GAP) // max(1, len(rows)) - _GAP
    for r, k in enumerate(rows):  # 1-based slice numbers, as in the kaggle_3m file names
        draw.text((4, _HEADER + r * (h + _GAP) + h - 14), f"slice {k + 1}", fill=(230, 230, 230))
    return np.asarray(img)


def write_overview_png(
    path: str | os.PathLike,
    image: np.ndarray,
    truth: np.ndarray | None,
    pred: np.ndarray | None,
    *,
    max_rows: int = 4,
) -> Path:
    """Compose the overview and write it as a PNG, atomically."""
    import imageio.v3 as iio

    fig = compose_overview(image, truth, pred, max_rows=max_rows)
    return atomic_write(path, lambda tmp: iio.imwrite(tmp, fig, extension=".png"))
