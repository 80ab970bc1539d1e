"""Screenshots of the three dock widgets in use, for the README.

    xvfb-run -a python scripts/screenshots.py            # on a headless machine
    xvfb-run -a python scripts/screenshots.py --segment-only   # just the Segment widget
    python scripts/screenshots.py --patient path/to/TCGA_... --model my.keras

Opens a patient in napari (a real one from ../shared/data/lgg/kaggle_3m when present,
else the synthetic phantom), segments it with the Segment widget, trains a few tiny epochs
with the Train widget and compares segmentation and ground truth in the Metrics widget,
saving docs/images/{segment,train,metrics}_widget.png.

Model: ``--model``, else the bundled model when it is trained, else the in-progress
``runs/bundled/phase1.keras`` when present, else an untrained tiny U-Net (the pictures
then show the widgets, not a meaningful segmentation).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "lgg" / "kaggle_3m"
PREFERRED = "TCGA_HT_7686_19950629"  # 20 slices; also the plugin's downloadable sample


def pick_patient(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    if (REAL / PREFERRED).is_dir():
        return REAL / PREFERRED
    if REAL.is_dir():
        folders = sorted(p for p in REAL.iterdir() if p.is_dir())
        return folders[0] if folders else None
    return None


def small_patients(n: int) -> list[Path]:
    """The ``n`` real patients with the fewest slices (quick to train on), if the data is here."""
    if not REAL.is_dir():
        return []
    folders = [p for p in REAL.iterdir() if p.is_dir()]
    count = {p: sum(1 for f in p.glob("*.tif") if not f.name.endswith("_mask.tif")) for p in folders}
    return sorted(folders, key=lambda p: (count[p], p.name))[:n]


def pick_model(arg: str | None, tmp: Path) -> Path | None:
    """A model file, or None for the bundled model."""
    if arg:
        return Path(arg)
    from napari_lgg_seg.core.model import BUNDLED_CONFIG

    if BUNDLED_CONFIG.exists():
        return None
    phase1 = REPO / "runs" / "bundled" / "phase1.keras"
    if phase1.exists():
        return phase1
    from napari_lgg_seg.core.model import build_unet, save_model

    print("no trained model found: using an untrained tiny U-Net", file=sys.stderr)
    return save_model(build_unet(4), tmp / "untrained.keras")


def wait_for(signal, timeout_s: float = 900.0) -> tuple:
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    got: list[tuple] = []

    def done(*args):
        got.append(args)
        loop.quit()

    signal.connect(done)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec_()
    signal.disconnect(done)
    if not got:
        raise TimeoutError(f"no signal within {timeout_s} s")
    return got[0]


def settle(viewer, ms: int = 400) -> None:
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec_()


def save(viewer, path: Path) -> None:
    import imageio.v3 as iio

    settle(viewer)
    img = viewer.screenshot(canvas_only=False, flash=False)
    iio.imwrite(path, img)
    print(f"wrote {path} {img.shape[1]}x{img.shape[0]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patient", help="kaggle_3m patient folder (default: a real one, else the phantom)")
    ap.add_argument("--model", help=".keras model for the Segment widget")
    ap.add_argument("--out", default=str(REPO / "docs" / "images"))
    ap.add_argument("--train-epochs", type=int, default=3)
    ap.add_argument("--segment-only", action="store_true", help="only docs/images/segment_widget.png")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="lgg-shots-"))

    import os

    os.environ["NAPARI_LGG_SEG_SETTINGS_DIR"] = str(tmp / "settings")  # the defaults, not your settings
    import napari

    viewer = napari.Viewer(title="napari-lgg-seg", show=True)
    viewer.window._qt_window.resize(1366, 768)  # a small laptop screen: the docks must fit
    patient = pick_patient(args.patient)
    if patient is not None:
        layers = viewer.open(str(patient), plugin="napari-lgg-seg")
    else:
        layers = viewer.open_sample("napari-lgg-seg", "phantom")
    image = layers[0]
    truth = viewer.layers["ground truth"]
    model_path = pick_model(args.model, tmp)

    # --- Segment
    dock, seg = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")
    if model_path is not None:
        seg.add_model_file(model_path)
    seg.image.value = image
    seg.run_button.native.click()
    print("segment:", wait_for(seg.run_finished)[0], "-", seg.status.value)
    busiest = int(np.argmax(truth.data.reshape(truth.data.shape[0], -1).sum(axis=1)))
    viewer.dims.set_current_step(0, busiest)
    truth.visible = False
    save(viewer, out / "segment_widget.png")
    if args.segment_only:
        viewer.close()
        return 0
    viewer.window.remove_dock_widget(dock)

    # --- Train / fine-tune (a few tiny epochs from scratch on this one patient)
    dock, train = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Train / fine-tune")
    small = small_patients(4)
    if small:  # a folder of a few real patients: with a validation patient, so val curves show
        folder = tmp / "kaggle_3m"
        folder.mkdir()
        for p in small:
            (folder / p.name).symlink_to(p, target_is_directory=True)
        train.source_combo.setCurrentIndex(0)
        train.folder.value = folder
        train.val_fraction.value = 0.25
    else:
        train.source_combo.setCurrentIndex(1)
        train.pair_labels.value = truth
        train.add_pair(image, truth)
        train.val_fraction.value = 0.0
    train.init_from.value = "scratch"
    train.base_filters.value = 4
    train.epochs.value = args.train_epochs
    train.batch_size.value = 8
    train.learning_rate.value = 3e-3
    train.out.value = tmp / "screenshot_model.keras"
    train.start_button.click()
    print("train:", wait_for(train.training_finished)[0], "-", train.status.text())
    save(viewer, out / "train_widget.png")
    viewer.window.remove_dock_widget(dock)

    # --- Metrics: segmentation vs ground truth (the Segment widget drew it as an outline)
    truth.visible = True
    truth.opacity = 1.0
    dock, metrics = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Metrics")
    metrics.set_layers(truth, f"{image.name} segmentation")
    metrics.compute()
    print("metrics:", metrics.summary.text().replace("\n", " | "))
    save(viewer, out / "metrics_widget.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
