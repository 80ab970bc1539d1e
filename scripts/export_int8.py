"""Export the bundled U-Net to the int8 ONNX engine, if it keeps the Dice of float32 Keras.

    python scripts/export_int8.py [--data ../shared/data/lgg/kaggle_3m] [--per-patient 6]
                                  [--calib-patients 0] [--dry-run] [--variant main|flair]

1. Writes the ONNX graph from the bundled weights (BatchNorm folded) and checks it against
   the Keras model in float32 on the calibration slices.
2. Quantizes it statically to int8 (per-channel weights), calibrated on slices of the
   *training* patients of ``model.json["split"]``, preprocessed as inference does.
3. Parity on the *validation* patients (test patients are never read): per-patient Dice
   against the ground truth with int8 and with Keras float32; it must hold that mean
   |difference| <= 0.005 and no patient is worse with int8 by more than 0.02.
4. Only then writes ``bundled/unet_lgg_int8.onnx`` and the ``int8`` record of
   ``bundled/model.json`` (sha256 of the weights and of the ONNX file, calibration and
   parity figures), each atomically. Exit status 1 (and nothing written) if parity fails.
   When the optional OpenVINO runtime is installed, parity is checked with it as well
   (``parity_openvino``); the engine runs on OpenVINO only where that passed.

``--variant flair`` does the same for the FLAIR-only companion (``model.json["flair_model"]``,
its weights ``unet_lgg_flair.npz``) with FLAIR-only input throughout: calibration on the FLAIR
channel of the training patients, parity on the FLAIR channel of the validation patients with
the companion's own threshold and post-processing; it writes ``bundled/unet_lgg_flair_int8.onnx``
and ``model.json["flair_model"]["int8"]``.

Rerun it whenever the bundled weights change: the engine refuses a stale ONNX file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from napari_lgg_seg.core.engine_int8 import (
    BUNDLED_DIR,
    FLAIR_INT8_FILE,
    FLAIR_WEIGHTS,
    INT8_FILE,
    Int8Engine,
    calibration_slices,
    openvino_available,
    quantize_int8,
    sha256_of,
    unet_onnx,
)
from napari_lgg_seg.core.io import atomic_write, read_patient
from napari_lgg_seg.core.metrics import dice
from napari_lgg_seg.core.postprocess import PostProcessing, describe_settings, info_defaults
from napari_lgg_seg.core.preprocess import flair_channel

DEFAULT_DATA = REPO.parent / "shared" / "data" / "lgg" / "kaggle_3m"
MAX_MEAN_ABS_DIFF = 0.005
MAX_WORSE = 0.02


def parity(patients: list[str], data: Path, keras_model, int8: Int8Engine, threshold: float,
           post: PostProcessing, flair_only: bool = False) -> dict:
    """Per-patient Dice (vs ground truth) of both engines and the parity verdict. Both run
    with the same explicit threshold and post-processing (the model's own): the int8
    engine under test carries no ``model.json`` defaults of its own yet. ``flair_only``
    feeds the FLAIR channel alone. No routing to the FLAIR-only companion: the model
    under test runs."""
    from napari_lgg_seg.core.inference import segment_volume

    rows, t_keras, t_int8, n_slices = [], 0.0, 0.0, 0
    for pid in patients:
        st = read_patient(data / pid)
        image = flair_channel(st.image) if flair_only else st.image
        t0 = time.perf_counter()
        ref = segment_volume(image, keras_model, threshold=threshold, postprocess=post, engine="keras",
                             flair_model=False)
        t1 = time.perf_counter()
        new = segment_volume(image, int8, threshold=threshold, postprocess=post, engine="int8",
                             flair_model=False)
        t2 = time.perf_counter()
        t_keras, t_int8, n_slices = t_keras + t1 - t0, t_int8 + t2 - t1, n_slices + st.n_slices
        row = {"patient": pid, "slices": st.n_slices, "dice_keras": dice(st.mask, ref),
               "dice_int8": dice(st.mask, new), "agreement_dice": dice(ref, new)}
        row["diff"] = row["dice_int8"] - row["dice_keras"]
        rows.append(row)
        print(f"  {pid}: Dice keras {row['dice_keras']:.4f} int8 {row['dice_int8']:.4f} "
              f"(diff {row['diff']:+.4f}; int8-vs-keras labels Dice {row['agreement_dice']:.4f})", flush=True)
    diffs = np.array([r["diff"] for r in rows])
    mean_abs, worst = float(np.abs(diffs).mean()), float(-diffs.min())
    return {
        "patients": rows,
        "mean_abs_diff": mean_abs,
        "worst_drop": worst,
        "mean_dice_keras": float(np.mean([r["dice_keras"] for r in rows])),
        "mean_dice_int8": float(np.mean([r["dice_int8"] for r in rows])),
        "settings": describe_settings(threshold, post),
        "rule": f"mean |Dice int8 - Dice keras| <= {MAX_MEAN_ABS_DIFF}, no patient worse by > {MAX_WORSE}",
        "passed": bool(mean_abs <= MAX_MEAN_ABS_DIFF and worst <= MAX_WORSE),
        "speed_ratio_int8_vs_keras": t_keras / t_int8,
        "slices": n_slices,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of kaggle_3m patient folders")
    ap.add_argument("--per-patient", type=int, default=6, help="calibration slices per training patient")
    ap.add_argument("--calib-patients", type=int, default=0, help="training patients to calibrate on (0: all)")
    ap.add_argument("--dry-run", action="store_true", help="check parity but write nothing")
    ap.add_argument("--variant", choices=("main", "flair"), default="main",
                    help="main: the bundled model; flair: its FLAIR-only companion, on FLAIR-only input")
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization's advice lines
    config = BUNDLED_DIR / "model.json"
    info = json.loads(config.read_text())
    split = info.get("split") or {}
    if not split.get("train") or not split.get("val"):
        raise SystemExit(f"{config}: no train/val split recorded; cannot calibrate and check parity")
    if not args.data.is_dir():
        raise SystemExit(f"patient data not found: {args.data} (use --data)")
    flair = args.variant == "flair"
    companion = info.get("flair_model") if flair else None
    if flair and not companion:
        raise SystemExit(f"{config}: no \"flair_model\" record; add the companion with save_bundled_flair first")
    own = companion if flair else info  # the threshold and post-processing parity runs with
    out_file = FLAIR_INT8_FILE if flair else INT8_FILE
    weights_path = BUNDLED_DIR / (companion.get("weights", FLAIR_WEIGHTS) if flair else info["weights"])
    weights_sha = sha256_of(weights_path)

    from napari_lgg_seg.core.model import load_flair_model, load_model

    keras_model = load_flair_model() if flair else load_model()
    train = split["train"]
    if args.calib_patients:
        train = [train[i] for i in np.linspace(0, len(train) - 1, args.calib_patients).round().astype(int)]
    print(f"calibration: {len(train)} training patients x {args.per_patient} slices"
          + (" (FLAIR only)" if flair else ""), flush=True)
    from napari_lgg_seg.core.context import model_context

    calib = calibration_slices((read_patient(args.data / pid) for pid in train), args.per_patient,
                               flair_only=flair, context=model_context(keras_model))

    float_model = unet_onnx(keras_model.get_weights(), info["base_filters"], info.get("depth", 4),
                            tuple(info["input_shape"][:2]))
    ref = np.asarray(keras_model.predict(calib, batch_size=8, verbose=0))
    got = np.concatenate([Int8Engine(float_model.SerializeToString()).predict_on_batch(calib[i : i + 8])
                          for i in range(0, len(calib), 8)])
    float_err = float(np.abs(ref - got).max())
    print(f"ONNX float32 vs Keras on {len(calib)} slices: max |diff| {float_err:.2e}", flush=True)
    if float_err > 1e-4:
        raise SystemExit(f"the ONNX float32 graph differs from Keras by {float_err:.2e} (> 1e-4); not written")

    with tempfile.TemporaryDirectory() as tmp:
        q_path = quantize_int8(float_model, Path(tmp) / out_file, calib)
        data = q_path.read_bytes()
        int8 = Int8Engine(data, {"name": info.get("name", "unet"), "engine": "int8"})
        q_err = float(np.abs(ref - np.concatenate([int8.predict_on_batch(calib[i : i + 8])
                                                     for i in range(0, len(calib), 8)])).max())
        print(f"int8 vs Keras on the calibration slices: max |probability diff| {q_err:.3f}", flush=True)
        threshold, post = info_defaults(own)
        print(f"parity settings (the model's own): {describe_settings(threshold, post)}", flush=True)
        results = {}
        runtimes = ["onnxruntime"] + (["openvino"] if openvino_available() else [])
        for runtime in runtimes:
            engine = int8 if runtime == "onnxruntime" else Int8Engine(q_path, runtime="openvino")
            print(f"parity on {len(split['val'])} validation patients{' (FLAIR only)' if flair else ''}, "
                  f"int8 with {runtime}:", flush=True)
            result = results[runtime] = parity(split["val"], args.data, keras_model, engine, threshold, post,
                                               flair_only=flair)
            print(f"mean |diff| {result['mean_abs_diff']:.4f} (<= {MAX_MEAN_ABS_DIFF}), worst drop "
                  f"{result['worst_drop']:+.4f} (<= {MAX_WORSE}); mean Dice keras "
                  f"{result['mean_dice_keras']:.4f}, int8 {result['mean_dice_int8']:.4f}; int8 "
                  f"{result['speed_ratio_int8_vs_keras']:.2f}x Keras speed in this run", flush=True)
    if not results["onnxruntime"]["passed"]:
        print("parity FAILED: int8 model not written", file=sys.stderr)
        return 1
    if args.dry_run:
        print("parity passed (dry run: nothing written)")
        return 0
    record = {
        "file": out_file,
        "sha256": hashlib.sha256(data).hexdigest(),
        "weights_sha256": weights_sha,
        "runtime": "onnxruntime",
        "quantization": "static QDQ; int8 per-channel weights, uint8 activations (MinMax); "
                        "BatchNorm folded; final 1x1 conv and sigmoid in float32",
        "calibration": {"patients": len(train), "slices": len(calib),
                        "per_patient": args.per_patient,
                        "from": "training patients of split" + (", FLAIR channel only" if flair else "")},
        "onnx_float32_max_abs_diff": float_err,
        "calibration_max_abs_prob_diff": q_err,
        "parity": {k: v for k, v in results["onnxruntime"].items() if k != "speed_ratio_int8_vs_keras"},
        "recipe": "python scripts/export_int8.py" + (" --variant flair" if flair else ""),
    }
    if "openvino" in results:  # the engine uses OpenVINO only where this passed
        record["parity_openvino"] = {k: v for k, v in results["openvino"].items()
                                     if k != "speed_ratio_int8_vs_keras"}
    atomic_write(BUNDLED_DIR / out_file, lambda tmp: tmp.write_bytes(data))
    if flair:
        companion["int8"] = record  # companion is info["flair_model"]
    else:
        info["int8"] = record
    atomic_write(config, lambda tmp: tmp.write_text(json.dumps(info, indent=2) + "\n"))
    where = 'the "flair_model" int8 record' if flair else "the int8 record"
    print(f"wrote {BUNDLED_DIR / out_file} ({len(data) / 1e6:.1f} MB) and {where} of {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
