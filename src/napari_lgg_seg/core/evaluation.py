"""Per-patient evaluation of a model on kaggle_3m patient folders."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import atomic_write, find_patient_folders, kaggle_slices, missing_reason, read_patient
from .metrics import dice, iou
from .preprocess import flair_channel


@dataclass
class PatientScore:
    patient: str
    n_slices: int
    dice: float
    iou: float
    true_voxels: int
    predicted_voxels: int


@dataclass
class EvaluationReport:
    """Per-patient Dice/IoU and their summary; slice-level detection figures."""

    model: str
    threshold: float
    patients: list[PatientScore] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    flair_only: bool = False  # scored on the FLAIR channel alone (other sequences missing)
    postprocessing: str = "none"
    notes: list[str] = field(default_factory=list)  # e.g. broken links skipped under the data root

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the report as strict JSON: undefined figures (NaN) become null."""
        text = json.dumps(_nan_to_none(asdict(self)), indent=1, allow_nan=False)
        return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))

    def format(self) -> str:
        lines = [f"{'patient':<28}{'slices':>7}{'Dice':>8}{'IoU':>8}"]
        for p in self.patients:
            lines.append(f"{p.patient:<28}{p.n_slices:>7}{p.dice:>8.3f}{p.iou:>8.3f}")
        s = self.summary
        lines += [
            f"patients: {s['n_patients']}  per-patient Dice mean {s['dice_mean']:.3f} "
            f"median {s['dice_median']:.3f} min {s['dice_min']:.3f}; "
            f"IoU mean {s['iou_mean']:.3f} median {s['iou_median']:.3f} min {s['iou_min']:.3f}",
            f"pooled Dice {s['pooled_dice']:.3f}; per-slice Dice on slices with abnormality "
            f"{s['slice_dice_positive_mean']:.3f}; slice detection sensitivity "
            f"{s['slice_sensitivity']:.3f}, specificity {s['slice_specificity']:.3f}",
        ]
        if s.get("dice_by_size"):
            lines.append("per-patient Dice by lesion size (thirds by true voxels): " + "; ".join(
                f"{k} ({v['n']}, {v['voxels']}) {v['dice_mean']:.3f}" for k, v in s["dice_by_size"].items()))
        return "\n".join(lines)


def _nan_to_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def summarize(scores: Sequence[PatientScore], truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> dict:
    d = np.array([s.dice for s in scores])
    j = np.array([s.iou for s in scores])
    t = np.concatenate([m.reshape(m.shape[0], -1) > 0 for m in truths])
    p = np.concatenate([m.reshape(m.shape[0], -1) > 0 for m in preds])
    inter, total = np.logical_and(t, p).sum(), t.sum() + p.sum()
    t_any, p_any = t.any(axis=1), p.any(axis=1)
    pos = np.flatnonzero(t_any)
    slice_dice = [2 * np.logical_and(t[i], p[i]).sum() / (t[i].sum() + p[i].sum()) for i in pos]
    return {
        "n_patients": len(scores),
        "n_slices": int(t.shape[0]),
        "dice_mean": float(d.mean()),
        "dice_median": float(np.median(d)),
        "dice_min": float(d.min()),
        "iou_mean": float(j.mean()),
        "iou_median": float(np.median(j)),
        "iou_min": float(j.min()),
        "pooled_dice": float(2 * inter / total) if total else 1.0,
        "slice_dice_positive_mean": float(np.mean(slice_dice)) if slice_dice else float("nan"),
        "slice_sensitivity": float((t_any & p_any).sum() / t_any.sum()) if t_any.any() else float("nan"),
        "slice_specificity": float((~t_any & ~p_any).sum() / (~t_any).sum()) if (~t_any).any() else float("nan"),
        "dice_by_size": dice_by_size(scores),
    }


def dice_by_size(scores: Sequence[PatientScore]) -> dict[str, dict]:
    """Mean per-patient Dice of the small / medium / large thirds of the patients, ranked
    by true abnormality voxels (with fewer than 3 patients: empty)."""
    if len(scores) < 3:
        return {}
    ranked = sorted(scores, key=lambda s: s.true_voxels)
    out = {}
    for name, part in zip(("small", "medium", "large"), np.array_split(np.arange(len(ranked)), 3)):
        group = [ranked[i] for i in part]
        out[name] = {
            "n": len(group),
            "voxels": f"{group[0].true_voxels}-{group[-1].true_voxels}",
            "dice_mean": float(np.mean([g.dice for g in group])),
            "dice_min": float(np.min([g.dice for g in group])),
        }
    return out


def _patient_id(folder: Path) -> str | None:
    try:
        return kaggle_slices(folder)[0]
    except InputError:  # refused when it is read, if it is one of those asked for
        return None


def patient_folders(data_root: str | os.PathLike, patients: Sequence[str] | None = None,
                    broken: list[Path] | None = None) -> list[Path]:
    """The patient folders ``evaluate`` scores (all under ``data_root``, or ``patients``),
    checked by file name only, before any slow work, to have a mask for every slice.
    Broken symbolic links under ``data_root`` are appended to ``broken`` when given."""
    folders = find_patient_folders(data_root, broken)
    if patients is not None:
        wanted = {patients} if isinstance(patients, str) else set(patients)
        names = {f: {f.name, _patient_id(f)} for f in folders}  # the folder's name or its slices' <ID>
        folders = [f for f in folders if names[f] & wanted]
        missing = wanted - set().union(*(names[f] for f in folders))
        if missing:
            raise InputError(f"{data_root}: patients not found: {', '.join(sorted(missing))}")
    for folder in folders:
        _, images, masks = kaggle_slices(folder)
        if not masks:
            raise InputError(f"{folder}: no masks; evaluation needs ground truth")
        unmasked = sorted(set(images) - set(masks))
        if unmasked:
            raise InputError(f"{folder}: {len(unmasked)} of {len(images)} slices have no mask (first: "
                             f"{images[unmasked[0]].stem}_mask.tif); evaluation needs ground truth for every slice")
    return folders


def evaluate(
    data_root: str | os.PathLike,
    model=None,
    *,
    patients: Sequence[str] | None = None,
    threshold: float | None = None,
    batch_size: int = 8,
    min_size: int | None = None,
    postprocess=None,
    flip_tta: bool = False,
    flair_only: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    engine: str = "auto",
    flair_model: bool = True,
) -> EvaluationReport:
    """Segment every patient folder under ``data_root`` (or only ``patients``) and score it.

    ``flair_only`` segments the FLAIR channel alone, as for a patient whose pre- and
    post-contrast sequences are missing. ``threshold``, ``postprocess`` and ``min_size``
    are as in ``segment_volume`` (default: the model's own); ``engine``: see
    ``inference.resolve_engine``. FLAIR-only patients go to the bundled model's FLAIR-only
    companion (with its own defaults) when it has one, unless ``flair_model`` is False;
    the report then names the model that segmented them.
    """
    from .inference import model_label, resolve_engine, resolve_model, resolve_postprocessing, segment_volume

    broken: list[Path] = []
    folders = patient_folders(data_root, patients, broken)
    if isinstance(model, (str, os.PathLike)):
        from .model import load_model

        model = load_model(model)
    asked = (threshold, postprocess, min_size)
    main = resolve_engine(model, engine)
    threshold, post = resolve_postprocessing(main, *asked)
    scores, truths, preds, routed = [], [], [], []
    for i, folder in enumerate(folders):
        st = read_patient(folder)
        if st.mask is None:
            raise InputError(f"{folder}: no masks; evaluation needs ground truth")
        image = flair_channel(st.image) if flair_only else st.image
        used = resolve_model(image, main, engine, flair_model)
        if used is not main:
            routed.append(used)
        t, p = (threshold, post) if used is main else resolve_postprocessing(used, *asked)
        pred = segment_volume(image, used, threshold=t, batch_size=batch_size, postprocess=p,
                              flip_tta=flip_tta, engine=engine, flair_model=False)
        scores.append(
            PatientScore(st.patient_id, st.n_slices, dice(st.mask, pred), iou(st.mask, pred),
                         int(st.mask.sum()), int(pred.sum()))
        )
        truths.append(st.mask)
        preds.append(pred)
        if progress is not None:
            progress(i + 1, len(folders), st.patient_id)
    label = model_label(main)
    if routed and len(routed) == len(folders):  # all FLAIR-only: the companion's figures
        label = model_label(routed[0])
        threshold, post = resolve_postprocessing(routed[0], *asked)
    elif routed:
        label += f"; {len(routed)} FLAIR-only patient(s) with {model_label(routed[0])}"
    return EvaluationReport(
        label, threshold, scores, summarize(scores, truths, preds), flair_only, post.describe(),
        [f"{b}: {missing_reason(b)}; not evaluated" for b in broken],
    )
