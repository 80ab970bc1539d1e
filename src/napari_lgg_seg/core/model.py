"""The U-Net, its losses and metrics, and loading of bundled or user models.

Importing this module imports TensorFlow/Keras.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from ._tfload import import_tensorflow  # noqa: E402

import_tensorflow()  # before keras: avoids a crash beside Mesa OpenGL (see _tfload)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from .errors import ModelError  # noqa: E402

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
BUNDLED_CONFIG = BUNDLED_DIR / "model.json"
SMOOTH = 1.0


def _conv_block(x, filters: int, name: str):
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_unet(
    base_filters: int = 16, input_shape: tuple[int, int, int] = (256, 256, 3), depth: int = 4
) -> keras.Model:
    """Classic U-Net: two 3x3 conv+BN+ReLU per level, ``depth`` poolings,
    Conv2DTranspose up-sampling with skip connections, one sigmoid output channel."""
    inputs = keras.Input(shape=input_shape, name="mri")
    x = inputs
    skips = []
    for level in range(depth):
        x = _conv_block(x, base_filters * 2**level, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv_block(x, base_filters * 2**depth, "bottleneck")
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(
            base_filters * 2**level, 2, strides=2, padding="same", name=f"up{level}"
        )(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _conv_block(x, base_filters * 2**level, f"dec{level}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="abnormality")(x)
    return keras.Model(inputs, outputs, name=f"unet{base_filters}")


@keras.saving.register_keras_serializable(package="napari_lgg_seg")
def dice_coef(y_true, y_pred):
    """Soft Dice over the batch (smoothed so that empty-vs-empty scores 1)."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    inter = ops.sum(y_true * y_pred)
    return (2.0 * inter + SMOOTH) / (ops.sum(y_true) + ops.sum(y_pred) + SMOOTH)


@keras.saving.register_keras_serializable(package="napari_lgg_seg")
def iou_coef(y_true, y_pred):
    """Soft IoU over the batch."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    inter = ops.sum(y_true * y_pred)
    union = ops.sum(y_true) + ops.sum(y_pred) - inter
    return (inter + SMOOTH) / (union + SMOOTH)


@keras.saving.register_keras_serializable(package="napari_lgg_seg")
def bce_dice_loss(y_true, y_pred):
    """Binary cross-entropy plus (1 - Dice)."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
    return bce + 1.0 - dice_coef(y_true, y_pred)


CUSTOM_OBJECTS = {"dice_coef": dice_coef, "iou_coef": iou_coef, "bce_dice_loss": bce_dice_loss}


def compile_unet(model: keras.Model, learning_rate: float = 1e-3, ema_momentum: float | None = None) -> keras.Model:
    """Compile with Adam, BCE+Dice loss and Dice/IoU metrics (named ``dice`` and ``iou``).

    ``ema_momentum`` keeps an exponential moving average of the weights in the optimizer
    (use it with ``keras.callbacks.SwapEMAWeights``).
    """
    ema = {"use_ema": True, "ema_momentum": ema_momentum} if ema_momentum else {}
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, **ema),
        loss=bce_dice_loss,
        metrics=[
            keras.metrics.MeanMetricWrapper(dice_coef, name="dice"),
            keras.metrics.MeanMetricWrapper(iou_coef, name="iou"),
        ],
    )
    return model


def bundled_info() -> dict:
    """Metadata of the bundled model (version, architecture, preprocessing, evaluation)."""
    if not BUNDLED_CONFIG.exists():
        raise ModelError(
            "The bundled model has not been trained yet: no "
            f"{BUNDLED_CONFIG.name} in {BUNDLED_DIR}. Train one with `napari-lgg-seg train`."
        )
    return json.loads(BUNDLED_CONFIG.read_text())


def _build_bundled(info: dict, weights_path: Path, what: str) -> keras.Model:
    """build_unet of the bundle's architecture with the float16 weights of ``weights_path``."""
    if not weights_path.exists():
        raise ModelError(f"{what} is incomplete: {weights_path} is missing")
    model = build_unet(info["base_filters"], tuple(info["input_shape"]), info.get("depth", 4))
    with np.load(weights_path) as data:
        arrays = [data[f"w{i}"].astype(np.float32) for i in range(len(data.files))]
    try:
        model.set_weights(arrays)
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{weights_path}: weights do not fit the bundled architecture ({exc})") from None
    return model


def _load_bundled() -> keras.Model:
    from .engine_int8 import sha256_of, variant_info

    info = bundled_info()
    weights_path = BUNDLED_DIR / info["weights"]
    model = _build_bundled(info, weights_path, "The bundled model")
    # read by the widgets and the CLI; the sha256 lets the int8 engine stand in for it
    model.lgg_info = dict(variant_info(info, "main"), bundled=True, weights_sha256=sha256_of(weights_path))
    return model


def _flair_weights_path(info: dict) -> Path:
    from .engine_int8 import FLAIR_WEIGHTS

    return BUNDLED_DIR / (info.get("flair_model") or {}).get("weights", FLAIR_WEIGHTS)


def _load_bundled_flair() -> keras.Model:
    from .engine_int8 import sha256_of, variant_info

    info = bundled_info()
    if not info.get("flair_model"):
        raise ModelError("the bundled model has no FLAIR-only companion (no \"flair_model\" in model.json)")
    weights_path = _flair_weights_path(info)
    model = _build_bundled(info, weights_path, "The bundled FLAIR-only model")
    model.lgg_info = dict(variant_info(info, "flair"), bundled=True, weights_sha256=sha256_of(weights_path))
    return model


def load_flair_model() -> keras.Model:
    """The bundled FLAIR-only companion as a Keras model, cached like ``load_model()``.
    ModelError when the bundle has none or its weights are missing or do not fit."""
    info = bundled_info()
    key = f"bundled-flair:{BUNDLED_DIR}"
    version = _file_version(BUNDLED_CONFIG, _flair_weights_path(info))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        model = _load_bundled_flair()
        _CACHE[key] = (version, model)
        return model


def save_bundled(model: keras.Model, folder: Path, info: dict) -> None:
    """Write weights (float16) and metadata in the bundled-model format, atomically."""
    from .io import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    weights = {f"w{i}": w.astype(np.float16) for i, w in enumerate(model.get_weights())}
    info = dict(info, weights=info.get("weights", "unet_lgg.npz"))
    atomic_write(folder / info["weights"], lambda tmp: np.savez_compressed(tmp, **weights))
    atomic_write(
        folder / "model.json", lambda tmp: tmp.write_text(json.dumps(info, indent=2) + "\n")
    )


def save_bundled_flair(model: keras.Model, folder: Path, record: dict) -> None:
    """Write a FLAIR-only companion into the bundled folder ``folder`` (which has a
    model.json): its weights (float16, ``record["weights"]``, default
    ``unet_lgg_flair.npz``) and ``model.json["flair_model"] = record``, each atomically;
    the other keys of model.json stay as they are. An ``"int8"`` record (of the old
    weights) is dropped: rerun ``scripts/export_int8.py --variant flair``."""
    from .engine_int8 import FLAIR_WEIGHTS
    from .io import atomic_write

    folder = Path(folder)
    config = folder / "model.json"
    if not config.exists():
        raise ModelError(f"{folder}: no model.json; save the main bundled model first")
    info = json.loads(config.read_text())
    record = {k: v for k, v in record.items() if k != "int8"}
    record.setdefault("weights", FLAIR_WEIGHTS)
    if record["weights"] == info.get("weights", "unet_lgg.npz"):
        raise ModelError(f"the FLAIR-only weights cannot replace the main weights {record['weights']}")
    weights = {f"w{i}": w.astype(np.float16) for i, w in enumerate(model.get_weights())}
    atomic_write(folder / record["weights"], lambda tmp: np.savez_compressed(tmp, **weights))
    info["flair_model"] = record
    atomic_write(config, lambda tmp: tmp.write_text(json.dumps(info, indent=2) + "\n"))


def check_model(model: keras.Model, source: str = "model") -> keras.Model:
    """Raise ModelError unless the model maps (N, Y, X, 3) images (or 3 x (2k + 1)
    channels: the slice with ``k`` neighbours each side, see ``core.context``) to
    (N, Y, X, 1) maps."""
    try:
        in_shape = tuple(model.input_shape)
        out_shape = tuple(model.output_shape)
    except (AttributeError, ValueError) as exc:
        raise ModelError(f"{source}: model has no single input/output ({exc})") from None
    from .context import context_of_input

    context_of_input(in_shape, f"{source}: model")
    if len(out_shape) != 4 or out_shape[-1] != 1:
        raise ModelError(f"{source}: model output shape {out_shape} is not (None, Y, X, 1)")
    return model


_CACHE: dict[str, tuple[tuple, keras.Model]] = {}
_CACHE_LOCK = threading.Lock()


def _file_version(*paths: Path) -> tuple:
    return tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None for p in paths)


def clear_model_cache() -> None:
    """Forget the models that ``load_model`` keeps (the next call loads again)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def load_model(path: str | os.PathLike | None = None) -> keras.Model:
    """Load a ``.keras`` model, or the bundled U-Net when ``path`` is None.

    Models are kept per process (the bundled one by the version of its files, a ``.keras``
    file by path and modification time), so a second call returns the same object with
    its already traced predict function. Do not train the returned model in place.
    """
    if path is None:
        key = f"bundled:{BUNDLED_DIR}"
        version = _file_version(BUNDLED_CONFIG, BUNDLED_DIR / "unet_lgg.npz")
    else:
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"{p}: no such model file")
        key, version = str(p.resolve()), _file_version(p)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        model = _load_bundled() if path is None else _load_keras_file(p)
        _CACHE[key] = (version, model)
        return model


def _load_keras_file(p: Path) -> keras.Model:
    try:
        model = keras.models.load_model(p, custom_objects=CUSTOM_OBJECTS, compile=False)
    except Exception as exc:  # Keras raises many types for foreign files
        raise ModelError(f"{p}: not a Keras model file ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"{p}: not a Keras model")
    model = check_model(model, str(p))
    model.lgg_info = {"name": p.name, "version": "user", "path": str(p)}
    return model


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Save a ``.keras`` model atomically: an interrupted save never leaves a broken file."""
    from .io import atomic_write

    p = Path(path)
    if p.suffix != ".keras":
        raise ModelError(f"{p}: model files must end with .keras")
    return atomic_write(p, lambda tmp: model.save(tmp))


def model_name(model: keras.Model) -> str:
    info = getattr(model, "lgg_info", None) or {}
    return f"{info.get('name', model.name)} {info.get('version', '')}".strip()


def model_info(model: keras.Model) -> dict:
    """Name and version of a loaded model (what a segmentation's metadata records)."""
    info = dict(getattr(model, "lgg_info", None) or {})
    info.setdefault("name", model_name(model))
    info.setdefault("version", "")
    return info


def base_filters_of(init_from: str) -> int:
    """Filters of the first U-Net level of the model that training would start from:
    ``"bundled"`` or a ``.keras`` path. ModelError for models of another architecture."""
    if init_from == "bundled":
        return int(bundled_info()["base_filters"])
    model = load_model(init_from)
    try:
        return int(model.get_layer("enc0_conv1").filters)
    except (ValueError, AttributeError):
        raise ModelError(f"{init_from}: not a U-Net of this plugin; cannot fine-tune it") from None
