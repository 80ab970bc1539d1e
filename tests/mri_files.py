"""Build NIfTI files and DICOM series in any orientation from a kaggle-ordered volume, and a
stand-in model that knows the ground truth only for slices in the kaggle orientation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

VOXEL = (2.5, 0.9, 0.8)  # mm along kaggle (Z, Y, X)
ORIENTATIONS = {"RAS": ("R", "A", "S"), "LPS": ("L", "P", "S"), "sagittal-LIP": ("L", "I", "P")}


def kaggle_affine(voxel=VOXEL, origin=(12.0, -30.0, 40.0)) -> np.ndarray:
    from napari_lgg_seg.core.geometry import kaggle_affine_from_voxel_size

    a = kaggle_affine_from_voxel_size(voxel)
    a[:3, 3] = origin
    return a


def to_orientation(kaggle_data: np.ndarray, axcodes, voxel=VOXEL) -> tuple[np.ndarray, np.ndarray]:
    """(source data in voxel order ``axcodes``, its affine) for a kaggle-ordered volume."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

    from napari_lgg_seg.core.geometry import KAGGLE_AXCODES

    t = ornt_transform(axcodes2ornt(KAGGLE_AXCODES), axcodes2ornt(tuple(axcodes)))
    return np.ascontiguousarray(apply_orientation(kaggle_data, t)), kaggle_affine(voxel) @ inv_ornt_aff(
        t, kaggle_data.shape[:3])


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def write_dicom_series(folder: Path, data: np.ndarray, ras_affine: np.ndarray, *, series_uid=None,
                       description="FLAIR", skip=(), start=1) -> Path:
    """One DICOM file per slice along axis 0 of ``data`` (K, rows, cols), uint16."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras_affine
    step, col, row = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    ps = (float(np.linalg.norm(col)), float(np.linalg.norm(row)))
    series_uid = series_uid or generate_uid()
    for k in range(data.shape[0]):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = "1.2.3.4"
        ds.SeriesDescription = description
        ds.PatientID = "synthetic"
        ds.Modality = "MR"
        ds.InstanceNumber = k + start
        ds.ImagePositionPatient = [float(v) for v in lps[:3, 3] + k * step]
        ds.ImageOrientationPatient = [float(v) for v in np.r_[row / ps[1], col / ps[0]]]
        ds.PixelSpacing = [ps[0], ps[1]]
        ds.SliceThickness = float(np.linalg.norm(step))
        sl = np.ascontiguousarray(data[k], dtype=np.uint16)
        ds.Rows, ds.Columns = sl.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = sl.tobytes()
        # shuffled names: the reader must sort by position, not by file name
        ds.save_as(folder / f"IM{((k + start) * 7919) % 10007:05d}.dcm", enforce_file_format=True)
    return folder


class OracleModel:
    """Stands in for the U-Net: returns the ground truth for a slice it was shown in the
    kaggle orientation, and nothing for any other (flipped, transposed) slice. So labels
    match the truth only when the reader brought the volume into the kaggle orientation."""

    input_shape = (None, 256, 256, 3)

    def __init__(self, kaggle_volume: np.ndarray, truth: np.ndarray):
        from napari_lgg_seg.core.preprocess import as_channels_last, intensity_range, to_model_input

        vol, _ = as_channels_last(kaggle_volume)
        x = to_model_input(vol, intensity_range(vol), (256, 256))
        self.known = {self._key(s): t.astype(np.float32) for s, t in zip(x, truth)}
        self.calls = 0

    @staticmethod
    def _key(sl: np.ndarray) -> str:
        return hashlib.blake2b(np.round(np.asarray(sl, np.float32), 4).tobytes(), digest_size=16).hexdigest()

    def predict_on_batch(self, x):
        self.calls += 1
        out = np.zeros((*x.shape[:3], 1), np.float32)
        for i, sl in enumerate(x):
            t = self.known.get(self._key(sl))
            if t is not None:
                out[i, ..., 0] = t
        return out
