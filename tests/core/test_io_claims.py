"""core.io.claims_path: the reader's "is this ours?" rule, without napari."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_lgg_seg.core.io import claims_path, is_mask_file

from ..conftest import write_kaggle_patient


def test_claims_patient_folders_and_mri_tiffs_only(tmp_path):
    patient = write_kaggle_patient(tmp_path / "data")
    assert claims_path(patient)
    slices = sorted(patient.glob("*.tif"))
    image_slice = next(p for p in slices if not p.name.endswith("_mask.tif"))
    mask_slice = next(p for p in slices if p.name.endswith("_mask.tif"))
    assert claims_path(image_slice) and not claims_path(mask_slice)
    assert is_mask_file(mask_slice) and not is_mask_file(image_slice)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not claims_path(empty)
    (tmp_path / "notes.txt").write_text("x")
    assert not claims_path(tmp_path / "notes.txt")
    assert not claims_path(tmp_path / "missing.tif")
    tifffile.imwrite(tmp_path / "5d.tif", np.zeros((2, 2, 8, 8, 2), np.uint8))  # not an MRI volume
    assert not claims_path(tmp_path / "5d.tif")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((4, 32, 32), np.uint8))
    assert claims_path(tmp_path / "stack.tif")
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    assert claims_path(tmp_path / "broken.tif")  # ours to explain: read_patient says what is wrong
