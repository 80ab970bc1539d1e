"""Qt-free helpers shared by the reader, the sample data and the widgets.

Everything here works on numpy arrays, ``PatientStack`` objects and napari layers (duck
typed: ``.data``, ``.name``, ``.metadata``, ``.scale``, ``.rgb``), never on Qt, and never
imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core import metrics
from ..core.errors import InputError, LGGSegError
from ..core.io import PatientStack
from ..core.metrics import abnormality_volume
from ..core.preprocess import check_values
from ..core.postprocess import PostProcessing

GROUND_TRUTH = "ground truth"
SEGMENTATION_SUFFIX = " segmentation"
# amber, so that a segmentation stands apart from the ground truth (napari's colour for 1)
SEGMENTATION_COLORS = {None: "#ff40ff", 0: "transparent", 1: "#ffc400"}


# --------------------------------------------------------------------------- reading
def geometry_metadata(stack: PatientStack) -> dict:
    """The geometry keys of layer metadata: ``voxel_size`` (mm, Z Y X) and, for NIfTI and
    DICOM, ``geometry`` (source affine and grid, see ``core.geometry.Geometry``)."""
    meta: dict = {}
    if stack.voxel_size is not None:
        meta["voxel_size"] = [float(v) for v in stack.voxel_size]
    if stack.geometry is not None:
        meta["geometry"] = stack.geometry.as_metadata()
    return meta


def stack_layer_data(stack: PatientStack) -> list[tuple]:
    """napari layer-data tuples for a patient: the MRI image, plus 'ground truth' labels.

    The voxel size (when known) is the layers' ``scale``; the source geometry is kept in
    ``metadata`` so that segmentations and writers can put labels back on the source grid.
    """
    rgb = stack.image.ndim == 4
    geo = geometry_metadata(stack)
    meta = {
        "patient_id": stack.patient_id,
        "slice_files": list(stack.slice_files),
        "source": str(stack.source) if stack.source is not None else None,
        **geo,
    }
    common: dict = {}
    if stack.voxel_size is not None:
        common["scale"] = tuple(float(v) for v in stack.voxel_size)
    layers: list[tuple] = [
        (stack.image, {"name": stack.patient_id, "rgb": rgb, "metadata": dict(meta), **common}, "image")
    ]
    if stack.mask is not None:
        layers.append(
            (
                stack.mask,
                {"name": GROUND_TRUTH, "opacity": 0.5, **common,
                 "metadata": {"patient_id": stack.patient_id, "source": meta["source"], **geo}},
                "labels",
            )
        )
    return layers


SEQUENCE_NAMES = ("pre-contrast", "FLAIR", "post-contrast")


def sequence_layer_data(image: np.ndarray, name: str, *, scale=None, metadata: dict | None = None) -> tuple:
    """One layer-data tuple that napari splits (``channel_axis``) into three grey layers,
    ``<name> pre-contrast``, ``<name> FLAIR`` (visible) and ``<name> post-contrast``
    (hidden), so that a kaggle RGB volume renders in 3D as a FLAIR volume under labels."""
    data = np.asarray(image)
    if data.ndim != 4 or data.shape[-1] < 3:
        raise InputError(f"'{name}': sequences need an RGB (Z, Y, X, 3) volume, not shape {data.shape}")
    meta: dict = {
        "channel_axis": 3,
        "name": [f"{name} {s}" for s in SEQUENCE_NAMES],
        "visible": [False, True, False],
        "colormap": "gray",
        "blending": "additive",
        "metadata": dict(metadata or {}),
    }
    if scale is not None:
        meta["scale"] = tuple(float(v) for v in scale)[-3:]
    return (data[..., :3], meta, "image")


def add_sequence_layers(viewer, image_layer) -> list:
    """Add the three sequences of an RGB image layer as grey layers (FLAIR visible) below
    the labels; returns the new layers. For 3D viewing; the RGB layer is hidden."""
    data, meta, _ = sequence_layer_data(
        image_layer.data, image_layer.name, scale=image_layer.scale, metadata=image_layer.metadata
    )
    layers = viewer.add_image(data, **meta)
    image_layer.visible = False
    first_labels = next((i for i, lay in enumerate(viewer.layers) if type(lay).__name__ == "Labels"), None)
    if first_labels is not None:
        for lay in layers:
            viewer.layers.move(viewer.layers.index(lay), first_labels)
            first_labels += 1
    return list(layers)


def labels_tiff_layer_data(path, voxel_size) -> tuple:
    """A Labels layer-data tuple for a labels TIFF that this plugin wrote."""
    from pathlib import Path

    from ..core.io import _read_tiff

    p = Path(path)
    data = _read_tiff(p)
    if data.ndim == 2:
        data = data[None]
    meta: dict = {"name": p.stem, "metadata": {"patient_id": p.stem, "source": str(p)}}
    if voxel_size is not None and len(voxel_size) == data.ndim:
        meta["scale"] = tuple(float(v) for v in voxel_size)
        meta["metadata"]["voxel_size"] = [float(v) for v in voxel_size]
    return (data, meta, "labels")


# --------------------------------------------------------------------------- layers -> arrays
def _layer_array(layer) -> np.ndarray:
    """The array of an image layer, checked: a slice or a volume, grey or RGB, of finite
    real numbers (``core.preprocess.check_values``)."""
    if getattr(layer, "multiscale", False):
        raise InputError(f"layer '{layer.name}': multiscale images are not supported; open level 0")
    data = np.asarray(layer.data)
    rgb = bool(getattr(layer, "rgb", False))
    spatial = data.ndim - (1 if rgb else 0)
    if rgb and data.shape[-1] not in (3, 4):
        raise InputError(f"layer '{layer.name}': RGB data must have 3 or 4 channels, not {data.shape[-1]}")
    if spatial not in (2, 3):
        raise InputError(
            f"layer '{layer.name}': data of shape {data.shape} is not a slice or a volume; "
            "expected (Z, Y, X), (Z, Y, X, 3), (Y, X) or (Y, X, 3)"
        )
    check_values(data, f"layer '{layer.name}'")  # named here, not later in core as 'image'
    return data


def image_volume(layer) -> np.ndarray:
    """The array of an image layer as ``segment_volume`` takes it: (Z, Y, X, 3), (Y, X[, 3]),
    or (Z, Y, X, 1) for a grey volume (the layer is not ``rgb``), as ``core.batch.stack_volume``
    gives it, so that one with 3 or 4 columns is not taken for one RGB slice."""
    data = _layer_array(layer)
    return data[..., None] if data.ndim == 3 and not getattr(layer, "rgb", False) else data


def layer_geometry(layer):
    """The source ``core.geometry.Geometry`` a layer's metadata records (NIfTI, DICOM), or None."""
    from ..core.geometry import Geometry

    meta = getattr(layer, "metadata", None) or {}
    return Geometry.from_metadata(meta["geometry"]) if meta.get("geometry") else None


def layer_stack(layer) -> PatientStack:
    """An image layer as a ``PatientStack`` (its data, name, voxel size and source geometry
    from the metadata), e.g. for ``core.sequences.stack_sequences``."""
    meta = getattr(layer, "metadata", None) or {}
    vs = meta.get("voxel_size")
    return PatientStack(image=_layer_array(layer), mask=None, patient_id=f"layer '{layer.name}'", source=None,
                        voxel_size=tuple(float(v) for v in vs) if vs else None, geometry=layer_geometry(layer))


def spatial_shape(layer) -> tuple[int, ...]:
    data = layer.data
    shape = tuple(data.shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def mask_from_layer(layer) -> np.ndarray:
    """A binary (0/1 uint8) mask from a Labels layer (non-zero = foreground) or a binary Image."""
    data = np.asarray(layer.data)
    if getattr(layer, "rgb", False):
        raise InputError(f"layer '{layer.name}' is an RGB image, not a mask")
    if type(layer).__name__ != "Labels" and data.dtype != bool:
        values = np.unique(data)
        if values.size > 2 or (values.size == 2 and values[0] != 0):
            shown = ", ".join(f"{v:g}" for v in values[:5])
            raise InputError(
                f"layer '{layer.name}' is not a binary mask (values {shown}{', ...' if values.size > 5 else ''}); "
                "use a Labels layer or an image holding only 0 and one other value"
            )
    return (data > 0).astype(np.uint8)


def patient_id_of(layer) -> str:
    meta = getattr(layer, "metadata", None) or {}
    return str(meta.get("patient_id") or layer.name)


def stacks_from_layer_pairs(pairs: Sequence[tuple[Any, Any]]) -> list[PatientStack]:
    """(image layer, labels layer) pairs -> PatientStacks for training; checks the shapes."""
    stacks: list[PatientStack] = []
    seen: dict[str, int] = {}
    for image_layer, labels_layer in pairs:
        image = image_volume(image_layer)
        mask = mask_from_layer(labels_layer)
        want = spatial_shape(image_layer)
        if mask.shape != want:
            raise InputError(
                f"labels '{labels_layer.name}' of shape {mask.shape} do not match image "
                f"'{image_layer.name}' of shape {want}"
            )
        if len(want) == 2:
            image, mask = image[None], mask[None]
        pid = patient_id_of(image_layer)
        if pid in seen:  # training splits by patient: keep two pairs of one id apart
            seen[pid] += 1
            pid = f"{pid}#{seen[pid]}"
        else:
            seen[pid] = 0
        stacks.append(PatientStack(image=image, mask=mask, patient_id=pid, source=None))
    if not stacks:
        raise InputError("add at least one image + labels pair to train on")
    return stacks


# --------------------------------------------------------------------------- results
def labels_digest(data) -> str:
    """A fingerprint of a labels array, to tell whether it was edited since we wrote it."""
    arr = np.ascontiguousarray(np.asarray(data))
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.shape}{arr.dtype}".encode())
    h.update(arr.view(np.uint8).reshape(-1) if arr.size else b"")
    return h.hexdigest()


def segmentation_metadata(
    model_info: dict, *, threshold: float, min_size: int, image_layer, labels: np.ndarray,
    postprocessing: PostProcessing | None = None, voxel_size: Sequence[float] | None = None,
) -> dict:
    """Metadata stored on a segmentation layer (and read back by the writers): model,
    the threshold and post-processing the run used, image, time, digest and geometry
    (``voxel_size`` given here wins over the image's)."""
    extra: dict = {}
    if postprocessing is not None:
        extra = {"postprocessing": postprocessing.describe(), "postprocessing_settings": postprocessing.to_dict()}
    if voxel_size is not None:
        extra["voxel_size"] = [float(v) for v in voxel_size]
    return {
        "model": str(model_info.get("name", "unknown")),
        "version": str(model_info.get("version", "")),
        "threshold": float(threshold),
        "min_size": int(min_size),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "image": image_layer.name,
        "patient_id": patient_id_of(image_layer),
        "digest": labels_digest(labels),
        **{k: v for k, v in (getattr(image_layer, "metadata", None) or {}).items()
           if k in ("voxel_size", "geometry", "source", "slice_files")},
        **extra,
    }


def was_edited(layer) -> bool:
    """True when a segmentation layer's data no longer matches what the widget wrote."""
    digest = (getattr(layer, "metadata", None) or {}).get("digest")
    return digest is None or digest != labels_digest(layer.data)


def voxel_size(scale: Sequence[float]) -> tuple[float, ...] | None:
    """The scale as a voxel size in mm, or None when it is the default (all 1)."""
    s = tuple(float(v) for v in scale)
    return None if all(abs(v - 1.0) < 1e-12 for v in s) else s


def volume_summary(labels: np.ndarray, scale: Sequence[float]) -> dict:
    return abnormality_volume(labels, voxel_size(scale))


def format_volume(summary: dict) -> str:
    """``Abnormality: <core.metrics.format_volume>`` for the widgets."""
    return "Abnormality: " + metrics.format_volume(summary)


def readable_error(exc: BaseException) -> str:
    """A one-line message for a notification."""
    if isinstance(exc, LGGSegError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "Not enough memory; try a smaller batch size"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
