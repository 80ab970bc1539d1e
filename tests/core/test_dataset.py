import numpy as np
import pytest

from napari_lgg_seg import InputError, PatientStack
from napari_lgg_seg.core.augment import AugmentConfig, grey_values, sample_coordinates, substitute_flair, warp
from napari_lgg_seg.core.dataset import SliceDataset, slices_from_stacks

from ..conftest import synthetic_patient


def stacks(n=3, size=32):
    out = []
    for i in range(n):
        img, msk = synthetic_patient(6, size, seed=i)
        out.append(PatientStack(img, msk, f"TCGA_AA_{i:04d}_1"))
    return out


def test_slice_set_resizes_to_model_input():
    data = slices_from_stacks(stacks())
    assert data.images.shape == (18, 256, 256, 3) and data.masks.shape == (18, 256, 256)
    assert set(np.unique(data.masks)) == {0, 1}
    assert data.patient_ids() == ["TCGA_AA_0000_1", "TCGA_AA_0001_1", "TCGA_AA_0002_1"]
    assert len(data.subset(["TCGA_AA_0001_1"])) == 6


def test_training_data_errors():
    img, _ = synthetic_patient()
    with pytest.raises(InputError, match="has no masks"):
        slices_from_stacks([PatientStack(img, None, "P")])
    with pytest.raises(InputError, match="no patients"):
        slices_from_stacks([])


def test_batches_shapes_binary_masks_and_epoch_reshuffle():
    data = slices_from_stacks(stacks())
    ds = SliceDataset(data, 4, augment=True, crop_size=64, positive_fraction=0.5, shuffle=True, seed=1)
    assert len(ds) == 5
    x, y = ds[0]
    assert x.shape == (4, 64, 64, 3) and y.shape == (4, 64, 64, 1)
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert set(np.unique(y)) <= {0.0, 1.0}
    first = ds._order.copy()
    ds.on_epoch_end()
    assert not np.array_equal(first, ds._order)
    pos = np.isin(ds._order, ds._positive).mean()
    assert 0.3 < pos < 0.7
    plain = SliceDataset(data, 4)
    x, y = plain[0]
    assert x.shape == (4, 256, 256, 3)
    np.testing.assert_array_equal(x[0], data.images[0] / np.float32(255))


def test_same_geometric_transform_for_image_and_mask():
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64, 3), np.float32)
    mask = np.zeros((64, 64), np.uint8)
    image[20:40, 25:45] = 1.0
    mask[20:40, 25:45] = 1
    for _ in range(5):
        coords = sample_coordinates(rng, (64, 64), (64, 64), (31.5, 31.5), AugmentConfig())
        img, msk = warp(image, mask, coords)
        assert set(np.unique(msk)) <= {0.0, 1.0}
        inside = img[..., 0] > 0.5
        assert (inside == (msk > 0)).mean() > 0.97  # image follows the mask


def test_identity_without_augmentation_and_grey_values():
    rng = np.random.default_rng(0)
    image = rng.random((16, 16, 3)).astype(np.float32)
    coords = sample_coordinates(rng, (16, 16), (16, 16), (7.5, 7.5), None)
    img, _ = warp(image, np.zeros((16, 16), np.uint8), coords)
    np.testing.assert_allclose(img, image, atol=1e-6)
    out = grey_values(rng, image, AugmentConfig())
    assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1 and not np.allclose(out, image)


def test_missing_sequence_copies_flair_into_contrast_channels():
    rng = np.random.default_rng(0)
    image = np.random.default_rng(1).random((8, 8, 3)).astype(np.float32)
    flair = image[..., 1].copy()
    assert substitute_flair(rng, image, AugmentConfig()) is image  # off by default
    seen = set()
    for _ in range(30):
        out = substitute_flair(rng, image, AugmentConfig(missing_sequence=1.0))
        np.testing.assert_array_equal(out[..., 1], flair)
        replaced = tuple(c for c in (0, 2) if np.array_equal(out[..., c], flair))
        for c in set((0, 2)) - set(replaced):
            np.testing.assert_array_equal(out[..., c], image[..., c])
        seen.add(replaced)
    assert seen == {(0,), (2,), (0, 2)}
    np.testing.assert_array_equal(image[..., 1], flair)  # input untouched


def test_dataset_simulates_missing_sequences_when_asked():
    data = slices_from_stacks(stacks())
    def flair_copies(cfg):
        x, _ = SliceDataset(data, 18, augment=True, augment_config=cfg, seed=2)[0]
        return sum(np.allclose(x[i, ..., c], x[i, ..., 1]) for i in range(len(x)) for c in (0, 2))
    assert flair_copies(AugmentConfig()) == 0
    assert flair_copies(AugmentConfig(missing_sequence=1.0)) >= 18


def test_flair_only_slices_equal_a_grey_flair_stack():
    """FLAIR copied into all channels equals preprocessing the FLAIR alone (grey)."""
    st = stacks(1)[0]
    data = slices_from_stacks([st]).flair_only()
    grey = slices_from_stacks([PatientStack(st.image[..., 1], st.mask, st.patient_id)])
    assert np.array_equal(data.images, grey.images) and np.array_equal(data.masks, grey.masks)
    assert not np.array_equal(slices_from_stacks([st]).images, data.images)


def test_small_lesion_power_draws_small_abnormalities_more_often():
    """Slices whose abnormality is 16x smaller come up about 4x as often with power 0.5."""
    from napari_lgg_seg.core.dataset import SliceSet

    masks = np.zeros((3, 256, 256), np.uint8)
    masks[0, :4, :4] = 1  # 16 px
    masks[1, :16, :16] = 1  # 256 px
    data = SliceSet(np.zeros((3, 256, 256, 3), np.uint8), masks, np.array(["A", "B", "C"]))

    def counts(power):
        ds = SliceDataset(data, 8, positive_fraction=1.0, samples_per_epoch=4000, small_lesion_power=power)
        return np.bincount(ds._order, minlength=3)

    uniform, boosted = counts(0.0), counts(0.5)
    assert abs(uniform[0] / uniform[1] - 1) < 0.15 and uniform[2] == 0
    assert 3.3 < boosted[0] / boosted[1] < 4.8 and boosted[2] == 0
    with pytest.raises(InputError, match="small-lesion power must be >= 0"):
        SliceDataset(data, 8, small_lesion_power=-1)
