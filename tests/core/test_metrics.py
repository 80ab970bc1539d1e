import numpy as np
import pytest

from napari_lgg_seg import InputError, abnormality_volume, dice, iou, per_slice


def test_dice_iou_values():
    a = np.zeros((2, 4, 4), np.uint8)
    b = np.zeros_like(a)
    a[0, :2, :2] = 1  # 4 voxels
    b[0, :2, :3] = 1  # 6 voxels, 4 shared
    assert dice(a, b) == pytest.approx(8 / 10)
    assert iou(a, b) == pytest.approx(4 / 6)
    assert dice(a, a * 255) == 1.0  # any non-zero value is foreground


def test_empty_rule():
    z = np.zeros((3, 3))
    one = z.copy()
    one[1, 1] = 1
    assert dice(z, z) == 1.0 and iou(z, z) == 1.0
    assert dice(z, one) == 0.0 and iou(one, z) == 0.0


def test_per_slice_and_shape_mismatch():
    a = np.zeros((3, 4, 4), np.uint8)
    b = a.copy()
    a[1, 0, 0] = b[1, 0, 0] = 1
    b[2, 1, 1] = 1
    rows = per_slice(a, b)
    assert [r["dice"] for r in rows] == [1.0, 1.0, 0.0]
    assert rows[2]["voxels_a"] == 0 and rows[2]["voxels_b"] == 1
    with pytest.raises(InputError, match="shapes differ"):
        dice(a, b[:2])


def test_abnormality_volume():
    lab = np.zeros((4, 5, 5), np.uint8)
    lab[1, :2, :2] = 1
    lab[3, 0, 0] = 1
    v = abnormality_volume(lab, voxel_size=(2.0, 0.5, 0.5))
    assert v == {"voxels": 5, "slices": 2, "mm3": pytest.approx(2.5)}
    assert abnormality_volume(lab)["mm3"] is None


def test_one_volume_formatter_for_cli_and_widgets():
    from napari_lgg_seg.core.metrics import format_volume

    lab = np.zeros((36, 8, 8), np.uint8)
    lab[3:8, :4, :4] = 1  # 80 voxels in 5 slices
    assert format_volume(abnormality_volume(lab)) == "80 voxels in 5 slices"
    with_mm = abnormality_volume(lab, (3.0, 0.5, 0.5))
    assert format_volume(with_mm, 36) == "80 voxels in 5 of 36 slices, 60.0 mm³ (0.06 ml)"
    assert format_volume(with_mm, 36, ascii=True).endswith("60.0 mm^3 (0.06 ml)")
    one = np.zeros((1, 4, 4), np.uint8)
    one[0, 0, :2] = 1
    assert format_volume(abnormality_volume(one, (1, 2000, 1)), 1) == "2 voxels in 1 of 1 slice, 4,000.0 mm³ (4.00 ml)"
