"""3D rendering of a patient with labels, and the README console snippet."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .conftest import PID

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- console-snippet -->"
# Kept identical to the README block that follows MARKER (the test prefers the README's copy).
SNIPPET = '''\
from napari_lgg_seg import dice, load_model, segment_volume

image, truth = viewer.open("path/to/kaggle_3m/TCGA_CS_4941_19960909", plugin="napari-lgg-seg")
model = load_model()  # the bundled U-Net; or load_model("my_model.keras")
labels = segment_volume(image.data, model, threshold=0.5, batch_size=8)
viewer.add_labels(labels, name=f"{image.name} segmentation", scale=image.scale, translate=image.translate)
print(f"Dice vs ground truth: {dice(labels, truth.data):.3f}")
'''


def readme_snippet() -> str:
    if README.exists() and MARKER in README.read_text():
        after = README.read_text().split(MARKER, 1)[1]
        m = re.search(r"```python\n(.*?)```", after, re.S)
        assert m, f"no ```python block after {MARKER} in README.md"
        return m.group(1)
    return SNIPPET


def _label_colour_pixels(shot: np.ndarray, colour: np.ndarray) -> int:
    """Pixels whose RGB is a (shaded) multiple of the label colour."""
    rgb = shot[..., :3].reshape(-1, 3).astype(float)
    bright = rgb.sum(axis=1) > 30
    c = colour / np.linalg.norm(colour)
    cos = rgb @ c / np.maximum(np.linalg.norm(rgb, axis=1), 1e-9)
    return int(np.count_nonzero(bright & (cos > 0.995)))


def test_3d_view_shows_label_coloured_pixels(make_napari_viewer, patient_folder):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(patient_folder), plugin="napari-lgg-seg")
    viewer.dims.ndisplay = 3
    viewer.camera.angles = (10, -25, 70)  # an oblique view, not the top-down default
    assert viewer.dims.ndisplay == 3
    truth = viewer.layers["ground truth"]
    colour = np.asarray(truth.get_color(1)[:3]) * 255

    viewer.layers[PID].visible = False
    labels_only = viewer.screenshot(canvas_only=True, flash=False)
    assert _label_colour_pixels(labels_only, colour) > 100

    viewer.layers[PID].visible = True
    truth.visible = False
    image_only = viewer.screenshot(canvas_only=True, flash=False)
    assert image_only[..., :3].max() > 50  # the RGB volume renders in 3D
    assert _label_colour_pixels(image_only, colour) < _label_colour_pixels(labels_only, colour) / 4


def test_readme_console_snippet(make_napari_viewer, patient_folder, tiny_model_path, capsys):
    snippet = readme_snippet()
    assert "path/to/kaggle_3m/TCGA_CS_4941_19960909" in snippet and "load_model()" in snippet
    code = snippet.replace("path/to/kaggle_3m/TCGA_CS_4941_19960909", str(patient_folder).replace("\\", "/"))
    code = code.replace("load_model()", f"load_model({str(tiny_model_path)!r})", 1)
    viewer = make_napari_viewer()
    namespace = {"viewer": viewer}
    exec(compile(code, "README console snippet", "exec"), namespace)
    assert [layer.name for layer in viewer.layers] == [PID, "ground truth", f"{PID} segmentation"]
    seg = viewer.layers[f"{PID} segmentation"]
    assert seg.data.shape == (6, 64, 64) and seg.data.dtype == np.uint8
    out = capsys.readouterr().out
    assert re.search(r"Dice vs ground truth: \d\.\d{3}", out)
