"""``napari-lgg-seg segment``: one patient to a labels file, or many to a folder."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

# the package itself: _load_engine is looked up on it at run time, so tests can replace it
from .. import cli
from ..core.errors import InputError
from ._common import (
    EXIT_ERROR,
    ProgressBar,
    _check_model_path,
    _check_output,
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
    add_flair_model,
    add_inference,
    add_model,
    add_subcommand,
    add_verbose,
    add_voxel,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_subcommand(
        subparsers, "segment",
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
    add_flair_model(p)
    add_inference(p)
    add_voxel(p, stored=True)
    add_verbose(p)
    return p


def _read_flair(args: argparse.Namespace):
    """The single input, with --pre-contrast/--post-contrast stacked into its channels."""
    from ..core.io import read_patient

    stack = read_patient(args.input[0])
    if args.pre_contrast is None and args.post_contrast is None:
        return stack
    from ..core.sequences import stack_sequences

    pre = read_patient(args.pre_contrast) if args.pre_contrast else None
    post = read_patient(args.post_contrast) if args.post_contrast else None
    return stack_sequences(stack, pre, post)


def run(args: argparse.Namespace) -> int:
    from ..core.batch import format_for_path

    _check_model_path(args.model)
    options = _segment_options(args)  # contradictory post-processing flags: refused before any work
    options["flair_model"] = args.flair_model
    if args.shard is not None:
        from ..core.batch import parse_shard

        args.shard = parse_shard(args.shard)
    if args.voxel_size is not None:
        from ..core.geometry import check_voxel_size

        args.voxel_size = check_voxel_size(args.voxel_size)  # finite and positive, before any work
    to_file = format_for_path(args.output) is not None
    out = Path(args.output)
    if not to_file and out.suffix and not out.is_dir():
        raise InputError(f"{out}: cannot write labels as '{out.suffix}'; use .tif, .tiff, .nii, .nii.gz "
                         "or a folder name without extension")
    if to_file and (len(args.input) > 1 or args.shard or args.format):
        raise InputError(f"{args.output}: with several inputs, --shard or --format, -o must be a folder")
    if to_file and Path(args.input[0]).is_dir():
        _check_one_patient(Path(args.input[0]), args.output)
    if (args.pre_contrast or args.post_contrast) and (len(args.input) > 1 or not to_file):
        raise InputError("--pre-contrast/--post-contrast go with one FLAIR input and an output file (-o OUT.tif|.nii.gz)")
    if to_file:
        return _segment_one(args, options)
    return _segment_many(args, options)


def _check_one_patient(folder: Path, output) -> None:
    """Refuse a folder of patients for an output file, naming the way out (a folder that is
    not a patient and holds at most one is left to the reader, whose message says what is
    amiss with it as a patient)."""
    from ..core.batch import patient_inputs
    from ..core.io import is_readable

    if is_readable(folder):
        return
    try:
        n = len(patient_inputs([folder]))
    except InputError:
        return
    if n > 1:
        raise InputError(f"{output}: {folder} is a folder of {n} patients; -o must be a folder for them "
                         "(e.g. -o labels/), which gets one output per patient")


def _segment_one(args: argparse.Namespace, options: dict) -> int:
    from ..core.batch import segment_stack, stack_volume, write_labels

    out = _check_output(args.output, (), "output")  # the extension was checked by format_for_path
    for src in [args.input[0], args.pre_contrast, args.post_contrast]:
        if src and Path(src).is_file() and out.exists() and out.resolve() == Path(src).resolve():
            raise InputError(f"{out}: the output would overwrite the input")
    from ..core.io import check_not_patient_file

    check_not_patient_file(out)
    stack = _read_flair(args)
    from ..core.preprocess import as_channels_last

    as_channels_last(stack_volume(stack))  # shape check before the (slow) model load
    from ..core.resources import check_fits, segment_bytes

    check_fits(segment_bytes(stack.image.shape, stack.image.dtype.itemsize, args.batch_size),
               f"segmenting {args.input[0]} with --batch-size {args.batch_size}", "lower --batch-size")
    model = _resolve_model(stack_volume(stack), cli._load_engine(args.model, args.engine), args)
    bar = ProgressBar(f"segmenting {stack.patient_id}")
    stats: dict = {}
    try:
        labels = segment_stack(stack, model, batch_size=args.batch_size, progress=bar, engine=args.engine,
                               stats=stats, **options)
    finally:
        bar.close()
    from ..core.geometry import oblique_note
    from ..core.inference import removed_all_note

    note = removed_all_note(stats)
    if note:
        _note(f"{stack.patient_id}: {note}; --postprocess none keeps them")
    oblique = oblique_note(stack.geometry)
    if oblique:
        _note(f"{stack.patient_id}: {oblique}")
    voxel = stack.voxel_size or args.voxel_size
    if args.voxel_size and stack.voxel_size and not all(
            math.isclose(a, b, rel_tol=1e-6) for a, b in zip(args.voxel_size, stack.voxel_size)):
        _note(f"{stack.patient_id}: --voxel-size is not used; the input's own voxel size is "
              f"{' x '.join(f'{v:g}' for v in stack.voxel_size)} mm")
    if str(out).lower().endswith((".nii", ".nii.gz")) and stack.geometry is None and voxel is None:
        _note(f"{out.name}: the input has no voxel size; the NIfTI gets 1 mm voxels (give --voxel-size)")
    write_labels(out, labels, stack, args.voxel_size)
    _info(f"{stack.patient_id}: {stack.n_slices} slice{'s' if stack.n_slices != 1 else ''} segmented with {_model_label(model)} "
          f"({_settings_line(model, options)})")
    _info(_volume_lines(labels, voxel))
    if stack.mask is not None:
        _info(_scores_line(stack.mask.reshape(labels.shape), labels))
    _info(f"wrote {out}")
    return 0


def _segment_many(args: argparse.Namespace, options: dict) -> int:
    from ..core.batch import patient_inputs, segment_many, summary_name, take_shard

    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder; -o takes a folder for several patients")
    if not out_dir.parent.is_dir():
        raise InputError(f"{out_dir}: folder {out_dir.parent} does not exist")
    patients = take_shard(patient_inputs(args.input), args.shard)  # input errors before the model load
    if not patients:
        _info(f"shard {args.shard[0]}/{args.shard[1]} has no patients")
    model = cli._load_engine(args.model, args.engine) if patients else None
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
            if row.note:
                _note(f"{row.patient}: {row.note}" + ("; --postprocess none keeps them"
                                                       if row.emptied_by_postprocessing else ""))

    try:
        results = segment_many(
            args.input, out_dir, model=model, format=args.format or "tif", overwrite=args.overwrite,
            shard=args.shard, voxel_size=args.voxel_size, progress=bar, on_result=report,
            batch_size=args.batch_size, engine=args.engine, **options,
        )
    finally:
        bar.close()
    failed = [r for r in results if r.status == "failed"]
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    _info(f"{done} segmented, {skipped} skipped, {len(failed)} failed; summary: "
          f"{out_dir / summary_name(args.shard)}")
    return EXIT_ERROR if failed else 0
