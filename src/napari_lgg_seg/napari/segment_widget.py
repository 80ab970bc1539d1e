"""Segment dock widget: run a U-Net on an image layer and add/update a Labels layer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import Cancelled, LGGSegError
from . import _models
from ._layers import (
    SEGMENTATION_COLORS,
    SEGMENTATION_SUFFIX,
    format_volume,
    image_volume,
    readable_error,
    segmentation_metadata,
    volume_summary,
    labels_digest,
    was_edited,
)
from ._qt_common import LayerComboBox, ask_yes_no, number_box
from ._tasks import CANCELLED, DONE, Outcome, reporting


def _is_segmentable(layer) -> bool:
    return isinstance(layer, Image) and not layer.multiscale and layer.ndim in (2, 3)


def segment_task(source, volume: np.ndarray, threshold: float, batch_size: int, min_size: int,
                 stop: threading.Event, report: Callable) -> tuple[np.ndarray, dict]:
    """Load the model and segment; runs off the GUI thread. Reports ('status', text) and
    ('progress', done, total); raises Cancelled when ``stop`` is set."""
    from ..core.inference import segment_volume

    report(("status", f"Loading {source.label} ..."))
    model = _models.load(source)
    if stop.is_set():
        raise Cancelled("segmentation cancelled before it started")

    def on_batch(done: int, total: int) -> bool:
        report(("progress", done, total))
        return not stop.is_set()

    labels = segment_volume(volume, model, threshold=threshold, batch_size=batch_size,
                            progress=on_batch, min_size=min_size)
    return labels, _models.model_info(model)


class SegmentWidget(QWidget):
    """Segment the FLAIR abnormality of the chosen image layer.

    ``confirm(title, text) -> bool`` asks before replacing a hand-edited segmentation;
    tests replace it. ``run_finished`` is emitted with 'done', 'cancelled' or 'error'.
    """

    run_finished = Signal(str)

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.confirm: Callable[[str, str], bool] = lambda title, text: ask_yes_no(self, title, text)
        self.worker = None
        self._stop = threading.Event()
        self._bar: progress | None = None
        self._outcome = ""
        self._digest_at_start: str | None = None

        self.image_combo = LayerComboBox(napari_viewer, _is_segmentable, self)
        self.model_combo = QComboBox(self)
        self.browse_button = QPushButton("Browse…", self)
        self.browse_button.setToolTip("Add a .keras model file to the choices")
        self.threshold = number_box(self, 0.01, 0.99, 0.5, step=0.05, decimals=2,
                                    tip="Probability above which a voxel is abnormal")
        self.batch_size = number_box(self, 1, 512, 8, tip="Slices per model call; smaller uses less memory")
        self.min_size = number_box(self, 0, 10_000_000, 0, suffix=" voxels",
                                   tip="Remove 3D connected components smaller than this (0 keeps all)")
        self.run_button = QPushButton("Run", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.result = QLabel("", self)
        self.result.setWordWrap(True)

        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Model", model_row)
        form.addRow("Threshold", self.threshold)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Min. component", self.min_size)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.result)
        layout.addStretch(1)

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.browse_button.clicked.connect(self._browse)
        _models.MODELS.changed.connect(self._refresh_models)
        self._refresh_models()

    # ------------------------------------------------------------------ models
    def _refresh_models(self) -> None:
        try:
            current = self.model_combo.currentData()
        except RuntimeError:  # widget deleted; psygnal drops us soon
            return
        before = {self.model_combo.itemData(i) for i in range(self.model_combo.count())}
        sources = _models.MODELS.items()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for src in sources:
            self.model_combo.addItem(src.label, src)
            if src.path:
                self.model_combo.setItemData(self.model_combo.count() - 1, src.path, 3)  # tooltip
        self.model_combo.blockSignals(False)
        fresh = [s for s in sources if s.kind == _models.TRAINED and s not in before]
        if before and fresh:
            self.model_combo.setCurrentIndex(sources.index(fresh[-1]))  # just trained: offer it
        elif current in sources:
            self.model_combo.setCurrentIndex(sources.index(current))

    def add_model_file(self, path: str | Path) -> None:
        """Add a .keras file to the shared model choices and select it."""
        src = _models.MODELS.add(path, _models.FILE)
        self.select_model(src)

    def select_model(self, source) -> None:
        for i in range(self.model_combo.count()):
            if self.model_combo.itemData(i) == source:
                self.model_combo.setCurrentIndex(i)
                return
        raise ValueError(f"{source} is not among the model choices")

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a Keras model", "", "Keras models (*.keras)")
        if path:
            self.add_model_file(path)

    # ------------------------------------------------------------------ running
    def result_layer_name(self, image_layer) -> str:
        return f"{image_layer.name}{SEGMENTATION_SUFFIX}"

    def _existing_result(self, image_layer):
        name = self.result_layer_name(image_layer)
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], Labels):
            return self.viewer.layers[name]
        return None

    def _may_replace(self, layer) -> bool:
        if layer is None or not was_edited(layer):
            return True
        return self.confirm(
            "Replace edited segmentation?",
            f"'{layer.name}' was edited by hand since it was computed. "
            "Running again replaces it, edits included. Continue?",
        )

    def run(self) -> None:
        if self.worker is not None:
            return
        image_layer = self.image_combo.layer()
        if image_layer is None:
            self._fail("Choose an image layer to segment (open a patient folder first)")
            return
        source = self.model_combo.currentData()
        if source is None:
            self._fail("Choose a model")
            return
        try:
            volume = image_volume(image_layer)
        except LGGSegError as exc:
            self._fail(str(exc))
            return
        existing = self._existing_result(image_layer)
        if not self._may_replace(existing):
            self.status.setText("Kept the edited segmentation; nothing was run.")
            return
        self._digest_at_start = labels_digest(existing.data) if existing is not None else None
        params = dict(threshold=self.threshold.value(), batch_size=self.batch_size.value(),
                      min_size=self.min_size.value())
        self._stop = threading.Event()
        stop = self._stop
        n = volume.shape[0] if volume.ndim - int(bool(image_layer.rgb)) == 3 else 1
        self._set_running(True)
        self.progress_bar.setRange(0, n)
        self.progress_bar.setValue(0)
        self.result.setText("")
        self._bar = progress(total=n, desc=f"Segmenting {image_layer.name}")

        def target(report):
            return segment_task(source, volume, stop=stop, report=report, **params)

        self.worker = create_worker(reporting, target, stop, _start_thread=False)
        self.worker.yielded.connect(self._on_yield)
        self.worker.returned.connect(lambda outcome: self._on_returned(outcome, image_layer, params))
        self.worker.aborted.connect(stop.set)
        self.worker.aborted.connect(lambda: self._on_returned(Outcome(CANCELLED), image_layer, params))
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(self._on_finished)
        self.status.setText(f"Segmenting {image_layer.name} with {source.label} ...")
        self.worker.start()

    def cancel(self) -> None:
        """Stop after the current batch; nothing is added."""
        self._stop.set()
        if self.worker is not None:
            self.status.setText("Cancelling after the current batch ...")
            self.cancel_button.setEnabled(False)

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _on_yield(self, item) -> None:
        if self._outcome:  # a late report after the result arrived
            return
        if item[0] == "status":
            self.status.setText(item[1])
        elif item[0] == "progress":
            done, total = item[1], item[2]
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(done)
            if not self._stop.is_set():
                self.status.setText(f"Segmented {done} of {total} slices")
            if self._bar is not None:  # last: napari's progress may process pending events
                self._bar.update(done - self._bar.n)

    def _on_returned(self, outcome: Outcome, image_layer, params: dict) -> None:
        if outcome.status == DONE:
            labels, info = outcome.value
            try:
                self._show_result(image_layer, labels, info, params)
                self._outcome = DONE
            except Exception as exc:  # noqa: BLE001 - e.g. the image layer was deleted
                self._fail(readable_error(exc))
                self._outcome = "error"
        elif outcome.status == CANCELLED:
            self.status.setText("Cancelled; no layer was added or changed.")
            self._outcome = CANCELLED
        else:
            self._fail(readable_error(outcome.error))
            self._outcome = "error"

    def _on_errored(self, exc) -> None:  # only for bugs in the generator itself
        self._fail(readable_error(exc))
        self._outcome = "error"

    def _on_finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.worker = None
        self._set_running(False)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1 if self._outcome == DONE else 0)
        outcome, self._outcome = self._outcome or "error", ""
        self.run_finished.emit(outcome)

    def _fail(self, message: str) -> None:
        self.status.setText(message)
        show_error(message)

    def _show_result(self, image_layer, labels: np.ndarray, info: dict, params: dict) -> None:
        meta = segmentation_metadata(info, threshold=params["threshold"], min_size=params["min_size"],
                                     image_layer=image_layer, labels=labels)
        existing = self._existing_result(image_layer)
        edited_meanwhile = existing is not None and labels_digest(existing.data) != self._digest_at_start
        if edited_meanwhile and not self._may_replace(existing):
            self.status.setText("Kept the edited segmentation; the new result was dropped.")
            return
        scale, translate = tuple(image_layer.scale), tuple(image_layer.translate)
        if existing is not None:
            existing.data = labels
            existing.scale, existing.translate = scale, translate
            existing.metadata = meta  # replaced as a whole so that the change is evented
            layer = existing
            verb = "Updated"
        else:
            from napari.utils.colormaps import DirectLabelColormap

            layer = self.viewer.add_labels(
                labels, name=self.result_layer_name(image_layer), scale=scale, translate=translate,
                metadata=meta, opacity=0.6, colormap=DirectLabelColormap(color_dict=SEGMENTATION_COLORS),
            )
            verb = "Added"
        summary = volume_summary(labels, scale)
        self.result.setText(f"{format_volume(summary)}\nModel: {meta['model']} {meta['version']}".strip())
        self.status.setText(f"{verb} '{layer.name}'.")
        show_info(f"{verb} '{layer.name}': {format_volume(summary)}")
