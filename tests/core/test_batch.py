"""segment_many: a folder of patients, one output each, resume, failures, summary, shards."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_lgg_seg import InputError, segment_many
from napari_lgg_seg.core.batch import parse_shard, take_shard
from napari_lgg_seg.core.tiff_geometry import tiff_info

from ..conftest import write_kaggle_patient
from ..mri_files import ORIENTATIONS, to_orientation, write_nifti


class FlairModel:
    """Stands in for the U-Net: the normalised FLAIR channel is the probability."""

    input_shape = (None, 32, 32, 3)

    def __init__(self):
        self.slices = 0

    def predict_on_batch(self, x):
        self.slices += len(x)
        return x[..., 1:2]


def dataset(tmp_path, broken=True):
    root = tmp_path / "data"
    for i in range(3):
        write_kaggle_patient(root, pid=f"TCGA_AA_000{i}_20000101", n_slices=4 + i, seed=i)
    vol = np.zeros((5, 32, 32, 3), np.uint8)
    vol[2, 8:16, 8:16] = 200
    src, affine = to_orientation(vol, ORIENTATIONS["LPS"])
    write_nifti(root / "scan.nii.gz", src, affine)
    if broken:
        bad = root / "TCGA_BB_0009_20000101"
        bad.mkdir()
        (bad / "TCGA_BB_0009_20000101_1.tif").write_bytes(b"not a tiff")
    return root, src, affine


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_folder_of_patients_with_a_broken_one_then_resume(tmp_path):
    root, src, affine = dataset(tmp_path)
    out = tmp_path / "out"
    model, calls = FlairModel(), []
    results = segment_many([root], out, model=model, progress=lambda d, t: calls.append((d, t)), batch_size=2)
    assert [r.status for r in results] == ["done", "done", "done", "failed", "done"]
    assert "TCGA_BB_0009_20000101_1.tif" in results[3].error and "not a readable TIFF" in results[3].error
    assert model.slices == 4 + 5 + 6 + 5
    assert calls[-1] == (21, 21)  # one bar over every patient's slices (the broken one counts 1)
    assert all(t == calls[0][1] for _, t in calls) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    labels = tifffile.imread(out / "TCGA_AA_0001_20000101.tif")
    assert labels.shape == (5, 32, 32) and labels.dtype == np.uint8
    assert tiff_info(out / "scan.tif") == (pytest.approx((2.5, 0.9, 0.8)), True)
    table = rows(out / "summary.csv")
    assert [r["patient"] for r in table] == [r.patient for r in results]
    aa0 = table[0]
    assert aa0["status"] == "done" and aa0["slices"] == "4" and float(aa0["dice"]) > 0.9
    assert float(aa0["iou"]) > 0.8 and aa0["abnormality_mm3"] == "" and float(aa0["seconds"]) >= 0
    scan = table[4]
    assert scan["voxel_size_mm"] == "2.5x0.9x0.8" and scan["dice"] == ""
    assert float(scan["abnormality_mm3"]) == pytest.approx(int(scan["abnormality_voxels"]) * 2.5 * 0.9 * 0.8)
    assert not list(out.glob(".*"))  # no temporary files left

    # rerun: what was done is skipped (its numbers kept), the failed one is tried again
    before = (out / "TCGA_AA_0001_20000101.tif").stat().st_mtime_ns
    model2 = FlairModel()
    again = segment_many([root], out, model=model2)
    assert [r.status for r in again] == ["skipped", "skipped", "skipped", "failed", "skipped"]
    assert model2.slices == 0 and (out / "TCGA_AA_0001_20000101.tif").stat().st_mtime_ns == before
    assert rows(out / "summary.csv")[0]["dice"] == aa0["dice"]
    redo = segment_many([root / "TCGA_AA_0001_20000101"], out, model=FlairModel(), overwrite=True)
    assert [r.status for r in redo] == ["done"]


def test_nifti_output_on_the_source_grid_and_kaggle_masks(tmp_path):
    root, src, affine = dataset(tmp_path, broken=False)
    out = tmp_path / "nii"
    segment_many([root / "scan.nii.gz", root / "TCGA_AA_0000_20000101"], out, model=FlairModel(), format="nii.gz")
    back = nib.load(str(out / "scan.nii.gz"))
    assert np.allclose(back.affine, affine) and back.shape == src.shape[:3]
    assert np.asarray(back.dataobj).sum() == 64  # the bright 8x8 square, on the source grid
    kaggle = nib.load(str(out / "TCGA_AA_0000_20000101.nii.gz"))
    assert kaggle.shape == (4, 32, 32)
    masks_out = tmp_path / "masks"
    segment_many([root / "TCGA_AA_0000_20000101"], masks_out, model=FlairModel(), format="kaggle-masks")
    assert sorted(p.name for p in (masks_out / "TCGA_AA_0000_20000101").iterdir()) == [
        f"TCGA_AA_0000_20000101_{i}_mask.tif" for i in range(1, 5)]


def test_kaggle_masks_are_numbered_like_the_slices(tmp_path):
    """Slices 3..6 of a patient (1 and 2 removed) get masks _3.._6, not _1.._4 that
    would sit beside the wrong slices."""
    patient = write_kaggle_patient(tmp_path / "data", pid="TCGA_AA_0009_20000101", n_slices=6)
    for n in (1, 2):
        (patient / f"TCGA_AA_0009_20000101_{n}.tif").unlink()
        (patient / f"TCGA_AA_0009_20000101_{n}_mask.tif").unlink()
    out = tmp_path / "masks"
    segment_many([patient], out, model=FlairModel(), format="kaggle-masks")
    assert sorted(p.name for p in (out / "TCGA_AA_0009_20000101").iterdir()) == [
        f"TCGA_AA_0009_20000101_{i}_mask.tif" for i in range(3, 7)]


def test_labels_written_beside_the_scans_are_not_patients(tmp_path):
    """A labels TIFF saved next to the scans was segmented as if it were an MRI."""
    from napari_lgg_seg import write_labels_tiff

    scans = tmp_path / "scans"
    scans.mkdir()
    tifffile.imwrite(scans / "a.tif", np.zeros((3, 32, 32), np.uint8))
    write_labels_tiff(scans / "a_labels.tif", np.zeros((3, 32, 32), np.uint8))
    res = segment_many([scans], tmp_path / "out", model=FlairModel())
    assert [r.patient for r in res] == ["a"]


def test_one_input_given_as_a_path_not_a_list(tmp_path):
    """segment_many("folder", ...) iterated the characters of the string ("/" first)."""
    patient = write_kaggle_patient(tmp_path / "data", pid="TCGA_AA_0005_20000101", n_slices=4)
    for given in (str(patient), patient):
        res = segment_many(given, tmp_path / "out", model=FlairModel(), overwrite=True)
        assert [(r.patient, r.status) for r in res] == [("TCGA_AA_0005_20000101", "done")]


def test_interrupted_run_keeps_the_figures_of_the_patients_done(tmp_path):
    """Ctrl-C on the second patient: the first one's row (with its Dice) is in summary.csv
    (no summary was written, and the resumed run listed it as skipped with no figures)."""
    root = tmp_path / "data"
    for i in range(3):
        write_kaggle_patient(root, pid=f"TCGA_AA_000{i}_20000101", n_slices=4, seed=i)

    class Interrupted(FlairModel):
        def predict_on_batch(self, x):
            if self.slices >= 4:
                raise KeyboardInterrupt
            return super().predict_on_batch(x)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        segment_many([root], out, model=Interrupted())
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [(r["patient"], r["status"]) for r in rows] == [("TCGA_AA_0000_20000101", "done")]
    assert rows[0]["dice"] != ""
    assert not [f for f in out.iterdir() if f.name.startswith(".")]
    res = segment_many([root], out, model=FlairModel())
    assert [r.status for r in res] == ["skipped", "done", "done"] and str(res[0].dice) == rows[0]["dice"]


def test_shards_split_the_patients_and_their_union_is_one_run(tmp_path):
    root, _, _ = dataset(tmp_path)
    whole = segment_many([root], tmp_path / "whole", model=FlairModel())
    parts = []
    for i in (1, 2, 3):
        res = segment_many([root], tmp_path / "sharded", model=FlairModel(), shard=f"{i}/3")
        parts.append([r.patient for r in res])
        assert (tmp_path / "sharded" / f"summary-shard-{i}-of-3.csv").is_file()
    flat = [p for part in parts for p in part]
    assert sorted(flat) == sorted(r.patient for r in whole) and len(flat) == len(set(flat))
    for r in whole:
        if r.status == "done":
            a = tifffile.imread(tmp_path / "whole" / f"{r.patient}.tif")
            b = tifffile.imread(tmp_path / "sharded" / f"{r.patient}.tif")
            assert np.array_equal(a, b)
    assert take_shard(list(range(7)), (2, 3)) == [1, 4]
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(InputError, match="shard"):
            parse_shard(bad)


def test_bad_arguments(tmp_path):
    root, _, _ = dataset(tmp_path, broken=False)
    with pytest.raises(InputError, match="unknown output format"):
        segment_many([root], tmp_path / "o", model=FlairModel(), format="png")
    with pytest.raises(InputError, match="no patients in this folder"):
        (tmp_path / "empty").mkdir()
        segment_many([tmp_path / "empty"], tmp_path / "o", model=FlairModel())
    with pytest.raises(InputError, match="no such file"):
        segment_many([tmp_path / "missing"], tmp_path / "o", model=FlairModel())
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        segment_many([root], tmp_path / "afile", model=FlairModel())
    assert not (tmp_path / "o").exists()


def test_outputs_never_land_among_the_inputs(tmp_path):
    root, _, _ = dataset(tmp_path, broken=False)
    patient = root / "TCGA_AA_0000_20000101"
    before = sorted(p.name for p in patient.iterdir())
    for out, fmt in ((root, "kaggle-masks"), (patient, "tif"), (patient / "labels", "tif")):
        with pytest.raises(InputError, match="choose a folder outside the patients"):
            segment_many([root], out, model=FlairModel(), format=fmt, overwrite=True)
    assert sorted(p.name for p in patient.iterdir()) == before
    # an output folder inside the dataset root is not taken for a patient on the rerun
    segment_many([root], root / "labels", model=FlairModel())
    again = segment_many([root], root / "labels", model=FlairModel())
    assert [r.status for r in again] == ["skipped"] * 4


def test_a_patient_emptied_by_post_processing_gets_a_note(tmp_path):
    root, _src, _affine = dataset(tmp_path, broken=False)
    out = tmp_path / "out"
    results = segment_many([root / "TCGA_AA_0000_20000101", root / "TCGA_AA_0001_20000101"], out,
                           model=FlairModel(), min_size=1_000_000)
    assert [r.status for r in results] == ["done", "done"]
    for r in results:
        assert r.abnormality_voxels == 0
        assert r.note.startswith("the post-processing (drop components under 1000000 voxels) removed all ")
    assert [row["note"] for row in rows(out / "summary.csv")] == [r.note for r in results]
    kept = segment_many([root / "TCGA_AA_0000_20000101"], tmp_path / "kept", model=FlairModel())
    assert kept[0].abnormality_voxels > 0 and kept[0].note == ""
    with pytest.raises(InputError, match="takes no 'stats'"):
        segment_many([root], tmp_path / "x", model=FlairModel(), stats={})


def test_default_model_is_the_int8_engine_without_tensorflow(tmp_path):
    """segment_many(model=None) loaded the bundled Keras model (TensorFlow imported, seconds
    and ~600 MiB more) although segment_volume and the CLI run the bundled int8 engine."""
    import subprocess
    import sys

    from napari_lgg_seg.core import engine_int8

    if not (engine_int8.BUNDLED_DIR / "model.json").exists():
        pytest.skip("bundled model not trained in this checkout")
    root = tmp_path / "data"
    write_kaggle_patient(root, pid="TCGA_AA_0000_20000101", n_slices=4, size=32)
    code = f"""
import sys
from napari_lgg_seg import segment_many
res = segment_many([{str(root)!r}], {str(tmp_path / "out")!r})
assert [r.status for r in res] == ["done"], res
bad = [m for m in sys.modules if m == "tensorflow" or m.startswith(("tensorflow.", "keras"))]
print("TF-FREE" if not bad else "IMPORTED " + " ".join(sorted(bad)[:5]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TF-FREE" in out.stdout, out.stdout


def test_model_path_loads_once_for_all_patients(tmp_path, monkeypatch):
    from napari_lgg_seg.core import model as model_module

    root, _, _ = dataset(tmp_path, broken=False)
    loads = []

    def fake_load(path=None):
        loads.append(path)
        return FlairModel()

    monkeypatch.setattr(model_module, "load_model", fake_load)
    res = segment_many([root], tmp_path / "out", model=str(tmp_path / "m.keras"))
    assert [r.status for r in res] == ["done"] * 4
    assert loads == [str(tmp_path / "m.keras")]


def test_a_patient_that_does_not_fit_in_memory_is_refused_and_the_rest_go_on(tmp_path, monkeypatch):
    """README: before any work segment estimates what the stack and batch need and refuses,
    naming --batch-size; in a folder run that held for no patient (the system killed it)."""
    from napari_lgg_seg.core import resources

    root, _, _ = dataset(tmp_path, broken=False)
    big = "TCGA_AA_0002_20000101"  # 6 slices, the others fewer
    need = resources.segment_bytes((6, 32, 32, 3), 1, 8) + resources.HEADROOM_BYTES
    monkeypatch.setattr(resources, "available_memory", lambda: need - 1)
    res = segment_many([root], tmp_path / "out", model=FlairModel())
    by = {r.patient: r for r in res}
    assert by[big].status == "failed" and "--batch-size" in by[big].error and "memory" in by[big].error
    assert not (tmp_path / "out" / f"{big}.tif").exists()
    assert sum(r.status == "done" for r in res) == 3


def test_overwriting_kaggle_masks_numbered_otherwise_is_refused_not_mixed(tmp_path):
    """--overwrite into masks of another numbering left the old ones beside the new ones;
    now the patient fails with a message naming them, and the folder is left as it was."""
    pid = "TCGA_AA_0009_20000101"
    patient = write_kaggle_patient(tmp_path / "data", pid=pid, n_slices=6)
    out = tmp_path / "masks"
    segment_many([patient], out, model=FlairModel(), format="kaggle-masks")
    for n in (1, 2):
        (patient / f"{pid}_{n}.tif").unlink()
        (patient / f"{pid}_{n}_mask.tif").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (out / pid).iterdir()}
    (row,) = segment_many([patient], out, model=FlairModel(), format="kaggle-masks", overwrite=True)
    assert row.status == "failed"
    assert f"holds 2 other mask file(s) ({pid}_1_mask.tif, {pid}_2_mask.tif)" in row.error
    assert {p.name: p.stat().st_mtime_ns for p in (out / pid).iterdir()} == before
    for n in (1, 2):
        (out / pid / f"{pid}_{n}_mask.tif").unlink()
    (done,) = segment_many([patient], out, model=FlairModel(), format="kaggle-masks", overwrite=True)
    assert done.status == "done"  # the same numbering: replaced in place


def test_broken_links_in_a_folder_of_patients_fail_with_their_name(tmp_path):
    """A broken link to a patient folder was skipped without a word."""
    write_kaggle_patient(tmp_path / "data", pid="TCGA_AA_0000_20000101", n_slices=4)
    link = tmp_path / "data" / "TCGA_AA_0001_20000101"
    link.symlink_to(tmp_path / "gone")
    rows = segment_many([tmp_path / "data"], tmp_path / "out", model=FlairModel())
    assert [(r.patient, r.status) for r in rows] == [("TCGA_AA_0000_20000101", "done"),
                                                     ("TCGA_AA_0001_20000101", "failed")]
    assert rows[1].error == f"{link}: broken symbolic link (to {tmp_path / 'gone'})"
    with pytest.raises(InputError, match="broken symbolic link"):
        segment_many([link], tmp_path / "out2", model=FlairModel())
