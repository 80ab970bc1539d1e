"""What the subcommands share: exit statuses, progress bar, one-line messages, argparse
number types, the options several subcommands take, TensorFlow silencing and model loading."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
import time
from pathlib import Path

from ..core.errors import InputError, ModelError

PROG = "napari-lgg-seg"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it

_EXIT_STATUSES = (
    "Exit status: 0 success, 1 error (bad input, model or output path), 2 bad command line, "
    "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."
)
_EPILOG = _EXIT_STATUSES + " The bundled model is used unless --model is given."


# --------------------------------------------------------------------------- output


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


def _volume_lines(labels, voxel_size) -> str:
    from ..core.metrics import abnormality_volume, format_volume

    vol = abnormality_volume(labels, voxel_size)
    return "abnormality volume: " + format_volume(vol, int(labels.shape[0]), ascii=True)


def _scores_line(truth, pred) -> str:
    from ..core.metrics import dice, iou

    return f"Dice vs ground truth: {dice(truth, pred):.3f} (IoU {iou(truth, pred):.3f})"


# --------------------------------------------------------------------------- checks


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


# --------------------------------------------------------------------------- model


_VERBOSE = False  # set by --verbose (in main): let TensorFlow's own messages through


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
    from ..core.inference import resolve_engine

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
            from ..core.model import load_model

            return load_model(path)
    except ModelError as exc:
        if path is None:
            raise ModelError(f"{_one_line(exc)} Or pass a model file with --model PATH.") from None
        raise


def _resolve_model(volume, model, args: argparse.Namespace):
    """The model that segments ``volume``: ``model``, or the bundled FLAIR-only companion
    for FLAIR-only input (see ``core.inference.resolve_model``)."""
    from ..core.inference import resolve_model

    return resolve_model(volume, model, args.engine, getattr(args, "flair_model", True))


def _model_label(model) -> str:
    from ..core.inference import model_label

    return model_label(model)


def _segment_options(args: argparse.Namespace) -> dict:
    """segment_volume's threshold / post-processing arguments from the inference flags."""
    from ..core.postprocess import PostProcessing

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


# --------------------------------------------------------------------------- argparse


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


class _Formatter(argparse.HelpFormatter):
    """Adds "(default: ...)" to options whose default is worth showing (not to on/off
    flags such as --no-flair-model, whose default is their absence)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "%(default)" not in text
            and action.option_strings
            and action.nargs != 0
            and action.default is not None and action.default is not False  # 0 is a default
            and action.default != argparse.SUPPRESS
        ):
            text += " (default: %(default)s)"
        return text


def add_subcommand(subparsers, name: str, help: str, description: str,
                   epilog: str = _EPILOG) -> argparse.ArgumentParser:
    """A subcommand's parser, formatted and signed off like the main one."""
    return subparsers.add_parser(name, formatter_class=_Formatter, epilog=epilog, help=help,
                                 description=description)


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", default=None,
                   help="a .keras model file to use instead of the bundled U-Net")


def add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("auto", "int8", "keras"), default="auto",
                   help="int8: the bundled model's int8 ONNX engine (fast, no TensorFlow); keras: "
                        "float32 Keras; auto: int8 for the bundled model when available, else Keras")


def add_inference(p: argparse.ArgumentParser) -> None:
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


def add_flair_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-flair-model", dest="flair_model", action="store_false",
                   help="use the main model even for FLAIR-only input (by default FLAIR-only input, grey or "
                   "with pre- and post-contrast copies of FLAIR, goes to the bundled model's FLAIR-only "
                   "companion when it has one)")


def add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="also show TensorFlow's own start-up and device messages on stderr")


def add_voxel(p: argparse.ArgumentParser, stored: bool = False) -> None:
    use = "to report the abnormality volume in mm^3" + (" and store it in the TIFF or NIfTI output"
                                                         if stored else "")
    p.add_argument("--voxel-size", type=_voxel_mm, nargs=3, metavar=("Z", "Y", "X"), default=None,
                   help=f"voxel size in mm, {use} (for input that does not carry its own, as NIfTI, "
                   "DICOM and ImageJ TIFF do)")


def _settings_line(model, options: dict) -> str:
    """What a run uses: the threshold and post-processing (the model's own unless told)."""
    from ..core.inference import resolve_postprocessing
    from ..core.postprocess import describe_settings

    return describe_settings(*resolve_postprocessing(
        model, options.get("threshold"), options.get("postprocess"), options.get("min_size")))
