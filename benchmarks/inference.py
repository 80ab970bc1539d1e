"""Inference speed and memory: the bundled U-Net vs the classic 64-filter U-Net.

    python benchmarks/inference.py [--patient DIR] [--model PATH] [--repeats 3]

Segments one real patient (default TCGA_HT_7686_19950629 from ../shared/data/lgg/kaggle_3m)
with ``segment_volume`` and reports slices/s, then does the same with the classic U-Net
(``build_unet(64)``, random weights: speed does not depend on the weights) on the same
input, and prints the speed ratio. Each model runs in its own child process so that its
peak resident memory (``getrusage`` maxrss) is its own; the load average is printed
because other work on the machine slows both models alike.

``--model PATH`` times a .keras file instead of the bundled model (e.g. while the bundled
model is not trained yet).
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


def worker(args: argparse.Namespace) -> dict:
    """Child process: load one model, time segment_volume on the patient, report JSON."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from napari_lgg_seg.core.io import read_patient

    stack = read_patient(args.patient)
    image = stack.image[: args.slices] if args.slices else stack.image
    rss_data = _rss_mib()
    from napari_lgg_seg.core.inference import segment_volume
    from napari_lgg_seg.core.model import build_unet, load_model, model_name

    if args.which == "classic":
        model = build_unet(args.classic_filters)
        name = f"classic U-Net ({args.classic_filters} base filters, random weights)"
    else:
        model = load_model(args.model)
        name = model_name(model)
    params = int(model.count_params())
    rss_model = _rss_mib()
    t0 = time.perf_counter()
    segment_volume(image[: args.batch_size], model, batch_size=args.batch_size)  # warm-up (graph tracing)
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        segment_volume(image, model, batch_size=args.batch_size)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "which": args.which,
        "model": name,
        "params": params,
        "slices": int(image.shape[0]),
        "shape": list(image.shape),
        "batch_size": args.batch_size,
        "warmup_s": warmup_s,
        "times_s": times,
        "slices_per_s": image.shape[0] / best,
        "slices_per_s_mean": image.shape[0] * len(times) / sum(times),
        "rss_after_data_mib": rss_data,
        "rss_after_model_mib": rss_model,
        "peak_rss_mib": _maxrss_mib(),
    }


def _child(which: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", which, "--patient", str(args.patient),
        "--repeats", str(args.repeats), "--batch-size", str(args.batch_size),
        "--classic-filters", str(args.classic_filters), "--slices", str(args.slices),
    ]
    if args.model:
        cmd += ["--model", str(args.model)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"{which} benchmark failed:\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patient", type=Path, default=DEFAULT_PATIENT, help="kaggle_3m patient folder")
    ap.add_argument("--model", default=None, help=".keras model to time instead of the bundled one")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the patient (best is reported)")
    ap.add_argument("--batch-size", type=int, default=8, help="slices per model call")
    ap.add_argument("--classic-filters", type=int, default=64, help="base filters of the classic U-Net")
    ap.add_argument("--slices", type=int, default=0, help="use only the first N slices (0: all)")
    ap.add_argument("--no-classic", action="store_true", help="skip the classic U-Net")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    ap.add_argument("--worker", choices=["bundled", "classic"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.which = args.worker
        print(json.dumps(worker(args)))
        return 0
    if not args.patient.is_dir():
        raise SystemExit(f"patient folder not found: {args.patient} (use --patient)")
    if args.model is None:
        bundled = REPO / "src" / "napari_lgg_seg" / "bundled" / "model.json"
        if not bundled.exists():
            raise SystemExit(f"the bundled model is not there yet ({bundled}); pass --model PATH")

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; python {platform.python_version()}")
    print(f"patient: {args.patient.name}; batch size {args.batch_size}; best of {args.repeats} passes")
    results = [_child("bundled", args)]
    if not args.no_classic:
        results.append(_child("classic", args))
    print(f"{'model':<58}{'params':>11}{'slices/s':>10}{'warm-up s':>11}{'peak RSS MiB':>14}")
    for r in results:
        print(f"{r['model'][:57]:<58}{r['params']:>11,}{r['slices_per_s']:>10.2f}{r['warmup_s']:>11.2f}"
              f"{r['peak_rss_mib']:>14.0f}")
    print(f"({results[0]['slices']} slices of {tuple(results[0]['shape'][1:])}; peak RSS includes Python, "
          f"TensorFlow and the data: {results[0]['rss_after_data_mib']:.0f} MiB before TensorFlow)")
    if len(results) == 2:
        ratio = results[0]["slices_per_s"] / results[1]["slices_per_s"]
        print(f"speed-up of {results[0]['model']} over the classic U-Net: {ratio:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
