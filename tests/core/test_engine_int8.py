"""The int8 ONNX engine: float32 export exactness, int8 end to end, staleness, engine choice."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from napari_lgg_seg import InputError, ModelError

from ..conftest import synthetic_patient

pytest.importorskip("onnx")  # development-time dependency of the export


def _random_unet(filters: int = 2, seed: int = 0):
    """build_unet with random weights *and* BatchNorm statistics (so folding is tested),
    all drawn from ``seed``: Keras's own initial kernels depend on what ran before."""
    from napari_lgg_seg.core.model import build_unet

    model = build_unet(filters)
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.weights:
        a = w.numpy()
        if a.ndim == 4:  # conv kernels, He-scaled
            a = rng.normal(0.0, np.sqrt(2.0 / np.prod(a.shape[:-1])), a.shape)
        elif "moving_variance" in w.path:
            a = rng.uniform(0.5, 2.0, a.shape)
        elif "gamma" in w.path:
            a = rng.uniform(0.5, 1.5, a.shape)
        elif any(k in w.path for k in ("moving_mean", "beta", "bias")):
            a = rng.normal(0.0, 0.2, a.shape)
        weights.append(a.astype(np.float32))
    model.set_weights(weights)
    return model


def _volume():
    image, _ = synthetic_patient(n_slices=6, size=64)
    return image


def _export_bundle(folder, model, calib):
    """A bundled-model folder (weights + model.json) with its int8 export, as the script writes it."""
    from napari_lgg_seg.core.engine_int8 import (
        INT8_FILE,
        quantize_int8,
        sha256_of,
        unet_onnx,
    )
    from napari_lgg_seg.core.model import save_bundled

    filters = int(model.get_layer("enc0_conv1").filters)
    save_bundled(model, folder, {"name": "tiny", "version": "0", "base_filters": filters,
                                 "input_shape": [256, 256, 3]})
    # the weights as the bundled loader rebuilds them (float16 storage)
    from napari_lgg_seg.core import model as model_mod

    with np.load(folder / "unet_lgg.npz") as data:
        weights = [data[f"w{i}"].astype(np.float32) for i in range(len(data.files))]
    quantize_int8(unet_onnx(weights, filters), folder / INT8_FILE, calib)
    info = json.loads((folder / "model.json").read_text())
    info["int8"] = {"file": INT8_FILE, "weights_sha256": sha256_of(folder / "unet_lgg.npz"),
                    "sha256": hashlib.sha256((folder / INT8_FILE).read_bytes()).hexdigest()}
    (folder / "model.json").write_text(json.dumps(info))
    return model_mod


def _use_bundle(monkeypatch, folder):
    from napari_lgg_seg.core import engine_int8
    from napari_lgg_seg.core import model as model_mod

    monkeypatch.setattr(engine_int8, "BUNDLED_DIR", folder)
    monkeypatch.setattr(model_mod, "BUNDLED_DIR", folder)
    monkeypatch.setattr(model_mod, "BUNDLED_CONFIG", folder / "model.json")


def test_onnx_float32_export_matches_keras():
    from napari_lgg_seg.core.engine_int8 import Int8Engine, unet_onnx

    model = _random_unet(4)
    x = np.random.default_rng(1).uniform(0, 1, (3, 256, 256, 3)).astype(np.float32)
    ref = np.asarray(model.predict_on_batch(x))
    engine = Int8Engine(unet_onnx(model.get_weights(), 4).SerializeToString())
    got = engine.predict_on_batch(x[:, :, ::-1])  # non-contiguous input is accepted
    np.testing.assert_allclose(got, np.asarray(model.predict_on_batch(np.ascontiguousarray(x[:, :, ::-1]))),
                               atol=1e-4)
    assert engine.input_shape == (None, 256, 256, 3)
    np.testing.assert_allclose(engine.predict_on_batch(x), ref, atol=1e-4)


def test_export_rejects_weights_of_another_architecture():
    from napari_lgg_seg.core.engine_int8 import unet_onnx

    weights = _random_unet(2).get_weights()
    with pytest.raises(ModelError, match="do not fit a 4-filter U-Net"):
        unet_onnx(weights, 4)
    with pytest.raises(ModelError, match="more weights"):
        unet_onnx(weights + [np.zeros(1)], 2)


def test_int8_end_to_end_on_synthetic_data(tmp_path, monkeypatch):
    from napari_lgg_seg.core.engine_int8 import calibration_slices, load_bundled_int8
    from napari_lgg_seg.core.inference import predict_probabilities, segment_volume
    from napari_lgg_seg.core.io import PatientStack

    image, mask = synthetic_patient(n_slices=8, size=64)
    calib = calibration_slices([PatientStack(image=image, mask=mask, patient_id="p")], per_patient=4)
    assert calib.shape[1:] == (256, 256, 3) and calib.dtype == np.float32 and 0 <= calib.min() <= calib.max() <= 1
    model = _random_unet(2)
    _export_bundle(tmp_path, model, calib)
    _use_bundle(monkeypatch, tmp_path)
    engine = load_bundled_int8()
    assert load_bundled_int8() is engine  # cached
    assert engine.lgg_info["bundled"] and engine.lgg_info["name"] == "tiny"
    p_int8 = predict_probabilities(image, engine="int8")
    p_keras = predict_probabilities(image, engine="keras")
    assert p_int8.shape == image.shape[:3] == p_keras.shape
    assert np.abs(p_int8 - p_keras).max() < 0.05  # int8 noise on a random 2-filter net
    assert not np.array_equal(p_int8, p_keras)  # it really ran the quantized model
    labels = segment_volume(image, threshold=0.5)  # auto -> int8 for the bundled model
    np.testing.assert_array_equal(labels, (p_int8 >= 0.5).astype(np.uint8))


def test_stale_int8_export_is_refused_and_auto_falls_back(tmp_path, monkeypatch):
    from napari_lgg_seg.core.engine_int8 import load_bundled_int8
    from napari_lgg_seg.core.inference import resolve_engine
    from napari_lgg_seg.core.model import save_bundled

    model = _random_unet(2)
    calib = np.random.default_rng(0).uniform(0, 1, (4, 256, 256, 3)).astype(np.float32)
    _export_bundle(tmp_path, model, calib)
    _use_bundle(monkeypatch, tmp_path)
    info = json.loads((tmp_path / "model.json").read_text())
    save_bundled(_random_unet(2, seed=5), tmp_path, info)  # new weights, old int8 record
    with pytest.raises(ModelError, match="exported from other weights"):
        load_bundled_int8()
    with pytest.raises(ModelError, match="int8 engine unavailable"):
        resolve_engine(None, "int8")
    fallback = resolve_engine(None, "auto")
    assert getattr(fallback, "engine", "keras") != "int8" and fallback.lgg_info["bundled"]


def test_engine_choice_errors(tiny_model_path):
    from napari_lgg_seg.core.engine_int8 import Int8Engine, unet_onnx
    from napari_lgg_seg.core.inference import resolve_engine, segment_volume
    from napari_lgg_seg.core.model import load_model

    user = load_model(tiny_model_path)
    assert resolve_engine(user, "auto") is user  # .keras files run with Keras
    with pytest.raises(ModelError, match="serves only the bundled model"):
        resolve_engine(user, "int8")
    with pytest.raises(InputError, match="engine must be one of"):
        segment_volume(_volume(), user, engine="fast")
    engine = Int8Engine(unet_onnx(_random_unet(2).get_weights(), 2).SerializeToString())
    assert resolve_engine(engine, "auto") is engine
    with pytest.raises(InputError, match="needs a Keras model"):
        resolve_engine(engine, "keras")
    with pytest.raises(ModelError, match="not a usable ONNX model"):
        Int8Engine(b"not onnx")


def test_int8_path_imports_no_tensorflow(tmp_path):
    model = _random_unet(2)
    calib = np.random.default_rng(0).uniform(0, 1, (4, 256, 256, 3)).astype(np.float32)
    _export_bundle(tmp_path, model, calib)
    code = f"""
import sys
import numpy as np
from napari_lgg_seg.core import engine_int8
engine_int8.BUNDLED_DIR = engine_int8.Path({str(tmp_path)!r})
from napari_lgg_seg.core.inference import segment_volume
labels = segment_volume(np.random.default_rng(0).integers(0, 200, (3, 64, 64, 3)), engine="int8")
assert labels.shape == (3, 64, 64), labels.shape
bad = [m for m in sys.modules if m == "tensorflow" or m.startswith(("tensorflow.", "keras"))]
print("TF-FREE" if not bad else "IMPORTED " + " ".join(sorted(bad)[:5]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TF-FREE" in out.stdout, out.stdout


def test_shipped_int8_engine_matches_the_bundled_weights():
    """Fails when the bundled weights changed without rerunning scripts/export_int8.py."""
    from napari_lgg_seg.core import engine_int8

    if not (engine_int8.BUNDLED_DIR / "model.json").exists():
        pytest.skip("bundled model not trained in this checkout")
    engine = engine_int8.load_bundled_int8()
    parity = json.loads((engine_int8.BUNDLED_DIR / "model.json").read_text())["int8"]["parity"]
    assert parity["passed"] and parity["mean_abs_diff"] <= 0.005 and parity["worst_drop"] <= 0.02
    assert engine.input_shape == (None, 256, 256, 3)


def test_openvino_runtime_gives_the_onnxruntime_probabilities(tmp_path):
    pytest.importorskip("openvino")
    from napari_lgg_seg.core.engine_int8 import Int8Engine, quantize_int8, unet_onnx

    x = np.random.default_rng(2).uniform(0, 1, (4, 256, 256, 3)).astype(np.float32)
    path = quantize_int8(unet_onnx(_random_unet(2).get_weights(), 2), tmp_path / "q.onnx", x)
    ov, ort = Int8Engine(path, runtime="openvino"), Int8Engine(path, runtime="onnxruntime")
    assert ov.runtime == "openvino" and ov.input_shape == ort.input_shape == (None, 256, 256, 3)
    np.testing.assert_allclose(ov.predict_on_batch(x[:3]), ort.predict_on_batch(x[:3]), atol=2e-2)
    with pytest.raises(ModelError, match="runtime must be one of"):
        Int8Engine(path, runtime="tpu")
