"""CLI and the FLAIR-only companion: --no-flair-model is passed down; the printed model
and settings are those of the model that ran."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from .core.test_flair_model import _grey, bundle, with_companion  # noqa: F401 - fixtures
from .test_cli import _FlairFake, run


@pytest.fixture
def routing_calls(monkeypatch):
    """Replace the model loading and record the ``flair_model`` every resolution gets."""
    from napari_lgg_seg import cli
    from napari_lgg_seg.core import inference

    calls = []
    monkeypatch.setattr(cli, "_load_engine", lambda path, engine: _FlairFake())
    monkeypatch.setattr(inference, "resolve_model",
                        lambda volume, model=None, engine="auto", flair_model=True:
                        calls.append(flair_model) or model)
    return calls


def _grey_tif(tmp_path):
    path = tmp_path / "flair.tif"
    tifffile.imwrite(path, _grey())
    return path


@pytest.mark.parametrize("flag, expected", [([], True), (["--no-flair-model"], False)])
def test_no_flair_model_flag_is_passed_down(tmp_path, capsys, routing_calls, flag, expected):
    src = _grey_tif(tmp_path)
    code, _, err = run(capsys, "segment", src, "-o", tmp_path / "out.tif", *flag)
    assert code == 0, err
    # the CLI's resolution, then segment_volume's (its inner predict call gets False: resolved)
    assert routing_calls[:2] == [expected, expected] and (expected or not any(routing_calls))
    routing_calls.clear()
    code, _, err = run(capsys, "segment", src, "-o", tmp_path / "many", *flag)  # the folder path
    assert code == 0, err
    assert routing_calls[0] is expected and (expected or not any(routing_calls))


def test_segment_reports_the_flair_only_companion(tmp_path, capsys, with_companion):  # noqa: F811
    src = _grey_tif(tmp_path)
    code, out, err = run(capsys, "segment", src, "-o", tmp_path / "a.tif")
    assert code == 0, err
    assert "segmented with tiny 1 FLAIR-only (threshold 0.3; drop components under 7 voxels)" in out
    code, out, err = run(capsys, "segment", src, "-o", tmp_path / "b.tif", "--no-flair-model")
    assert code == 0, err
    assert "segmented with tiny 1 (threshold 0.5; no post-processing)" in out
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.random.default_rng(0).integers(0, 200, (3, 48, 48, 3)).astype(np.uint8))
    code, out, err = run(capsys, "segment", rgb, "-o", tmp_path / "c.tif", "--threshold", "0.6")
    assert code == 0, err
    assert "segmented with tiny 1 (threshold 0.6; no post-processing)" in out


def test_segment_help_mentions_the_flag(capsys):
    with pytest.raises(SystemExit):
        run(capsys, "segment", "--help")
    assert "--no-flair-model" in capsys.readouterr().out


def test_evaluate_passes_no_flair_model_down(capsys, data_root, routing_calls):
    code, _, err = run(capsys, "evaluate", data_root, "--flair-only", "--no-flair-model")
    assert code == 0, err
    assert routing_calls and not any(routing_calls)
    routing_calls.clear()
    assert run(capsys, "evaluate", data_root, "--flair-only")[0] == 0
    assert routing_calls[0] is True
