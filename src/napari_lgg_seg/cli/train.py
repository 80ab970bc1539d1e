"""``napari-lgg-seg train``: train or fine-tune the U-Net on kaggle_3m patient folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import InputError, ModelError
from ._common import (
    _EXIT_STATUSES,
    EXIT_ERROR,
    _check_output,
    _fraction,
    _info,
    _non_negative_int,
    _note,
    _one_line,
    _positive_float,
    _positive_int,
    _probability,
    _quiet_tensorflow,
    _share,
    add_subcommand,
    add_verbose,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_subcommand(
        subparsers, "train",
        help="train or fine-tune the U-Net on kaggle_3m patient folders",
        description=(
            "Train (or fine-tune) the U-Net on every patient folder under DATA_ROOT (each "
            "needs its masks). Patients are split into train/validation/test by patient; "
            "the best model (by validation per-patient Dice, or training loss without "
            "validation) is saved atomically to --out after each improving epoch, with "
            "<out>.last.keras and <out>.state.json for --resume. Loss, Dice and IoU are "
            "printed per epoch."
        ),
        epilog=_EXIT_STATUSES + " Training starts from the bundled model unless --init-from says otherwise.",
    )
    p.add_argument("data_root", metavar="DATA_ROOT", help="folder holding kaggle_3m patient folders")
    p.add_argument("--out", required=True, metavar="MODEL.keras", help="where to save the best model (.keras)")
    p.add_argument("--epochs", type=int, default=50, help="number of epochs (at least 1)")
    p.add_argument("--batch-size", type=int, default=16, help="slices (or crops) per training step")
    p.add_argument("--base-filters", type=_positive_int, default=16,
                   help="filters of the first U-Net level (doubles at each level)")
    p.add_argument("--learning-rate", type=_positive_float, default=1e-3, help="initial Adam learning rate")
    p.add_argument("--lr-schedule", choices=["plateau", "cosine"], default="plateau",
                   help="halve the learning rate when validation stalls, or decay it along a cosine "
                   "to --min-lr over --epochs")
    p.add_argument("--min-lr", type=_positive_float, default=1e-5, help="lowest learning rate of either schedule")
    p.add_argument("--ema", type=_probability, default=None, metavar="MOMENTUM",
                   help="validate and save an exponential moving average of the weights (e.g. 0.995)")
    p.add_argument("--init-from", default="bundled", metavar="bundled|scratch|PATH",
                   help="start from the bundled model, from random weights, or from a .keras file")
    p.add_argument("--val-patients", nargs="+", metavar="ID", default=None,
                   help="patient ids to validate on (instead of a random --val-fraction)")
    p.add_argument("--test-patients", nargs="+", metavar="ID", default=None,
                   help="hold out exactly these patients as the test set (never used); "
                   "default: --test-fraction of the others")
    p.add_argument("--val-fraction", type=_fraction, default=0.1,
                   help="fraction of patients for validation (stratified by institution)")
    p.add_argument("--test-fraction", type=_fraction, default=0.0,
                   help="fraction of patients held out as a test set, never used in training")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the split, shuffling and augmentation")
    p.add_argument("--crop-size", type=_positive_int, default=None, metavar="PX",
                   help="train on random PX x PX crops (faster) instead of whole 256x256 slices")
    p.add_argument("--samples-per-epoch", type=_positive_int, default=None, metavar="N",
                   help="slices/crops drawn per epoch (default: every training slice once)")
    p.add_argument("--positive-fraction", type=_share, default=0.5, metavar="F",
                   help="share of drawn samples that show abnormality")
    p.add_argument("--missing-sequence", type=_share, default=0.3, metavar="F",
                   help="share of training slices whose pre- and/or post-contrast channel is replaced "
                   "by FLAIR, so the model also works when sequences are missing")
    p.add_argument("--small-lesion-power", type=float, default=0.0, metavar="P",
                   help="draw slices with abnormality with weight (abnormal pixels)^-P, so that small "
                   "abnormalities are seen more often (0: uniformly; 0.5 is a moderate boost)")
    p.add_argument("--context-slices", type=int, default=0, metavar="K",
                   help="2.5D input: give the network each slice with its K neighbours on either side "
                   "(0: as the model training starts from; single slices from scratch). A model "
                   "without context (e.g. the bundled one) is widened so that it starts out as it was")
    p.add_argument("--flair-only", action="store_true",
                   help="train and validate on FLAIR alone (all three channels FLAIR): a model for "
                   "stacks without pre- and post-contrast")
    p.add_argument("--patience", type=_positive_int, default=10,
                   help="stop after this many epochs without improvement")
    p.add_argument("--no-augment", action="store_true", help="disable data augmentation")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from <out>.last.keras and <out>.state.json")
    p.add_argument("--strategy", choices=["mirrored", "multiworker"], default=None,
                   help="tf.distribute strategy for several GPUs or workers (default: none)")
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"], default="float32",
                   help="compute precision; the saved model is always float32")
    p.add_argument("--time-budget", type=_positive_float, default=None, metavar="MINUTES",
                   help="stop after the epoch during which this many minutes have passed")
    p.add_argument("--log-csv", default=None, metavar="PATH", help="append per-epoch metrics to this .csv file")
    add_verbose(p)
    return p


def run(args: argparse.Namespace) -> int:
    out = _check_output(args.out, (".keras",), "output model")
    root = Path(args.data_root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    if args.log_csv:
        _check_output(args.log_csv, (".csv",), "training log")
    from ..core.train_config import TrainConfig

    cfg = TrainConfig(
        out=str(out),
        epochs=args.epochs,
        batch_size=args.batch_size,
        base_filters=args.base_filters,
        learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule,
        min_lr=args.min_lr,
        ema_momentum=args.ema,
        init_from=args.init_from,
        val_patients=args.val_patients,
        test_patients=args.test_patients,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        augment=not args.no_augment,
        crop_size=args.crop_size,
        samples_per_epoch=args.samples_per_epoch,
        positive_fraction=args.positive_fraction,
        missing_sequence=args.missing_sequence,
        flair_only=args.flair_only,
        small_lesion_power=args.small_lesion_power,
        context_slices=args.context_slices,
        patience=args.patience,
        time_budget_min=args.time_budget,
        precision=args.precision,
        resume=args.resume,
        strategy=args.strategy,
        log_csv=args.log_csv,
    ).validate()
    with _quiet_tensorflow():
        from ..core.training import train

    try:
        result = train(root, cfg, verbose=2)
    except ModelError as exc:
        if args.init_from == "bundled":
            raise ModelError(f"{_one_line(exc)} To train without it use --init-from scratch.") from None
        raise
    except KeyboardInterrupt:
        if out.exists():
            _note(f"interrupted; the best model so far is in {out} (continue with --resume)")
        raise
    split = result.split
    _info(
        f"patients: {len(split.get('train', []))} train, {len(split.get('val', []))} validation, "
        f"{len(split.get('test', []))} test (held out)"
    )
    if result.best_epoch is None and (not out.exists() or not args.resume):
        _note("stopped before the first epoch ended; "
              + (f"{out} is unchanged" if out.exists() else "no model was written"))
        return EXIT_ERROR
    best = (
        f"best validation per-patient Dice {result.best_val_patient_dice:.3f} at epoch {result.best_epoch + 1}"
        if result.best_val_patient_dice is not None and result.best_epoch is not None
        else f"best training loss at epoch {result.best_epoch + 1}" if result.best_epoch is not None
        else "no improvement in this run"
    )
    _info(f"{result.epochs_run} epoch(s) run; {best}" + ("; stopped early" if result.stopped_early else ""))
    _info(f"wrote {out}")
    return 0
