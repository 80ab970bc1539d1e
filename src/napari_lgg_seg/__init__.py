"""napari-lgg-seg: segment lower-grade glioma FLAIR abnormality in brain MRI with a U-Net.

The public API is importable from here. Functions that need TensorFlow import it only
when they are first used (``lgg.load_model``, ``from napari_lgg_seg import train``), so
``import napari_lgg_seg`` and reading files stay light; ``segment_volume`` with the
bundled model's int8 engine needs no TensorFlow at all.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .core.errors import Cancelled, InputError, LGGSegError, ModelError
from .core.io import PatientStack, read_patient, write_kaggle_masks, write_labels_tiff
from .core.metrics import abnormality_volume, dice, iou, per_slice

__version__ = "0.1.0"

_LAZY = {
    "segment_volume": "napari_lgg_seg.core.inference",
    "load_model": "napari_lgg_seg.core.model",
    "build_unet": "napari_lgg_seg.core.model",
    "save_model": "napari_lgg_seg.core.model",
    "train": "napari_lgg_seg.core.training",
    "TrainConfig": "napari_lgg_seg.core.train_config",
    "evaluate": "napari_lgg_seg.core.evaluation",
    "split_patients": "napari_lgg_seg.core.splits",
    "segment_many": "napari_lgg_seg.core.batch",
    "stack_sequences": "napari_lgg_seg.core.sequences",
    "write_labels_nifti": "napari_lgg_seg.core.nifti",
}

if TYPE_CHECKING:  # pragma: no cover
    from .core.batch import segment_many
    from .core.evaluation import evaluate
    from .core.nifti import write_labels_nifti
    from .core.sequences import stack_sequences
    from .core.inference import segment_volume
    from .core.model import build_unet, load_model, save_model
    from .core.splits import split_patients
    from .core.train_config import TrainConfig
    from .core.training import train


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_lgg_seg' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazy names too, so that tab completion (napari's console) offers them."""
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Cancelled", "InputError", "LGGSegError", "ModelError", "PatientStack", "abnormality_volume",
    "build_unet", "dice", "evaluate", "iou", "load_model", "per_slice", "read_patient",
    "save_model", "segment_many", "segment_volume", "split_patients", "stack_sequences", "train", "TrainConfig",
    "write_kaggle_masks", "write_labels_nifti", "write_labels_tiff",
]
