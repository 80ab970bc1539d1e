"""Train widget end to end: 2 tiny epochs, Stop, and the new model offered for segmentation."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_lgg_seg.napari import _models

from .conftest import PID

TIMEOUT = 300_000  # ms


@pytest.fixture
def viewer_with_patient(make_napari_viewer, patient_folder):
    viewer = make_napari_viewer()
    viewer.open(str(patient_folder), plugin="napari-lgg-seg")
    return viewer


def _tiny_settings(widget, out, epochs=2, batch=2):
    widget.init_combo.setCurrentIndex(widget.init_combo.findData("scratch"))
    widget.base_filters.setValue(2)
    widget.epochs.setValue(epochs)
    widget.batch_size.setValue(batch)
    widget.learning_rate.setValue(1e-3)
    widget.val_fraction.setValue(0.0)
    widget.out_edit.setText(str(out))


def test_two_epochs_on_layer_pairs_then_offered_for_segmentation(qtbot, viewer_with_patient, tmp_path):
    viewer = viewer_with_patient
    seg_widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    train_widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Train / fine-tune")[1]
    train_widget.source_combo.setCurrentIndex(1)  # layers
    train_widget.pair_image.set_layer(PID)
    train_widget.pair_labels.set_layer("ground truth")
    train_widget.add_pair_button.click()
    assert train_widget.pair_list.count() == 1
    out = tmp_path / "new.keras"
    _tiny_settings(train_widget, out)

    kinds = []
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    with qtbot.waitSignal(train_widget.training_finished, timeout=TIMEOUT) as blocker:
        train_widget.start_button.click()
        train_widget.worker.yielded.connect(lambda item: kinds.append(item[0]))
        assert not train_widget.start_button.isEnabled() and train_widget.stop_button.isEnabled()
        timer.start()
        t0 = time.monotonic()
    timer.stop()
    assert blocker.args == ["done"], train_widget.status.text()

    res = train_widget.result
    assert res.epochs_run == 2 and res.best_epoch is not None and out.exists()
    assert {"begin", "batch", "epoch"} <= set(kinds)
    assert train_widget.progress_bar.value() == train_widget.progress_bar.maximum() == 2 * 3
    # live curves: train loss/Dice/IoU lines were drawn
    assert all(ax.lines for ax in train_widget.plot.axes)
    # the GUI kept ticking while Keras trained
    gaps = np.diff([t0, *ticks])
    assert len(ticks) >= 5 and gaps.max() < 1.5, f"{len(ticks)} ticks, longest gap {gaps.max():.2f} s"

    # the new model is offered (and selected) in the Segment widget
    trained = [s for s in _models.MODELS if s.kind == _models.TRAINED]
    assert [s.path for s in trained] == [str(out.resolve())]
    assert seg_widget.model_combo.currentData() == trained[0]
    assert "new.keras" in seg_widget.model_combo.currentText()
    with qtbot.waitSignal(seg_widget.run_finished, timeout=TIMEOUT) as blocker:
        seg_widget.run_button.click()
    assert blocker.args == ["done"]
    assert viewer.layers[f"{PID} segmentation"].data.shape == (6, 64, 64)


def test_stop_ends_cleanly_and_never_damages_the_saved_model(qtbot, make_napari_viewer, patient_folder,
                                                             tmp_path, tiny_model_path):
    from napari_lgg_seg.core.model import load_model

    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Train / fine-tune")[1]
    widget.source_combo.setCurrentIndex(0)  # kaggle_3m folder
    widget.folder_edit.setText(str(patient_folder.parent))
    out = tmp_path / "existing.keras"
    shutil.copy(tiny_model_path, out)
    _tiny_settings(widget, out, epochs=50, batch=1)
    asked = []
    widget.confirm = lambda title, text: asked.append(text) or True

    def stop_at_first_batch(item):
        if item[0] == "batch":
            widget.stop_button.click()

    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT) as blocker:
        widget.start_button.click()
        widget.worker.yielded.connect(stop_at_first_batch)
    assert len(asked) == 1 and "existing.keras" in asked[0]
    assert blocker.args[0] in ("stopped", "cancelled")
    assert widget.result is None or widget.result.epochs_run <= 1
    assert "Stop" in widget.status.text()
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    model = load_model(out)  # whatever was saved, the file is a complete model
    assert model.output_shape[-1] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files


def test_schedule_ema_crops_and_resume(qtbot, make_napari_viewer, patient_folder, tmp_path):
    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Train / fine-tune")[1]
    widget.source_combo.setCurrentIndex(0)
    widget.folder_edit.setText(str(patient_folder.parent))
    out = tmp_path / "m.keras"
    _tiny_settings(widget, out, epochs=1)
    widget.schedule_combo.setCurrentIndex(widget.schedule_combo.findData("cosine"))
    widget.ema.setValue(0.9)
    widget.crop_size.setValue(32)
    widget.samples_per_epoch.setValue(4)
    widget.positive_fraction.setValue(1.0)
    widget.missing_sequence.setValue(0.5)
    config = widget.config()
    assert (config["lr_schedule"], config["ema_momentum"], config["crop_size"], config["samples_per_epoch"],
            config["positive_fraction"], config["missing_sequence"], config["resume"]) == (
        "cosine", 0.9, 32, 4, 1.0, 0.5, False)
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT) as blocker:
        widget.start_button.click()
    assert blocker.args == ["done"], widget.status.text()
    assert widget.result.epochs_run == 1 and widget.result.history["learning_rate"] == [pytest.approx(1e-3)]

    asked = []
    widget.confirm = lambda title, text: asked.append(text) or True
    widget.epochs.setValue(3)
    widget.resume.setChecked(True)
    with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT) as blocker:
        widget.start_button.click()
    assert blocker.args == ["done"], widget.status.text()
    assert asked == []  # resuming continues the same model: nothing to confirm
    # epochs 2 and 3 of a 3-epoch cosine decay from 1e-3 to 1e-5
    assert widget.result.epochs_run == 2
    assert widget.result.history["learning_rate"] == pytest.approx([0.5 * (1e-3 + 1e-5), 1e-5], rel=1e-4)


def test_refusals_have_clear_messages(qtbot, viewer_with_patient, tmp_path, error_messages):
    viewer = viewer_with_patient
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Train / fine-tune")[1]
    widget.source_combo.setCurrentIndex(1)
    _tiny_settings(widget, tmp_path / "m.keras")
    widget.start_button.click()
    assert widget.worker is None
    assert "add at least one image + labels pair" in error_messages()[-1]

    widget.add_pair(viewer.layers[PID], viewer.layers["ground truth"])
    widget.out_edit.setText(str(tmp_path / "model.h5"))
    widget.start_button.click()
    assert "must be a .keras file" in error_messages()[-1]

    widget.source_combo.setCurrentIndex(0)
    widget.folder_edit.setText(str(tmp_path / "missing"))
    widget.out_edit.setText(str(tmp_path / "m.keras"))
    widget.start_button.click()
    assert "choose a folder of kaggle_3m patients" in error_messages()[-1]

    from napari_lgg_seg.core.model import BUNDLED_CONFIG

    if not BUNDLED_CONFIG.exists():  # fine-tuning the untrained bundled model fails readably
        widget.source_combo.setCurrentIndex(1)
        widget.init_combo.setCurrentIndex(widget.init_combo.findData("bundled"))
        with qtbot.waitSignal(widget.training_finished, timeout=TIMEOUT) as blocker:
            widget.start_button.click()
        assert blocker.args == ["error"]
        assert "has not been trained yet" in error_messages()[-1]
    assert not (tmp_path / "m.keras").exists()
