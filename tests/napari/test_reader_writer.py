"""npe2 reader, writers and sample data of the napari layer."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tifffile

from napari_lgg_seg.core.errors import InputError
from napari_lgg_seg.core.io import read_patient
from napari_lgg_seg.napari import reader as _reader
from napari_lgg_seg.napari import writer as _writer

from .conftest import PID, REAL_DATA, make_patient_folder


# --------------------------------------------------------------------------- reader
def test_reader_opens_patient_folder(patient_folder):
    reader = _reader.get_reader(str(patient_folder))
    assert callable(reader)
    layers = reader(str(patient_folder))
    assert [lt for _, _, lt in layers] == ["image", "labels"]
    (img, img_meta, _), (mask, mask_meta, _) = layers
    assert img.shape == (6, 64, 64, 3) and img.dtype == np.uint8
    assert img_meta["rgb"] is True and img_meta["name"] == PID
    assert img_meta["metadata"]["patient_id"] == PID
    assert img_meta["metadata"]["slice_files"] == [f"{PID}_{i}.tif" for i in range(1, 7)]
    assert mask_meta["name"] == "ground truth" and mask.shape == (6, 64, 64)
    assert set(np.unique(mask)) == {0, 1}
    assert mask_meta["metadata"]["patient_id"] == PID


def test_reader_without_masks_gives_only_the_image(tmp_path):
    folder = make_patient_folder(tmp_path, masks=False)
    layers = _reader.get_reader(str(folder))(str(folder))
    assert [lt for _, _, lt in layers] == ["image"]


def test_reader_grey_stack_and_single_slice(tmp_path):
    grey = tmp_path / "flair.tif"
    tifffile.imwrite(grey, np.arange(5 * 32 * 32, dtype=np.uint16).reshape(5, 32, 32))
    (data, meta, kind), = _reader.get_reader(str(grey))(str(grey))
    assert kind == "image" and data.shape == (5, 32, 32) and meta["rgb"] is False
    assert meta["name"] == "flair"

    folder = make_patient_folder(tmp_path / "k")
    one = folder / f"{PID}_3.tif"
    layers = _reader.get_reader(str(one))(str(one))
    assert layers[0][0].shape == (1, 64, 64, 3) and layers[1][0].shape == (1, 64, 64)


@pytest.mark.parametrize("what", ["text", "empty_dir", "dir_without_slices", "mask", "5d_tiff", "missing"])
def test_reader_returns_none_for_paths_not_ours(tmp_path, what):
    if what == "text":
        path = tmp_path / "notes.txt"
        path.write_text("hello")
    elif what == "empty_dir":
        path = tmp_path / "empty"
        path.mkdir()
    elif what == "dir_without_slices":
        path = tmp_path / "other"
        path.mkdir()
        (path / "image.png").write_bytes(b"x")
        tifffile.imwrite(path / "stack.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    elif what == "mask":
        path = make_patient_folder(tmp_path) / f"{PID}_2_mask.tif"
    elif what == "5d_tiff":
        path = tmp_path / "movie.tif"
        tifffile.imwrite(path, np.zeros((2, 3, 4, 8, 8), np.uint8), photometric="minisblack")
    else:
        path = tmp_path / "nothing.tif"
    assert _reader.get_reader(str(path)) is None


def test_reader_raises_clear_message_for_broken_inputs(tmp_path):
    folder = make_patient_folder(tmp_path)
    (folder / f"{PID}_2.tif").unlink()  # a mask without its slice
    reader = _reader.get_reader(str(folder))
    assert reader is not None  # it looks like ours ...
    with pytest.raises(InputError, match="mask without its image slice"):
        reader(str(folder))  # ... so the user gets the reason

    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"this is not a tiff")
    with pytest.raises(InputError, match="not a readable TIFF"):
        _reader.get_reader(str(bad))(str(bad))


def test_reader_accepts_a_list_of_patients(tmp_path):
    a = make_patient_folder(tmp_path, pid="TCGA_AA_0001_20000101")
    b = make_patient_folder(tmp_path, pid="TCGA_BB_0002_20000101", n=4)
    layers = _reader.get_reader([str(a), str(b)])([str(a), str(b)])
    assert [m["name"] for _, m, t in layers if t == "image"] == ["TCGA_AA_0001_20000101", "TCGA_BB_0002_20000101"]
    assert _reader.get_reader([str(a), str(tmp_path / "x.txt")]) is None


def test_reader_and_manifest_do_not_import_tensorflow(patient_folder):
    code = (
        "import sys\n"
        "from npe2 import PluginManifest\n"
        "import napari_lgg_seg\n"
        "from napari_lgg_seg.napari import reader, writer, sample_data, _layers, _models\n"
        "PluginManifest.from_file(napari_lgg_seg.__file__.replace('__init__.py', 'napari.yaml'))\n"
        f"reader.get_reader({str(patient_folder)!r})({str(patient_folder)!r})\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


def test_viewer_opens_patient_with_plugin(make_napari_viewer, patient_folder):
    viewer = make_napari_viewer()
    layers = viewer.open(str(patient_folder), plugin="napari-lgg-seg")
    assert [l.name for l in layers] == [PID, "ground truth"]
    image = viewer.layers[PID]
    assert image.rgb and image.data.shape == (6, 64, 64, 3) and image.ndim == 3
    assert viewer.layers["ground truth"].data.shape == (6, 64, 64)


def test_viewer_shows_reader_error_message(make_napari_viewer, tmp_path):
    folder = make_patient_folder(tmp_path)
    (folder / f"{PID}_2.tif").unlink()
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="mask without its image slice"):
        viewer.open(str(folder), plugin="napari-lgg-seg")


@pytest.mark.real_data
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"LGG data not found at {REAL_DATA}")
def test_reader_on_a_real_patient():
    folder = sorted(p for p in REAL_DATA.iterdir() if p.is_dir())[0]
    layers = _reader.get_reader(str(folder))(str(folder))
    img, meta, _ = layers[0]
    assert img.ndim == 4 and img.shape[1:] == (256, 256, 3) and meta["name"] == folder.name
    assert layers[1][0].shape == img.shape[:3]


# --------------------------------------------------------------------------- writers
def _labels(z=4, size=16):
    lab = np.zeros((z, size, size), np.uint8)
    lab[1:3, 4:10, 5:12] = 1
    return lab


def test_tiff_writer_round_trip_through_napari(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_labels(_labels(), name="seg")
    out = tmp_path / "seg.tif"
    written = viewer.layers.save(str(out), selected=False, plugin="napari-lgg-seg")
    assert written == [str(out)]
    back = tifffile.imread(out)
    assert back.dtype == np.uint8 and np.array_equal(back, _labels())
    # and our reader reads it back as a grey stack
    assert _reader.get_reader(str(out)) is not None


def test_tiff_writer_replaces_only_the_exact_path_and_refuses_folders(tmp_path):
    out = tmp_path / "seg.tif"
    out.write_bytes(b"old")
    assert _writer.write_labels_tiff(str(out), _labels(), {"name": "seg"}) == [str(out)]
    assert np.array_equal(tifffile.imread(out), _labels())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.tif"]  # no temp files left
    with pytest.raises(_writer.WriteRefused, match="is a folder"):
        _writer.write_labels_tiff(str(tmp_path), _labels(), {"name": "seg"})
    with pytest.raises(_writer.WriteRefused, match="outside 0..255"):
        _writer.write_labels_tiff(str(tmp_path / "big.tif"), _labels().astype(np.int32) * 300, {"name": "seg"})


def test_kaggle_writer_round_trip_and_refuses_to_overwrite(make_napari_viewer, tmp_path, patient_folder):
    viewer = make_napari_viewer()
    viewer.open(str(patient_folder), plugin="napari-lgg-seg")
    truth = viewer.layers["ground truth"]
    out = tmp_path / "masks"
    viewer.layers.selection = {truth}
    written = viewer.layers.save(str(out), selected=True, plugin="napari-lgg-seg.write_kaggle_masks")
    assert sorted(written) == sorted(str(out / f"{PID}_{i}_mask.tif") for i in range(1, 7))
    assert set(np.unique(tifffile.imread(out / f"{PID}_3_mask.tif"))) == {0, 255}

    # the written folder plus the patient's slices read back to the same mask
    for f in patient_folder.glob(f"{PID}_?.tif"):
        (out / f.name).write_bytes(f.read_bytes())
    assert np.array_equal(read_patient(out).mask, truth.data)

    before = (out / f"{PID}_3_mask.tif").read_bytes()
    with pytest.raises(_writer.WriteRefused, match="refusing to overwrite"):
        _writer.write_kaggle_masks(str(out), np.ones_like(truth.data), truth.as_layer_data_tuple()[1])
    assert (out / f"{PID}_3_mask.tif").read_bytes() == before
    # writing into the patient folder itself would replace the ground truth: refused too
    with pytest.raises(_writer.WriteRefused, match="refusing to overwrite"):
        _writer.write_kaggle_masks(str(patient_folder), truth.data, {"metadata": {"patient_id": PID}})


def test_kaggle_writer_names_files_after_the_folder_without_patient_id(tmp_path):
    out = tmp_path / "TCGA_QQ_0009_20010101"
    written = _writer.write_kaggle_masks(str(out), _labels(), {"name": "x", "metadata": {}})
    assert [p.split("/")[-1] for p in written][:2] == ["TCGA_QQ_0009_20010101_1_mask.tif",
                                                       "TCGA_QQ_0009_20010101_2_mask.tif"]
    with pytest.raises(_writer.WriteRefused, match="not a folder"):
        _writer.write_kaggle_masks(str(out / "TCGA_QQ_0009_20010101_1_mask.tif"), _labels(), {})


def test_manifest_writers_are_offered_for_labels():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    writers = [w for w in pm.iter_compatible_writers(["labels"]) if w.command.startswith("napari-lgg-seg.")]
    by_cmd = {w.command: w for w in writers}
    assert by_cmd["napari-lgg-seg.write_labels_tiff"].filename_extensions == [".tif", ".tiff"]
    assert by_cmd["napari-lgg-seg.write_kaggle_masks"].filename_extensions == []


# --------------------------------------------------------------------------- sample data
def test_phantom_sample_opens_in_viewer(make_napari_viewer):
    pytest.importorskip("napari_lgg_seg.core.sample")
    viewer = make_napari_viewer()
    viewer.open_sample("napari-lgg-seg", "phantom")
    image = [l for l in viewer.layers if l.__class__.__name__ == "Image"][0]
    assert image.data.ndim in (3, 4)
    assert "ground truth" in viewer.layers
    assert viewer.layers["ground truth"].data.shape == image.data.shape[:3]


def test_real_sample_glue_reports_progress(make_napari_viewer, patient_folder, monkeypatch):
    """The 'Real LGG patient' sample: progress goes to napari, the patient to two layers.
    (core.sample itself is tested with the core; no network here.)"""
    sample = pytest.importorskip("napari_lgg_seg.core.sample")
    calls = []

    def fake_load(progress=None, **kwargs):
        for i in range(1, 4):
            calls.append(progress(i, 3))
        return read_patient(patient_folder)

    monkeypatch.setattr(sample, "load_sample_patient", fake_load)
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-lgg-seg", "real_patient")
    assert calls == [None, None, None]
    assert [l.name for l in layers] == [PID, "ground truth"] and layers[0].rgb


def test_real_sample_offline_gives_a_clear_error(make_napari_viewer, tmp_path, monkeypatch):
    sample = pytest.importorskip("napari_lgg_seg.core.sample")
    monkeypatch.setenv("NAPARI_LGG_SEG_SAMPLE_URL", (tmp_path / "no-server").as_uri())
    monkeypatch.setenv("NAPARI_LGG_SEG_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    with pytest.raises(sample.SampleDownloadError, match="cannot download the sample patient"):
        viewer.open_sample("napari-lgg-seg", "real_patient")
    assert len(viewer.layers) == 0


# --------------------------------------------------------------------------- formats and etiquette
def _nifti_and_dicom(tmp_path):
    from ..mri_files import ORIENTATIONS, to_orientation, write_dicom_series, write_nifti

    vol = np.random.default_rng(0).integers(0, 900, (5, 24, 20)).astype(np.uint16)
    src, affine = to_orientation(vol, ORIENTATIONS["LPS"])
    nii = write_nifti(tmp_path / "flair.nii.gz", src.astype(np.int16), affine)
    dcm = write_dicom_series(tmp_path / "series", src, affine)
    return vol, affine, nii, dcm


def test_npe2_offers_this_plugin_only_for_what_it_reads(tmp_path, patient_folder):
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    _, _, nii, dcm = _nifti_and_dicom(tmp_path)
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    tif = patient_folder / f"{PID}_1.tif"

    def offered(p):
        return "napari-lgg-seg" in [r.plugin_name for r in pm.iter_compatible_readers([str(p)])]

    assert not offered(tmp_path / "photo.png") and not offered(tmp_path / "table.csv")
    assert all(offered(p) for p in (patient_folder, tif, nii, dcm, next(dcm.glob("*.dcm"))))
    # folders are offered to every folder reader; ours declines those that are not patients
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.png").write_bytes(b"\x89PNG")
    assert _reader.get_reader(str(other)) is None
    assert _reader.get_reader(str(tmp_path / "photo.png")) is None


def test_reader_gives_nifti_and_dicom_layers_with_their_geometry(tmp_path):
    from napari_lgg_seg.core.geometry import Geometry

    from ..mri_files import kaggle_affine

    vol, affine, nii, dcm = _nifti_and_dicom(tmp_path)
    for path in (nii, dcm):
        (data, meta, kind), = _reader.get_reader(str(path))(str(path))
        assert kind == "image" and np.array_equal(data, vol) and meta["rgb"] is False
        assert meta["scale"] == pytest.approx((2.5, 0.9, 0.8))
        assert meta["metadata"]["voxel_size"] == pytest.approx([2.5, 0.9, 0.8])
        geo = meta["metadata"]["geometry"]
        # the same voxels in world space (a DICOM grid is its slices sorted by position)
        assert np.allclose(Geometry.from_metadata(geo).kaggle_affine, kaggle_affine(), atol=1e-4)
        if path == nii:
            assert geo["source_axcodes"] == "LPS" and np.allclose(geo["affine"], affine)


def test_our_labels_tiff_reopens_as_labels_with_its_voxel_size(tmp_path):
    labels = np.zeros((4, 16, 16), np.uint8)
    labels[2, 3:9, 3:9] = 1
    meta = {"name": "seg", "scale": (3.0, 0.5, 0.5), "metadata": {}}
    path, = _writer.write_labels_tiff(str(tmp_path / "seg.tif"), labels, meta)
    (data, lmeta, kind), = _reader.get_reader(path)(path)
    assert kind == "labels" and np.array_equal(data, labels) and lmeta["scale"] == pytest.approx((3.0, 0.5, 0.5))
    # an image TIFF with the same content stays an image
    tifffile.imwrite(tmp_path / "img.tif", labels, photometric="minisblack")
    assert _reader.get_reader(str(tmp_path / "img.tif"))(str(tmp_path / "img.tif"))[0][2] == "image"


def test_nifti_writer_uses_the_source_affine_or_says_it_uses_the_scale(tmp_path):
    import nibabel as nib

    from napari_lgg_seg.napari._layers import segmentation_metadata

    vol, affine, nii, _ = _nifti_and_dicom(tmp_path)
    (data, meta, _), = _reader.get_reader(str(nii))(str(nii))

    class Layer:  # what the Segment widget passes: the image layer
        name, metadata = meta["name"], meta["metadata"]

    labels = (data > 450).astype(np.uint8)
    seg_meta = segmentation_metadata({}, threshold=0.5, min_size=0, image_layer=Layer, labels=labels)
    out, = _writer.write_labels_nifti(str(tmp_path / "seg.nii.gz"), labels, {"name": "seg", "metadata": seg_meta})
    back = nib.load(out)
    assert np.allclose(back.affine, affine, atol=1e-4)
    src = np.asarray(nib.load(str(nii)).dataobj)
    assert np.array_equal(np.asarray(back.dataobj), (src > 450).astype(np.uint8))

    with pytest.warns(UserWarning, match="1 mm voxels"):
        out2, = _writer.write_labels_nifti(str(tmp_path / "plain.nii"), labels, {"name": "x", "metadata": {}})
    assert np.allclose(np.abs(nib.load(out2).affine[:3, :3]).sum(axis=0), 1.0)
    with pytest.warns(UserWarning, match="voxel size"):
        out3, = _writer.write_labels_nifti(str(tmp_path / "scaled.nii"), labels,
                                           {"name": "x", "scale": (3, 1, 0.5), "metadata": {}})
    assert sorted(np.abs(nib.load(out3).affine[:3, :3]).sum(axis=0)) == pytest.approx([0.5, 1, 3])
    with pytest.raises(_writer.WriteRefused, match="0..255"):
        _writer.write_labels_nifti(str(tmp_path / "big.nii"), labels.astype(np.int32) * 300, {"name": "x"})


def test_sequences_as_grey_layers_for_3d(make_napari_viewer, patient_folder):
    from napari_lgg_seg.napari._layers import add_sequence_layers

    viewer = make_napari_viewer()
    image, truth = viewer.open(str(patient_folder), plugin="napari-lgg-seg")
    image.scale = (3.0, 0.5, 0.5)
    new = add_sequence_layers(viewer, image)
    assert [l.name for l in new] == [f"{PID} pre-contrast", f"{PID} FLAIR", f"{PID} post-contrast"]
    assert [l.visible for l in new] == [False, True, False] and not image.visible
    assert np.array_equal(new[1].data, image.data[..., 1]) and tuple(new[1].scale) == (3.0, 0.5, 0.5)
    assert not new[1].rgb and new[1].colormap.name == "gray"
    names = [l.name for l in viewer.layers]
    assert names.index(f"{PID} FLAIR") < names.index("ground truth")  # the labels draw on top
    viewer.dims.ndisplay = 3
    assert viewer.dims.ndisplay == 3


def test_viewer_opens_nifti_with_its_voxel_size_and_saves_labels_on_the_source_grid(make_napari_viewer, tmp_path):
    import nibabel as nib

    vol, affine, nii, _ = _nifti_and_dicom(tmp_path)
    viewer = make_napari_viewer()
    layer, = viewer.open(str(nii), plugin="napari-lgg-seg")
    assert tuple(layer.scale) == pytest.approx((2.5, 0.9, 0.8))
    seg = viewer.add_labels((layer.data > 450).astype(np.uint8), name="seg", scale=layer.scale,
                            metadata={"geometry": layer.metadata["geometry"]})
    out = tmp_path / "seg.nii.gz"
    viewer.layers.selection = {seg}
    viewer.layers.save(str(out), selected=True, plugin="napari-lgg-seg")  # napari's save, our NIfTI writer
    back = nib.load(str(out))
    assert np.allclose(back.affine, affine) and back.get_data_dtype() == np.uint8


def test_kaggle_writer_numbers_masks_of_a_nifti_or_tiff_stack_segmentation_1_to_z(tmp_path):
    from napari_lgg_seg.napari._layers import segmentation_metadata

    _, _, nii, _ = _nifti_and_dicom(tmp_path)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((4, 16, 16), np.uint16), photometric="minisblack")
    for path in (nii, stack):
        (data, meta, _), = _reader.get_reader(str(path))(str(path))

        class Layer:  # what the Segment widget passes: the image layer
            name, metadata = meta["name"], meta["metadata"]

        labels = np.zeros(data.shape[:3], np.uint8)
        labels[1, 2:5, 2:5] = 1
        seg_meta = segmentation_metadata({}, threshold=0.5, min_size=0, image_layer=Layer, labels=labels)
        out = tmp_path / f"masks_{path.name.split('.')[0]}"
        written = _writer.write_kaggle_masks(str(out), labels, {"name": "seg", "metadata": seg_meta})
        pid = meta["metadata"]["patient_id"]
        assert sorted(written) == sorted(str(out / f"{pid}_{i}_mask.tif") for i in range(1, len(labels) + 1))
        assert tifffile.imread(out / f"{pid}_2_mask.tif").max() == 255
