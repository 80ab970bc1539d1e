"""Score the bundled model: choose post-processing on the validation patients only, then
report the held-out test patients once.

    python scripts/evaluate_bundled.py --data ../shared/data/lgg/kaggle_3m --out runs/bundled
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_lgg_seg.core.evaluation import evaluate
from napari_lgg_seg.core.model import bundled_info, load_model

MIN_SIZES = (0, 100, 300, 1000)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/lgg/kaggle_3m")
    ap.add_argument("--out", default="runs/bundled")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = bundled_info()
    model = load_model()
    val = {}
    for min_size in MIN_SIZES:
        r = evaluate(args.data, model, patients=info["split"]["val"], min_size=min_size)
        val[min_size] = r.summary["dice_mean"]
        print(f"val min_size={min_size}: per-patient Dice {val[min_size]:.4f}", flush=True)
    chosen = max(val, key=lambda k: (round(val[k], 3), -k))  # ties: the smaller filter
    t = time.perf_counter()
    test = evaluate(args.data, model, patients=info["split"]["test"], min_size=chosen)
    seconds = time.perf_counter() - t
    print(f"test (min_size={chosen}):\n{test.format()}")
    test.to_json(out / "test_report.json")
    n_slices = test.summary["n_slices"]
    (out / "selection.json").write_text(json.dumps(
        {"val_dice_by_min_size": val, "chosen_min_size": chosen,
         "test_seconds": seconds, "test_slices_per_s": n_slices / seconds}, indent=1))
    print(f"{n_slices} slices in {seconds:.1f} s ({n_slices / seconds:.1f} slices/s incl. reading)")
    print("per-patient Dice:", np.round([p.dice for p in test.patients], 3).tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
