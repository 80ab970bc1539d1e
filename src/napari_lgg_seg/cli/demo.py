"""``napari-lgg-seg demo``: segment the sample patient (or a phantom) and write an overview PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

# the package itself: _load_engine is looked up on it at run time, so tests can replace it
from .. import cli
from ..core.errors import InputError
from ._common import (
    ProgressBar,
    _check_model_path,
    _info,
    _model_label,
    _note,
    _one_line,
    _resolve_model,
    _scores_line,
    _segment_options,
    _settings_line,
    _volume_lines,
    add_engine,
    add_inference,
    add_model,
    add_subcommand,
    add_verbose,
    add_voxel,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_subcommand(
        subparsers, "demo",
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
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.sample import SampleDownloadError, load_sample_patient, make_phantom

    _check_model_path(args.model)  # bad options: refused before the folder is created
    options = _segment_options(args)
    out_dir = Path(args.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from None
    from ..core.io import check_writable_folder

    check_writable_folder(out_dir, "--out-dir")
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
    model = _resolve_model(stack.image, cli._load_engine(args.model, args.engine), args)
    from ..core.inference import segment_volume

    bar = ProgressBar(f"segmenting {stack.patient_id}")
    try:
        pred = segment_volume(stack.image, model, batch_size=args.batch_size, progress=bar, engine=args.engine,
                              **options)
    finally:
        bar.close()
    from ..core.overview import write_overview_png

    png = write_overview_png(out_dir / f"{stack.patient_id}_overview.png", stack.image, stack.mask, pred)
    _info(f"{stack.patient_id}: {stack.n_slices} slice{'s' if stack.n_slices != 1 else ''} segmented with {_model_label(model)} "
          f"({_settings_line(model, options)})")
    if stack.mask is not None:
        _info(_scores_line(stack.mask, pred))
        _info("ground truth " + _volume_lines(stack.mask, args.voxel_size))
    _info("predicted " + _volume_lines(pred, args.voxel_size))
    _info(f"wrote {png}")
    return 0
