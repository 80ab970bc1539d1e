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


def short(report: dict) -> str:
    """``2.1`` of ``lgg-unet16 2.1.20261201 (int8)``."""
    version = report["model"].split()[1] if len(report["model"].split()) > 1 else report["model"]
    return ".".join(version.split(".")[:2])


def patient_rows(new: dict, new_flair: dict, others: list[dict]) -> list[str]:
    """One row per test patient, worst first: the new model (all sequences and FLAIR
    only) and the others' Dice on the same patients."""
    v = short(new)
    by = [{p["patient"]: p for p in o["patients"]} for o in others]
    by_flair = {p["patient"]: p for p in new_flair["patients"]}
    rows = [f"| patient | slices | true voxels | {v} Dice | {v} predicted voxels | {v} FLAIR only | "
            + " | ".join(f"{short(o)} Dice" for o in others) + " |",
            "| --- | --- | --- | --- | --- | --- |" + " --- |" * len(others)]
    for p in sorted(new["patients"], key=lambda p: p["dice"]):
        rows.append(f"| {p['patient']} | {p['n_slices']} | {p['true_voxels']} | {p['dice']:.3f} | "
                    f"{p['predicted_voxels']} | {by_flair[p['patient']]['dice']:.3f} | "
                    + " | ".join(f"{b[p['patient']]['dice']:.3f}" for b in by) + " |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval", default="runs/bundled2/eval", help="reports of this release")
    ap.add_argument("--previous", default=None,
                    help="reports of an earlier release on the same test patients (e.g. docs/training/eval-2.0)")
    ap.add_argument("--baseline-name", default="1.1.20261129", help="what the baseline reports call 'user'")
    args = ap.parse_args()
    ev = Path(args.eval)
    load = lambda folder, name: json.loads((folder / name).read_text())  # noqa: E731
    sel = load(ev, "selection.json")
    reports = {k: load(ev, f"test_{k}.json") for k in ("bundled", "bundled_flair_only", "baseline", "baseline_flair_only")}
    if args.previous:
        prev = Path(args.previous)
        reports.update({f"previous{k}": load(prev, f"test_bundled{k}.json") for k in ("", "_flair_only")})
    reports["baseline"]["model"] = reports["baseline_flair_only"]["model"] = f"lgg-unet16 {args.baseline_name}"
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
    columns = {f"**{short(b)}** ({b['postprocessing_text']})": b["summary"], f"{short(b)}, FLAIR only": bf["summary"]}
    others = []
    if args.previous:
        pv, pvf = reports["previous"], reports["previous_flair_only"]
        columns.update({f"{short(pv)} ({pv['postprocessing_text']})": pv["summary"],
                        f"{short(pv)}, FLAIR only": pvf["summary"]})
        others.append(pv)
    columns.update({f"{args.baseline_name} (its defaults: none)": o["summary"], f"{short(o)}, FLAIR only": of["summary"]})
    others.append(o)
    print("\n".join(summary_rows(columns)))
    print("\n" + "\n".join(patient_rows(b, bf, others)))
    s1000 = load(ev, "test_summary.json").get("baseline_min_size_1000")
    if s1000:
        print(f"\n{short(o)} with min size 1000: per-patient Dice mean {s1000['dice_mean']:.3f} median "
              f"{s1000['dice_median']:.3f} min {s1000['dice_min']:.3f}; pooled {s1000['pooled_dice']:.3f}")
    print(f"\nseconds: {short(b)} {b['seconds']:.1f} ({b['model']}), {short(o)} {o['seconds']:.1f} ({o['model']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
