"""Reproduce the bundled model: three training phases, then export into the package.

    python scripts/train_bundled.py --data ../shared/data/lgg/kaggle_3m --work runs/bundled

Phase 1 trains from scratch on 128-px crops biased towards the abnormality (cheap on a
CPU); phase 2 fine-tunes on whole 256x256 slices so that BatchNorm statistics and the
decision boundary match inference; phase 3 continues on whole slices with a cosine
learning-rate decay, an exponential moving average of the weights (validated and saved)
and abnormal slices sampled closer to their natural frequency; phase 4 continues with
missing sequences simulated (pre- and/or post-contrast replaced by FLAIR, as the dataset
stores them), so that FLAIR-only stacks segment too. 20% of the patients
(split by patient, stratified by institution, seed 0) are held out as the test set and
never used for any choice.

Phases 1-4 made release 1.1 from the first 52 patients (its split, kept in
``runs/bundled/split-1.1.json`` / 1.1's model.json). Phase 5 makes 2.0: the split grows to
every patient in ``--data`` with ``extend_split`` (1.1's patients keep their list, the new
ones are split on their own, stratified, seed 0, 15% validation / 25% test), and 1.1 is
fine-tuned on the grown training set with whole slices, cosine decay, EMA and simulated
missing sequences. ``--start-phase 5 --init-from-bundled`` starts it from the bundled 1.1
weights without rerunning phases 1-4.

Phase 6: phase 5's model fine-tuned for 16 more epochs (cosine 1e-4 to 1e-5, EMA) with 60%
of the drawn slices showing abnormality (2.0 under-segments small lesions). Phase 7: a
FLAIR-only companion, phase 6 fine-tuned on FLAIR alone (``TrainConfig.flair_only``); it
missed its rule, so 2.1 ships without one (``--with-companion`` trains it). Phase 8 makes
2.1: phase 6 fine-tuned with slices of small abnormalities drawn more often
(``small_lesion_power`` 0.5). The rules each had to pass were written before it ran
(``docs/training/phase6-rule.txt``, ``flair-model/rule.txt``, ``phase8/rule.txt``).

The threshold and post-processing of each come from ``scripts/evaluate_bundled.py select``
(``<work>/eval/selection.json`` and, for the companion, ``<work>/eval-flair/selection.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from napari_lgg_seg.core.context import model_context
from napari_lgg_seg.core.model import bundled_info, load_model, save_bundled, save_model
from napari_lgg_seg.core.splits import extend_split
from napari_lgg_seg.core.training import TrainConfig, load_training_data, train

# Release 1.1's split of the first 52 patients (seed 0, 10% val, 20% test): phases 1-4.
SPLIT_11 = Path(__file__).with_name("split-1.1.json")
RECIPE = (
    "python scripts/train_bundled.py --work runs/bundled2 --start-phase 5 --init-from-bundled "
    "(phases 5, 6 and 8 from 1.1.20261129) && python scripts/evaluate_bundled.py select --model "
    "runs/bundled2/phase8.keras --baseline runs/bundled2/phase6.keras --out runs/bundled2/eval8 && "
    "python scripts/train_bundled.py --work runs/bundled2 --export-only --selection "
    "runs/bundled2/eval8/selection.json && python scripts/export_int8.py"
)
VERSION = "2.1.%Y%m%d"  # 2.1: phase 8


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/lgg/kaggle_3m")
    ap.add_argument("--work", default="runs/bundled")
    ap.add_argument("--phase1-minutes", type=float, default=55)
    ap.add_argument("--phase2-minutes", type=float, default=35)
    ap.add_argument("--phase3-minutes", type=float, default=125)
    ap.add_argument("--phase3-epochs", type=int, default=55, help="length of the cosine decay")
    ap.add_argument("--phase4-minutes", type=float, default=60)
    ap.add_argument("--phase4-epochs", type=int, default=30, help="length of the cosine decay")
    ap.add_argument("--phase5-minutes", type=float, default=105)
    ap.add_argument("--phase5-epochs", type=int, default=40, help="length of the cosine decay")
    ap.add_argument("--phase5-lr", type=float, default=2e-4)
    ap.add_argument("--phase5-missing", type=float, default=0.4)
    ap.add_argument("--phase6-minutes", type=float, default=24)
    ap.add_argument("--phase7-minutes", type=float, default=24)
    ap.add_argument("--phase8-minutes", type=float, default=30)
    ap.add_argument("--with-companion", action="store_true",
                    help="also train phase 7, the FLAIR-only companion (2.1 ships without one)")
    ap.add_argument("--init-from-bundled", action="store_true",
                    help="phase 5 starts from the bundled 1.1 weights instead of --work/phase4.keras")
    ap.add_argument("--base-filters", type=int, default=16)
    ap.add_argument("--precision", default="mixed_bfloat16")
    ap.add_argument("--start-phase", type=int, choices=(1, 2, 3, 4, 5, 6, 7, 8), default=1,
                    help="start from this phase, using the earlier phases' models in --work")
    ap.add_argument("--resume", action="store_true", help="resume an interrupted phase 5 to 8")
    ap.add_argument("--export-only", action="store_true",
                    help="only export the last phase's model (e.g. after resuming it with the CLI)")
    ap.add_argument("--export", default="src/napari_lgg_seg/bundled")
    ap.add_argument("--export-from", default=None,
                    help="with --export-only: the main model to export (default: <work>/phase8.keras)")
    ap.add_argument("--flair-from", default=None,
                    help="with --export-only: the FLAIR-only companion to export (default: "
                    "<work>/phase7.keras if present; 'none' exports no companion)")
    ap.add_argument("--selection", default=None,
                    help="selection.json of scripts/evaluate_bundled.py select: its threshold and "
                    "post-processing go into model.json (default: <work>/eval/selection.json if present)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.export_only:  # no data needed
        export(Path(args.export_from) if args.export_from else work / "phase8.keras", args)
        return 0
    all_data = load_training_data(args.data)
    split11 = json.loads(SPLIT_11.read_text())
    data = all_data.subset([p for v in split11.values() for p in v])  # phases 1-4: 1.1's patients
    common = dict(
        base_filters=args.base_filters, val_patients=split11["val"], test_patients=split11["test"],
        seed=0, precision=args.precision, workers=2, augment=True,
    )
    phase1 = work / "phase1.keras"
    if args.start_phase <= 1 and not args.export_only:
        r1 = train(data, TrainConfig(
            out=str(phase1), epochs=200, batch_size=16, learning_rate=1e-3, init_from="scratch",
            crop_size=128, positive_fraction=0.6, samples_per_epoch=2048, patience=12,
            lr_patience=4, time_budget_min=args.phase1_minutes, log_csv=str(work / "phase1.csv"),
            missing_sequence=0.0, **common), verbose=2)
        print("phase 1:", r1.best_epoch, r1.best_val_patient_dice, r1.split, flush=True)
    phase2 = work / "phase2.keras"
    phase3 = work / "phase3.keras"
    phase4 = work / "phase4.keras"
    phase5 = work / "phase5.keras"
    if args.start_phase <= 2:
        r2 = train(data, TrainConfig(
            out=str(phase2), epochs=200, batch_size=8, learning_rate=3e-4, init_from=str(phase1),
            crop_size=None, positive_fraction=0.5, samples_per_epoch=640, patience=10, lr_patience=3,
            time_budget_min=args.phase2_minutes, log_csv=str(work / "phase2.csv"), missing_sequence=0.0,
            **common), verbose=2)
        print("phase 2:", r2.best_epoch, r2.best_val_patient_dice, flush=True)
    if args.start_phase <= 3:
        r3 = train(data, TrainConfig(
            out=str(phase3), epochs=args.phase3_epochs, batch_size=8, learning_rate=3e-4, min_lr=1e-5,
            lr_schedule="cosine", ema_momentum=0.995, init_from=str(phase2), crop_size=None,
            positive_fraction=0.4, samples_per_epoch=640, patience=args.phase3_epochs,
            time_budget_min=args.phase3_minutes, log_csv=str(work / "phase3.csv"), missing_sequence=0.0,
            **common), verbose=2)
        print("phase 3:", r3.best_epoch, r3.best_val_patient_dice, flush=True)
    if args.start_phase <= 4:
        r4 = train(data, TrainConfig(
            out=str(phase4), epochs=args.phase4_epochs, batch_size=8, learning_rate=1e-4, min_lr=1e-5,
            lr_schedule="cosine", ema_momentum=0.995, init_from=str(phase3), crop_size=None,
            positive_fraction=0.4, samples_per_epoch=640, patience=args.phase4_epochs, missing_sequence=0.3,
            time_budget_min=args.phase4_minutes, log_csv=str(work / "phase4.csv"), **common), verbose=2)
        print("phase 4:", r4.best_epoch, r4.best_val_patient_dice, flush=True)
    if args.start_phase <= 5 and args.init_from_bundled:
        if bundled_info()["version"].split(".")[:2] != ["1", "1"]:
            raise SystemExit("--init-from-bundled needs the bundled 1.1 model")
        save_model(load_model(), phase4)
    split20 = extend_split(split11, all_data.patient_ids(), val_fraction=0.15, test_fraction=0.25, seed=0)
    (work / "split-2.0.json").write_text(json.dumps(split20, indent=1))
    if args.start_phase <= 5:
        r5 = train(all_data, TrainConfig(
            out=str(phase5), epochs=args.phase5_epochs, batch_size=8, learning_rate=args.phase5_lr, min_lr=1e-5,
            lr_schedule="cosine", ema_momentum=0.995, init_from=str(phase4), crop_size=None,
            positive_fraction=0.4, samples_per_epoch=640, patience=args.phase5_epochs,
            missing_sequence=args.phase5_missing, time_budget_min=args.phase5_minutes,
            log_csv=str(work / "phase5.csv"), resume=args.resume,
            **dict(common, val_patients=split20["val"], test_patients=split20["test"])), verbose=2)
        print("phase 5:", r5.best_epoch, r5.best_val_patient_dice, flush=True)
    phase6, phase7, phase8 = work / "phase6.keras", work / "phase7.keras", work / "phase8.keras"
    late = dict(common, val_patients=split20["val"], test_patients=split20["test"])
    fine = dict(epochs=16, batch_size=8, learning_rate=1e-4, min_lr=1e-5, lr_schedule="cosine",
                ema_momentum=0.995, crop_size=None, positive_fraction=0.6, samples_per_epoch=640,
                patience=16, resume=args.resume)
    if args.start_phase <= 6:
        r6 = train(all_data, TrainConfig(
            out=str(phase6), init_from=str(phase5), missing_sequence=0.4,
            time_budget_min=args.phase6_minutes, log_csv=str(work / "phase6.csv"), **fine, **late), verbose=2)
        print("phase 6:", r6.best_epoch, r6.best_val_patient_dice, flush=True)
    if args.with_companion and args.start_phase <= 7:
        r7 = train(all_data, TrainConfig(
            out=str(phase7), init_from=str(phase6), flair_only=True, missing_sequence=0.0,
            time_budget_min=args.phase7_minutes, log_csv=str(work / "phase7.csv"), **fine, **late), verbose=2)
        print("phase 7 (FLAIR-only companion):", r7.best_epoch, r7.best_val_patient_dice, flush=True)
    r8 = train(all_data, TrainConfig(
        out=str(phase8), init_from=str(phase6), missing_sequence=0.4, small_lesion_power=0.5,
        time_budget_min=args.phase8_minutes, log_csv=str(work / "phase8.csv"), **fine, **late), verbose=2)
    print("phase 8:", r8.best_epoch, r8.best_val_patient_dice, flush=True)
    export(phase8, args)
    return 0


def _selection(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _trained(best: Path) -> tuple[dict, dict]:
    """The training state (best epoch, best validation Dice) and split of a model file."""
    state = json.loads(best.with_name(best.name + ".state.json").read_text())
    return state, json.loads(best.with_name(best.stem + ".split.json").read_text())


def export(best: Path, args: argparse.Namespace) -> None:
    """Write the main model (and the FLAIR-only companion, when there is one) into the
    package in the bundled format, with the settings their selections chose."""
    state, split = _trained(best)
    selection = _selection(Path(args.selection or Path(args.work) / "eval" / "selection.json"))
    model = load_model(best)
    context = model_context(model)
    info = {
        "name": "lgg-unet16",
        "version": time.strftime(VERSION),
        "base_filters": args.base_filters,
        "depth": 4,
        "input_shape": [256, 256, int(model.input_shape[-1])],
        "context_slices": context,
        "threshold": selection["chosen"]["threshold"] if selection else 0.5,
        "postprocessing": selection["chosen"]["postprocessing"] if selection else {"mode": "none"},
        "preprocessing": "channels (pre-contrast, FLAIR, post-contrast); each channel divided by "
        "the 99.5th percentile of its non-zero voxels over the volume and clipped to [0, 1]; grey "
        "replicated to 3 channels; bilinear resize to 256x256"
        + (f"; each slice with its {context} neighbour(s) on either side (first/last slice repeated at "
           "the ends), 3 channels per slice in slice order" if context else ""),
        "split": split,
        "val_patient_dice": state["best"],
        "best_epoch": state["best_epoch"],
        "selection": {"val": selection["val"], "baseline_val": selection["baseline_val"],
                      "ships": selection["ships"]} if selection else None,
        "recipe": RECIPE,
    }
    folder = Path(args.export)
    save_bundled(model, folder, info)
    print(json.dumps(info, indent=1))
    companion = Path(args.flair_from or Path(args.work) / "phase7.keras")
    if args.flair_from == "none" or not companion.exists():
        print("no FLAIR-only companion exported")
        return
    state, split7 = _trained(companion)
    if split7 != split:
        raise SystemExit(f"{companion}: trained on another split than {best}")
    chosen = _selection(Path(args.work) / "eval-flair" / "selection.json")
    if chosen is None or not chosen.get("ships"):
        print(f"{companion}: no passing selection in {Path(args.work) / 'eval-flair'}; no companion exported")
        return
    record = {
        "weights": "unet_lgg_flair.npz",
        "inputs": "FLAIR alone (all three channels FLAIR)",
        "threshold": chosen["chosen"]["threshold"],
        "postprocessing": chosen["chosen"]["postprocessing"],
        "val_patient_dice": state["best"],
        "best_epoch": state["best_epoch"],
        "selection": {"val": chosen["val"], "baseline_val": chosen["baseline_val"], "ships": chosen["ships"]},
        "recipe": RECIPE,
    }
    from napari_lgg_seg.core.model import save_bundled_flair

    save_bundled_flair(load_model(companion), folder, record)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    sys.exit(main())
