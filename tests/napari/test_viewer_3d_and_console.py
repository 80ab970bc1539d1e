"""3D rendering of a patient with labels, and the README console snippet."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

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
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9 / older
    camera.angles = (10, -25, 70)  # an oblique view, not the top-down default
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


CRASH_SCRIPT = '''
import sys
import numpy as np
import pytest
order = sys.argv[1]
if order == "tensorflow-first":
    import qtpy.QtWidgets  # a Qt process, no application yet (like pytest with pytest-qt)
    from napari_lgg_seg.core.model import build_unet
import napari
viewer = napari.Viewer(show=True)
viewer.add_labels(np.pad(np.ones((4, 8, 8), np.uint8), 4))
viewer.dims.ndisplay = 3
viewer.screenshot(flash=False)
from napari_lgg_seg.core.model import build_unet
model = build_unet(2, (32, 32, 3))
assert model.predict_on_batch(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 32, 32, 1)
assert viewer.screenshot(flash=False)[..., :3].max() > 0
viewer.close()
print("clean exit")
'''


@pytest.mark.parametrize("order", ["viewer-first", "tensorflow-first"])
def test_tensorflow_and_opengl_share_a_process(order):
    """TensorFlow's bundled LLVM used to crash Mesa OpenGL drivers in one process
    (segfault when TF was imported after napari drew, abort at exit the other way)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, order], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "clean exit" in proc.stdout, proc.stderr[-2000:]
