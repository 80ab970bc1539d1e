"""npe2 writers for labels layers.

* ``write_labels_tiff``: one multi-page uint8 TIFF at exactly the path napari asked for
  (napari's save dialog has already asked about overwriting it); written atomically, so a
  failed save leaves an existing file intact.
* ``write_kaggle_masks``: a folder of ``<ID>_<n>_mask.tif`` files (0/255), as in kaggle_3m.
  The patient id comes from the layer metadata (set by the reader and the Segment widget),
  else from the folder name. Existing mask files are never overwritten: napari asked for
  the folder, not for them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import io as core_io
from ..core.errors import InputError, LGGSegError


class WriteRefused(LGGSegError):
    """A writer refused to write. Deliberately not a ValueError: napari's ``layers.save``
    reads a ValueError as "no writer found" and would hide this message."""


def _check_labels(data, name: str) -> np.ndarray:
    arr = np.asarray(data)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InputError(
            f"labels '{name}' hold values outside 0..255 ({arr.min()}..{arr.max()}); "
            "these writers store uint8 masks"
        )
    return arr


def write_labels_tiff(path: str, data, meta: dict) -> list[str]:
    p = Path(path)
    try:
        if p.is_dir():
            raise InputError(f"{p}: is a folder; give a .tif file name")
        arr = _check_labels(data, meta.get("name", "labels"))
        return [str(core_io.write_labels_tiff(p, arr))]
    except InputError as exc:
        raise WriteRefused(str(exc)) from None


def write_kaggle_masks(path: str, data, meta: dict) -> list[str]:
    p = Path(path)
    try:
        if p.exists() and not p.is_dir():
            raise InputError(f"{p}: exists and is not a folder; kaggle_3m masks go into a folder")
        arr = _check_labels(data, meta.get("name", "labels"))
        pid = str((meta.get("metadata") or {}).get("patient_id") or p.name)
        written = core_io.write_kaggle_masks(p, arr, pid, overwrite=False)
    except InputError as exc:
        raise WriteRefused(str(exc)) from None
    return [str(w) for w in written]
