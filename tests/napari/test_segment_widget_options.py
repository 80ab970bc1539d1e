"""Segment widget: the model's own post-processing, optional sequences and voxel size,
driven as a console user does, with fake models (no training, no TensorFlow inference)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_lgg_seg.napari import _models

from .conftest import PID

TIMEOUT = 120


class ProbModel:
    """Predicts the FLAIR channel (after the widget's preprocessing) as the probability and
    records its input batches; carries metadata like the bundled model."""

    input_shape = (None, 32, 32, 3)
    name = "fake"

    def __init__(self, info: dict | None = None) -> None:
        self.lgg_info = {"name": "fake", "version": "2.0", **(info or {})}
        self.batches: list[np.ndarray] = []

    def predict_on_batch(self, x):
        self.batches.append(np.array(x))
        return x[..., 1:2]


OWN = {"threshold": 0.4, "postprocessing": {"mode": "largest", "min_size": 0, "min_probability": 0.0}}


def use_as_bundled(model) -> None:
    """Make ``model`` the loaded bundled model, as after a first run."""
    from napari_lgg_seg.core.inference import ENGINES

    for engine in ENGINES:
        _models._CACHE[(*_models._cache_key(_models.BUNDLED_SOURCE), engine)] = model


def blobs() -> np.ndarray:
    """A grey (4, 32, 32) volume: a big bright cube (probability 1), a small bright cube (1)
    and a dim cube (0.6 after scaling by the bright value)."""
    vol = np.zeros((4, 32, 32), np.uint8)
    vol[0:4, 2:12, 2:12] = 250   # 400 voxels
    vol[1:3, 20:23, 20:23] = 250  # 18 voxels
    vol[1:3, 20:25, 2:7] = 150   # 50 voxels, probability 0.6
    return vol


def n_components(labels: np.ndarray) -> list[int]:
    from scipy import ndimage

    comp, n = ndimage.label(labels)
    return sorted(int((comp == i).sum()) for i in range(1, n + 1))


@pytest.fixture
def grey(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.add_image(blobs(), name="flair")
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    return viewer, widget, layer


def test_models_own_postprocessing_is_the_default_shown_and_can_be_switched_off(grey):
    _viewer, widget, layer = grey
    model = ProbModel(OWN)
    use_as_bundled(model)
    widget._show_model_defaults()
    assert widget.model_defaults.value == "threshold 0.4; keep the largest component"
    assert widget.model_defaults.label == "model's own"
    assert widget.threshold.native.text() == "model's own" and widget.postprocess.value == "model"
    assert not widget.min_probability.enabled  # only for peak / mean

    seg = widget.segment(TIMEOUT, image=layer)
    assert n_components(seg.data) == [400]  # the model's own: only the largest component
    assert seg.metadata["threshold"] == pytest.approx(0.4)
    assert seg.metadata["postprocessing"] == "keep the largest component"
    assert "threshold 0.4; keep the largest component" in widget.result.value

    widget.postprocess.value = "none"  # switched off: every component, at the model's threshold
    seg = widget.segment(TIMEOUT)
    assert n_components(seg.data) == [18, 50, 400]
    assert seg.metadata["postprocessing"] == "none" and seg.metadata["threshold"] == pytest.approx(0.4)

    seg = widget.segment(TIMEOUT, threshold=0.7)  # the dim cube (0.6) goes
    assert n_components(seg.data) == [18, 400] and seg.metadata["threshold"] == pytest.approx(0.7)

    widget.postprocess.value = "peak"
    assert widget.min_probability.enabled
    seg = widget.segment(TIMEOUT, threshold=0.0, min_probability=0.9)  # 0: the model's own threshold
    assert n_components(seg.data) == [18, 400]
    assert seg.metadata["postprocessing"] == "keep components with peak probability >= 0.9"

    seg = widget.segment(TIMEOUT, postprocess="model", min_size=20)  # own mode, own threshold, new size
    assert n_components(seg.data) == [400]
    assert seg.metadata["min_size"] == 20 and seg.metadata["threshold"] == pytest.approx(0.4)

    seg = widget.segment(TIMEOUT, postprocess="min_size", min_size=30)
    assert n_components(seg.data) == [50, 400]


def test_min_size_mode_without_a_size_is_refused_with_a_message(grey, error_messages):
    _viewer, widget, layer = grey
    use_as_bundled(ProbModel(OWN))
    assert widget.segment(TIMEOUT, image=layer, postprocess="min_size", min_size=0) is None
    assert "needs a min. component above 0" in error_messages()[-1] and widget.worker is None


def test_model_defaults_label_follows_the_model_choice(grey, tmp_path, monkeypatch, tiny_model_path):
    _viewer, widget, _ = grey
    config = tmp_path / "model.json"
    config.write_text(json.dumps({"threshold": 0.45, "postprocessing": {"mode": "peak", "min_probability": 0.9}}))
    monkeypatch.setattr(_models, "_bundled_config", lambda: config)  # the coming model.json, read without TF
    widget._show_model_defaults()
    assert widget.model_defaults.value == "threshold 0.45; keep components with peak probability >= 0.9"
    widget.add_model_file(tiny_model_path)  # choosing a .keras file updates the label
    assert widget.model_defaults.value.startswith("threshold 0.5; no post-processing")
    widget.model.value = _models.BUNDLED_SOURCE
    assert "peak probability >= 0.9" in widget.model_defaults.value
    config.write_text("{broken")
    widget._show_model_defaults()
    assert "unknown" in widget.model_defaults.value


def test_pre_and_post_contrast_layers_are_stacked_as_channels(grey):
    viewer, widget, flair = grey
    pre = np.zeros_like(flair.data)
    pre[:, :16] = 100  # top half
    post = np.zeros_like(flair.data)
    post[:, :, 16:] = 100  # right half
    pre_layer = viewer.add_image(pre, name="t1")
    post_layer = viewer.add_image(post, name="t1 gd")
    viewer.add_image(np.zeros((4, 16, 16), np.uint8), name="other grid")
    viewer.add_image(np.zeros((4, 32, 32, 3), np.uint8), name="rgb", rgb=True)
    model = ProbModel()
    use_as_bundled(model)
    widget.image.value = flair
    names = [c.name if c is not None else None for c in widget.pre_contrast.choices]
    assert names[0] is None and sorted(names[1:]) == ["t1", "t1 gd"]  # grey layers of the FLAIR's shape only
    seg = widget.segment(TIMEOUT, pre_contrast=pre_layer, post_contrast=post_layer)
    assert seg is not None
    batch = np.concatenate(model.batches)
    assert batch.shape == (4, 32, 32, 3)
    assert np.array_equal(batch[..., 0] > 0, pre > 0)
    assert np.array_equal(batch[..., 1] > 0, flair.data > 0)
    assert np.array_equal(batch[..., 2] > 0, post > 0)

    # 'none' for post-contrast: the FLAIR takes its place, as in training
    model.batches.clear()
    widget.segment(TIMEOUT, post_contrast=None)
    batch = np.concatenate(model.batches)
    assert np.array_equal(batch[..., 0] > 0, pre > 0) and np.array_equal(batch[..., 2], batch[..., 1])

    # an RGB image holds all three sequences: the choosers are off and ignored
    widget.image.value = viewer.layers["rgb"]
    assert not widget.pre_contrast.enabled and widget.pre_contrast.choices == (None,)
    widget.image.value = flair
    assert widget.pre_contrast.enabled


def test_mismatched_sequence_shapes_are_refused_with_a_message(grey, error_messages):
    viewer, widget, flair = grey
    use_as_bundled(ProbModel())
    other = viewer.add_image(np.zeros((4, 16, 16), np.uint8), name="other grid")
    assert widget.segment(TIMEOUT, image=flair, pre_contrast=other) is None
    msg = error_messages()[-1]
    assert "'other grid' of shape (4, 16, 16) cannot be the pre-contrast of 'flair'" in msg
    assert widget.worker is None and "flair segmentation" not in viewer.layers

    # a chosen layer whose data changed shape since: refused by the worker, with a message
    pre = viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="t1")
    widget.pre_contrast.value = pre
    pre.data = np.zeros((5, 32, 32), np.uint8)
    assert widget.segment(TIMEOUT) is None
    assert "pre-contrast of shape (5, 32, 32) is not on the FLAIR's grid (4, 32, 32)" in error_messages()[-1]
    assert "Traceback" not in widget.status.value and widget.run_button.enabled


def test_voxel_size_flows_to_the_layers_and_mm3_shows(make_napari_viewer, patient_folder, error_messages):
    viewer = make_napari_viewer()
    viewer.open(str(patient_folder), plugin="napari-lgg-seg")  # kaggle_3m: no voxel size
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    image, truth = viewer.layers[PID], viewer.layers["ground truth"]
    assert tuple(image.scale) == (1, 1, 1)
    model = ProbModel({"threshold": 0.3})
    model.input_shape = (None, 64, 64, 3)
    use_as_bundled(model)

    assert widget.segment(TIMEOUT, image=image, voxel_size="3, x, 0.5") is None
    assert "voxel size '3, x, 0.5' is not numbers" in error_messages()[-1]
    assert tuple(image.scale) == (1, 1, 1)

    seg = widget.segment(TIMEOUT, voxel_size="3, 0.5, 0.5")
    assert tuple(image.scale) == tuple(truth.scale) == tuple(seg.scale) == (3, 0.5, 0.5)
    assert seg.metadata["voxel_size"] == [3.0, 0.5, 0.5]
    voxels = int(seg.data.sum())
    assert voxels > 0 and f"{voxels * 0.75:,.1f} mm³" in widget.result.value
    widget.voxel_size.value = ""  # unknown again: the layers keep what they have
    assert widget.segment(TIMEOUT).scale[0] == 3


def test_typed_voxel_size_leaves_another_patient_of_the_same_grid_alone(make_napari_viewer, tmp_path):
    from .conftest import make_patient_folder

    viewer = make_napari_viewer()
    for pid in ("TCGA_AA_0001_20000101", "TCGA_BB_0002_20000101"):  # same slice count and size
        viewer.open(str(make_patient_folder(tmp_path, pid=pid, n=4)), plugin="napari-lgg-seg")
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    seg = widget.segment(TIMEOUT, image=viewer.layers["TCGA_AA_0001_20000101"], voxel_size="3, 0.5, 0.5")
    assert seg is not None
    scales = {layer.name: tuple(layer.scale) for layer in viewer.layers}
    assert scales["TCGA_AA_0001_20000101"] == scales["ground truth"] == (3, 0.5, 0.5)
    assert scales["TCGA_BB_0002_20000101"] == scales["ground truth [1]"] == (1, 1, 1)


def test_an_images_own_voxel_size_wins_over_the_typed_one(grey):
    viewer, widget, _ = grey
    use_as_bundled(ProbModel())
    nifti = viewer.add_image(blobs(), name="nifti", scale=(2.0, 0.9, 0.9), metadata={"voxel_size": [2.0, 0.9, 0.9]})
    seg = widget.segment(TIMEOUT, image=nifti, voxel_size="3, 0.5, 0.5")
    assert tuple(seg.scale) == tuple(nifti.scale) == (2.0, 0.9, 0.9)
    assert seg.metadata["voxel_size"] == [2.0, 0.9, 0.9]


def test_engine_choice_int8_for_the_bundled_model_and_refused_for_a_keras_file(
        make_napari_viewer, patient_folder, tiny_model_path, error_messages):
    viewer = make_napari_viewer()
    viewer.open(str(patient_folder), plugin="napari-lgg-seg")
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    assert widget.engine.value == "auto"
    seg = widget.segment(TIMEOUT, image=viewer.layers[PID], engine="int8")
    assert seg is not None and seg.metadata["engine"] == "int8" and seg.metadata["settings"]["engine"] == "int8"
    assert "(int8)" in widget.result.value
    from napari_lgg_seg.core.inference import segment_volume

    expected = segment_volume(viewer.layers[PID].data, engine="int8")
    assert np.array_equal(seg.data, expected)

    widget.add_model_file(tiny_model_path)
    assert widget.segment(TIMEOUT, engine="int8") is None
    assert "the int8 engine serves only the bundled model" in error_messages()[-1]
    seg = widget.segment(TIMEOUT, engine="auto")  # a .keras file: auto runs it with Keras
    assert seg.metadata["engine"] == "keras" and seg.metadata["model"] == "tiny.keras"


def test_save_masks_to_patient_folder_writes_beside_the_slices_and_never_overwrites(
        make_napari_viewer, tmp_path, error_messages):
    import tifffile

    from .conftest import make_patient_folder

    folder = make_patient_folder(tmp_path / "kaggle_3m", masks=False)
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin="napari-lgg-seg")
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    model = ProbModel({"threshold": 0.3})
    model.input_shape = (None, 64, 64, 3)
    use_as_bundled(model)
    seg = widget.segment(TIMEOUT, image=viewer.layers[PID])
    assert seg.metadata["source"] == str(folder) and seg.data.any()
    seg.data[0, :3, :3] = 1  # a hand edit is saved too
    widget.save_masks_button.native.click()
    written = sorted(folder.glob("*_mask.tif"), key=lambda f: int(f.name.split("_")[-2]))
    assert [f.name for f in written] == [f"{PID}_{i}_mask.tif" for i in range(1, 7)]
    saved = np.stack([tifffile.imread(f) for f in written])
    assert np.array_equal(saved, np.where(seg.data > 0, 255, 0))
    assert "Wrote 6 masks" in widget.status.value

    before = [f.stat().st_mtime_ns for f in written]
    assert widget.save_masks_to_patient_folder(seg) is None  # never overwrites
    assert "refusing to overwrite 6 mask file(s)" in error_messages()[-1]
    assert [f.stat().st_mtime_ns for f in written] == before

    other = viewer.add_labels(np.zeros((6, 64, 64), np.uint8), name="drawn")
    assert widget.save_masks_to_patient_folder(other) is None
    assert "'drawn' does not come from a kaggle_3m patient folder" in error_messages()[-1]


def test_settings_saved_before_the_models_own_defaults_keep_all_but_the_old_threshold(
        make_napari_viewer, settings_dir):
    settings_dir.mkdir(parents=True, exist_ok=True)
    (settings_dir / "segment.json").write_text(json.dumps({"threshold": 0.5, "batch_size": 2, "min_size": 0}))
    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")[1]
    assert widget.batch_size.value == 2
    assert widget.options().threshold is None  # the old default 0.5 gives way to the model's own
    widget.threshold.value = 0.55
    again = type(widget)(viewer)
    assert again.threshold.value == pytest.approx(0.55)  # saved under the new meaning: kept
    assert json.loads((settings_dir / "segment.json").read_text())["_version"] == 2


def test_a_run_emptied_by_post_processing_says_so(grey):
    """Components all under the minimum size: the (empty) result comes with a warning that
    names the post-processing and how to keep them."""
    _viewer, widget, layer = grey
    use_as_bundled(ProbModel())
    seg = widget.segment(TIMEOUT, image=layer, postprocess="min_size", min_size=100_000)
    assert seg is not None and not seg.data.any()
    assert "removed all 468 voxels above the threshold, so the result is empty; set post-processing to " \
           "'none' to see them." in widget.status.value
    seg = widget.segment(TIMEOUT, postprocess="none", min_size=0)
    assert seg.data.any() and "removed all" not in widget.status.value


def test_a_grey_volume_with_3_columns_is_segmented_as_a_volume(grey):
    """A grey (Z, Y, 3) layer (rgb False, e.g. a NIfTI of 3 sagittal slices) is a volume of
    3-column slices, not one RGB slice; a genuinely RGB layer stays RGB."""
    viewer, widget, _ = grey
    vol = np.zeros((6, 32, 3), np.uint8)
    vol[2:4, 10:20] = 250
    thin = viewer.add_image(vol, name="sagittal", rgb=False)
    model = ProbModel()
    use_as_bundled(model)
    seg = widget.segment(TIMEOUT, image=thin, postprocess="none")
    assert seg is not None and seg.data.shape == (6, 32, 3)
    assert np.array_equal(seg.data > 0, vol > 0)
    rgb = viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="slice", rgb=True)
    seg = widget.segment(TIMEOUT, image=rgb)
    assert seg is not None and seg.data.shape == (32, 32)


def test_bad_values_are_reported_with_the_layers_name(grey, error_messages):
    viewer, widget, _ = grey
    use_as_bundled(ProbModel())
    vol = blobs().astype(np.float32)
    vol[0, :4, :4] = np.nan
    bad = viewer.add_image(vol, name="flair nan")
    assert widget.segment(TIMEOUT, image=bad) is None
    assert error_messages()[-1].startswith("layer 'flair nan': 16 NaN or infinite value(s)")
    assert widget.worker is None and "flair nan segmentation" not in viewer.layers


def test_closing_the_image_during_a_run_adds_nothing(grey):
    viewer, widget, layer = grey
    use_as_bundled(ProbModel())
    finished = []
    widget.run_finished.connect(finished.append)
    assert widget(image=layer)
    viewer.layers.remove(layer)  # before the result comes back to the GUI thread
    assert widget.wait(TIMEOUT) is None
    assert finished == ["cancelled"] and "flair segmentation" not in viewer.layers
    assert widget.status.value == "The image was closed during the run; nothing was added."
    assert widget.run_button.enabled
