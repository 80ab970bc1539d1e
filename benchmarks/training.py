"""Training throughput of the bundled U-Net architecture (``build_unet(16)``).

    python benchmarks/training.py [--steps 10] [--batch-size 16] [--precision float32]
    python benchmarks/training.py --quick        # 1 warm-up + 2 timed steps, to check it runs

Times ``train_on_batch`` (forward, backward, Adam update, BCE+Dice loss and the Dice/IoU
metrics, exactly as ``train`` compiles the model) at the full 256x256 resolution and on
128-px crops, each with oneDNN on and off. TF_ENABLE_ONEDNN_OPTS is only read when
TensorFlow is imported, so every configuration runs in its own child process. Inputs are
random (throughput does not depend on the pixel values). Peak resident memory of each
child is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def _maxrss_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def worker(args: argparse.Namespace) -> dict:
    import keras
    import numpy as np

    from napari_lgg_seg.core.model import build_unet, compile_unet

    rng = np.random.default_rng(0)
    n = args.batch_size
    x = rng.random((n, args.size, args.size, 3), dtype=np.float32)
    y = (rng.random((n, args.size, args.size, 1)) > 0.9).astype(np.float32)
    keras.mixed_precision.set_global_policy(args.precision)  # this child runs one configuration
    model = compile_unet(build_unet(args.base_filters, input_shape=(None, None, 3)))
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        model.train_on_batch(x, y)
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {
        "size": args.size,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "precision": args.precision,
        "batch_size": n,
        "steps": args.steps,
        "warmup_s": warmup_s,
        "step_s_median": med,
        "slices_per_s": n / med,
        "peak_rss_mib": _maxrss_mib(),
    }


def run_config(args: argparse.Namespace, size: int, onednn: str) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", "--size", str(size), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
        "--base-filters", str(args.base_filters), "--precision", args.precision,
    ]
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"configuration size={size} oneDNN={onednn} failed:\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per configuration")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (graph tracing)")
    ap.add_argument("--batch-size", type=int, default=16, help="slices or crops per step")
    ap.add_argument("--base-filters", type=int, default=16, help="U-Net base filters (16 = bundled)")
    ap.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 128], help="input sizes (256 full, 128 crops)")
    ap.add_argument("--onednn", nargs="+", default=["1", "0"], choices=["1", "0"], help="TF_ENABLE_ONEDNN_OPTS values")
    ap.add_argument("--quick", action="store_true", help="1 warm-up and 2 timed steps of batch 4: checks it runs")
    ap.add_argument("--json", default=None, help="also write the results as JSON to this file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=256, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.quick:
        args.steps, args.warmup, args.batch_size = 2, 1, 4

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load[0]:.2f}; "
          f"U-Net {args.base_filters} base filters, batch {args.batch_size}, {args.precision}, "
          f"median of {args.steps} steps after {args.warmup} warm-up" + (" (--quick)" if args.quick else ""))
    rows = [run_config(args, size, flag) for size in args.sizes for flag in args.onednn]
    print(f"{'input':<12}{'oneDNN':>8}{'ms/step':>10}{'slices/s':>10}{'warm-up s':>11}{'peak RSS MiB':>14}")
    for r in rows:
        label = f"{r['size']}x{r['size']}" + (" full" if r["size"] == 256 else " crop")
        print(f"{label:<12}{'on' if r['onednn'] == '1' else 'off':>8}{r['step_s_median'] * 1000:>10.0f}"
              f"{r['slices_per_s']:>10.2f}{r['warmup_s']:>11.1f}{r['peak_rss_mib']:>14.0f}")
    by = {(r["size"], r["onednn"]): r["slices_per_s"] for r in rows}
    for size in args.sizes:
        if (size, "1") in by and (size, "0") in by:
            print(f"{size}px: oneDNN on/off = {by[(size, '1')] / by[(size, '0')]:.2f}x")
    if 256 in args.sizes and 128 in args.sizes and (256, "1") in by and (128, "1") in by:
        print(f"128-px crops vs full slices (oneDNN on): {by[(128, '1')] / by[(256, '1')]:.2f}x slices/s "
              "(a crop holds a quarter of the pixels)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
