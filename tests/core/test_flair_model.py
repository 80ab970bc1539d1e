"""The bundled FLAIR-only companion: format, loading, routing of FLAIR-only input, int8."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from napari_lgg_seg import InputError, ModelError

from .test_engine_int8 import _random_unet

COMPANION = {"threshold": 0.3, "postprocessing": {"mode": "min_size", "min_size": 7, "min_probability": 0.0},
             "val_patient_dice": 0.75, "best_epoch": 9, "recipe": "test"}


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    """A tiny bundled folder (main model, threshold 0.5, no post-processing), in use."""
    from napari_lgg_seg.core import engine_int8
    from napari_lgg_seg.core import model as model_mod

    folder = tmp_path / "bundled"
    model_mod.save_bundled(_random_unet(seed=0), folder, {"name": "tiny", "version": "1", "base_filters": 2,
                                             "input_shape": [256, 256, 3], "threshold": 0.5,
                                             "split": {"train": ["a"], "val": ["b"]}})
    monkeypatch.setattr(engine_int8, "BUNDLED_DIR", folder)
    monkeypatch.setattr(model_mod, "BUNDLED_DIR", folder)
    monkeypatch.setattr(model_mod, "BUNDLED_CONFIG", folder / "model.json")
    return folder


@pytest.fixture
def with_companion(bundle):
    from napari_lgg_seg.core.model import save_bundled_flair

    save_bundled_flair(_random_unet(seed=1), bundle, dict(COMPANION))
    return bundle


def _grey():
    rng = np.random.default_rng(3)
    vol = rng.integers(0, 80, (3, 48, 48)).astype(np.uint8)
    vol[:, 16:32, 16:32] = 230
    return vol


def _rgb():
    return np.random.default_rng(4).integers(0, 200, (3, 48, 48, 3)).astype(np.uint8)


def test_is_flair_only():
    from napari_lgg_seg.core.inference import is_flair_only

    grey = _grey()
    assert is_flair_only(grey) and is_flair_only(grey[0])  # a volume and one slice
    copies = np.stack([grey] * 3, axis=-1)
    assert is_flair_only(copies) and is_flair_only(copies[0])
    assert not is_flair_only(_rgb())
    one_off = copies.copy()
    one_off[2, 5, 5, 0] += 1  # pre-contrast differs in one voxel of the last slice
    assert not is_flair_only(one_off)
    post_only = copies.copy()
    post_only[..., 2] = 0  # post-contrast missing as zeros is not a copy of FLAIR
    assert not is_flair_only(post_only)


def test_save_bundled_flair_keeps_other_keys_and_drops_a_stale_int8_record(bundle):
    from napari_lgg_seg.core.model import save_bundled_flair

    before = json.loads((bundle / "model.json").read_text())
    assert "flair_model" not in before
    save_bundled_flair(_random_unet(seed=1), bundle, dict(COMPANION, int8={"file": "old.onnx", "sha256": "x"}))
    after = json.loads((bundle / "model.json").read_text())
    assert {k: v for k, v in after.items() if k != "flair_model"} == before
    assert after["flair_model"] == dict(COMPANION, weights="unet_lgg_flair.npz")  # no "int8"
    assert sorted(p.name for p in bundle.iterdir()) == ["model.json", "unet_lgg.npz", "unet_lgg_flair.npz"]
    with np.load(bundle / "unet_lgg_flair.npz") as data:
        assert {data[k].dtype for k in data.files} == {np.dtype(np.float16)}
    with pytest.raises(ModelError, match="no model.json"):
        save_bundled_flair(_random_unet(seed=1), bundle / "elsewhere", dict(COMPANION))
    with pytest.raises(ModelError, match="cannot replace the main weights"):
        save_bundled_flair(_random_unet(seed=1), bundle, dict(COMPANION, weights="unet_lgg.npz"))


def test_save_bundled_flair_is_atomic(bundle, monkeypatch):
    from napari_lgg_seg.core import model as model_mod

    before = (bundle / "model.json").read_bytes()

    def fail(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", fail)
    with pytest.raises(InputError):  # atomic_write names the file
        model_mod.save_bundled_flair(_random_unet(seed=1), bundle, dict(COMPANION))
    assert (bundle / "model.json").read_bytes() == before
    assert sorted(p.name for p in bundle.iterdir()) == ["model.json", "unet_lgg.npz"]


def test_load_flair_model_info_cache_and_errors(with_companion):
    from napari_lgg_seg.core.engine_int8 import sha256_of
    from napari_lgg_seg.core.model import (
        load_flair_model,
        load_model,
        save_bundled_flair,
    )

    main, flair = load_model(), load_flair_model()
    assert load_flair_model() is flair and flair is not main
    info = flair.lgg_info
    assert info["variant"] == "flair" and info["bundled"] and info["threshold"] == 0.3
    assert info["postprocessing"] == COMPANION["postprocessing"] and info["val_patient_dice"] == 0.75
    assert info["name"] == "tiny" and info["base_filters"] == 2
    assert info["weights_sha256"] == sha256_of(with_companion / "unet_lgg_flair.npz")
    assert not {"split", "int8", "flair_model"} & set(info)
    assert main.lgg_info["variant"] == "main" and main.lgg_info["has_flair_model"]
    assert not {"split", "int8", "flair_model"} & set(main.lgg_info)
    assert main.lgg_info["threshold"] == 0.5 and "postprocessing" not in main.lgg_info

    save_bundled_flair(_random_unet(4, seed=1), with_companion, dict(COMPANION))
    with pytest.raises(ModelError, match="do not fit the bundled architecture"):
        load_flair_model()
    (with_companion / "unet_lgg_flair.npz").unlink()
    with pytest.raises(ModelError, match="FLAIR-only model is incomplete.*unet_lgg_flair.npz is missing"):
        load_flair_model()


def test_load_flair_model_without_companion_says_so(bundle):
    from napari_lgg_seg.core.inference import resolve_model
    from napari_lgg_seg.core.model import load_flair_model, load_model

    with pytest.raises(ModelError, match="no FLAIR-only companion"):
        load_flair_model()
    main = load_model()
    assert not main.lgg_info["has_flair_model"]
    assert resolve_model(_grey(), None, "keras") is main  # as before: no routing
    assert resolve_model(_grey(), main, "auto") is main


def test_flair_only_input_goes_to_the_companion_with_its_own_defaults(with_companion, tiny_model_path):
    from napari_lgg_seg.core.inference import (
        model_label,
        predict_probabilities,
        resolve_model,
        resolve_postprocessing,
        segment_volume,
    )
    from napari_lgg_seg.core.model import load_flair_model, load_model
    from napari_lgg_seg.core.postprocess import PostProcessing, keep_components

    main, flair = load_model(), load_flair_model()
    grey, copies, rgb = _grey(), np.stack([_grey()] * 3, axis=-1), _rgb()
    for volume in (grey, copies):
        assert resolve_model(volume, None, "keras") is flair
        assert resolve_model(volume, main, "auto") is flair  # no int8 export: its Keras model
        assert resolve_model(volume, main, "keras", flair_model=False) is main
    assert resolve_model(rgb, None, "keras") is main and resolve_model(rgb, main, "auto") is main
    assert model_label(flair) == "tiny 1 FLAIR-only" and model_label(main) == "tiny 1"

    p_routed = predict_probabilities(grey, engine="keras")
    p_flair = predict_probabilities(grey, flair, engine="keras")
    p_main = predict_probabilities(grey, engine="keras", flair_model=False)
    np.testing.assert_array_equal(p_routed, p_flair)
    assert np.abs(p_routed - p_main).max() > 1e-3  # really another network
    np.testing.assert_array_equal(predict_probabilities(rgb, engine="keras"),
                                  predict_probabilities(rgb, main, engine="keras", flair_model=False))

    t, post = resolve_postprocessing(resolve_model(grey, main, "keras"))
    assert (t, post) == (0.3, PostProcessing("min_size", 7))
    expected = keep_components(p_flair >= 0.3, p_flair, post)
    np.testing.assert_array_equal(segment_volume(grey, main, engine="keras"), expected)
    np.testing.assert_array_equal(segment_volume(grey, engine="keras", flair_model=False),
                                  (p_main >= 0.5).astype(np.uint8))  # the main model's own defaults
    explicit = segment_volume(grey, engine="keras", threshold=0.6, postprocess="none")  # user settings win
    np.testing.assert_array_equal(explicit, (p_flair >= 0.6).astype(np.uint8))

    user = load_model(tiny_model_path)  # a user's .keras model is never routed
    assert resolve_model(grey, user, "auto") is user and resolve_model(copies, user, "keras") is user


def test_evaluate_names_the_companion_for_flair_only_patients(with_companion, data_root):
    from napari_lgg_seg.core.evaluation import evaluate

    report = evaluate(data_root, flair_only=True, engine="keras")
    assert report.model == "tiny 1 FLAIR-only" and report.threshold == 0.3
    assert report.postprocessing == "drop components under 7 voxels"
    assert evaluate(data_root, flair_only=True, engine="keras", flair_model=False).model == "tiny 1"
    assert evaluate(data_root, engine="keras").model == "tiny 1"  # 3-channel patients: the main model


def _export_companion_int8(folder) -> None:
    """Quantize the companion and record it in model.json as export_int8.py --variant flair does."""
    from napari_lgg_seg.core.engine_int8 import (
        FLAIR_INT8_FILE,
        quantize_int8,
        sha256_of,
        unet_onnx,
    )

    with np.load(folder / "unet_lgg_flair.npz") as data:
        weights = [data[f"w{i}"].astype(np.float32) for i in range(len(data.files))]
    calib = np.random.default_rng(0).uniform(0, 1, (4, 256, 256, 3)).astype(np.float32)
    quantize_int8(unet_onnx(weights, 2), folder / FLAIR_INT8_FILE, calib)
    info = json.loads((folder / "model.json").read_text())
    info["flair_model"]["int8"] = {
        "file": FLAIR_INT8_FILE, "weights_sha256": sha256_of(folder / "unet_lgg_flair.npz"),
        "sha256": hashlib.sha256((folder / FLAIR_INT8_FILE).read_bytes()).hexdigest()}
    (folder / "model.json").write_text(json.dumps(info))


def test_int8_companion_is_used_by_auto_and_refused_when_stale(with_companion):
    pytest.importorskip("onnx")
    from napari_lgg_seg.core.engine_int8 import load_bundled_int8
    from napari_lgg_seg.core.inference import (
        model_label,
        resolve_model,
        resolve_postprocessing,
    )
    from napari_lgg_seg.core.model import (
        load_flair_model,
        load_model,
        save_bundled_flair,
    )

    _export_companion_int8(with_companion)
    with pytest.raises(ModelError, match="no int8 export"):
        load_bundled_int8()  # the main model has none: the variants do not mix
    engine = load_bundled_int8(variant="flair")
    assert load_bundled_int8(variant="flair") is engine
    assert engine.lgg_info["variant"] == "flair" and engine.lgg_info["threshold"] == 0.3
    grey = _grey()
    routed = resolve_model(grey, None, "auto")
    assert routed is engine and resolve_model(grey, load_model(), "int8") is engine
    assert model_label(routed) == "tiny 1 FLAIR-only (int8)"
    assert resolve_postprocessing(routed)[0] == 0.3
    assert resolve_model(grey, load_flair_model(), "auto") is engine  # the companion's own int8
    with pytest.raises(ModelError, match="int8 engine unavailable"):
        resolve_model(_rgb(), None, "int8")  # 3-channel input: the main model, which has no int8

    # new companion weights with the old int8 record (save_bundled_flair would drop it)
    info = json.loads((with_companion / "model.json").read_text())
    record = info["flair_model"]["int8"]
    save_bundled_flair(_random_unet(seed=2), with_companion, dict(COMPANION))
    info = json.loads((with_companion / "model.json").read_text())
    info["flair_model"]["int8"] = record
    (with_companion / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelError, match="exported from other weights.*--variant flair"):
        load_bundled_int8(variant="flair")
    fallback = resolve_model(grey, None, "auto")
    assert getattr(fallback, "engine", "keras") == "keras" and fallback.lgg_info["variant"] == "flair"
    with pytest.raises(ModelError, match="int8 engine of the FLAIR-only model unavailable"):
        resolve_model(grey, None, "int8")


def test_int8_main_engine_routes_without_tensorflow(with_companion, tmp_path):
    """Main and companion both exported: FLAIR-only input runs the companion's int8 engine,
    and nothing imports TensorFlow."""
    pytest.importorskip("onnx")
    import subprocess
    import sys

    from napari_lgg_seg.core.engine_int8 import (
        INT8_FILE,
        quantize_int8,
        sha256_of,
        unet_onnx,
    )

    _export_companion_int8(with_companion)
    with np.load(with_companion / "unet_lgg.npz") as data:
        weights = [data[f"w{i}"].astype(np.float32) for i in range(len(data.files))]
    calib = np.random.default_rng(0).uniform(0, 1, (4, 256, 256, 3)).astype(np.float32)
    quantize_int8(unet_onnx(weights, 2), with_companion / INT8_FILE, calib)
    info = json.loads((with_companion / "model.json").read_text())
    info["int8"] = {"file": INT8_FILE, "weights_sha256": sha256_of(with_companion / "unet_lgg.npz"),
                    "sha256": hashlib.sha256((with_companion / INT8_FILE).read_bytes()).hexdigest()}
    (with_companion / "model.json").write_text(json.dumps(info))
    code = f"""
import sys
import numpy as np
from napari_lgg_seg.core import engine_int8
engine_int8.BUNDLED_DIR = engine_int8.Path({str(with_companion)!r})
from napari_lgg_seg.core.inference import model_label, resolve_model, segment_volume
main = engine_int8.load_bundled_int8()
grey = np.random.default_rng(0).integers(0, 200, (3, 48, 48))
print(model_label(resolve_model(grey, main)), "|", model_label(resolve_model(np.stack([grey, grey + 1, grey], -1), main)))
assert segment_volume(grey, main).shape == (3, 48, 48)
bad = [m for m in sys.modules if m == "tensorflow" or m.startswith(("tensorflow.", "keras"))]
print("TF-FREE" if not bad else "IMPORTED " + " ".join(sorted(bad)[:5]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tiny 1 FLAIR-only (int8) | tiny 1 (int8)" in out.stdout and "TF-FREE" in out.stdout, out.stdout


def test_export_script_flair_variant_writes_only_the_companion_record(bundle, tmp_path, monkeypatch):
    """scripts/export_int8.py --variant flair on synthetic patients: FLAIR-only calibration and
    parity, and (when parity passes) the companion's int8 record, the main record untouched."""
    pytest.importorskip("onnx")
    import importlib.util

    from napari_lgg_seg.core.engine_int8 import load_bundled_int8
    from napari_lgg_seg.core.model import save_bundled_flair

    from ..conftest import REPO, write_kaggle_patient

    data = tmp_path / "kaggle_3m"
    for pid in ("a", "b"):
        write_kaggle_patient(data, pid, n_slices=4, size=64, seed=len(pid))
    save_bundled_flair(_random_unet(seed=1), bundle, dict(COMPANION))
    spec = importlib.util.spec_from_file_location("export_int8", REPO / "scripts" / "export_int8.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "BUNDLED_DIR", bundle)
    seen = []
    real_parity = script.parity
    monkeypatch.setattr(script, "parity", lambda *a, **k: seen.append((a[4:], k)) or real_parity(*a, **k))
    before = json.loads((bundle / "model.json").read_text())
    code = script.main(["--data", str(data), "--variant", "flair", "--per-patient", "2"])
    after = json.loads((bundle / "model.json").read_text())
    assert seen and seen[0][1] == {"flair_only": True}
    assert seen[0][0][0] == 0.3 and seen[0][0][1].min_size == 7  # the companion's own settings
    drop = lambda d: {k: v for k, v in d.items() if k != "flair_model"}
    assert drop(after) == drop(before) and "int8" not in after
    assert {k: v for k, v in after["flair_model"].items() if k != "int8"} == before["flair_model"]
    if code == 0:
        record = after["flair_model"]["int8"]
        assert record["file"] == "unet_lgg_flair_int8.onnx" and record["parity"]["passed"]
        assert "FLAIR channel only" in record["calibration"]["from"]
        assert load_bundled_int8(variant="flair").lgg_info["variant"] == "flair"
    else:  # parity failed on the random net: nothing written
        assert after == before and not (bundle / "unet_lgg_flair_int8.onnx").exists()
