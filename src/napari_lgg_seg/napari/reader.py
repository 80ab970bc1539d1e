"""npe2 reader: kaggle_3m patient folders and MRI TIFF stacks/slices.

``get_reader`` returns None for paths that are clearly not ours (other files, folders
without kaggle_3m slices, mask files, TIFFs whose shape cannot be an MRI volume) so that
other readers can try them. For a path that looks like ours but is broken, the returned
reader raises ``InputError`` with a clear message, which napari shows as a notification.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core.io import TIFF_SUFFIXES, _SLICE_RE, accepts_shape, is_readable, read_patient
from ._layers import stack_layer_data

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]


def _tiff_shape(path: Path) -> tuple[int, ...] | None:
    """Shape of the first series without reading pixel data; None when unreadable."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            return tuple(tf.series[0].shape)
    except Exception:
        return None


def claims(path: str | os.PathLike) -> bool:
    """Whether this plugin should read ``path`` (cheap: no pixel data is read)."""
    p = Path(path)
    if p.is_dir():
        return is_readable(p)
    if p.suffix.lower() not in TIFF_SUFFIXES or not p.is_file():
        return False
    m = _SLICE_RE.match(p.name)
    if m and m["mask"]:
        return False  # a bare mask: leave it to image readers
    shape = _tiff_shape(p)
    if shape is None:
        return True  # a .tif we cannot parse: read_patient says why
    return accepts_shape(shape)


def get_reader(path: PathOrPaths) -> Callable | None:
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(claims(p) for p in paths):
        return None
    return read_layers


def read_layers(path: PathOrPaths) -> list[tuple]:
    """Read one or several patients; each gives an image layer and maybe 'ground truth'."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[tuple] = []
    for p in paths:
        layers.extend(stack_layer_data(read_patient(p)))
    return layers
