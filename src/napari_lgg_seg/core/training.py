"""Training and fine-tuning the U-Net: ``train()`` and the Keras callbacks it uses."""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._tfload import import_tensorflow  # noqa: E402

import_tensorflow()  # before keras: avoids a crash beside Mesa OpenGL (see _tfload)

import keras
import numpy as np

from .augment import AugmentConfig
from .context import channels_for, expand_first_kernel, model_context, patient_neighbours, slices_with_context
from .dataset import SliceDataset, SliceSet, slices_from_stacks
from .errors import InputError, ModelError
from .io import atomic_write, find_patient_folders, kaggle_slices, read_patient, remove_stale_temp_files
from .metrics import dice
from .preprocess import MODEL_SIZE
from .resources import check_fits
from .model import build_unet, compile_unet, load_model, save_model
from .splits import split_patients
from .train_config import TrainConfig


@dataclass
class TrainResult:
    out: Path
    best_epoch: int | None
    best_val_patient_dice: float | None
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)
    split: dict[str, list[str]] = field(default_factory=dict)
    stopped_early: bool = False
    replicas: int = 1


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state.json")


def _last_path(out: Path) -> Path:
    return out.with_name(out.stem + ".last.keras")


def _split_path(out: Path) -> Path:
    return out.with_name(out.stem + ".split.json")


def remove_stale_outputs(out: Path) -> list[Path]:
    """Delete temporary files that a killed save of this run's outputs left behind."""
    removed = []
    for target in (out, _last_path(out), _state_path(out), _split_path(out)):
        removed += remove_stale_temp_files(target)
    return removed


def keras_filters(path: Path) -> int | None:
    """``base_filters`` of a U-Net saved as .keras (filters of its first convolution),
    read from the archive's config without TensorFlow; None when not one of our U-Nets."""
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable .keras model ({type(exc).__name__})") from None
    for layer in config.get("config", {}).get("layers", []):
        if layer.get("name") == "enc0_conv1":
            return int(layer.get("config", {}).get("filters", 0)) or None
    return None


def check_resume(cfg: TrainConfig) -> dict | None:
    """The saved state of the run to continue (``cfg.resume``), checked before any data is
    read: a JSON state file with the epoch reached, a readable ``<out>.last.keras`` and
    the same ``base_filters``. None when not resuming."""
    if not cfg.resume:
        return None
    out = Path(cfg.out)
    state_file, last = _state_path(out), _last_path(out)
    if not state_file.exists():
        raise InputError(f"{out}: nothing to resume (no {state_file.name})")
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        raise InputError(f"{state_file}: damaged resume state (not JSON); start again without --resume") from None
    epoch = state.get("epoch") if isinstance(state, dict) else None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise InputError(f"{state_file}: damaged resume state (no epoch count); start again without --resume")
    best = state.get("best")
    if best is not None and not isinstance(best, (int, float)):
        raise InputError(f"{state_file}: damaged resume state (bad 'best'); start again without --resume")
    best_epoch = state.get("best_epoch")
    if best_epoch is not None and (not isinstance(best_epoch, int) or isinstance(best_epoch, bool) or best_epoch < 0):
        raise InputError(f"{state_file}: damaged resume state (bad 'best_epoch'); start again without --resume")
    if not last.is_file():
        raise InputError(f"{out}: cannot resume, {last.name} is missing; start again without --resume")
    filters = keras_filters(last)
    if filters is None:
        raise ModelError(f"{last}: not a U-Net saved by this plugin; cannot resume from it")
    if filters != cfg.base_filters:
        raise ModelError(
            f"{last}: was trained with base filters {filters}, not {cfg.base_filters}; "
            "resume with the same --base-filters"
        )
    if epoch >= cfg.epochs:
        raise InputError(f"{out}: already trained {epoch} of {cfg.epochs} epochs")
    return state


def per_patient_dice(model, data: SliceSet, batch_size: int = 16, threshold: float = 0.5) -> dict[str, float]:
    """Dice of each patient's whole volume in a preprocessed SliceSet (with the
    neighbouring slices as input for a model with context)."""
    context = model_context(model)
    scores = {}
    for pid in data.patient_ids():
        sub = data.subset([pid])
        neighbours = patient_neighbours(sub.patient, context) if context else None
        preds = []
        for s in range(0, len(sub), batch_size):
            x = slices_with_context(sub.images, slice(s, s + batch_size), neighbours)
            preds.append(np.asarray(model.predict_on_batch(x), dtype=np.float32)[..., 0] >= threshold)
        scores[pid] = dice(np.concatenate(preds), sub.masks)
    return scores


class PatientDiceCallback(keras.callbacks.Callback):
    """Adds ``val_patient_dice`` (mean per-patient Dice on whole validation volumes) to the logs."""

    def __init__(self, data: SliceSet, batch_size: int = 16):
        super().__init__()
        self.data = data
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and len(self.data):
            scores = per_patient_dice(self.model, self.data, self.batch_size)
            logs["val_patient_dice"] = float(np.mean(list(scores.values())))


_COUNTERS = {"wait": 0, "best": 0.0, "cooldown_counter": 0}  # of EarlyStopping / ReduceLROnPlateau


class CheckpointCallback(keras.callbacks.Callback):
    """Saves the best model (by ``monitor``) atomically to ``out`` and, every epoch, the
    last model plus a state file so that an interrupted run can resume.

    ``keep_existing`` (a file the run is to replace): an epoch that ``stopper`` cut short
    before this run saved anything saves nothing, so that Stop during the first epoch
    leaves that file as it was rather than a model trained for a few batches.

    ``counting``: callbacks (by name) whose counters (epochs waited, best value, cooldown)
    go into the state file, to be given back to them when ``counters`` (of a resumed run)
    holds them; placed after them, so that it saves what their epoch end did (a halved
    learning rate included)."""

    def __init__(self, out: Path, monitor: str, mode: str, export: Callable, best: float | None = None,
                 keep_existing: bool = False, stopper: StopCallback | None = None,
                 best_epoch: int | None = None, counting: dict[str, keras.callbacks.Callback] | None = None,
                 counters: dict | None = None):
        super().__init__()
        self.out, self.monitor, self.mode, self.export = out, monitor, mode, export
        self.best = best
        self.best_epoch = best_epoch  # of ``best``: a resumed run's best so far
        self.keep_existing, self.stopper = keep_existing, stopper
        self.counting, self.counters = counting or {}, counters or {}

    def on_train_begin(self, logs=None):  # after theirs, which reset the counters
        for name, cb in self.counting.items():
            saved = self.counters.get(name)
            for key in _COUNTERS:
                if isinstance(saved, dict) and key in saved and hasattr(cb, key):
                    setattr(cb, key, saved[key])

    def _counters(self) -> dict:
        return {
            name: {key: None if getattr(cb, key) is None else type(default)(getattr(cb, key))
                   for key, default in _COUNTERS.items() if hasattr(cb, key)}
            for name, cb in self.counting.items()
        }

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        if self.keep_existing and self.best_epoch is None and self.stopper is not None and self.stopper.by_user:
            return
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is not None and not math.isnan(value) and self._better(value):
            self.best, self.best_epoch = float(value), epoch
            save_model(self.export(self.model), self.out)
        save_model(self.model, _last_path(self.out))
        state = {"epoch": epoch + 1, "best": self.best, "best_epoch": self.best_epoch, "monitor": self.monitor,
                 "counters": self._counters()}
        atomic_write(_state_path(self.out), lambda tmp: tmp.write_text(json.dumps(state)))


class StopCallback(keras.callbacks.Callback):
    """Stops after the current batch when ``event`` is set, or after the epoch in which
    the time budget ran out."""

    def __init__(self, event: threading.Event | None = None, time_budget_s: float | None = None):
        super().__init__()
        self.event = event
        self.deadline = time.monotonic() + time_budget_s if time_budget_s else None
        self.stopped = False
        self.by_user = False  # stopped by ``event``, after a batch: the epoch is cut short

    def on_train_batch_end(self, batch, logs=None):
        if self.event is not None and self.event.is_set():
            self.model.stop_training = True
            self.stopped = self.by_user = True

    def on_epoch_end(self, epoch, logs=None):
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.model.stop_training = True
            self.stopped = True


def _strategy_scope(name: str | None):
    if not name:
        return contextlib.nullcontext()
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy().scope()
    if name == "multiworker":
        return _multiworker_strategy().scope()
    raise InputError(f"unknown strategy {name!r}; use 'mirrored' or 'multiworker'")


def _multiworker_strategy():
    """MultiWorkerMirroredStrategy (workers from ``TF_CONFIG``) whose ``reduce`` takes what
    Keras 3 ``Model.fit`` passes to it (keras-team/keras#20585): the first (image, mask)
    batch as one nested structure, which the collective strategy cannot reduce, so it is
    reduced leaf by leaf; and scalar metrics with ``axis=0``, reduced across replicas only."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    reduce = strategy.reduce

    def leaf(reduce_op, v, axis):
        local = strategy.experimental_local_results(v)[0]
        if axis is not None and getattr(getattr(local, "shape", None), "rank", None) == 0:
            axis = None
        return reduce(reduce_op, v, axis=axis)

    def reduce_nested(reduce_op, value, axis=None):
        return tf.nest.map_structure(lambda v: leaf(reduce_op, v, axis), value)

    strategy.reduce = reduce_nested
    return strategy


def _initial_model(cfg: TrainConfig) -> keras.Model:
    """The model training starts from; its context is ``cfg.context_slices``, or with 0 the
    context of the model it starts from (a model with context cannot be narrowed)."""
    if cfg.init_from == "scratch":
        return build_unet(cfg.base_filters, input_shape=(None, None, channels_for(cfg.context_slices)))
    source = load_model(None if cfg.init_from == "bundled" else cfg.init_from)
    weights = source.get_weights()
    have = model_context(source)
    want = cfg.context_slices or have
    if have != want:
        if have != 0:
            where = "the bundled model" if cfg.init_from == "bundled" else cfg.init_from
            raise ModelError(f"{where}: takes {have} context slice(s) each side, not {want}; "
                             "only a model without context can be widened")
        weights = expand_first_kernel(weights, want)  # starts as the 2D model
    model = build_unet(cfg.base_filters, input_shape=(None, None, channels_for(want)))  # crops or whole slices
    try:
        model.set_weights(weights)
    except ValueError:
        where = "the bundled model" if cfg.init_from == "bundled" else cfg.init_from
        raise ModelError(
            f"{where}: its architecture differs from a {cfg.base_filters}-filter U-Net; "
            "use --base-filters matching it or --init-from scratch"
        ) from None
    return model


def _float32_twin(base_filters: int, context: int = 0) -> Callable[[keras.Model], keras.Model]:
    """Exported models take whole 256x256 slices and compute in float32, whatever
    crops and precision trained them."""

    twins: list[keras.Model] = []  # built once, on the first save

    def export(model: keras.Model) -> keras.Model:
        if not twins:
            with _policy("float32"):
                twins.append(build_unet(base_filters, (*MODEL_SIZE, channels_for(context))))
        twins[0].set_weights(model.get_weights())
        return twins[0]

    return export


@contextlib.contextmanager
def _policy(name: str):
    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(old)


def load_training_data(data_root: str | os.PathLike) -> SliceSet:
    """Read every patient folder under ``data_root`` (all must have masks), after checking
    that their slices (kept as 256x256 uint8 image and mask) fit in memory."""
    folders = find_patient_folders(data_root)
    n = sum(len(kaggle_slices(f)[1]) for f in folders)
    check_fits(n * 4 * MODEL_SIZE[0] * MODEL_SIZE[1], f"{data_root}: loading {n} training slices")
    return slices_from_stacks([read_patient(p) for p in folders])


def train(
    data: str | os.PathLike | SliceSet,
    config: TrainConfig,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    stop_event: threading.Event | None = None,
    verbose: int = 1,
) -> TrainResult:
    """Train or fine-tune the U-Net; the best model (by validation per-patient Dice, or by
    training loss without validation patients) is written atomically to ``config.out``.

    ``data`` is a folder of kaggle_3m patients or a preprocessed ``SliceSet``. Test
    patients (``config.test_fraction``) are held out and never used here.
    """
    cfg = config
    cfg.validate()
    out = Path(cfg.out)
    state = check_resume(cfg)
    remove_stale_outputs(out)
    slices = data if isinstance(data, SliceSet) else load_training_data(data)
    ids = slices.patient_ids()
    if cfg.val_patients is not None or cfg.test_patients is not None:
        fixed = set(cfg.val_patients or []) | set(cfg.test_patients or [])
        unknown = sorted(fixed - set(ids))
        if unknown:
            raise InputError(f"validation/test patients not in the data: {', '.join(unknown)}")
        overlap = sorted(set(cfg.val_patients or []) & set(cfg.test_patients or []))
        if overlap:
            raise InputError(f"patients both in validation and test: {', '.join(overlap)}")
        if not set(ids) - fixed:
            raise InputError(
                f"all {len(ids)} patient(s) are validation or test patients; none is left for training"
            )
        rest = split_patients(
            [p for p in ids if p not in fixed],
            0.0 if cfg.val_patients is not None else cfg.val_fraction,
            0.0 if cfg.test_patients is not None else cfg.test_fraction,
            cfg.seed,
        )
        split = {
            "train": rest["train"],
            "val": sorted(cfg.val_patients) if cfg.val_patients is not None else rest["val"],
            "test": sorted(cfg.test_patients) if cfg.test_patients is not None else rest["test"],
        }
    elif cfg.test_fraction > 0 or (len(ids) >= 3 and cfg.val_fraction > 0):
        # a test share is held out however few the patients; validation needs 3 or more
        split = split_patients(ids, cfg.val_fraction if len(ids) >= 3 else 0.0, cfg.test_fraction, cfg.seed)
    else:
        split = {"train": ids, "val": [], "test": []}
    train_set, val_set = slices.subset(split["train"]), slices.subset(split["val"])
    if cfg.flair_only:
        train_set, val_set = train_set.flair_only(), val_set.flair_only()
    if len(train_set) == 0:
        raise InputError("no training slices left after the validation/test split")
    if cfg.batch_size > len(train_set) and cfg.samples_per_epoch is None:
        raise InputError(
            f"batch size {cfg.batch_size} is larger than the {len(train_set)} training slices"
        )

    initial_epoch = state["epoch"] if state else 0

    with _policy(cfg.precision), _strategy_scope(cfg.strategy):
        if state:
            try:
                model = keras.models.load_model(_last_path(out))
            except Exception as exc:  # Keras raises many types for damaged archives
                raise ModelError(
                    f"{_last_path(out)}: cannot be loaded to resume ({type(exc).__name__}); "
                    "start again without --resume"
                ) from None
            if cfg.context_slices not in (0, model_context(model)):
                raise ModelError(f"{_last_path(out)}: was trained with {model_context(model)} context slice(s), "
                                 f"not {cfg.context_slices}; resume with the same --context-slices")
            optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # mixed_float16: loss scaling
            if getattr(optimizer, "use_ema", False):
                # saved after SwapEMAWeights put the averaged weights into the model and the
                # raw ones into the optimizer: swap back, so that training goes on from the
                # raw weights and the average from where it was
                swap = keras.callbacks.SwapEMAWeights()
                swap.set_model(model)
                swap._swap_variables()
        else:
            model = compile_unet(_initial_model(cfg), cfg.learning_rate, cfg.ema_momentum)
    context = model_context(model)

    train_ds = SliceDataset(
        train_set, cfg.batch_size, augment=cfg.augment, crop_size=cfg.crop_size,
        augment_config=AugmentConfig(missing_sequence=cfg.missing_sequence),
        positive_fraction=cfg.positive_fraction, small_lesion_power=cfg.small_lesion_power,
        shuffle=True, seed=cfg.seed, context=context,
        samples_per_epoch=cfg.samples_per_epoch, workers=cfg.workers,
        use_multiprocessing=False,
    )
    for _ in range(initial_epoch):  # a resumed run goes on with the samples of its next epoch
        train_ds.on_epoch_end()
    val_ds = SliceDataset(val_set, cfg.batch_size, context=context) if len(val_set) else None
    monitor, mode = ("val_patient_dice", "max") if val_ds else ("loss", "min")
    stopper = StopCallback(stop_event, cfg.time_budget_min * 60 if cfg.time_budget_min else None)
    replaces = out.exists() and not state
    lr_callback = _lr_callback(cfg, monitor, mode)
    early = keras.callbacks.EarlyStopping(monitor, patience=cfg.patience, mode=mode)
    checkpoint = CheckpointCallback(
        out, monitor, mode, _float32_twin(cfg.base_filters, context), best=state["best"] if state else None,
        keep_existing=replaces, stopper=stopper, best_epoch=state.get("best_epoch") if state else None,
        counting={"lr": lr_callback, "early_stopping": early},
        counters=state.get("counters") if state and isinstance(state.get("counters"), dict) else None,
    )
    cbs: list[keras.callbacks.Callback] = []
    if cfg.ema_momentum:
        # Swapped in before validation and the epoch-end callbacks below, so that
        # per-patient Dice, checkpoints and early stopping all see the averaged weights.
        cbs.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if val_ds:
        cbs.append(PatientDiceCallback(val_set, cfg.batch_size))
    cbs += [lr_callback, early, checkpoint, stopper]
    if cfg.log_csv:
        cbs.append(keras.callbacks.CSVLogger(cfg.log_csv, append=bool(state)))
    cbs += list(callbacks)
    with _policy(cfg.precision):
        history = model.fit(
            train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=initial_epoch,
            callbacks=cbs, verbose=verbose,
        )
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    epochs_run = len(next(iter(hist.values()), []))
    if not out.exists() or replaces and checkpoint.best_epoch is None:
        # stopped before the first epoch ended: keep nothing half-done, and a file that was there as it was
        return TrainResult(out, None, None, epochs_run, hist, split, True, _replicas(model))
    atomic_write(
        _split_path(out), lambda tmp: tmp.write_text(json.dumps(split, indent=1))
    )
    return TrainResult(
        out=out,
        best_epoch=checkpoint.best_epoch,
        best_val_patient_dice=checkpoint.best if monitor == "val_patient_dice" else None,
        epochs_run=epochs_run,
        history=hist,
        split=split,
        stopped_early=stopper.stopped,
        replicas=_replicas(model),
    )


def _lr_callback(cfg: TrainConfig, monitor: str, mode: str) -> keras.callbacks.Callback:
    if cfg.lr_schedule == "cosine":
        return keras.callbacks.LearningRateScheduler(lambda epoch: cosine_lr(epoch, cfg))
    return keras.callbacks.ReduceLROnPlateau(
        monitor, factor=0.5, patience=cfg.lr_patience, mode=mode, min_lr=cfg.min_lr
    )


def cosine_lr(epoch: int, cfg: TrainConfig) -> float:
    """Learning rate of ``epoch`` under cosine decay from ``learning_rate`` to ``min_lr``."""
    t = min(epoch / max(cfg.epochs - 1, 1), 1.0)
    return cfg.min_lr + 0.5 * (cfg.learning_rate - cfg.min_lr) * (1 + math.cos(math.pi * t))


def _replicas(model: keras.Model) -> int:
    strategy = getattr(model, "distribute_strategy", None)
    return int(getattr(strategy, "num_replicas_in_sync", 1))
