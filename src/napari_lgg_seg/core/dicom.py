"""DICOM series (a folder of one series' slice files) read through pydicom into the kaggle
orientation, with the geometry from ImagePositionPatient, ImageOrientationPatient and
PixelSpacing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError
from .geometry import Geometry

DICOM_SUFFIXES = (".dcm",)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def looks_like_dicom(path: str | os.PathLike) -> bool:
    """A .dcm name, or the 'DICM' preamble marker (cheap: reads 132 bytes)."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_dicom_folder(folder: str | os.PathLike, probe: int = 8) -> bool:
    """Whether a folder holds DICOM files (looks at a few of its files only)."""
    try:
        files = sorted(e for e in Path(folder).iterdir() if e.is_file() and not e.name.startswith("."))
    except OSError:
        return False
    return any(looks_like_dicom(f) for f in files[:probe])


def _header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        return None
    except Exception as exc:
        raise InputError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None


def _floats(ds, tag: str, n: int, path: Path) -> np.ndarray:
    value = getattr(ds, tag, None)
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.array([])
    if arr.size != n or not np.isfinite(arr).all():
        raise InputError(f"{path}: DICOM file lacks a valid {tag}; cannot place its slices")
    return arr


def load_dicom_series(path: str | os.PathLike) -> tuple[np.ndarray, Geometry, str]:
    """Source-grid data ``(K, rows, cols)``, its geometry and a series name for a DICOM
    folder (or one file of it). Several series, missing or duplicate slices are errors."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    headers = []
    for f in sorted(e for e in folder.iterdir() if e.is_file() and not e.name.startswith(".")):
        if f.name.upper() == "DICOMDIR":
            continue
        ds = _header(f)
        if ds is not None and hasattr(ds, "Rows"):
            headers.append((f, ds))
    if not headers:
        raise InputError(f"{folder}: no DICOM image files in this folder")
    series: dict[str, list] = {}
    for f, ds in headers:
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "?")), []).append((f, ds))
    if len(series) > 1:
        names = [
            f"{getattr(items[0][1], 'SeriesDescription', '') or 'unnamed'} ({uid}, {len(items)} files)"
            for uid, items in sorted(series.items())
        ]
        raise InputError(f"{folder}: {len(series)} DICOM series in one folder: {'; '.join(names)}; "
                         "put each series in its own folder")
    (uid, items), = series.items()
    f0, ds0 = items[0]
    if int(getattr(ds0, "NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"{f0}: multi-frame DICOM is not supported; export the series as one file per slice")
    iop = _floats(ds0, "ImageOrientationPatient", 6, f0)
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    spacing = _floats(ds0, "PixelSpacing", 2, f0)
    placed = []
    for f, ds in items:
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, f), iop, atol=1e-4):
            raise InputError(f"{f}: slice orientation differs from {f0.name}; not one volume")
        if (int(ds.Rows), int(ds.Columns)) != (int(ds0.Rows), int(ds0.Columns)):
            raise InputError(f"{f}: slice size {ds.Rows}x{ds.Columns} differs from {ds0.Rows}x{ds0.Columns}")
        ps = _floats(ds, "PixelSpacing", 2, f)
        if not np.allclose(ps, spacing, rtol=1e-4, atol=1e-6):
            raise InputError(f"{f}: pixel spacing {ps[0]:g} x {ps[1]:g} mm differs from {spacing[0]:g} x "
                             f"{spacing[1]:g} mm of {f0.name}; not one volume")
        ipp = _floats(ds, "ImagePositionPatient", 3, f)
        placed.append((float(ipp @ normal), ipp, f))
    placed.sort(key=lambda t: t[0])
    positions = np.array([t[0] for t in placed])
    steps = np.diff(positions)
    if steps.size and steps.min() < 1e-3:
        i = int(np.argmin(steps))
        raise InputError(f"{placed[i + 1][2]}: two slices at the same position ({placed[i][2].name}); not one series")
    if steps.size and (steps.max() - steps.min()) > 0.01 * np.median(steps) + 1e-3:
        raise InputError(
            f"{folder}: uneven slice positions (steps {steps.min():.3g} to {steps.max():.3g} mm): "
            "slices are missing from the series"
        )
    if len(placed) > 1:
        step = (placed[-1][1] - placed[0][1]) / (len(placed) - 1)
        # evenly spaced along the normal but shifted in-plane (two stacks in one series): no grid
        off = [float(np.linalg.norm(t[1] - placed[0][1] - i * step)) for i, t in enumerate(placed)]
        if max(off) > 0.5 * float(spacing.min()) + 1e-3:  # half a pixel: positions rounded in the files pass
            i = int(np.argmax(off))
            raise InputError(f"{placed[i][2]}: slice position is {off[i]:.3g} mm off the line through the "
                             "other slices; not one regular volume")
    else:
        thick = float(getattr(ds0, "SliceThickness", 1.0) or 1.0)
        step = normal * thick
    lps = np.eye(4)
    lps[:3, 0] = step
    lps[:3, 1] = col_cos * spacing[0]
    lps[:3, 2] = row_cos * spacing[1]
    lps[:3, 3] = placed[0][1]
    data = np.stack([_pixels(f) for _, _, f in placed])
    from .preprocess import check_values

    check_values(data, str(folder))
    name = str(getattr(ds0, "SeriesDescription", "") or getattr(ds0, "PatientID", "") or folder.name)
    try:
        return data, Geometry.from_affine(_LPS_TO_RAS @ lps, data.shape, "dicom"), name
    except InputError as exc:  # e.g. collinear ImageOrientationPatient: say which series
        raise InputError(f"{folder}: {exc}") from None


def _pixels(path: Path) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as exc:
        raise InputError(f"{path}: cannot decode the DICOM pixel data ({type(exc).__name__})") from None
    if arr.ndim != 2:
        raise InputError(f"{path}: DICOM image of shape {arr.shape} is not one grey slice")
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        arr = arr.astype(np.float32) * slope + intercept
    return arr


def read_dicom(path: str | os.PathLike):
    """A DICOM series as a ``PatientStack`` in kaggle order (Z, Y, X) with its geometry."""
    from .io import PatientStack

    data, geom, _name = load_dicom_series(path)
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    return PatientStack(
        image=geom.to_kaggle(data), mask=None, patient_id=folder.name, slice_files=(), source=folder,
        voxel_size=geom.voxel_size, geometry=geom,
    )
