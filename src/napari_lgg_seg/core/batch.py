"""Whole-dataset segmentation: many patients, one model load, one output per patient,
resumable (existing outputs are skipped), failures reported while the rest go on, and a
``summary.csv``. ``--shard I/N`` splits the patients between N independent jobs."""

from __future__ import annotations

import csv
import io as _stdio
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import Cancelled, InputError, LGGSegError
from .io import PatientStack, TIFF_SUFFIXES, atomic_write, is_broken_link, is_readable, missing_reason, read_patient

FORMATS = {"tif": ".tif", "nii.gz": ".nii.gz", "nii": ".nii", "kaggle-masks": ""}
SUMMARY_FIELDS = ("patient", "input", "output", "status", "slices", "voxel_size_mm", "abnormality_voxels",
                  "abnormality_mm3", "dice", "iou", "seconds", "error", "note")


@dataclass
class PatientResult:
    """One row of ``summary.csv``."""

    patient: str
    input: str
    output: str
    status: str  # "done", "skipped" (output existed) or "failed"
    slices: int | None = None
    voxel_size_mm: str = ""
    abnormality_voxels: int | None = None
    abnormality_mm3: float | None = None
    dice: float | None = None
    iou: float | None = None
    seconds: float | None = None
    error: str = ""
    note: str = ""  # warnings: an oblique volume (geometry.oblique_note), an empty result (removed_all_note)
    emptied_by_postprocessing: bool = False  # not a summary column: the CLI's hint to switch it off


def format_for_path(path: str | os.PathLike) -> str | None:
    """The output format a file name asks for (``tif``, ``nii``, ``nii.gz``), or None."""
    name = str(path).lower()
    if name.endswith(".nii.gz"):
        return "nii.gz"
    if name.endswith(".nii"):
        return "nii"
    if name.endswith(TIFF_SUFFIXES):
        return "tif"
    return None


def write_labels(path: str | os.PathLike, labels: np.ndarray, stack: PatientStack,
                 voxel_size=None, *, overwrite: bool = True) -> Path:
    """Write labels of ``stack`` (kaggle order) to ``path`` in the format its name asks for.

    TIFF gets the voxel size as ImageJ spacing; NIfTI the source grid and affine (or the
    voxel size, 1 mm when unknown); a folder path gets kaggle_3m masks.
    """
    p = Path(path)
    voxel = stack.voxel_size or voxel_size
    fmt = format_for_path(p)
    if fmt == "tif":
        from .io import write_labels_tiff

        return write_labels_tiff(p, labels, voxel_size=voxel)
    if fmt in ("nii", "nii.gz"):
        from .nifti import write_labels_nifti

        return write_labels_nifti(p, labels, stack.geometry, voxel_size=voxel or (1.0, 1.0, 1.0))
    if p.suffix == "":
        from .io import kaggle_slice_names, write_kaggle_masks

        # numbered like the kaggle_3m slices read (<ID>_<n>.tif), else 1..Z
        files = kaggle_slice_names([Path(f).name for f in stack.slice_files])
        write_kaggle_masks(p, labels, stack.patient_id, overwrite=overwrite,
                           slice_files=files if files and len(files) == len(labels) else None)
        return p
    raise InputError(f"{p}: cannot write labels as '{p.suffix}'; use .tif, .nii, .nii.gz or a folder")


def patient_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand inputs into patients: a patient (kaggle folder, DICOM folder, TIFF, NIfTI)
    stays itself; any other folder gives the patients directly inside it, sorted, and its
    broken symbolic links (which then fail, named, rather than go unseen)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise InputError(f"{p}: {missing_reason(p)}")
        if not p.is_dir() or is_readable(p):
            out.append(p)
            continue
        found = sorted(c for c in p.iterdir() if not c.name.startswith(".") and (is_broken_link(c) or (
                       is_readable(c) and not _is_mask_file(c) and not _is_our_labels(c))))
        if not found:
            raise InputError(f"{p}: no patients in this folder (kaggle_3m or DICOM folders, TIFF or NIfTI files)")
        out.extend(found)
    seen: dict[Path, Path] = {}
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen[key] = p
            unique.append(p)
    return unique


def _is_our_labels(p: Path) -> bool:
    """A labels TIFF this plugin wrote (an earlier result beside the scans), not a patient."""
    from .tiff_geometry import tiff_info

    return p.is_file() and p.suffix.lower() in TIFF_SUFFIXES and tiff_info(p)[1]


def _is_mask_file(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(("_mask.tif", "_mask.tiff"))


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 1 <= I <= N."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise InputError(f"shard {text!r} must be I/N, e.g. 2/8") from None
    if not 1 <= i <= n:
        raise InputError(f"shard {text!r}: I must be between 1 and N")
    return i, n


def take_shard(items: Sequence, shard: tuple[int, int] | None) -> list:
    """The items of shard I of N (every N-th, starting at the I-th; no overlap, none lost)."""
    if shard is None:
        return list(items)
    i, n = shard
    return list(items)[i - 1 :: n]


def summary_name(shard: tuple[int, int] | None) -> str:
    return "summary.csv" if shard is None else f"summary-shard-{shard[0]}-of-{shard[1]}.csv"


def _patient_key(p: Path) -> str:
    from .nifti import is_nifti_name, nifti_stem

    return nifti_stem(p) if is_nifti_name(p) else (p.stem if p.is_file() else p.name)


def _output_for(out_dir: Path, key: str, fmt: str) -> Path:
    return out_dir / (key + FORMATS[fmt])


def _output_exists(path: Path, fmt: str) -> bool:
    if fmt == "kaggle-masks":
        return path.is_dir() and any(_is_mask_file(c) for c in path.iterdir())
    return path.exists()


def count_slices(path: Path) -> int:
    """Slices a patient will give, cheaply (headers and file names only); 0 when unknown."""
    try:
        from .nifti import is_nifti_name

        if is_nifti_name(path):
            import nibabel as nib

            from .geometry import Geometry

            img = nib.load(str(path))
            return Geometry.from_affine(img.affine, img.shape[:3]).kaggle_shape[0] if len(img.shape) >= 3 else 0
        if path.is_dir():
            from .io import _has_kaggle_slices, kaggle_slices

            if _has_kaggle_slices(path):
                return len(kaggle_slices(path)[1])
            return sum(1 for c in path.iterdir() if c.is_file() and not c.name.startswith("."))
        import tifffile

        with tifffile.TiffFile(path) as tf:
            shape = tf.series[0].shape
        return int(shape[0]) if len(shape) >= 3 and not (len(shape) == 3 and shape[-1] in (3, 4)) else 1
    except Exception:
        return 0


def read_summary(path: Path) -> dict[str, dict]:
    """Rows of an earlier summary.csv by patient ('' when unreadable)."""
    if not path.is_file():
        return {}
    try:
        with open(path, newline="") as fh:
            return {row["patient"]: row for row in csv.DictReader(fh) if row.get("patient")}
    except (OSError, csv.Error, KeyError, UnicodeDecodeError):
        return {}


def write_summary(path: Path, rows: Sequence[dict]) -> Path:
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in SUMMARY_FIELDS})
    text = buf.getvalue()
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def stack_volume(stack: PatientStack) -> np.ndarray:
    """The stack's image as ``segment_volume`` cannot misread it: a grey ``(Z, Y, X)`` volume
    gets a channel axis, so that one with 3 or 4 columns (a NIfTI of 3 sagittal slices) is
    not taken for one RGB slice."""
    image = stack.image
    return image[..., None] if image.ndim == 3 else image


def segment_stack(stack: PatientStack, model, **segment_options) -> np.ndarray:
    """Labels ``(Z, Y, X)`` uint8 for a patient (calls ``core.inference.segment_volume``)."""
    from .inference import segment_volume

    labels = segment_volume(stack_volume(stack), model, **segment_options)
    return labels[None] if labels.ndim == 2 else labels


def segment_many(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    model=None,
    format: str = "tif",
    overwrite: bool = False,
    shard: tuple[int, int] | str | None = None,
    voxel_size: Sequence[float] | None = None,
    progress: Callable[[int, int], object] | None = None,
    on_result: Callable[[PatientResult], None] | None = None,
    **segment_options,
) -> list[PatientResult]:
    """Segment many patients into ``out_dir`` (one output each) and write a summary CSV.

    ``inputs`` are patients or folders of patients. The model (default: bundled; or a
    ``.keras`` path) loads once.
    Patients whose output exists are skipped unless ``overwrite``; a failing patient is
    recorded (status ``failed``) and the others go on. ``shard=(I, N)`` or ``"I/N"`` keeps
    only that share of the patients and writes ``summary-shard-I-of-N.csv``. ``progress``
    gets (slices done, slices in all); ``segment_options`` go to ``segment_volume`` (e.g.
    ``flair_model=False``: the main model for FLAIR-only patients too).
    """
    from .geometry import oblique_note
    from .inference import removed_all_note
    from .metrics import abnormality_volume, dice, iou
    from .resources import check_fits, segment_bytes

    if format not in FORMATS:
        raise InputError(f"unknown output format {format!r}; choose one of {', '.join(FORMATS)}")
    if "stats" in segment_options:
        raise InputError("segment_many reports per patient (PatientResult.note); it takes no 'stats'")
    if isinstance(shard, str):
        shard = parse_shard(shard)
    if voxel_size is not None:
        from .geometry import check_voxel_size

        voxel_size = check_voxel_size(voxel_size)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if not out.parent.is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist")
    inputs = [Path(i) for i in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    here = out.resolve()
    # an earlier OUT_DIR inside a folder of patients is ours (it has a summary), not a patient
    ours = here.is_dir() and (not any(here.iterdir()) or any(here.glob("summary*.csv")))
    listed = [p for p in patient_inputs(inputs) if not (ours and p.resolve() == here)]
    for p in inputs + listed:
        r = p.resolve()
        if here == r or (p.is_dir() and p in listed and r in here.parents):
            raise InputError(f"{out}: output folder is {'an input' if here == r else 'inside the patient folder ' + str(p)}; "
                             "choose a folder outside the patients")
    patients = take_shard(listed, shard)
    keys = [_patient_key(p) for p in patients]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise InputError(f"several inputs would write the same output {dupes[0]}{FORMATS[format]}; rename one")
    out.mkdir(exist_ok=True)
    if not os.access(out, os.W_OK):
        raise InputError(f"{out}: folder is not writable")
    summary_path = out / summary_name(shard)
    earlier = read_summary(summary_path)

    todo = [(p, k, _output_for(out, k, format)) for p, k in zip(patients, keys)]
    pending = [t for t in todo if overwrite or not _output_exists(t[2], format)]
    total = sum(count_slices(p) for p, _, _ in pending)
    done_before = 0
    if pending and (model is None or isinstance(model, (str, os.PathLike))):
        from .inference import resolve_engine

        # once for all patients; the bundled model as its int8 engine (no TensorFlow) unless
        # engine="keras", as in segment_volume and the CLI
        model = resolve_engine(model, segment_options.get("engine", "auto"))
    results: list[PatientResult] = []

    def record(row: PatientResult) -> None:
        # the summary on disk is kept current, so that an interrupted (Ctrl-C, killed) run loses
        # no patient's figures; patients not reached yet keep their rows of an earlier run
        results.append(row)
        rest = [earlier[k] for k in keys[len(results):] if k in earlier]
        write_summary(summary_path, [asdict(r) for r in results] + rest)
        if on_result:
            on_result(row)

    for p, key, target in todo:
        if not overwrite and _output_exists(target, format):
            row = PatientResult(key, str(p), str(target), "skipped")
            old = earlier.get(key)
            if old and old.get("status") in ("done", "skipped"):
                row = PatientResult(**{**{k: old.get(k) or None for k in SUMMARY_FIELDS}, "status": "skipped"})
                row.error = row.note = ""
                row.voxel_size_mm = old.get("voxel_size_mm", "")
            record(row)
            continue
        t0 = time.monotonic()
        expected = count_slices(p)

        def step(done: int, n: int, _base=done_before):
            return progress(_base + done, max(total, _base + n)) if progress else None

        try:
            stack = read_patient(p)
            batch = segment_options.get("batch_size", 8)
            # as for one patient (cli segment): refused with a message, not killed by the system
            check_fits(segment_bytes(stack.image.shape, stack.image.dtype.itemsize, batch),
                       f"segmenting {p} with batch size {batch}", "lower the batch size (--batch-size)")
            stats: dict = {}
            labels = segment_stack(stack, model, progress=step, stats=stats, **segment_options)
            write_labels(target, labels, stack, voxel_size, overwrite=overwrite)
        except Cancelled:
            raise
        except (LGGSegError, OSError, MemoryError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
                msg = f"{exc.filename}: {exc.strerror or msg}"
            row = PatientResult(key, str(p), str(target), "failed", seconds=round(time.monotonic() - t0, 2),
                                error=msg)
            done_before += expected
            record(row)
            continue
        done_before += labels.shape[0] if expected == 0 else expected
        vox = stack.voxel_size or voxel_size
        vol = abnormality_volume(labels, vox)
        row = PatientResult(
            key, str(p), str(target), "done", slices=int(labels.shape[0]),
            voxel_size_mm="x".join(f"{v:g}" for v in vox) if vox else "",
            abnormality_voxels=vol["voxels"],
            abnormality_mm3=None if vol["mm3"] is None else round(vol["mm3"], 3),
            seconds=round(time.monotonic() - t0, 2),
            note="; ".join(n for n in (oblique_note(stack.geometry), removed_all_note(stats)) if n),
            emptied_by_postprocessing=removed_all_note(stats) is not None,
        )
        if stack.mask is not None:
            truth = stack.mask.reshape(labels.shape)
            row.dice, row.iou = round(dice(truth, labels), 4), round(iou(truth, labels), 4)
        record(row)
    if not results:
        write_summary(summary_path, [])
    return results
