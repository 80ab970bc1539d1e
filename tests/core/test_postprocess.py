"""Post-processing of thresholded volumes, each option on a synthetic volume with known
components, and the defaults a model's metadata gives."""

import numpy as np
import pytest

from napari_lgg_seg import InputError, segment_volume
from napari_lgg_seg.core.inference import resolve_postprocessing
from napari_lgg_seg.core.postprocess import NONE, PostProcessing, keep_components, model_defaults


@pytest.fixture
def volume():
    """Three components: big (5x6x6=180 voxels, p=0.95 peak, mean ~0.7), medium
    (2x4x4=32 voxels, p=0.6), single voxel (p=0.99); they never touch."""
    probs = np.zeros((6, 20, 20), np.float32)
    probs[0:5, 2:8, 2:8] = 0.65
    probs[2, 4, 4] = 0.95
    probs[1:3, 12:16, 12:16] = 0.6
    probs[5, 18, 18] = 0.99
    return probs


def sizes(mask):
    from scipy import ndimage

    comp, n = ndimage.label(mask)
    return sorted(np.bincount(comp.ravel())[1:].tolist())


@pytest.mark.parametrize("post, expected", [
    (NONE, [1, 32, 180]),
    (PostProcessing("min_size", 30), [32, 180]),
    (PostProcessing("min_size", 100), [180]),
    (PostProcessing("largest"), [180]),
    (PostProcessing("peak", min_probability=0.9), [1, 180]),
    (PostProcessing("peak", min_size=10, min_probability=0.9), [180]),
    (PostProcessing("mean", min_probability=0.62), [1, 180]),
    (PostProcessing("mean", min_probability=0.995), []),
])
def test_each_option_keeps_the_expected_components(volume, post, expected):
    out = keep_components(volume >= 0.5, volume, post)
    assert out.dtype == np.uint8 and out.shape == volume.shape
    assert sizes(out) == expected
    assert not (out & ~(volume >= 0.5)).any()  # never adds voxels


def test_largest_of_an_empty_mask_and_2d_slices():
    assert not keep_components(np.zeros((4, 4), bool), None, PostProcessing("largest")).any()
    sl = np.zeros((8, 8), np.uint8)
    sl[0, 0] = sl[4:7, 4:7] = 1
    assert keep_components(sl, None, PostProcessing("largest")).sum() == 9


def test_bad_settings_are_refused():
    with pytest.raises(InputError, match="unknown post-processing 'biggest'"):
        PostProcessing("biggest")
    with pytest.raises(InputError, match="whole number"):
        PostProcessing("min_size", -3)
    with pytest.raises(InputError, match="in \\[0, 1\\]"):
        PostProcessing("peak", min_probability=1.5)
    with pytest.raises(InputError, match="needs the probabilities"):
        keep_components(np.ones((2, 2)), None, PostProcessing("peak", min_probability=0.5))
    with pytest.raises(InputError, match="unknown post-processing fields: size"):
        PostProcessing.from_dict({"mode": "min_size", "size": 3})


def test_metadata_round_trip_and_description():
    post = PostProcessing("peak", 50, 0.9)
    assert PostProcessing.from_dict(post.to_dict()) == post
    assert PostProcessing.from_dict(None) == NONE
    assert post.describe() == "keep components with peak probability >= 0.9, at least 50 voxels"
    assert NONE.describe() == "none"


class ProbModel:
    """Predicts the FLAIR channel as the probability; carries metadata like the bundled model."""

    input_shape = (None, 256, 256, 3)

    def __init__(self, info=None):
        if info is not None:
            self.lgg_info = info

    def predict_on_batch(self, x):
        return x[..., 1:2]


def test_segment_volume_uses_the_models_postprocessing_unless_told_otherwise(volume):
    image = np.rint(volume * 255).astype(np.uint8)
    image[image > 0] = np.maximum(image[image > 0], 1)
    info = {"threshold": 0.5, "postprocessing": {"mode": "largest", "min_size": 0, "min_probability": 0.0}}
    with_meta, plain = ProbModel(info), ProbModel()
    assert model_defaults(plain) == (0.5, NONE)
    assert model_defaults(with_meta) == (0.5, PostProcessing("largest"))
    # preprocessing rescales by the volume's 99.5th percentile: compare against the same
    # model with post-processing switched off instead of against fixed probabilities
    off = segment_volume(image, with_meta, postprocess="none")
    assert len(sizes(off)) == 3
    assert sizes(segment_volume(image, with_meta)) == [max(sizes(off))]
    assert len(sizes(segment_volume(image, plain))) == 3  # no metadata: today's default
    assert sizes(segment_volume(image, plain, min_size=30)) == sizes(off)[1:]


def test_resolve_postprocessing_overrides():
    m = ProbModel({"threshold": 0.6, "postprocessing": {"mode": "peak", "min_size": 0, "min_probability": 0.9}})
    assert resolve_postprocessing(m) == (0.6, PostProcessing("peak", 0, 0.9))
    assert resolve_postprocessing(m, 0.4, "none") == (0.4, NONE)
    assert resolve_postprocessing(m, min_size=100) == (0.6, PostProcessing("peak", 100, 0.9))
    assert resolve_postprocessing(ProbModel(), min_size=100) == (0.5, PostProcessing("min_size", 100))
    assert resolve_postprocessing(ProbModel(), min_size=0) == (0.5, NONE)
    with pytest.raises(InputError, match="threshold must be between 0 and 1"):
        resolve_postprocessing(m, 1.0)
    with pytest.raises(InputError, match="post-processing must be"):
        resolve_postprocessing(m, postprocess="largest-ish")


def test_settings_described_for_the_widget():
    from napari_lgg_seg.core.postprocess import describe_settings, info_defaults

    assert describe_settings(0.5, NONE) == "threshold 0.5; no post-processing"
    t, post = info_defaults({"threshold": 0.45, "postprocessing": {"mode": "peak", "min_probability": 0.9}})
    assert describe_settings(t, post) == "threshold 0.45; keep components with peak probability >= 0.9"
    assert info_defaults(None) == (0.5, NONE)


def test_stats_and_the_note_when_post_processing_removes_everything(volume):
    """A run whose components all fall under the minimum size says so instead of
    silently returning empty labels."""
    from napari_lgg_seg.core.inference import removed_all_note

    image = np.rint(volume * 255).astype(np.uint8)
    stats = {}
    kept = segment_volume(image, ProbModel(), min_size=30, stats=stats)
    assert stats["voxels_kept"] == int(kept.sum()) > 0 and stats["voxels_above_threshold"] > stats["voxels_kept"]
    assert stats["threshold"] == 0.5 and stats["postprocessing"] == "drop components under 30 voxels"
    assert removed_all_note(stats) is None
    stats = {}
    empty = segment_volume(image, ProbModel(), min_size=10_000, stats=stats)
    assert not empty.any() and stats["voxels_kept"] == 0
    note = removed_all_note(stats)
    assert note == (f"the post-processing (drop components under 10000 voxels) removed all "
                    f"{stats['voxels_above_threshold']:,} voxels above the threshold, so the result is empty")
    assert removed_all_note({"voxels_above_threshold": 0, "voxels_kept": 0}) is None  # nothing found: no note
