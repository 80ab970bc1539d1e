"""Segment dock widget (magicgui): run a U-Net on an image layer and add/update a Labels layer.

From napari's console::

    dock, w = viewer.window.add_plugin_dock_widget("napari-lgg-seg", "Segment")
    w.threshold.value = 0.3            # any value widget, as in the dock
    w(image=viewer.layers[0], threshold=0.6)   # starts in the background
    seg = w.wait()                     # the Labels layer (None if cancelled or failed)
    seg = w.segment(threshold=0.4)     # the same, blocking, in one call

The value widgets are generated from ``SegmentOptions``; ``options()`` turns them into
the one object the core call is built from. ``image`` is the FLAIR (grey) or a kaggle RGB
layer; ``pre_contrast`` and ``post_contrast`` optionally add grey layers of the FLAIR's
shape as the other two channels (``core.sequences.stack_sequences``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal

from ..core.errors import LGGSegError
from ..core.geometry import oblique_note
from . import _models
from ._forms import SettingsStore, dataclass_widgets, values_of
from ._layers import (
    GROUND_TRUTH,
    SEGMENTATION_COLORS,
    SEGMENTATION_SUFFIX,
    format_volume,
    image_volume,
    labels_digest,
    layer_geometry,
    layer_stack,
    patient_id_of,
    readable_error,
    segmentation_metadata,
    spatial_shape,
    volume_summary,
    was_edited,
)
from ._qt_common import ask_yes_no, follow_layer_list, follow_renames, sync_choice_names
from ._tasks import Outcome, Progress, Result, Status, TaskRunner
from .segment_options import SegmentOptions

SEQUENCES = ("pre_contrast", "post_contrast")


def _is_segmentable(layer) -> bool:
    return isinstance(layer, Image) and not layer.multiscale and layer.ndim in (2, 3)


def segment_task(source, volume, options: SegmentOptions, stop: threading.Event, report: Callable,
                 pre_contrast=None, post_contrast=None) -> tuple[np.ndarray, dict, tuple]:
    """Stack the sequences, load the model and segment; runs off the GUI thread.

    ``volume`` is an array, or the FLAIR's ``PatientStack`` when ``pre_contrast`` or
    ``post_contrast`` (PatientStacks) are given. Reports ``Status`` and ``Progress``;
    raises Cancelled when ``stop`` is set. Returns the labels, the info of the model that
    ran (the bundled FLAIR-only companion for FLAIR-only input, see
    ``core.inference.resolve_model``), the (threshold, PostProcessing) the run used and
    ``core.inference.removed_all_note`` of the run (None when something was kept)."""
    from ..core.errors import Cancelled
    from ..core.inference import (
        is_flair_variant,
        removed_all_note,
        resolve_model,
        resolve_postprocessing,
        segment_volume,
    )

    if pre_contrast is not None or post_contrast is not None:
        from ..core.sequences import stack_sequences

        volume = stack_sequences(volume, pre_contrast, post_contrast).image
    kwargs = options.core_kwargs()
    report(Status(f"Loading {source.label} ..."))
    model = resolve_model(volume, _models.load(source, kwargs["engine"]), kwargs["engine"], kwargs["flair_model"])
    if stop.is_set():
        raise Cancelled("segmentation cancelled before it started")

    def on_batch(done: int, total: int) -> bool:
        report(Progress(done, total))
        return not stop.is_set()

    used = resolve_postprocessing(model, kwargs["threshold"], kwargs["postprocess"], kwargs["min_size"])
    stats: dict = {}
    labels = segment_volume(volume, model, progress=on_batch, stats=stats, **kwargs)
    info = dict(getattr(model, "lgg_info", None) or {})  # not core.model's: that imports TensorFlow
    info.setdefault("name", getattr(model, "name", "model"))
    info.setdefault("version", "")
    info["engine"] = "int8" if getattr(model, "engine", None) == "int8" else "keras"
    if is_flair_variant(model):
        info["variant"] = "flair"
    return labels, info, used, removed_all_note(stats)


def _replace_labels(layer, labels: np.ndarray) -> None:
    """Write new labels into a Labels layer through its edit history where possible, so
    that Ctrl+Z on the layer brings back the previous labels, hand edits included."""
    data = layer.data
    if (isinstance(data, np.ndarray) and data.shape == labels.shape and data.flags.writeable
            and np.can_cast(labels.dtype, data.dtype)):
        changed = np.nonzero(data != labels)
        layer.data_setitem(changed, labels[changed])
        layer.events.data(value=layer.data)  # in place: say so, as assigning would
    else:  # another shape or an array napari cannot edit: replace it (Undo last run still works)
        layer.data = labels


class _Undo:
    """What a re-run replaced, to bring it back."""

    def __init__(self, layer, result_digest: str) -> None:
        self.layer = layer
        self.data = np.array(layer.data, copy=True)
        self.metadata = dict(layer.metadata)
        self.result_digest = result_digest  # of the labels the run wrote


class SegmentWidget(Container):
    """Segment the FLAIR abnormality of the chosen image layer.

    ``confirm(title, text) -> bool`` asks before replacing hand edits (tests replace it).
    ``run_finished`` is emitted with 'done', 'cancelled' or 'error'.
    """

    run_finished = Signal(str)

    def __init__(self, napari_viewer) -> None:
        self.viewer = napari_viewer
        self.confirm: Callable[[str, str], bool] = lambda title, text: ask_yes_no(self.native, title, text)
        self.image = ComboBox(name="image", label="image", choices=self._image_choices,
                              tooltip="The MRI layer to segment: RGB (Z, Y, X, 3) or grey (Z, Y, X)")
        self.pre_contrast = ComboBox(name="pre_contrast", label="pre-contrast", choices=self._sequence_choices,
                                     tooltip="Optional grey layer of the FLAIR's shape (not with an RGB image)")
        self.post_contrast = ComboBox(name="post_contrast", label="post-contrast", choices=self._sequence_choices,
                                      tooltip="Optional grey layer of the FLAIR's shape (not with an RGB image)")
        self.model = ComboBox(name="model", label="model", choices=self._model_choices,
                              tooltip="The bundled U-Net, a .keras file, or a model trained in the Train widget")
        self.model_defaults = Label(name="model_defaults", value="", label="model's own",
                                    tooltip="The threshold and post-processing the model was chosen with")
        self.model_file = FileEdit(name="model_file", label="model file", mode="r", filter="*.keras",
                                   tooltip="Add a .keras model file to the model choices")
        self.option_widgets = dataclass_widgets(SegmentOptions)
        self.run_button = PushButton(name="run_button", text="Run")
        self.cancel_button = PushButton(name="cancel_button", text="Cancel", enabled=False)
        self.undo_button = PushButton(name="undo_button", text="Undo last run", enabled=False,
                                      tooltip="Bring back the labels the last run replaced, hand edits included")
        self.reset_button = PushButton(name="reset_button", text="Reset settings",
                                       tooltip="Back to the default settings")
        self.save_masks_button = PushButton(
            name="save_masks_button", text="Save masks to patient folder…",
            tooltip="Write the segmentation as kaggle_3m masks beside the slices of its patient folder "
                    "(never overwrites)")
        self.progress_bar = ProgressBar(name="progress_bar", min=0, max=1, value=0, label="")
        self.status = Label(name="status", value="", label="")
        self.result = Label(name="result", value="", label="")
        buttons = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                            labels=False, name="buttons", label="")
        more = Container(widgets=[self.undo_button, self.reset_button], layout="horizontal",
                         labels=False, name="more_buttons", label="")
        for w in buttons, more:
            w.margins = (0, 0, 0, 0)
        self.form = Container(widgets=[self.image, self.pre_contrast, self.post_contrast, self.model,
                                       self.model_file, self.model_defaults, *self.option_widgets], name="form")
        self.form.margins = (0, 0, 0, 0)
        super().__init__(widgets=[self.form, buttons, more, self.save_masks_button, self.progress_bar,
                                  self.status, self.result],
                         labels=False, scrollable=True)  # scrolls rather than overflow a small screen
        for label in (self.status, self.result, self.model_defaults):
            label.native.setWordWrap(True)
        self._widget._mgui_get_native_widget().layout().addStretch(1)  # rows at the top, not spread out
        self.native.setMinimumHeight(110)
        self.runner = TaskRunner(self.progress_bar.native)
        self._answer = None  # the Labels layer wait() returns: that of the last run started
        self._digest_at_start: str | None = None
        self._undo: _Undo | None = None
        self._watched = None
        self._last_layer = None

        # version 2: threshold 0 means the model's own; a 0.5 saved before was the old default
        self.settings = SettingsStore("segment", [self.model_file, *self.option_widgets], version=2,
                                      forget_on_upgrade=("threshold",))
        self.model_file.changed.connect(self._on_model_file)
        self.settings.restore()
        self.settings.connect()
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.undo_button.changed.connect(self.undo_last_run)
        self.reset_button.changed.connect(self.reset_settings)
        self.save_masks_button.changed.connect(lambda *_: self.save_masks_to_patient_folder())
        self.runner.running_changed.connect(self._set_running)
        self.image.changed.connect(self._reset_sequence_choices)
        self.model.changed.connect(self._show_model_defaults)
        self.flair_model.changed.connect(self._show_model_defaults)
        self.postprocess.changed.connect(self._enable_probability)
        self._reset_sequence_choices()
        self._show_model_defaults()
        self._enable_probability()
        self.runner.finished.connect(lambda outcome: self.run_finished.emit(outcome.value))
        _models.MODELS.changed.connect(self._refresh_models)
        follow_layer_list(napari_viewer, self._on_layers_changed, self._reset_image_choices)

    @property
    def native(self):
        """The scroll area around the form, so that napari docks a widget that scrolls
        instead of growing the window past a small screen."""
        return self._widget._mgui_get_root_native_widget()

    def __getattr__(self, name: str):
        """The value widgets by name, as in a FunctionGui: ``w.threshold.value = 0.3``."""
        for widget in self.__dict__.get("option_widgets", ()):
            if widget.name == name:
                return widget
        return super().__getattr__(name)

    # ------------------------------------------------------------------ values
    def options(self) -> SegmentOptions:
        """The settings of the value widgets, as the core call takes them."""
        return SegmentOptions(**values_of(self.option_widgets))

    def __call__(self, **values: Any) -> bool:
        """Set value widgets by name (``image=layer, threshold=0.6``) and start a run.

        The run goes on in the background; ``wait()`` blocks until it ends. Returns
        False when refused (the status says why)."""
        if self.runner.running:  # leave the settings of the running segmentation alone
            return self.run()
        for name in sorted(values, key=lambda n: n != "image"):  # the sequences' choices follow the image
            value = values[name]
            widget = self._value_widget(name)
            if name == "model" and isinstance(value, (str, Path)):
                self.add_model_file(value)
                continue
            if name in SEQUENCES and value is not None and value not in widget.choices:
                self._answer = None
                return self._fail(self._sequence_refusal(name, value))
            if name == "image" and value is not None and value not in widget.choices:
                self._answer = None
                return self._fail(self._image_refusal(value))
            widget.value = value
        return self.run()

    def segment(self, timeout: float | None = None, **values: Any):
        """Blocking form of ``w(**values)`` for scripts: returns the Labels layer, or
        None when the run was cancelled, refused or failed (the status says why)."""
        if not self(**values):
            return None
        return self.wait(timeout)

    def wait(self, timeout: float | None = None):
        """Process events until the current run ends; returns its Labels layer or None."""
        self._answer = None if self.runner.running else self._answer
        outcome = self.runner.wait(timeout)
        return self._answer if outcome is Outcome.DONE else None

    def _value_widget(self, name: str):
        names = ["image", *SEQUENCES, "model", "model_file", *(w.name for w in self.option_widgets)]
        if name not in names:
            raise TypeError(f"Segment widget has no setting {name!r}; settings are: {', '.join(names)}")
        return getattr(self, name)

    def reset_settings(self, *_args) -> None:
        """Back to the default threshold, batch size, ... (the saved settings are removed)."""
        self.settings.reset()
        self.status.value = "Settings reset to their defaults."

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget=None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in reversed(self.viewer.layers) if _is_segmentable(layer)]

    def _sequence_choices(self, _widget=None) -> list[tuple[str, Any]]:
        """'none', then the grey image layers of the FLAIR's shape (none with an RGB image)."""
        image = self.image.value if hasattr(self, "image") else None
        none = [("none", None)]
        if image is None or image.rgb:
            return none
        shape = spatial_shape(image)
        return none + [(layer.name, layer) for layer in reversed(self.viewer.layers)
                       if _is_segmentable(layer) and not layer.rgb and layer is not image
                       and spatial_shape(layer) == shape]

    def _image_refusal(self, layer) -> str:
        """Why a layer cannot be the image to segment."""
        lname = getattr(layer, "name", repr(layer))
        if not isinstance(layer, Image):
            return (f"'{lname}' is a {type(layer).__name__} layer, not an image; choose an image layer: "
                    "RGB (Z, Y, X, 3) or grey (Z, Y, X)")
        if layer not in self.viewer.layers:
            return f"'{lname}' is not in the viewer; add it first"
        try:
            image_volume(layer)
        except LGGSegError as exc:
            return str(exc)
        return f"'{lname}' cannot be segmented"

    def _sequence_refusal(self, name: str, layer) -> str:
        """Why a layer cannot be the pre-/post-contrast of the chosen image."""
        what = name.replace("_", "-")
        image = self.image.value
        lname = getattr(layer, "name", repr(layer))
        if image is None:
            return f"Choose the FLAIR image layer before the {what}"
        if image.rgb:
            return f"'{image.name}' is RGB and holds all three sequences: leave {what} at 'none'"
        if not _is_segmentable(layer) or layer.rgb:
            return f"'{lname}' cannot be the {what}: it must be a grey image layer (Z, Y, X)"
        if spatial_shape(layer) != spatial_shape(image):
            return (f"'{lname}' of shape {spatial_shape(layer)} cannot be the {what} of '{image.name}' "
                    f"of shape {spatial_shape(image)}: sequences must share the FLAIR's grid (we do not register)")
        return f"'{lname}' cannot be the {what} of '{image.name}'"

    def _reset_sequence_choices(self, *_args) -> None:
        rgb = bool(getattr(self.image.value, "rgb", False))
        try:
            for w in (self.pre_contrast, self.post_contrast):
                w.reset_choices()
                w.enabled = not rgb
        except RuntimeError:  # the Qt widget is gone
            pass

    def _show_model_defaults(self, *_args) -> None:
        """Say what the model's own threshold and post-processing are."""
        from ..core.postprocess import describe_settings

        source = self.model.value
        own = _models.own_settings(source) if source is not None else None
        text = describe_settings(*own) if own else "unknown (model.json unreadable)"
        if source is not None and not source.is_bundled and own is not None:
            text += " (a .keras file stores none)"
        flair = _models.flair_settings(source) if source is not None else None
        if flair is not None and self.flair_model.value:
            text += f"; FLAIR-only input: {describe_settings(*flair)}"
        try:
            self.model_defaults.value = text
            # the choice means something only for a model that has a FLAIR-only companion
            self.flair_model.visible = flair is not None
        except RuntimeError:
            pass

    def _enable_probability(self, *_args) -> None:
        self.min_probability.enabled = self.postprocess.value in ("peak", "mean")

    def _model_choices(self, _widget=None) -> list[tuple[str, Any]]:
        return [(src.label, src) for src in _models.MODELS.items()]

    def _on_layers_changed(self, event=None) -> None:
        follow_renames(event, self._reset_image_choices)
        self._reset_image_choices()

    def reset_choices(self, *args) -> None:
        """What napari calls when layers are added, removed, reordered or renamed."""
        try:
            sync_choice_names(self.image, self.pre_contrast, self.post_contrast)  # keep what is chosen
        except RuntimeError:  # the Qt widget is gone
            return
        super().reset_choices(*args)

    def _reset_image_choices(self, *_args) -> None:
        try:
            sync_choice_names(self.image, self.pre_contrast, self.post_contrast)  # keep what is chosen
            self.image.reset_choices()
        except RuntimeError:  # the Qt widget is gone
            return
        self._reset_sequence_choices()

    def _refresh_models(self) -> None:
        try:
            before = set(self.model.choices)
            self.model.reset_choices()
        except RuntimeError:  # widget deleted; psygnal drops us soon
            return
        fresh = [s for s in _models.MODELS.items() if s.kind == _models.TRAINED and s not in before]
        if before and fresh:
            self.model.value = fresh[-1]  # just trained: offer it

    def _on_model_file(self, value) -> None:
        path = Path(value) if value else None
        if path is None or str(path) in ("", ".") or not path.is_file():
            return
        try:
            self.add_model_file(path)
        except RuntimeError:  # the Qt widget is gone (napari is closing)
            pass

    def add_model_file(self, path: str | Path) -> None:
        """Add a .keras file to the shared model choices and select it."""
        self.select_model(_models.MODELS.add(path, _models.FILE))

    def select_model(self, source) -> None:
        if source not in self.model.choices:
            self.model.reset_choices()
        if source not in self.model.choices:
            raise ValueError(f"{source} is not among the model choices")
        self.model.value = source

    # ------------------------------------------------------------------ running
    def result_layer_name(self, image_layer) -> str:
        return f"{image_layer.name}{SEGMENTATION_SUFFIX}"

    def _existing_result(self, image_layer):
        name = self.result_layer_name(image_layer)
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], Labels):
            return self.viewer.layers[name]
        return None

    def _may_replace(self, layer) -> bool:
        if layer is None or not was_edited(layer):
            return True
        return self.confirm(
            "Replace edited segmentation?",
            f"'{layer.name}' was edited by hand since it was computed. Running again replaces it "
            "(Undo last run brings the edits back). Continue?",
        )

    def run(self, *_args) -> bool:
        """Start segmenting with the current values; False when refused (see the status)."""
        if self.runner.running:
            return self._fail("A segmentation is already running; wait for it to end or press Cancel")
        self._answer = None  # whatever comes of this run, the last result does not answer it
        image_layer = self.image.value
        if image_layer is None:
            return self._fail("Choose an image layer to segment (open a patient folder first)")
        source = self.model.value
        if source is None:
            return self._fail("Choose a model")
        try:
            options = self.options()
            options.core_kwargs()  # refuse bad combinations here, not in the worker
            voxel = options.voxel_mm()
            sequences = [getattr(self, n).value for n in SEQUENCES]
            if image_layer.rgb or not any(s is not None for s in sequences):
                volume, sequences = image_volume(image_layer), [None, None]
            else:
                volume = layer_stack(image_layer)
                sequences = [layer_stack(s) if s is not None else None for s in sequences]
        except (LGGSegError, TypeError, ValueError) as exc:
            return self._fail(readable_error(exc))
        existing = self._existing_result(image_layer)
        if not self._may_replace(existing):
            self.status.value = "Kept the edited segmentation; nothing was run."
            return False
        self._digest_at_start = labels_digest(existing.data) if existing is not None else None
        n = spatial_shape(image_layer)[0] if len(spatial_shape(image_layer)) == 3 else 1
        self.result.value = ""
        self._last_layer = None
        note = self._apply_voxel_size(image_layer, voxel)
        self.status.value = f"Segmenting {image_layer.name} with {source.label} ...{note}"
        self.runner.start(
            lambda report, stop: segment_task(source, volume, options, stop, report, *sequences),
            desc=f"Segmenting {image_layer.name}", total=n, on_report=self._on_report,
            on_result=lambda result: self._on_result(result, image_layer, options),
        )
        return True

    def _apply_voxel_size(self, image_layer, voxel) -> str:
        """Set the typed voxel size as the scale of the image and of the layers on its grid
        (ground truth, sequences) that share its scale, not those of another patient; an
        image whose file gives a voxel size keeps it. Returns a note for the status."""
        own = (image_layer.metadata or {}).get("voxel_size")
        if voxel is None:
            return ""
        if own is not None:
            return f" (its file's voxel size {tuple(own)} mm is used, not the one typed)"
        old = tuple(image_layer.scale)
        scale = tuple(voxel)[-len(old):]
        shape = spatial_shape(image_layer)
        pid = (image_layer.metadata or {}).get("patient_id")
        for layer in self.viewer.layers:
            other = (layer.metadata or {}).get("patient_id")
            if pid is not None and other is not None and other != pid:
                continue  # another patient's layers, which may well have the same grid
            if (layer is image_layer or (tuple(layer.scale) == old and len(old) == layer.ndim
                                         and spatial_shape(layer) == shape)):
                layer.scale = scale
        return ""

    def cancel(self, *_args) -> None:
        """Stop after the current batch; nothing is added."""
        self.runner.stop()
        if self.runner.running:
            self.status.value = "Cancelling after the current batch ..."
            self.cancel_button.enabled = False

    @property
    def worker(self):
        """The running napari worker, or None."""
        return self.runner.worker

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.cancel_button.enabled = running

    def _on_report(self, record) -> None:
        if isinstance(record, Status):
            self.status.value = record.text
        elif isinstance(record, Progress) and not self.runner.stopping:
            self.status.value = f"Segmented {record.done} of {record.total} slices"

    def _on_result(self, result: Result, image_layer, options: SegmentOptions) -> Outcome:
        if result.outcome is Outcome.DONE and image_layer not in self.viewer.layers:
            self.status.value = "The image was closed during the run; nothing was added."
            return Outcome.CANCELLED
        if result.outcome is Outcome.DONE:
            labels, info, used, note = result.value
            try:
                shown = self._show_result(image_layer, labels, info, options, used)
                if note is not None and shown:
                    message = f"{note[0].upper()}{note[1:]}; set post-processing to 'none' to see them."
                    self.status.value += " " + message
                    show_warning(message)
                oblique = oblique_note(layer_geometry(image_layer))
                if oblique is not None and shown:
                    message = f"{oblique[0].upper()}{oblique[1:]}."
                    self.status.value += " " + message
                    show_warning(message)
                self._show_model_defaults()  # the loaded model's own, now known for sure
            except Exception as exc:  # noqa: BLE001 - e.g. the image layer was deleted
                self._fail(readable_error(exc))
                return Outcome.ERROR
            return Outcome.DONE
        if result.outcome is Outcome.CANCELLED:
            self.status.value = "Cancelled; no layer was added or changed."
            return Outcome.CANCELLED
        self._fail(readable_error(result.error))
        return Outcome.ERROR

    def _fail(self, message: str) -> bool:
        self.status.value = message
        show_error(message)
        return False

    def _show_result(self, image_layer, labels: np.ndarray, info: dict, options: SegmentOptions,
                     used: tuple) -> bool:
        """Add or update the result layer; False when the user kept their edited one."""
        threshold, post = used
        own_voxel = (image_layer.metadata or {}).get("voxel_size")
        typed = options.voxel_mm() if own_voxel is None and labels.ndim == 3 else None
        meta = segmentation_metadata(info, threshold=threshold, min_size=post.min_size, image_layer=image_layer,
                                     labels=labels, postprocessing=post, voxel_size=typed)
        meta["engine"] = info.get("engine", "keras")
        if info.get("variant") == "flair":  # the bundled FLAIR-only companion ran
            meta["variant"] = "flair"
        meta["settings"] = options.as_metadata()
        existing = self._existing_result(image_layer)
        edited_meanwhile = existing is not None and labels_digest(existing.data) != self._digest_at_start
        if edited_meanwhile and not self._may_replace(existing):
            self.status.value = "Kept the edited segmentation; the new result was dropped."
            return False
        scale = tuple(image_layer.scale)
        # on the image in the world: its scale and translate, and any rotate, shear or affine
        placement = {"scale": scale, "translate": tuple(image_layer.translate), "rotate": image_layer.rotate,
                     "shear": image_layer.shear, "affine": image_layer.affine.affine_matrix}
        if existing is not None:
            self._undo = _Undo(existing, meta["digest"])
            _replace_labels(existing, labels)
            for key, value in placement.items():
                setattr(existing, key, value)
            existing.metadata = meta  # replaced as a whole so that the change is evented
            layer, verb = existing, "Updated"
        else:
            from napari.utils.colormaps import DirectLabelColormap

            self._undo = None
            layer = self.viewer.add_labels(
                labels, name=self.result_layer_name(image_layer), **placement,
                metadata=meta, opacity=0.6, colormap=DirectLabelColormap(color_dict=SEGMENTATION_COLORS),
            )
            verb = "Added"
            self._reference_as_contour(layer)
        self.undo_button.enabled = self._undo is not None
        self._last_layer = self._answer = layer
        self._watch(layer)
        self.status.value = f"{verb} '{layer.name}'."
        show_info(f"{verb} '{layer.name}': {format_volume(volume_summary(labels, scale))}")
        return True

    def _reference_as_contour(self, seg) -> None:
        """Draw a ground truth of the same shape as an outline, so that differences show."""
        for layer in self.viewer.layers:
            if (isinstance(layer, Labels) and layer is not seg and layer.name.startswith(GROUND_TRUTH)
                    and layer.data.shape == seg.data.shape and layer.contour == 0):
                layer.contour = 1

    # ------------------------------------------------------------------ volume and undo
    def _watch(self, layer) -> None:
        """Keep the volume shown in sync with the layer, hand edits included."""
        if self._watched is not None and self._watched is not layer:
            for ev in (self._watched.events.paint, self._watched.events.data):
                ev.disconnect(self._update_volume)
        if self._watched is not layer:
            layer.events.paint.connect(self._update_volume)
            layer.events.data.connect(self._update_volume)
        self._watched = layer
        self._update_volume()

    def _update_volume(self, *_args) -> None:
        layer = self._watched
        if layer is None:
            return
        meta = layer.metadata or {}
        text = format_volume(volume_summary(np.asarray(layer.data), tuple(layer.scale)))
        if was_edited(layer):
            text += " (now, after edits)"
        model = f"{meta.get('model', '')} {meta.get('version', '')}".strip()
        if meta.get("variant") == "flair":
            model += " FLAIR-only"
        if meta.get("engine") == "int8":
            model += " (int8)"
        if "threshold" in meta and "postprocessing" in meta:
            from ..core.postprocess import PostProcessing, describe_settings

            post = PostProcessing.from_dict(meta.get("postprocessing_settings"))
            model += f"; {describe_settings(meta['threshold'], post)}"
        try:
            self.result.value = f"{text}\nModel: {model}".strip()
        except RuntimeError:  # the widget is gone
            pass

    def save_masks_to_patient_folder(self, layer=None) -> list[Path] | None:
        """Write a segmentation (``layer``, else the selected Labels layer, else the last
        result) as kaggle_3m masks beside the slices of the patient folder it was computed
        from; never overwrites. Returns the files written, or None (the status says why)."""
        from ..core.io import write_masks_to_patient_folder

        if layer is None:
            active = self.viewer.layers.selection.active
            layer = active if isinstance(active, Labels) else self._last_layer
        if layer is None or layer not in self.viewer.layers:
            self._fail("Select the segmentation (Labels layer) to save")
            return None
        source = (layer.metadata or {}).get("source")
        if not source or not Path(source).is_dir():
            self._fail(f"'{layer.name}' does not come from a kaggle_3m patient folder; "
                       "save it with File > Save Selected Layers")
            return None
        try:
            written = write_masks_to_patient_folder(source, np.asarray(layer.data), patient_id_of(layer),
                                                    slice_files=(layer.metadata or {}).get("slice_files"))
        except LGGSegError as exc:
            self._fail(readable_error(exc))
            return None
        except OSError as exc:
            self._fail(f"{source}: cannot write the masks ({exc.strerror or exc})")
            return None
        self.status.value = f"Wrote {len(written)} masks of '{layer.name}' to {source}."
        show_info(self.status.value)
        return written

    def undo_last_run(self, *_args) -> bool:
        """Bring back the labels (and metadata) that the last run replaced."""
        undo = self._undo
        if undo is None or undo.layer not in self.viewer.layers:
            self._undo = None
            self.undo_button.enabled = False
            return self._fail("Nothing to undo: the last run did not replace a layer that is still open")
        layer = undo.layer
        if labels_digest(layer.data) != undo.result_digest and not self.confirm(
            "Undo the last run?", f"'{layer.name}' was edited since the last run; undoing loses those edits. "
            "Continue?"):
            return False
        layer.data = undo.data
        layer.metadata = undo.metadata
        self._undo = None
        self.undo_button.enabled = False
        self._update_volume()
        self.status.value = f"Restored '{layer.name}' as it was before the last run."
        return True
