"""2.5D input: neighbouring slices as extra channels (core.context and its users)."""

import numpy as np
import pytest

from napari_lgg_seg import InputError, ModelError, PatientStack
from napari_lgg_seg.core.augment import AugmentConfig, substitute_flair
from napari_lgg_seg.core.context import (
    centre,
    channels_for,
    context_of_channels,
    expand_first_kernel,
    neighbour_index,
    patient_neighbours,
    stack_context,
)

from ..conftest import synthetic_patient


def test_neighbour_index_clips_at_the_ends_of_the_volume():
    np.testing.assert_array_equal(neighbour_index(0, 4, 4, 1), [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]])
    np.testing.assert_array_equal(neighbour_index(2, 3, 3, 2), [[0, 1, 2, 2, 2]])
    np.testing.assert_array_equal(neighbour_index(0, 2, 2, 0), [[0], [1]])


def test_patient_neighbours_never_cross_into_another_patient():
    patient = np.array(["a", "a", "a", "b", "b", "c"])
    np.testing.assert_array_equal(
        patient_neighbours(patient, 1),
        [[0, 0, 1], [0, 1, 2], [1, 2, 2], [3, 3, 4], [3, 4, 4], [5, 5, 5]],
    )


def test_stack_context_orders_channels_by_slice_then_sequence():
    slices = np.arange(4)[:, None, None, None] * 10 + np.arange(3)[None, None, None, :]  # value = 10 z + seq
    slices = np.broadcast_to(slices, (4, 2, 2, 3))
    x = stack_context(slices, neighbour_index(1, 3, 4, 1))
    assert x.shape == (2, 2, 2, 9)
    np.testing.assert_array_equal(x[0, 0, 0], [0, 1, 2, 10, 11, 12, 20, 21, 22])
    np.testing.assert_array_equal(centre(x)[1, 0, 0], [20, 21, 22])


@pytest.mark.parametrize("channels, context", [(3, 0), (9, 1), (15, 2), (21, 3)])
def test_channels_and_context_round_trip(channels, context):
    assert channels_for(context) == channels and context_of_channels(channels) == context


@pytest.mark.parametrize("channels", [1, 4, 6, 12, 27])
def test_other_channel_counts_are_refused(channels):
    with pytest.raises(ModelError, match=f"{channels} input channels"):
        context_of_channels(channels)


def test_bad_context_is_refused():
    with pytest.raises(InputError, match="context slices must be a whole number from 0 to 3"):
        channels_for(4)


def test_missing_sequences_are_missing_in_every_neighbour():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(4, 4, 9)).astype(np.float32)
    out = substitute_flair(rng, image, AugmentConfig(missing_sequence=1.0))
    replaced = [ch for ch in (0, 2) if np.array_equal(out[..., ch], image[..., 1])]
    assert replaced  # at least one sequence became FLAIR ...
    for ch in replaced:  # ... and in all three slices alike
        np.testing.assert_array_equal(out[..., ch::3], image[..., 1::3])
    np.testing.assert_array_equal(out[..., 1::3], image[..., 1::3])


def _tiny_unets():
    from napari_lgg_seg.core.model import build_unet

    flat = build_unet(2, (256, 256, 3))
    rng = np.random.default_rng(0)
    flat.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) if "kernel" in v.path else w
                      for w, v in zip(flat.get_weights(), flat.weights)])
    wide = build_unet(2, (256, 256, 9))
    wide.set_weights(expand_first_kernel(flat.get_weights(), 1))
    return flat, wide


def test_widened_model_predicts_as_the_2d_one_until_trained():
    from napari_lgg_seg.core.inference import predict_probabilities

    flat, wide = _tiny_unets()
    image, _ = synthetic_patient(5, 32)
    np.testing.assert_allclose(predict_probabilities(image, wide, batch_size=2),
                               predict_probabilities(image, flat), atol=1e-6)


def test_context_model_sees_the_neighbours_whatever_the_batch_size():
    from napari_lgg_seg.core.inference import predict_probabilities
    from napari_lgg_seg.core.preprocess import intensity_range, to_model_input

    _, wide = _tiny_unets()
    w = wide.get_weights()
    w[0] = np.random.default_rng(1).normal(0, 0.3, w[0].shape).astype(np.float32)  # neighbours matter now
    wide.set_weights(w)
    image, _ = synthetic_patient(5, 32)
    by_two = predict_probabilities(image, wide, batch_size=2)
    for batch_size in (1, 3, 5):  # preprocessed neighbours are carried from batch to batch
        np.testing.assert_allclose(predict_probabilities(image, wide, batch_size=batch_size), by_two, atol=1e-5)
    x = to_model_input(image, intensity_range(image))
    direct = np.asarray(wide.predict_on_batch(stack_context(x, neighbour_index(0, 5, 5, 1))))[..., 0]
    from napari_lgg_seg.core.preprocess import resize_slices

    np.testing.assert_allclose(by_two, resize_slices(direct, (32, 32)), atol=1e-5)
    changed = image.copy()
    changed[3] = changed[3, ::-1, ::-1]  # a neighbour of slices 2 and 4; same values, so same scaling
    p = predict_probabilities(changed, wide, batch_size=2)
    assert not np.allclose(p[2], by_two[2], atol=1e-4)
    np.testing.assert_allclose(p[0], by_two[0], atol=1e-5)


def test_model_label_says_when_a_model_takes_neighbouring_slices():
    from napari_lgg_seg.core.inference import model_label

    flat, wide = _tiny_unets()
    assert model_label(wide) == "unet2 2.5D (±1 slice)" and model_label(flat) == "unet2"


def test_check_model_accepts_context_and_refuses_other_channels():
    from napari_lgg_seg.core.model import build_unet, check_model

    check_model(build_unet(2, (256, 256, 9)))
    with pytest.raises(ModelError, match=r"model input shape \(None, 256, 256, 4\) is not \(None, Y, X, 3\), or 9, 15 or 21"):
        check_model(build_unet(2, (256, 256, 4)))


def _slices():
    from napari_lgg_seg.core.dataset import slices_from_stacks

    stacks = []
    for i in range(2):
        img, msk = synthetic_patient(3, 32, seed=i, tumour_slices=(1,))
        stacks.append(PatientStack(img, msk, f"TCGA_AA_{i:04d}_1"))
    return slices_from_stacks(stacks)


def test_dataset_with_context_gives_each_slice_its_own_patients_neighbours():
    from napari_lgg_seg.core.dataset import SliceDataset

    data = _slices()
    x, y = SliceDataset(data, 6, context=1)[0]
    flat, _ = SliceDataset(data, 6)[0]
    assert x.shape == (6, 256, 256, 9) and y.shape == (6, 256, 256, 1)
    np.testing.assert_array_equal(centre(x), flat)
    np.testing.assert_array_equal(x[3, ..., :3], flat[3])  # first slice of patient 2: itself, not patient 1
    np.testing.assert_array_equal(x[2, ..., 6:], flat[2])  # last slice of patient 1
    np.testing.assert_array_equal(x[1, ..., 6:], flat[2])
    xa, ya = SliceDataset(data, 4, context=1, augment=True, crop_size=64, positive_fraction=0.5)[0]
    assert xa.shape == (4, 64, 64, 9) and ya.shape == (4, 64, 64, 1)


def test_training_widens_a_2d_model_and_saves_a_context_model(tmp_path, tiny_model_path):
    from napari_lgg_seg.core.model import load_model
    from napari_lgg_seg.core.train_config import TrainConfig
    from napari_lgg_seg.core.training import per_patient_dice, train

    data = _slices()
    cfg = TrainConfig(out=str(tmp_path / "c.keras"), epochs=1, batch_size=2, base_filters=2,
                      init_from=str(tiny_model_path), crop_size=64, samples_per_epoch=4,
                      val_patients=[data.patient_ids()[1]], context_slices=1)
    r = train(data, cfg, verbose=0)
    model = load_model(r.out)
    assert model.input_shape == (None, 256, 256, 9) and r.best_val_patient_dice is not None
    assert set(per_patient_dice(model, data)) == set(data.patient_ids())
    again = TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "d.keras"), "init_from": str(r.out),
                           "context_slices": 2})
    with pytest.raises(ModelError, match="takes 1 context slice"):
        train(data, again, verbose=0)
    # 0 (the default) fine-tunes a model with context as it is
    keep = TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "e.keras"), "init_from": str(r.out),
                          "context_slices": 0})
    assert load_model(train(data, keep, verbose=0).out).input_shape == (None, 256, 256, 9)


@pytest.mark.parametrize("bad", [-1, 4, 1.5, True])
def test_bad_context_setting_is_refused_before_training(tmp_path, bad):
    from napari_lgg_seg.core.train_config import TrainConfig

    with pytest.raises(InputError, match="context slices must be a whole number"):
        TrainConfig(out=str(tmp_path / "m.keras"), context_slices=bad).validate()


def test_int8_export_of_a_context_model_matches_keras():
    pytest.importorskip("onnx")
    from napari_lgg_seg.core.engine_int8 import Int8Engine, calibration_slices, unet_onnx

    _, wide = _tiny_unets()
    image, mask = synthetic_patient(6, 32)
    stack = PatientStack(image, mask, "p")
    calib = calibration_slices([stack], per_patient=4, context=1)
    assert calib.shape[1:] == (256, 256, 9)
    np.testing.assert_array_equal(centre(calib), calibration_slices([stack], per_patient=4))
    engine = Int8Engine(unet_onnx(wide.get_weights(), 2).SerializeToString())
    assert engine.input_shape == (None, 256, 256, 9)
    np.testing.assert_allclose(engine.predict_on_batch(calib), np.asarray(wide.predict_on_batch(calib)), atol=1e-4)
