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


def test_no_tensorflow_when_reading_nifti_dicom_or_listing_a_batch(tmp_path):
    import numpy as np

    from ..mri_files import ORIENTATIONS, to_orientation, write_dicom_series, write_nifti

    src, affine = to_orientation(np.ones((3, 8, 8), np.uint16), ORIENTATIONS["LPS"])
    nii = write_nifti(tmp_path / "a.nii.gz", src, affine)
    dcm = write_dicom_series(tmp_path / "series", src, affine)
    extra = "from napari_lgg_seg.core.batch import patient_inputs; patient_inputs([sys.argv[1]])\n"
    for path in (nii, dcm):
        out = subprocess.run([sys.executable, "-c", CODE.replace("bad = [", extra + "bad = ["), str(path)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "TF-FREE" in out.stdout, out.stdout


def test_dir_lists_the_lazy_public_api():
    """Tab completion in napari's console (``lgg.<Tab>``) uses dir(): the lazily imported
    functions (segment_volume, load_model, train, ...) were missing from it."""
    import napari_lgg_seg as lgg

    names = dir(lgg)
    assert set(lgg.__all__) <= set(names)
    assert {"segment_volume", "load_model", "TrainConfig", "segment_many"} <= set(names)
