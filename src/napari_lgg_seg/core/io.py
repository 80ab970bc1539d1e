"""Reading patient stacks (kaggle_3m folders, TIFF stacks, single slices) and writing masks."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from .geometry import Geometry

TIFF_SUFFIXES = (".tif", ".tiff")
_SLICE_RE = re.compile(r"^(?P<pid>.+)_(?P<n>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)


@dataclass
class PatientStack:
    """One patient's MRI volume, with its ground-truth mask when there is one.

    ``image`` is ``(Z, Y, X, 3)`` for RGB-interleaved slices (pre-contrast, FLAIR,
    post-contrast) or ``(Z, Y, X)`` for grey-scale stacks, in the file's dtype.
    ``mask`` is ``(Z, Y, X)`` uint8 with values 0/1, or None.
    """

    image: np.ndarray
    mask: np.ndarray | None
    patient_id: str
    slice_files: tuple[str, ...] = field(default_factory=tuple)
    source: Path | None = None
    #: voxel size in mm along (Z, Y, X), when the file says (ImageJ TIFF, NIfTI, DICOM)
    voxel_size: tuple[float, float, float] | None = None
    #: source grid and affine of a NIfTI/DICOM volume (``image`` is in kaggle order)
    geometry: Geometry | None = None

    @property
    def n_slices(self) -> int:
        return int(self.image.shape[0])


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        data = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for bad files
        raise InputError(f"{path}: not a readable TIFF file ({type(exc).__name__}: {exc})") from None
    return np.asarray(data)


def binarize_mask(mask: np.ndarray, path: Path | str) -> np.ndarray:
    """Return a 0/1 uint8 mask; only 0/1 and 0/255 masks are accepted."""
    values = np.unique(mask)
    if values.size and not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        shown = ", ".join(str(v) for v in values[:8])
        raise InputError(f"{path}: mask is not binary (values {shown}); expected 0/255 or 0/1")
    return (mask > 0).astype(np.uint8)


def kaggle_slices(folder: Path) -> tuple[str, dict[int, Path], dict[int, Path]]:
    """Find ``<ID>_<n>.tif`` slices and ``<ID>_<n>_mask.tif`` masks in a folder.

    Returns (patient id, {n: image path}, {n: mask path}); raises InputError when the
    folder holds no such slices or mixes patients.
    """
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    pids: set[str] = set()
    for entry in folder.iterdir():
        m = _SLICE_RE.match(entry.name)
        if not m or not entry.is_file():
            continue
        pids.add(m["pid"])
        (masks if m["mask"] else images)[int(m["n"])] = entry
    if not images and not masks:
        if not any(folder.iterdir()):
            raise InputError(f"{folder}: folder is empty")
        raise InputError(f"{folder}: no kaggle_3m slices (<ID>_<n>.tif) in this folder")
    if len(pids) > 1:
        raise InputError(f"{folder}: slices of several patients in one folder ({', '.join(sorted(pids))})")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise InputError(f"{masks[orphans[0]]}: mask without its image slice")
    return pids.pop(), images, masks


def _read_kaggle_folder(folder: Path) -> PatientStack:
    pid, images, masks = kaggle_slices(folder)
    order = sorted(images)
    slices = []
    shape = None
    for n in order:
        arr = _read_tiff(images[n])
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise InputError(
                f"{images[n]}: slice shape {arr.shape} differs from {shape} of the first slice"
            )
        slices.append(arr)
    mask_vol = None
    if masks:
        mask_slices = []
        for n in order:
            if n not in masks:
                mask_slices.append(np.zeros(shape[:2], np.uint8))
                continue
            m = _read_tiff(masks[n])
            if m.ndim == 3:  # some tools save masks as RGB; all channels are equal
                m = m[..., 0]
            if m.shape != shape[:2]:
                raise InputError(f"{masks[n]}: mask shape {m.shape} does not match image shape {shape[:2]}")
            mask_slices.append(binarize_mask(m, masks[n]))
        mask_vol = np.stack(mask_slices)
    return PatientStack(
        image=np.stack(slices),
        mask=mask_vol,
        patient_id=pid,
        slice_files=tuple(images[n].name for n in order),
        source=folder,
    )


def accepts_shape(shape: tuple[int, ...]) -> bool:
    """Whether a TIFF array of this shape can be read as a volume (see ``_as_volume``)."""
    return len(shape) in (2, 3) or (len(shape) == 4 and shape[-1] in (1, 3, 4))


def _as_volume(arr: np.ndarray, path: Path) -> np.ndarray:
    """Bring a TIFF array to (Z, Y, X) or (Z, Y, X, 3)."""
    if not accepts_shape(arr.shape):
        raise InputError(
            f"{path}: array of shape {arr.shape} cannot be segmented; expected (Y, X), (Y, X, 3), "
            "(Z, Y, X) or (Z, Y, X, 3)"
        )
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
        arr = arr[None]  # a single RGB(A) slice
    if arr.ndim == 3:
        return arr
    if arr.shape[-1] == 1:
        return arr[..., 0]
    return arr[..., :3]  # drop alpha


def read_patient(path: str | os.PathLike) -> PatientStack:
    """Read a kaggle_3m patient folder, a TIFF stack or slice, a NIfTI file or a DICOM series.

    NIfTI and DICOM volumes are brought into the kaggle orientation (see ``core.geometry``);
    ``voxel_size`` and ``geometry`` say where their voxels lie.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    from .dicom import is_dicom_folder, looks_like_dicom
    from .nifti import is_nifti_name

    if is_nifti_name(p) and p.is_file():
        from .nifti import read_nifti

        return read_nifti(p)
    if (p.is_dir() and not _has_kaggle_slices(p) and is_dicom_folder(p)) or (
        p.is_file() and p.suffix.lower() not in TIFF_SUFFIXES and looks_like_dicom(p)
    ):
        from .dicom import read_dicom

        return read_dicom(p)
    if p.is_dir():
        return _read_kaggle_folder(p)
    if p.suffix.lower() not in TIFF_SUFFIXES:
        raise InputError(f"{p}: not a file we read (expected .tif, .tiff, .nii, .nii.gz, .dcm or a folder)")
    m = _SLICE_RE.match(p.name)
    if m and m["mask"]:
        raise InputError(f"{p}: this is a mask; open its image slice or the patient folder")
    image = _as_volume(_read_tiff(p), p)
    mask = None
    if m:  # a single kaggle slice: pick up its mask when it lies next to it
        mask_path = p.with_name(f"{m['pid']}_{m['n']}_mask{p.suffix}")
        if mask_path.exists():
            mask = binarize_mask(_as_volume(_read_tiff(mask_path), mask_path), mask_path)
            if mask.ndim == 4:
                mask = mask[..., 0]
    pid = m["pid"] if m else p.stem
    from .tiff_geometry import tiff_info

    voxel = tiff_info(p)[0]
    return PatientStack(image=image, mask=mask, patient_id=pid, slice_files=(p.name,), source=p,
                        voxel_size=voxel)


def _has_kaggle_slices(folder: Path) -> bool:
    try:
        return any(_SLICE_RE.match(e.name) for e in folder.iterdir())
    except OSError:
        return False


def find_patient_folders(root: str | os.PathLike) -> list[Path]:
    """Patient folders (folders holding kaggle_3m slices) at or below ``root``, sorted."""
    r = Path(root)
    if not r.is_dir():
        raise InputError(f"{r}: not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(r, followlinks=True):
        dirnames.sort()
        if any(_SLICE_RE.match(f) and "_mask" not in f.lower() for f in filenames):
            found.append(Path(dirpath))
    if not found:
        raise InputError(f"{r}: no patient folders (folders with <ID>_<n>.tif slices) found")
    return sorted(found)


def _check_parent(path: Path) -> None:
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")


def temp_file_beside(target: Path, suffix: str) -> tuple[int, Path]:
    """Create a new hidden file next to ``target``; return its open descriptor and path.

    Unlike ``tempfile.mkstemp`` (always 0600) the file gets the permissions of any new file
    (0666 minus the umask), so that what we write is as readable as the user expects.
    """
    for _ in range(100):
        tmp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise InputError(f"{target.parent}: could not create a temporary file")


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place
    (keeping the permissions of a file it replaces)."""
    target = Path(path)
    _check_parent(target)
    fd, tmp = temp_file_beside(target, target.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        if target.exists():
            shutil.copymode(target, tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def write_labels_tiff(
    path: str | os.PathLike, labels: np.ndarray, voxel_size: tuple[float, float, float] | None = None
) -> Path:
    """Write a labels volume as a multi-page uint8 ImageJ TIFF, atomically.

    The file is marked as labels (our readers reopen it as Labels) and carries
    ``voxel_size`` (mm, Z Y X) as ImageJ spacing and resolution when given.
    """
    import tifffile

    from .tiff_geometry import imagej_kwargs

    data = np.ascontiguousarray(labels, dtype=np.uint8)
    if data.ndim == 2:
        data = data[None]
    if voxel_size is not None:
        from .geometry import check_voxel_size

        voxel_size = check_voxel_size(voxel_size)
    kwargs = imagej_kwargs(voxel_size, labels=True)
    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, data, compression="zlib", **kwargs))


def write_kaggle_masks(
    folder: str | os.PathLike, labels: np.ndarray, patient_id: str, *, overwrite: bool = False
) -> list[Path]:
    """Write ``<ID>_<n>_mask.tif`` files (0/255) for each slice, as kaggle_3m does.

    Refuses to overwrite existing masks unless ``overwrite`` is True; nothing is written
    when any target exists.
    """
    import tifffile

    out = Path(folder)
    if not out.parent.is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist")
    vol = np.asarray(labels)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3:
        raise InputError(f"labels of shape {vol.shape} cannot be written as kaggle_3m masks")
    targets = [out / f"{patient_id}_{i + 1}_mask.tif" for i in range(vol.shape[0])]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]}: file exists; refusing to overwrite {len(existing)} mask file(s)")
    out.mkdir(exist_ok=True)
    for t, sl in zip(targets, vol):
        data = np.where(sl > 0, 255, 0).astype(np.uint8)
        atomic_write(t, lambda tmp, d=data: tifffile.imwrite(tmp, d))
    return targets


def write_masks_to_patient_folder(folder: str | os.PathLike, labels: np.ndarray, patient_id: str) -> list[Path]:
    """Write kaggle_3m masks (``<ID>_<n>_mask.tif``) beside the slices of a patient folder.

    The folder must hold the slices ``<ID>_1.tif`` ... ``<ID>_Z.tif`` of the labels' Z
    slices; existing masks are never overwritten (InputError, nothing written)."""
    p = Path(folder)
    if not p.is_dir() or not _has_kaggle_slices(p):
        raise InputError(f"{p}: not a kaggle_3m patient folder; save the masks with File > Save Selected Layers")
    vol = np.asarray(labels)
    vol = vol[None] if vol.ndim == 2 else vol
    numbers = sorted(int(m["n"]) for e in p.iterdir()
                     if (m := _SLICE_RE.match(e.name)) and not m["mask"] and m["pid"] == patient_id)
    if numbers != list(range(1, vol.shape[0] + 1)):
        raise InputError(f"{p}: holds {len(numbers)} slices of {patient_id}, numbered "
                         f"{numbers[0] if numbers else '-'}..{numbers[-1] if numbers else '-'}; the labels have "
                         f"{vol.shape[0]} slices: masks would not line up")
    return write_kaggle_masks(p, vol, patient_id, overwrite=False)


def is_readable(path: str | os.PathLike) -> bool:
    """Cheap check used by the napari reader: would ``read_patient`` try this path?

    Folders: kaggle_3m patient folders and DICOM series folders. Files: TIFF, NIfTI, DICOM.
    """
    from .dicom import DICOM_SUFFIXES, is_dicom_folder
    from .nifti import is_nifti_name

    p = Path(path)
    if p.is_dir():
        return _has_kaggle_slices(p) or is_dicom_folder(p)
    return p.suffix.lower() in TIFF_SUFFIXES + DICOM_SUFFIXES or is_nifti_name(p)


def is_mask_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a kaggle_3m mask slice (``<ID>_<n>_mask.tif``)."""
    m = _SLICE_RE.match(Path(path).name)
    return bool(m and m["mask"])


def tiff_shape(path: str | os.PathLike) -> tuple[int, ...] | None:
    """Shape of a TIFF's first series without reading pixel data; None when unreadable."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            return tuple(tf.series[0].shape)
    except Exception:  # noqa: BLE001 - any parse failure means "cannot tell"
        return None


def claims_path(path: str | os.PathLike) -> bool:
    """The napari reader's "is this ours?" rule (cheap: no pixel data is read).

    True for kaggle_3m patient and DICOM series folders, NIfTI files, DICOM files, and
    TIFFs that are not bare mask slices and whose shape can be an MRI slice or volume (or
    that cannot be parsed, so that ``read_patient`` says why); False for everything else,
    so that other readers can try."""
    from .dicom import DICOM_SUFFIXES, looks_like_dicom
    from .nifti import is_nifti_name

    p = Path(path)
    if p.is_dir():
        return is_readable(p)
    if not p.is_file():
        return False
    if is_nifti_name(p):
        return True
    if p.suffix.lower() in DICOM_SUFFIXES:
        return looks_like_dicom(p)
    if p.suffix.lower() not in TIFF_SUFFIXES or is_mask_file(p):
        return False  # a bare mask: leave it to image readers
    shape = tiff_shape(p)
    return True if shape is None else accepts_shape(shape)
