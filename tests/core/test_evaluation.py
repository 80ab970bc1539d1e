import json

import numpy as np
import pytest

from napari_lgg_seg import InputError
from napari_lgg_seg.core.evaluation import PatientScore, evaluate, summarize

from ..conftest import write_kaggle_patient


class MaskOracle:
    """Predicts 'bright pixel' as abnormality: right on the synthetic blob patients."""

    input_shape = (None, 256, 256, 3)
    name = "oracle"

    def predict_on_batch(self, x):
        return (x[..., :1] > 0.7).astype(np.float32)


def test_evaluate_report_and_json(tmp_path):
    for i in range(2):
        write_kaggle_patient(tmp_path / "data", f"TCGA_AA_000{i}_1", seed=i)
    report = evaluate(tmp_path / "data", MaskOracle())
    assert [p.patient for p in report.patients] == ["TCGA_AA_0000_1", "TCGA_AA_0001_1"]
    s = report.summary
    assert s["n_patients"] == 2 and s["dice_mean"] > 0.9 and s["dice_min"] > 0.9
    assert s["slice_sensitivity"] == 1.0 and s["slice_specificity"] == 1.0
    assert "per-patient Dice mean" in report.format()
    out = report.to_json(tmp_path / "r.json")
    assert json.loads(out.read_text())["summary"]["n_patients"] == 2
    with pytest.raises(InputError, match="patients not found"):
        evaluate(tmp_path / "data", MaskOracle(), patients=["TCGA_ZZ"])
    # the patient id of a folder named otherwise (ids were matched to folder names only)
    (tmp_path / "data" / "TCGA_AA_0001_1").rename(tmp_path / "data" / "second")
    assert [p.patient for p in evaluate(tmp_path / "data", MaskOracle(), patients=["TCGA_AA_0001_1"]).patients] == [
        "TCGA_AA_0001_1"]
    assert len(evaluate(tmp_path / "data", MaskOracle(), patients=["second", "TCGA_AA_0000_1"]).patients) == 2
    (tmp_path / "data" / "second").rename(tmp_path / "data" / "TCGA_AA_0001_1")
    # one id as a string, not its characters ("patients not found: 0, 1, A, C, G, T, _")
    assert [p.patient for p in evaluate(tmp_path / "data", MaskOracle(), patients="TCGA_AA_0001_1").patients] == [
        "TCGA_AA_0001_1"]


class CountingOracle(MaskOracle):
    def __init__(self):
        self.calls = 0

    def predict_on_batch(self, x):
        self.calls += 1
        return super().predict_on_batch(x)


@pytest.mark.parametrize("drop, message", [("*_mask.tif", "no masks; evaluation needs ground truth"),
                                            ("*_3_mask.tif", "1 of 6 slices have no mask .first: TCGA_AA_0002_1_3_mask")])
def test_missing_masks_refused_before_any_patient_is_segmented(tmp_path, drop, message):
    """A patient without (some) masks sorted last was found only after all the others
    had been segmented."""
    for i in range(3):
        d = write_kaggle_patient(tmp_path / "data", f"TCGA_AA_000{i}_1", seed=i)
    for f in d.glob(drop):
        f.unlink()
    model = CountingOracle()
    with pytest.raises(InputError, match=message):
        evaluate(tmp_path / "data", model)
    assert model.calls == 0


def test_evaluate_flair_only_segments_the_flair_channel_alone(tmp_path):
    import tifffile

    d = write_kaggle_patient(tmp_path / "data", "TCGA_AA_0000_1", seed=0)
    for f in d.glob("*[0-9].tif"):  # blank pre-contrast: the oracle (channel 0) finds nothing
        img = tifffile.imread(f)
        img[..., 0] = 0
        tifffile.imwrite(f, img)
    assert evaluate(tmp_path / "data", MaskOracle()).summary["dice_mean"] == 0.0
    report = evaluate(tmp_path / "data", MaskOracle(), flair_only=True)
    assert report.flair_only and report.summary["dice_mean"] > 0.9
    assert json.loads(report.to_json(tmp_path / "r.json").read_text())["flair_only"] is True


def test_summary_figures():
    t = [np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]]]), np.array([[[0, 0], [0, 0]]])]
    p = [np.array([[[1, 0], [0, 0]], [[0, 1], [0, 0]]]), np.array([[[0, 0], [0, 0]]])]
    scores = [PatientScore("a", 2, 0.5, 1 / 3, 2, 2), PatientScore("b", 1, 1.0, 1.0, 0, 0)]
    s = summarize(scores, t, p)
    assert s["dice_mean"] == 0.75 and s["dice_median"] == 0.75 and s["dice_min"] == 0.5
    assert s["pooled_dice"] == pytest.approx(2 * 1 / 4)
    assert s["slice_dice_positive_mean"] == pytest.approx(2 / 3)
    assert s["slice_sensitivity"] == 1.0 and s["slice_specificity"] == 0.5


def test_broken_links_under_the_data_root_are_noted_not_skipped_unseen(tmp_path):
    write_kaggle_patient(tmp_path / "data", "TCGA_AA_0000_1", seed=0)
    link = tmp_path / "data" / "TCGA_AA_0001_1"
    link.symlink_to(tmp_path / "moved" / "TCGA_AA_0001_1")
    report = evaluate(tmp_path / "data", MaskOracle())
    assert [p.patient for p in report.patients] == ["TCGA_AA_0000_1"]
    assert report.notes == [f"{link}: broken symbolic link (to {tmp_path / 'moved' / 'TCGA_AA_0001_1'}); "
                            "not evaluated"]
    assert json.loads(report.to_json(tmp_path / "r.json").read_text())["notes"] == report.notes
