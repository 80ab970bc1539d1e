"""Segment widget end to end with a tiny untrained U-Net."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_lgg_seg.napari import _models
from napari_lgg_seg.napari._layers import labels_digest
from napari_lgg_seg.napari._tasks import Progress

from .conftest import PID

TIMEOUT = 180  # s; the first run imports TensorFlow


@pytest.fixture
def setup(make_napari_viewer, patient_folder, tiny_model_path):
    viewer = make_napari_viewer()
    viewer.open(str(patient_folder), plugin="napari-lgg-seg")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")
    widget.add_model_file(tiny_model_path)
    widget.image.value = viewer.layers[PID]
    return viewer, widget


def run(qtbot, widget, during=None) -> str:
    """Click Run as a user does, then wait for the end; returns how it ended."""
    finished = []
    widget.run_finished.connect(finished.append)
    widget.run_button.native.click()
    if during is not None:
        during()
    outcome = widget.runner.wait(TIMEOUT)
    widget.run_finished.disconnect(finished.append)
    assert outcome is not None, "the run did not end in time"
    assert finished == [outcome.value]
    return outcome.value


def test_segment_adds_labels_layer(qtbot, setup, tiny_model_path):
    viewer, widget = setup
    image = viewer.layers[PID]
    image.scale = (3.0, 0.5, 0.5)
    image.translate = (1.0, 2.0, 3.0)
    widget.threshold.value = 0.45
    widget.batch_size.value = 4
    state = {}

    def while_running():
        state["run_enabled"] = widget.run_button.enabled
        state["cancel_enabled"] = widget.cancel_button.enabled

    assert run(qtbot, widget, while_running) == "done"
    assert state == {"run_enabled": False, "cancel_enabled": True}
    assert widget.run_button.enabled and not widget.cancel_button.enabled

    seg = viewer.layers[f"{PID} segmentation"]
    assert widget.status.value == f"Added '{PID} segmentation'."  # not overwritten by a late report
    assert widget.progress_bar.value == widget.progress_bar.max == 1
    assert seg.data.shape == (6, 64, 64) and seg.data.dtype == np.uint8
    assert tuple(seg.scale) == (3.0, 0.5, 0.5) and tuple(seg.translate) == (1.0, 2.0, 3.0)
    meta = seg.metadata
    assert meta["model"] == "tiny.keras" and meta["version"] == "user"
    assert meta["threshold"] == pytest.approx(0.45) and meta["patient_id"] == PID
    assert time.strptime(meta["time"][:19], "%Y-%m-%dT%H:%M:%S")
    assert meta["digest"] == labels_digest(seg.data)

    # the same labels as the core API gives
    from napari_lgg_seg.core.inference import segment_volume
    from napari_lgg_seg.core.model import load_model

    expected = segment_volume(image.data, load_model(tiny_model_path), threshold=0.45, batch_size=4)
    assert np.array_equal(seg.data, expected)
    text = widget.result.value
    voxels = int(expected.sum())
    assert f"{voxels:,} voxels" in text and "mm³" in text
    assert f"{voxels * 0.75:,.1f} mm³" in text
    n_slices = int(expected.reshape(6, -1).any(axis=1).sum())
    assert f"in {n_slices} slice" in text


def _big_volume_widget(make_napari_viewer, model_path, n_slices: int):
    """A viewer with a long random RGB volume 'big' and a Segment widget, one slice per batch."""
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 255, (n_slices, 64, 64, 3), dtype=np.uint8), rgb=True, name="big")
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    widget.add_model_file(model_path)
    widget.batch_size.value = 1
    return viewer, widget


def test_cancel_stops_after_current_batch_and_adds_nothing(qtbot, make_napari_viewer, tiny_model_path):
    viewer, widget = _big_volume_widget(make_napari_viewer, tiny_model_path, 150)
    seen = []

    def cancel_on_first_batch():
        def on_yield(item):
            if isinstance(item, Progress):
                seen.append(item.done)
                widget.cancel()
        widget.worker.yielded.connect(on_yield)

    assert run(qtbot, widget, cancel_on_first_batch) == "cancelled"
    assert seen and max(seen) < 150  # it did stop early
    assert [l.name for l in viewer.layers] == ["big"]
    assert widget.run_button.enabled
    assert "Cancelled" in widget.status.value

    # cancelling before the model is even loaded works the same way
    assert run(qtbot, widget, widget.cancel) == "cancelled"
    assert [l.name for l in viewer.layers] == ["big"]


def test_second_run_updates_layer_in_place(qtbot, setup):
    viewer, widget = setup
    assert run(qtbot, widget) == "done"
    seg = viewer.layers[f"{PID} segmentation"]
    n_layers = len(viewer.layers)
    widget.threshold.value = 0.3
    assert run(qtbot, widget) == "done"
    assert viewer.layers[f"{PID} segmentation"] is seg
    assert len(viewer.layers) == n_layers
    assert seg.metadata["threshold"] == pytest.approx(0.3)
    assert seg.metadata["digest"] == labels_digest(seg.data)


def test_edited_segmentation_needs_confirmation(qtbot, setup):
    viewer, widget = setup
    asked = []
    widget.confirm = lambda title, text: asked.append(text) or False
    assert run(qtbot, widget) == "done"
    assert asked == []  # nothing to replace yet
    seg = viewer.layers[f"{PID} segmentation"]
    assert run(qtbot, widget) == "done"
    assert asked == []  # not edited: replaced without asking

    seg.data[2, 10:14, 10:14] = 7  # a hand edit
    seg.refresh()
    widget.run_button.native.click()  # answered "No": nothing runs
    assert len(asked) == 1 and "edited by hand" in asked[0]
    assert widget.worker is None and "Kept" in widget.status.value
    assert (seg.data[2, 10:14, 10:14] == 7).all()

    widget.confirm = lambda title, text: asked.append(text) or True
    assert run(qtbot, widget) == "done"
    assert len(asked) == 2
    assert not (seg.data == 7).any()
    assert seg.metadata["digest"] == labels_digest(seg.data)


def test_bad_model_file_shows_readable_error(qtbot, setup, tmp_path, error_messages):
    viewer, widget = setup
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip at all")
    widget.add_model_file(bad)
    assert widget.model.value.path == str(bad.resolve())
    assert run(qtbot, widget) == "error"
    assert any("not a Keras model file" in m and "broken.keras" in m for m in error_messages())
    assert f"{PID} segmentation" not in viewer.layers
    assert widget.run_button.enabled


def test_untrained_bundled_model_gives_a_clear_message(qtbot, setup, error_messages, monkeypatch, tmp_path):
    from napari_lgg_seg.core import model as model_mod

    # a checkout without trained weights: point the bundled folder at an empty one
    monkeypatch.setattr(model_mod, "BUNDLED_DIR", tmp_path)
    monkeypatch.setattr(model_mod, "BUNDLED_CONFIG", tmp_path / "model.json")
    from napari_lgg_seg.core import engine_int8  # the int8 engine is the bundled model too

    monkeypatch.setattr(engine_int8, "BUNDLED_DIR", tmp_path)
    viewer, widget = setup
    widget.select_model(_models.BUNDLED_SOURCE)
    assert run(qtbot, widget) == "error"
    assert any("has not been trained yet" in m for m in error_messages())


def test_grey_volume_and_model_list(qtbot, make_napari_viewer, tiny_model_path):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(1)
    viewer.add_image(rng.integers(0, 4000, (5, 40, 48), dtype=np.uint16), name="flair", scale=(2, 1, 1))
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    assert widget.model.choices == (_models.BUNDLED_SOURCE,)
    assert widget.model.native.itemText(0) == "Bundled U-Net"
    widget.model_file.value = tiny_model_path  # as the file dialog does
    assert len(widget.model.choices) == 2 and widget.model.value.path == str(tiny_model_path.resolve())
    assert run(qtbot, widget) == "done"
    seg = viewer.layers["flair segmentation"]
    assert seg.data.shape == (5, 40, 48) and tuple(seg.scale) == (2, 1, 1)


def test_gui_stays_responsive_during_inference(qtbot, make_napari_viewer, tiny_model_path):
    viewer, widget = _big_volume_widget(make_napari_viewer, tiny_model_path, 120)
    _models.load(_models.MODELS.items()[-1])  # measure inference, not the TensorFlow import
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    try:
        t0 = time.monotonic()
        assert run(qtbot, widget) == "done"
        elapsed = time.monotonic() - t0
    finally:
        timer.stop()
    gaps = np.diff([t0, *ticks])
    assert len(ticks) >= 5, f"only {len(ticks)} timer ticks in {elapsed:.1f} s"
    assert gaps.max() < 1.0, f"GUI blocked for {gaps.max():.2f} s"


def test_console_use_values_call_and_wait(qtbot, setup, tiny_model_path):
    viewer, widget = setup
    image = viewer.layers[PID]
    widget.threshold.value = 0.3  # the magicgui habit is honoured
    assert widget.options().threshold == pytest.approx(0.3)
    widget(image=image, threshold=0.6, batch_size=3)  # starts in the background
    assert widget.worker is not None
    returned = widget.wait(TIMEOUT)
    seg = viewer.layers[f"{PID} segmentation"]
    assert returned is not None and returned.name == seg.name and returned.data is seg.data
    assert seg.metadata["threshold"] == pytest.approx(0.6)
    assert seg.metadata["settings"]["batch_size"] == 3
    from napari_lgg_seg.core.inference import segment_volume
    from napari_lgg_seg.core.model import load_model

    expected = segment_volume(image.data, load_model(tiny_model_path), threshold=0.6)
    assert np.array_equal(seg.data, expected)

    # the blocking form, with mirror TTA, updates the same layer
    again = widget.segment(timeout=TIMEOUT, flip_tta=True, threshold=0.5)
    assert again.data is seg.data and seg.metadata["settings"]["flip_tta"] is True
    expected = segment_volume(image.data, load_model(tiny_model_path), threshold=0.5, flip_tta=True)
    assert np.array_equal(seg.data, expected)

    with pytest.raises(TypeError, match="no setting 'treshold'.*threshold"):
        widget(treshold=0.2)


def test_refusals_from_the_console_return_none(make_napari_viewer, error_messages):
    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    assert widget.segment() is None
    assert "Choose an image layer" in error_messages()[-1] and widget.worker is None


def test_settings_persist_across_widgets_and_reset(make_napari_viewer, settings_dir, tiny_model_path):
    viewer = make_napari_viewer()
    first = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    first.threshold.value = 0.35
    first.batch_size.value = 2
    first.min_size.value = 12
    first.flip_tta.value = True
    first.flair_model.value = False
    first.model_file.value = tiny_model_path
    assert (settings_dir / "segment.json").is_file()

    _models.MODELS.reset()  # as after a restart: only the bundled model is known
    second = type(first)(viewer)  # a new napari session's widget
    assert second.options().core_kwargs() == {"threshold": 0.35, "postprocess": None, "batch_size": 2,
                                               "min_size": 12, "flip_tta": True, "engine": "auto",
                                               "flair_model": False}
    assert second.model.value.path == str(tiny_model_path.resolve())  # the model file came back too

    second.reset_button.native.click()
    # the defaults: the model's own threshold and post-processing
    assert second.options().core_kwargs() == {"threshold": None, "postprocess": None, "batch_size": 8,
                                               "min_size": None, "flip_tta": False, "engine": "auto",
                                               "flair_model": True}
    assert not (settings_dir / "segment.json").exists()
    third = type(first)(viewer)
    assert third.threshold.value == 0 and third.threshold.native.text() == "model's own"


def test_undo_last_run_restores_hand_edits(qtbot, setup):
    viewer, widget = setup
    assert not widget.undo_button.enabled
    assert run(qtbot, widget) == "done"
    seg = viewer.layers[f"{PID} segmentation"]
    assert not widget.undo_button.enabled  # a new layer: nothing was replaced
    seg.data[2, 10:14, 10:14] = 7  # hand edits
    seg.data[3] = 0
    seg.refresh()
    edited = seg.data.copy()
    edited_meta = dict(seg.metadata)
    widget.confirm = lambda title, text: True
    widget.threshold.value = 0.3
    assert run(qtbot, widget) == "done"
    assert not np.array_equal(seg.data, edited) and widget.undo_button.enabled
    widget.undo_button.native.click()
    assert np.array_equal(seg.data, edited)  # exactly the previous labels
    assert seg.metadata == edited_meta
    assert not widget.undo_button.enabled and "Restored" in widget.status.value

    assert "after edits" in widget.result.value  # the volume shown is that of the edited labels
    assert f"{int((edited > 0).sum()):,} voxels" in widget.result.value

    # Ctrl+Z on the layer works as well: the re-run went through the layer's edit history
    assert run(qtbot, widget) == "done"
    rerun = seg.data.copy()
    assert not np.array_equal(rerun, edited)
    seg.undo()
    assert np.array_equal(seg.data, edited)
    seg.redo()
    assert np.array_equal(seg.data, rerun)


def test_volume_follows_hand_edits_and_reference_is_a_contour(qtbot, setup):
    viewer, widget = setup
    truth = viewer.layers["ground truth"]
    assert truth.contour == 0
    assert run(qtbot, widget) == "done"
    assert truth.contour == 1  # the reference is outlined so that differences show
    seg = viewer.layers[f"{PID} segmentation"]
    seg.data[:] = 0
    seg.data[0, :2, :5] = 1
    seg.events.data(value=seg.data)  # what painting emits, in short
    assert "Abnormality: 10 voxels" in widget.result.value and "after edits" in widget.result.value


def test_readme_widget_snippet_runs(make_napari_viewer, patient_folder):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    after = readme.split("napari's console (*Window > Console*) can drive it:", 1)[1]
    code = re.search(r"```python\n(.*?)```", after, re.S).group(1)
    viewer = make_napari_viewer()
    viewer.open(str(patient_folder), plugin="napari-lgg-seg")
    namespace = {"viewer": viewer}
    exec(compile(code, "README widget snippet", "exec"), namespace)  # with the bundled model
    w, seg = namespace["w"], viewer.layers[f"{PID} segmentation"]
    assert namespace["seg"] is not None and namespace["seg"].name == seg.name
    assert w.threshold.value == pytest.approx(0.6) and w.min_size.value == 50
    # the snippet ends by undoing its second run: the first run's labels and metadata are back
    assert "Restored" in w.status.value
    assert seg.metadata["settings"]["min_size"] == 0 and seg.metadata["threshold"] == pytest.approx(0.6)


def test_console_refusals_are_readable_and_never_answer_with_an_earlier_result(make_napari_viewer,
                                                                                error_messages):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    flair = viewer.add_image(rng.integers(0, 255, (3, 32, 32), dtype=np.uint8), name="flair")
    series = viewer.add_image(rng.integers(0, 255, (2, 3, 16, 16), dtype=np.uint8), name="series")
    labels = viewer.add_labels(np.zeros((3, 32, 32), np.uint8), name="labels")
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    first = widget.segment(image=flair, timeout=TIMEOUT)  # the bundled model
    assert first is not None

    # a layer the image list does not offer: a message, not magicgui's "not a valid choice"
    assert widget.segment(image=labels) is None
    assert "'labels' is a Labels layer, not an image" in error_messages()[-1]
    widget(image=series)
    assert widget.wait() is None  # not the earlier run's layer
    assert "'series'" in error_messages()[-1] and "not a slice or a volume" in error_messages()[-1]
    assert widget.image.value is flair and widget.worker is None

    # while a run goes on, another is refused and leaves that run's settings alone
    assert widget(image=flair, batch_size=1)
    assert widget.segment(threshold=0.3) is None
    assert "already running" in error_messages()[-1] and widget.threshold.value == 0
    again = widget.wait(TIMEOUT)  # the running one's layer, updated in place
    assert again is not None and again.data is first.data and again.metadata["settings"]["batch_size"] == 1


def test_closing_napari_during_a_run_stops_it_without_errors(qtbot, make_napari_viewer):
    # pytest-qt fails the test on any exception in the Qt event loop, as napari shows them
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 255, (60, 64, 64), dtype=np.uint8), name="flair")
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]  # the bundled model
    widget.batch_size.value = 1
    widget.run_button.native.click()
    seen = []
    widget.worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: any(isinstance(r, Progress) for r in seen), timeout=TIMEOUT * 1000)
    viewer.close()  # deletes the dock widgets while the worker still runs
    assert widget.runner.wait(TIMEOUT).value == "cancelled"
    assert widget.worker is None


def test_renaming_the_chosen_layers_keeps_them_chosen(make_napari_viewer):
    # magicgui matches choices by text: a rename used to drop the chosen image's item, and
    # the next Run segmented another layer
    viewer = make_napari_viewer()
    flair = viewer.add_image(np.zeros((3, 16, 16), np.uint8), name="flair")
    pre = viewer.add_image(np.zeros((3, 16, 16), np.uint8), name="pre")
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    viewer.add_image(np.zeros((3, 16, 16), np.uint8), name="other")
    widget.image.value = viewer.layers["flair"]
    widget.pre_contrast.value = viewer.layers["pre"]
    flair.name = "patient 7 FLAIR"
    pre.name = "patient 7 T1"
    assert widget.image.value.name == "patient 7 FLAIR" and widget.pre_contrast.value.name == "patient 7 T1"
    assert widget.image.native.currentText() == "patient 7 FLAIR"
    assert sorted(widget.image.native.itemText(i) for i in range(widget.image.native.count())) == [
        "other", "patient 7 FLAIR", "patient 7 T1"]


def test_result_lies_on_the_image_in_the_world_with_its_rotate_shear_and_affine(make_napari_viewer):
    # only scale and translate were copied: on an image with an affine (as other readers
    # give) the segmentation lay elsewhere
    viewer = make_napari_viewer()
    affine = np.eye(4)
    affine[1, 2], affine[:3, 3] = 0.3, (5, 7, 9)
    image = viewer.add_image(np.random.default_rng(0).integers(0, 255, (3, 32, 32), dtype=np.uint8),
                             name="flair", scale=(3, 0.5, 0.5), rotate=(10, 0, 0), shear=(0.1, 0, 0),
                             affine=affine)
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    seg = widget.segment(TIMEOUT, image=viewer.layers["flair"])  # the bundled model

    def same_place():
        points = [(0, 0, 0), (2, 31, 0), (1, 5, 17)]
        return all(np.allclose(seg.data_to_world(p), image.data_to_world(p)) for p in points)

    assert same_place()
    image.affine = np.eye(4)  # moved; the next run follows it
    assert not same_place()
    again = widget.segment(TIMEOUT)
    assert again.data is seg.data and same_place()


def test_an_oblique_volume_is_segmented_with_a_note(make_napari_viewer, tmp_path):
    from ..core.test_geometry_formats import _rotation
    from ..mri_files import write_nifti

    vol = np.zeros((24, 24, 6), np.int16)
    vol[8:16, 8:16, 2:4] = 900
    path = write_nifti(tmp_path / "oblique.nii.gz", vol, _rotation(30, 0) @ np.diag([0.9, 0.9, 3.0, 1.0]))
    viewer = make_napari_viewer()
    viewer.open(path, plugin="napari-lgg-seg")
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    seg = widget.segment(TIMEOUT, image=viewer.layers[0])
    assert seg is not None and "Oblique volume: its slices are 30 degrees from axial" in widget.status.value
