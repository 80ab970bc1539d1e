"""Inference speed and memory of the engines, in one run.

    python benchmarks/inference.py [--patient DIR] [--repeats 3] [--json OUT.json]

Segments one real patient (default TCGA_HT_7686_19950629 from ../shared/data/lgg/kaggle_3m)
with ``segment_volume`` end to end (preprocessing included) and reports slices/s and peak
resident memory for:

- ``before``: the default path as it was, the bundled model rebuilt on every call
  (``clear_model_cache()`` before each call, Keras float32);
- ``default``: the default path now (``engine="auto"``, model kept warm);
- ``keras``: the warm bundled model in Keras float32;
- ``int8``: the bundled int8 engine on ONNX Runtime; ``openvino-int8``: the same file on
  OpenVINO (optional package; the row is skipped without it);
- ``onnx-f32`` / ``openvino-f32``: the same ONNX graph in float32 (needs the dev package
  ``onnx``);
- ``keras-2.5d`` / ``onnx-f32-2.5d``: the bundled weights widened to 2.5D input (one
  neighbour slice either side, 9 channels; ``core.context``), in Keras / ONNX float32: what
  context costs (the neighbours' preprocessing and the wider first convolution);
- ``classic``: the classic 64-filter U-Net (``build_unet(64)``, random weights: speed does
  not depend on the weights), Keras float32;
- ``first``: a fresh ``python -c`` process from start to the first labels (imports, model
  load and the one call) with the default engine and with Keras, and whether it imported
  TensorFlow.

Each runs in its own child process, so that peak RSS (``getrusage`` maxrss) is its own.
Compare ratios within one run: other work on the machine slows all alike (the load
average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PATIENT = REPO.parent / "shared" / "data" / "lgg" / "kaggle_3m" / "TCGA_HT_7686_19950629"


def _rss_mib() -> float:
    """Current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _maxrss_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


WHICH = ("before", "default", "keras", "int8", "openvino-int8", "onnx-f32", "openvino-f32", "classic",
         "keras-2.5d", "onnx-f32-2.5d")


def _engine_for(which: str, args: argparse.Namespace):
    """(model or engine object, engine name, label, parameters) for one benchmark row.
    The int8 and default rows import no TensorFlow (their peak RSS is their own)."""
    if which == "default":
        return None, "auto", "default path now (engine auto, warm)", None
    if which == "int8":
        from napari_lgg_seg.core.engine_int8 import load_bundled_int8

        return load_bundled_int8(runtime="onnxruntime"), "int8", "bundled U-Net, ONNX Runtime int8", None
    if which == "openvino-int8":
        from napari_lgg_seg.core.engine_int8 import BUNDLED_DIR, INT8_FILE, Int8Engine

        return Int8Engine(BUNDLED_DIR / INT8_FILE, runtime="openvino"), "int8", "bundled U-Net, OpenVINO int8", None
    from napari_lgg_seg.core.model import build_unet, load_model

    if which.endswith("-2.5d"):
        from napari_lgg_seg.core.context import channels_for, expand_first_kernel

        base = load_model()
        m = build_unet(base.lgg_info["base_filters"], (256, 256, channels_for(1)))
        m.set_weights(expand_first_kernel(base.get_weights(), 1, share=0.15))
        if which == "keras-2.5d":
            return m, "keras", "bundled U-Net widened to 2.5D (9 channels), Keras f32", m.count_params()
        from napari_lgg_seg.core.engine_int8 import Int8Engine, unet_onnx

        graph = unet_onnx(m.get_weights(), base.lgg_info["base_filters"], base.lgg_info.get("depth", 4))
        return Int8Engine(graph.SerializeToString()), "int8", "bundled U-Net widened to 2.5D, ONNX Runtime float32", None
    if which == "classic":
        m = build_unet(args.classic_filters)
        return m, "keras", f"classic U-Net ({args.classic_filters} filters, random weights), Keras f32", m.count_params()
    if which in ("onnx-f32", "openvino-f32"):
        import tempfile

        import onnx

        from napari_lgg_seg.core.engine_int8 import Int8Engine, unet_onnx

        m = load_model()
        info = m.lgg_info
        graph = unet_onnx(m.get_weights(), info["base_filters"], info.get("depth", 4))
        if which == "onnx-f32":
            return Int8Engine(graph.SerializeToString()), "int8", "bundled U-Net, ONNX Runtime float32", None
        path = Path(tempfile.mkdtemp()) / "f32.onnx"
        onnx.save(graph, path)
        return Int8Engine(path, runtime="openvino"), "int8", "bundled U-Net, OpenVINO float32", None
    m = load_model()
    return m, "keras", "bundled U-Net, Keras float32 (warm)", m.count_params()


def worker(args: argparse.Namespace) -> dict:
    """Child process: time segment_volume on the patient for one row, report JSON."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from napari_lgg_seg.core.io import read_patient

    stack = read_patient(args.patient)
    image = stack.image[: args.slices] if args.slices else stack.image
    rss_data = _rss_mib()
    from napari_lgg_seg.core.inference import segment_volume

    times = []
    if args.which == "before":
        from napari_lgg_seg.core.model import clear_model_cache

        label, params, warmup_s = "default path before (model rebuilt each call), Keras f32", None, 0.0
        for _ in range(args.repeats):
            clear_model_cache()
            t0 = time.perf_counter()
            segment_volume(image, engine="keras", batch_size=args.batch_size)
            times.append(time.perf_counter() - t0)
    else:
        t0 = time.perf_counter()
        model, engine, label, params = _engine_for(args.which, args)
        segment_volume(image[: args.batch_size], model, engine=engine, batch_size=args.batch_size)
        warmup_s = time.perf_counter() - t0  # load + first call (graph tracing / session start)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            segment_volume(image, model, engine=engine, batch_size=args.batch_size)
            times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "which": args.which,
        "model": label,
        "params": int(params) if params is not None else None,
        "slices": int(image.shape[0]),
        "shape": list(image.shape),
        "batch_size": args.batch_size,
        "warmup_s": warmup_s,
        "times_s": times,
        "s_per_patient": best,
        "slices_per_s": image.shape[0] / best,
        "rss_after_data_mib": rss_data,
        "peak_rss_mib": _maxrss_mib(),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


FIRST_LABELS = """
import sys, time
t0 = time.perf_counter()
from napari_lgg_seg.core.io import read_patient
from napari_lgg_seg.core.inference import segment_volume
labels = segment_volume(read_patient(sys.argv[1]).image, engine=sys.argv[2])
print(time.perf_counter() - t0, "tensorflow" in sys.modules, int(labels.sum()))
"""


def first_labels(args: argparse.Namespace, engine: str = "auto") -> dict:
    """Wall time of a fresh process from launch to its first labels."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(
        [str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", FIRST_LABELS, str(args.patient), engine], capture_output=True,
                         text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit("first-labels benchmark failed:\n" + "\n".join(out.stderr.strip().splitlines()[-5:]))
    inner, tf, _ = out.stdout.split()[-3:]
    return {"which": f"first-{engine}", "wall_s": wall, "in_process_s": float(inner), "tensorflow_imported": tf == "True"}


def _child(which: str, args: argparse.Namespace) -> dict | None:
    cmd = [
        sys.executable, __file__, "--worker", which, "--patient", str(args.patient),
        "--repeats", str(args.repeats), "--batch-size", str(args.batch_size),
        "--classic-filters", str(args.classic_filters), "--slices", str(args.slices),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-3:])
        print(f"{which}: skipped ({tail})", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patient", type=Path, default=DEFAULT_PATIENT, help="kaggle_3m patient folder")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the patient (best is reported)")
    ap.add_argument("--batch-size", type=int, default=8, help="slices per model call")
    ap.add_argument("--classic-filters", type=int, default=64, help="base filters of the classic U-Net")
    ap.add_argument("--slices", type=int, default=0, help="use only the first N slices (0: all)")
    ap.add_argument("--only", nargs="+", choices=[*WHICH, "first"], default=None, help="run only these rows")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    ap.add_argument("--worker", choices=WHICH, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.which = args.worker
        print(json.dumps(worker(args)))
        return 0
    if not args.patient.is_dir():
        raise SystemExit(f"patient folder not found: {args.patient} (use --patient)")
    bundled = REPO / "src" / "napari_lgg_seg" / "bundled" / "model.json"
    if not bundled.exists():
        raise SystemExit(f"the bundled model is not there yet ({bundled})")

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; python {platform.python_version()}")
    print(f"patient: {args.patient.name}; batch size {args.batch_size}; best of {args.repeats} passes")
    rows = [r for w in WHICH if args.only is None or w in args.only for r in [_child(w, args)] if r]
    ref = {r["which"]: r for r in rows}
    print(f"{'engine':<62}{'s/patient':>10}{'slices/s':>10}{'x before':>9}{'x classic':>10}{'warm-up s':>10}"
          f"{'peak RSS MiB':>13}{'TF':>4}")
    for r in rows:
        before = r["slices_per_s"] / ref["before"]["slices_per_s"] if "before" in ref else float("nan")
        classic = r["slices_per_s"] / ref["classic"]["slices_per_s"] if "classic" in ref else float("nan")
        print(f"{r['model'][:61]:<62}{r['s_per_patient']:>10.2f}{r['slices_per_s']:>10.1f}{before:>9.2f}"
              f"{classic:>10.1f}{r['warmup_s']:>10.2f}{r['peak_rss_mib']:>13.0f}"
              f"{'yes' if r['tensorflow_imported'] else 'no':>4}")
    if rows:
        print(f"({rows[0]['slices']} slices of {tuple(rows[0]['shape'][1:])}; peak RSS includes Python and the data)")
    if args.only is None or "first" in args.only:
        for engine in ("auto", "keras"):
            first = first_labels(args, engine)
            rows.append(first)
            print(f"fresh process to first labels (engine {engine}): {first['wall_s']:.2f} s wall "
                  f"({first['in_process_s']:.2f} s after interpreter start); TensorFlow imported: "
                  f"{'yes' if first['tensorflow_imported'] else 'no'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
