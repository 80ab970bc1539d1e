"""Score the bundled model: choose post-processing on the validation patients only, then
report the held-out test patients once with it (and once with the default settings, and
once on the FLAIR channel alone, as for patients without pre-/post-contrast sequences).

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
    for tta in (False, True):
        for min_size in MIN_SIZES:
            r = evaluate(args.data, model, patients=info["split"]["val"], min_size=min_size, flip_tta=tta)
            val[f"min_size={min_size} flip_tta={tta}"] = (r.summary["dice_mean"], min_size, tta)
            print(f"val min_size={min_size} flip_tta={tta}: per-patient Dice {r.summary['dice_mean']:.4f}", flush=True)
    flair_val = evaluate(args.data, model, patients=info["split"]["val"], flair_only=True).summary["dice_mean"]
    print(f"val FLAIR only: per-patient Dice {flair_val:.4f}", flush=True)
    # ties (within 0.005) go to the cheaper, simpler setting
    best = max(v[0] for v in val.values())
    _, min_size, tta = min((v for v in val.values() if v[0] >= best - 0.005), key=lambda v: (v[2], v[1]))
    t = time.perf_counter()
    test = evaluate(args.data, model, patients=info["split"]["test"], min_size=min_size, flip_tta=tta)
    seconds = time.perf_counter() - t
    print(f"test (min_size={min_size}, flip_tta={tta}):\n{test.format()}")
    test.to_json(out / "test_report.json")
    n_slices = test.summary["n_slices"]
    (out / "selection.json").write_text(json.dumps(
        {"val_dice": {k: v[0] for k, v in val.items()}, "val_flair_only_dice": flair_val, "chosen": {"min_size": min_size, "flip_tta": tta},
         "test_seconds": seconds, "test_slices_per_s": n_slices / seconds}, indent=1))
    print(f"{n_slices} slices in {seconds:.1f} s ({n_slices / seconds:.1f} slices/s incl. reading)")
    print("per-patient Dice:", np.round([p.dice for p in test.patients], 3).tolist())
    # the plain default (what the CLI and widgets do unless told otherwise), for the model card
    default = evaluate(args.data, model, patients=info["split"]["test"])
    default.to_json(out / "test_report_default.json")
    print(f"test, default settings (min_size=0, flip_tta=False): per-patient Dice {default.summary['dice_mean']:.4f}")
    flair = evaluate(args.data, model, patients=info["split"]["test"], flair_only=True)
    flair.to_json(out / "test_report_flair_only.json")
    print(f"test, FLAIR channel only:\n{flair.format()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
