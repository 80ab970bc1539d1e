"""Command line: ``napari-lgg-seg segment | demo | train | evaluate``.

TensorFlow is imported only once a subcommand needs a model, so ``--help`` and argument
errors are fast. Errors the user can fix are printed as one line,
``napari-lgg-seg: error: <message>``, with exit status 1; command-line usage errors
exit with status 2 (argparse); Ctrl-C exits with 130. Outputs are written atomically,
so a failed or interrupted run leaves no partial file.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import sys
import time
from pathlib import Path

from .core.errors import Cancelled, InputError, LGGSegError, ModelError

PROG = "napari-lgg-seg"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_EPILOG = (
    "Exit status: 0 success, 1 error (bad input, model or output path), 2 bad command line, "
    "130 interrupted. The bundled model is used unless --model is given."
)


# --------------------------------------------------------------------------- helpers


class ProgressBar:
    """A minimal text progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, stream=None, width: int = 30, enabled: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.width = width
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.t0 = time.monotonic()
        self._drawn = False

    def __call__(self, done: int, total: int, *_extra) -> None:
        if not self.enabled or total <= 0:
            return None
        frac = min(1.0, done / total)
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.monotonic() - self.t0
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {elapsed:5.1f}s")
        self.stream.flush()
        self._drawn = True
        if done >= total:
            self.close()
        return None

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _one_line(msg: object) -> str:
    return re.sub(r"\s*\n\s*", " ", str(msg)).strip()


def _info(msg: str) -> None:
    print(msg, flush=True)


def _note(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _check_output(path: str | os.PathLike, suffixes: tuple[str, ...], what: str) -> Path:
    """Fail early (before any slow work) on an output path that cannot be written."""
    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        raise InputError(f"{p}: {what} must end with {' or '.join(suffixes)}")
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give a file name for the {what}")
    if not p.parent.is_dir():
        raise InputError(f"{p}: folder {p.parent} does not exist")
    if not os.access(p.parent, os.W_OK):
        raise InputError(f"{p}: folder {p.parent} is not writable")
    return p


def _check_model_path(path: str | None) -> None:
    if path is not None and not Path(path).is_file():
        raise ModelError(f"{path}: no such model file")


_VERBOSE = False  # set by --verbose: let TensorFlow's own messages through


@contextlib.contextmanager
def _quiet_tensorflow():
    """Hide TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) while it is imported
    and a model is built. TensorFlow 2.21 logs some of it through absl before
    TF_CPP_MIN_LOG_LEVEL is read, so the native stderr is pointed at /dev/null for that
    time, whatever that variable says. Python errors are unaffected. ``--verbose`` shows
    everything."""
    if _VERBOSE or "tensorflow" in sys.modules:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # no usable file descriptor 2: nothing to hide
        yield
        return
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _load_model(path: str | None):
    try:
        with _quiet_tensorflow():
            from .core.model import load_model

            return load_model(path)
    except ModelError as exc:
        if path is None:
            raise ModelError(f"{_one_line(exc)} Or pass a model file with --model PATH.") from None
        raise


def _model_label(model) -> str:
    from .core.model import model_name

    return model_name(model)


def _number(kind: type, ok, requirement: str):
    """An argparse ``type`` that parses ``kind`` and checks ``ok(value)``."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{requirement}, not {v}")
        return v

    return parse


_positive_int = _number(int, lambda v: v >= 1, "must be at least 1")
_non_negative_int = _number(int, lambda v: v >= 0, "must be 0 or more")
_probability = _number(float, lambda v: 0.0 < v < 1.0, "must be between 0 and 1 (exclusive)")
_fraction = _number(float, lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")
_share = _number(float, lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")
_positive_float = _number(float, lambda v: 0 < v < math.inf, "must be a finite number greater than 0")
# a voxel edge above 1 m is a mistake, and the bound keeps Z*Y*X (mm^3) finite
_voxel_mm = _number(float, lambda v: 0 < v <= 1000, "must be a voxel edge in mm, greater than 0 and at most 1000")


def _volume_lines(labels, voxel_size) -> str:
    from .core.metrics import abnormality_volume

    vol = abnormality_volume(labels, voxel_size)
    text = f"abnormality volume: {vol['voxels']} voxels in {vol['slices']} of {labels.shape[0]} slices"
    if vol["mm3"] is not None:
        text += f", {vol['mm3']:.1f} mm^3 ({vol['mm3'] / 1000:.2f} ml)"
    return text


def _scores_line(truth, pred) -> str:
    from .core.metrics import dice, iou

    return f"Dice vs ground truth: {dice(truth, pred):.3f} (IoU {iou(truth, pred):.3f})"


# --------------------------------------------------------------------------- segment


def cmd_segment(args: argparse.Namespace) -> int:
    from .core.io import check_not_patient_file, read_patient, write_labels_tiff
    from .core.resources import check_fits, segment_bytes

    out = _check_output(args.output, (".tif", ".tiff"), "output")
    check_not_patient_file(out)
    _check_model_path(args.model)
    src = Path(args.input)
    if src.is_file() and out.exists() and out.resolve() == src.resolve():
        raise InputError(f"{out}: the output would overwrite the input")
    stack = read_patient(src)
    from .core.preprocess import as_channels_last

    as_channels_last(stack.image)  # shape check before the (slow) model load
    check_fits(segment_bytes(stack.image.shape, stack.image.dtype.itemsize, args.batch_size),
               f"segmenting {src} with --batch-size {args.batch_size}", "lower --batch-size")
    model = _load_model(args.model)
    from .core.inference import segment_volume

    bar = ProgressBar(f"segmenting {stack.patient_id}")
    try:
        labels = segment_volume(
            stack.image, model, threshold=args.threshold, batch_size=args.batch_size,
            progress=bar, min_size=args.min_size,
        )
    finally:
        bar.close()
    if labels.ndim == 2:
        labels = labels[None]
    write_labels_tiff(out, labels)
    _info(f"{stack.patient_id}: {stack.n_slices} slices segmented with {_model_label(model)}")
    _info(_volume_lines(labels, args.voxel_size))
    if stack.mask is not None:
        _info(_scores_line(stack.mask.reshape(labels.shape), labels))
    _info(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from .core.sample import SampleDownloadError, load_sample_patient, make_phantom

    out_dir = Path(args.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from None
    from .core.io import check_writable_folder

    check_writable_folder(out_dir, "--out-dir")
    _check_model_path(args.model)
    if args.offline:
        _note("offline: using the synthetic phantom patient")
        stack = make_phantom()
    else:
        bar = ProgressBar("downloading the sample patient")
        try:
            stack = load_sample_patient(progress=bar)
        except SampleDownloadError as exc:
            bar.close()
            _note(f"{_one_line(exc)}")
            _note("using the synthetic phantom patient instead")
            stack = make_phantom()
        finally:
            bar.close()
    model = _load_model(args.model)
    from .core.inference import segment_volume

    bar = ProgressBar(f"segmenting {stack.patient_id}")
    try:
        pred = segment_volume(stack.image, model, threshold=args.threshold, batch_size=args.batch_size, progress=bar)
    finally:
        bar.close()
    from .core.overview import write_overview_png

    png = write_overview_png(out_dir / f"{stack.patient_id}_overview.png", stack.image, stack.mask, pred)
    _info(f"{stack.patient_id}: {stack.n_slices} slices segmented with {_model_label(model)}")
    if stack.mask is not None:
        _info(_scores_line(stack.mask, pred))
        _info("ground truth " + _volume_lines(stack.mask, args.voxel_size))
    _info("predicted " + _volume_lines(pred, args.voxel_size))
    _info(f"wrote {png}")
    return 0


# --------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    out = _check_output(args.out, (".keras",), "output model")
    root = Path(args.data_root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    if args.log_csv:
        _check_output(args.log_csv, (), "training log")
    from .core.train_config import TrainConfig

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
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        augment=not args.no_augment,
        crop_size=args.crop_size,
        samples_per_epoch=args.samples_per_epoch,
        positive_fraction=args.positive_fraction,
        missing_sequence=args.missing_sequence,
        patience=args.patience,
        time_budget_min=args.time_budget,
        precision=args.precision,
        resume=args.resume,
        strategy=args.strategy,
        log_csv=args.log_csv,
    ).validate()
    with _quiet_tensorflow():
        from .core.training import train

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
    if result.best_epoch is None and not out.exists():
        _note("stopped before the first epoch ended; no model was written")
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


# --------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .core.io import find_patient_folders

    report_path = _check_output(args.report, (".json",), "report") if args.report else None
    _check_model_path(args.model)
    find_patient_folders(args.data_root)  # fail fast before loading the model
    model = _load_model(args.model)
    from .core.evaluation import evaluate

    bar = ProgressBar("evaluating")
    try:
        report = evaluate(
            args.data_root, model, patients=args.patients, threshold=args.threshold,
            batch_size=args.batch_size, min_size=args.min_size, flair_only=args.flair_only, progress=bar,
        )
    finally:
        bar.close()
    _info(f"model: {report.model}, threshold {report.threshold}" + (", FLAIR channel only" if report.flair_only else ""))
    _info(report.format())
    if report_path is not None:
        report.to_json(report_path)
        _info(f"wrote {report_path}")
    return 0


# --------------------------------------------------------------------------- parser


class _Formatter(argparse.HelpFormatter):
    """Adds "(default: ...)" to options whose default is worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "%(default)" not in text
            and action.option_strings
            and action.default not in (None, False, argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Segment the FLAIR abnormality of lower-grade glioma in brain MRI (kaggle_3m "
            "patient folders or TIFF stacks) with a U-Net; train and evaluate models."
        ),
        epilog=_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add_model(p):
        p.add_argument("--model", metavar="PATH", default=None,
                       help="a .keras model file to use instead of the bundled U-Net")

    def add_inference(p):
        p.add_argument("--threshold", type=_probability, default=0.5, metavar="T",
                       help="probability above which a pixel is abnormal (0 < T < 1)")
        p.add_argument("--batch-size", type=_positive_int, default=8, metavar="B",
                       help="slices per model call (lower it to save memory)")

    def add_verbose(p):
        p.add_argument("--verbose", action="store_true",
                       help="also show TensorFlow's own start-up and device messages on stderr")

    def add_voxel(p):
        p.add_argument("--voxel-size", type=_voxel_mm, nargs=3, metavar=("Z", "Y", "X"), default=None,
                       help="voxel size in mm, to report the abnormality volume in mm^3")

    p = sub.add_parser(
        "segment", formatter_class=_Formatter, epilog=_EPILOG,
        help="segment one patient folder or TIFF stack",
        description=(
            "Segment INPUT and write the labels as a multi-page uint8 TIFF (Z, Y, X) with "
            "0 = normal and 1 = abnormality. Prints the abnormality volume and, when INPUT "
            "has masks (*_mask.tif), the Dice score against them."
        ),
    )
    p.add_argument("input", metavar="INPUT",
                   help="kaggle_3m patient folder (<ID>_<n>.tif slices) or a TIFF stack/slice")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT.tif",
                   help="labels TIFF to write (its folder must exist); replaced atomically")
    add_model(p)
    add_inference(p)
    p.add_argument("--min-size", type=_non_negative_int, default=0, metavar="N",
                   help="remove connected abnormality components smaller than N voxels (0 keeps all)")
    add_voxel(p)
    add_verbose(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser(
        "demo", formatter_class=_Formatter, epilog=_EPILOG,
        help="segment the sample patient and write an overview PNG",
        description=(
            "Download (once; verified by sha256 and cached) the sample patient "
            "TCGA_HT_7686_19950629, segment it, print Dice against its ground truth and "
            "the abnormality volume, and write <patient>_overview.png (rows: slices with "
            "abnormality; columns: FLAIR, ground truth, prediction). Without network, or "
            "with --offline, a synthetic phantom patient is used. Cache folder: "
            "$NAPARI_LGG_SEG_CACHE or $XDG_CACHE_HOME/napari-lgg-seg (~/.cache/napari-lgg-seg); "
            "download mirror: $NAPARI_LGG_SEG_SAMPLE_URL."
        ),
    )
    p.add_argument("--offline", action="store_true", help="do not download; use the synthetic phantom")
    add_model(p)
    p.add_argument("--out-dir", default=".", metavar="DIR", help="folder for the overview PNG (created if needed)")
    add_inference(p)
    add_voxel(p)
    add_verbose(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train", formatter_class=_Formatter, epilog=_EPILOG,
        help="train or fine-tune the U-Net on kaggle_3m patient folders",
        description=(
            "Train (or fine-tune) the U-Net on every patient folder under DATA_ROOT (each "
            "needs its masks). Patients are split into train/validation/test by patient; "
            "the best model (by validation per-patient Dice, or training loss without "
            "validation) is saved atomically to --out after each improving epoch, with "
            "<out>.last.keras and <out>.state.json for --resume. Loss, Dice and IoU are "
            "printed per epoch."
        ),
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
    p.add_argument("--val-fraction", type=_fraction, default=0.1,
                   help="fraction of patients for validation (stratified by institution)")
    p.add_argument("--test-fraction", type=_fraction, default=0.0,
                   help="fraction of patients held out as a test set, never used in training")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, shuffling and augmentation")
    p.add_argument("--crop-size", type=_positive_int, default=None, metavar="PX",
                   help="train on random PX x PX crops (faster) instead of whole 256x256 slices")
    p.add_argument("--samples-per-epoch", type=_positive_int, default=None, metavar="N",
                   help="slices/crops drawn per epoch (default: every training slice once)")
    p.add_argument("--positive-fraction", type=_share, default=0.5, metavar="F",
                   help="share of drawn samples that show abnormality")
    p.add_argument("--missing-sequence", type=_share, default=0.3, metavar="F",
                   help="share of training slices whose pre- and/or post-contrast channel is replaced "
                   "by FLAIR, so the model also works when sequences are missing")
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
    p.add_argument("--log-csv", default=None, metavar="PATH", help="append per-epoch metrics to this CSV file")
    add_verbose(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", formatter_class=_Formatter, epilog=_EPILOG,
        help="score a model on kaggle_3m patient folders (per-patient Dice/IoU)",
        description=(
            "Segment every patient folder under DATA_ROOT (or only --patients) and print "
            "per-patient Dice and IoU, their mean/median/min, pooled Dice and slice-level "
            "detection figures. --report writes the same as JSON (atomically)."
        ),
    )
    p.add_argument("data_root", metavar="DATA_ROOT", help="folder holding kaggle_3m patient folders with masks")
    add_model(p)
    p.add_argument("--patients", nargs="+", metavar="ID", default=None, help="evaluate only these patient ids")
    p.add_argument("--report", metavar="out.json", default=None, help="write the report as JSON")
    add_inference(p)
    p.add_argument("--min-size", type=_non_negative_int, default=0, metavar="N",
                   help="remove connected abnormality components smaller than N voxels (0 keeps all)")
    p.add_argument("--flair-only", action="store_true",
                   help="segment the FLAIR channel alone, as if pre- and post-contrast were missing")
    add_verbose(p)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (``--help`` raises SystemExit(0))."""
    global _VERBOSE
    parser = build_parser()
    args = parser.parse_args(argv)
    _VERBOSE = bool(getattr(args, "verbose", False))
    # tifffile logs a warning for damaged files before raising; the one-line error says it all
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"{PROG}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except LGGSegError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print(f"{PROG}: error: out of memory; try a smaller --batch-size", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: error: {where}{_one_line(exc.strerror or exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
