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


def _spec(**widget: Any) -> dict:
    return {"widget": widget}


@dataclass(frozen=True)
class SegmentOptions:
    """How to segment a volume (the values of the Segment widget)."""

    threshold: float = field(default=0.5, metadata=_spec(
        min=0.01, max=0.99, step=0.05, tooltip="Probability above which a voxel is abnormal"))
    batch_size: int = field(default=8, metadata=_spec(
        label="batch size", min=1, max=512, tooltip="Slices per model call; smaller uses less memory"))
    min_size: int = field(default=0, metadata=_spec(
        label="min. component", min=0, max=10_000_000,
        tooltip="Remove 3D connected components smaller than this many voxels (0 keeps all)"))
    flip_tta: bool = field(default=False, metadata=_spec(
        label="mirror TTA", tooltip="Also predict the left-right mirrored slices and average (twice as slow)"))

    def core_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``segment_volume`` (besides volume, model and progress)."""
        return dataclasses.asdict(self)

    def as_metadata(self) -> dict[str, Any]:
        """What is stored on the Labels layer."""
        return dataclasses.asdict(self)
