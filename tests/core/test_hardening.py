"""Regression tests of issue 12 (hardening) for the TensorFlow-free core: writers that
never damage a patient folder, input checks with the file name, memory guards."""

from __future__ import annotations

import errno
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_lgg_seg import InputError, read_patient, write_kaggle_masks, write_labels_tiff
from napari_lgg_seg.core import io as core_io
from napari_lgg_seg.core import resources
from napari_lgg_seg.core.components import remove_small_components
from napari_lgg_seg.core.io import atomic_write, find_patient_folders, remove_stale_temp_files
from napari_lgg_seg.core.preprocess import as_channels_last, check_values
from napari_lgg_seg.core.splits import split_patients

from ..conftest import write_kaggle_patient

PID = "TCGA_XX_0001_20000101"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- cause 1


@pytest.mark.parametrize("name", [f"{PID}_2_mask.tif", f"{PID}_99.tif", "OTHER_1.tif"])
def test_labels_writer_refuses_patient_file_names(tmp_path, name):
    """Cause 1: ``write_labels_tiff(P / "<ID>_2_mask.tif")`` replaced ground truth and
    ``<ID>_99.tif`` planted a fake slice; both left P unreadable."""
    d = write_kaggle_patient(tmp_path, PID)
    before = snapshot(d)
    with pytest.raises(InputError, match=rf"{name}: the output would land among the kaggle_3m slices"):
        write_labels_tiff(d / name, np.zeros((6, 32, 32), np.uint8))
    assert snapshot(d) == before
    assert read_patient(d).n_slices == 6
    write_labels_tiff(d / "seg.tif", np.zeros((6, 32, 32), np.uint8))  # another name is fine
    assert read_patient(d).n_slices == 6


# --------------------------------------------------------------------------- cause 2


def _patient_with_gaps(tmp_path: Path) -> Path:
    d = tmp_path / PID
    d.mkdir()
    for n in (1, 2, 5, 9):
        tifffile.imwrite(d / f"{PID}_{n}.tif", np.full((8, 8, 3), n, np.uint8))
    return d


def test_kaggle_masks_are_numbered_by_slice(tmp_path):
    """Cause 2: slices 1, 2, 5, 9 got masks 1-4; with the reader's slice names they get
    masks 1, 2, 5, 9, and the folder reads back with them."""
    d = _patient_with_gaps(tmp_path)
    st = read_patient(d)
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[2, 1:3, 1:3] = 1  # on slice 5
    files = write_kaggle_masks(d, labels, st.patient_id, slice_files=st.slice_files)
    assert [f.name for f in files] == [f"{PID}_{n}_mask.tif" for n in (1, 2, 5, 9)]
    back = read_patient(d)
    np.testing.assert_array_equal(back.mask, labels)
    with pytest.raises(InputError, match="4 label slices but 3 slice names"):
        write_kaggle_masks(tmp_path / "new", labels, PID, slice_files=st.slice_files[:3])


@pytest.mark.parametrize("pid", ["", "../escaped", "a/b", ".hidden", "x\\y"])
def test_kaggle_masks_refuse_unsafe_patient_ids(tmp_path, pid):
    """Cause 2: no id wrote ``P_1_mask.tif``... and ``../escaped`` wrote outside the folder."""
    out = tmp_path / "out"
    with pytest.raises(InputError, match="cannot name mask files"):
        write_kaggle_masks(out, np.zeros((2, 8, 8), np.uint8), pid)
    assert list(tmp_path.iterdir()) == []


def test_kaggle_masks_into_a_path_that_is_a_file(tmp_path):
    """A raw FileExistsError ('[Errno 17] File exists') came out of mkdir."""
    out = tmp_path / "P_masks"
    out.write_bytes(b"user data")
    with pytest.raises(InputError, match="P_masks: exists and is not a folder"):
        write_kaggle_masks(out, np.zeros((2, 8, 8), np.uint8), "P")
    assert out.read_bytes() == b"user data"


def _failing_imwrite(monkeypatch, fail_at: int):
    real = tifffile.imwrite
    calls = []

    def imwrite(path, data, *a, **kw):
        calls.append(path)
        if len(calls) == fail_at:
            Path(path).write_bytes(b"half")  # a partial write, as on a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, *a, **kw)

    monkeypatch.setattr(tifffile, "imwrite", imwrite)
    return calls


def test_kaggle_writer_fault_injection_leaves_folder_as_it_was(tmp_path, monkeypatch):
    """Cause 2, fault injection: a full disk after 2 of 20 masks left 2 masks and a raw
    ``OSError``; the retry was then refused. Now nothing is left and the retry works."""
    d = write_kaggle_patient(tmp_path, PID, n_slices=20, masks=False)
    before = snapshot(d)
    labels = np.ones((20, 32, 32), np.uint8)
    calls = _failing_imwrite(monkeypatch, fail_at=3)
    with pytest.raises(InputError) as info:
        write_kaggle_masks(d, labels, PID)
    assert len(calls) == 3
    assert str(d) in str(info.value) and "disk is full" in str(info.value)
    assert snapshot(d) == before
    monkeypatch.undo()
    assert len(write_kaggle_masks(d, labels, PID)) == 20  # the retry is not refused


def test_kaggle_writer_fault_in_new_folder_removes_it(tmp_path, monkeypatch):
    _failing_imwrite(monkeypatch, fail_at=2)
    with pytest.raises(InputError, match="nothing was written"):
        write_kaggle_masks(tmp_path / "new", np.ones((3, 8, 8), np.uint8), PID)
    assert list(tmp_path.iterdir()) == []


def test_kaggle_writer_failed_move_restores_replaced_masks(tmp_path, monkeypatch):
    """With ``overwrite`` a rename failing midway puts the old masks back."""
    d = write_kaggle_patient(tmp_path, PID, n_slices=5)
    before = snapshot(d)
    real_replace = os.replace
    moved = []

    def replace(src, dst):
        if Path(dst).name.endswith("_mask.tif"):
            moved.append(dst)
            if len(moved) == 4:  # the 2nd mask's move into place (backup, move, backup, MOVE)
                raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(core_io.os, "replace", replace)
    with pytest.raises(InputError, match="Input/output error"):
        write_kaggle_masks(d, np.zeros((5, 32, 32), np.uint8), PID, overwrite=True)
    monkeypatch.undo()
    assert snapshot(d) == before


# --------------------------------------------------------------------------- cause 3


def test_stale_temp_files_of_one_output_are_removed(tmp_path):
    """Cause 3: kill -9 during a save left ``.m.XXXXXXXX.keras`` forever."""
    stale = [tmp_path / ".m.0a1b2c3d.keras", tmp_path / ".m.last.ffffffff.keras"]
    keep = [tmp_path / "m.keras", tmp_path / ".other.0a1b2c3d.keras", tmp_path / ".m.notatemp.keras"]
    for f in stale + keep:
        f.write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path / "m.keras") == [stale[0]]
    assert remove_stale_temp_files(tmp_path / "m.last.keras") == [stale[1]]
    assert sorted(p for p in tmp_path.iterdir()) == sorted(keep)


# --------------------------------------------------------------------------- cause 6


@pytest.mark.parametrize("data, message", [
    (np.where(np.eye(16, dtype=bool), np.nan, 1.0).astype(np.float32), "16 NaN or infinite"),
    (np.full((16, 16), np.inf, np.float32), "256 NaN or infinite"),
    (np.full((2, 16, 16), np.nan, np.float32), "512 NaN or infinite"),
    (np.full((16, 16), 1e300, np.float64), "beyond the float32 range"),
    (np.ones((16, 16), np.complex64), "complex-valued"),
])
def test_non_finite_and_odd_dtypes_are_refused_with_the_file(tmp_path, data, message):
    """Cause 6: a NaN patch gave 5,066 false-positive voxels with exit 0 and an all-NaN
    volume 0 voxels; float64 above float32 range and complex data only warned."""
    f = tmp_path / "scan.tif"
    tifffile.imwrite(f, data)
    with pytest.raises(InputError, match=f"scan.tif: .*{message}"):
        read_patient(f)
    with pytest.raises(InputError, match=message):
        as_channels_last(data)  # arrays from the API get the same check


def test_finite_float_data_passes():
    check_values(np.linspace(-1e6, 1e6, 4096).reshape(64, 64))
    check_values(np.ones((3, 8, 8, 3), np.float64)[:, ::2])  # non-contiguous


# --------------------------------------------------------------------------- cause 7


def test_partial_masks_are_refused(tmp_path):
    """Cause 7: slices with and without masks were scored as if the missing masks were
    empty (Dice 0.64 instead of 0.93)."""
    d = write_kaggle_patient(tmp_path, PID, n_slices=6)
    (d / f"{PID}_4_mask.tif").unlink()
    (d / f"{PID}_6_mask.tif").unlink()
    with pytest.raises(InputError, match=rf"{d}: 2 of 6 slices have no mask \(first: {PID}_4_mask.tif\)"):
        read_patient(d)


# --------------------------------------------------------------------------- cause 8


def test_symlink_loop_is_followed_once(tmp_path):
    """Cause 8: ``ln -s . ROOT/self`` made evaluate score 82 patients instead of 2."""
    write_kaggle_patient(tmp_path, "TCGA_AA_0001_1")
    write_kaggle_patient(tmp_path, "TCGA_AA_0002_1")
    (tmp_path / "self").symlink_to(".")
    linked = tmp_path / "links"
    linked.mkdir()
    (linked / "p1").symlink_to(tmp_path / "TCGA_AA_0001_1")  # a second way to the same folder
    assert [p.name for p in find_patient_folders(tmp_path)] == ["TCGA_AA_0001_1", "TCGA_AA_0002_1"]


def test_duplicate_patient_ids_are_refused(tmp_path):
    """Cause 8: two folders with the same patient id were merged or listed twice."""
    write_kaggle_patient(tmp_path / "a", "TCGA_AA_0001_1")
    write_kaggle_patient(tmp_path / "b", "TCGA_AA_0001_1", seed=1)
    with pytest.raises(InputError, match=r"b/TCGA_AA_0001_1: patient TCGA_AA_0001_1 is also in .*a/TCGA_AA_0001_1"):
        find_patient_folders(tmp_path)


# --------------------------------------------------------------------------- cause 9


def test_tiff_header_larger_than_memory_is_refused_before_reading(tmp_path):
    """Cause 9: a TIFF header claiming 60000x60000 (here 100 such pages, a sparse file)
    was killed by the OS with no message."""
    f = tmp_path / "huge.tif"
    tifffile.imwrite(f, shape=(100, 60000, 60000), dtype="uint8")
    with pytest.raises(InputError, match=r"huge.tif: reading its 100x60000x60000 uint8 image needs about 335.8 GiB"):
        read_patient(f)


def test_check_fits_uses_available_memory(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 2 * 2**30)
    resources.check_fits(2**30, "x")  # 1 GiB + 0.5 GiB headroom fit in 2 GiB
    with pytest.raises(InputError, match=r"segmenting P needs about 3.5 GiB of memory but only 2.0 GiB is available; lower"):
        resources.check_fits(3 * 2**30, "segmenting P", "lower --batch-size")
    assert resources.segment_bytes((600, 256, 256, 3), 1, 100000) == resources.segment_bytes((600, 256, 256, 3), 1, 600)


def _reference_remove(labels, min_size):
    from scipy import ndimage

    comp, _ = ndimage.label(labels > 0)
    keep = np.bincount(comp.ravel()) >= min_size
    keep[0] = False
    return keep[comp].astype(labels.dtype)


def test_remove_small_components_matches_reference_and_many_components():
    rng = np.random.default_rng(0)
    labels = (rng.random((20, 64, 64)) > 0.7).astype(np.uint8)
    for min_size in (2, 5, 50):
        np.testing.assert_array_equal(remove_small_components(labels, min_size), _reference_remove(labels, min_size))
    many = np.zeros((3, 600, 600), np.uint8)
    many[::2, ::2, ::2] = 1  # 180,000 components: more than uint16 can number
    many[1, 10:20, 10:20] = 1
    np.testing.assert_array_equal(remove_small_components(many, 3), _reference_remove(many, 3))


def test_remove_small_components_does_not_double_memory():
    """Cause 9: ``--min-size`` labelling made an int32 copy of the whole volume (1,000
    slices: 2.2 GiB instead of 1.5); now the extra memory is the uint16 labels, about 2
    bytes a voxel plus the 1-byte result."""
    labels = np.zeros((100, 256, 256), np.uint8)
    labels[:, 100:140, 100:140] = 1
    labels[::7, 10:12, 10:12] = 1
    tracemalloc.start()
    try:
        out = remove_small_components(labels, 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.sum() == 100 * 40 * 40
    # uint16 numbers + uint8 result + one 2**20-voxel intp chunk; the old way: 7 bytes a voxel
    assert peak < 3 * labels.size + 9 * 2**20, peak / labels.size


# --------------------------------------------------------------------------- cause 11


def test_zero_slice_tiff_names_the_file(tmp_path):
    """Cause 11: a 0-slice TIFF gave an error without the file name."""
    f = tmp_path / "empty.tif"
    with pytest.warns(UserWarning):
        tifffile.imwrite(f, np.zeros((0, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"empty.tif: TIFF file holds no image data"):
        read_patient(f)


def test_disk_full_names_the_target_not_the_temp_file(tmp_path):
    """Cause 11: disk full in segment/train named no file (or a hidden temp file)."""
    def write(tmp):
        tmp.write_bytes(b"part")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(InputError, match=rf"^{tmp_path / 'seg.tif'}: cannot write, the disk is full"):
        atomic_write(tmp_path / "seg.tif", write)
    assert list(tmp_path.iterdir()) == []


def test_report_json_has_null_not_nan(tmp_path):
    """Cause 11: ``evaluate --report`` wrote NaN, which is not JSON."""
    from napari_lgg_seg.core.evaluation import EvaluationReport

    report = EvaluationReport("m", 0.5, summary={"slice_sensitivity": float("nan"), "dice_mean": 1.0})
    text = report.to_json(tmp_path / "r.json").read_text()

    def refuse(name):
        raise AssertionError(f"non-JSON constant {name}")

    data = json.loads(text, parse_constant=refuse)
    assert data["summary"] == {"slice_sensitivity": None, "dice_mean": 1.0}


def test_split_messages():
    """Cause 11: "0 patient(s) are too few for a split with 0 val and 0 test"."""
    with pytest.raises(InputError, match="^no patients to split$"):
        split_patients([], 0.0, 0.0)
    with pytest.raises(InputError, match="2 patient.s. are too few .* lower the validation/test fractions"):
        split_patients(["a", "b"], 0.5, 0.4)


# --------------------------------------------------------------------------- training options, TF-free


@pytest.mark.parametrize("kw, message", [
    (dict(crop_size=100), "crop size 100 must be a multiple of 16"),
    (dict(crop_size=512), "crop size 512 is larger than the 256x256 training slices"),
    (dict(batch_size=20, samples_per_epoch=8), "batch size 20 is larger than the 8 samples per epoch"),
])
def test_train_config_checks_options_without_tensorflow(tmp_path, kw, message):
    """Cause 4 and 9: the checks live in ``TrainConfig.validate`` (shared by the CLI, the
    Train widget and ``train()``), which needs no TensorFlow."""
    from napari_lgg_seg.core.train_config import TrainConfig

    with pytest.raises(InputError, match=message):
        TrainConfig(out=str(tmp_path / "m.keras"), **kw).validate()


def test_unwritable_folder_names_the_target_not_the_temp_file(tmp_path, monkeypatch):
    """A folder where no file can be created (read-only, no permission) gave a raw
    OSError naming the hidden temporary file (napari showed it as a traceback)."""
    import os

    from napari_lgg_seg.napari.writer import WriteRefused, write_kaggle_masks, write_labels_tiff

    ro = tmp_path / "read-only"  # root may write anywhere: refuse as a read-only folder does
    ro.mkdir()
    real_open, real_mkdir = os.open, os.mkdir

    def refusing(real):
        def call(path, *args, **kwargs):
            if str(path).startswith(str(ro)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "open", refusing(real_open))
    monkeypatch.setattr(os, "mkdir", refusing(real_mkdir))
    with pytest.raises(InputError, match=rf"^{ro / 'seg.tif'}: cannot write \(Permission denied\)$"):
        atomic_write(ro / "seg.tif", lambda tmp: tmp.write_bytes(b"x"))
    with pytest.raises(WriteRefused, match=r"seg.tif: cannot write \(Permission denied\)"):
        write_labels_tiff(str(ro / "seg.tif"), np.zeros((2, 4, 4), np.uint8), {"name": "seg"})
    with pytest.raises(WriteRefused, match=r"masks: cannot write the masks \(Permission denied\)"):
        write_kaggle_masks(str(ro / "masks"), np.zeros((2, 4, 4), np.uint8), {"name": "seg"})
    assert list(ro.iterdir()) == []
