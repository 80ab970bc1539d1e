"""The int8 engine: the U-Net as an ONNX graph, statically quantized, run by ONNX Runtime.

The graph is written directly from the Keras weights (BatchNorm folded into the
convolutions), so neither building nor running it imports TensorFlow. Exporting needs the
development-time package ``onnx``; running needs only ``onnxruntime`` (imported lazily).
The shipped model (``bundled/unet_lgg_int8.onnx``) is used only while ``model.json``
records the sha256 of both it and the current bundled weights (``model.json["int8"]``);
likewise the FLAIR-only companion's (``unet_lgg_flair_int8.onnx``,
``model.json["flair_model"]["int8"]``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .context import context_of_channels, context_of_input
from .errors import ModelError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
INT8_FILE = "unet_lgg_int8.onnx"
FLAIR_WEIGHTS = "unet_lgg_flair.npz"
FLAIR_INT8_FILE = "unet_lgg_flair_int8.onnx"
VARIANTS = ("main", "flair")
BN_EPSILON = 1e-3  # keras.layers.BatchNormalization default, as build_unet uses
INPUT_NAME, OUTPUT_NAME = "mri", "abnormality"
# the final 1x1 convolution and sigmoid stay float: they are cheap and set the threshold
FLOAT_NODES = ("abnormality_conv", "abnormality_sigmoid")

_LOCK = threading.Lock()
_BUNDLED: dict[tuple, Int8Engine] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- export


def unet_onnx(weights: Sequence[np.ndarray], base_filters: int, depth: int = 4,
              input_hw: tuple[int, int] = (256, 256)):
    """ONNX float32 graph of ``build_unet(base_filters, depth=depth)`` from its weights
    (in ``model.get_weights()`` order). Input ``mri`` (N, Y, X, C), C = 3 or more for a
    model with context (the first kernel's input channels), output ``abnormality``
    (N, Y, X, 1), like the Keras model. Needs the package ``onnx``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    arrays = [np.asarray(w, np.float32) for w in weights]
    if not arrays or arrays[0].ndim != 4:
        raise ModelError("the weights do not start with a convolution kernel")
    channels = int(arrays[0].shape[2])
    context_of_channels(channels, "weights")
    it = iter(arrays)
    inits, nodes = [], []

    def take(shape_hint: str) -> np.ndarray:
        try:
            return next(it)
        except StopIteration:
            raise ModelError(f"too few weights for a {base_filters}-filter U-Net (at {shape_hint})") from None

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    def conv(x: str, name: str, kernel: np.ndarray, bias: np.ndarray, pad: int) -> str:
        w = const(f"{name}_w", kernel.transpose(3, 2, 0, 1))  # (kh, kw, in, out) -> (out, in, kh, kw)
        b = const(f"{name}_b", bias)
        nodes.append(helper.make_node("Conv", [x, w, b], [name], name=name,
                                      kernel_shape=list(kernel.shape[:2]), pads=[pad] * 4))
        return name

    def block(x: str, filters: int, name: str) -> str:
        for i in (1, 2):
            kernel = take(f"{name}_conv{i}")
            gamma, beta, mean, var = (take(f"{name}_bn{i}") for _ in range(4))
            if kernel.shape[:2] != (3, 3) or kernel.shape[3] != filters or gamma.shape != (filters,):
                raise ModelError(f"{name}_conv{i}: weights of shape {kernel.shape} do not fit a "
                                 f"{base_filters}-filter U-Net")
            scale = gamma / np.sqrt(var + BN_EPSILON)
            x = conv(x, f"{name}_conv{i}", kernel * scale, beta - mean * scale, pad=1)
            nodes.append(helper.make_node("Relu", [x], [f"{name}_relu{i}"], name=f"{name}_relu{i}"))
            x = f"{name}_relu{i}"
        return x

    nodes.append(helper.make_node("Transpose", [INPUT_NAME], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]))
    x, skips = "nchw", []
    for level in range(depth):
        x = block(x, base_filters * 2**level, f"enc{level}")
        skips.append(x)
        nodes.append(helper.make_node("MaxPool", [x], [f"pool{level}"], name=f"pool{level}",
                                      kernel_shape=[2, 2], strides=[2, 2]))
        x = f"pool{level}"
    x = block(x, base_filters * 2**depth, "bottleneck")
    for level in reversed(range(depth)):
        kernel, bias = take(f"up{level}"), take(f"up{level}")
        w = const(f"up{level}_w", kernel.transpose(3, 2, 0, 1))  # (kh, kw, out, in) -> (in, out, kh, kw)
        b = const(f"up{level}_b", bias)
        nodes.append(helper.make_node("ConvTranspose", [x, w, b], [f"up{level}"], name=f"up{level}",
                                      kernel_shape=[2, 2], strides=[2, 2]))
        nodes.append(helper.make_node("Concat", [f"up{level}", skips[level]], [f"skip{level}"],
                                      name=f"skip{level}", axis=1))
        x = block(f"skip{level}", base_filters * 2**level, f"dec{level}")
    kernel, bias = take("abnormality"), take("abnormality")
    x = conv(x, "abnormality_conv", kernel, bias, pad=0)
    nodes.append(helper.make_node("Sigmoid", [x], ["abnormality_sigmoid"], name="abnormality_sigmoid"))
    nodes.append(helper.make_node("Transpose", ["abnormality_sigmoid"], [OUTPUT_NAME], name="to_nhwc",
                                  perm=[0, 2, 3, 1]))
    if next(it, None) is not None:
        raise ModelError(f"more weights than a {base_filters}-filter U-Net of depth {depth} has")
    h, w_ = input_hw
    graph = helper.make_graph(
        nodes, f"unet{base_filters}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", h, w_, channels])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", h, w_, 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="napari-lgg-seg")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class _Calibration:
    """onnxruntime CalibrationDataReader over (N, Y, X, 3) float32 slices, in batches;
    ``set_range`` lets the calibrator reduce the ranges batch by batch (bounded memory)."""

    def __init__(self, slices: np.ndarray, batch_size: int = 8):
        self._data = [np.ascontiguousarray(slices[i : i + batch_size], np.float32)
                      for i in range(0, len(slices), batch_size)]
        self._iter = iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self._data[start_index:end_index])

    def get_next(self):
        batch = next(self._iter, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_int8(float_model, out_path: str | os.PathLike, calibration: np.ndarray) -> Path:
    """Static int8 quantization (QDQ, per-channel int8 weights, uint8 activations, MinMax
    ranges from ``calibration`` slices preprocessed like inference). Writes ``out_path``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if calibration.ndim != 4 or calibration.shape[-1] % 3 or len(calibration) == 0:
        raise ModelError(f"calibration slices of shape {calibration.shape} are not (N, Y, X, 3)")
    out = Path(out_path)
    src = out.with_name(out.name + ".float.onnx")
    onnx.save(float_model, src)
    try:
        quantize_static(
            str(src), str(out), _Calibration(calibration),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(FLOAT_NODES),
            extra_options={"CalibStridedMinMax": 1},  # ranges reduced per batch: bounded memory
        )
    finally:
        src.unlink(missing_ok=True)
        for extra in out.parent.glob(out.name + ".float*"):
            extra.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------- engine


RUNTIMES = ("auto", "onnxruntime", "openvino")


def openvino_available() -> bool:
    """Whether the OpenVINO runtime is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


class _OpenVino:
    """The ``session.run`` call of ONNX Runtime, served by OpenVINO (one request at a time)."""

    def __init__(self, path: str, threads: int):
        import openvino as ov

        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = ov.Core().compile_model(path, "CPU", config)
        self._lock = threading.Lock()

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.array(self._compiled(x)[0], np.float32)


class Int8Engine:
    """An ONNX model behind the Keras calls that inference uses: ``predict_on_batch``,
    ``input_shape``, ``name`` and ``lgg_info``. ``runtime`` is ONNX Runtime, or OpenVINO
    (optional, for file paths only); ``auto`` takes OpenVINO when it is installed."""

    engine = "int8"

    def __init__(self, source: str | os.PathLike | bytes, info: dict | None = None, threads: int = 0,
                 runtime: str = "onnxruntime"):
        if runtime not in RUNTIMES:
            raise ModelError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        if runtime == "auto":
            runtime = "openvino" if openvino_available() and not isinstance(source, bytes) else "onnxruntime"
        self.runtime = runtime
        self._ov = None
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError("the int8 engine needs onnxruntime: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting threads: faster on a shared or loaded CPU, and idle in a GUI
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        what = source if isinstance(source, bytes) else str(source)
        try:
            if runtime == "openvino":
                if isinstance(source, bytes):
                    raise ModelError("the OpenVINO runtime needs an ONNX file path")
                self._ov = _OpenVino(what, threads)
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            self.session = ort.InferenceSession(what, opts, providers=["CPUExecutionProvider"])
        except ModelError:
            raise
        except Exception as exc:  # ORT and OpenVINO raise their own types for broken files
            where = "ONNX model" if isinstance(source, bytes) else str(source)
            raise ModelError(f"{where}: not a usable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
        inp = self.session.get_inputs()[0]
        dims = [d if isinstance(d, int) else None for d in inp.shape]
        context_of_input(dims, "ONNX model")
        self._input = inp.name
        self.input_shape = (None, *dims[1:])
        self.output_shape = (None, *dims[1:3], 1)
        if self._ov is not None:
            del self.session  # shapes read; OpenVINO runs it
        self.lgg_info = dict(info or {}, runtime=runtime)
        self.name = self.lgg_info.get("name", "onnx-unet")

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        """Probabilities float32 (N, Y, X, 1) of float32 (N, Y, X, C) slices in [0, 1]."""
        x = np.ascontiguousarray(x, np.float32)
        if self._ov is not None:
            return self._ov.run(x)
        return self.session.run(None, {self._input: x})[0]


def _variant_record(info: dict, variant: str) -> dict:
    """``model.json`` itself for the main model, its ``"flair_model"`` record for the
    FLAIR-only companion; ModelError for an unknown variant or a missing companion."""
    if variant not in VARIANTS:
        raise ModelError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    if variant == "main":
        return info
    companion = info.get("flair_model")
    if not companion:
        raise ModelError("the bundled model has no FLAIR-only companion (no \"flair_model\" in model.json)")
    return companion


def variant_info(info: dict, variant: str = "main") -> dict:
    """What a loaded bundled model carries as ``lgg_info`` (before ``bundled`` and
    ``weights_sha256``): ``model.json`` without its split and export records, and for
    ``"flair"`` updated with the companion's own threshold, post-processing, weights and
    validation figures. The main model notes whether a companion exists."""
    companion = _variant_record(info, variant)
    meta = {k: v for k, v in info.items() if k not in ("split", "int8", "flair_model")}
    if variant == "flair":
        meta.update({k: v for k, v in companion.items() if k != "int8"})
        meta.setdefault("weights", FLAIR_WEIGHTS)
    else:
        meta["has_flair_model"] = bool(info.get("flair_model"))
    meta["variant"] = variant
    return meta


def read_bundled_config(folder: str | os.PathLike | None = None) -> dict | None:
    """The bundled ``model.json`` (None when there is none), without importing TensorFlow."""
    config = (Path(folder) if folder is not None else BUNDLED_DIR) / "model.json"
    try:
        return json.loads(config.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config}: unreadable ({exc})") from None


def _bundled_state(folder: Path, variant: str = "main") -> tuple[dict, dict, Path, Path]:
    if variant not in VARIANTS:
        raise ModelError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    info = read_bundled_config(folder)
    if info is None:
        raise ModelError(f"no bundled model in {folder}")
    if variant == "flair":
        companion = _variant_record(info, variant)
        record = companion.get("int8")
        if not record:
            raise ModelError("the bundled FLAIR-only model has no int8 export "
                             "(run scripts/export_int8.py --variant flair)")
        return (info, record, folder / companion.get("weights", FLAIR_WEIGHTS),
                folder / record.get("file", FLAIR_INT8_FILE))
    record = info.get("int8")
    if not record:
        raise ModelError("the bundled model has no int8 export (run scripts/export_int8.py)")
    return info, record, folder / info.get("weights", "unet_lgg.npz"), folder / record.get("file", INT8_FILE)


def load_bundled_int8(folder: str | os.PathLike | None = None, runtime: str = "auto",
                      variant: str = "main") -> Int8Engine:
    """The int8 engine of the bundled model (``variant="flair"``: of its FLAIR-only
    companion), cached per file version. Raises ModelError (saying why) when it is
    missing or does not match the current weights. ``auto`` runs it with OpenVINO when
    installed and its parity was checked at export."""
    folder = Path(folder) if folder is not None else BUNDLED_DIR
    info, record, weights, onnx_path = _bundled_state(folder, variant)
    for p in (weights, onnx_path):
        if not p.exists():
            raise ModelError(f"the bundled int8 engine is incomplete: {p} is missing")
    key = (runtime, variant, *((str(p), p.stat().st_mtime_ns, p.stat().st_size)
                               for p in (folder / "model.json", weights, onnx_path)))
    with _LOCK:
        engine = _BUNDLED.get(key)
        if engine is not None:
            return engine
        rerun = "rerun scripts/export_int8.py" + (" --variant flair" if variant == "flair" else "")
        if sha256_of(weights) != record.get("weights_sha256"):
            raise ModelError(f"{onnx_path.name} was exported from other weights than {weights.name} ({rerun})")
        data = onnx_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            raise ModelError(f"{onnx_path.name} differs from the file recorded in model.json ({rerun})")
        meta = variant_info(info, variant)
        meta.update(weights_sha256=record["weights_sha256"], engine="int8", bundled=True)
        # OpenVINO only where the export checked its parity too
        ov_ok = (record.get("parity_openvino") or {}).get("passed") and openvino_available()
        if runtime == "openvino" and not ov_ok:
            raise ModelError("OpenVINO is not installed or its parity was not checked at export")
        engine = (Int8Engine(onnx_path, meta, runtime="openvino") if ov_ok and runtime != "onnxruntime"
                  else Int8Engine(data, meta))
        for old in [k for k in _BUNDLED if k[:2] == (runtime, variant)]:
            del _BUNDLED[old]
        _BUNDLED[key] = engine
        return engine


def calibration_slices(stacks: Iterable, per_patient: int = 6, flair_only: bool = False,
                       context: int = 0) -> np.ndarray:
    """Model inputs (N, 256, 256, 3) float32 from patient stacks, preprocessed exactly as
    ``predict_probabilities`` does (whole-volume intensity range), ``per_patient`` evenly
    spaced slices each, the slices with a mask first when the stack has masks.
    ``flair_only`` takes the FLAIR channel alone (grey, replicated to the 3 inputs);
    ``context`` adds the neighbouring slices (``3 * (2k + 1)`` channels)."""
    from .context import neighbour_index, stack_context
    from .preprocess import (
        as_channels_last,
        flair_channel,
        intensity_range,
        to_model_input,
    )

    out = []
    for st in stacks:
        vol, _ = as_channels_last(flair_channel(st.image) if flair_only else st.image)
        z = vol.shape[0]
        picks = np.linspace(0, z - 1, min(per_patient, z)).round().astype(int)
        if st.mask is not None:
            mask = np.asarray(st.mask).reshape(z, -1)
            positive = np.flatnonzero(mask.any(axis=1))
            if positive.size:  # half of the picks from slices with abnormality
                half = positive[np.linspace(0, positive.size - 1, max(1, len(picks) // 2)).round().astype(int)]
                rest = picks[:: 2][: len(picks) - len(half)]
                picks = np.unique(np.concatenate([half, rest]))
        if context:
            idx = neighbour_index(0, z, z, context)[picks]
            needed = np.unique(idx)
            x = to_model_input(vol[needed], intensity_range(vol))
            out.append(stack_context(x, np.searchsorted(needed, idx)))
        else:
            out.append(to_model_input(vol[picks], intensity_range(vol)))
    if not out:
        raise ModelError("no calibration patients")
    return np.concatenate(out)
