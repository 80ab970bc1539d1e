import numpy as np
import pytest

from napari_lgg_seg import ModelError


def test_unet_architecture():
    from napari_lgg_seg.core.model import build_unet

    m = build_unet(base_filters=4)
    assert m.input_shape == (None, 256, 256, 3) and m.output_shape == (None, 256, 256, 1)
    names = [layer.name for layer in m.layers]
    assert sum(n.startswith("pool") for n in names) == 4
    assert sum(n.startswith("up") for n in names) == 4
    assert sum("_bn" in n for n in names) == 2 * 9  # two conv+BN+ReLU per level
    assert m.layers[-1].activation.__name__ == "sigmoid"
    # the classic 64-filter U-Net of the study has ~31 M parameters
    assert 31_000_000 < build_unet(64).count_params() < 31_100_000


def test_losses_and_metrics():
    from napari_lgg_seg.core.model import bce_dice_loss, dice_coef, iou_coef

    y = np.zeros((1, 8, 8, 1), np.float32)
    y[0, :4] = 1
    assert float(dice_coef(y, y)) == pytest.approx(1.0)
    assert float(iou_coef(y, y)) == pytest.approx(1.0)
    assert float(dice_coef(y, 1 - y)) < 0.05
    assert float(bce_dice_loss(y, np.clip(y, 1e-4, 1 - 1e-4))) < 0.01
    assert float(bce_dice_loss(y, 1 - y)) > 1.0


def test_load_user_model_and_errors(tmp_path, tiny_model_path):
    from napari_lgg_seg.core.model import build_unet, load_model, save_model

    m = load_model(tiny_model_path)
    assert m.input_shape == (None, 256, 256, 3) and m.lgg_info["name"] == "tiny.keras"
    with pytest.raises(ModelError, match="no such model file"):
        load_model(tmp_path / "nope.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="junk.keras: not a Keras model"):
        load_model(junk)
    grey = tmp_path / "grey.keras"
    save_model(build_unet(2, input_shape=(64, 64, 1)), grey)
    with pytest.raises(ModelError, match=r"grey.keras: model input shape"):
        load_model(grey)
    with pytest.raises(ModelError, match="must end with .keras"):
        save_model(m, tmp_path / "model.h5")


def test_bundled_model_loads_or_says_why(monkeypatch, tmp_path):
    from napari_lgg_seg.core import model as model_mod

    monkeypatch.setattr(model_mod, "BUNDLED_DIR", tmp_path)
    monkeypatch.setattr(model_mod, "BUNDLED_CONFIG", tmp_path / "model.json")
    with pytest.raises(ModelError, match="has not been trained yet"):
        model_mod.load_model()
    tiny = model_mod.build_unet(2)
    model_mod.save_bundled(tiny, tmp_path, {"name": "t", "version": "0", "base_filters": 2,
                                            "input_shape": [256, 256, 3]})
    again = model_mod.load_model()
    for a, b in zip(tiny.get_weights(), again.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-3)  # float16 storage
    assert again.lgg_info["version"] == "0"


def test_shipped_bundled_model_is_small_and_loads():
    from napari_lgg_seg.core import model as model_mod

    if not model_mod.BUNDLED_CONFIG.exists():
        pytest.skip("bundled model not trained in this checkout")
    info = model_mod.bundled_info()
    assert (model_mod.BUNDLED_DIR / info["weights"]).stat().st_size < 20 * 2**20
    m = model_mod.load_model()
    assert m.input_shape == (None, 256, 256, 3)


def test_bundled_model_is_loaded_once_and_reloaded_when_its_files_change(monkeypatch, tmp_path):
    from napari_lgg_seg.core import model as model_mod
    from napari_lgg_seg.core.inference import segment_volume

    monkeypatch.setattr(model_mod, "BUNDLED_DIR", tmp_path)
    monkeypatch.setattr(model_mod, "BUNDLED_CONFIG", tmp_path / "model.json")
    model_mod.save_bundled(model_mod.build_unet(2), tmp_path, {"name": "t", "version": "0", "base_filters": 2,
                                                               "input_shape": [256, 256, 3]})
    builds = []
    real_build = model_mod.build_unet
    monkeypatch.setattr(model_mod, "build_unet", lambda *a, **k: builds.append(a) or real_build(*a, **k))
    first = model_mod.load_model()
    assert model_mod.load_model() is first and len(builds) == 1
    volume = np.random.default_rng(0).integers(0, 200, (3, 32, 32, 3))
    segment_volume(volume, engine="keras")  # the default path uses the cached model ...
    traced = first.predict_function
    assert traced is not None
    segment_volume(volume, engine="keras")  # ... and its traced predict function
    assert first.predict_function is traced and len(builds) == 1
    model_mod.save_bundled(real_build(2), tmp_path, {"name": "t", "version": "1", "base_filters": 2,
                                                     "input_shape": [256, 256, 3]})
    again = model_mod.load_model()
    assert again is not first and again.lgg_info["version"] == "1" and len(builds) == 2
    model_mod.clear_model_cache()
    assert model_mod.load_model() is not again


def test_keras_file_is_cached_by_path_and_modification_time(tmp_path, monkeypatch):
    import os

    import keras

    from napari_lgg_seg.core.model import build_unet, load_model, save_model

    path = save_model(build_unet(2), tmp_path / "m.keras")
    loads = []
    real = keras.models.load_model
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    first = load_model(path)
    assert load_model(str(path)) is first and len(loads) == 1
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file was replaced
    assert load_model(path) is not first and len(loads) == 2
