import numpy as np
import pytest

from napari_lgg_seg import InputError
from napari_lgg_seg.core.preprocess import as_channels_last, intensity_range, to_model_input


def test_uint8_rgb_scaling_and_resize():
    v = np.full((2, 64, 80, 3), 255, np.uint8)
    x = to_model_input(v, intensity_range(v))
    assert x.shape == (2, 256, 256, 3) and x.dtype == np.float32
    assert x.min() == pytest.approx(1.0) and x.max() == pytest.approx(1.0)


def test_per_volume_per_channel_normalisation_removes_scanner_scale():
    rng = np.random.default_rng(0)
    v = rng.integers(1, 100, (4, 32, 32, 3)).astype(np.uint8)
    v[:, :4] = 0  # background
    dim = (v * np.array([1.0, 0.5, 2.0])).clip(0, 255).astype(np.uint8)
    a, b = to_model_input(v, intensity_range(v)), to_model_input(dim, intensity_range(dim))
    assert a[:, :16].max() == 0.0  # background stays 0
    np.testing.assert_allclose(a[..., 1], b[..., 1], atol=0.03)  # halved FLAIR looks the same
    lo, hi = intensity_range(v)
    assert lo.tolist() == [0, 0, 0] and 95 <= hi.min() <= 99


def test_grey_replicated_and_uint16_rescaled():
    v = np.linspace(0, 4000, 3 * 256 * 256).astype(np.uint16).reshape(3, 256, 256)
    vol, single = as_channels_last(v)
    assert vol.shape == (3, 256, 256, 1) and not single
    x = to_model_input(vol, intensity_range(vol))
    assert x.shape == (3, 256, 256, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.99


@pytest.mark.parametrize("shape, single", [((20, 30), True), ((20, 30, 3), True), ((4, 20, 30), False),
                                            ((4, 20, 30, 3), False), ((4, 20, 30, 4), False)])
def test_accepted_shapes(shape, single):
    vol, is_single = as_channels_last(np.zeros(shape, np.uint8))
    assert is_single == single and vol.ndim == 4 and vol.shape[-1] in (1, 3)


def test_rejected_shapes():
    with pytest.raises(InputError, match="cannot be segmented"):
        as_channels_last(np.zeros((2, 3, 8, 8, 2)))
    with pytest.raises(InputError, match="cannot be segmented"):
        as_channels_last(np.zeros((2, 8, 8, 2)))
