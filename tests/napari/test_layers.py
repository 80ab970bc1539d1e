"""Qt-free helpers of the napari layer (no viewer needed)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_lgg_seg.core.errors import InputError
from napari_lgg_seg.napari import _layers, _models
from napari_lgg_seg.napari._tasks import Outcome, reporting


def test_volume_summary_and_text():
    lab = np.zeros((4, 8, 8), np.uint8)
    lab[1, :2, :2] = 1
    lab[2, :3, :1] = 2
    s = _layers.volume_summary(lab, (1, 1, 1))
    assert s == {"voxels": 7, "slices": 2, "mm3": None}
    assert _layers.format_volume(s) == "Abnormality: 7 voxels in 2 slices"
    s = _layers.volume_summary(lab, (2.5, 0.5, 0.5))
    assert s["mm3"] == pytest.approx(7 * 0.625)
    assert _layers.format_volume(s) == "Abnormality: 7 voxels in 2 slices, 4.4 mm³ (0.00 ml)"


def test_digest_detects_edits():
    layer = Labels(np.zeros((2, 4, 4), np.uint8), metadata={})
    assert _layers.was_edited(layer)  # nothing recorded: treat as hand-made
    layer.metadata = {"digest": _layers.labels_digest(layer.data)}
    assert not _layers.was_edited(layer)
    layer.data[1, 2, 2] = 1
    assert _layers.was_edited(layer)


def test_image_volume_checks():
    rgb = Image(np.zeros((3, 8, 8, 3), np.uint8), rgb=True, name="rgb")
    assert _layers.image_volume(rgb).shape == (3, 8, 8, 3)
    assert _layers.spatial_shape(rgb) == (3, 8, 8)
    with pytest.raises(InputError, match="not a slice or a volume"):
        _layers.image_volume(Image(np.zeros((2, 3, 8, 8)), name="4d"))


def test_layer_values_are_checked_under_the_layers_name():
    data = np.zeros((2, 8, 8), np.float32)
    data[0, 0, 0] = np.inf
    with pytest.raises(InputError, match="^layer 'flair': 1 NaN or infinite"):
        _layers.image_volume(Image(data, name="flair"))
    with pytest.raises(InputError, match="^layer 't1': 1 NaN or infinite"):
        _layers.layer_stack(Image(data, name="t1"))


def test_a_grey_volume_gets_a_channel_axis_so_3_columns_are_not_rgb():
    grey = Image(np.zeros((5, 8, 3), np.uint8), rgb=False, name="sagittal")
    assert _layers.image_volume(grey).shape == (5, 8, 3, 1)
    assert _layers.layer_stack(grey).image.shape == (5, 8, 3)  # sequences stack grey volumes
    assert _layers.image_volume(Image(np.zeros((8, 8)), name="slice")).shape == (8, 8)
    img = Image(np.zeros((5, 8, 4), np.uint8), rgb=False, name="p")
    stacks = _layers.stacks_from_layer_pairs([(img, Labels(np.ones((5, 8, 4), np.uint8), name="gt"))])
    from napari_lgg_seg.core.dataset import slices_from_stacks

    assert len(slices_from_stacks(stacks, (16, 16))) == 5  # training reads 5 slices, not one RGB one


def test_stacks_from_layer_pairs():
    img = Image(np.zeros((3, 8, 8, 3), np.uint8), rgb=True, name="p1", metadata={"patient_id": "P"})
    lab = Labels(np.ones((3, 8, 8), np.uint8), name="gt")
    stacks = _layers.stacks_from_layer_pairs([(img, lab), (img, lab)])
    assert [s.patient_id for s in stacks] == ["P", "P#1"]  # kept apart for the patient split
    assert stacks[0].mask.shape == (3, 8, 8)
    with pytest.raises(InputError, match="do not match image"):
        _layers.stacks_from_layer_pairs([(img, Labels(np.ones((3, 8, 9), np.uint8), name="x"))])
    with pytest.raises(InputError, match="at least one"):
        _layers.stacks_from_layer_pairs([])


def test_registry_orders_and_dedups(tmp_path):
    seen = []

    def on_change():
        seen.append(1)

    _models.MODELS.changed.connect(on_change)
    a = _models.MODELS.add(tmp_path / "a.keras")
    b = _models.MODELS.add(tmp_path / "b.keras", _models.TRAINED)
    _models.MODELS.add(tmp_path / "a.keras")
    assert [s.label for s in _models.MODELS] == ["Bundled U-Net", "trained: b.keras", "file: a.keras"]
    assert a.kind == _models.FILE and b.kind == _models.TRAINED and len(seen) == 3
    _models.MODELS.changed.disconnect(on_change)


def _drain(gen):
    items = []
    try:
        while True:
            items.append(next(gen))
    except StopIteration as stop:
        return items, stop.value


def test_reporting_generator_outcomes():
    import threading

    from napari_lgg_seg.core.errors import Cancelled

    def ok(report):
        report(1)
        report(2)
        return "value"

    items, out = _drain(reporting(ok, threading.Event()))
    assert items == [1, 2] and out.outcome is Outcome.DONE and out.value == "value"

    def cancelled(report):
        raise Cancelled("stop")

    assert _drain(reporting(cancelled, threading.Event()))[1].outcome is Outcome.CANCELLED

    def broken(report):
        raise RuntimeError("boom")

    out = _drain(reporting(broken, threading.Event()))[1]
    assert out.outcome is Outcome.ERROR and _layers.readable_error(out.error) == "RuntimeError: boom"
