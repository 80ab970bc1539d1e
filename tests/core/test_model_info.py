"""core.model.model_info and base_filters_of (moved here from the napari layer)."""

from __future__ import annotations

import pytest


def test_model_info_and_base_filters(tiny_model_path, tmp_path):
    from napari_lgg_seg.core.errors import ModelError
    from napari_lgg_seg.core.model import BUNDLED_CONFIG, base_filters_of, bundled_info, load_model, model_info

    import keras

    assert model_info(load_model(tiny_model_path)) == {"name": "tiny.keras", "version": "user",
                                                        "path": str(tiny_model_path)}
    assert base_filters_of(str(tiny_model_path)) == 2
    if BUNDLED_CONFIG.exists():
        assert base_filters_of("bundled") == bundled_info()["base_filters"]
    inputs = keras.Input((32, 32, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(1, 1, name="head")(inputs))
    other.save(tmp_path / "other.keras")
    with pytest.raises(ModelError, match="not a U-Net of this plugin"):
        base_filters_of(str(tmp_path / "other.keras"))
