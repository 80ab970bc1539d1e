"""The model-development scripts under scripts/: what their functions compute."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from .conftest import REPO, synthetic_patient


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _grid_entry(threshold, text, simplicity, dice):
    return {"threshold": threshold, "text": text, "simplicity": simplicity, "val_patients_dice": dice,
            "val_dice_mean": float(np.mean(list(dice.values())))}


def test_leave_one_out_scores_each_patient_with_the_choice_made_without_it():
    eb = _script("evaluate_bundled")
    simple = _grid_entry(0.5, "none", (0, 0), {"a": 0.80, "b": 0.80, "c": 0.80})
    # wins on the mean only through patient c
    lucky = _grid_entry(0.5, "min size", (0, 1), {"a": 0.79, "b": 0.79, "c": 0.95})
    grid = [simple, lucky]
    assert eb.choose(grid) is lucky
    assert eb.choose(grid, leave_out="c") is simple  # without c the simpler one ties and wins
    loo = eb.leave_one_out(grid)
    assert loo["patients_dice"] == {"a": 0.79, "b": 0.79, "c": 0.80}
    assert loo["dice_mean"] == pytest.approx(0.7933, abs=1e-4)
    assert loo["dice_mean"] < lucky["val_dice_mean"]
    assert loo["distinct_settings"] == ["t=0.5 min size", "t=0.5 none"]


def _random_unet(channels=3, seed=0):
    from napari_lgg_seg.core.model import build_unet

    model = build_unet(2, (256, 256, channels))
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) if "kernel" in v.path else w
                       for w, v in zip(model.get_weights(), model.weights)])
    return model


def test_widened_model_matches_the_original_where_neighbours_are_alike():
    from napari_lgg_seg.core.inference import predict_probabilities

    widen = _script("widen_model").widen
    flat = _random_unet()
    wide = widen(flat, 1, 0.25)
    assert wide.input_shape == (None, 256, 256, 9)
    image, _ = synthetic_patient(4, 32)
    same = np.repeat(image[:1], 4, axis=0)  # every slice alike: the neighbours are the slice
    np.testing.assert_allclose(predict_probabilities(same, wide), predict_probabilities(same, flat), atol=1e-4)
    assert not np.allclose(predict_probabilities(image, wide), predict_probabilities(image, flat), atol=1e-4)
    with pytest.raises(SystemExit, match="leave the slice itself some weight"):
        widen(flat, 1, 0.5)


def test_average_of_two_models_is_the_mean_of_their_weights(tmp_path):
    from napari_lgg_seg.core.model import save_model

    average = _script("average_models").average
    a, b = _random_unet(seed=1), _random_unet(seed=2)
    save_model(a, tmp_path / "a.keras")
    save_model(b, tmp_path / "b.keras")
    soup = average([tmp_path / "a.keras", tmp_path / "b.keras"])
    for got, wa, wb in zip(soup.get_weights(), a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(got, (wa + wb) / 2, rtol=1e-6)


def test_batchnorm_recalibration_averages_the_batch_statistics_and_keeps_the_weights():
    import keras

    recalibrate = _script("recalibrate_bn").recalibrate
    model = _random_unet()
    before = {v.path: v.numpy() for v in model.weights if "moving" not in v.path}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 256, 256, 3), dtype=np.uint8)
    recalibrate(model, images, np.array(["p"] * 6), batch_size=3, seed=0)
    for v in model.weights:
        if "moving" not in v.path:
            np.testing.assert_array_equal(v.numpy(), before[v.path])
    # the first BatchNorm sees the first convolution's output: its mean is the plain average
    # of the two batches' means
    conv = keras.Model(model.input, model.get_layer("enc0_conv1").output)
    order = np.random.default_rng(0).permutation(6)
    means = [np.asarray(conv(images[order[s:s + 3]].astype(np.float32) / 255)).mean(axis=(0, 1, 2)) for s in (0, 3)]
    np.testing.assert_allclose(model.get_layer("enc0_bn1").moving_mean.numpy(), np.mean(means, axis=0), rtol=1e-4,
                               atol=1e-6)
