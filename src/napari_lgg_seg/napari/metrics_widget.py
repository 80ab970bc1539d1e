"""Metrics dock widget: Dice and IoU of two masks, per volume and per slice.

The choosers and buttons are magicgui widgets (``widget.controls``); the per-slice table
and plot are plain Qt. The table lists slices with abnormality (in either mask) first.
"""

from __future__ import annotations

import csv
from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, Container, PushButton
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import InputError, LGGSegError
from ..core.io import atomic_write
from ..core.metrics import dice, iou, per_slice
from ._layers import mask_from_layer, spatial_shape
from ._forms import SettingsStore
from ._qt_common import PlotCanvas, follow_layer_list, follow_renames, sync_choice_names

COLUMNS = ("slice", "dice", "iou", "voxels_a", "voxels_b")
HEADERS = ("Slice", "Dice", "IoU", "Voxels A", "Voxels B")


def _is_mask_candidate(layer) -> bool:
    return isinstance(layer, Labels) or (isinstance(layer, Image) and not layer.rgb and not layer.multiscale)


def compare_layers(layer_a, layer_b) -> tuple[dict, list[dict]]:
    """Volume Dice/IoU and per-slice rows of two mask layers; InputError on a shape mismatch."""
    shape_a, shape_b = spatial_shape(layer_a), spatial_shape(layer_b)
    if shape_a != shape_b:
        raise InputError(
            f"'{layer_a.name}' {shape_a} and '{layer_b.name}' {shape_b} differ in shape; "
            "Dice and IoU compare two masks of one shape"
        )
    a, b = mask_from_layer(layer_a), mask_from_layer(layer_b)
    total = {"dice": dice(a, b), "iou": iou(a, b), "voxels_a": int(a.sum()), "voxels_b": int(b.sum())}
    return total, per_slice(a, b)


def abnormal_first(rows: list[dict], hide_empty: bool = False) -> list[dict]:
    """Rows of slices with abnormality in either mask first (in slice order), then the
    slices empty in both (which score 1 by definition), unless ``hide_empty``."""
    shown = [r for r in rows if r["voxels_a"] or r["voxels_b"]]
    empty = [] if hide_empty else [r for r in rows if not (r["voxels_a"] or r["voxels_b"])]
    return shown + empty


def write_rows_csv(path: str | Path, rows: list[dict], names: tuple[str, str]) -> Path:
    """Write per-slice rows as CSV, atomically; the header names the two layers."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["slice", "dice", "iou", f"voxels_a ({names[0]})", f"voxels_b ({names[1]})"])
            for r in rows:
                w.writerow([r["slice"], f"{r['dice']:.6f}", f"{r['iou']:.6f}", r["voxels_a"], r["voxels_b"]])

    return atomic_write(path, write)


class MetricsWidget(QWidget):
    """Compare two masks (Labels, or binary Image layers) of the same shape."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.rows: list[dict] = []  # slice order, as exported
        self.table_rows: list[dict] = []  # as shown: slices with abnormality first
        self.total: dict | None = None
        self._names = ("A", "B")
        self._layer = None  # mask A of the rows shown: its slices are found in the world by its scale

        self.layer_a = ComboBox(name="layer_a", label="mask A", choices=self._mask_choices)
        self.layer_b = ComboBox(name="layer_b", label="mask B", choices=self._mask_choices)
        if len(self.layer_b.choices) > 1:
            self.layer_b.value = self.layer_b.choices[1]
        self.hide_empty = CheckBox(name="hide_empty", value=False, text="hide slices empty in both",
                                   tooltip="Slices where both masks are empty score 1; leave them out of the table "
                                           "(Export CSV… still writes every slice)")
        self.compute_button = PushButton(name="compute_button", text="Compute")
        self.export_button = PushButton(name="export_button", text="Export CSV…", enabled=False,
                                        tooltip="Save the metrics of every slice, in slice order, whatever "
                                                "the table hides or how it is sorted")
        buttons = Container(widgets=[self.compute_button, self.export_button], layout="horizontal",
                            labels=False)
        buttons.margins = (0, 0, 0, 0)
        self.controls = Container(widgets=[self.layer_a, self.layer_b, buttons])
        self.controls.margins = (0, 0, 0, 0)
        self.summary = QLabel("", self)
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(HEADERS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.setMinimumHeight(50)
        self.plot = PlotCanvas(napari_viewer, ["Per-slice overlap"], self, height=1.6)

        table_box = QWidget(self)  # the checkbox sits with the table it filters
        table_layout = QVBoxLayout(table_box)
        table_layout.setContentsMargins(0, 0, 0, 0)
        table_layout.addWidget(self.hide_empty.native)
        table_layout.addWidget(self.table, 1)
        splitter = QSplitter(Qt.Vertical, self)  # table and plot share what height there is
        splitter.addWidget(table_box)
        splitter.addWidget(self.plot)
        layout = QVBoxLayout(self)
        layout.addWidget(self.controls.native)
        layout.addWidget(self.summary)
        layout.addWidget(splitter, 1)

        # remembered across restarts, as the other widgets' settings (README: Using the widgets)
        self.settings = SettingsStore("metrics", [self.hide_empty])
        self.settings.restore()
        self.settings.connect()
        self.compute_button.changed.connect(self.compute)
        self.export_button.changed.connect(self._export_dialog)
        self.hide_empty.changed.connect(lambda *_: self._fill_table(self.rows))
        self.table.cellClicked.connect(self._go_to_slice)
        follow_layer_list(napari_viewer, self._on_layers_changed, self._reset_choices)

    def _on_layers_changed(self, event=None) -> None:
        follow_renames(event, self._reset_choices)
        self._reset_choices()

    def _mask_choices(self, _widget=None) -> list[tuple[str, object]]:
        return [(layer.name, layer) for layer in reversed(self.viewer.layers) if _is_mask_candidate(layer)]

    def _reset_choices(self, *_args) -> None:
        try:
            sync_choice_names(self.layer_a, self.layer_b)  # keep the choices of renamed layers
            self.layer_a.reset_choices()
            self.layer_b.reset_choices()
        except RuntimeError:  # the Qt widget is gone
            pass

    def set_layers(self, layer_a, layer_b) -> None:
        """Choose the two masks (layers or layer names)."""
        for combo, layer in ((self.layer_a, layer_a), (self.layer_b, layer_b)):
            if isinstance(layer, str):
                if layer not in self.viewer.layers:
                    raise ValueError(f"no layer {layer!r} among the choices")
                layer = self.viewer.layers[layer]
            combo.value = layer

    def compute(self, *_args) -> bool:
        """Compare the two chosen masks; False (and a message) when they cannot be compared."""
        a, b = self.layer_a.value, self.layer_b.value
        if a is None or b is None:
            return self._fail("Choose two mask layers (Labels, or binary images)")
        if a == b:  # e.g. after the chosen one was closed: Dice 1 would say nothing
            return self._fail(f"Mask A and mask B are both '{a.name}'; choose two different masks")
        try:
            total, rows = compare_layers(a, b)
        except LGGSegError as exc:
            return self._fail(str(exc))
        self.total, self.rows, self._names, self._layer = total, rows, (a.name, b.name), a
        self.summary.setText(
            f"Dice {total['dice']:.4f}   IoU {total['iou']:.4f}\n"
            f"A '{a.name}': {total['voxels_a']:,} voxels;  B '{b.name}': {total['voxels_b']:,} voxels"
        )
        self._fill_table(rows)
        self._plot(rows)
        self.export_button.enabled = True
        return True

    def _fail(self, message: str) -> bool:
        self.total, self.rows = None, []
        self.table.setRowCount(0)
        self.plot.clear()
        self.table_rows = []
        self.export_button.enabled = False
        self.summary.setText(message)
        show_error(message)
        return False

    def _fill_table(self, rows: list[dict]) -> None:
        self.table_rows = rows = abnormal_first(rows, self.hide_empty.value)
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            values = (str(r["slice"]), f"{r['dice']:.3f}", f"{r['iou']:.3f}", str(r["voxels_a"]), str(r["voxels_b"]))
            for j, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
                self.table.setItem(i, j, item)

    def _plot(self, rows: list[dict]) -> None:
        self.plot.clear()
        ax = self.plot.axes[0]
        xs = [r["slice"] for r in rows]
        # slices where both masks are empty score 1 by definition: leave them out of the plot
        both_empty = [r["voxels_a"] == 0 and r["voxels_b"] == 0 for r in rows]
        dices = [float("nan") if e else r["dice"] for r, e in zip(rows, both_empty)]
        ious = [float("nan") if e else r["iou"] for r, e in zip(rows, both_empty)]
        ax.plot(xs, dices, "o-", color="#4c9be8", markersize=3, linewidth=1, label="Dice")
        ax.plot(xs, ious, "s--", color="#f0a030", markersize=3, linewidth=1, label="IoU")
        ax.set_title("Per-slice overlap (slices empty in both left out)", color=self.plot.colors["fg"],
                     fontsize=8, loc="left")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("slice", color=self.plot.colors["fg"], fontsize=7)
        self.plot.draw()

    def _go_to_slice(self, row: int, _col: int) -> None:
        if not (0 <= row < len(self.table_rows)) or self.viewer.dims.ndim < 3:
            return
        z, layer = self.table_rows[row]["slice"], self._layer
        if layer is None or layer not in self.viewer.layers or layer.ndim < 3:
            self.viewer.dims.set_current_step(0, z)
            return
        # the slice's place in the world: with the layer's scale and translate (other layers
        # may have other voxel sizes or extents, so the world step need not be the slice)
        centre = [z, *((n - 1) / 2 for n in layer.data.shape[1:layer.ndim])]
        axis = self.viewer.dims.ndim - layer.ndim
        self.viewer.dims.set_point(axis, float(layer.data_to_world(centre)[0]))

    def export_csv(self, path: str | Path) -> Path:
        """Write the per-slice metrics of every slice, in slice order, to ``path`` (atomically);
        *hide slices empty in both* filters only the table shown."""
        if not self.rows:
            raise InputError("nothing to export; compute the metrics first")
        return write_rows_csv(path, self.rows, self._names)

    def _export_dialog(self, *_args) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export per-slice metrics", "metrics.csv", "CSV (*.csv)")
        if not path:
            return
        try:
            out = self.export_csv(path)
        except (LGGSegError, OSError) as exc:
            show_error(str(exc))
            return
        show_info(f"Saved {out}")
