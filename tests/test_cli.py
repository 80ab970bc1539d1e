"""The command line: happy paths with tiny models, and every bad input giving one clear
error line, a non-zero exit status and no output file."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_lgg_seg.cli import main

from .conftest import write_kaggle_patient

PID = "TCGA_ZZ_0001_20010101"


# --------------------------------------------------------------------------- helpers


def run(capsys, *argv):
    """Run the CLI in-process; return (status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-lgg-seg: error: "), err
    assert "Traceback" not in err
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def _flair_model(size: int | None):
    """A 1x1-conv model whose output is sigmoid(40 * (FLAIR - 0.75)): it marks pixels whose
    normalised FLAIR is bright, so its predictions follow the image content."""
    import keras

    inp = keras.Input((size, size, 3))
    out = keras.layers.Conv2D(1, 1, activation="sigmoid")(inp)
    model = keras.Model(inp, out)
    model.set_weights([np.array([0.0, 40.0, 0.0], np.float32).reshape(1, 1, 3, 1), np.array([-30.0], np.float32)])
    return model


@pytest.fixture(scope="session")
def flair_model_32(tmp_path_factory) -> Path:
    from napari_lgg_seg.core.model import save_model

    return save_model(_flair_model(32), tmp_path_factory.mktemp("m") / "flair32.keras")


@pytest.fixture(scope="session")
def flair_model_256(tmp_path_factory) -> Path:
    from napari_lgg_seg.core.model import save_model

    return save_model(_flair_model(256), tmp_path_factory.mktemp("m") / "flair256.keras")


def ordered_patient(folder: Path, n: int = 10, size: int = 32) -> Path:
    """Slice k (1-based) has its top 2k rows bright on FLAIR, and that as its mask."""
    d = folder / PID
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(1, n + 1):
        img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        img[: 2 * k, :, 1] = 200
        mask = np.zeros((size, size), np.uint8)
        mask[: 2 * k] = 255
        tifffile.imwrite(d / f"{PID}_{k}.tif", img)
        tifffile.imwrite(d / f"{PID}_{k}_mask.tif", mask)
    return d


# --------------------------------------------------------------------------- help, TF-free


HELP_CODE = """
import sys
from napari_lgg_seg.cli import main
for argv in (["--help"], ["segment", "--help"], ["demo", "--help"], ["train", "--help"], ["evaluate", "--help"]):
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
    else:
        raise AssertionError("--help did not exit")
bad = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith(("tensorflow.", "keras")))
print("TF-FREE" if not bad else "IMPORTED " + " ".join(bad[:5]))
"""


def test_help_is_tensorflow_free():
    out = subprocess.run([sys.executable, "-c", HELP_CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TF-FREE" in out.stdout, out.stdout[-500:]
    for option in ("--model", "--threshold", "--batch-size", "--min-size", "--voxel-size", "--offline",
                   "--out-dir", "--epochs", "--base-filters", "--learning-rate", "--init-from",
                   "--val-patients", "--val-fraction", "--test-fraction", "--crop-size", "--no-augment",
                   "--resume", "--strategy", "--precision", "--time-budget", "--log-csv", "--patients",
                   "--report"):
        assert option in out.stdout, option


@pytest.mark.parametrize("command", ["segment", "demo", "train", "evaluate"])
def test_subcommand_help_documents_every_option(command, capsys):
    from napari_lgg_seg.cli import build_parser

    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        for opt in action.option_strings:
            assert opt in text
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help"


@pytest.mark.parametrize("command", ["segment", "demo", "train", "evaluate"])
def test_help_says_what_the_exit_statuses_and_flags_are(command, capsys):
    """The epilog lists 143 (SIGTERM) as the README does; an on/off flag shows no
    "(default: True)"; train, which has no --model, does not point to it."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "130 interrupted" in text and "143 terminated (SIGTERM)" in text
    assert "(default: True)" not in text and "(default: False)" not in text
    if command == "train":
        assert "--model" not in text and "--init-from" in text.split("Exit status:", 1)[1]
    else:
        assert "unless --model is given" in text


def test_help_shows_defaults_of_0(capsys):
    """--seed 0 and --test-fraction 0.0 showed no default (0 was taken for 'none')."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--seed SEED seed of the split, shuffling and augmentation (default: 0)",
                   "never used in training (default: 0.0)", "(default: 0.1)"):
        assert option in text, option
    assert "--resume continue an interrupted run from <out>.last.keras and <out>.state.json --strategy" in text


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["segment", "somewhere"])  # no -o
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["segment", "x", "-o", "y.tif", "--threshold", "1.5"])
    assert info.value.code == 2
    assert "between 0 and 1" in capsys.readouterr().err
    for option, value, message in [("--ema", "1.5", "between 0 and 1 (exclusive), not 1.5"),
                                   ("--positive-fraction", "2", "must be in [0, 1], not 2.0"),
                                   ("--missing-sequence", "-1", "must be in [0, 1], not -1.0"),
                                   ("--seed", "-1", "must be 0 or more, not -1")]:
        with pytest.raises(SystemExit) as info:
            main(["train", "x", "--out", "m.keras", option, value])
        assert info.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_error_exit_status_in_a_subprocess(tmp_path):
    (tmp_path / "empty").mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "napari_lgg_seg", "segment", str(tmp_path / "empty"), "-o", str(tmp_path / "o.tif")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"napari-lgg-seg: error: {tmp_path / 'empty'}: folder is empty"]
    assert not (tmp_path / "o.tif").exists()


# --------------------------------------------------------------------------- segment: bad inputs


def _empty(tmp):
    d = tmp / "empty"
    d.mkdir()
    return d, [str(d), "folder is empty"]


def _no_slices(tmp):
    d = tmp / "notes"
    d.mkdir()
    (d / "readme.txt").write_text("hello")
    tifffile.imwrite(d / "scan.tif", np.zeros((8, 8), np.uint8))
    return d, [str(d), "no kaggle_3m slices"]


def _mask_without_image(tmp):
    d = tmp / PID
    d.mkdir()
    tifffile.imwrite(d / f"{PID}_1.tif", np.zeros((32, 32, 3), np.uint8))
    tifffile.imwrite(d / f"{PID}_1_mask.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(d / f"{PID}_2_mask.tif", np.zeros((32, 32), np.uint8))
    return d, [f"{PID}_2_mask.tif", "mask without its image"]


def _mixed_sizes(tmp):
    d = tmp / PID
    d.mkdir()
    tifffile.imwrite(d / f"{PID}_1.tif", np.zeros((32, 32, 3), np.uint8))
    tifffile.imwrite(d / f"{PID}_2.tif", np.zeros((48, 48, 3), np.uint8))
    return d, [f"{PID}_2.tif", "slice shape (48, 48, 3) differs from (32, 32, 3)"]


def _truncated_tiff(tmp):
    f = tmp / "stack.tif"
    tifffile.imwrite(f, np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    return f, [str(f), "not a readable TIFF"]


def _truncated_slice_in_folder(tmp):
    d = write_kaggle_patient(tmp, PID, n_slices=4)
    f = d / f"{PID}_3.tif"
    f.write_bytes(f.read_bytes()[:300])
    return d, [f.name, "not a readable TIFF"]


def _not_a_tiff(tmp):
    f = tmp / "scan.tif"
    f.write_text("this is not an image\n")
    return f, [str(f), "not a readable TIFF"]


def _five_d(tmp):
    f = tmp / "hyper.tif"
    tifffile.imwrite(f, np.zeros((2, 3, 16, 16, 2), np.uint8))
    return f, [str(f), "(2, 3, 16, 16, 2)", "cannot be segmented"]


def _four_d(tmp):
    f = tmp / "timelapse.tif"
    tifffile.imwrite(f, np.zeros((2, 5, 16, 16), np.uint8))
    return f, [str(f), "(2, 5, 16, 16)", "cannot be segmented"]


def _missing(tmp):
    return tmp / "nowhere", [str(tmp / "nowhere"), "no such file or folder"]


def _png(tmp):
    f = tmp / "slice.png"
    f.write_bytes(b"\x89PNG\r\n")
    return f, [str(f), "not a file we read"]


BAD_INPUTS = {
    "empty folder": _empty,
    "folder without kaggle slices": _no_slices,
    "mask without its image": _mask_without_image,
    "slices of different sizes": _mixed_sizes,
    "truncated TIFF stack": _truncated_tiff,
    "truncated slice in a folder": _truncated_slice_in_folder,
    "text file named .tif": _not_a_tiff,
    "5D array": _five_d,
    "4D array without channels": _four_d,
    "missing input": _missing,
    "not a TIFF": _png,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_segment_bad_input(case, tmp_path, capsys, tiny_model_path):
    src, fragments = BAD_INPUTS[case](tmp_path)
    out = tmp_path / "labels.tif"
    code, stdout, err = run(capsys, "segment", src, "-o", out, "--model", tiny_model_path)
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()
    assert not list(tmp_path.glob(".labels*"))  # no temporary file either


def test_segment_model_not_keras(tmp_path, capsys, kaggle_patient):
    fake = tmp_path / "model.keras"
    fake.write_text("not a model")
    out = tmp_path / "labels.tif"
    code, _, err = run(capsys, "segment", kaggle_patient, "-o", out, "--model", fake)
    assert_one_line_error(code, err, str(fake), "not a Keras model file")
    assert not out.exists()


def test_segment_model_wrong_input_shape(tmp_path, capsys, kaggle_patient):
    from napari_lgg_seg.core.model import build_unet, save_model

    one_channel = save_model(build_unet(2, input_shape=(32, 32, 1), depth=2), tmp_path / "grey.keras")
    out = tmp_path / "labels.tif"
    code, _, err = run(capsys, "segment", kaggle_patient, "-o", out, "--model", one_channel)
    assert_one_line_error(code, err, str(one_channel), "input shape (None, 32, 32, 1)")
    assert not out.exists()


def test_segment_missing_model_file(tmp_path, capsys, kaggle_patient):
    code, _, err = run(capsys, "segment", kaggle_patient, "-o", tmp_path / "o.tif", "--model", tmp_path / "x.keras")
    assert_one_line_error(code, err, "x.keras", "no such model file")


def test_segment_output_folder_missing(tmp_path, capsys, kaggle_patient, tiny_model_path):
    out = tmp_path / "no" / "such" / "labels.tif"
    code, _, err = run(capsys, "segment", kaggle_patient, "-o", out, "--model", tiny_model_path)
    assert_one_line_error(code, err, str(out), "does not exist")
    assert not out.parent.exists()


@pytest.mark.parametrize("name", ["labels.png", "outdir"])
def test_segment_bad_output_name(name, tmp_path, capsys, kaggle_patient, tiny_model_path):
    out = tmp_path / name
    if name == "outdir":
        out = tmp_path / "outdir.tif"
        out.mkdir()
    code, _, err = run(capsys, "segment", kaggle_patient, "-o", out, "--model", tiny_model_path)
    assert_one_line_error(code, err, str(out))
    assert not out.is_file()


def test_segment_refuses_to_overwrite_its_input(tmp_path, capsys, tiny_model_path):
    f = tmp_path / "stack.tif"
    tifffile.imwrite(f, np.zeros((2, 32, 32), np.uint8))
    before = f.read_bytes()
    code, _, err = run(capsys, "segment", f, "-o", f, "--model", tiny_model_path)
    assert_one_line_error(code, err, "overwrite the input")
    assert f.read_bytes() == before


def test_segment_without_bundled_model_says_what_to_do(tmp_path, capsys, kaggle_patient, monkeypatch):
    from napari_lgg_seg.core import model as model_mod

    monkeypatch.setattr(model_mod, "BUNDLED_CONFIG", tmp_path / "missing" / "model.json")
    from napari_lgg_seg.core import engine_int8  # the int8 engine is the bundled model too

    monkeypatch.setattr(engine_int8, "BUNDLED_DIR", tmp_path / "missing")
    out = tmp_path / "o.tif"
    code, _, err = run(capsys, "segment", kaggle_patient, "-o", out)
    assert_one_line_error(code, err, "bundled model", "--model")
    assert not out.exists()


# --------------------------------------------------------------------------- segment: happy path


def test_segment_kaggle_folder_in_numeric_order(tmp_path, capsys, flair_model_32):
    src = ordered_patient(tmp_path / "data", n=10)
    out = tmp_path / "labels.tif"
    code, stdout, err = run(capsys, "segment", src, "-o", out, "--model", flair_model_32,
                            "--voxel-size", "5", "0.5", "0.5", "--batch-size", "3")
    assert code == 0, err
    labels = tifffile.imread(out)
    assert labels.dtype == np.uint8 and labels.shape == (10, 32, 32)
    assert set(np.unique(labels)) == {0, 1}
    with tifffile.TiffFile(out) as tif:
        assert len(tif.pages) == 10  # multi-page, one page per slice
    # slice k of the output is slice k of the patient: 1, 2, ..., 10 (not 1, 10, 2, ...)
    rows = labels.any(axis=2).sum(axis=1)
    assert rows.tolist() == [2 * k for k in range(1, 11)]
    voxels = sum(2 * k * 32 for k in range(1, 11))
    assert f"abnormality volume: {voxels:,} voxels in 10 of 10 slices" in stdout
    assert f", {voxels * 1.25:,.1f} mm^3 ({voxels * 1.25 / 1000:,.2f} ml)" in stdout
    assert "Dice vs ground truth: 1.000" in stdout
    assert str(out) in stdout
    assert not list(tmp_path.glob(".labels*"))


def test_segment_says_when_post_processing_removed_everything(tmp_path, capsys, flair_model_32):
    src = ordered_patient(tmp_path / "data", n=10)
    out = tmp_path / "labels.tif"
    code, stdout, err = run(capsys, "segment", src, "-o", out, "--model", flair_model_32, "--min-size", "100000")
    assert code == 0, err
    assert not tifffile.imread(out).any()
    voxels = sum(2 * k * 32 for k in range(1, 11))
    assert (f"the post-processing (drop components under 100000 voxels) removed all {voxels:,} voxels above "
            "the threshold, so the result is empty; --postprocess none keeps them") in err
    code, _, err = run(capsys, "segment", src, "-o", tmp_path / "kept.tif", "--model", flair_model_32)
    assert code == 0 and "removed all" not in err


def test_segment_tiff_stack_without_masks(tmp_path, capsys, tiny_model_path):
    f = tmp_path / "stack.tif"
    tifffile.imwrite(f, np.random.default_rng(1).integers(0, 4000, (3, 40, 40), dtype=np.uint16))
    out = tmp_path / "labels.tiff"
    code, stdout, err = run(capsys, "segment", f, "-o", out, "--model", tiny_model_path, "--min-size", "5")
    assert code == 0, err
    assert tifffile.imread(out).shape == (3, 40, 40)
    assert "abnormality volume" in stdout and "Dice" not in stdout and "mm^3" not in stdout


def test_progress_bar_draws_only_on_a_terminal():
    import io

    from napari_lgg_seg.cli import ProgressBar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = ProgressBar("work", stream=stream)
        for d in (3, 6, 8):
            assert bar(d, 8) is None
        bar.close()
    assert pipe.getvalue() == ""
    assert "8/8" in tty.getvalue() and tty.getvalue().count("\n") == 1


# --------------------------------------------------------------------------- demo


def test_demo_offline_writes_overview(tmp_path, capsys, flair_model_256):
    import imageio.v3 as iio

    code, stdout, err = run(capsys, "demo", "--offline", "--model", flair_model_256, "--out-dir", tmp_path / "out")
    assert code == 0, err
    png = tmp_path / "out" / "PHANTOM_0_overview.png"
    img = iio.imread(png)
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[1] == 3 * 256 + 8
    assert "phantom" in err
    dice = float(stdout.split("Dice vs ground truth: ")[1].split()[0])
    assert dice > 0.5  # the FLAIR blob is what the 1x1 model marks
    assert "predicted abnormality volume" in stdout and str(png) in stdout


def test_demo_falls_back_to_phantom_when_offline(tmp_path, capsys, monkeypatch, flair_model_256):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NAPARI_LGG_SEG_SAMPLE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NAPARI_LGG_SEG_CACHE", str(tmp_path / "cache"))
    code, stdout, err = run(capsys, "demo", "--model", flair_model_256, "--out-dir", tmp_path)
    assert code == 0, err
    assert "no network" in err and "phantom" in err
    assert (tmp_path / "PHANTOM_0_overview.png").is_file()


def test_demo_real_sample_from_local_mirror(tmp_path, capsys, monkeypatch, flair_model_256):
    from .core.test_sample import ORIGINAL_PATIENT, ORIGINALS, _Server

    if not ORIGINAL_PATIENT.is_dir():
        pytest.skip(f"original sample files not found at {ORIGINAL_PATIENT} (../shared is absent)")
    srv = _Server(ORIGINALS)
    monkeypatch.setenv("NAPARI_LGG_SEG_SAMPLE_URL", srv.url)
    monkeypatch.setenv("NAPARI_LGG_SEG_CACHE", str(tmp_path / "cache"))
    try:
        code, stdout, err = run(capsys, "demo", "--model", flair_model_256, "--out-dir", tmp_path)
    finally:
        srv.close()
    assert code == 0, err
    assert (tmp_path / "TCGA_HT_7686_19950629_overview.png").is_file()
    assert "TCGA_HT_7686_19950629: 20 slices" in stdout and "Dice vs ground truth" in stdout


def test_demo_missing_model(tmp_path, capsys):
    code, _, err = run(capsys, "demo", "--offline", "--model", tmp_path / "nope.keras", "--out-dir", tmp_path)
    assert_one_line_error(code, err, "nope.keras", "no such model file")
    assert not list(tmp_path.glob("*.png"))
    # refused before --out-dir is created (an empty folder was left behind)
    for bad in (["--model", str(tmp_path / "nope.keras")], ["--postprocess", "peak"]):
        code, _, err = run(capsys, "demo", "--offline", *bad, "--out-dir", tmp_path / "new")
        assert code == 1 and not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- train / evaluate



def test_train_one_epoch_then_evaluate(tmp_path, capsys, data_root):
    model = tmp_path / "tiny.keras"
    log = tmp_path / "log.csv"
    code, stdout, err = run(
        capsys, "train", data_root, "--out", model, "--epochs", "1", "--batch-size", "2",
        "--base-filters", "2", "--init-from", "scratch", "--crop-size", "64", "--no-augment",
        "--val-patients", "TCGA_X2_0002_20000101", "--log-csv", log,
        "--lr-schedule", "cosine", "--learning-rate", "0.002", "--ema", "0.99", "--positive-fraction", "1",
    )
    assert code == 0, err
    assert model.is_file() and log.is_file()
    assert "1 epoch(s) run" in stdout and "2 train, 1 validation" in stdout
    assert "dice" in log.read_text() and "val_patient_dice" in log.read_text()
    with open(log, newline="") as f:
        assert float(next(csv.DictReader(f))["learning_rate"]) == pytest.approx(0.002)

    report = tmp_path / "report.json"
    code, stdout, err = run(capsys, "evaluate", data_root, "--model", model, "--report", report,
                            "--patients", "TCGA_X0_0000_20000101", "TCGA_X2_0002_20000101", "--flair-only")
    assert code == 0, err
    assert "FLAIR channel only" in stdout
    data = json.loads(report.read_text())
    assert data["flair_only"] is True
    assert [p["patient"] for p in data["patients"]] == ["TCGA_X0_0000_20000101", "TCGA_X2_0002_20000101"]
    assert data["summary"]["n_patients"] == 2 and data["threshold"] == 0.5
    assert "per-patient Dice mean" in stdout and str(report) in stdout


def test_train_passes_augmentation_options_to_the_core(tmp_path, capsys, data_root, monkeypatch):
    from napari_lgg_seg import InputError
    from napari_lgg_seg.core import training

    seen = {}

    def fake_train(root, cfg, **kwargs):
        seen["cfg"] = cfg
        raise InputError("stopped by the test")

    monkeypatch.setattr(training, "train", fake_train)
    code, _, err = run(capsys, "train", data_root, "--out", tmp_path / "m.keras",
                       "--missing-sequence", "0.25", "--positive-fraction", "0.4", "--flair-only",
                       "--small-lesion-power", "0.5", "--context-slices", "1",
                       "--val-patients", "TCGA_X0_0000_20000101", "--test-patients", "TCGA_X1_0001_20000101")
    assert code == 1 and "stopped by the test" in err
    assert (seen["cfg"].missing_sequence, seen["cfg"].positive_fraction, seen["cfg"].augment) == (0.25, 0.4, True)
    assert seen["cfg"].flair_only is True and seen["cfg"].small_lesion_power == 0.5
    assert seen["cfg"].context_slices == 1
    assert seen["cfg"].val_patients == ["TCGA_X0_0000_20000101"]
    assert seen["cfg"].test_patients == ["TCGA_X1_0001_20000101"]


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--epochs", "0"], ["epochs must be at least 1, not 0"]),
        (["--batch-size", "0"], ["batch size must be at least 1"]),
        (["--init-from", "nowhere.keras"], ["nowhere.keras", "no such model file"]),
    ],
)
def test_train_bad_options(extra, fragments, tmp_path, capsys, data_root):
    model = tmp_path / "m.keras"
    code, _, err = run(capsys, "train", data_root, "--out", model, *extra)
    assert_one_line_error(code, err, *fragments)
    assert not model.exists()


def test_train_bad_paths(tmp_path, capsys, data_root):
    code, _, err = run(capsys, "train", data_root, "--out", tmp_path / "m.h5")
    assert_one_line_error(code, err, "m.h5", ".keras")
    code, _, err = run(capsys, "train", data_root, "--out", tmp_path / "missing" / "m.keras")
    assert_one_line_error(code, err, "does not exist")
    code, _, err = run(capsys, "train", tmp_path / "nodata", "--out", tmp_path / "m.keras")
    assert_one_line_error(code, err, "nodata", "not a folder")
    assert not (tmp_path / "m.keras").exists()
    # the log is appended to: a patient's slice got CSV lines at its end
    slice_file = next(data_root.glob("*/*_1.tif"))
    before = slice_file.read_bytes()
    code, _, err = run(capsys, "train", data_root, "--out", tmp_path / "m.keras", "--log-csv", slice_file)
    assert_one_line_error(code, err, slice_file.name, "must end with .csv")
    assert slice_file.read_bytes() == before and not (tmp_path / "m.keras").exists()


def test_evaluate_errors(tmp_path, capsys, data_root, tiny_model_path):
    code, _, err = run(capsys, "evaluate", data_root, "--model", tiny_model_path,
                       "--report", tmp_path / "missing" / "r.json")
    assert_one_line_error(code, err, "r.json", "does not exist")
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "evaluate", tmp_path / "empty", "--model", tiny_model_path)
    assert_one_line_error(code, err, "empty", "no patient folders")
    report = tmp_path / "r.json"
    code, _, err = run(capsys, "evaluate", data_root, "--model", tiny_model_path, "--patients", "TCGA_NOPE",
                       "--report", report)
    assert_one_line_error(code, err, "TCGA_NOPE")
    assert not report.exists()


def test_train_errors_after_loading_data(tmp_path, capsys, data_root, monkeypatch):
    from napari_lgg_seg.core import model as model_mod

    monkeypatch.setattr(model_mod, "BUNDLED_CONFIG", tmp_path / "missing" / "model.json")
    out = tmp_path / "m.keras"
    code, _, err = run(capsys, "train", data_root, "--out", out, "--epochs", "1", "--base-filters", "2",
                       "--batch-size", "2")
    assert_one_line_error(code, err, "bundled model", "--init-from scratch")
    code, _, err = run(capsys, "train", data_root, "--out", out, "--epochs", "1", "--resume",
                       "--init-from", "scratch", "--batch-size", "2")
    assert_one_line_error(code, err, "nothing to resume")
    code, _, err = run(capsys, "train", data_root, "--out", out, "--epochs", "1", "--init-from", "scratch",
                       "--batch-size", "2", "--val-patients", "TCGA_NOPE")
    assert_one_line_error(code, err, "TCGA_NOPE")
    assert not out.exists()


# --------------------------------------------------------------------------- segment: formats, many patients


class _FlairFake:
    """Fast stand-in for the U-Net (FLAIR channel as probability), for the CLI plumbing."""

    input_shape = (None, 32, 32, 3)
    name = "flair-fake"

    def predict_on_batch(self, x):
        return x[..., 1:2]


@pytest.fixture
def fake_model(monkeypatch):
    from napari_lgg_seg import cli

    loads = []
    monkeypatch.setattr(cli, "_load_engine", lambda path, engine: loads.append(path) or _FlairFake())
    return loads


def _patients_root(tmp_path):
    from .mri_files import ORIENTATIONS, to_orientation, write_nifti

    root = tmp_path / "data"
    for i in range(3):
        write_kaggle_patient(root, pid=f"TCGA_AA_000{i}_20000101", n_slices=4, seed=i)
    bad = root / "TCGA_BB_0009_20000101"
    bad.mkdir()
    (bad / "TCGA_BB_0009_20000101_1.tif").write_bytes(b"not a tiff")
    vol = np.zeros((5, 32, 32), np.int16)
    vol[2, 8:16, 8:16] = 900
    src, affine = to_orientation(vol, ORIENTATIONS["sagittal-LIP"])
    write_nifti(root / "scan.nii.gz", src, affine)
    return root, src, affine


def test_segment_folder_notes_patients_emptied_by_post_processing(tmp_path, capsys, fake_model):
    root, _, _ = _patients_root(tmp_path)
    code, _, err = run(capsys, "segment", root / "TCGA_AA_0000_20000101", root / "TCGA_AA_0001_20000101",
                       "-o", tmp_path / "out", "--min-size", "1000000")
    assert code == 0, err
    notes = [line for line in err.splitlines() if "removed all" in line]
    assert len(notes) == 2 and notes[0].startswith("napari-lgg-seg: TCGA_AA_0000_20000101: the post-processing (drop components")
    assert notes[0].endswith("so the result is empty; --postprocess none keeps them")


def test_segment_folder_of_patients_reports_failure_and_resumes(tmp_path, capsys, fake_model):
    root, _, _ = _patients_root(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "segment", root, "-o", out, "--format", "nii.gz")
    assert code == 1 and len(fake_model) == 1  # the model loads once
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "TCGA_BB_0009_20000101: failed" in lines[0] and "not a readable TIFF" in lines[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [
        "TCGA_AA_0000_20000101.nii.gz", "TCGA_AA_0001_20000101.nii.gz", "TCGA_AA_0002_20000101.nii.gz",
        "scan.nii.gz", "summary.csv"]
    assert "4 segmented, 0 skipped, 1 failed" in stdout and "Dice 1.000" in stdout
    assert "mm^3" in stdout  # the NIfTI has a voxel size
    with open(out / "summary.csv", newline="") as fh:
        table = {r["patient"]: r for r in csv.DictReader(fh)}
    assert table["TCGA_BB_0009_20000101"]["status"] == "failed" and table["scan"]["status"] == "done"

    code, stdout, err = run(capsys, "segment", root, "-o", out, "--format", "nii.gz")
    assert code == 1 and "0 segmented, 4 skipped, 1 failed" in stdout and "skipped" in stdout


def test_sigterm_during_a_folder_run_unwinds_like_ctrl_c(tmp_path, capsys, monkeypatch):
    """``kill`` (or a cluster's time limit) in the middle of a folder: exit 143 after the
    same clean-up as Ctrl-C (the finished patients and their summary rows kept, no
    temporary files left), and the SIGTERM handler put back afterwards."""
    import os
    import signal

    from napari_lgg_seg import cli

    class _KilledOnThirdBatch(_FlairFake):
        calls = 0

        def predict_on_batch(self, x):
            type(self).calls += 1
            if self.calls == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().predict_on_batch(x)

    monkeypatch.setattr(cli, "_load_engine", lambda path, engine: _KilledOnThirdBatch())
    root = tmp_path / "data"
    for i in range(4):
        write_kaggle_patient(root, pid=f"TCGA_AA_000{i}_20000101", n_slices=4, seed=i)
    out = tmp_path / "out"

    def outside_handler(signum, frame):  # a regression fails here instead of killing pytest
        pass

    before = signal.signal(signal.SIGTERM, outside_handler)
    try:
        code, _, err = run(capsys, "segment", root, "-o", out)
        after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == 143 and err.strip().endswith("terminated") and "Traceback" not in err
    assert after is outside_handler
    assert sorted(p.name for p in out.iterdir()) == [
        "TCGA_AA_0000_20000101.tif", "TCGA_AA_0001_20000101.tif", "summary.csv"]
    with open(out / "summary.csv", newline="") as fh:
        done = [r["patient"] for r in csv.DictReader(fh) if r["status"] == "done"]
    assert done == ["TCGA_AA_0000_20000101", "TCGA_AA_0001_20000101"]


def test_segment_notes_an_oblique_volume(tmp_path, capsys, fake_model):
    """Slices 30 degrees from axial are segmented as they are; ``segment`` says so, for one
    file and in a folder run's summary, and says nothing for an axial volume."""
    from .core.test_geometry_formats import _rotation
    from .mri_files import write_nifti

    vol = np.zeros((24, 24, 6), np.int16)
    vol[8:16, 8:16, 2:4] = 900
    base = np.diag([0.9, 0.9, 3.0, 1.0])
    root = tmp_path / "scans"
    root.mkdir()
    write_nifti(root / "oblique.nii.gz", vol, _rotation(30, 0) @ base)
    write_nifti(root / "axial.nii.gz", vol, _rotation(5, 0) @ base)
    code, _, err = run(capsys, "segment", root / "oblique.nii.gz", "-o", tmp_path / "o.nii.gz")
    assert code == 0 and "oblique: oblique volume: its slices are 30 degrees from axial" in err
    code, _, err = run(capsys, "segment", root / "axial.nii.gz", "-o", tmp_path / "a.nii.gz")
    assert code == 0 and "oblique" not in err
    code, _, err = run(capsys, "segment", root, "-o", tmp_path / "out")
    assert code == 0 and err.count("oblique volume") == 1 and "--postprocess none" not in err
    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        notes = {r["patient"]: r["note"] for r in csv.DictReader(fh)}
    assert notes["axial"] == "" and notes["oblique"].startswith("oblique volume: its slices are 30 degrees")


def test_segment_shards_union_equals_one_run(tmp_path, capsys, fake_model):
    root, _, _ = _patients_root(tmp_path)
    (root / "TCGA_BB_0009_20000101" / "TCGA_BB_0009_20000101_1.tif").unlink()
    (root / "TCGA_BB_0009_20000101").rmdir()
    assert run(capsys, "segment", root, "-o", tmp_path / "one")[0] == 0
    for i in (1, 2):
        assert run(capsys, "segment", root, "-o", tmp_path / "sharded", "--shard", f"{i}/2")[0] == 0
    one = sorted(p.name for p in (tmp_path / "one").glob("*.tif"))
    sharded = sorted(p.name for p in (tmp_path / "sharded").glob("*.tif"))
    assert one == sharded and len(one) == 4
    for name in one:
        assert np.array_equal(tifffile.imread(tmp_path / "one" / name), tifffile.imread(tmp_path / "sharded" / name))
    summaries = []
    for i in (1, 2):
        with open(tmp_path / "sharded" / f"summary-shard-{i}-of-2.csv", newline="") as fh:
            summaries += [r["patient"] for r in csv.DictReader(fh)]
    assert sorted(summaries) == sorted(n[:-4] for n in one)
    assert not (tmp_path / "sharded" / "summary.csv").exists()
    code, _, err = run(capsys, "segment", root, "-o", tmp_path / "x", "--shard", "3/2")
    assert_one_line_error(code, err, "shard")


def test_segment_one_nifti_to_nifti_keeps_the_source_affine(tmp_path, capsys, fake_model):
    import nibabel as nib

    root, src, affine = _patients_root(tmp_path)
    out = tmp_path / "labels.nii.gz"
    code, stdout, err = run(capsys, "segment", root / "scan.nii.gz", "-o", out)
    assert code == 0, err
    back = nib.load(str(out))
    assert np.allclose(back.affine, affine) and back.shape == src.shape
    assert np.array_equal(np.asarray(back.dataobj) > 0, src > 0)
    assert f"64 voxels in 1 of 5 slices, {64 * 2.5 * 0.9 * 0.8:.1f} mm^3" in stdout
    # a --voxel-size that the file's own overrides is said so (it was silently ignored)
    code, stdout, err = run(capsys, "segment", root / "scan.nii.gz", "-o", out, "--voxel-size", "1", "1", "1")
    assert code == 0 and "--voxel-size is not used; the input's own voxel size is 2.5 x 0.9 x 0.8 mm" in err
    assert f"{64 * 2.5 * 0.9 * 0.8:.1f} mm^3" in stdout


def test_segment_nifti_of_three_sagittal_slices_is_a_grey_volume(tmp_path, capsys, fake_model):
    # in the kaggle orientation it is (Z, Y, 3): segmented as one RGB slice, the NIfTI
    # output failed (labels of shape (1, Z, Y)) and the TIFF output was that one slice
    import nibabel as nib

    from .mri_files import ORIENTATIONS, to_orientation, write_nifti

    vol = np.zeros((20, 24, 3), np.int16)
    vol[5:9, 4:10, 1] = 900
    src, affine = to_orientation(vol, ORIENTATIONS["sagittal-LIP"])
    scan = write_nifti(tmp_path / "sag.nii.gz", src, affine)
    out = tmp_path / "labels.nii.gz"
    code, stdout, err = run(capsys, "segment", scan, "-o", out, "--postprocess", "none")
    assert code == 0, err
    back = nib.load(str(out))
    assert np.allclose(back.affine, affine) and np.array_equal(np.asarray(back.dataobj) > 0, src > 0)
    assert "24 voxels in 4 of 20 slices" in stdout
    code, stdout, err = run(capsys, "segment", scan, "-o", tmp_path / "labels.tif", "--postprocess", "none")
    assert code == 0, err
    assert np.array_equal(tifffile.imread(tmp_path / "labels.tif") > 0, vol > 0)

def test_segment_sequences_as_separate_files(tmp_path, capsys, fake_model):
    from .mri_files import ORIENTATIONS, to_orientation, write_nifti

    vol = np.zeros((5, 32, 32), np.int16)
    vol[2, 8:16, 8:16] = 900
    src, affine = to_orientation(vol, ORIENTATIONS["RAS"])
    flair = write_nifti(tmp_path / "flair.nii.gz", src, affine)
    pre = write_nifti(tmp_path / "t1.nii.gz", src // 2, affine)
    out = tmp_path / "l.tif"
    code, stdout, err = run(capsys, "segment", flair, "--pre-contrast", pre, "--post-contrast", pre, "-o", out)
    assert code == 0, err
    assert tifffile.imread(out).sum() == 64

    other = write_nifti(tmp_path / "t1c.nii.gz", src[:, :, :4], affine)
    loads_before = len(fake_model)
    code, _, err = run(capsys, "segment", flair, "--post-contrast", other, "-o", tmp_path / "l2.tif")
    assert_one_line_error(code, err, "t1c.nii.gz", "not on the FLAIR's grid")
    assert not (tmp_path / "l2.tif").exists() and len(fake_model) == loads_before


@pytest.mark.parametrize("argv, fragment", [
    (["A", "B", "-o", "x.tif"], "-o must be a folder"),
    (["ROOT", "-o", "x.tif"], "is a folder of 5 patients; -o must be a folder"),
    (["A", "-o", "x.png"], "cannot write labels as '.png'"),
    (["A", "-o", "outdir", "--pre-contrast", "A"], "--pre-contrast"),
])
def test_segment_bad_combinations(tmp_path, capsys, fake_model, argv, fragment):
    root, _, _ = _patients_root(tmp_path)
    a = str(root / "TCGA_AA_0000_20000101")
    argv = [str(root) if v == "ROOT" else a if v in ("A", "B") else (str(tmp_path / v) if v in ("x.tif", "x.png", "outdir") else v) for v in argv]
    code, _, err = run(capsys, "segment", *argv)
    assert_one_line_error(code, err, fragment)
    assert not fake_model and not (tmp_path / "outdir").exists()


@pytest.mark.parametrize("name", ["{pid}_2_mask.tif", "{pid}_99.tif"])
def test_segment_refuses_outputs_among_the_patients_slices(tmp_path, capsys, fake_model, name):
    """Repro (issue 12, 1): `segment P -o P/<ID>_2_mask.tif` replaced a ground-truth mask."""
    src = write_kaggle_patient(tmp_path, pid=PID, n_slices=4)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    out = src / name.format(pid=PID)
    code, _, err = run(capsys, "segment", src, "-o", out)
    assert_one_line_error(code, err, str(out), "among the kaggle_3m slices")
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before and not fake_model


@pytest.mark.parametrize("case", ["truncated", "4d", "2d", "two_series", "missing_slice"])
def test_segment_bad_nifti_or_dicom(tmp_path, capsys, fake_model, case):
    from .mri_files import kaggle_affine, write_dicom_series, write_nifti

    vol = np.random.default_rng(0).integers(0, 900, (6, 32, 32)).astype(np.uint16)
    if case == "truncated":
        src = write_nifti(tmp_path / "t.nii.gz", vol.astype(np.int16), kaggle_affine())
        src.write_bytes(src.read_bytes()[:2000])
        want = [str(src), "not a readable NIfTI"]
    elif case == "4d":
        src = write_nifti(tmp_path / "t.nii.gz", np.zeros((8, 8, 8, 5), np.int16), np.eye(4))
        want = [str(src), "5 volumes"]
    elif case == "2d":
        src = write_nifti(tmp_path / "t.nii", np.zeros((8, 8), np.int16), np.eye(4))
        want = [str(src), "not a volume"]
    elif case == "two_series":
        src = write_dicom_series(tmp_path / "d", vol, kaggle_affine(), description="FLAIR")
        write_dicom_series(src, vol, kaggle_affine(), description="T2", start=50)
        want = [str(src), "2 DICOM series", "FLAIR", "T2"]
    else:
        src = write_dicom_series(tmp_path / "d", vol, kaggle_affine(), skip=(3,))
        want = [str(src), "missing"]
    out = tmp_path / "labels.nii.gz"
    code, _, err = run(capsys, "segment", src, "-o", out)
    assert_one_line_error(code, err, *want)
    assert not out.exists() and not fake_model


@pytest.mark.parametrize("extra, fragments", [
    (["--postprocess", "peak"], ["--postprocess peak needs --min-probability"]),
    (["--min-probability", "0.9"], ["--min-probability only applies to --postprocess peak or mean"]),
    (["--postprocess", "min_size"], ["--postprocess min_size needs --min-size"]),
])
def test_segment_postprocessing_flags_checked_before_work(extra, fragments, tmp_path, capsys, data_root):
    """Contradictory post-processing flags are refused before the model loads or anything is written."""
    patient = next(p for p in sorted(Path(data_root).iterdir()) if p.is_dir())
    out = tmp_path / "labels.tif"
    code, _, err = run(capsys, "segment", patient, "-o", out, *extra)
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()


def test_broken_links_in_folder_runs_are_reported(tmp_path, capsys, fake_model):
    root = tmp_path / "data"
    write_kaggle_patient(root, pid="TCGA_AA_0000_20000101", n_slices=4)
    link = root / "TCGA_AA_0001_20000101"
    link.symlink_to(tmp_path / "gone")
    code, _, err = run(capsys, "segment", root, "-o", tmp_path / "out")
    assert code == 1 and f"TCGA_AA_0001_20000101: failed: {link}: broken symbolic link" in err
    assert (tmp_path / "out" / "TCGA_AA_0000_20000101.tif").exists()
    code, out, err = run(capsys, "evaluate", root)
    assert code == 0 and "patients: 1" in out
    assert f"{link}: broken symbolic link (to {tmp_path / 'gone'}); not evaluated" in err
