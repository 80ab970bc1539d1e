"""Print the model card's result tables (Markdown) from the reports that
``scripts/evaluate_bundled.py`` wrote, so that no figure is typed by hand.

    python scripts/model_card_tables.py --eval runs/bundled2/eval
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def f3(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def summary_rows(columns: dict[str, dict]) -> list[str]:
    names = list(columns)
    rows = ["| figure | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]

    def row(label, fn):
        rows.append(f"| {label} | " + " | ".join(fn(columns[n]) for n in names) + " |")

    row("per-patient Dice, mean / median / min", lambda s: f"{f3(s['dice_mean'])} / {f3(s['dice_median'])} / {f3(s['dice_min'])}")
    row("per-patient IoU, mean / median / min", lambda s: f"{f3(s['iou_mean'])} / {f3(s['iou_median'])} / {f3(s['iou_min'])}")
    row("pooled Dice (all test voxels)", lambda s: f3(s["pooled_dice"]))
    row("per-slice Dice on slices with abnormality", lambda s: f3(s["slice_dice_positive_mean"]))
    row("slice sensitivity / specificity", lambda s: f"{f3(s['slice_sensitivity'])} / {f3(s['slice_specificity'])}")
    for size in ("small", "medium", "large"):
        row(f"per-patient Dice, {size} third (true voxels)",
            lambda s, k=size: f"{f3(s['dice_by_size'][k]['dice_mean'])} (min {f3(s['dice_by_size'][k]['dice_min'])}; "
            f"{s['dice_by_size'][k]['voxels']})")
    row("patients below Dice 0.5", lambda s: "n/a" if "below_half" not in s else str(s["below_half"]))
    return rows


def patient_rows(new: dict, old: dict, new_flair: dict) -> list[str]:
    by_old = {p["patient"]: p for p in old["patients"]}
    by_flair = {p["patient"]: p for p in new_flair["patients"]}
    rows = ["| patient | slices | true voxels | 2.0 Dice | 2.0 predicted voxels | 2.0 FLAIR only | 1.1 Dice |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in sorted(new["patients"], key=lambda p: p["dice"]):
        rows.append(f"| {p['patient']} | {p['n_slices']} | {p['true_voxels']} | {p['dice']:.3f} | "
                    f"{p['predicted_voxels']} | {by_flair[p['patient']]['dice']:.3f} | {by_old[p['patient']]['dice']:.3f} |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval", default="runs/bundled2/eval")
    args = ap.parse_args()
    ev = Path(args.eval)
    load = lambda name: json.loads((ev / name).read_text())  # noqa: E731
    sel = load("selection.json")
    reports = {k: load(f"test_{k}.json") for k in ("bundled", "bundled_flair_only", "baseline", "baseline_flair_only")}
    for r in reports.values():
        r["summary"]["below_half"] = sum(p["dice"] < 0.5 for p in r["patients"])
    print(f"## Validation ({len(sel['val_patients'])} patients): chosen {sel['chosen']['text']}, "
          f"threshold {sel['chosen']['threshold']}")
    print(json.dumps({k: sel[k] for k in ("val", "baseline_val", "ships")}))
    top = sorted(sel["grid"], key=lambda g: -g["val_dice_mean"])[:8]
    print("\n| threshold | post-processing | validation per-patient Dice |\n| --- | --- | --- |")
    for g in top:
        print(f"| {g['threshold']} | {g['text']} | {g['val_dice_mean']:.4f} |")
    none = next(g for g in sel["grid"] if g["threshold"] == 0.5 and g["postprocessing"]["mode"] == "none")
    print(f"| 0.5 | none | {none['val_dice_mean']:.4f} |")
    b, bf = reports["bundled"], reports["bundled_flair_only"]
    o, of = reports["baseline"], reports["baseline_flair_only"]
    print(f"\n## Test ({b['summary']['n_patients']} patients, {b['summary']['n_slices']} slices)\n")
    print("\n".join(summary_rows({
        f"**2.0** ({b['postprocessing_text']})": b["summary"],
        "2.0, FLAIR only": bf["summary"],
        "1.1.20261129 (its defaults: none)": o["summary"],
        "1.1, FLAIR only": of["summary"],
    })))
    print("\n" + "\n".join(patient_rows(b, o, bf)))
    s1000 = load("test_summary.json").get("baseline_min_size_1000")
    if s1000:
        print(f"\n1.1 with min size 1000: per-patient Dice mean {s1000['dice_mean']:.3f} median "
              f"{s1000['dice_median']:.3f} min {s1000['dice_min']:.3f}; pooled {s1000['pooled_dice']:.3f}")
    print(f"\nseconds: 2.0 {b['seconds']:.1f} ({b['model']}), 1.1 {o['seconds']:.1f} ({o['model']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
