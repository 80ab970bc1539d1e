"""Small Qt pieces shared by the dock widgets: plots and confirmation (magicgui does the forms)."""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtWidgets import QMessageBox, QSizePolicy, QVBoxLayout, QWidget


def ask_yes_no(parent: QWidget | None, title: str, text: str) -> bool:
    answer = QMessageBox.question(
        parent, title, text, QMessageBox.Yes | QMessageBox.No, QMessageBox.No
    )
    return answer == QMessageBox.Yes


def sync_choice_names(*combos) -> None:
    """Give the layer items of magicgui ComboBoxes their layers' current names, in place.
    magicgui matches items by their text: resetting the choices after a rename would drop
    the renamed layer's item, and the selection would fall on another layer."""
    from napari.layers import Layer

    for combo in combos:
        native = combo.native
        for i in range(native.count()):
            layer = native.itemData(i)
            if isinstance(getattr(layer, "__wrapped__", layer), Layer) and native.itemText(i) != layer.name:
                native.setItemText(i, layer.name)


def follow_layer_list(viewer, on_list_change, on_rename) -> None:
    """Connect ``on_list_change`` to the viewer's layers being added, removed, moved or
    reordered, and ``on_rename`` to the renaming of every layer there now (the choosers
    show names). ``on_list_change`` calls ``follow_renames(event, on_rename)`` for the
    layers added later. Bound methods, so that napari holds them weakly."""
    for event in ("inserted", "removed", "moved", "reordered"):
        getattr(viewer.layers.events, event).connect(on_list_change)
    for layer in viewer.layers:
        layer.events.name.connect(on_rename)


def follow_renames(event, on_rename) -> None:
    """For a layer-list event: a layer just inserted calls ``on_rename`` when renamed."""
    layer = getattr(event, "value", None)
    if getattr(event, "type", "") == "inserted" and layer is not None:
        layer.events.name.connect(on_rename)


def theme_colors(viewer) -> dict[str, str]:
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme)
        return {
            "bg": theme.background.as_hex(),
            "fg": theme.text.as_hex(),
            "grid": theme.primary.as_hex(),
        }
    except Exception:  # unknown theme: matplotlib defaults
        return {"bg": "#ffffff", "fg": "#000000", "grid": "#cccccc"}


class PlotCanvas(QWidget):
    """A matplotlib figure with ``n`` stacked axes, themed like the viewer."""

    def __init__(self, viewer, titles: Sequence[str], parent: QWidget | None = None, height: float = 1.6):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.colors = theme_colors(viewer)
        self.figure = Figure(figsize=(3.2, height * len(titles)), facecolor=self.colors["bg"], layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.canvas.setMinimumHeight(int(45 * len(titles)))
        self.axes = [self.figure.add_subplot(len(titles), 1, i + 1) for i in range(len(titles))]
        self.titles = list(titles)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.clear()

    def clear(self) -> None:
        for ax, title in zip(self.axes, self.titles):
            ax.clear()
            self._style(ax, title)
        self.canvas.draw_idle()

    def _style(self, ax, title: str) -> None:
        c = self.colors
        ax.set_facecolor(c["bg"])
        ax.set_title(title, color=c["fg"], fontsize=8, loc="left")
        ax.tick_params(colors=c["fg"], labelsize=7)
        for spine in ax.spines.values():
            spine.set_color(c["grid"])
        ax.grid(True, color=c["grid"], linewidth=0.5, alpha=0.6)

    def draw(self) -> None:
        for ax in self.axes:
            if ax.get_legend_handles_labels()[0]:
                leg = ax.legend(fontsize=7, facecolor=self.colors["bg"], edgecolor=self.colors["grid"],
                                labelcolor=self.colors["fg"], loc="best")
                leg.get_frame().set_alpha(0.8)
        self.canvas.draw_idle()
