"""3D post-processing of thresholded probabilities: which connected components to keep.

The bundled model ships the post-processing it was chosen with (``model.json``:
``"threshold"`` and ``"postprocessing"``); ``segment_volume`` uses it unless told
otherwise. A model without that metadata (a ``.keras`` file) keeps threshold 0.5 and no
post-processing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError

MODES = ("none", "min_size", "largest", "peak", "mean")
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class PostProcessing:
    """Which 3D connected components (face-connected) of the thresholded volume to keep.

    - ``none``: all of them;
    - ``min_size``: those of at least ``min_size`` voxels;
    - ``largest``: only the largest (Buda et al. 2019);
    - ``peak`` / ``mean``: those whose highest / mean probability is >= ``min_probability``.

    ``min_size`` also applies on top of ``largest``, ``peak`` and ``mean`` when above 0.
    """

    mode: str = "none"
    min_size: int = 0
    min_probability: float = 0.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"unknown post-processing {self.mode!r}; use one of {', '.join(MODES)}")
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, (int, np.integer)) or self.min_size < 0:
            raise InputError(f"minimum component size must be a whole number >= 0, not {self.min_size!r}")
        if not 0.0 <= float(self.min_probability) <= 1.0:
            raise InputError(f"minimum component probability must be in [0, 1], not {self.min_probability!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> PostProcessing:
        """From ``model.json``'s ``"postprocessing"`` (missing: none)."""
        if not d:
            return cls()
        unknown = set(d) - {"mode", "min_size", "min_probability"}
        if unknown:
            raise InputError(f"unknown post-processing fields: {', '.join(sorted(unknown))}")
        return cls(str(d.get("mode", "none")), int(d.get("min_size", 0)), float(d.get("min_probability", 0.0)))

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """Short human-readable form, e.g. ``keep components with peak probability >= 0.9``."""
        extra = f", at least {self.min_size} voxels" if self.min_size and self.mode != "min_size" else ""
        return {
            "none": "none" if not self.min_size else f"drop components under {self.min_size} voxels",
            "min_size": f"drop components under {self.min_size} voxels",
            "largest": "keep the largest component" + extra,
            "peak": f"keep components with peak probability >= {self.min_probability:g}" + extra,
            "mean": f"keep components with mean probability >= {self.min_probability:g}" + extra,
        }[self.mode]


NONE = PostProcessing()


def info_defaults(info: dict | None) -> tuple[float, PostProcessing]:
    """Threshold and post-processing of a model's metadata (``model.json``), else 0.5 / none."""
    info = info or {}
    return float(info.get("threshold", DEFAULT_THRESHOLD)), PostProcessing.from_dict(info.get("postprocessing"))


def model_defaults(model) -> tuple[float, PostProcessing]:
    """Threshold and post-processing stored with a model (its ``lgg_info``), else 0.5 / none."""
    return info_defaults(getattr(model, "lgg_info", None))


def describe_settings(threshold: float, post: PostProcessing) -> str:
    """e.g. ``threshold 0.5; keep components with peak probability >= 0.9``."""
    text = post.describe()
    return f"threshold {threshold:g}; " + ("no post-processing" if text == "none" else text)


def keep_components(mask: np.ndarray, probs: np.ndarray | None, post: PostProcessing) -> np.ndarray:
    """Apply ``post`` to a binary ``mask`` (Z, Y, X) or (Y, X); ``probs`` (same shape) is
    needed for ``peak`` and ``mean``. Returns uint8 0/1 of the same shape."""
    mask = np.asarray(mask)
    if post.mode in ("peak", "mean") and (probs is None or np.shape(probs) != mask.shape):
        raise InputError(f"post-processing {post.mode!r} needs the probabilities of the same shape as the mask")
    if post.mode == "none" and post.min_size <= 1 or not mask.any():
        return (mask > 0).astype(np.uint8)
    from scipy import ndimage

    from .components import component_sizes, label_components, select_components

    squeeze = mask.ndim == 2
    if squeeze:
        mask, probs = mask[None], None if probs is None else np.asarray(probs)[None]
    comp, n = label_components(mask)
    index = np.arange(1, n + 1)
    keep = np.ones(n + 1, bool)
    keep[0] = False
    sizes = component_sizes(comp, n)
    if post.min_size > 1:
        keep &= sizes >= post.min_size
    if post.mode == "largest":
        largest = np.zeros(n + 1, bool)
        largest[1 + int(np.argmax(sizes[1:]))] = True
        keep &= largest
    elif post.mode == "peak":
        keep[1:] &= np.asarray(ndimage.maximum(probs, comp, index)) >= post.min_probability
    elif post.mode == "mean":
        keep[1:] &= np.asarray(ndimage.mean(probs, comp, index)) >= post.min_probability
    out = select_components(comp, keep)
    return out[0] if squeeze else out
