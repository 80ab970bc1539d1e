"""magicgui forms generated from Qt-free dataclasses, and settings that survive a restart.

A form is one magicgui value widget per dataclass field, named like the field. How a
field is shown (label, range, step, choices, tooltip, "0 means None" and the text a
spin box shows for it) comes from a spec:
the field's ``metadata["widget"]`` or a dict passed in (for dataclasses of the core,
which know nothing of widgets). ``SettingsStore`` keeps the values as JSON in the user's
config folder (``NAPARI_LGG_SEG_SETTINGS_DIR`` overrides it; the tests point it at a
temporary folder).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from magicgui.widgets import create_widget
from magicgui.widgets.bases import ValueWidget

SETTINGS_ENV = "NAPARI_LGG_SEG_SETTINGS_DIR"

# spec keys understood here; everything else goes to magicgui's ``options``
_OWN_KEYS = {"label", "widget_type", "none_if", "none_text", "tooltip", "annotation", "default"}


def _plain_type(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def field_widget(f: dataclasses.Field, annotation: Any, spec: Mapping[str, Any]) -> ValueWidget:
    """A magicgui value widget for one dataclass field, named like the field."""
    ann, optional = _plain_type(spec.get("annotation", annotation))
    default = spec.get("default", f.default if f.default is not dataclasses.MISSING else None)
    if default is None and optional:
        default = spec.get("none_if", ann() if callable(ann) else None)
    options = {k: v for k, v in spec.items() if k not in _OWN_KEYS}
    if "tooltip" in spec:
        options["tooltip"] = spec["tooltip"]
    widget = create_widget(
        value=default, annotation=ann, name=f.name, label=spec.get("label", f.name.replace("_", " ")),
        widget_type=spec.get("widget_type"), options=options,
    )
    widget._lgg_none_if = spec.get("none_if") if optional else dataclasses.MISSING  # type: ignore[attr-defined]
    if "none_text" in spec and hasattr(widget.native, "setSpecialValueText"):
        widget.native.setSpecialValueText(spec["none_text"])  # a spin box's minimum shows as this text
    return widget


def dataclass_widgets(cls: type, specs: Mapping[str, Mapping[str, Any]] | None = None,
                      only: Iterable[str] | None = None) -> list[ValueWidget]:
    """Value widgets for the fields of ``cls`` (those named in ``only``, in that order,
    or every field with a ``metadata['widget']`` spec)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    specs = dict(specs or {})
    names = list(only) if only is not None else [n for n, f in fields.items() if "widget" in f.metadata]
    out = []
    for name in names:
        f = fields[name]
        spec = {**f.metadata.get("widget", {}), **specs.get(name, {})}
        out.append(field_widget(f, hints[name], spec))
    return out


def widget_value(widget: ValueWidget) -> Any:
    """The widget's value as the dataclass field takes it (``none_if`` -> None, paths -> str)."""
    value = widget.value
    none_if = getattr(widget, "_lgg_none_if", dataclasses.MISSING)
    if none_if is not dataclasses.MISSING and value == none_if:
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def values_of(widgets: Iterable[ValueWidget]) -> dict[str, Any]:
    return {w.name: widget_value(w) for w in widgets}


# --------------------------------------------------------------------------- settings
def settings_dir() -> Path:
    """Where the widgets keep their settings."""
    env = os.environ.get(SETTINGS_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("napari-lgg-seg", appauthor=False))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return "" if str(value) == "." else str(value)  # an empty FileEdit holds Path(".")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return None  # layers and other objects are not remembered


class SettingsStore:
    """Remember the values of some widgets across napari restarts (a JSON file).

    ``version`` numbers the meaning of the settings: values saved under an older version
    are restored except those named in ``forget_on_upgrade`` (e.g. a setting whose
    default changed meaning), which go back to their defaults once."""

    VERSION_KEY = "_version"

    def __init__(self, name: str, widgets: Iterable[ValueWidget], version: int = 1,
                 forget_on_upgrade: Iterable[str] = ()) -> None:
        self.name = name
        self.widgets = {w.name: w for w in widgets}
        self.version = int(version)
        self.forget_on_upgrade = set(forget_on_upgrade)
        self.defaults = {n: w.value for n, w in self.widgets.items()}
        self._loading = False

    @property
    def path(self) -> Path:
        return settings_dir() / f"{self.name}.json"

    def restore(self) -> None:
        """Set the widgets to the saved values; unusable entries are skipped."""
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            saved = {}
        saved = saved if isinstance(saved, dict) else {}
        older = saved.get(self.VERSION_KEY, 1) != self.version
        self._loading = True
        try:
            for name, value in saved.items():
                w = self.widgets.get(name)
                if w is None or value is None or (older and name in self.forget_on_upgrade):
                    continue
                try:
                    w.value = value
                except (ValueError, TypeError, KeyError):
                    pass  # e.g. a choice that no longer exists, or out of range
        finally:
            self._loading = False

    def connect(self) -> None:
        """Save after every change."""
        for w in self.widgets.values():
            w.changed.connect(self.save)

    def save(self, *_args) -> None:
        if self._loading:
            return
        data = {self.VERSION_KEY: self.version, **{n: _jsonable(w.value) for n, w in self.widgets.items()}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only home must not break the widget

    def reset(self) -> None:
        """Back to the defaults; the saved file is removed."""
        self._loading = True
        try:
            for name, value in self.defaults.items():
                self.widgets[name].value = value
        finally:
            self._loading = False
        try:
            self.path.unlink()
        except OSError:
            pass
