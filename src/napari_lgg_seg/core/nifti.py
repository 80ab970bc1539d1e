"""NIfTI volumes (``.nii``, ``.nii.gz``): reading into the kaggle orientation, writing labels
back on the source grid with the source affine."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .errors import InputError
from .geometry import Geometry, check_voxel_size, kaggle_affine_from_voxel_size

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: mm per unit of the header's spatial unit (xyzt_units; 'unknown' is taken as mm, as most tools do)
_UNIT_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3}
_UNIT_NAME = {v: k for k, v in _UNIT_MM.items()}


def is_nifti_name(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def load_nifti(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Source-grid data ``(I, J, K)`` or ``(I, J, K, C)`` and its geometry; clear errors for
    2D, 4D with more than 3 volumes, truncated or unreadable files."""
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel, gzip and zlib raise many types for damaged files
        raise InputError(f"{p}: not a readable NIfTI file ({type(exc).__name__}: {_first_line(exc)})") from None
    if data.ndim > 3:  # singleton time/component axes: (X, Y, Z, 1, 3) is ITK's three-component image
        data = data.reshape(data.shape[:3] + tuple(n for n in data.shape[3:] if n != 1))
    if data.ndim < 3:
        raise InputError(f"{p}: NIfTI of shape {data.shape} is not a volume; expected 3D (or 4D with 1 or 3 sequences)")
    if data.ndim > 4 or (data.ndim == 4 and data.shape[3] != 3):
        raise InputError(
            f"{p}: NIfTI of shape {data.shape} has {int(np.prod(data.shape[3:]))} volumes; expected one, "
            "or three sequences (pre-contrast, FLAIR, post-contrast)"
        )
    from .preprocess import check_values

    # complex, RGB24 and other non-numbers, NaN or infinite, beyond float32: named here, not later as 'image'
    check_values(data, str(p))
    try:
        unit_mm = _UNIT_MM.get(img.header.get_xyzt_units()[0], 1.0)
        return data, Geometry.from_affine(img.affine, data.shape[:3], "nifti", unit_mm, _xforms(img.header))
    except InputError as exc:  # a singular or non-finite affine: say which file
        raise InputError(f"{p}: {exc}") from None


def _xforms(header) -> dict | None:
    """The header's qform and sform with their codes (plain lists), or None when unreadable."""
    try:
        q, s = header.get_qform(), header.get_sform()
        codes = int(header["qform_code"]), int(header["sform_code"])
    except Exception:  # a damaged header: the labels get the best affine with codes 1
        return None
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(s))):
        return None
    return {"qform": q.tolist(), "qform_code": codes[0], "sform": s.tolist(), "sform_code": codes[1]}


def read_nifti(path: str | os.PathLike):
    """A NIfTI volume as a ``PatientStack`` in kaggle order (Z, Y, X[, 3]) with its geometry."""
    from .io import PatientStack

    data, geom = load_nifti(path)
    return PatientStack(
        image=geom.to_kaggle(data), mask=None, patient_id=nifti_stem(path), slice_files=(Path(path).name,),
        source=Path(path), voxel_size=geom.voxel_size, geometry=geom,
    )


def write_labels_nifti(
    path: str | os.PathLike, labels: np.ndarray, geometry: Geometry | None = None,
    voxel_size=None,
) -> Path:
    """Write kaggle-ordered ``(Z, Y, X)`` labels as uint8 NIfTI, atomically.

    With ``geometry`` the labels go back on the source voxel grid with the source affine;
    otherwise ``voxel_size`` (mm, Z Y X) gives the affine of the kaggle-ordered array.
    """
    import nibabel as nib

    from .io import as_label_volume, atomic_write

    p = Path(path)
    if not is_nifti_name(p):
        raise InputError(f"{p}: a NIfTI file name must end with .nii or .nii.gz")
    lab = as_label_volume(labels, p, "NIfTI")
    unit = "mm"
    if geometry is not None:  # the source's affine in the source's unit, so that tools that scale agree
        data, affine = geometry.to_source(lab), geometry.affine
        unit = _UNIT_NAME.get(geometry.unit_mm, "mm")
    elif voxel_size is not None:
        data, affine = lab, kaggle_affine_from_voxel_size(check_voxel_size(voxel_size))
    else:
        raise InputError(f"{p}: no geometry or voxel size for the NIfTI affine")
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_xyzt_units(unit)
    xf = geometry.nifti_xforms if geometry is not None else None
    if xf:  # the source's own header transforms: a viewer picks the same one for both files
        img.set_qform(np.asarray(xf["qform"]), code=int(xf["qform_code"]))
        img.set_sform(np.asarray(xf["sform"]), code=int(xf["sform_code"]))
    else:
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    payload = img.to_bytes()
    if p.name.lower().endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6)
    return atomic_write(p, lambda tmp: tmp.write_bytes(payload))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""
