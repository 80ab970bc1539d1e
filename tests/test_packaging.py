"""Packaging: one version source, the documents the sdist and the napari hub need."""

from __future__ import annotations

import re
import tomllib

import yaml

import napari_lgg_seg

from .conftest import REPO


def test_version_has_one_source_and_citation_matches():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "napari_lgg_seg.__version__"}
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert str(citation["version"]) == napari_lgg_seg.__version__
    dois = {ref["doi"] for ref in citation["references"]}
    assert dois == {"10.1016/j.compbiomed.2019.05.002", "10.1007/s11060-017-2420-1"}
    assert re.search(rf"## \[{re.escape(napari_lgg_seg.__version__)}\]", (REPO / "CHANGELOG.md").read_text())


def test_sdist_carries_the_model_card_and_hub_links_exist():
    manifest = (REPO / "MANIFEST.in").read_text().split()
    for name in ("MODEL_CARD.md", "CHANGELOG.md", "CITATION.cff"):
        assert name in manifest and (REPO / name).is_file()
    urls = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]
    assert urls["Documentation"].startswith("https://")
    for name, url in urls.items():
        assert url.startswith("https://github.com/napari-lgg-seg/napari-lgg-seg"), name


def test_wheel_globs_carry_the_flair_only_companion_files():
    import fnmatch

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["napari_lgg_seg"]
    for name in ("unet_lgg.npz", "unet_lgg_int8.onnx", "unet_lgg_flair.npz", "unet_lgg_flair_int8.onnx", "model.json"):
        assert any(fnmatch.fnmatch(f"bundled/{name}", g) for g in globs), name
