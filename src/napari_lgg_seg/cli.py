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


def _load_engine(path: str | None, engine: str):
    """What runs --model with --engine; the bundled int8 engine loads without TensorFlow."""
    from .core.inference import resolve_engine

    if path is None and engine != "keras":
        try:
            return resolve_engine(None, "int8")
        except ModelError:
            if engine == "int8":
                raise
    return resolve_engine(_load_model(path), engine)


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
    from .core.inference import model_label

    return model_label(model)


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
    from .core.metrics import abnormality_volume, format_volume

    vol = abnormality_volume(labels, voxel_size)
    return "abnormality volume: " + format_volume(vol, int(labels.shape[0]), ascii=True)


def _scores_line(truth, pred) -> str:
    from .core.metrics import dice, iou

    return f"Dice vs ground truth: {dice(truth, pred):.3f} (IoU {iou(truth, pred):.3f})"


# --------------------------------------------------------------------------- segment


def _segment_options(args: argparse.Namespace) -> dict:
    """segment_volume's threshold / post-processing arguments from the inference flags."""
    from .core.postprocess import PostProcessing

    if args.postprocess in ("peak", "mean") and args.min_probability is None:
        raise InputError(f"--postprocess {args.postprocess} needs --min-probability P")
    if args.min_probability is not None and args.postprocess not in ("peak", "mean"):
        raise InputError("--min-probability only applies to --postprocess peak or mean")
    if args.postprocess == "model":
        post = None
    elif args.postprocess == "none":
        post = "none"
    else:
        post = PostProcessing(args.postprocess, args.min_size or 0, args.min_probability or 0.0)
        if args.postprocess == "min_size" and not args.min_size:
            raise InputError("--postprocess min_size needs --min-size N (N > 0)")
    return {"threshold": args.threshold, "postprocess": post,
            "min_size": args.min_size if args.postprocess in ("model", "none") else None}


def _read_flair(args: argparse.Namespace):
    """The single input, with --pre-contrast/--post-contrast stacked into its channels."""
    from .core.io import read_patient

    stack = read_patient(args.input[0])
    if args.pre_contrast is None and args.post_contrast is None:
        return stack
    from .core.sequences import stack_sequences

    pre = read_patient(args.pre_contrast) if args.pre_contrast else None
    post = read_patient(args.post_contrast) if args.post_contrast else None
    return stack_sequences(stack, pre, post)


def cmd_segment(args: argparse.Namespace) -> int:
    from .core.batch import format_for_path

    _check_model_path(args.model)
    _segment_options(args)  # contradictory post-processing flags: refused before any work
    if args.shard is not None:
        from .core.batch import parse_shard

        args.shard = parse_shard(args.shard)
    if args.voxel_size is not None:
        from .core.geometry import check_voxel_size

        args.voxel_size = check_voxel_size(args.voxel_size)  # finite and positive, before any work
    to_file = format_for_path(args.output) is not None
    out = Path(args.output)
    if not to_file and out.suffix and not out.is_dir():
        raise InputError(f"{out}: cannot write labels as '{out.suffix}'; use .tif, .tiff, .nii, .nii.gz "
                         "or a folder name without extension")
    if to_file and (len(args.input) > 1 or args.shard or args.format):
        raise InputError(f"{args.output}: with several inputs, --shard or --format, -o must be a folder")
    if (args.pre_contrast or args.post_contrast) and (len(args.input) > 1 or not to_file):
        raise InputError("--pre-contrast/--post-contrast go with one FLAIR input and an output file (-o OUT.tif|.nii.gz)")
    if to_file:
        return _segment_one(args)
    return _segment_many(args)


def _segment_one(args: argparse.Namespace) -> int:
    from .core.batch import segment_stack, write_labels

    out = _check_output(args.output, (), "output")  # the extension was checked by format_for_path
    for src in [args.input[0], args.pre_contrast, args.post_contrast]:
        if src and Path(src).is_file() and out.exists() and out.resolve() == Path(src).resolve():
            raise InputError(f"{out}: the output would overwrite the input")
    from .core.io import check_not_patient_file

    check_not_patient_file(out)
    stack = _read_flair(args)
    from .core.preprocess import as_channels_last

    as_channels_last(stack.image)  # shape check before the (slow) model load
    from .core.resources import check_fits, segment_bytes

    check_fits(segment_bytes(stack.image.shape, stack.image.dtype.itemsize, args.batch_size),
               f"segmenting {args.input[0]} with --batch-size {args.batch_size}", "lower --batch-size")
    model = _load_engine(args.model, args.engine)
    bar = ProgressBar(f"segmenting {stack.patient_id}")
    try:
        labels = segment_stack(stack, model, batch_size=args.batch_size, progress=bar, engine=args.engine,
                               **_segment_options(args))
    finally:
        bar.close()
    voxel = stack.voxel_size or args.voxel_size
    if str(out).lower().endswith((".nii", ".nii.gz")) and stack.geometry is None and voxel is None:
        _note(f"{out.name}: the input has no voxel size; the NIfTI gets 1 mm voxels (give --voxel-size)")
    write_labels(out, labels, stack, args.voxel_size)
    _info(f"{stack.patient_id}: {stack.n_slices} slices segmented with {_model_label(model)}")
    _info(_volume_lines(labels, voxel))
    if stack.mask is not None:
        _info(_scores_line(stack.mask.reshape(labels.shape), labels))
    _info(f"wrote {out}")
    return 0


def _segment_many(args: argparse.Namespace) -> int:
    from .core.batch import patient_inputs, segment_many, summary_name, take_shard

    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder; -o takes a folder for several patients")
    if not out_dir.parent.is_dir():
        raise InputError(f"{out_dir}: folder {out_dir.parent} does not exist")
    patients = take_shard(patient_inputs(args.input), args.shard)  # input errors before the model load
    if not patients:
        _info(f"shard {args.shard[0]}/{args.shard[1]} has no patients")
    model = _load_engine(args.model, args.engine) if patients else None
    bar = ProgressBar("segmenting")

    def report(row) -> None:
        bar.close()
        if row.status == "failed":
            _note(f"{row.patient}: failed: {_one_line(row.error)}")
        elif row.status == "skipped":
            _info(f"{row.patient}: skipped ({row.output} exists; --overwrite to redo)")
        else:
            text = f"{row.patient}: {row.slices} slices, {row.abnormality_voxels} abnormality voxels"
            if row.abnormality_mm3 is not None:
                text += f" ({row.abnormality_mm3:.1f} mm^3)"
            if row.dice is not None:
                text += f", Dice {row.dice:.3f}"
            _info(text + f" -> {row.output}")

    try:
        results = segment_many(
            args.input, out_dir, model=model, format=args.format or "tif", overwrite=args.overwrite,
            shard=args.shard, voxel_size=args.voxel_size, progress=bar, on_result=report,
            batch_size=args.batch_size, engine=args.engine, **_segment_options(args),
        )
    finally:
        bar.close()
    failed = [r for r in results if r.status == "failed"]
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    _info(f"{done} segmented, {skipped} skipped, {len(failed)} failed; summary: "
          f"{out_dir / summary_name(args.shard)}")
    return EXIT_ERROR if failed else 0


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
    options = _segment_options(args)
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
    model = _load_engine(args.model, args.engine)
    from .core.inference import segment_volume

    bar = ProgressBar(f"segmenting {stack.patient_id}")
    try:
        pred = segment_volume(stack.image, model, batch_size=args.batch_size, progress=bar, engine=args.engine,
                              **options)
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
    options = _segment_options(args)
    find_patient_folders(args.data_root)  # fail fast before loading the model
    model = _load_engine(args.model, args.engine)
    from .core.evaluation import evaluate

    bar = ProgressBar("evaluating")
    try:
        report = evaluate(
            args.data_root, model, patients=args.patients, batch_size=args.batch_size,
            flair_only=args.flair_only, progress=bar, engine=args.engine, **options,
        )
    finally:
        bar.close()
    _info(f"model: {report.model}, threshold {report.threshold}, post-processing: {report.postprocessing}" + (", FLAIR channel only" if report.flair_only else ""))
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

    def add_engine(p):
        p.add_argument("--engine", choices=("auto", "int8", "keras"), default="auto",
                       help="int8: the bundled model's int8 ONNX engine (fast, no TensorFlow); keras: "
                            "float32 Keras; auto: int8 for the bundled model when available, else Keras")

    def add_inference(p):
        p.add_argument("--threshold", type=_probability, default=None, metavar="T",
                       help="probability above which a pixel is abnormal (0 < T < 1; default: the "
                       "model's own, 0.5 for a .keras file)")
        p.add_argument("--batch-size", type=_positive_int, default=8, metavar="B",
                       help="slices per model call (lower it to save memory)")
        p.add_argument("--postprocess", choices=["model", "none", "min_size", "largest", "peak", "mean"],
                       default="model",
                       help="3D components to keep: the model's own choice (bundled model: see its card; "
                       "a .keras file: none), none, those of --min-size voxels or more, the largest, or "
                       "those whose peak/mean probability is at least --min-probability")
        p.add_argument("--min-size", type=_non_negative_int, default=None, metavar="N",
                       help="drop connected components smaller than N voxels (0: keep all sizes; "
                       "default: the post-processing's own)")
        p.add_argument("--min-probability", type=_share, default=None, metavar="P",
                       help="for --postprocess peak/mean: the lowest peak/mean probability kept")

    def add_verbose(p):
        p.add_argument("--verbose", action="store_true",
                       help="also show TensorFlow's own start-up and device messages on stderr")

    def add_voxel(p):
        p.add_argument("--voxel-size", type=_voxel_mm, nargs=3, metavar=("Z", "Y", "X"), default=None,
                       help="voxel size in mm, to report the abnormality volume in mm^3")

    p = sub.add_parser(
        "segment", formatter_class=_Formatter, epilog=_EPILOG,
        help="segment patients (kaggle_3m folders, TIFF, NIfTI, DICOM series)",
        description=(
            "Segment INPUT and write the labels (uint8, 0 = normal, 1 = abnormality). With one "
            "INPUT and -o OUTPUT.tif|.nii|.nii.gz one file is written (NIfTI: on the input's own "
            "voxel grid with its affine; TIFF: ImageJ voxel size). With several INPUTs, a folder "
            "of patients or -o a folder, each patient gets OUT_DIR/<patient>.<format>, the model "
            "loads once, existing outputs are skipped (resume) unless --overwrite, a failing "
            "patient is reported and the rest go on (exit 1 at the end), and OUT_DIR/summary.csv "
            "lists every patient. Prints the abnormality volume (mm^3 when the voxel size is "
            "known) and, when INPUT has masks (*_mask.tif), the Dice score against them."
        ),
    )
    p.add_argument("input", metavar="INPUT", nargs="+",
                   help="kaggle_3m patient folder, TIFF stack/slice, NIfTI file, DICOM series folder, "
                   "or a folder of such patients")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="labels file (.tif, .nii, .nii.gz; replaced atomically) or a folder for several patients")
    p.add_argument("--format", choices=["tif", "nii.gz", "nii", "kaggle-masks"], default=None,
                   help="output format in a folder (default: tif)")
    p.add_argument("--overwrite", action="store_true", help="redo patients whose output exists in the folder")
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="segment only shard I of N of the patients (e.g. a SLURM array task); "
                   "writes summary-shard-I-of-N.csv")
    p.add_argument("--pre-contrast", metavar="PATH", default=None,
                   help="pre-contrast T1 on the FLAIR's grid (missing: FLAIR is used in its place)")
    p.add_argument("--post-contrast", metavar="PATH", default=None,
                   help="post-contrast T1 on the FLAIR's grid (missing: FLAIR is used in its place)")
    add_model(p)
    add_engine(p)
    add_inference(p)
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
    add_engine(p)
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
    add_engine(p)
    p.add_argument("--patients", nargs="+", metavar="ID", default=None, help="evaluate only these patient ids")
    p.add_argument("--report", metavar="out.json", default=None, help="write the report as JSON")
    add_inference(p)
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
