"""Train widget end to end: 2 tiny epochs, Stop, and the new model offered for segmentation."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_lgg_seg.napari import _models
from napari_lgg_seg.napari._tasks import BatchEnd, EpochEnd, TrainBegin

from .conftest import PID

TIMEOUT = 300  # s


@pytest.fixture
def viewer_with_patient(make_napari_viewer, patient_folder):
    viewer = make_napari_viewer()
    viewer.open(str(patient_folder), plugin="napari-lgg-seg")
    return viewer


def _tiny_settings(widget, out, epochs=2, batch=2):
    widget.init_from.value = "scratch"
    widget.base_filters.value = 2
    widget.epochs.value = epochs
    widget.batch_size.value = batch
    widget.learning_rate.value = 1e-3
    widget.val_fraction.value = 0.0
    widget.out.value = out


def train(widget, during=None) -> str:
    """Click Start as a user does and wait for the end; returns how it ended."""
    finished = []
    widget.training_finished.connect(finished.append)
    widget.start_button.click()
    if during is not None:
        during()
    outcome = widget.wait(TIMEOUT)
    assert outcome is not None, "training did not end in time"
    assert finished == [outcome.value]
    return outcome.value


def test_two_epochs_on_layer_pairs_then_offered_for_segmentation(qtbot, viewer_with_patient, tmp_path):
    viewer = viewer_with_patient
    seg_widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    train_widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Train / fine-tune")[1]
    train_widget.source_combo.setCurrentIndex(1)  # layers
    train_widget.pair_image.value = viewer.layers[PID]
    train_widget.pair_labels.value = viewer.layers["ground truth"]
    train_widget.add_pair_button.click()
    assert train_widget.pair_list.count() == 1
    out = tmp_path / "new.keras"
    _tiny_settings(train_widget, out)

    kinds = []
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    t0 = []

    def during():
        train_widget.worker.yielded.connect(lambda item: kinds.append(type(item)))
        assert not train_widget.start_button.isEnabled() and train_widget.stop_button.isEnabled()
        timer.start()
        t0.append(time.monotonic())

    assert train(train_widget, during) == "done", train_widget.status.text()
    timer.stop()
    t0 = t0[0]

    res = train_widget.result
    assert res.epochs_run == 2 and res.best_epoch is not None and out.exists()
    assert {TrainBegin, BatchEnd, EpochEnd} <= set(kinds)
    assert train_widget.progress_bar.value() == train_widget.progress_bar.maximum()
    # one patient: no validation set, and the note about it stays visible
    assert train_widget.note.isVisibleTo(train_widget) and "lowest training loss" in train_widget.note.text()
    # live curves: train loss/Dice/IoU lines were drawn
    assert all(ax.lines for ax in train_widget.plot.axes)
    # the GUI kept ticking while Keras trained
    gaps = np.diff([t0, *ticks])
    assert len(ticks) >= 5 and gaps.max() < 1.5, f"{len(ticks)} ticks, longest gap {gaps.max():.2f} s"

    # the new model is offered (and selected) in the Segment widget
    trained = [s for s in _models.MODELS if s.kind == _models.TRAINED]
    assert [s.path for s in trained] == [str(out.resolve())]
    assert seg_widget.model.value == trained[0]
    assert "new.keras" in seg_widget.model.native.currentText()
    assert seg_widget.segment(timeout=TIMEOUT, image=viewer.layers[PID]) is not None
    assert viewer.layers[f"{PID} segmentation"].data.shape == (6, 64, 64)


def test_stop_ends_cleanly_and_never_damages_the_saved_model(qtbot, make_napari_viewer, patient_folder,
                                                             tmp_path, tiny_model_path):
    from napari_lgg_seg.core.model import load_model

    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Train / fine-tune")[1]
    widget.source_combo.setCurrentIndex(0)  # kaggle_3m folder
    widget.folder.value = patient_folder.parent
    out = tmp_path / "existing.keras"
    shutil.copy(tiny_model_path, out)
    _tiny_settings(widget, out, epochs=50, batch=1)
    asked = []
    widget.confirm = lambda title, text: asked.append(text) or True

    def stop_at_first_batch(item):
        if isinstance(item, BatchEnd):
            widget.stop_button.click()

    outcome = train(widget, lambda: widget.worker.yielded.connect(stop_at_first_batch))
    assert len(asked) == 1 and "existing.keras" in asked[0]
    assert outcome in ("stopped", "cancelled")
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
    widget.folder.value = patient_folder.parent
    out = tmp_path / "m.keras"
    _tiny_settings(widget, out, epochs=1)
    widget.lr_schedule.value = "cosine"
    widget.ema_momentum.value = 0.9
    widget.crop_size.value = 32
    widget.samples_per_epoch.value = 4
    widget.positive_fraction.value = 1.0
    widget.missing_sequence.value = 0.5
    widget.flair_only.value = True
    widget.small_lesion_power.value = 0.5
    widget.context_slices.value = 1
    config = widget.config()
    assert config["context_slices"] == 1
    assert (config["lr_schedule"], config["ema_momentum"], config["crop_size"], config["samples_per_epoch"],
            config["positive_fraction"], config["missing_sequence"], config["resume"], config["flair_only"],
            config["small_lesion_power"]) == ("cosine", 0.9, 32, 4, 1.0, 0.5, False, True, 0.5)
    assert train(widget) == "done", widget.status.text()
    assert widget.result.epochs_run == 1 and widget.result.history["learning_rate"] == [pytest.approx(1e-3)]
    from napari_lgg_seg.core.model import load_model

    assert load_model(out).input_shape[-1] == 9  # the context setting reached training

    asked = []
    widget.confirm = lambda title, text: asked.append(text) or True
    widget.epochs.value = 3
    widget.resume.value = True
    assert train(widget) == "done", widget.status.text()
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
    widget.out.value = tmp_path / "model.h5"
    widget.start_button.click()
    assert "must be a .keras file" in error_messages()[-1]

    widget.source_combo.setCurrentIndex(0)
    widget.folder.value = tmp_path / "missing"
    widget.out.value = tmp_path / "m.keras"
    widget.start_button.click()
    assert "choose a folder of kaggle_3m patients" in error_messages()[-1]

    from napari_lgg_seg.core.model import BUNDLED_CONFIG

    if not BUNDLED_CONFIG.exists():  # fine-tuning the untrained bundled model fails readably
        widget.source_combo.setCurrentIndex(1)
        widget.init_from.value = "bundled"
        assert train(widget) == "error"
        assert "has not been trained yet" in error_messages()[-1]
    assert not (tmp_path / "m.keras").exists()


def test_form_comes_from_train_config_and_is_remembered(make_napari_viewer, settings_dir, tmp_path):
    from dataclasses import fields

    from napari_lgg_seg.core.train_config import TrainConfig

    viewer = make_napari_viewer()
    first = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Train / fine-tune")[1]
    config_fields = {f.name for f in fields(TrainConfig)}
    assert {w.name for w in first.form_widgets} <= config_fields  # every form value is a TrainConfig field
    first.epochs.value = 7
    first.learning_rate.value = 3e-4
    first.ema_momentum.value = 0.995
    first.lr_schedule.value = "cosine"
    first.init_from.value = "scratch"
    first.out.value = tmp_path / "mine.keras"
    first.folder.value = tmp_path
    second = type(first)(viewer)  # as after a restart
    config = second.config()
    assert (config["epochs"], config["learning_rate"], config["ema_momentum"], config["lr_schedule"],
            config["init_from"], config["out"]) == (7, pytest.approx(3e-4), 0.995, "cosine", "scratch",
                                                    str(tmp_path / "mine.keras"))
    assert config["crop_size"] is None and config["samples_per_epoch"] is None  # 0 means "off"
    assert second.folder.value == tmp_path
    TrainConfig(**config).validate()
    second.settings.reset()
    assert second.epochs.value == 10 and second.init_from.value == "bundled"
    assert not (settings_dir / "train.json").exists()


def test_pairs_hold_layers_not_names(make_napari_viewer, viewer_with_patient, tmp_path):
    viewer = viewer_with_patient
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Train / fine-tune")[1]
    image, truth = viewer.layers[PID], viewer.layers["ground truth"]
    widget.add_pair(image, truth)
    truth.name = "corrected"
    other = viewer.add_labels(np.zeros_like(truth.data), name="ground truth")  # takes the old name
    assert widget.pairs() == [(image, truth)]
    assert "corrected" in widget.pair_list.item(0).text()
    assert other is not truth
    viewer.layers.remove(truth)
    assert "closed" in widget.pair_list.item(0).text()
    from napari_lgg_seg.core.errors import InputError

    with pytest.raises(InputError, match="'corrected' is no longer in the viewer"):
        widget.pairs()


def test_closing_napari_during_training_stops_it_without_errors(qtbot, viewer_with_patient, tmp_path):
    # pytest-qt fails the test on any exception in the Qt event loop, as napari shows them
    viewer = viewer_with_patient
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Train / fine-tune")[1]
    widget.source_combo.setCurrentIndex(1)
    widget.add_pair(viewer.layers[PID], viewer.layers["ground truth"])
    _tiny_settings(widget, tmp_path / "m.keras", epochs=100)
    widget.start_button.click()
    seen = []
    widget.worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: any(isinstance(r, BatchEnd) for r in seen), timeout=TIMEOUT * 1000)
    viewer.close()  # deletes the dock widgets while training still runs
    assert widget.wait(TIMEOUT) is not None
    assert widget.worker is None


def test_output_folder_that_cannot_be_written_is_refused_before_training(viewer_with_patient, tmp_path,
                                                                         monkeypatch, error_messages):
    # it failed only when the first epoch ended and the model was saved (minutes on real data)
    import errno
    import os

    real_open = os.open

    def refusing_open(path, *args, **kwargs):  # root may write anywhere: refuse as a read-only folder does
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    viewer = viewer_with_patient
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Train / fine-tune")[1]
    widget.source_combo.setCurrentIndex(1)
    widget.add_pair(viewer.layers[PID], viewer.layers["ground truth"])
    _tiny_settings(widget, tmp_path / "m.keras")
    monkeypatch.setattr(os, "open", refusing_open)
    widget.start_button.click()
    assert widget.worker is None
    assert error_messages()[-1] == f"{tmp_path} (for the output model): cannot write into this folder (Permission denied)"


def test_layer_lists_follow_renamed_layers(viewer_with_patient):
    viewer = viewer_with_patient  # the patient's layers were there before the widget
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Train / fine-tune")[1]
    viewer.add_labels(np.zeros((6, 64, 64), np.uint8), name="later")
    widget.pair_labels.value = viewer.layers["ground truth"]
    viewer.layers[PID].name = "patient 1"
    viewer.layers["later"].name = "corrected"
    viewer.layers["ground truth"].name = "truth, corrected"

    def names(combo):
        return [combo.native.itemText(i) for i in range(combo.native.count())]

    assert names(widget.pair_image) == ["patient 1"]
    assert sorted(names(widget.pair_labels)) == ["corrected", "truth, corrected"]
    assert widget.pair_labels.value.name == "truth, corrected"  # the choice stays with its layer
