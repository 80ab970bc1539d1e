"""``napari-lgg-seg evaluate``: per-patient Dice/IoU of a model on kaggle_3m patient folders."""

from __future__ import annotations

import argparse

# the package itself: _load_engine is looked up on it at run time, so tests can replace it
from .. import cli
from ._common import (
    ProgressBar,
    _check_model_path,
    _check_output,
    _info,
    _note,
    _segment_options,
    add_engine,
    add_flair_model,
    add_inference,
    add_model,
    add_subcommand,
    add_verbose,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_subcommand(
        subparsers, "evaluate",
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
    add_flair_model(p)
    p.add_argument("--patients", nargs="+", metavar="ID", default=None, help="evaluate only these patient ids")
    p.add_argument("--report", metavar="out.json", default=None, help="write the report as JSON")
    add_inference(p)
    p.add_argument("--flair-only", action="store_true",
                   help="segment the FLAIR channel alone, as if pre- and post-contrast were missing")
    add_verbose(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.evaluation import patient_folders

    report_path = _check_output(args.report, (".json",), "report") if args.report else None
    _check_model_path(args.model)
    options = _segment_options(args)
    patient_folders(args.data_root, args.patients)  # fail fast before loading the model
    model = cli._load_engine(args.model, args.engine)
    from ..core.evaluation import evaluate

    bar = ProgressBar("evaluating")
    try:
        report = evaluate(
            args.data_root, model, patients=args.patients, batch_size=args.batch_size,
            flair_only=args.flair_only, progress=bar, engine=args.engine,
            flair_model=args.flair_model, **options,
        )
    finally:
        bar.close()
    _info(f"model: {report.model}, threshold {report.threshold}, post-processing: {report.postprocessing}" + (", FLAIR channel only" if report.flair_only else ""))
    _info(report.format())
    for note in report.notes:
        _note(note)
    if report_path is not None:
        report.to_json(report_path)
        _info(f"wrote {report_path}")
    return 0
