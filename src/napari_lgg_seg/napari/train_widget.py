"""Train / fine-tune dock widget: core.training.train in a worker, with live curves.

The settings form is generated from ``core.train_config.TrainConfig`` (magicgui value
widgets named like its fields, in ``widget.form``) and remembered across restarts; the
data pages, the list of image + labels pairs and the live plots are plain Qt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import Cancelled, InputError, LGGSegError
from ..core.train_config import TrainConfig
from . import _models
from ._forms import SettingsStore, dataclass_widgets, values_of
from ._layers import readable_error, stacks_from_layer_pairs
from ._qt_common import PlotCanvas, ask_yes_no, follow_layer_list, follow_renames, sync_choice_names
from ._tasks import BatchEnd, DataRead, EpochEnd, Outcome, Result, Status, TaskRunner, TrainBegin

FOLDER, LAYERS = 0, 1
INIT_CHOICES = [("Bundled model", _models.BUNDLED), ("Scratch", "scratch"), ("Model file", "file")]
METRICS = (("loss", "Loss"), ("dice", "Dice"), ("iou", "IoU"))
NO_VALIDATION_NOTE = ("No validation set (fewer than 3 patients, or validation share 0): the model saved as "
                      "'best' is the epoch with the lowest training loss, which says little about new patients.")

# How TrainConfig fields are shown; the form holds these fields, in this order.
BASIC_FIELDS = ("out", "epochs", "batch_size", "learning_rate", "val_fraction", "augment", "resume")
ADVANCED_FIELDS = ("base_filters", "lr_schedule", "ema_momentum", "crop_size", "samples_per_epoch",
                   "positive_fraction", "small_lesion_power", "missing_sequence", "flair_only",
                   "context_slices")
FIELD_SPECS: dict[str, dict] = {
    "out": dict(label="save to", widget_type="FileEdit", mode="w", filter="*.keras",
                default=str(Path.home() / "lgg_finetuned.keras"), annotation=Path,
                tooltip="The .keras file the best model is written to"),
    "epochs": dict(default=10, min=1, max=10_000),
    "batch_size": dict(label="batch size", default=8, min=1, max=512),
    "learning_rate": dict(label="learning rate", default=1e-4, min=1e-6, max=1.0, step=1e-5),
    "val_fraction": dict(label="validation", min=0.0, max=0.5, step=0.05,
                         tooltip="Share of patients held out for validation (needs 3+ patients)"),
    "augment": dict(label="augmentation"),
    "resume": dict(label="resume", tooltip="Resume an interrupted run of this model from <model>.last.keras"),
    "base_filters": dict(label="filters", min=2, max=64, tooltip="Filters of the first U-Net level (scratch only)"),
    "lr_schedule": dict(label="LR schedule", widget_type="ComboBox",
                        choices=[("Halve on plateau", "plateau"), ("Cosine decay", "cosine")]),
    "ema_momentum": dict(label="weight EMA", none_if=0.0, min=0.0, max=0.9999, step=0.001,
                         tooltip="Validate and save a moving average of the weights with this momentum "
                         "(e.g. 0.995); 0 = off"),
    "crop_size": dict(label="crop size", none_if=0, min=0, max=256, step=16,
                      tooltip="Train on random crops of this size in px (faster); 0 = whole slices"),
    "samples_per_epoch": dict(label="samples/epoch", none_if=0, min=0, max=1_000_000, step=64,
                              tooltip="Slices or crops drawn per epoch; 0 = every slice once"),
    "positive_fraction": dict(label="abnormal share", min=0.0, max=1.0, step=0.05,
                              tooltip="Share of drawn samples that show abnormality"),
    "small_lesion_power": dict(label="small-lesion boost", min=0.0, max=2.0, step=0.1,
                               tooltip="Draw slices with abnormality with weight (abnormal pixels)^-boost, "
                               "so small abnormalities are seen more often; 0 = uniformly"),
    "missing_sequence": dict(label="missing sequences", min=0.0, max=1.0, step=0.05,
                             tooltip="Share of training slices whose pre- and/or post-contrast channel is "
                             "replaced by FLAIR, so that the model also works when those sequences are missing"),
    "context_slices": dict(label="context slices", min=0, max=3,
                           tooltip="2.5D input: each slice goes in with this many neighbours on either "
                           "side (0 = as the model it starts from; single slices from scratch). A model "
                           "without context is widened so that it starts out as it was"),
    "flair_only": dict(label="FLAIR only", tooltip="Train and validate on FLAIR alone (all three channels "
                       "FLAIR): a model for stacks without pre- and post-contrast"),
}


def _floats(logs) -> dict[str, float]:
    out = {}
    for k, v in (logs or {}).items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def make_progress_callback(report: Callable):
    """A Keras callback that reports TrainBegin, BatchEnd and EpochEnd. Imports Keras."""
    import keras

    class ProgressCallback(keras.callbacks.Callback):
        epoch = 0

        def on_train_begin(self, logs=None):
            report(TrainBegin(int(self.params.get("epochs") or 0), int(self.params.get("steps") or 0)))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            report(BatchEnd(self.epoch, batch + 1, _floats(logs)))

        def on_epoch_end(self, epoch, logs=None):
            report(EpochEnd(epoch, _floats(logs)))

    return ProgressCallback()


def train_task(data, config: dict, stop, report: Callable):
    """Read the data, build the config and train; runs off the GUI thread.

    ``data`` is a kaggle_3m folder path or a list of PatientStacks. Returns a TrainResult.
    """
    report(Status("Loading TensorFlow ..."))
    from ..core.dataset import slices_from_stacks
    from ..core.training import load_training_data, train

    if isinstance(data, (str, Path)):
        report(Status(f"Reading patients under {data} ..."))
        slices = load_training_data(data)
    else:
        report(Status("Preparing slices ..."))
        slices = slices_from_stacks(data)
    report(DataRead(len(slices.patient_ids()), len(slices)))
    if stop.is_set():
        raise Cancelled("training stopped before it started")
    cfg = dict(config)
    init = cfg["init_from"]
    if init != "scratch":
        from ..core.model import base_filters_of

        report(Status("Loading the starting model ..."))
        cfg["base_filters"] = base_filters_of(init)
    report(Status("Preparing the model… (TensorFlow builds the training step; this takes a while "
                  "before the first batch)"))
    return train(slices, TrainConfig(**cfg), callbacks=[make_progress_callback(report)],
                 stop_event=stop, verbose=0)


def _layer_choices(viewer, accept: Callable) -> Callable:
    return lambda _widget=None: [(layer.name, layer) for layer in reversed(viewer.layers) if accept(layer)]


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
        self.result = None
        self._steps = 0
        self._epochs = 0
        self._last_draw = 0.0
        self._history: dict = {}  # key -> {epoch: [(x, running mean)]} or [(epoch, value)]

        # data: a folder, or pairs of layers
        self.source_combo = QComboBox(self)
        self.source_combo.addItems(["kaggle_3m folder", "Layers in the viewer"])
        self.folder = FileEdit(name="folder", label="folder", mode="d",
                               tooltip="A folder of kaggle_3m patient folders (or one patient)")
        self.pair_image = ComboBox(name="pair_image", label="image", choices=_layer_choices(
            napari_viewer, lambda l: isinstance(l, Image) and l.ndim in (2, 3)))
        self.pair_labels = ComboBox(name="pair_labels", label="labels", choices=_layer_choices(
            napari_viewer, lambda l: isinstance(l, Labels)))
        self.add_pair_button = QPushButton("Add pair", self)
        self.remove_pair_button = QPushButton("Remove", self)
        self.pair_list = QListWidget(self)
        self.pair_list.setMaximumHeight(80)
        folder_page = Container(widgets=[self.folder]).native
        layers_page = QWidget(self)
        pbox = QVBoxLayout(layers_page)
        pbox.setContentsMargins(0, 0, 0, 0)
        pbox.addWidget(Container(widgets=[self.pair_image, self.pair_labels]).native)
        prow = QHBoxLayout()
        prow.addWidget(self.add_pair_button)
        prow.addWidget(self.remove_pair_button)
        pbox.addLayout(prow)
        pbox.addWidget(self.pair_list)
        self.data_pages = QStackedWidget(self)
        self.data_pages.addWidget(folder_page)
        self.data_pages.addWidget(layers_page)
        self.source_combo.currentIndexChanged.connect(self._show_data_page)
        self.add_pair_button.clicked.connect(self._add_current_pair)
        self.remove_pair_button.clicked.connect(self._remove_pair)
        follow_layer_list(napari_viewer, self._on_layers_changed, self._reset_layer_choices)

        # settings: generated from TrainConfig
        self.init_from = ComboBox(name="init_from", label="start from", choices=[(t, k) for t, k in INIT_CHOICES])
        self.init_file = FileEdit(name="init_file", label="model file", mode="r", filter="*.keras",
                                  tooltip="The .keras model to start from")
        basic = dataclass_widgets(TrainConfig, FIELD_SPECS, only=BASIC_FIELDS)
        advanced = dataclass_widgets(TrainConfig, FIELD_SPECS, only=ADVANCED_FIELDS)
        self.form = Container(widgets=[self.init_from, self.init_file, *basic], name="form")
        self.advanced = Container(widgets=advanced, name="advanced")
        self.form_widgets = [*basic, *advanced]
        self.advanced_button = QToolButton(self)
        self.advanced_button.setText("Advanced settings")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.advanced_button.setArrowType(Qt.RightArrow)
        self.advanced_button.toggled.connect(self._show_advanced)
        self.advanced.native.setVisible(False)
        self.init_from.changed.connect(self._update_init)

        data_form = QFormLayout()
        data_form.addRow("Data", self.source_combo)
        data_form.addRow(self.data_pages)
        inner = QWidget()
        inner_layout = QVBoxLayout(inner)
        inner_layout.setContentsMargins(0, 0, 0, 0)
        inner_layout.addLayout(data_form)
        inner_layout.addWidget(self.form.native)
        inner_layout.addWidget(self.advanced_button)
        inner_layout.addWidget(self.advanced.native)
        inner_layout.addStretch(1)
        self.scroll = QScrollArea(self)  # the dock fits small screens; Start stays visible
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.scroll.setWidget(inner)
        self.scroll.setMinimumHeight(60)

        self.start_button = QPushButton("Start", self)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("Stop after the current batch; the best model so far is kept")
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.note = QLabel(NO_VALIDATION_NOTE, self)  # stays until the next start
        self.note.setWordWrap(True)
        self.note.setVisible(False)
        self.plot = PlotCanvas(napari_viewer, [t for _, t in METRICS], self, height=1.1)
        self.plot.canvas.setMinimumHeight(90)

        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.scroll, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.note)
        layout.addWidget(self.plot, 1)
        self.runner = TaskRunner(self.progress_bar)
        self.runner.running_changed.connect(self._set_running)
        self.runner.finished.connect(self._emit_finished)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)

        self.settings = SettingsStore("train", [self.folder, self.init_from, self.init_file, *self.form_widgets])
        self.settings.restore()
        self.settings.connect()
        self._update_init()
        self._show_data_page(self.source_combo.currentIndex())

    def __getattr__(self, name: str):
        """The settings widgets by field name: ``widget.epochs.value = 3``."""
        for w in self.__dict__.get("form_widgets", ()):
            if w.name == name:
                return w
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def worker(self):
        """The running napari worker, or None."""
        return self.runner.worker

    # ------------------------------------------------------------------ inputs
    def _show_data_page(self, index: int) -> None:
        # a QStackedWidget is as tall as its tallest page unless hidden pages are ignored
        for i in range(self.data_pages.count()):
            policy = QSizePolicy.Preferred if i == index else QSizePolicy.Ignored
            self.data_pages.widget(i).setSizePolicy(policy, policy)
        self.data_pages.setCurrentIndex(index)
        self.data_pages.adjustSize()

    def _show_advanced(self, shown: bool) -> None:
        self.advanced.native.setVisible(shown)
        self.advanced_button.setArrowType(Qt.DownArrow if shown else Qt.RightArrow)

    def _update_init(self, *_args) -> None:
        key = self.init_from.value
        self.init_file.enabled = key == "file"
        self.base_filters.enabled = key == "scratch"

    def _on_layers_changed(self, event=None) -> None:
        follow_renames(event, self._reset_layer_choices)
        self._reset_layer_choices()

    def _reset_layer_choices(self, *_args) -> None:
        try:
            sync_choice_names(self.pair_image, self.pair_labels)  # keep the choices of renamed layers
            self.pair_image.reset_choices()
            self.pair_labels.reset_choices()
            self._relabel_pairs()
        except RuntimeError:  # the Qt widget is gone
            pass

    def add_pair(self, image_layer, labels_layer) -> None:
        """Add an (image, labels) layer pair to train on; the pair holds the layers
        themselves, so renaming a layer keeps it."""
        for i in range(self.pair_list.count()):
            img, lab = self.pair_list.item(i).data(256)
            if img is image_layer and lab is labels_layer:
                return
        item = QListWidgetItem()
        item.setData(256, (image_layer, labels_layer))
        self.pair_list.addItem(item)
        for layer in (image_layer, labels_layer):
            layer.events.name.connect(self._relabel_pairs)
        self._relabel_pairs()

    def _relabel_pairs(self, *_args) -> None:
        for i in range(self.pair_list.count()):
            item = self.pair_list.item(i)
            img, lab = item.data(256)
            gone = [l.name for l in (img, lab) if l not in self.viewer.layers]
            text = f"{img.name}  +  {lab.name}"
            item.setText(text + (f"  (closed: {', '.join(gone)})" if gone else ""))

    def _add_current_pair(self) -> None:
        image, labels = self.pair_image.value, self.pair_labels.value
        if image is None or labels is None:
            self._fail("Choose an image layer and a labels layer to pair")
            return
        self.add_pair(image, labels)

    def _remove_pair(self) -> None:
        for item in self.pair_list.selectedItems():
            self.pair_list.takeItem(self.pair_list.row(item))

    def pairs(self) -> list[tuple]:
        """The (image, labels) layer pairs; InputError when a layer was closed."""
        out = []
        for i in range(self.pair_list.count()):
            img, lab = self.pair_list.item(i).data(256)
            for layer in (img, lab):
                if layer not in self.viewer.layers:
                    raise InputError(f"layer '{layer.name}' is no longer in the viewer; remove its pair")
            out.append((img, lab))
        return out

    def config(self) -> dict:
        """TrainConfig fields from the form (validated)."""
        fields = values_of(self.form_widgets)
        init = self.init_from.value
        if init == "file":
            path = self.init_file.value
            init = "" if path is None or str(path) == "." else str(Path(path).expanduser())
            if not init or not Path(init).is_file():
                raise InputError(f"'{init}': choose an existing .keras model to start from")
        fields["init_from"] = init
        fields["out"] = str(Path(fields["out"]).expanduser()) if fields["out"] else ""
        TrainConfig(**fields).validate()
        return fields

    def _data(self):
        if self.source_combo.currentIndex() == FOLDER:
            value = self.folder.value
            folder = "" if value is None or str(value) == "." else str(value)
            if not folder or not Path(folder).expanduser().is_dir():
                raise InputError(f"'{folder}': choose a folder of kaggle_3m patients")
            return str(Path(folder).expanduser())
        return stacks_from_layer_pairs(self.pairs())

    # ------------------------------------------------------------------ running
    def start(self) -> bool:
        """Start training with the form's settings; False when refused (see the status)."""
        if self.runner.running:
            return False
        try:
            config = self.config()
            data = self._data()
        except LGGSegError as exc:
            return self._fail(str(exc))
        out = Path(config["out"])
        if out.exists() and not config["resume"] and not self.confirm(
            "Replace model file?", f"{out} exists. Training replaces it with the best new model "
            "(only once an epoch has ended). Continue?"):
            self.status.setText("Nothing was trained.")
            return False
        self.result = None
        self._history = {}
        self._steps = self._epochs = 0
        self.plot.clear()
        self.note.setVisible(False)
        self.status.setText("Starting ...")
        self.runner.start(lambda report, stop: train_task(data, config, stop, report),
                          desc="Training the U-Net", total=0, on_report=self._on_report,
                          on_result=self._on_result)
        return True

    def stop(self) -> None:
        """Stop after the current batch; the best model saved so far stays."""
        self.runner.stop()
        if self.runner.running:
            self.stop_button.setEnabled(False)
            self.status.setText("Stopping after the current batch ...")

    def wait(self, timeout: float | None = None) -> Outcome | None:
        """Process events until training ends (for scripts); returns the outcome."""
        return self.runner.wait(timeout)

    def _emit_finished(self, outcome: Outcome) -> None:
        try:
            self.training_finished.emit(outcome.value)
        except RuntimeError:  # the Qt widget is gone (napari closed during training)
            pass

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def _on_report(self, item) -> None:
        stopping = self.runner.stopping
        if isinstance(item, Status):
            if not stopping:
                self.status.setText(item.text)
        elif isinstance(item, DataRead):
            self.status.setText(f"{item.patients} patient(s), {item.slices} slices")
            self.note.setVisible(item.patients < 3 or not self.val_fraction.value)
        elif isinstance(item, TrainBegin):
            self._epochs, self._steps = item.epochs, max(item.steps, 1)
            self.runner.set_progress(0, self._epochs * self._steps)
        elif isinstance(item, BatchEnd):
            epoch, step, logs = item.epoch, item.step, item.logs
            x = epoch + step / self._steps
            for key, _ in METRICS:
                if key in logs:  # running means over the epoch so far: one line per epoch
                    self._history.setdefault(key, {}).setdefault(epoch, []).append((x, logs[key]))
            if not stopping:
                self.status.setText(
                    f"Epoch {epoch + 1}/{self._epochs}, batch {step}/{self._steps}: "
                    f"loss {logs.get('loss', float('nan')):.3f}, Dice {logs.get('dice', float('nan')):.3f}"
                )
            if time.monotonic() - self._last_draw > 0.5:
                self._redraw()
            self.runner.set_progress(epoch * self._steps + step, self._epochs * self._steps)
        elif isinstance(item, EpochEnd):
            epoch, logs = item.epoch, item.logs
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

    def _on_result(self, result: Result) -> Outcome:
        if result.outcome is Outcome.DONE:
            self.result = res = result.value
            self._redraw()
            if res.best_epoch is None:
                self.status.setText(
                    "Stopped before a model was saved; "
                    + (f"{res.out} is unchanged." if res.out.exists() else "no model file was written.")
                )
                return Outcome.STOPPED
            src = _models.MODELS.add(res.out, _models.TRAINED)
            score = f", validation Dice {res.best_val_patient_dice:.3f}" if res.best_val_patient_dice is not None else ""
            how = "Stopped" if res.stopped_early else "Done"
            self.status.setText(
                f"{how} after {res.epochs_run} epoch(s). Saved the best model (epoch {res.best_epoch + 1}"
                f"{score}) to {res.out}; it is now offered as '{src.label}' in the Segment widget."
            )
            show_info(f"Trained model saved to {res.out}")
            return Outcome.STOPPED if res.stopped_early else Outcome.DONE
        if result.outcome is Outcome.CANCELLED:
            self.status.setText("Stopped before training began; nothing was saved.")
            return Outcome.CANCELLED
        self._fail(readable_error(result.error))
        return Outcome.ERROR

    def _fail(self, message: str) -> bool:
        self.status.setText(message)
        show_error(message)
        return False
