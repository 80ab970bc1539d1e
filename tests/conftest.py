"""Shared fixtures: small synthetic kaggle_3m patients and tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "lgg"
REAL_PATIENTS = REAL_DATA / "kaggle_3m"

requires_real_data = pytest.mark.skipif(
    not REAL_PATIENTS.is_dir(), reason=f"real LGG patients not found at {REAL_PATIENTS}"
)


def synthetic_patient(n_slices: int = 6, size: int = 32, seed: int = 0, tumour_slices=(2, 3)):
    """Image (Z, size, size, 3) uint8 and mask (Z, size, size) 0/1 with a bright blob."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, size=(n_slices, size, size, 3), dtype=np.uint8)
    mask = np.zeros((n_slices, size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    blob = (yy - size // 2) ** 2 + (xx - size // 2) ** 2 < (size // 5) ** 2
    for z in tumour_slices:
        mask[z][blob] = 1
        image[z][blob] = 220
    return image, mask


def write_kaggle_patient(folder: Path, pid: str = "TCGA_XX_0001_20000101", n_slices: int = 6,
                         size: int = 32, masks: bool = True, seed: int = 0, tumour_slices=(2, 3)) -> Path:
    """The one fake patient factory: a kaggle_3m folder ``folder/pid`` of RGB slices
    (and ``_mask`` slices) from ``synthetic_patient``."""
    import tifffile

    image, mask = synthetic_patient(n_slices, size, seed, tumour_slices)
    d = folder / pid
    d.mkdir(parents=True)
    for i in range(n_slices):
        tifffile.imwrite(d / f"{pid}_{i + 1}.tif", image[i])
        if masks:
            tifffile.imwrite(d / f"{pid}_{i + 1}_mask.tif", mask[i] * 255)
    return d


@pytest.fixture
def kaggle_patient(tmp_path) -> Path:
    return write_kaggle_patient(tmp_path / "data", n_slices=12)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A 2-filter U-Net with random weights, saved as .keras (fast to load and run)."""
    from napari_lgg_seg.core.model import build_unet, save_model

    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    save_model(build_unet(base_filters=2), path)
    return path


@pytest.fixture
def data_root(tmp_path) -> Path:
    """A folder of three small synthetic kaggle_3m patients (4 slices each)."""
    root = tmp_path / "kaggle_3m"
    for i in range(3):
        write_kaggle_patient(root, f"TCGA_X{i}_000{i}_20000101", n_slices=4, seed=i)
    return root
