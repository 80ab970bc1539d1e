import json
import subprocess
import sys
import threading

import pytest

from napari_lgg_seg import InputError, ModelError, PatientStack
from napari_lgg_seg.core.dataset import slices_from_stacks

from ..conftest import synthetic_patient, write_kaggle_patient


@pytest.fixture(scope="module")
def small_data():
    stacks = []
    for i in range(4):
        img, msk = synthetic_patient(4, 32, seed=i, tumour_slices=(1, 2))
        stacks.append(PatientStack(img, msk, f"TCGA_AA_{i:04d}_1"))
    return slices_from_stacks(stacks)


def cfg(tmp_path, **kw):
    from napari_lgg_seg.core.training import TrainConfig

    base = dict(out=str(tmp_path / "m.keras"), epochs=1, batch_size=4, base_filters=2,
                init_from="scratch", crop_size=64, samples_per_epoch=8, val_fraction=0.25,
                augment=True)
    base.update(kw)
    return TrainConfig(**base)


def test_train_writes_best_model_log_and_split(tmp_path, small_data):
    from napari_lgg_seg.core.model import load_model
    from napari_lgg_seg.core.training import train

    r = train(small_data, cfg(tmp_path, epochs=2, log_csv=str(tmp_path / "log.csv")), verbose=0)
    assert r.out.exists() and r.epochs_run == 2 and r.best_val_patient_dice is not None
    assert load_model(r.out).input_shape == (None, 256, 256, 3)  # exported for whole slices
    assert len(r.split["val"]) == 1 and not set(r.split["val"]) & set(r.split["train"])
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch") and "val_patient_dice" in log[0] and len(log) == 3
    assert {"loss", "dice", "iou", "val_loss", "val_dice", "val_iou"} <= set(r.history)
    assert json.loads((tmp_path / "m.split.json").read_text()) == r.split


def test_fixed_validation_and_test_patients(tmp_path, small_data):
    from napari_lgg_seg.core.training import train

    r = train(small_data, cfg(tmp_path, val_patients=["TCGA_AA_0001_1"], test_patients=["TCGA_AA_0002_1"]),
              verbose=0)
    assert r.split == {"train": ["TCGA_AA_0000_1", "TCGA_AA_0003_1"], "val": ["TCGA_AA_0001_1"],
                       "test": ["TCGA_AA_0002_1"]}


def test_flair_only_training_sees_flair_alone(tmp_path, small_data, monkeypatch):
    """With flair_only, the training and validation slices the model gets are FLAIR alone."""
    import napari_lgg_seg.core.training as training

    seen = []
    real = training.SliceDataset

    def spy(data, *a, **kw):
        seen.append(data.images)
        return real(data, *a, **kw)

    monkeypatch.setattr(training, "SliceDataset", spy)
    r = training.train(small_data, cfg(tmp_path, flair_only=True), verbose=0)
    assert r.out.exists() and len(seen) == 2  # training and validation
    for images in seen:
        assert (images[..., 0] == images[..., 1]).all() and (images[..., 2] == images[..., 1]).all()
    assert not (small_data.images[..., 0] == small_data.images[..., 1]).all()


def test_resume_continues_from_last_epoch(tmp_path, small_data):
    from napari_lgg_seg.core.training import train

    train(small_data, cfg(tmp_path, epochs=1, log_csv=str(tmp_path / "log.csv")), verbose=0)
    r = train(small_data, cfg(tmp_path, epochs=2, resume=True, log_csv=str(tmp_path / "log.csv")), verbose=0)
    assert r.epochs_run == 1
    assert [line.split(",")[0] for line in (tmp_path / "log.csv").read_text().splitlines()[1:]] == ["0", "1"]


def test_resume_goes_on_with_the_samples_of_the_next_epoch(tmp_path, small_data, monkeypatch):
    """The resumed epochs draw the slices (and augmentations) an uninterrupted run would
    have, not those of the first epochs again."""
    import napari_lgg_seg.core.training as training

    seen = []

    class Spy(training.SliceDataset):
        def __getitem__(self, index):
            if self.augment_config is not None:  # the training set
                seen.append((self._epoch_seed, index, self._order.tolist()))
            return super().__getitem__(index)

    monkeypatch.setattr(training, "SliceDataset", Spy)
    def last_epoch():  # the batches of the last epoch trained (each seed is one epoch)
        last = max(s[0] for s in seen)
        return sorted(s for s in seen if s[0] == last)

    training.train(small_data, cfg(tmp_path, out=str(tmp_path / "a.keras"), epochs=2), verbose=0)
    whole = last_epoch()
    seen.clear()
    training.train(small_data, cfg(tmp_path, epochs=1), verbose=0)
    first = last_epoch()
    seen.clear()
    training.train(small_data, cfg(tmp_path, epochs=2, resume=True), verbose=0)
    assert len(whole) == 2 and last_epoch() == whole and first != whole


def test_resume_goes_on_with_the_plateau_and_early_stopping_counts(tmp_path, small_data, monkeypatch):
    """With the validation Dice on a plateau, halving after every epoch without improvement
    (lr_patience 1) and stopping after 3: a run interrupted after its second epoch and
    resumed learns at the rates, and stops at the epoch, of an uninterrupted one (it lost
    the halving of its last epoch and started counting afresh)."""
    import keras

    import napari_lgg_seg.core.training as training

    def plateau(self, epoch, logs=None):
        logs["val_patient_dice"] = 0.5

    monkeypatch.setattr(training.PatientDiceCallback, "on_epoch_end", plateau)

    class StopAfterSecond(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    kw = dict(epochs=6, lr_patience=1, patience=3, learning_rate=1e-3, min_lr=1e-6)
    whole = training.train(small_data, cfg(tmp_path, out=str(tmp_path / "a.keras"), **kw), verbose=0)
    assert whole.history["learning_rate"] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4], rel=1e-5)
    training.train(small_data, cfg(tmp_path, **kw), callbacks=[StopAfterSecond()], verbose=0)
    r = training.train(small_data, cfg(tmp_path, resume=True, **kw), verbose=0)
    assert r.history["learning_rate"] == pytest.approx([5e-4, 2.5e-4], rel=1e-5)


def test_resume_without_improvement_reports_the_earlier_best_epoch(tmp_path, small_data):
    """A resumed run that does not beat the best so far still names its epoch (the Train
    widget took None for 'stopped before a model was saved')."""
    from napari_lgg_seg.core.training import train

    train(small_data, cfg(tmp_path, epochs=1), verbose=0)
    state = tmp_path / "m.keras.state.json"
    saved = json.loads(state.read_text())
    assert saved["best_epoch"] == 0
    state.write_text(json.dumps({**saved, "best": 1.0}))  # no epoch can beat a Dice of 1
    r = train(small_data, cfg(tmp_path, epochs=2, resume=True), verbose=0)
    assert r.epochs_run == 1 and r.best_epoch == 0 and r.best_val_patient_dice == 1.0
    assert json.loads(state.read_text())["best_epoch"] == 0


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])  # mixed_float16: a loss-scale optimizer
def test_resume_with_ema_goes_on_from_the_raw_weights(tmp_path, small_data, precision):
    """The checkpoint is saved with the averaged weights swapped into the model (and the
    raw ones into the optimizer); a resumed run swaps them back rather than training on
    from the average and averaging from the raw weights."""
    import keras
    import numpy as np

    from napari_lgg_seg.core.training import train

    seen = {}

    class Spy(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["start"] = [v.numpy().copy() for v in self.model.trainable_variables]

        def on_epoch_end(self, epoch, logs=None):  # after SwapEMAWeights: model = average
            opt = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
            seen["raw"] = [v.numpy().copy() for v in opt._model_variables_moving_average]
            seen["ema"] = [v.numpy().copy() for v in self.model.trainable_variables]
            self.model.stop_training = True  # interrupted after the first of 3 epochs

    # 8 steps: with mixed_float16 the first ones can be skipped while the loss scale drops
    kw = dict(epochs=3, ema_momentum=0.9, precision=precision, samples_per_epoch=32)
    train(small_data, cfg(tmp_path, **kw), callbacks=[Spy()], verbose=0)
    raw, ema = seen["raw"], seen["ema"]
    assert any(not np.allclose(a, b) for a, b in zip(raw, ema))
    train(small_data, cfg(tmp_path, resume=True, **kw), callbacks=[Spy()], verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(seen["start"], raw))


def test_stop_event_keeps_previous_model_intact(tmp_path, small_data):
    from napari_lgg_seg.core.training import train

    out = tmp_path / "m.keras"
    out.write_bytes(b"previous model bytes")
    stop = threading.Event()
    stop.set()
    r = train(small_data, cfg(tmp_path), stop_event=stop, verbose=0)
    # stopped after the first batch, before any epoch was whole: the file it was to replace
    # stays as it was (as the Train widget's "Replace model file?" promises), nothing else written
    assert r.stopped_early and r.epochs_run == 1 and r.best_epoch is None
    assert out.read_bytes() == b"previous model bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


def test_stop_in_the_first_epoch_saves_a_whole_model_to_a_new_path(tmp_path, small_data):
    from napari_lgg_seg.core.model import load_model
    from napari_lgg_seg.core.training import train

    stop = threading.Event()
    stop.set()
    r = train(small_data, cfg(tmp_path), stop_event=stop, verbose=0)
    assert r.stopped_early and r.epochs_run == 1 and r.best_epoch == 0
    assert load_model(tmp_path / "m.keras").input_shape == (None, 256, 256, 3)
    assert not list(tmp_path.glob(".m.*"))  # no temp files left behind


def test_cosine_schedule_decays_to_min_lr(tmp_path, small_data):
    from napari_lgg_seg.core.training import train

    r = train(small_data, cfg(tmp_path, epochs=3, learning_rate=1e-3, min_lr=1e-5, lr_schedule="cosine",
                              log_csv=str(tmp_path / "log.csv")), verbose=0)
    assert r.history["learning_rate"] == pytest.approx([1e-3, 0.5 * (1e-3 + 1e-5), 1e-5], rel=1e-4)


def test_ema_saves_averaged_weights(tmp_path, small_data, tiny_model_path):
    """With a momentum near 1 the averaged weights barely move after the first step,
    so the saved model stays much closer to the initial one than the raw weights do."""
    import numpy as np

    from napari_lgg_seg.core.model import load_model
    from napari_lgg_seg.core.training import train

    init = load_model(tiny_model_path).get_weights()

    def distance(out: str, **kw) -> float:
        train(small_data, cfg(tmp_path, out=out, init_from=str(tiny_model_path), samples_per_epoch=32,
                              learning_rate=1e-2, augment=False, **kw), verbose=0)
        kernels = [(a, b) for a, b in zip(load_model(out).get_weights(), init) if a.ndim == 4]
        return float(sum(np.abs(a - b).sum() for a, b in kernels))

    raw = distance(str(tmp_path / "raw.keras"))
    ema = distance(str(tmp_path / "ema.keras"), ema_momentum=0.999999)
    assert ema < 0.5 * raw


def test_init_from_file_and_wrong_architecture(tmp_path, small_data, tiny_model_path):
    from napari_lgg_seg.core.training import train

    r = train(small_data, cfg(tmp_path, init_from=str(tiny_model_path)), verbose=0)
    assert r.out.exists()
    with pytest.raises(ModelError, match="architecture differs"):
        train(small_data, cfg(tmp_path, out=str(tmp_path / "x.keras"), base_filters=4,
                              init_from=str(tiny_model_path)), verbose=0)
    assert not (tmp_path / "x.keras").exists()


def test_out_that_is_the_model_training_starts_from_is_refused(tmp_path, small_data, tiny_model_path):
    """--init-from m.keras --out m.keras: the first epoch replaced the starting model."""
    import shutil

    from napari_lgg_seg.core.training import train

    start = tmp_path / "m.keras"
    shutil.copy(tiny_model_path, start)
    before = start.read_bytes()
    with pytest.raises(InputError, match="is the model training starts from"):
        train(small_data, cfg(tmp_path, init_from=str(start)), verbose=0)
    assert start.read_bytes() == before


@pytest.mark.parametrize("kw, message", [
    (dict(epochs=0), "epochs must be at least 1"),
    (dict(batch_size=50, samples_per_epoch=None), "larger than the 12 training slices"),
    (dict(val_patients=["TCGA_ZZ"]), "validation/test patients not in the data"),
    (dict(val_patients=["TCGA_AA_0001_1"], test_patients=["TCGA_AA_0001_1"]), "both in validation and test"),
    (dict(lr_schedule="step"), "unknown learning-rate schedule 'step'"),
    (dict(ema_momentum=1.5), "EMA momentum must be between 0 and 1"),
    (dict(missing_sequence=-0.1), "missing-sequence share must be in"),
    (dict(small_lesion_power=3.0), r"small-lesion power must be in \[0, 2\], not 3.0"),
    (dict(seed=-1), "seed must be a whole number, 0 or more, not -1"),  # was numpy's ValueError
    (dict(log_csv="x_1.tif"), "x_1.tif: the training log must be a .csv file"),  # CSV was appended to it
    # accepted through the API (the CLI's argparse types refuse them), then trained badly or failed late
    (dict(learning_rate=float("nan")), "learning rate must be a finite number above 0, not nan"),
    (dict(min_lr=0.0), "min lr must be a finite number above 0"),
    (dict(time_budget_min=0), "time budget must be a number of minutes above 0, not 0"),  # was: no budget
    (dict(time_budget_min=-1.0), "time budget must be"),  # was: stop after the first epoch
    (dict(val_fraction=1.5), r"validation and test fractions must be in \[0, 1\)"),
    (dict(patience=0), "patience must be at least 1"),
    (dict(positive_fraction=2.0), r"positive fraction must be in \[0, 1\]"),
    (dict(precision="fp8"), "unknown precision 'fp8'"),
])
def test_bad_training_settings(tmp_path, small_data, kw, message):
    from napari_lgg_seg.core.training import train

    with pytest.raises(InputError, match=message):
        train(small_data, cfg(tmp_path, **kw), verbose=0)
    assert not (tmp_path / "m.keras").exists()


def test_bad_training_folders(tmp_path):
    from napari_lgg_seg.core.training import train

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no patient folders"):
        train(tmp_path / "empty", cfg(tmp_path))
    write_kaggle_patient(tmp_path / "nomask", masks=False)
    with pytest.raises(InputError, match="has no masks"):
        train(tmp_path / "nomask", cfg(tmp_path))


def test_mixed_slice_sizes_across_patients_are_resized(tmp_path):
    from napari_lgg_seg.core.training import load_training_data

    write_kaggle_patient(tmp_path, "TCGA_AA_0001_1", size=32)
    write_kaggle_patient(tmp_path, "TCGA_AA_0002_1", size=48)
    data = load_training_data(tmp_path)
    assert data.images.shape[1:] == (256, 256, 3) and len(data) == 12


MIRRORED = r"""
import sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from napari_lgg_seg import PatientStack
from napari_lgg_seg.core.dataset import slices_from_stacks
from napari_lgg_seg.core.training import TrainConfig, train
rng = np.random.default_rng(0)
stacks = [PatientStack(rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8),
                       (rng.random((4, 32, 32)) > 0.8).astype(np.uint8), f"P{i}") for i in range(3)]
r = train(slices_from_stacks(stacks), TrainConfig(out=sys.argv[1], epochs=1, batch_size=4, base_filters=2,
          init_from="scratch", crop_size=64, samples_per_epoch=8, strategy="mirrored"), verbose=0)
print("REPLICAS", r.replicas, r.out.exists())
"""


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    out = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path / "m.keras")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "REPLICAS 2 True" in out.stdout, out.stdout


# --------------------------------------------------------------------------- issue 12


@pytest.mark.parametrize("crop, message", [
    (100, "crop size 100 must be a multiple of 16"),
    (8, "crop size 8 must be a multiple of 16"),
    (512, "crop size 512 is larger than the 256x256 training slices"),
])
def test_crop_size_checked_before_data(tmp_path, crop, message):
    """Cause 4: ``train --crop-size 100`` (or 8, or 512) failed with a Keras traceback after
    the data had loaded; the check now runs first (the data root does not even exist)."""
    from napari_lgg_seg.core.training import train

    with pytest.raises(InputError, match=message):
        train(tmp_path / "no-such-data", cfg(tmp_path, crop_size=crop), verbose=0)
    assert not (tmp_path / "m.keras").exists()


def _resume_files(tmp_path, state_text, last_bytes=None, last_model=None):
    (tmp_path / "m.keras.state.json").write_text(state_text)
    last = tmp_path / "m.last.keras"
    if last_bytes is not None:
        last.write_bytes(last_bytes)
    if last_model is not None:
        last.write_bytes(last_model.read_bytes())
    return last


@pytest.mark.parametrize("state, last, error, message", [
    ("{not json", "model", InputError, "m.keras.state.json: damaged resume state (not JSON)"),
    ('{"best": 0.5}', "model", InputError, "m.keras.state.json: damaged resume state (no epoch count)"),
    ('{"epoch": 1}', None, InputError, "cannot resume, m.last.keras is missing"),
    ('{"epoch": 1}', b"garbage", ModelError, "m.last.keras: not a readable .keras model"),
    ('{"epoch": 1}', "model4", ModelError, "m.last.keras: was trained with base filters 2, not 4"),
])
def test_resume_checked_before_training(tmp_path, tiny_model_path, state, last, error, message):
    """Cause 5: ``train --resume`` with ``state.json`` not JSON, without ``epoch``,
    ``.last.keras`` missing or garbage, or another ``--base-filters``, gave tracebacks,
    one after a whole epoch. All are refused before the data is read."""
    from napari_lgg_seg.core.training import train

    _resume_files(tmp_path, state, last_bytes=last if isinstance(last, bytes) else None,
                  last_model=tiny_model_path if isinstance(last, str) else None)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    filters = 4 if last == "model4" else 2
    with pytest.raises(error) as info:
        train(tmp_path / "no-such-data", cfg(tmp_path, resume=True, epochs=3, base_filters=filters), verbose=0)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_resume_with_keras_file_that_does_not_load(tmp_path, small_data, tiny_model_path):
    """Cause 5: a .last.keras whose config is fine but whose weights are damaged gives a
    one-line ModelError, not a Keras traceback."""
    import zipfile

    from napari_lgg_seg.core.training import train

    last = _resume_files(tmp_path, '{"epoch": 1, "best": 0.1}')
    with zipfile.ZipFile(tiny_model_path) as src, zipfile.ZipFile(last, "w") as dst:
        dst.writestr("config.json", src.read("config.json"))  # no weights
    with pytest.raises(ModelError, match="m.last.keras: cannot be loaded to resume"):
        train(small_data, cfg(tmp_path, resume=True, epochs=3), verbose=0)


def test_stale_temp_files_removed_when_training_starts(tmp_path, small_data):
    """Cause 3: kill -9 during a model save left ``.m.XXXX.keras`` forever."""
    from napari_lgg_seg.core.training import train

    stale = [tmp_path / ".m.0123abcd.keras", tmp_path / ".m.last.89abcdef.keras",
             tmp_path / ".m.keras.state.00000000.json"]
    for f in stale:
        f.write_bytes(b"half a model")
    other = tmp_path / ".n.0123abcd.keras"
    other.write_bytes(b"not ours")
    train(small_data, cfg(tmp_path), verbose=0)
    assert not any(f.exists() for f in stale) and other.exists()


def test_one_patient_id_given_as_a_string():
    """val_patients="TCGA_AA_0001_1" was taken as the ids 'T', 'C', 'G', ..."""
    from napari_lgg_seg.core.train_config import TrainConfig

    cfg = TrainConfig(out="m.keras", val_patients="TCGA_AA_0001_1", test_patients="TCGA_AA_0002_1").validate()
    assert cfg.val_patients == ["TCGA_AA_0001_1"] and cfg.test_patients == ["TCGA_AA_0002_1"]


@pytest.mark.parametrize("n, val", [(4, 0.0), (2, 0.1)])
def test_test_fraction_held_out_without_validation(tmp_path, small_data, n, val):
    """--test-fraction holds patients out also with --val-fraction 0 or fewer than 3
    patients (it was ignored: every patient was trained on)."""
    from napari_lgg_seg.core.training import train

    data = small_data.subset(small_data.patient_ids()[:n])
    r = train(data, cfg(tmp_path, val_fraction=val, test_fraction=0.5, samples_per_epoch=4), verbose=0)
    assert len(r.split["test"]) == n // 2 and r.split["val"] == []
    assert not set(r.split["test"]) & set(r.split["train"])


def test_every_patient_fixed_leaves_none_for_training(tmp_path, small_data):
    """Cause 11: "0 patient(s) are too few for a split with 0 val and 0 test" when every
    patient was in --val-patients."""
    from napari_lgg_seg.core.training import train

    ids = small_data.patient_ids()
    with pytest.raises(InputError, match="all 4 patient.s. are validation or test patients; none is left"):
        train(small_data, cfg(tmp_path, val_patients=ids[:3], test_patients=ids[3:]), verbose=0)


MULTIWORKER = r"""
import sys, numpy as np
from napari_lgg_seg import PatientStack
from napari_lgg_seg.core.dataset import slices_from_stacks
from napari_lgg_seg.core.training import TrainConfig, train
rng = np.random.default_rng(0)
stacks = [PatientStack(rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8),
                       (rng.random((4, 32, 32)) > 0.8).astype(np.uint8), f"P{i}") for i in range(3)]
r = train(slices_from_stacks(stacks), TrainConfig(out=sys.argv[1], epochs=1, batch_size=4, base_filters=2,
          init_from="scratch", crop_size=64, samples_per_epoch=8, strategy="multiworker"), verbose=0)
print("REPLICAS", r.replicas, r.out.exists(), r.epochs_run, flush=True)
"""


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multiworker_strategy_with_two_local_workers(tmp_path):
    """``--strategy multiworker``: two worker processes on 127.0.0.1 (TF_CONFIG) train a
    tiny model for one epoch in sync: 2 replicas, and both end with the same trained weights.
    (Keras 3 alone fails here, keras-team/keras#20585; see ``_multiworker_strategy``.)"""
    import os

    import numpy as np

    from napari_lgg_seg.core.model import load_model

    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = []
    for i in range(2):
        (tmp_path / f"w{i}").mkdir()
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        env = dict(os.environ, TF_CONFIG=tf_config, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
        procs.append(subprocess.Popen([sys.executable, "-c", MULTIWORKER, str(tmp_path / f"w{i}" / "m.keras")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        results = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
        assert "REPLICAS 2 True 1" in out, out
    models = [load_model(tmp_path / f"w{i}" / "m.last.keras") for i in range(2)]
    # each worker saw its own shard of the batches (its batch-norm statistics differ), yet
    # the trained weights agree: the gradients were all-reduced between the workers
    stats = [[w.numpy() for w in m.non_trainable_weights] for m in models]
    assert not all(np.allclose(a, b) for a, b in zip(*stats))
    w0, w1 = ([w.numpy() for w in m.trainable_weights] for m in models)
    assert len(w0) == len(w1) > 0
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(w0, w1))


def test_training_data_that_cannot_fit_is_refused_before_reading(tmp_path, monkeypatch):
    """Cause 9: the slices of every patient are held in memory; when they cannot fit the
    run stops before reading them, naming the data root."""
    from napari_lgg_seg.core import resources
    from napari_lgg_seg.core.training import load_training_data

    write_kaggle_patient(tmp_path, "TCGA_AA_0001_1", n_slices=6)
    monkeypatch.setattr(resources, "available_memory", lambda: 2**29 + 2**20)  # headroom + 1 MiB
    with pytest.raises(InputError, match=rf"{tmp_path}: loading 6 training slices needs about 0.5 GiB"):
        load_training_data(tmp_path)
