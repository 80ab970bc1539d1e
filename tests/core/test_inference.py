import numpy as np
import pytest

from napari_lgg_seg import Cancelled, InputError, load_model, segment_volume
from napari_lgg_seg.core.inference import remove_small_components


class ConstModel:
    """Stands in for a Keras model: predicts the FLAIR channel as the probability."""

    input_shape = (None, 256, 256, 3)

    def __init__(self):
        self.batches = []

    def predict_on_batch(self, x):
        self.batches.append(x.shape)
        return x[..., 1:2]


def test_shapes_batches_and_resize():
    vol = np.zeros((5, 40, 50, 3), np.uint8)
    vol[2, 10:20, 10:30, 1] = 255
    model = ConstModel()
    labels = segment_volume(vol, model, batch_size=2)
    assert labels.shape == (5, 40, 50) and labels.dtype == np.uint8
    assert [b[0] for b in model.batches] == [2, 2, 1]  # bounded batches
    assert all(b[1:] == (256, 256, 3) for b in model.batches)
    assert labels[2, 12:18, 12:28].all() and labels.sum() < 400 and not labels[0].any()


def test_single_slice_grey_and_threshold():
    sl = np.zeros((30, 30), np.float32)
    sl[5:10, 5:10] = 0.7
    sl[20:25, 20:25] = 1.0
    labels = segment_volume(sl, ConstModel(), threshold=0.6)
    assert labels.shape == (30, 30)
    assert labels[6:9, 6:9].all() and labels[21:24, 21:24].all()
    with pytest.raises(InputError, match="threshold"):
        segment_volume(sl, ConstModel(), threshold=1.5)


def test_progress_and_cancel():
    calls = []
    vol = np.zeros((7, 16, 16), np.uint8)
    segment_volume(vol, ConstModel(), batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(3, 7), (6, 7), (7, 7)]
    with pytest.raises(Cancelled, match="after 3 of 7"):
        segment_volume(vol, ConstModel(), batch_size=3, progress=lambda d, t: False)


def test_remove_small_components():
    lab = np.zeros((3, 10, 10), np.uint8)
    lab[0, 0, 0] = 1
    lab[1:3, 4:7, 4:7] = 1
    out = remove_small_components(lab, min_size=5)
    assert out.sum() == 18 and out[0, 0, 0] == 0


def test_real_keras_model_and_bad_input(tiny_model_path):
    model = load_model(tiny_model_path)
    vol = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    labels = segment_volume(vol, model, batch_size=2)
    assert labels.shape == (3, 64, 64) and set(np.unique(labels)) <= {0, 1}
    with pytest.raises(InputError, match="cannot be segmented"):
        segment_volume(np.zeros((2, 2, 8, 8, 3)), model)


def test_model_given_as_a_path_and_bad_batch_size(tiny_model_path, tmp_path):
    """A .keras path (as evaluate() takes) failed with "'str' object has no attribute
    'input_shape'"; batch_size=2.5 with a TypeError from range()."""
    from napari_lgg_seg import ModelError

    vol = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    expected = segment_volume(vol, load_model(tiny_model_path))
    assert np.array_equal(segment_volume(vol, str(tiny_model_path)), expected)
    assert np.array_equal(segment_volume(vol, tiny_model_path), expected)
    with pytest.raises(ModelError, match="nope.keras"):
        segment_volume(vol, str(tmp_path / "nope.keras"))
    with pytest.raises(InputError, match="batch size must be a whole number"):
        segment_volume(vol, ConstModel(), batch_size=2.5)


def test_flip_tta_averages_mirrored_prediction():
    class LeftHalf(ConstModel):
        def predict_on_batch(self, x):
            out = np.zeros((*x.shape[:3], 1), np.float32)
            out[:, :, :128] = 1.0  # always the left half, whatever the input
            return out

    vol = np.zeros((2, 256, 256), np.uint8)
    plain = segment_volume(vol, LeftHalf(), threshold=0.4)
    tta = segment_volume(vol, LeftHalf(), threshold=0.4, flip_tta=True)
    assert plain[:, :, :128].all() and not plain[:, :, 128:].any()
    assert tta.all()  # 0.5 everywhere after averaging with the mirrored prediction
    assert not segment_volume(vol, LeftHalf(), threshold=0.6, flip_tta=True).any()
