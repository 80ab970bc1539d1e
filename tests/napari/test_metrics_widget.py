"""Metrics widget: volume and per-slice Dice/IoU, shape checks, CSV export."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_lgg_seg.core.errors import InputError


def _masks():
    a = np.zeros((3, 10, 10), np.uint8)
    b = np.zeros((3, 10, 10), np.uint8)
    a[0, :5, :5] = 1  # 25
    a[1, :4, :4] = 1  # 16
    b[0, :5, :5] = 1  # 25, all shared
    b[1, 2:6, 2:6] = 1  # 16, 4 shared
    b[2, 0, 0] = 1  # 1, none shared
    return a, b


@pytest.fixture
def widget_and_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    a, b = _masks()
    viewer.add_labels(a, name="truth")
    viewer.add_labels(b * 3, name="prediction")  # any non-zero label counts
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Metrics")[1]
    widget.set_layers("truth", "prediction")
    return widget, viewer


def test_volume_and_per_slice_values(widget_and_viewer):
    widget, viewer = widget_and_viewer
    widget.compute_button.native.click()
    assert widget.total["dice"] == pytest.approx(2 * 29 / 83)
    assert widget.total["iou"] == pytest.approx(29 / 54)
    assert (widget.total["voxels_a"], widget.total["voxels_b"]) == (41, 42)
    assert "Dice 0.6988" in widget.summary.text() and "IoU 0.5370" in widget.summary.text()
    assert widget.table.rowCount() == 3
    row1 = [widget.table.item(1, j).text() for j in range(5)]
    assert row1 == ["1", f"{8 / 32:.3f}", f"{4 / 28:.3f}", "16", "16"]
    row2 = [widget.table.item(2, j).text() for j in range(5)]
    assert row2 == ["2", "0.000", "0.000", "0", "1"]
    assert len(widget.plot.axes[0].lines) == 2
    widget.table.cellClicked.emit(2, 0)
    assert viewer.dims.current_step[0] == 2


def test_binary_image_layers_count_and_others_are_refused(widget_and_viewer, error_messages):
    widget, viewer = widget_and_viewer
    a, _ = _masks()
    viewer.add_image(a * 255, name="binary image")
    viewer.add_image(np.arange(300, dtype=np.uint8).reshape(3, 10, 10), name="mri")
    widget.set_layers("truth", "binary image")
    assert widget.compute()
    assert widget.total["dice"] == 1.0 and widget.total["iou"] == 1.0
    widget.set_layers("truth", "mri")
    assert not widget.compute()
    assert "'mri' is not a binary mask" in error_messages()[-1]
    assert widget.table.rowCount() == 0 and not widget.export_button.enabled


def test_shape_mismatch_is_refused_with_a_clear_message(widget_and_viewer, error_messages):
    widget, viewer = widget_and_viewer
    widget.compute_button.native.click()
    assert widget.table.rowCount() == 3
    viewer.add_labels(np.zeros((3, 10, 12), np.uint8), name="wider")
    widget.set_layers("truth", "wider")
    widget.compute_button.native.click()
    msg = error_messages()[-1]
    assert "'truth' (3, 10, 10) and 'wider' (3, 10, 12) differ in shape" in msg
    assert widget.summary.text() == msg
    assert widget.table.rowCount() == 0 and widget.total is None
    assert not widget.export_button.enabled


def test_csv_export(widget_and_viewer, tmp_path):
    widget, _ = widget_and_viewer
    with pytest.raises(InputError, match="compute the metrics first"):
        widget.export_csv(tmp_path / "early.csv")
    widget.compute_button.native.click()
    assert widget.export_button.enabled
    out = widget.export_csv(tmp_path / "metrics.csv")
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["slice", "dice", "iou", "voxels_a (truth)", "voxels_b (prediction)"]
    assert rows[1] == ["0", "1.000000", "1.000000", "25", "25"]
    assert rows[2] == ["1", "0.250000", f"{4 / 28:.6f}", "16", "16"]
    assert len(rows) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]  # atomic: no temp file left
    with pytest.raises(InputError, match="does not exist"):
        widget.export_csv(tmp_path / "missing" / "m.csv")


def test_table_lists_slices_with_abnormality_first(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    a = np.zeros((5, 8, 8), np.uint8)
    b = np.zeros((5, 8, 8), np.uint8)
    a[3, :2, :2] = 1
    b[3, :2, :3] = 1
    b[4, 0, 0] = 1
    viewer.add_labels(a, name="truth")
    viewer.add_labels(b, name="prediction")
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Metrics")[1]
    widget.layer_a.value = viewer.layers["truth"]  # magicgui choosers, as from the console
    widget.layer_b.value = viewer.layers["prediction"]
    widget.compute_button.native.click()
    shown = [int(widget.table.item(i, 0).text()) for i in range(widget.table.rowCount())]
    assert shown == [3, 4, 0, 1, 2]  # abnormal slices first, then those empty in both
    widget.table.cellClicked.emit(1, 0)
    assert viewer.dims.current_step[0] == 4
    widget.hide_empty.value = True
    assert widget.table.rowCount() == 2
    assert [r["slice"] for r in widget.rows] == [0, 1, 2, 3, 4]  # the export keeps slice order
    # the CSV holds every slice whatever the table hides, as the tooltips say
    import csv

    with open(widget.export_csv(tmp_path / "m.csv"), newline="") as fh:
        assert [int(r[0]) for r in list(csv.reader(fh))[1:]] == [0, 1, 2, 3, 4]
    assert "every slice" in widget.export_button.tooltip and "every slice" in widget.hide_empty.tooltip


def test_a_layer_is_not_compared_with_itself(widget_and_viewer, error_messages):
    widget, viewer = widget_and_viewer
    assert widget.compute()
    viewer.layers.remove("prediction")  # mask B's chooser falls back on the one left: 'truth'
    assert widget.layer_a.value.name == widget.layer_b.value.name == "truth"
    assert not widget.compute()
    assert "both 'truth'" in error_messages()[-1] and widget.total is None and not widget.export_button.enabled


def test_row_click_goes_to_the_slice_with_the_masks_scale_and_translate(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((30, 8, 8), np.uint8), name="other patient")  # 1 mm slices from 0
    a = np.zeros((5, 8, 8), np.uint8)
    a[3, :2, :2] = 1
    for name in ("truth", "prediction"):
        viewer.add_labels(a, name=name, scale=(3, 1, 1), translate=(2, 0, 0))
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Metrics")[1]
    widget.set_layers("truth", "prediction")
    assert widget.compute()
    widget.table.cellClicked.emit(0, 0)  # slice 3 lies at z = 2 + 3 * 3 mm
    assert widget.table_rows[0]["slice"] == 3 and viewer.dims.point[0] == pytest.approx(11)
    assert viewer.layers["truth"].world_to_data(viewer.dims.point)[0] == pytest.approx(3)


def test_mask_lists_follow_renamed_layers(widget_and_viewer):
    widget, viewer = widget_and_viewer  # 'truth' and 'prediction' were there before the widget
    viewer.add_labels(np.zeros((3, 10, 10), np.uint8), name="later")
    viewer.layers["prediction"].name = "model v2"
    viewer.layers["later"].name = "edited"
    names = [widget.layer_b.native.itemText(i) for i in range(widget.layer_b.native.count())]
    assert sorted(names) == ["edited", "model v2", "truth"]
    assert widget.layer_b.value.name == "model v2"  # the choice stays with its layer


def test_hide_empty_is_remembered_across_restarts(make_napari_viewer, settings_dir):
    """README: "Each widget remembers its settings across restarts"; the Metrics widget
    forgot its one setting, *hide slices empty in both*."""
    viewer = make_napari_viewer()
    first = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Metrics")[1]
    assert first.hide_empty.value is False
    first.hide_empty.value = True
    second = type(first)(viewer)  # a new napari session's widget
    assert second.hide_empty.value is True
    a, b = _masks()
    viewer.add_labels(a, name="truth")
    viewer.add_labels(b, name="prediction")
    second.set_layers("truth", "prediction")
    a[2] = 0
    second.compute_button.native.click()
    assert [r["slice"] for r in second.table_rows] == [0, 1, 2]  # slice 2: only B has abnormality
    viewer.layers["prediction"].data[2] = 0
    second.compute_button.native.click()
    assert [r["slice"] for r in second.table_rows] == [0, 1]  # hidden: empty in both
