"""Train / fine-tune dock widget: core.training.train in a worker, with live curves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import Cancelled, InputError, LGGSegError
from . import _models
from ._layers import readable_error, stacks_from_layer_pairs
from ._qt_common import LayerComboBox, PlotCanvas, ask_yes_no, number_box
from ._tasks import CANCELLED, DONE, Outcome, reporting

FOLDER, LAYERS = 0, 1
INIT_CHOICES = [("Bundled model", _models.BUNDLED), ("Scratch", "scratch"), ("Model file", "file")]
SCHEDULES = [("Halve on plateau", "plateau"), ("Cosine decay", "cosine")]
METRICS = (("loss", "Loss"), ("dice", "Dice"), ("iou", "IoU"))


def _floats(logs) -> dict[str, float]:
    out = {}
    for k, v in (logs or {}).items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def make_progress_callback(report: Callable):
    """A Keras callback that reports ('begin'|'batch'|'epoch', ...) tuples. Imports Keras."""
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        epoch = 0

        def on_train_begin(self, logs=None):
            report(("begin", int(self.params.get("epochs") or 0), int(self.params.get("steps") or 0)))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            report(("batch", self.epoch, batch + 1, _floats(logs)))

        def on_epoch_end(self, epoch, logs=None):
            report(("epoch", epoch, _floats(logs)))

    return ProgressCallback()


def train_task(data, config: dict, stop: threading.Event, report: Callable):
    """Read the data, build the config and train; runs off the GUI thread.

    ``data`` is a kaggle_3m folder path or a list of PatientStacks. Returns a TrainResult.
    """
    report(("status", "Loading TensorFlow ..."))
    from ..core.dataset import slices_from_stacks
    from ..core.training import TrainConfig, load_training_data, train

    if isinstance(data, (str, Path)):
        report(("status", f"Reading patients under {data} ..."))
        slices = load_training_data(data)
    else:
        report(("status", "Preparing slices ..."))
        slices = slices_from_stacks(data)
    n_patients = len(slices.patient_ids())
    report(("data", n_patients, len(slices)))
    if stop.is_set():
        raise Cancelled("training stopped before it started")
    cfg = dict(config)
    init = cfg["init_from"]
    if init != "scratch":
        report(("status", "Loading the starting model ..."))
        cfg["base_filters"] = _models.base_filters_of(init)
    report(("status", "Training ..."))
    return train(slices, TrainConfig(**cfg), callbacks=[make_progress_callback(report)],
                 stop_event=stop, verbose=0)


class TrainWidget(QWidget):
    """Train or fine-tune the U-Net on a kaggle_3m folder or on image + labels layer pairs.

    ``confirm(title, text) -> bool`` asks before replacing an existing output file.
    ``training_finished`` is emitted with 'done', 'stopped', 'cancelled' or 'error'.
    """

    training_finished = Signal(str)

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.confirm: Callable[[str, str], bool] = lambda title, text: ask_yes_no(self, title, text)
        self.worker = None
        self.result = None
        self._stop = threading.Event()
        self._bar: progress | None = None
        self._outcome = ""
        self._steps = 0
        self._epochs = 0
        self._last_draw = 0.0
        self._history: dict = {}  # key -> {epoch: [(x, running mean)]} or [(epoch, value)]

        # data
        self.source_combo = QComboBox(self)
        self.source_combo.addItems(["kaggle_3m folder", "Layers in the viewer"])
        self.folder_edit = QLineEdit(self)
        self.folder_edit.setPlaceholderText("folder with patient folders (or one patient)")
        folder_button = QPushButton("…", self)
        folder_button.setMaximumWidth(30)
        folder_button.clicked.connect(self._browse_folder)
        folder_page = QWidget(self)
        row = QHBoxLayout(folder_page)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.folder_edit, 1)
        row.addWidget(folder_button)

        self.pair_image = LayerComboBox(napari_viewer, lambda l: isinstance(l, Image) and l.ndim in (2, 3), self)
        self.pair_labels = LayerComboBox(napari_viewer, lambda l: isinstance(l, Labels), self)
        self.add_pair_button = QPushButton("Add pair", self)
        self.remove_pair_button = QPushButton("Remove", self)
        self.pair_list = QListWidget(self)
        self.pair_list.setMaximumHeight(80)
        layers_page = QWidget(self)
        pform = QFormLayout(layers_page)
        pform.setContentsMargins(0, 0, 0, 0)
        pform.addRow("Image", self.pair_image)
        pform.addRow("Labels", self.pair_labels)
        prow = QHBoxLayout()
        prow.addWidget(self.add_pair_button)
        prow.addWidget(self.remove_pair_button)
        pform.addRow(prow)
        pform.addRow(self.pair_list)
        self.data_pages = QStackedWidget(self)
        self.data_pages.addWidget(folder_page)
        self.data_pages.addWidget(layers_page)
        self.source_combo.currentIndexChanged.connect(self._show_data_page)
        self.add_pair_button.clicked.connect(self._add_current_pair)
        self.remove_pair_button.clicked.connect(self._remove_pair)

        # model and parameters
        self.init_combo = QComboBox(self)
        for label, key in INIT_CHOICES:
            self.init_combo.addItem(label, key)
        self.init_file = QLineEdit(self)
        self.init_file.setPlaceholderText("model.keras to start from")
        self.base_filters = number_box(self, 2, 64, 16, tip="Filters of the first U-Net level (scratch only)")
        self.epochs = number_box(self, 1, 10_000, 10)
        self.batch_size = number_box(self, 1, 512, 8)
        self.learning_rate = number_box(self, 1e-6, 1.0, 1e-4, step=1e-4, decimals=6)
        self.val_fraction = number_box(self, 0.0, 0.5, 0.1, step=0.05, decimals=2,
                                       tip="Share of patients held out for validation (needs 3+ patients)")
        self.augment = QCheckBox("augmentation", self)
        self.augment.setChecked(True)
        self.schedule_combo = QComboBox(self)
        for label, key in SCHEDULES:
            self.schedule_combo.addItem(label, key)
        self.ema = number_box(self, 0.0, 0.9999, 0.0, step=0.001, decimals=4,
                              tip="Validate and save a moving average of the weights with this momentum "
                              "(e.g. 0.995); 0 = off")
        self.crop_size = number_box(self, 0, 256, 0, step=16, suffix=" px",
                                    tip="Train on random crops of this size (faster); 0 = whole slices")
        self.samples_per_epoch = number_box(self, 0, 1_000_000, 0, step=64,
                                            tip="Slices or crops drawn per epoch; 0 = every slice once")
        self.positive_fraction = number_box(self, 0.0, 1.0, 0.5, step=0.05, decimals=2,
                                            tip="Share of drawn samples that show abnormality")
        self.missing_sequence = number_box(
            self, 0.0, 1.0, 0.3, step=0.05, decimals=2,
            tip="Share of training slices whose pre- and/or post-contrast channel is replaced by FLAIR, "
            "so that the model also works when those sequences are missing")
        self.resume = QCheckBox("resume an interrupted run of this model", self)
        self.resume.setToolTip("Continue from <model>.last.keras and <model>.state.json")
        self.out_edit = QLineEdit(str(Path.home() / "lgg_finetuned.keras"), self)
        out_button = QPushButton("…", self)
        out_button.setMaximumWidth(30)
        out_button.clicked.connect(self._browse_out)
        self.init_combo.currentIndexChanged.connect(self._update_init)

        form = QFormLayout()
        form.addRow("Data", self.source_combo)
        form.addRow(self.data_pages)
        form.addRow("Start from", self.init_combo)
        form.addRow("Model file", self.init_file)
        form.addRow("Filters", self.base_filters)
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Learning rate", self.learning_rate)
        form.addRow("Validation", self.val_fraction)
        form.addRow("", self.augment)
        form.addRow("LR schedule", self.schedule_combo)
        form.addRow("Weight EMA", self.ema)
        form.addRow("Crop size", self.crop_size)
        form.addRow("Samples/epoch", self.samples_per_epoch)
        form.addRow("Abnormal share", self.positive_fraction)
        form.addRow("Missing sequences", self.missing_sequence)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(out_button)
        form.addRow("Save to", out_row)
        form.addRow("", self.resume)
        settings = QGroupBox("Training", self)
        settings.setLayout(form)

        self.start_button = QPushButton("Start", self)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("Stop after the current batch; the best model so far is kept")
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.plot = PlotCanvas(napari_viewer, [t for _, t in METRICS], self)

        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addWidget(settings)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.plot, 1)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self._update_init()
        self._show_data_page(self.source_combo.currentIndex())

    # ------------------------------------------------------------------ inputs
    def _show_data_page(self, index: int) -> None:
        # a QStackedWidget is as tall as its tallest page unless hidden pages are ignored
        for i in range(self.data_pages.count()):
            policy = QSizePolicy.Preferred if i == index else QSizePolicy.Ignored
            self.data_pages.widget(i).setSizePolicy(policy, policy)
        self.data_pages.setCurrentIndex(index)
        self.data_pages.adjustSize()

    def _update_init(self, *_args) -> None:
        key = self.init_combo.currentData()
        self.init_file.setEnabled(key == "file")
        self.base_filters.setEnabled(key == "scratch")

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "kaggle_3m folder")
        if path:
            self.folder_edit.setText(path)

    def _browse_out(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the model as", self.out_edit.text(), "Keras (*.keras)")
        if path:
            self.out_edit.setText(path if path.endswith(".keras") else path + ".keras")

    def add_pair(self, image_layer, labels_layer) -> None:
        """Add an (image, labels) layer pair to train on (by layer name)."""
        pair = (image_layer.name, labels_layer.name)
        for i in range(self.pair_list.count()):
            if self.pair_list.item(i).data(256) == pair:
                return
        item = QListWidgetItem(f"{pair[0]}  +  {pair[1]}")
        item.setData(256, pair)
        self.pair_list.addItem(item)

    def _add_current_pair(self) -> None:
        image, labels = self.pair_image.layer(), self.pair_labels.layer()
        if image is None or labels is None:
            self._fail("Choose an image layer and a labels layer to pair")
            return
        self.add_pair(image, labels)

    def _remove_pair(self) -> None:
        for item in self.pair_list.selectedItems():
            self.pair_list.takeItem(self.pair_list.row(item))

    def pairs(self) -> list[tuple]:
        out = []
        for i in range(self.pair_list.count()):
            img_name, lab_name = self.pair_list.item(i).data(256)
            missing = [n for n in (img_name, lab_name) if n not in self.viewer.layers]
            if missing:
                raise InputError(f"layer '{missing[0]}' is no longer in the viewer; remove its pair")
            out.append((self.viewer.layers[img_name], self.viewer.layers[lab_name]))
        return out

    def config(self) -> dict:
        """TrainConfig fields from the form (validated)."""
        out = Path(self.out_edit.text().strip()).expanduser()
        init = self.init_combo.currentData()
        if init == "file":
            init = self.init_file.text().strip()
            if not init or not Path(init).expanduser().is_file():
                raise InputError(f"'{init}': choose an existing .keras model to start from")
            init = str(Path(init).expanduser())
        from ..core.train_config import TrainConfig

        fields = dict(
            out=str(out) if self.out_edit.text().strip() else "", epochs=self.epochs.value(), batch_size=self.batch_size.value(),
            learning_rate=self.learning_rate.value(), val_fraction=self.val_fraction.value(),
            augment=self.augment.isChecked(), init_from=init, base_filters=self.base_filters.value(),
            lr_schedule=self.schedule_combo.currentData(), ema_momentum=self.ema.value() or None,
            crop_size=self.crop_size.value() or None, samples_per_epoch=self.samples_per_epoch.value() or None,
            positive_fraction=self.positive_fraction.value(), missing_sequence=self.missing_sequence.value(),
            resume=self.resume.isChecked(),
        )
        TrainConfig(**fields).validate()
        return fields

    def _data(self):
        if self.source_combo.currentIndex() == FOLDER:
            folder = self.folder_edit.text().strip()
            if not folder or not Path(folder).expanduser().is_dir():
                raise InputError(f"'{folder}': choose a folder of kaggle_3m patients")
            return str(Path(folder).expanduser())
        return stacks_from_layer_pairs(self.pairs())

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        if self.worker is not None:
            return
        try:
            config = self.config()
            data = self._data()
        except LGGSegError as exc:
            self._fail(str(exc))
            return
        out = Path(config["out"])
        if out.exists() and not config["resume"] and not self.confirm(
            "Replace model file?", f"{out} exists. Training replaces it with the best new model "
            "(only once an epoch has ended). Continue?"):
            self.status.setText("Nothing was trained.")
            return
        self._stop = threading.Event()
        stop = self._stop
        self.result = None
        self._history = {}
        self._steps = self._epochs = 0
        self.plot.clear()
        self.progress_bar.setRange(0, 0)  # busy until Keras reports its steps
        self._set_running(True)
        self._bar = progress(total=0, desc="Training the U-Net")

        def target(report):
            return train_task(data, config, stop, report)

        self.worker = create_worker(reporting, target, stop, _start_thread=False)
        self.worker.yielded.connect(self._on_yield)
        self.worker.returned.connect(self._on_returned)
        self.worker.aborted.connect(stop.set)
        self.worker.aborted.connect(lambda: self._on_returned(Outcome(CANCELLED)))
        self.worker.errored.connect(lambda exc: self._on_returned(Outcome("error", error=exc)))
        self.worker.finished.connect(self._on_finished)
        self.status.setText("Starting ...")
        self.worker.start()

    def stop(self) -> None:
        """Stop after the current batch; the best model saved so far stays."""
        self._stop.set()
        if self.worker is not None:
            self.stop_button.setEnabled(False)
            self.status.setText("Stopping after the current batch ...")

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def _on_yield(self, item) -> None:
        if self._outcome:  # a late report after the result arrived
            return
        kind = item[0]
        if kind == "status":
            if not self._stop.is_set():
                self.status.setText(item[1])
        elif kind == "data":
            note = "" if item[1] >= 3 else " (fewer than 3 patients: no validation set)"
            self.status.setText(f"{item[1]} patient(s), {item[2]} slices{note}")
        elif kind == "begin":
            self._epochs, self._steps = item[1], max(item[2], 1)
            total = self._epochs * self._steps
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(0)
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()
        elif kind == "batch":
            epoch, step, logs = item[1], item[2], item[3]
            done = epoch * self._steps + step
            self.progress_bar.setValue(min(done, self.progress_bar.maximum()))
            x = epoch + step / self._steps
            for key, _ in METRICS:
                if key in logs:  # running means over the epoch so far: one line per epoch
                    self._history.setdefault(key, {}).setdefault(epoch, []).append((x, logs[key]))
            if not self._stop.is_set():
                self.status.setText(
                    f"Epoch {epoch + 1}/{self._epochs}, batch {step}/{self._steps}: "
                    f"loss {logs.get('loss', float('nan')):.3f}, Dice {logs.get('dice', float('nan')):.3f}"
                )
            if time.monotonic() - self._last_draw > 0.5:
                self._redraw()
            if self._bar is not None:  # last: napari's progress may process pending events
                self._bar.update(done - self._bar.n)
        elif kind == "epoch":
            epoch, logs = item[1], item[2]
            for key, _ in METRICS:
                if f"val_{key}" in logs:
                    self._history.setdefault(f"val_{key}", []).append((epoch + 1, logs[f"val_{key}"]))
                if key in logs:
                    self._history.setdefault(f"epoch_{key}", []).append((epoch + 1, logs[key]))
            if "val_patient_dice" in logs:
                self._history.setdefault("val_patient_dice", []).append((epoch + 1, logs["val_patient_dice"]))
            self._redraw()

    def _redraw(self) -> None:
        self._last_draw = time.monotonic()
        self.plot.clear()
        for ax, (key, _title) in zip(self.plot.axes, METRICS):
            for points in self._history.get(key, {}).values():
                xs, ys = zip(*points)
                ax.plot(xs, ys, color="#4c9be8", linewidth=1, alpha=0.35)
            if f"epoch_{key}" in self._history:
                xs, ys = zip(*self._history[f"epoch_{key}"])
                ax.plot(xs, ys, "o-", color="#4c9be8", linewidth=1.5, markersize=3, label="train")
            if f"val_{key}" in self._history:
                xs, ys = zip(*self._history[f"val_{key}"])
                ax.plot(xs, ys, "o--", color="#f0a030", linewidth=1, markersize=3, label="val")
            if key == "dice" and "val_patient_dice" in self._history:
                xs, ys = zip(*self._history["val_patient_dice"])
                ax.plot(xs, ys, "s:", color="#e05050", linewidth=1, markersize=3, label="val per patient")
        self.plot.axes[-1].set_xlabel("epoch", color=self.plot.colors["fg"], fontsize=7)
        self.plot.draw()

    def _on_returned(self, outcome: Outcome) -> None:
        if self._outcome:  # aborted and errored may both arrive
            return
        if outcome.status == DONE:
            self.result = res = outcome.value
            self._redraw()
            if res.best_epoch is None:
                self.status.setText(
                    "Stopped before a model was saved; "
                    + (f"{res.out} is unchanged." if res.out.exists() else "no model file was written.")
                )
                self._outcome = "stopped"
                return
            src = _models.MODELS.add(res.out, _models.TRAINED)
            score = f", validation Dice {res.best_val_patient_dice:.3f}" if res.best_val_patient_dice is not None else ""
            how = "Stopped" if res.stopped_early else "Done"
            self.status.setText(
                f"{how} after {res.epochs_run} epoch(s). Saved the best model (epoch {res.best_epoch + 1}"
                f"{score}) to {res.out}; it is now offered as '{src.label}' in the Segment widget."
            )
            show_info(f"Trained model saved to {res.out}")
            self._outcome = "stopped" if res.stopped_early else DONE
        elif outcome.status == CANCELLED:
            self.status.setText("Stopped before training began; nothing was saved.")
            self._outcome = CANCELLED
        else:
            self._fail(readable_error(outcome.error))
            self._outcome = "error"

    def _on_finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.worker = None
        self._set_running(False)
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)
        outcome, self._outcome = self._outcome or "error", ""
        self.training_finished.emit(outcome)

    def _fail(self, message: str) -> None:
        self.status.setText(message)
        show_error(message)
