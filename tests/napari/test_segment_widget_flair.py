"""Segment widget and the bundled FLAIR-only companion: the 'FLAIR-only model' option is
passed down, and the result says when the companion ran (fake models, no TensorFlow)."""

from __future__ import annotations

import json

import pytest

from .test_segment_widget_options import OWN, TIMEOUT, ProbModel, grey, use_as_bundled  # noqa: F401

COMPANION = {"threshold": 0.3, "postprocessing": {"mode": "min_size", "min_size": 7, "min_probability": 0.0}}


def test_flair_model_option_is_shown_and_passed_down(grey, monkeypatch):  # noqa: F811
    from napari_lgg_seg.core import inference

    _viewer, widget, layer = grey
    assert widget.flair_model.value is True and widget.flair_model.label == "FLAIR-only model"
    assert widget.flair_model.tooltip
    assert widget.options().core_kwargs()["flair_model"] is True
    use_as_bundled(ProbModel(OWN))
    calls = []
    real = inference.resolve_model
    monkeypatch.setattr(inference, "resolve_model", lambda volume, model=None, engine="auto", flair_model=True:
                        calls.append(flair_model) or real(volume, model, engine, flair_model))
    seg = widget.segment(TIMEOUT, image=layer, flair_model=False)
    assert seg is not None and calls[0] is False and not any(calls)
    assert seg.metadata["settings"]["flair_model"] is False and "variant" not in seg.metadata
    calls.clear()
    widget.segment(TIMEOUT, flair_model=True)
    assert calls[0] is True


def test_flair_only_input_runs_the_companion_and_the_result_says_so(grey, monkeypatch):  # noqa: F811
    from napari_lgg_seg.core import inference

    _viewer, widget, layer = grey
    main = ProbModel({**OWN, "bundled": True, "variant": "main", "has_flair_model": True})
    companion = ProbModel({**COMPANION, "bundled": True, "variant": "flair"})
    use_as_bundled(main)
    monkeypatch.setattr(inference, "_companion", lambda engine: companion)
    seg = widget.segment(TIMEOUT, image=layer, engine="keras")  # a grey layer: FLAIR only
    assert companion.batches and not main.batches
    assert seg.metadata["variant"] == "flair" and seg.metadata["threshold"] == pytest.approx(0.3)
    assert seg.metadata["postprocessing"] == "drop components under 7 voxels"
    assert "Model: fake 2.0 FLAIR-only; threshold 0.3; drop components under 7 voxels" in widget.result.value

    seg = widget.segment(TIMEOUT, flair_model=False)  # switched off: the main model and its own
    assert main.batches and "variant" not in seg.metadata
    assert seg.metadata["threshold"] == pytest.approx(0.4)
    assert "Model: fake 2.0; threshold 0.4; keep the largest component" in widget.result.value


def test_model_defaults_label_names_the_companions_settings(grey, tmp_path, monkeypatch):  # noqa: F811
    from napari_lgg_seg.napari import _models

    _viewer, widget, _layer = grey
    config = tmp_path / "model.json"
    config.write_text(json.dumps({**OWN, "flair_model": COMPANION}))
    monkeypatch.setattr(_models, "_bundled_config", lambda: config)
    widget._show_model_defaults()
    assert widget.model_defaults.value == ("threshold 0.4; keep the largest component; FLAIR-only input: "
                                           "threshold 0.3; drop components under 7 voxels")
    assert not widget.flair_model.native.isHidden()  # offered only where a companion exists
    widget.flair_model.value = False
    assert widget.model_defaults.value == "threshold 0.4; keep the largest component"
    config.write_text(json.dumps(OWN))  # no companion: as before, and the option is hidden
    widget.flair_model.value = True
    assert widget.model_defaults.value == "threshold 0.4; keep the largest component"
    assert widget.flair_model.native.isHidden()
    config.write_text(json.dumps({**OWN, "flair_model": COMPANION}))
    widget._show_model_defaults()
    assert not widget.flair_model.native.isHidden()
