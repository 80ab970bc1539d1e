"""Stack separate sequence files (pre-contrast, FLAIR, post-contrast) into the model's
three channels. Sequences must share the FLAIR's voxel grid: we do not register."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .io import PatientStack


def _grey(stack: PatientStack, what: str) -> np.ndarray:
    img = np.asarray(stack.image)
    if img.ndim == 4:
        raise InputError(f"{stack.source or stack.patient_id}: the {what} must be one grey sequence, "
                         f"not a {img.shape[-1]}-channel image")
    return img


def stack_sequences(
    flair: PatientStack, pre_contrast: PatientStack | None = None, post_contrast: PatientStack | None = None
) -> PatientStack:
    """A ``PatientStack`` with image ``(Z, Y, X, 3)`` = (pre-contrast, FLAIR, post-contrast).

    A missing sequence is replaced by the FLAIR, as the model was trained to cope with.
    Raises InputError when a sequence has another shape or another affine than the FLAIR.
    """
    f = _grey(flair, "FLAIR")
    channels = []
    for seq, what in ((pre_contrast, "pre-contrast"), (None, "FLAIR"), (post_contrast, "post-contrast")):
        if what == "FLAIR" or seq is None:
            channels.append(f)
            continue
        s = _grey(seq, what)
        name = seq.source or seq.patient_id
        if s.shape != f.shape:
            raise InputError(f"{name}: {what} of shape {s.shape} is not on the FLAIR's grid {f.shape}; "
                             "resample it to the FLAIR first (we do not register)")
        fg, sg = flair.geometry, seq.geometry
        if (fg is None) != (sg is None) or (
            fg is not None and not np.allclose(fg.kaggle_affine, sg.kaggle_affine, atol=1e-3)
        ):
            raise InputError(f"{name}: {what} has another voxel-to-world affine than the FLAIR; "
                             "resample it to the FLAIR first (we do not register)")
        if flair.voxel_size is not None and seq.voxel_size is not None and not np.allclose(
            flair.voxel_size, seq.voxel_size, rtol=1e-3
        ):
            raise InputError(f"{name}: {what} voxel size {seq.voxel_size} differs from the FLAIR's "
                             f"{flair.voxel_size}")
        channels.append(s)
    dtype = np.result_type(*channels)
    image = np.stack([c.astype(dtype, copy=False) for c in channels], axis=-1)
    return PatientStack(
        image=image, mask=flair.mask, patient_id=flair.patient_id, slice_files=flair.slice_files,
        source=flair.source, voxel_size=flair.voxel_size, geometry=flair.geometry,
    )
