"""The models the widgets can run: a small shared registry and a loading cache.

The registry is module-level so that a model trained in the Train widget shows up in
every Segment widget. Loading imports TensorFlow, so ``load`` is only called in workers.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from psygnal import Signal

BUNDLED = "bundled"
FILE = "file"
TRAINED = "trained"


@dataclass(frozen=True)
class ModelSource:
    label: str
    path: str | None  # None: the bundled model
    kind: str = FILE

    @property
    def is_bundled(self) -> bool:
        return self.path is None


BUNDLED_SOURCE = ModelSource("Bundled U-Net", None, BUNDLED)


class ModelRegistry:
    """Ordered, de-duplicated model sources; ``changed`` fires after every change."""

    changed = Signal()

    def __init__(self) -> None:
        self._items: list[ModelSource] = [BUNDLED_SOURCE]
        self._lock = threading.Lock()

    def __iter__(self):
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[ModelSource]:
        return list(self._items)

    def add(self, path: str | os.PathLike, kind: str = FILE, label: str | None = None) -> ModelSource:
        """Add (or move to the end) a model file; returns its source."""
        p = str(Path(path).expanduser().resolve())
        if label is None:
            label = f"{'trained' if kind == TRAINED else 'file'}: {Path(p).name}"
        src = ModelSource(label, p, kind)
        with self._lock:
            self._items = [s for s in self._items if s.path != p] + [src]
        self.changed.emit()
        return src

    def remove(self, source: ModelSource) -> None:
        if source.is_bundled:
            return
        with self._lock:
            self._items = [s for s in self._items if s != source]
        self.changed.emit()

    def reset(self) -> None:
        """Back to just the bundled model (used by tests)."""
        with self._lock:
            self._items = [BUNDLED_SOURCE]
        _CACHE.clear()
        self.changed.emit()


MODELS = ModelRegistry()

_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()


def _cache_key(source: ModelSource) -> tuple:
    if source.is_bundled:
        config = _bundled_config()  # without importing TensorFlow
        return (None, config.stat().st_mtime_ns if config.exists() else None)
    p = Path(source.path)
    return (str(p), p.stat().st_mtime_ns if p.exists() else None)


def load(source: ModelSource, engine: str = "keras"):
    """Load (once per file version and engine) the model of a source: the Keras model, or
    for the bundled source with engine ``auto``/``int8`` the int8 engine (``auto`` falls
    back to Keras when it is unavailable). Imports TensorFlow or ONNX Runtime."""
    key = (*_cache_key(source), engine)
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            if source.is_bundled and engine != "keras":
                from ..core.inference import resolve_engine

                model = resolve_engine(None, engine)
            else:
                from ..core.model import load_model

                model = load_model(source.path)
            for old in [k for k in _CACHE if k[0] == key[0] and k[-1] == engine]:
                del _CACHE[old]
            _CACHE[key] = model
    return model


def _bundled_config() -> Path:
    """The bundled model.json (core.model's, when TensorFlow is already loaded)."""
    import sys

    core_model = sys.modules.get("napari_lgg_seg.core.model")
    if core_model is not None:
        return Path(core_model.BUNDLED_CONFIG)
    return Path(__file__).resolve().parent.parent / "bundled" / "model.json"


def _bundled_metadata() -> dict:
    """The bundled ``model.json`` (OSError, ValueError when unreadable), without TensorFlow."""
    import json

    return json.loads(_bundled_config().read_text())


def own_settings(source: ModelSource):
    """(threshold, PostProcessing) that a source's model was chosen with, without loading
    it (no TensorFlow): a loaded model's ``lgg_info``, the bundled ``model.json``, and
    for a ``.keras`` file (no such metadata) 0.5 and none. None when unreadable."""
    from ..core.errors import InputError
    from ..core.postprocess import info_defaults, model_defaults

    with _CACHE_LOCK:
        cached = [m for k, m in _CACHE.items() if k[0] == (None if source.is_bundled else source.path)]
    try:
        if cached:
            return model_defaults(cached[-1])
        if not source.is_bundled:
            return info_defaults(None)
        return info_defaults(_bundled_metadata())
    except (OSError, ValueError, InputError):
        return None


def flair_settings(source: ModelSource):
    """(threshold, PostProcessing) of the bundled model's FLAIR-only companion, from
    ``model.json`` (no TensorFlow); None for other sources, without a companion or when
    unreadable."""
    from ..core.errors import InputError
    from ..core.postprocess import info_defaults

    if not source.is_bundled:
        return None
    try:
        companion = _bundled_metadata().get("flair_model")
        return info_defaults(companion) if companion else None
    except (OSError, ValueError, InputError):
        return None
