"""npe2 reader: kaggle_3m patient folders, MRI TIFF stacks/slices, NIfTI files, DICOM series.

The manifest claims only ``*.tif``, ``*.tiff``, ``*.nii``, ``*.nii.gz``, ``*.dcm`` and
folders. ``get_reader`` returns None for paths that are not ours (folders that are neither
a kaggle_3m patient nor a DICOM series, mask files, TIFFs whose shape cannot be an MRI
volume) so that other readers can try them. For a path that looks like ours but is broken,
the returned reader raises ``InputError`` with a clear message, which napari shows.

Layers carry the voxel size as ``scale`` and the source geometry in ``metadata``; a labels
TIFF written by this plugin reopens as a Labels layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core.io import TIFF_SUFFIXES, claims_path, read_patient
from ..core.tiff_geometry import tiff_info
from ._layers import labels_tiff_layer_data, stack_layer_data

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]


claims = claims_path  # the rule lives in core.io


def get_reader(path: PathOrPaths) -> Callable | None:
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(claims(p) for p in paths):
        return None
    return read_layers


def read_layers(path: PathOrPaths) -> list[tuple]:
    """Read one or several patients; each gives an image layer and maybe 'ground truth'.

    A labels TIFF written by this plugin gives one Labels layer with its voxel size.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[tuple] = []
    for p in paths:
        p = Path(p)
        if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES:
            voxel, is_labels = tiff_info(p)
            if is_labels:
                layers.append(labels_tiff_layer_data(p, voxel))
                continue
        layers.extend(stack_layer_data(read_patient(p)))
    return layers
