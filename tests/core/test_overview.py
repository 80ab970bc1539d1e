"""The overview figure of the demo: numpy composition and an atomic PNG."""

import numpy as np
import pytest

from napari_lgg_seg.core.errors import InputError
from napari_lgg_seg.core.overview import (
    PRED_RGB, TRUTH_RGB, compose_overview, pick_slices, write_overview_png,
)
from napari_lgg_seg.core.sample import make_phantom


def test_pick_slices_prefers_abnormal_slices():
    truth = np.zeros((10, 4, 4), np.uint8)
    truth[[2, 3, 4, 5, 6, 7]] = 1
    rows = pick_slices(truth, None, 10, max_rows=3)
    assert len(rows) == 3 and all(2 <= r <= 7 for r in rows) and rows == sorted(rows)
    assert pick_slices(np.zeros((3, 4, 4)), None, 3) == [0, 1, 2]  # nothing anywhere: all slices


def test_compose_columns_and_colours():
    st = make_phantom(n_slices=6, size=64)
    pred = np.zeros_like(st.mask)
    pred[:, 5:9, 5:9] = 1  # somewhere else entirely
    fig = compose_overview(st.image, st.mask, pred, max_rows=2, titles=False)
    assert fig.dtype == np.uint8 and fig.shape == (2 * 64 + 4, 3 * 64 + 8, 3)
    first = fig[:64]
    grey = first[:, :64]
    assert (grey[..., 0] == grey[..., 1]).all()  # column 1: plain FLAIR
    truth_col, pred_col = first[:, 68:132], first[:, 136:200]
    assert (truth_col == TRUTH_RGB).all(axis=-1).any()  # outline in green
    assert (pred_col[5:9, 5:9] == PRED_RGB).all(axis=-1).any()
    with pytest.raises(InputError):
        compose_overview(st.image, st.mask[:3], None)


def test_write_png_atomically(tmp_path):
    import imageio.v3 as iio

    st = make_phantom(n_slices=4, size=32)
    out = write_overview_png(tmp_path / "o.png", st.image, st.mask, st.mask)
    img = iio.imread(out)
    assert img.shape[1] == 3 * 32 + 8 and img.shape[2] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]
    with pytest.raises(InputError):
        write_overview_png(tmp_path / "missing" / "o.png", st.image, st.mask, None)
