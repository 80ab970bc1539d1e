"""The Segment widget's settings as one Qt-free dataclass.

Every field with a ``metadata["widget"]`` spec becomes a magicgui value widget of the
same name in the Segment widget (in field order), is remembered across restarts, and is
passed to ``core.inference.segment_volume`` by ``core_kwargs``. To add a setting, add a
field here (and, if ``segment_volume`` does not take it as is, map it in ``core_kwargs``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import InputError
from ..core.geometry import parse_voxel_size
from ..core.postprocess import PostProcessing


def _spec(**widget: Any) -> dict:
    return {"widget": widget}


POSTPROCESS_CHOICES = [("model's own", "model"), ("none", "none"), ("min. component size", "min_size"),
                       ("largest component", "largest"), ("components by peak probability", "peak"),
                       ("components by mean probability", "mean")]
MODEL_OWN = "model's own"
ENGINE_CHOICES = [("auto (int8 for the bundled model)", "auto"), ("int8", "int8"), ("keras (float32)", "keras")]


@dataclass(frozen=True)
class SegmentOptions:
    """How to segment a volume (the values of the Segment widget)."""

    threshold: float | None = field(default=None, metadata=_spec(
        min=0.0, max=0.99, step=0.05, none_if=0.0, none_text=MODEL_OWN,
        tooltip="Probability above which a voxel is abnormal; the lowest value uses the model's own"))
    postprocess: str = field(default="model", metadata=_spec(
        label="post-processing", widget_type="ComboBox", choices=POSTPROCESS_CHOICES,
        tooltip="Which 3D connected components to keep: the model's own choice, all (none), ..."))
    min_size: int = field(default=0, metadata=_spec(
        label="min. component", min=0, max=10_000_000,
        tooltip="Remove 3D connected components smaller than this many voxels "
                "(0: the model's own with \"model's own\", else keep all)"))
    min_probability: float = field(default=0.5, metadata=_spec(
        label="min. probability", min=0.0, max=1.0, step=0.05,
        tooltip="Keep components whose peak / mean probability reaches this (peak and mean only)"))
    batch_size: int = field(default=8, metadata=_spec(
        label="batch size", min=1, max=512, tooltip="Slices per model call; smaller uses less memory"))
    flip_tta: bool = field(default=False, metadata=_spec(
        label="mirror TTA", tooltip="Also predict the left-right mirrored slices and average (twice as slow)"))
    engine: str = field(default="auto", metadata=_spec(
        widget_type="ComboBox", choices=ENGINE_CHOICES,
        tooltip="auto: the fast int8 engine for the bundled model, Keras float32 for .keras files"))
    flair_model: bool = field(default=True, metadata=_spec(
        label="FLAIR-only model",
        tooltip="For FLAIR-only input (grey, or pre- and post-contrast copies of FLAIR) use the bundled "
                "model's FLAIR-only companion, when it has one; off: the main model for all input"))
    voxel_size: str = field(default="", metadata=_spec(
        label="voxel size (mm)", widget_type="LineEdit",
        tooltip="'Z, Y, X' in mm (or one number) for images whose file has none (kaggle_3m); "
                "empty: unknown. Applied as the scale of the image and the result, so mm³ shows"))

    def postprocessing(self) -> PostProcessing | str | None:
        """``segment_volume``'s ``postprocess``: None (the model's own), "none" or a PostProcessing."""
        if self.postprocess == "model":
            return None
        if self.postprocess == "none":
            return "none"
        if self.postprocess == "min_size" and self.min_size <= 0:
            raise InputError("post-processing 'min. component size' needs a min. component above 0")
        prob = self.min_probability if self.postprocess in ("peak", "mean") else 0.0
        return PostProcessing(self.postprocess, int(self.min_size), float(prob))

    def core_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``segment_volume`` (besides volume, model and progress).

        Threshold None and, with the model's own post-processing, min. component 0 keep
        what the model was chosen with."""
        post = self.postprocessing()
        if post is None:
            min_size = self.min_size or None
        elif post == "none":
            min_size = self.min_size
        else:
            min_size = None  # part of the PostProcessing
        return {"threshold": self.threshold, "postprocess": post, "min_size": min_size,
                "batch_size": self.batch_size, "flip_tta": self.flip_tta, "engine": self.engine,
                "flair_model": self.flair_model}

    def voxel_mm(self) -> tuple[float, float, float] | None:
        """The typed voxel size (Z, Y, X) in mm, or None when unknown."""
        return parse_voxel_size(self.voxel_size)

    def as_metadata(self) -> dict[str, Any]:
        """What is stored on the Labels layer."""
        return dataclasses.asdict(self)
