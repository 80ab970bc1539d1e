"""Peak memory of ``napari-lgg-seg segment`` on long stacks, with and without ``--min-size``.

    python benchmarks/memory.py [--slices 100 1000 3000] [--min-size 10] [--model PATH]

For each slice count a (Z, 256, 256, 3) uint8 TIFF stack is built by repeating the slices
of a real patient (TCGA_HT_7686_19950629 from ../shared/data/lgg/kaggle_3m, or the
synthetic phantom when that is absent), then the command line segments it twice in a
child process, once with ``--min-size 0`` and once with ``--min-size N``; the child's
peak resident memory (``wait4`` maxrss) and wall time are printed as a table and JSON.
The stacks are written to a temporary folder that is removed at the end.

``--engine`` is passed on to ``segment`` (default: auto, the bundled model's int8 engine;
``keras`` loads TensorFlow). Post-processing labels with ``core.components`` (uint16
component numbers, chunked), as ``segment`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATIENT = REPO.parent / "shared" / "data" / "lgg" / "kaggle_3m" / "TCGA_HT_7686_19950629"


def make_stack(path: Path, n_slices: int) -> None:
    """Write ``n_slices`` slices, cycling through the real (or phantom) patient's slices."""
    import numpy as np
    import tifffile

    sys.path.insert(0, str(REPO / "src"))
    from napari_lgg_seg.core.io import read_patient
    from napari_lgg_seg.core.sample import make_phantom

    image = read_patient(PATIENT).image if PATIENT.is_dir() else make_phantom().image
    reps = -(-n_slices // image.shape[0])
    tifffile.imwrite(path, np.concatenate([image] * reps)[:n_slices], photometric="rgb")


def run_segment(stack: Path, out: Path, min_size: int, model: str | None, engine: str = "auto") -> dict:
    """Segment in a child process; return its peak RSS (MiB), wall time and exit status."""
    cmd = [sys.executable, "-m", "napari_lgg_seg", "segment", str(stack), "-o", str(out),
           "--min-size", str(min_size), "--engine", engine]
    if model:
        cmd += ["--model", model]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    peak = usage.ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else usage.ru_maxrss / 1024
    return {"min_size": min_size, "peak_rss_mib": round(peak, 1), "seconds": round(time.monotonic() - t0, 1),
            "exit": os.waitstatus_to_exitcode(status), "stderr": err.strip()[-300:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, nargs="+", default=[100, 1000, 3000])
    ap.add_argument("--min-size", type=int, default=10, help="the --min-size of the second run")
    ap.add_argument("--model", default=None, help="a .keras model instead of the bundled one")
    ap.add_argument("--engine", choices=["auto", "int8", "keras"], default="auto")
    ap.add_argument("--only-min-size", action="store_true", help="skip the --min-size 0 run")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lgg-mem-") as tmp:
        for n in args.slices:
            stack = Path(tmp) / f"stack{n}.tif"
            make_stack(stack, n)
            for min_size in (args.min_size,) if args.only_min_size else (0, args.min_size):
                r = run_segment(stack, Path(tmp) / "labels.tif", min_size, args.model, args.engine)
                r["slices"] = n
                rows.append(r)
                r["engine"] = args.engine
                print(f"{n:>6} slices  --min-size {min_size:<4} peak RSS {r['peak_rss_mib']:>8.1f} MiB  "
                      f"{r['seconds']:>7.1f} s  exit {r['exit']}", flush=True)
                if r["exit"] != 0:
                    print("   ", r["stderr"], flush=True)
            stack.unlink()
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
