"""One real kaggle_3m patient, rewritten as NIfTI and DICOM in three orientations: the
labels overlay the ground truth in every orientation as on the TIFF path, and the written
NIfTI has the source affine."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_lgg_seg import dice, read_patient
from napari_lgg_seg.core.batch import segment_stack, write_labels

from ..conftest import REAL_PATIENTS, requires_real_data
from ..mri_files import ORIENTATIONS, OracleModel, kaggle_affine, to_orientation, write_dicom_series, write_nifti

PATIENT = "TCGA_CS_4942_19970222"

pytestmark = [requires_real_data, pytest.mark.real_data]


@pytest.fixture(scope="module")
def real():
    folder = REAL_PATIENTS / PATIENT
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    stack = read_patient(folder)
    assert stack.mask.sum() > 1000
    return stack


def _check(tmp_path, stack, model, kaggle_image, src_truth, affine, tiff_dice):
    """Segment, write NIfTI; the file has ``affine`` and its labels match ``src_truth``."""
    assert np.array_equal(stack.image, kaggle_image)
    labels = segment_stack(stack, model, batch_size=8)
    out = write_labels(tmp_path / "labels.nii.gz", labels, stack)
    back = nib.load(str(out))
    assert np.allclose(back.affine, affine, atol=1e-4)
    on_source = np.asarray(back.dataobj)
    assert on_source.shape == src_truth.shape
    d = dice(src_truth, on_source)  # the labels overlay the truth on the source grid
    assert abs(d - tiff_dice) <= 0.01, (d, tiff_dice)
    return d


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_nifti_and_dicom_labels_overlay_truth_in_every_orientation(tmp_path, real, name):
    model = OracleModel(real.image, real.mask)
    tiff_dice = dice(real.mask, segment_stack(real, model))
    assert tiff_dice > 0.99  # the oracle knows the kaggle-oriented slices
    src, affine = to_orientation(real.image, ORIENTATIONS[name])
    nii = read_patient(write_nifti(tmp_path / f"{name}.nii.gz", src, affine))
    _check(tmp_path, nii, model, real.image, to_orientation(real.mask, ORIENTATIONS[name])[0], affine, tiff_dice)

    flair = np.ascontiguousarray(real.image[..., 1])
    grey_model = OracleModel(flair, real.mask)
    src_f, affine_f = to_orientation(flair, ORIENTATIONS[name])
    dcm = read_patient(write_dicom_series(tmp_path / "dicom", src_f, affine_f))
    assert dcm.geometry.source_format == "dicom"
    # a DICOM series' voxel grid is its slices sorted by position: the same voxels in world
    # space as the volume it was made from (checked here through the kaggle-ordered affine)
    assert np.allclose(dcm.geometry.kaggle_affine, kaggle_affine(), atol=1e-4)
    _check(tmp_path, dcm, grey_model, flair, dcm.geometry.to_source(real.mask), dcm.geometry.affine, tiff_dice)


def test_bundled_model_gives_the_tiff_dice_in_every_orientation(tmp_path, real):
    """The bundled U-Net on the patient's tumour slices: same Dice in every orientation."""
    from napari_lgg_seg import load_model

    z = np.flatnonzero(real.mask.reshape(len(real.mask), -1).any(axis=1))
    keep = z[:: max(1, len(z) // 6)][:6]
    sub = type(real)(image=real.image[keep], mask=real.mask[keep], patient_id=real.patient_id)
    model = load_model()
    tiff_dice = dice(sub.mask, segment_stack(sub, model))
    assert tiff_dice > 0.5
    seen = {}
    for name, codes in ORIENTATIONS.items():
        src, affine = to_orientation(sub.image, codes)
        stack = read_patient(write_nifti(tmp_path / f"{name}.nii.gz", src, affine))
        seen[name] = _check(tmp_path, stack, model, sub.image, to_orientation(sub.mask, codes)[0], affine,
                            tiff_dice)
    print(f"bundled-model Dice: TIFF {tiff_dice:.4f}, " + ", ".join(f"{k} {v:.4f}" for k, v in seen.items()))
