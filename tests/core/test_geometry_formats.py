"""NIfTI and DICOM reading in any orientation, labels back on the source grid, TIFF voxel
size, sequence stacking, and the clear errors for bad files."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_lgg_seg import InputError, read_patient, stack_sequences, write_labels_nifti, write_labels_tiff
from napari_lgg_seg.core.geometry import Geometry
from napari_lgg_seg.core.tiff_geometry import tiff_info

from ..mri_files import ORIENTATIONS, VOXEL, kaggle_affine, to_orientation, write_dicom_series, write_nifti


def kaggle_volume(z=5, y=12, x=10, channels=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (z, y, x) if channels is None else (z, y, x, channels)
    return rng.integers(0, 1000, shape).astype(np.int16)


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_nifti_any_orientation_reads_in_kaggle_order_and_writes_back_on_source_grid(tmp_path, name):
    vol = kaggle_volume()
    src, affine = to_orientation(vol, ORIENTATIONS[name])
    f = write_nifti(tmp_path / f"{name}.nii.gz", src, affine)
    stack = read_patient(f)
    assert np.array_equal(stack.image, vol)  # exactly the kaggle voxels, not resampled
    assert stack.voxel_size == pytest.approx(VOXEL)
    assert stack.patient_id == name and "".join(stack.geometry.source_axcodes) == "".join(ORIENTATIONS[name])
    labels = (vol > 500).astype(np.uint8)
    out = write_labels_nifti(tmp_path / "labels.nii.gz", labels, stack.geometry)
    back = nib.load(str(out))
    assert np.allclose(back.affine, affine) and back.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(back.dataobj), (src > 500).astype(np.uint8))
    assert back.header.get_xyzt_units()[0] == "mm"


def test_nifti_with_three_sequences_and_plain_nii(tmp_path):
    vol = kaggle_volume(channels=3)
    src, affine = to_orientation(vol, ORIENTATIONS["LPS"])
    stack = read_patient(write_nifti(tmp_path / "three.nii", src, affine))
    assert stack.image.shape == (5, 12, 10, 3) and np.array_equal(stack.image, vol)
    # ITK's three-component image (X, Y, Z, 1, 3) was refused as "3 volumes; expected ... three sequences"
    five = read_patient(write_nifti(tmp_path / "five.nii.gz", src[:, :, :, None, :], affine))
    assert np.array_equal(five.image, vol)


def test_nifti_without_geometry_uses_the_voxel_size(tmp_path):
    labels = np.zeros((4, 6, 8), np.uint8)
    labels[1, 2, 3] = 1
    out = write_labels_nifti(tmp_path / "l.nii", labels, voxel_size=(3, 0.5, 0.25))
    back = read_patient(out)
    assert back.voxel_size == pytest.approx((3, 0.5, 0.25)) and np.array_equal(back.image, labels)
    with pytest.raises(InputError, match="must end with .nii"):
        write_labels_nifti(tmp_path / "l.img", labels, voxel_size=(1, 1, 1))
    with pytest.raises(InputError, match="voxel size"):
        write_labels_nifti(tmp_path / "l.nii", labels, voxel_size=(1, float("inf"), 1))


@pytest.mark.parametrize("case", ["2d", "4d_four", "truncated", "nan", "garbage", "singular", "rgb24", "huge"])
def test_bad_nifti_gives_one_clear_error(tmp_path, case):
    f = tmp_path / f"{case}.nii.gz"
    eye = np.eye(4)
    if case == "2d":
        write_nifti(f, np.zeros((8, 8), np.int16), eye)
        match = "not a volume"
    elif case == "4d_four":
        write_nifti(f, np.zeros((8, 8, 4, 4), np.int16), eye)
        match = "has 4 volumes"
    elif case == "truncated":
        write_nifti(f, np.random.default_rng(0).integers(0, 99, (32, 32, 32)).astype(np.int16), eye)
        f.write_bytes(f.read_bytes()[:3000])
        match = "not a readable NIfTI"
    elif case == "nan":
        data = np.zeros((4, 4, 4), np.float32)
        data[1, 1, 1] = np.nan
        write_nifti(f, data, eye)
        match = "NaN"
    elif case in ("rgb24", "huge"):  # these errors named no file ('image: ...') and came only when segmenting
        data = (np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]) if case == "rgb24"
                else np.full((4, 4, 4), 1e300))
        write_nifti(f, data, eye)
        match = "is not numeric" if case == "rgb24" else "beyond the float32 range"
    elif case == "singular":  # the error did not say which file
        write_nifti(f, np.zeros((4, 4, 4), np.int16), np.diag([1e-9, 1e-9, 1e-9, 1.0]))
        match = "affine is singular"
    else:
        f.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
        match = "not a readable NIfTI"
    with pytest.raises(InputError, match=match) as info:
        read_patient(f)
    assert str(f) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_dicom_series_in_any_orientation(tmp_path, name):
    vol = kaggle_volume().astype(np.uint16)
    src, affine = to_orientation(vol, ORIENTATIONS[name])
    folder = write_dicom_series(tmp_path / name, src, affine)
    stack = read_patient(folder)
    assert np.array_equal(stack.image, vol)
    assert stack.voxel_size == pytest.approx(VOXEL)
    assert np.allclose(stack.geometry.kaggle_affine, kaggle_affine(), atol=1e-4)
    # one file of the series opens the whole series
    assert np.array_equal(read_patient(next(folder.glob("*.dcm"))).image, vol)


def test_dicom_bad_series(tmp_path):
    vol = kaggle_volume().astype(np.uint16)
    two = tmp_path / "two"
    write_dicom_series(two, vol, kaggle_affine(), description="FLAIR")
    write_dicom_series(two, vol, kaggle_affine(origin=(0, 0, 99)), description="T1 post", start=100)
    with pytest.raises(InputError, match="2 DICOM series in one folder") as info:
        read_patient(two)
    assert "FLAIR" in str(info.value) and "T1 post" in str(info.value)

    holes = write_dicom_series(tmp_path / "holes", vol, kaggle_affine(), skip=(2,))
    with pytest.raises(InputError, match="uneven slice positions.*missing"):
        read_patient(holes)

    import pydicom

    spacing = write_dicom_series(tmp_path / "spacing", vol, kaggle_affine())
    odd = sorted(spacing.glob("*.dcm"))[2]
    ds = pydicom.dcmread(odd)
    ds.PixelSpacing = [2.0, 2.0]  # was read with the first slice's spacing, as one volume
    ds.save_as(odd)
    with pytest.raises(InputError, match=f"{odd.name}: pixel spacing 2 x 2 mm differs from 0.9 x 0.8 mm"):
        read_patient(spacing)

    empty = tmp_path / "no_dicom"
    empty.mkdir()
    (empty / "a.dcm").write_bytes(b"nothing")
    with pytest.raises(InputError, match="no DICOM image files"):
        read_patient(empty)


def test_dicom_collinear_orientation_names_the_series(tmp_path):
    import pydicom

    one = write_dicom_series(tmp_path / "one", kaggle_volume()[:1].astype(np.uint16), kaggle_affine())
    f = next(one.glob("*.dcm"))
    ds = pydicom.dcmread(f)
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]  # rows and columns along one axis
    ds.save_as(f)
    with pytest.raises(InputError, match="affine is singular") as info:
        read_patient(one)
    assert str(one) in str(info.value)


def test_stack_sequences_checks_the_grid(tmp_path):
    flair_k, pre_k = kaggle_volume(seed=1), kaggle_volume(seed=2)
    src_f, aff = to_orientation(flair_k, ORIENTATIONS["RAS"])
    src_p, _ = to_orientation(pre_k, ORIENTATIONS["RAS"])
    flair = read_patient(write_nifti(tmp_path / "flair.nii.gz", src_f, aff))
    pre = read_patient(write_nifti(tmp_path / "pre.nii.gz", src_p, aff))
    both = stack_sequences(flair, pre_contrast=pre)
    assert both.image.shape == (5, 12, 10, 3)
    assert np.array_equal(both.image[..., 0], pre_k) and np.array_equal(both.image[..., 1], flair_k)
    assert np.array_equal(both.image[..., 2], flair_k)  # missing post-contrast: FLAIR in its place
    assert both.geometry is flair.geometry

    shifted = read_patient(write_nifti(tmp_path / "shifted.nii.gz", src_p, aff + np.diag([0, 0, 0, 0]) +
                                       np.pad(np.array([[5.0], [0], [0]]), ((0, 1), (3, 0)))))
    with pytest.raises(InputError, match="shifted.nii.gz.*another voxel-to-world affine"):
        stack_sequences(flair, post_contrast=shifted)
    small = read_patient(write_nifti(tmp_path / "small.nii.gz", src_p[:, :, :4], aff))
    with pytest.raises(InputError, match="small.nii.gz.*not on the FLAIR's grid"):
        stack_sequences(flair, pre_contrast=small)


def test_tiff_voxel_size_round_trip_and_labels_marker(tmp_path):
    labels = np.zeros((3, 16, 20), np.uint8)
    labels[1, 4:8, 5:9] = 1
    out = write_labels_tiff(tmp_path / "l.tif", labels, voxel_size=(3.0, 0.5, 0.25))
    voxel, is_labels = tiff_info(out)
    assert voxel == pytest.approx((3.0, 0.5, 0.25)) and is_labels
    assert np.array_equal(tifffile.imread(out), labels)
    assert read_patient(out).voxel_size == pytest.approx((3.0, 0.5, 0.25))
    # an ImageJ image stack in microns; a plain TIFF's 72 dpi is not a voxel size
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, np.zeros((4, 8, 8), np.uint16), imagej=True, resolution=(2.0, 2.0),
                     metadata={"spacing": 3000.0, "unit": "micron", "axes": "ZYX"})
    assert tiff_info(img) == (pytest.approx((3.0, 0.0005, 0.0005)), False)
    # Fiji writes microns as the escaped "\u00B5m" (it was never matched: the lookup is lower-cased)
    tifffile.imwrite(img, np.zeros((4, 8, 8), np.uint16), imagej=True, resolution=(2.0, 2.0),
                     metadata={"spacing": 3000.0, "unit": "\\u00B5m", "axes": "ZYX"})
    assert tiff_info(img) == (pytest.approx((3.0, 0.0005, 0.0005)), False)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((4, 8, 8), np.uint16), resolution=(72, 72), photometric="minisblack")
    assert tiff_info(plain) == (None, False) and read_patient(plain).voxel_size is None


def test_geometry_metadata_round_trip():
    vol = kaggle_volume()
    src, affine = to_orientation(vol, ORIENTATIONS["sagittal-LIP"])
    g = Geometry.from_affine(affine, src.shape)
    g2 = Geometry.from_metadata(g.as_metadata())
    assert np.allclose(g2.affine, affine) and g2.kaggle_shape == vol.shape
    assert np.array_equal(g2.to_source(g2.to_kaggle(src)), src)
    with pytest.raises(InputError, match="singular"):
        Geometry.from_affine(np.zeros((4, 4)), (2, 2, 2))


def test_parse_voxel_size_typed_by_a_user():
    import pytest

    from napari_lgg_seg.core.errors import InputError
    from napari_lgg_seg.core.geometry import parse_voxel_size

    assert parse_voxel_size("3, 0.5, 0.5") == (3.0, 0.5, 0.5)
    assert parse_voxel_size(" 3 0.5;0.5 ") == (3.0, 0.5, 0.5)
    assert parse_voxel_size("1.5") == (1.5, 1.5, 1.5)
    assert parse_voxel_size("") is None and parse_voxel_size("0") is None and parse_voxel_size(None) is None
    for bad in ("3, 0.5", "a, b, c", "3, -1, 1", "3, 0, 1"):
        with pytest.raises(InputError, match="voxel size"):
            parse_voxel_size(bad)


def _shift_positions(folder, shifts, axis=2):
    """Move slice k (in order of LPS coordinate ``axis``) of a series by shifts[k] (LPS mm)."""
    import pydicom

    files = sorted(folder.glob("*.dcm"), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[axis]))
    for f, shift in zip(files, shifts):
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [float(v) + d for v, d in zip(ds.ImagePositionPatient, shift)]
        ds.save_as(f)


def test_dicom_gantry_tilt_voxel_size_is_the_slice_spacing(tmp_path):
    from napari_lgg_seg.core.metrics import abnormality_volume

    vol = kaggle_volume().astype(np.uint16)
    folder = write_dicom_series(tmp_path / "tilt", vol, kaggle_affine())  # axial, 2.5 mm apart
    tilt = np.tan(np.deg2rad(20)) * VOXEL[0]
    _shift_positions(folder, [(0.0, k * tilt, 0.0) for k in range(len(vol))])
    stack = read_patient(folder)
    assert np.array_equal(stack.image, vol)
    assert stack.voxel_size == pytest.approx(VOXEL)  # not the 2.66 mm step from slice to slice
    labels = np.ones(vol.shape, np.uint8)
    assert abnormality_volume(labels, stack.voxel_size)["mm3"] == pytest.approx(
        labels.size * abs(np.linalg.det(stack.geometry.affine[:3, :3])))
    # a sagittal series tilted towards the head: X (its slice axis) is the slice spacing, Z stays
    src, affine = to_orientation(vol, ORIENTATIONS["sagittal-LIP"])
    sagittal = write_dicom_series(tmp_path / "sagittal", src, affine)
    _shift_positions(sagittal, [(0.0, 0.0, k * np.tan(np.deg2rad(20)) * VOXEL[2]) for k in range(len(src))],
                     axis=0)
    stack = read_patient(sagittal)
    assert np.array_equal(stack.image, vol) and stack.voxel_size == pytest.approx(VOXEL)


def test_dicom_slices_off_one_line_are_refused(tmp_path):
    vol = kaggle_volume().astype(np.uint16)
    folder = write_dicom_series(tmp_path / "two_stacks", vol, kaggle_affine())
    _shift_positions(folder, [(0.0, 0.0, 0.0), (5.0, 0.0, 0.0)] * 2 + [(0.0, 0.0, 0.0)])
    with pytest.raises(InputError, match="mm off the line through the other slices"):
        read_patient(folder)
    ok = write_dicom_series(tmp_path / "rounded", vol, kaggle_affine())
    _shift_positions(ok, [(0.05 * (k % 2), -0.05 * (k % 2), 0.0) for k in range(len(vol))])  # rounded to 0.1 mm
    assert np.array_equal(read_patient(ok).image, vol)


@pytest.mark.parametrize("unit, per_mm", [("micron", 1000.0), ("meter", 0.001)])
def test_nifti_voxel_size_in_mm_whatever_the_header_unit(tmp_path, unit, per_mm):
    vol = kaggle_volume()
    src, affine = to_orientation(vol, ORIENTATIONS["LPS"])
    affine = affine.copy()
    affine[:3] *= per_mm  # the same grid in microns (or metres)
    img = nib.Nifti1Image(src, affine)
    img.header.set_xyzt_units(unit)
    f = tmp_path / "scan.nii.gz"
    nib.save(img, str(f))
    stack = read_patient(f)
    assert np.array_equal(stack.image, vol) and stack.voxel_size == pytest.approx(VOXEL)
    g = Geometry.from_metadata(stack.geometry.as_metadata())  # napari layer metadata keeps the unit
    assert g.voxel_size == pytest.approx(VOXEL)
    out = write_labels_nifti(tmp_path / "labels.nii.gz", (vol > 500).astype(np.uint8), g)
    back = nib.load(str(out))  # the source's affine and unit: overlays it in tools that read units
    assert np.allclose(back.affine, affine) and back.header.get_xyzt_units()[0] == unit
    assert np.array_equal(np.asarray(back.dataobj), (src > 500).astype(np.uint8))


@pytest.mark.parametrize("case", ["no codes", "qform and sform disagree", "sform only"])
def test_nifti_labels_get_the_source_header_transforms(tmp_path, case):
    # ITK-SNAP and 3D Slicer take the qform where nibabel takes the sform, and a file with
    # both codes 0 gets pixdim scaling in ITK but nibabel's flipped, centred affine: the
    # labels overlay the source in every viewer only with the source's own qform, sform, codes
    vol = kaggle_volume()
    src, affine = to_orientation(vol, ORIENTATIONS["RAS"])
    img = nib.Nifti1Image(src, affine)
    if case == "no codes":
        img.set_qform(None, code=0)
        img.set_sform(None, code=0)
    elif case == "qform and sform disagree":
        turn = np.array([[0.0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        img.set_qform(turn @ affine, code=1)
        img.set_sform(affine, code=2)
    else:
        img.set_qform(None, code=0)
        img.set_sform(affine, code=4)
    f = tmp_path / "scan.nii"
    nib.save(img, str(f))
    stack = read_patient(f)
    g = Geometry.from_metadata(stack.geometry.as_metadata())
    out = write_labels_nifti(tmp_path / "labels.nii.gz", (stack.image > 500).astype(np.uint8), g)
    a, b = nib.load(str(f)).header, nib.load(str(out)).header
    assert (int(b["qform_code"]), int(b["sform_code"])) == (int(a["qform_code"]), int(a["sform_code"]))
    assert np.allclose(b.get_qform(), a.get_qform()) and np.allclose(b.get_best_affine(), a.get_best_affine())
    if int(a["sform_code"]):
        assert np.allclose(b.get_sform(), a.get_sform())
    assert np.allclose(b.get_zooms()[:3], a.get_zooms()[:3])
    assert np.array_equal(np.asarray(nib.load(str(out)).dataobj), (src > 500).astype(np.uint8))


def _rotation(deg: float, axis: int) -> np.ndarray:
    t = np.radians(deg)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    r = np.eye(4)
    r[i, i] = r[j, j] = np.cos(t)
    r[i, j], r[j, i] = -np.sin(t), np.sin(t)
    return r


def test_slice_tilt_and_the_oblique_note():
    """Slices tilted out of the axial plane are reported (they are segmented as they are);
    a rotation within the plane, a sagittal acquisition (permuted, still axial planes) and a
    gantry tilt (a slanted stack of axial planes) are not."""
    from napari_lgg_seg.core.geometry import OBLIQUE_NOTE_DEG, oblique_note

    base = np.diag([0.9, 0.9, 3.0, 1.0])
    for axis in (0, 1):  # about R or A: the planes tilt
        assert Geometry.from_affine(_rotation(25, axis) @ base, (20, 20, 10)).slice_tilt_deg == pytest.approx(25)
    assert Geometry.from_affine(_rotation(25, 2) @ base, (20, 20, 10)).slice_tilt_deg == pytest.approx(0, abs=1e-6)
    _, sagittal = to_orientation(np.zeros((4, 6, 8)), ORIENTATIONS["sagittal-LIP"])
    assert Geometry.from_affine(sagittal, (8, 4, 6)).slice_tilt_deg == pytest.approx(0, abs=1e-6)
    gantry = base.copy()
    gantry[1, 2] = np.tan(np.radians(20)) * 3.0  # each slice shifted along A
    assert Geometry.from_affine(gantry, (20, 20, 10)).slice_tilt_deg == pytest.approx(0, abs=1e-6)

    assert oblique_note(None) is None
    assert oblique_note(Geometry.from_affine(_rotation(OBLIQUE_NOTE_DEG - 1, 0) @ base, (20, 20, 10))) is None
    note = oblique_note(Geometry.from_affine(_rotation(30, 1) @ base, (20, 20, 10)))
    assert "30 degrees from axial" in note and "not resampled" in note
