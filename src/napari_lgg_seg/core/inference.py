"""Whole-volume segmentation with a U-Net, in bounded-memory batches."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .context import model_context, neighbour_index, stack_context
from .errors import Cancelled, InputError, ModelError
from .components import remove_small_components  # noqa: F401 - public here since 1.0
from .postprocess import NONE, PostProcessing, keep_components, model_defaults
from .preprocess import MODEL_SIZE, as_channels_last, intensity_range, resize_slices, to_model_input

ProgressCallback = Callable[[int, int], "bool | None"]
ENGINES = ("auto", "int8", "keras")


def resolve_engine(model=None, engine: str = "auto"):
    """The object that runs ``model`` (None: the bundled U-Net) with ``engine``.

    ``"int8"``: the bundled model's int8 ONNX engine (ModelError if it is missing, stale
    or ``model`` is not a bundled model); ``"keras"``: the Keras model in float32;
    ``"auto"``: int8 for the bundled model when it is available, else Keras. The
    bundled FLAIR-only companion goes with its own int8 engine. No routing by input
    here: see ``resolve_model``.
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if isinstance(model, (str, os.PathLike)):  # a .keras file, as evaluate() and segment_many take
        from .model import load_model

        model = load_model(model)
    if getattr(model, "engine", None) == "int8":
        if engine == "keras":
            raise InputError("engine 'keras' needs a Keras model, not an int8 engine")
        return model
    if engine == "keras":
        return model if model is not None else _keras_default()
    info = getattr(model, "lgg_info", None) or {}
    if model is None or info.get("bundled"):
        from .engine_int8 import load_bundled_int8

        variant = info.get("variant", "main")
        try:
            int8 = load_bundled_int8(variant=variant)
            if model is None or int8.lgg_info.get("weights_sha256") == info.get("weights_sha256"):
                return int8
            reason = "the given model has other weights than the bundled int8 engine"
        except ModelError as exc:
            reason = str(exc)
        if engine == "int8":
            raise ModelError(f"int8 engine unavailable: {reason}")
        return model if model is not None else _keras_default()
    if engine == "int8":
        raise ModelError(f"{info.get('name', 'this model')}: the int8 engine serves only the bundled model; "
                         "use engine 'keras' or 'auto'")
    return model


def is_flair_only(volume: np.ndarray) -> bool:
    """Whether a volume holds FLAIR alone: grey, or three channels whose pre- and
    post-contrast (0 and 2) are exact copies of FLAIR (1), as kaggle_3m stores missing
    sequences and ``stack_sequences`` fills them."""
    vol, _ = as_channels_last(volume)
    if vol.shape[-1] == 1:
        return True
    for sl in vol:  # slice by slice: bounded memory, and real 3-channel input stops early
        if not (np.array_equal(sl[..., 0], sl[..., 1]) and np.array_equal(sl[..., 2], sl[..., 1])):
            return False
    return True


def is_flair_variant(model) -> bool:
    """Whether ``model`` (Keras or int8) is the bundled FLAIR-only companion."""
    info = getattr(model, "lgg_info", None) or {}
    return bool(info.get("bundled")) and info.get("variant") == "flair"


def _routes_to_companion(model) -> bool:
    """Whether ``model`` is the bundled main model and its bundle has a companion."""
    if model is None:
        from .engine_int8 import read_bundled_config

        return bool((read_bundled_config() or {}).get("flair_model"))
    info = getattr(model, "lgg_info", None) or {}
    return bool(info.get("bundled")) and info.get("variant", "main") == "main" and bool(info.get("has_flair_model"))


def _companion(engine: str):
    if engine != "keras":
        from .engine_int8 import load_bundled_int8

        try:
            return load_bundled_int8(variant="flair")
        except ModelError as exc:
            if engine == "int8":
                raise ModelError(f"int8 engine of the FLAIR-only model unavailable: {exc} "
                                 "(or switch the FLAIR-only model off)") from None
    from .model import load_flair_model

    return load_flair_model()


def resolve_model(volume: np.ndarray | None, model=None, engine: str = "auto", flair_model: bool = True):
    """The object that will segment ``volume``: ``resolve_engine(model, engine)``, except
    that for FLAIR-only input (``is_flair_only``) the bundled main model (``model`` None,
    the bundled Keras model or its int8 engine) hands over to the bundle's FLAIR-only
    companion when it has one and ``flair_model`` is True, with the same ``engine`` rules
    (``auto``: the companion's int8 engine if valid, else its Keras model). A user's own
    model is never replaced. ``volume`` None: no routing."""
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if getattr(model, "engine", None) == "int8" and engine == "keras":
        return resolve_engine(model, engine)  # refused as without routing
    if (flair_model and volume is not None and _routes_to_companion(model)
            and is_flair_only(volume)):
        return _companion(engine)
    return resolve_engine(model, engine)


def model_label(model) -> str:
    """``"name version"`` of a Keras model or engine (``"FLAIR-only"`` added for the
    bundled FLAIR-only companion, ``"2.5D (±k slices)"`` for a model with context,
    ``"(int8)"`` for the int8 engine), without importing TensorFlow."""
    info = getattr(model, "lgg_info", None) or {}
    label = f"{info.get('name', getattr(model, 'name', 'model'))} {info.get('version', '')}".strip()
    if is_flair_variant(model):
        label += " FLAIR-only"
    try:
        context = model_context(model)
    except (ModelError, AttributeError, TypeError):  # no usable input shape: say nothing of it
        context = 0
    if context:
        label += f" 2.5D (±{context} slice{'s' if context > 1 else ''})"
    return label + (" (int8)" if getattr(model, "engine", None) == "int8" else "")


def _keras_default():
    from .model import load_model

    return load_model()


def model_input_size(model) -> tuple[int, int]:
    shape = tuple(model.input_shape)
    if shape[1] is None or shape[2] is None:
        return MODEL_SIZE
    return int(shape[1]), int(shape[2])


def predict_probabilities(
    volume: np.ndarray,
    model=None,
    *,
    batch_size: int = 8,
    progress: ProgressCallback | None = None,
    flip_tta: bool = False,
    engine: str = "auto",
    flair_model: bool = True,
) -> np.ndarray:
    """Abnormality probability float32 ``(Z, Y, X)`` for a volume (see ``segment_volume``).

    ``flip_tta`` averages the prediction with that of the left-right mirrored slices;
    ``flair_model``: see ``resolve_model``.
    """
    vol, single = as_channels_last(volume)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch size must be a whole number, at least 1, not {batch_size!r}")
    model = resolve_model(vol, model, engine, flair_model)
    size = model_input_size(model)
    context = model_context(model)
    value_range = intensity_range(vol)
    z, y, x = vol.shape[:3]
    probs = np.empty((z, y, x), np.float32)
    kept, kept_lo = None, 0  # preprocessed slices kept for the next batch's neighbours
    for start in range(0, z, batch_size):
        stop = min(start + batch_size, z)
        if context:  # the batch's slices and their neighbours, each preprocessed once
            lo, hi = max(0, start - context), min(z, stop + context)
            have = kept[lo - kept_lo :] if kept is not None else None
            first_new = lo + (0 if have is None else len(have))
            fresh = to_model_input(vol[first_new:hi], value_range, size) if first_new < hi else None
            window = fresh if have is None else have if fresh is None else np.concatenate([have, fresh])
            batch = stack_context(window, neighbour_index(start, stop, z, context) - lo)
            kept, kept_lo = window, lo
        else:
            batch = to_model_input(vol[start:stop], value_range, size)
        p = np.asarray(model.predict_on_batch(batch), dtype=np.float32)[..., 0]
        if flip_tta:
            mirrored = np.asarray(model.predict_on_batch(batch[:, :, ::-1]), dtype=np.float32)
            p = 0.5 * (p + mirrored[:, :, ::-1, 0])
        if p.shape[1:] != (y, x):
            p = resize_slices(p, (y, x), order=1)
        probs[start : start + len(batch)] = p
        done = min(start + batch_size, z)
        if progress is not None and progress(done, z) is False:
            raise Cancelled(f"segmentation cancelled after {done} of {z} slices")
    return probs[0] if single else probs


def resolve_postprocessing(
    model, threshold: float | None = None, postprocess: PostProcessing | str | dict | None = None,
    min_size: int | None = None,
) -> tuple[float, PostProcessing]:
    """The threshold and post-processing a run uses: what is given, else the model's own
    (``model.json`` of the bundled model), else 0.5 and none. ``postprocess="none"``
    switches the model's post-processing off; ``min_size`` (if given) replaces its
    minimum component size."""
    default_t, default_post = model_defaults(model)
    t = default_t if threshold is None else float(threshold)
    if not 0.0 < t < 1.0:
        raise InputError(f"threshold must be between 0 and 1, not {t}")
    if postprocess is None:
        post = default_post
    elif isinstance(postprocess, PostProcessing):
        post = postprocess
    elif isinstance(postprocess, dict):
        post = PostProcessing.from_dict(postprocess)
    elif postprocess in ("none", "off"):
        post = NONE
    else:
        raise InputError(f"post-processing must be 'none', a dict or a PostProcessing, not {postprocess!r}")
    if min_size is not None:
        if min_size < 0:
            raise InputError(f"minimum component size must be >= 0, not {min_size}")
        mode = "min_size" if post.mode == "none" and min_size > 0 else post.mode
        mode = "none" if mode == "min_size" and min_size == 0 else mode
        post = replace(post, mode=mode, min_size=int(min_size))
    return t, post


def segment_volume(
    volume: np.ndarray,
    model=None,
    *,
    threshold: float | None = None,
    batch_size: int = 8,
    progress: ProgressCallback | None = None,
    min_size: int | None = None,
    postprocess: PostProcessing | str | dict | None = None,
    flip_tta: bool = False,
    engine: str = "auto",
    flair_model: bool = True,
    stats: dict | None = None,
) -> np.ndarray:
    """Segment a ``(Z, Y, X[, 3])`` volume (or one ``(Y, X[, 3])`` slice) into uint8 labels.

    ``model`` defaults to the bundled U-Net. Slices of any size are resized to the model
    input and the probabilities back. ``progress(done, total)`` is called after every
    batch; returning False cancels (raises ``Cancelled``). ``threshold`` and
    ``postprocess`` (3D components kept, see ``PostProcessing``) default to the model's
    own (the bundled model's ``model.json``), else 0.5 and none; ``postprocess="none"``
    turns it off, ``min_size`` sets the minimum component size in voxels. ``flip_tta``
    also predicts the mirrored slices and averages (twice the time). ``engine`` picks int8
    or Keras (see ``resolve_engine``). FLAIR-only input goes to the bundled model's
    FLAIR-only companion, with its own threshold and post-processing as defaults, when
    the bundle has one, unless ``flair_model`` is False (see ``resolve_model``).
    ``stats``, if given, is filled with what the run did: ``threshold``,
    ``postprocessing`` (its description), ``voxels_above_threshold`` and ``voxels_kept``
    (see ``removed_all_note``).
    """
    model = resolve_model(volume, model, engine, flair_model)
    t, post = resolve_postprocessing(model, threshold, postprocess, min_size)
    probs = predict_probabilities(
        volume, model, batch_size=batch_size, progress=progress, flip_tta=flip_tta, engine=engine,
        flair_model=False,  # resolved above
    )
    above = probs >= t
    labels = keep_components(above, probs, post)
    if stats is not None:
        stats.update(threshold=t, postprocessing=post.describe(), voxels_above_threshold=int(above.sum()),
                     voxels_kept=int(labels.sum()))
    return labels


def removed_all_note(stats: dict) -> str | None:
    """A warning when the post-processing removed every voxel above the threshold (e.g.
    the fragments of a small abnormality under the minimum component size), else None;
    ``stats`` as ``segment_volume`` fills it."""
    found = int(stats.get("voxels_above_threshold") or 0)
    if found and not stats.get("voxels_kept"):
        return (f"the post-processing ({stats.get('postprocessing')}) removed all {found:,} voxels above "
                f"the threshold, so the result is empty")
    return None
