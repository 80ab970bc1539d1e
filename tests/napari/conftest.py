"""Fixtures for the napari layer: tiny synthetic kaggle_3m patients and tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..conftest import write_kaggle_patient

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PID = "TCGA_ZZ_0001_20000101"
REAL_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "lgg" / "kaggle_3m"


def make_patient_folder(root: Path, pid: str = PID, n: int = 6, size: int = 64, masks: bool = True,
                        seed: int = 0) -> Path:
    """A kaggle_3m patient folder of ``n`` 64 px slices, abnormal in all but the first and last."""
    return write_kaggle_patient(Path(root), pid, n_slices=n, size=size, masks=masks, seed=seed,
                                tumour_slices=range(1, n - 1))


@pytest.fixture
def patient_folder(tmp_path) -> Path:
    return make_patient_folder(tmp_path / "kaggle_3m")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """An untrained U-Net with 2 base filters and 64x64 input, saved as .keras."""
    from napari_lgg_seg.core.model import build_unet, save_model  # first: see core._tfload

    import keras

    keras.utils.set_random_seed(0)
    model = build_unet(base_filters=2, input_shape=(64, 64, 3))
    return save_model(model, tmp_path_factory.mktemp("models") / "tiny.keras")


@pytest.fixture(autouse=True)
def settings_dir(tmp_path, monkeypatch) -> Path:
    """Widget settings go to a temporary folder, never to the user's config."""
    from napari_lgg_seg.napari._forms import SETTINGS_ENV

    folder = tmp_path / "settings"
    monkeypatch.setenv(SETTINGS_ENV, str(folder))
    return folder


@pytest.fixture(autouse=True)
def _fresh_model_registry():
    from napari_lgg_seg.napari import _models

    _models.MODELS.reset()
    yield
    _models.MODELS.reset()


@pytest.fixture
def error_messages():
    """Messages of the error notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)

    def messages() -> list[str]:
        return [str(n.message) for n in notification_manager.records[start:]
                if str(getattr(n.severity, "value", n.severity)) == "error"]

    return messages
