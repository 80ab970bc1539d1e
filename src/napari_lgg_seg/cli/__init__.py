"""Command line: ``napari-lgg-seg segment | demo | train | evaluate``.

TensorFlow is imported only once a subcommand needs a model, so ``--help`` and argument
errors are fast. Errors the user can fix are printed as one line,
``napari-lgg-seg: error: <message>``, with exit status 1; command-line usage errors
exit with status 2 (argparse); Ctrl-C exits with 130 and SIGTERM (``kill``, a cluster
scheduler's time limit) with 143, both after cleaning up. Outputs are written atomically,
so a failed or interrupted run leaves no partial file.

One module per subcommand (``segment``, ``demo``, ``train``, ``evaluate``), each with its
``add_parser(subparsers)`` and ``run(args)``; what they share is in ``_common``. The
subcommands look ``_load_engine`` up on this package when they run, so replacing
``napari_lgg_seg.cli._load_engine`` (as the tests do) replaces the model they get.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading

from ..core.errors import Cancelled, LGGSegError
from . import _common, demo, evaluate, segment, train
from ._common import (
    _EPILOG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    PROG,
    ProgressBar,
    _Formatter,
    _one_line,
)

__all__ = [
    "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_TERMINATED", "EXIT_USAGE", "PROG", "ProgressBar", "build_parser", "main",
]

# The subcommands load their model through cli._load_engine, so replacing it here (as the tests
# do) replaces the model they get.
_load_engine = _common._load_engine
_load_model = _common._load_model


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Segment the FLAIR abnormality of lower-grade glioma in brain MRI (kaggle_3m "
            "patient folders, TIFF stacks, NIfTI files or DICOM series) with a U-Net; train and "
            "evaluate models."
        ),
        epilog=_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (segment, demo, train, evaluate):
        command.add_parser(sub).set_defaults(func=command.run)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds (temporary files of atomic
    writes removed, a batch summary kept current) as after Ctrl-C."""


def _raise_terminated(signum, frame):
    raise _Terminated()


@contextlib.contextmanager
def _terminate_as_interrupt():
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (``--help`` raises SystemExit(0))."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _common._VERBOSE = bool(getattr(args, "verbose", False))
    # tifffile logs a warning for damaged files before raising; the one-line error says it all
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    try:
        with _terminate_as_interrupt():
            return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"{PROG}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
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
