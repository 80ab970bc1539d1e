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
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from napari_lgg_seg.core.model import load_model, save_bundled
from napari_lgg_seg.core.training import TrainConfig, load_training_data, train


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
    ap.add_argument("--base-filters", type=int, default=16)
    ap.add_argument("--precision", default="mixed_bfloat16")
    ap.add_argument("--start-phase", type=int, choices=(1, 2, 3, 4), default=1,
                    help="start from this phase, using the earlier phases' models in --work")
    ap.add_argument("--export-only", action="store_true",
                    help="only export the last phase's model (e.g. after resuming it with the CLI)")
    ap.add_argument("--export", default="src/napari_lgg_seg/bundled")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = load_training_data(args.data)
    common = dict(
        base_filters=args.base_filters, val_fraction=0.1, test_fraction=0.2, seed=0,
        precision=args.precision, workers=2, augment=True,
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
    if args.export_only:
        export(phase4, args)
        return 0
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
    r4 = train(data, TrainConfig(
        out=str(phase4), epochs=args.phase4_epochs, batch_size=8, learning_rate=1e-4, min_lr=1e-5,
        lr_schedule="cosine", ema_momentum=0.995, init_from=str(phase3), crop_size=None,
        positive_fraction=0.4, samples_per_epoch=640, patience=args.phase4_epochs, missing_sequence=0.3,
        time_budget_min=args.phase4_minutes, log_csv=str(work / "phase4.csv"), **common), verbose=2)
    print("phase 4:", r4.best_epoch, r4.best_val_patient_dice, flush=True)
    export(phase4, args)
    return 0


def export(best: Path, args: argparse.Namespace) -> None:
    """Write the last phase's best model into the package in the bundled format."""
    state = json.loads(best.with_name(best.name + ".state.json").read_text())
    split = json.loads(best.with_name(best.stem + ".split.json").read_text())
    model = load_model(best)
    info = {
        "name": "lgg-unet16",
        "version": time.strftime("1.1.%Y%m%d"),  # 1.1: trained with simulated missing sequences
        "base_filters": args.base_filters,
        "depth": 4,
        "input_shape": [256, 256, 3],
        "threshold": 0.5,
        "preprocessing": "channels (pre-contrast, FLAIR, post-contrast); each channel divided by "
        "the 99.5th percentile of its non-zero voxels over the volume and clipped to [0, 1]; grey "
        "replicated to 3 channels; bilinear resize to 256x256",
        "split": split,
        "val_patient_dice": state["best"],
        "best_epoch": state["best_epoch"],
        "recipe": "python scripts/train_bundled.py " + " ".join(sys.argv[1:]),
    }
    save_bundled(model, Path(args.export), info)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    sys.exit(main())
