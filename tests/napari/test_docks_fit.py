"""The three docks fit a 1366x768 laptop screen at once."""

from __future__ import annotations

import numpy as np


def test_three_docks_fit_a_small_screen(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1366, 768)
    viewer.add_image(np.zeros((3, 32, 32), np.uint8), name="a")
    for name in ("Segment", "Train / fine-tune", "Metrics"):
        viewer.window.add_plugin_dock_widget("napari-lgg-seg", name)
    qtbot.wait(200)
    assert window.height() <= 768, f"the window grew to {window.height()} px"
    train = viewer.window._dock_widgets["Train / fine-tune (napari-lgg-seg)"].widget()
    assert train.start_button.isVisible()  # Start stays on screen; the settings scroll
