"""Importing the plugin, loading its manifest or reading a file must import neither
TensorFlow nor ONNX Runtime."""

import subprocess
import sys

from ..conftest import write_kaggle_patient

CODE = """
import sys
import napari_lgg_seg
from napari_lgg_seg import read_patient, dice
from npe2 import PluginManifest
PluginManifest.from_distribution("napari-lgg-seg")
st = read_patient(sys.argv[1])
for mod in ("napari_lgg_seg.napari.reader",):
    __import__(mod)
from napari_lgg_seg.napari.reader import get_reader
layers = get_reader(sys.argv[1])(sys.argv[1])
assert layers, "reader gave no layers"
bad = [m for m in sys.modules if m in ("tensorflow", "onnxruntime")
       or m.startswith(("tensorflow.", "keras", "onnxruntime."))]
print("TF-FREE" if not bad else "IMPORTED " + " ".join(sorted(bad)[:5]))
"""


def test_no_tensorflow_on_import_manifest_or_read(tmp_path):
    d = write_kaggle_patient(tmp_path)
    out = subprocess.run([sys.executable, "-c", CODE, str(d)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TF-FREE" in out.stdout, out.stdout
