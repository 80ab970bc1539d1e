"""Reading patient stacks (kaggle_3m folders, TIFF stacks, single slices) and writing masks."""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .preprocess import check_values
from .resources import check_fits

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
    """Read a TIFF, refusing (before allocating) one whose header claims more memory than
    this machine has, and one that holds no pixels."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0] if tif.series else None
            if series is None or int(np.prod(series.shape)) == 0:
                raise InputError(f"{path}: TIFF file holds no image data (0 slices)")
            check_fits(int(np.prod(series.shape)) * np.dtype(series.dtype).itemsize,
                       f"{path}: reading its {'x'.join(map(str, series.shape))} {series.dtype} image")
            data = series.asarray()
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{path}: not enough memory to read this TIFF file") from None
    except Exception as exc:  # tifffile raises many types for bad files
        raise InputError(f"{path}: not a readable TIFF file ({type(exc).__name__}: {exc})") from None
    data = np.asarray(data)
    check_values(data, str(path))
    return data


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
        found = masks if m["mask"] else images
        n = int(m["n"])
        if n in found:  # P_1.tif and P_01.tif: one would be dropped unseen
            first, second = sorted([found[n].name, entry.name])
            raise InputError(f"{folder}: {first} and {second} are both slice {n}{' mask' if m['mask'] else ''}; "
                             "keep one")
        found[n] = entry
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
    shape = dtype = None
    for n in order:
        arr = _read_tiff(images[n])
        if shape is None:
            shape, dtype = arr.shape, arr.dtype
        elif arr.shape != shape:
            raise InputError(
                f"{images[n]}: slice shape {arr.shape} differs from {shape} of the first slice"
            )
        elif arr.dtype != dtype:  # stacked, 8-bit and 16-bit slices would be scaled as one range
            raise InputError(f"{images[n]}: slice data type {arr.dtype} differs from {dtype} of the first slice")
        slices.append(arr)
    mask_vol = None
    unmasked = [n for n in order if n not in masks]
    if masks and unmasked:
        # scoring or training on them as if empty would be silently wrong
        raise InputError(
            f"{folder}: {len(unmasked)} of {len(order)} slices have no mask (first: "
            f"{images[unmasked[0]].stem}_mask.tif); give every slice its mask or remove the masks"
        )
    if masks:
        mask_slices = []
        for n in order:
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
        raise InputError(f"{p}: {missing_reason(p)}")
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
            if mask.shape != image.shape[:3]:  # scoring would fail on it
                raise InputError(f"{mask_path}: mask shape {mask.shape} does not match image shape {image.shape[:3]}")
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


def is_broken_link(path: str | os.PathLike) -> bool:
    """A symbolic link whose target does not exist."""
    return os.path.islink(path) and not os.path.exists(path)


def missing_reason(path: str | os.PathLike) -> str:
    """Why a path that does not exist cannot be read: a broken link (naming its target)
    or no such file."""
    if is_broken_link(path):
        try:
            return f"broken symbolic link (to {os.readlink(path)})"
        except OSError:
            return "broken symbolic link"
    return "no such file or folder"


def find_patient_folders(root: str | os.PathLike, broken: list[Path] | None = None) -> list[Path]:
    """Patient folders (folders holding kaggle_3m slices) at or below ``root``, sorted.

    Symbolic links are followed, but each real folder is visited once (a link back up
    the tree is not a second copy of the data); two folders with slices of the same
    patient id are refused. Broken symbolic links are appended to ``broken`` when given.
    """
    r = Path(root)
    if not r.is_dir():
        raise InputError(f"{r}: not a folder")
    seen: set[str] = set()
    owner: dict[str, Path] = {}
    found = []
    for dirpath, dirnames, filenames in os.walk(r, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        if broken is not None:
            broken.extend(Path(dirpath, f) for f in sorted(filenames) if is_broken_link(os.path.join(dirpath, f)))
        pids = {m["pid"] for m in map(_SLICE_RE.match, filenames) if m and not m["mask"]}
        if not pids:
            continue
        folder = Path(dirpath)
        for pid in sorted(pids):
            if pid in owner:
                raise InputError(f"{folder}: patient {pid} is also in {owner[pid]}; keep one copy")
            owner[pid] = folder
        found.append(folder)
    if not found:
        raise InputError(f"{r}: no patient folders (folders with <ID>_<n>.tif slices) found")
    return sorted(found)


def check_not_patient_file(path: str | os.PathLike) -> None:
    """Refuse an output whose name is a kaggle_3m slice or mask name (``<ID>_<n>.tif``,
    ``<ID>_<n>_mask.tif``) in a folder that holds slices or masks of that same patient
    ``<ID>`` or is a patient folder (its slices are named after it): it would replace
    ground truth or be read back as part of the patient. A folder of outputs named
    ``<ID>.tif`` per patient is not a patient folder."""
    p = Path(path)
    m = _SLICE_RE.match(p.name)
    if not m or not p.parent.is_dir():
        return
    ids = {m["pid"].lower(), p.parent.name.lower()}
    try:
        has_slices = any(
            (e := _SLICE_RE.match(f.name)) and e["pid"].lower() in ids
            for f in p.parent.iterdir() if f.name != p.name
        )
    except OSError:
        return
    if has_slices:
        raise InputError(
            f"{p}: the output would land among the kaggle_3m slices and masks of {p.parent}; "
            "writing it would change that patient's data; choose another name or folder"
        )


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


def check_writable_folder(folder: str | os.PathLike, option: str = "") -> Path:
    """Fail now, not after the slow work, when no file can be created in ``folder``
    (read-only, no permission, full disk): a probe file is created and removed."""
    f = Path(folder)
    label = f"{f} ({option})" if option else str(f)
    try:
        fd, probe = temp_file_beside(f / "probe", ".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{label}: cannot write into this folder ({exc.strerror or exc})") from None
    return f


def _temp_pattern(target: Path) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(target.stem)}\.[0-9a-f]{{8}}{re.escape(target.suffix)}$")


def remove_stale_temp_files(target: str | os.PathLike, older_than_s: float = 0.0) -> list[Path]:
    """Delete hidden temporary files that an interrupted (killed) ``atomic_write`` of
    ``target`` left beside it; returns what was removed."""
    t = Path(target)
    if not t.parent.is_dir():
        return []
    pattern, now, removed = _temp_pattern(t), time.time(), []
    for entry in t.parent.iterdir():
        try:
            if pattern.match(entry.name) and entry.is_file() and now - entry.stat().st_mtime >= older_than_s:
                entry.unlink()
                removed.append(entry)
        except OSError:  # gone already, or not ours to delete
            continue
    return removed


def write_failure(target: Path, exc: OSError) -> InputError:
    """A one-line error for a failed write that names the file the user asked for (not
    the hidden temporary file) and says when the disk is full."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InputError(f"{target}: cannot write, the disk is full ({target.parent})")
    return InputError(f"{target}: cannot write ({exc.strerror or exc})")


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place
    (keeping the permissions of a file it replaces). An OSError becomes an InputError
    naming ``path``."""
    target = Path(path)
    _check_parent(target)
    try:
        fd, tmp = temp_file_beside(target, target.suffix)
    except OSError as exc:  # a read-only folder, no permission: name the target, not the temp file
        raise write_failure(target, exc) from None
    os.close(fd)
    try:
        write(Path(tmp))
        if target.exists():
            shutil.copymode(target, tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_failure(target, exc) from None
        raise
    return target


def as_label_volume(labels: np.ndarray, where: str | os.PathLike, fmt: str) -> np.ndarray:
    """``labels`` as a uint8 ``(Z, Y, X)`` volume (a 2D slice gets Z = 1), or InputError
    naming ``where`` when it is not a volume or holds values that uint8 ``fmt`` files
    cannot store (they would wrap around silently)."""
    lab = np.asarray(labels)
    if lab.ndim == 2:
        lab = lab[None]
    if lab.ndim != 3:
        raise InputError(f"{where}: labels of shape {lab.shape} are not a (Z, Y, X) volume")
    if lab.dtype.kind not in "biuf":
        raise InputError(f"{where}: labels of type {lab.dtype} are not numbers")
    if lab.dtype.kind == "f" and lab.size and not np.array_equal(lab, np.round(lab)):
        # probabilities, say: uint8 would truncate them to 0 (NaN: to anything)
        raise InputError(f"{where}: labels hold fractions or NaN; {fmt} labels are whole numbers "
                         "(threshold probabilities first)")
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise InputError(f"{where}: labels hold values outside 0..255; {fmt} labels are stored as uint8")
    return lab.astype(np.uint8)


def write_labels_tiff(
    path: str | os.PathLike, labels: np.ndarray, voxel_size: tuple[float, float, float] | None = None
) -> Path:
    """Write a labels volume as a multi-page uint8 ImageJ TIFF, atomically.

    The file is marked as labels (our readers reopen it as Labels) and carries
    ``voxel_size`` (mm, Z Y X) as ImageJ spacing and resolution when given.
    """
    import tifffile

    from .tiff_geometry import imagej_kwargs

    if Path(path).suffix.lower() not in TIFF_SUFFIXES:
        raise InputError(f"{path}: a TIFF file name must end with .tif or .tiff")
    check_not_patient_file(path)
    data = np.ascontiguousarray(as_label_volume(labels, path, "TIFF"))
    if voxel_size is not None:
        from .geometry import check_voxel_size

        voxel_size = check_voxel_size(voxel_size)
    kwargs = imagej_kwargs(voxel_size, labels=True)
    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, data, compression="zlib", **kwargs))


_PATIENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_patient_id(patient_id: str) -> str:
    """A patient id usable in file names: letters, digits, ``._-``, not starting with a dot
    (so no path separators and no ``..``)."""
    pid = str(patient_id or "")
    if not _PATIENT_ID_RE.match(pid):
        raise InputError(f"patient id {pid!r} cannot name mask files; use letters, digits, '.', '_' and '-'")
    return pid


def slice_numbers(slice_files: Sequence[str]) -> list[int]:
    """The ``<n>`` of each ``<ID>_<n>.tif`` name the reader recorded."""
    numbers = []
    for name in slice_files:
        m = _SLICE_RE.match(Path(name).name)
        if not m or m["mask"]:
            raise InputError(f"{name}: not a kaggle_3m slice name (<ID>_<n>.tif)")
        numbers.append(int(m["n"]))
    if len(set(numbers)) != len(numbers):
        raise InputError("slice names repeat a slice number")
    return numbers


def kaggle_slice_names(slice_files: Sequence[str] | None) -> list[str] | None:
    """``slice_files`` when they are kaggle_3m slice names (``<ID>_<n>.tif``), so that masks
    can be numbered like them; None otherwise (e.g. the one file of a NIfTI or a TIFF stack,
    whose masks are numbered 1..Z)."""
    if not slice_files:
        return None
    try:
        slice_numbers(slice_files)
    except InputError:
        return None
    return list(slice_files)


def write_kaggle_masks(
    folder: str | os.PathLike, labels: np.ndarray, patient_id: str, *, overwrite: bool = False,
    slice_files: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``<ID>_<n>_mask.tif`` files (0/255) for each slice, as kaggle_3m does.

    ``n`` is the number of the slice's file in ``slice_files`` (the names ``read_patient``
    recorded), or 1..Z without it. All or nothing: every mask is first written to a hidden
    temporary file; only when all are written are they moved into place, and a failure
    leaves the folder as it was. Refuses to overwrite existing masks unless ``overwrite``,
    and with it refuses a folder holding other ``*_mask.tif`` files than those it writes
    (they would sit beside the new masks; we do not delete files we may not have written).
    """
    import tifffile

    out = Path(folder)
    pid = check_patient_id(patient_id)
    if not out.parent.is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; kaggle_3m masks go into a folder")
    vol = np.asarray(labels)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3:
        raise InputError(f"labels of shape {vol.shape} cannot be written as kaggle_3m masks")
    numbers = slice_numbers(slice_files) if slice_files is not None else list(range(1, vol.shape[0] + 1))
    if len(numbers) != vol.shape[0]:
        raise InputError(f"{out}: {vol.shape[0]} label slices but {len(numbers)} slice names")
    targets = [out / f"{pid}_{n}_mask.tif" for n in numbers]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]}: file exists; refusing to overwrite {len(existing)} mask file(s)")
    if overwrite and out.is_dir():  # masks left beside the new ones would read as part of them
        names = {t.name.lower() for t in targets}
        stale = sorted(c.name for c in out.iterdir() if c.is_file() and c.name.lower().endswith(
            ("_mask.tif", "_mask.tiff")) and c.name.lower() not in names)
        if stale:
            raise InputError(f"{out}: holds {len(stale)} other mask file(s) ({', '.join(stale[:3])}"
                             f"{', ...' if len(stale) > 3 else ''}) that the new masks would not replace; "
                             "remove them or write to another folder; nothing was written")
    created = not out.exists()
    temps: list[Path] = []
    try:
        out.mkdir(exist_ok=True)
        for t, sl in zip(targets, vol):
            fd, tmp = temp_file_beside(t, t.suffix)
            os.close(fd)
            temps.append(tmp)
            tifffile.imwrite(tmp, np.where(sl > 0, 255, 0).astype(np.uint8))
        _move_all_into_place(temps, targets)
    except BaseException as exc:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if isinstance(exc, OSError):
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InputError(f"{out}: cannot write the masks, the disk is full; nothing was written") from None
            raise InputError(f"{out}: cannot write the masks ({exc.strerror or exc}); nothing was written") from None
        raise
    return targets


def _move_all_into_place(temps: Sequence[Path], targets: Sequence[Path]) -> None:
    """Rename each temp onto its target; if one rename fails, undo the earlier ones
    (replaced files come back from hard-linked backups)."""
    done: list[tuple[Path, Path | None]] = []
    try:
        for tmp, t in zip(temps, targets):
            backup = None
            if t.exists():
                fd, backup = temp_file_beside(t, ".bak")
                os.close(fd)
                os.replace(t, backup)
                shutil.copymode(backup, tmp)
            try:
                os.replace(tmp, t)
            except BaseException:
                if backup is not None:
                    os.replace(backup, t)
                raise
            done.append((t, backup))
    except BaseException:
        for t, backup in reversed(done):
            if backup is not None:
                os.replace(backup, t)
            else:
                t.unlink()
        raise
    for _, backup in done:
        if backup is not None:
            backup.unlink()


def write_masks_to_patient_folder(folder: str | os.PathLike, labels: np.ndarray, patient_id: str,
                                  slice_files: Sequence[str] | None = None) -> list[Path]:
    """Write kaggle_3m masks (``<ID>_<n>_mask.tif``) beside the slices of a patient folder.

    The folder must still hold the slices: those named in ``slice_files`` (as the reader
    recorded them), else ``<ID>_1.tif`` ... ``<ID>_Z.tif`` for the labels' Z slices.
    Existing masks are never overwritten (InputError, nothing written)."""
    p = Path(folder)
    if not p.is_dir() or not _has_kaggle_slices(p):
        raise InputError(f"{p}: not a kaggle_3m patient folder; save the masks with File > Save Selected Layers")
    vol = np.asarray(labels)
    vol = vol[None] if vol.ndim == 2 else vol
    if slice_files:
        missing = [f for f in slice_files if not (p / Path(f).name).is_file()]
        if missing:
            raise InputError(f"{p}: no longer holds {missing[0]} ({len(missing)} of the recorded slices missing); "
                             "masks would not line up")
        return write_kaggle_masks(p, vol, patient_id, overwrite=False, slice_files=[Path(f).name for f in slice_files])
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
