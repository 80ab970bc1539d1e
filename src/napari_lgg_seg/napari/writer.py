"""npe2 writers for labels layers.

* ``write_labels_tiff``: one multi-page uint8 TIFF at exactly the path napari asked for
  (napari's save dialog has already asked about overwriting it); written atomically, so a
  failed save leaves an existing file intact.
* ``write_labels_nifti``: ``.nii``/``.nii.gz`` uint8, on the source voxel grid with the
  source affine when the layer came from a NIfTI/DICOM volume, else with the layer's scale
  as voxel size (a warning says so).
* ``write_kaggle_masks``: a folder of ``<ID>_<n>_mask.tif`` files (0/255), as in kaggle_3m.
  The patient id comes from the layer metadata (set by the reader and the Segment widget),
  else from the folder name. Existing mask files are never overwritten: napari asked for
  the folder, not for them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..core import io as core_io
from ..core.errors import InputError, LGGSegError


class WriteRefused(LGGSegError):
    """A writer refused to write. Deliberately not a ValueError: napari's ``layers.save``
    reads a ValueError as "no writer found" and would hide this message."""


def _refusals_as_write_refused(writer):
    """Turn the InputError of a writer into WriteRefused, which napari shows as it is."""
    @functools.wraps(writer)
    def write(path: str, data, meta: dict) -> list[str]:
        try:
            return writer(path, data, meta)
        except InputError as exc:
            raise WriteRefused(str(exc)) from None

    return write


def _check_labels(data, name: str) -> np.ndarray:
    arr = np.asarray(data)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InputError(
            f"labels '{name}' hold values outside 0..255 ({arr.min()}..{arr.max()}); "
            "these writers store uint8 masks"
        )
    return arr


def layer_voxel_size(meta: dict) -> tuple[float, float, float] | None:
    """Voxel size (mm, Z Y X) of a 3D layer: a scale that is not all 1 (the user may have set
    it), else the voxel size its reader recorded in the metadata."""
    scale = meta.get("scale")
    if scale is not None and len(scale) == 3 and any(abs(float(v) - 1.0) > 1e-12 for v in scale):
        return tuple(float(v) for v in scale)
    md = meta.get("metadata") or {}
    if md.get("voxel_size") is not None:
        return tuple(float(v) for v in md["voxel_size"])
    return None


@_refusals_as_write_refused
def write_labels_tiff(path: str, data, meta: dict) -> list[str]:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give a .tif file name")
    arr = _check_labels(data, meta.get("name", "labels"))
    voxel = layer_voxel_size(meta) if np.ndim(arr) == 3 else None
    return [str(core_io.write_labels_tiff(p, arr, voxel_size=voxel))]


@_refusals_as_write_refused
def write_labels_nifti(path: str, data, meta: dict) -> list[str]:
    import warnings

    from ..core.geometry import Geometry
    from ..core.nifti import write_labels_nifti as _write

    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give a .nii.gz file name")
    arr = _check_labels(data, meta.get("name", "labels"))
    geo = (meta.get("metadata") or {}).get("geometry")
    if geo is not None:
        geometry = Geometry.from_metadata(geo)
        if tuple(np.shape(arr)[-3:]) != geometry.kaggle_shape:
            geometry = None
    else:
        geometry = None
    if geometry is not None:
        return [str(_write(p, arr, geometry))]
    voxel = layer_voxel_size(meta)
    if voxel is None:
        voxel = (1.0, 1.0, 1.0)
        warnings.warn(f"{p.name}: labels '{meta.get('name', 'labels')}' have no source geometry or "
                      "voxel size; the NIfTI gets 1 mm voxels (set the layer scale to fix)", stacklevel=2)
    else:
        warnings.warn(f"{p.name}: no source affine; the NIfTI uses the layer's voxel size {voxel} mm",
                      stacklevel=2)
    return [str(_write(p, arr, None, voxel_size=voxel))]


@_refusals_as_write_refused
def write_kaggle_masks(path: str, data, meta: dict) -> list[str]:
    p = Path(path)  # a file there is refused by core_io.write_kaggle_masks
    arr = _check_labels(data, meta.get("name", "labels"))
    md = meta.get("metadata") or {}
    pid = str(md.get("patient_id") or p.name)
    files = core_io.kaggle_slice_names(md.get("slice_files"))  # masks numbered like their slices, else 1..Z
    if files is not None and len(files) != (arr.shape[0] if arr.ndim == 3 else 1):
        raise InputError(f"{meta.get('name', 'labels')}: {len(files)} slice files recorded but "
                         f"{arr.shape[0]} slices of labels; cannot number the masks")
    written = core_io.write_kaggle_masks(p, arr, pid, overwrite=False, slice_files=files)
    return [str(w) for w in written]
