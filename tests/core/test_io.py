import os
import stat

import numpy as np
import pytest
import tifffile

from napari_lgg_seg import InputError, read_patient, write_kaggle_masks, write_labels_tiff
from napari_lgg_seg.core.io import find_patient_folders, is_readable

from ..conftest import requires_real_data, REAL_PATIENTS, synthetic_patient, write_kaggle_patient


def test_kaggle_folder_numeric_order(kaggle_patient):
    st = read_patient(kaggle_patient)
    assert st.image.shape == (12, 32, 32, 3) and st.image.dtype == np.uint8
    assert st.mask.shape == (12, 32, 32) and set(np.unique(st.mask)) <= {0, 1}
    numbers = [int(f.rsplit("_", 1)[1].split(".")[0]) for f in st.slice_files]
    assert numbers == list(range(1, 13))  # 1, 2, ..., 10, not 1, 10, 2
    expected, _ = synthetic_patient(12, 32, 0)
    np.testing.assert_array_equal(st.image, expected)
    assert st.patient_id == "TCGA_XX_0001_20000101"


def test_folder_without_masks_has_no_ground_truth(tmp_path):
    d = write_kaggle_patient(tmp_path, masks=False)
    assert read_patient(d).mask is None


def test_multipage_grey_stack_and_single_slice(tmp_path):
    vol = np.arange(5 * 20 * 24, dtype=np.uint16).reshape(5, 20, 24)
    tifffile.imwrite(tmp_path / "stack.tif", vol)
    st = read_patient(tmp_path / "stack.tif")
    assert st.image.shape == (5, 20, 24) and st.mask is None and st.patient_id == "stack"
    tifffile.imwrite(tmp_path / "one.tiff", np.zeros((20, 24, 3), np.uint8))
    assert read_patient(tmp_path / "one.tiff").image.shape == (1, 20, 24, 3)


def test_single_kaggle_slice_picks_up_its_mask(kaggle_patient):
    st = read_patient(kaggle_patient / "TCGA_XX_0001_20000101_3.tif")
    assert st.image.shape == (1, 32, 32, 3) and st.mask.shape == (1, 32, 32) and st.mask.any()


@pytest.mark.parametrize("mask", [np.zeros((16, 16), np.uint8), np.zeros((2, 32, 32), np.uint8)])
def test_single_kaggle_slice_with_a_mask_of_another_shape(kaggle_patient, mask):
    """segment then failed with numpy's 'cannot reshape array' when scoring."""
    tifffile.imwrite(kaggle_patient / "TCGA_XX_0001_20000101_3_mask.tif", mask)
    with pytest.raises(InputError, match="_3_mask.tif: mask shape .* does not match image shape"):
        read_patient(kaggle_patient / "TCGA_XX_0001_20000101_3.tif")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "folder is empty"),
        (lambda d: (d / "notes.txt").write_text("x"), "no kaggle_3m slices"),
        (lambda d: tifffile.imwrite(d / "P_1_mask.tif", np.zeros((8, 8), np.uint8)), "mask without its image"),
        # one of the two was dropped unseen
        (lambda d: [tifffile.imwrite(d / name, np.zeros((8, 8, 3), np.uint8)) for name in ("P_1.tif", "P_01.tif")],
         "P_01.tif and P_1.tif are both slice 1; keep one"),
        (lambda d: [tifffile.imwrite(d / name, np.zeros((8, 8), np.uint8))
                    for name in ("P_1.tif", "P_1_mask.tif", "P_1_mask.tiff")],
         "P_1_mask.tif and P_1_mask.tiff are both slice 1 mask"),
    ],
)
def test_bad_folders(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(InputError, match=message):
        read_patient(tmp_path)


def test_mixed_sizes_and_corrupt_files(tmp_path):
    tifffile.imwrite(tmp_path / "P_1.tif", np.zeros((8, 8, 3), np.uint8))
    tifffile.imwrite(tmp_path / "P_2.tif", np.zeros((9, 8, 3), np.uint8))
    with pytest.raises(InputError, match=r"P_2.tif: slice shape"):
        read_patient(tmp_path)
    # an 8-bit slice among 16-bit ones was stacked (upcast) and normalised with their range
    tifffile.imwrite(tmp_path / "P_2.tif", np.zeros((8, 8, 3), np.uint16))
    with pytest.raises(InputError, match=r"P_2.tif: slice data type uint16 differs from uint8"):
        read_patient(tmp_path)
    bad = tmp_path / "fake.tif"
    bad.write_text("this is not a tiff")
    with pytest.raises(InputError, match=r"fake.tif: not a readable TIFF"):
        read_patient(bad)
    good = tmp_path / "trunc.tif"
    tifffile.imwrite(good, np.ones((4, 64, 64), np.uint8))
    good.write_bytes(good.read_bytes()[:300])
    with pytest.raises(InputError, match="trunc.tif"):
        read_patient(good)


def test_non_binary_mask_and_5d(tmp_path):
    tifffile.imwrite(tmp_path / "P_1.tif", np.zeros((8, 8, 3), np.uint8))
    tifffile.imwrite(tmp_path / "P_1_mask.tif", np.full((8, 8), 7, np.uint8))
    with pytest.raises(InputError, match="not binary"):
        read_patient(tmp_path)
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((2, 3, 8, 8, 2), np.uint8))
    with pytest.raises(InputError, match=r"five.tif: array of shape"):
        read_patient(tmp_path / "five.tif")


def test_writers_atomic_and_no_overwrite(tmp_path):
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[1, 2:4, 2:4] = 1
    out = write_labels_tiff(tmp_path / "seg.tif", labels)
    np.testing.assert_array_equal(tifffile.imread(out), labels)
    assert [p.name for p in tmp_path.iterdir()] == ["seg.tif"]  # no temp files left
    with pytest.raises(InputError, match="does not exist"):
        write_labels_tiff(tmp_path / "missing" / "seg.tif", labels)
    files = write_kaggle_masks(tmp_path / "P", labels, "P")
    assert [f.name for f in files] == ["P_1_mask.tif", "P_2_mask.tif", "P_3_mask.tif"]
    assert tifffile.imread(files[1]).max() == 255
    before = tifffile.imread(files[0]).copy()
    with pytest.raises(InputError, match="refusing to overwrite"):
        write_kaggle_masks(tmp_path / "P", labels + 1, "P")
    np.testing.assert_array_equal(tifffile.imread(files[0]), before)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_written_files_follow_umask_and_keep_replaced_permissions(tmp_path):
    labels = np.zeros((2, 8, 8), np.uint8)
    old = os.umask(0o022)
    try:
        out = write_labels_tiff(tmp_path / "seg.tif", labels)
        assert stat.S_IMODE(out.stat().st_mode) == 0o644  # not mkstemp's 0600
        os.umask(0o077)
        out.chmod(0o640)
        write_labels_tiff(out, labels + 1)  # replacing keeps the user's permissions
        assert stat.S_IMODE(out.stat().st_mode) == 0o640
        assert tifffile.imread(out).max() == 1
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["seg.tif"]


def test_find_patient_folders_and_is_readable(tmp_path):
    a = write_kaggle_patient(tmp_path, "TCGA_AA_0001_1")
    write_kaggle_patient(tmp_path, "TCGA_AA_0002_1")
    assert find_patient_folders(tmp_path)[0] == a and len(find_patient_folders(tmp_path)) == 2
    assert is_readable(a) and not is_readable(tmp_path / "x.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no patient folders"):
        find_patient_folders(empty)


@requires_real_data
def test_real_patient():
    st = read_patient(REAL_PATIENTS / "TCGA_HT_7686_19950629")
    assert st.image.shape == (20, 256, 256, 3) and st.image.dtype == np.uint8
    assert st.mask.shape == (20, 256, 256)
    assert int(st.mask.reshape(20, -1).any(axis=1).sum()) == 10  # per MANIFEST.csv


def test_write_masks_to_patient_folder_checks_the_slices(tmp_path):
    import pytest

    from napari_lgg_seg.core.errors import InputError
    from napari_lgg_seg.core.io import write_masks_to_patient_folder

    from ..conftest import write_kaggle_patient

    folder = write_kaggle_patient(tmp_path, "P_1", n_slices=4, size=16, masks=False)
    labels = np.zeros((4, 16, 16), np.uint8)
    with pytest.raises(InputError, match="holds 4 slices of P_1.*the labels have 5 slices"):
        write_masks_to_patient_folder(folder, np.zeros((5, 16, 16), np.uint8), "P_1")
    with pytest.raises(InputError, match="not a kaggle_3m patient folder"):
        write_masks_to_patient_folder(tmp_path / "nowhere", labels, "P_1")
    recorded = [f"P_1_{i}.tif" for i in (1, 2, 3, 4)]
    with pytest.raises(InputError, match="no longer holds P_1_5.tif"):
        write_masks_to_patient_folder(folder, labels, "P_1", slice_files=[*recorded[1:], "P_1_5.tif"])
    written = write_masks_to_patient_folder(folder, labels, "P_1", slice_files=recorded)
    assert [w.name for w in written] == [f"P_1_{i}_mask.tif" for i in (1, 2, 3, 4)]
    with pytest.raises(InputError, match="refusing to overwrite 4"):
        write_masks_to_patient_folder(folder, labels, "P_1")


@pytest.mark.parametrize("labels, message", [
    (np.full((2, 4, 4), 300, np.int32), "outside 0..255; TIFF labels are stored as uint8"),
    (np.full((2, 4, 4), -1, np.int16), "outside 0..255"),
    (np.zeros((1, 2, 4, 4), np.uint8), r"labels of shape \(1, 2, 4, 4\) are not a \(Z, Y, X\) volume"),
    (np.full((2, 4, 4), 0.7), "labels hold fractions or NaN"),  # probabilities: written as all 0
    (np.full((2, 4, 4), np.nan, np.float32), "labels hold fractions or NaN"),
])
def test_labels_tiff_refuses_what_uint8_would_wrap_and_writes_nothing(tmp_path, labels, message):
    out = tmp_path / "seg.tif"
    with pytest.raises(InputError, match=message):
        write_labels_tiff(out, labels)
    assert not out.exists()
    with pytest.raises(InputError, match="must end with .tif or .tiff"):  # a TIFF was written as seg.png
        write_labels_tiff(tmp_path / "seg.png", np.ones((2, 4, 4), np.uint8))
    assert not (tmp_path / "seg.png").exists()
    write_labels_tiff(out, np.full((2, 4, 4), 255, np.int32))  # the largest value that fits
    assert tifffile.imread(out).max() == 255
