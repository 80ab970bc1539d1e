"""Training settings: a plain dataclass (no TensorFlow) shared by the CLI, the Train
widget and ``train()``, with the one set of checks they all use."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .preprocess import MODEL_SIZE

# the U-Net pools 4 times, so crops must divide by 2**4
CROP_MULTIPLE = 16
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclass
class TrainConfig:
    """Everything ``train`` needs; widget fields and CLI flags map onto these names."""

    out: str
    epochs: int = 50
    batch_size: int = 16
    base_filters: int = 16
    learning_rate: float = 1e-3
    init_from: str = "bundled"  # "bundled", "scratch" or a .keras path
    val_patients: list[str] | None = None
    test_patients: list[str] | None = None  # held out, never used; None: test_fraction of the rest
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    augment: bool = True
    missing_sequence: float = 0.3  # share of training slices with pre/post-contrast replaced by FLAIR
    flair_only: bool = False  # train and validate on FLAIR alone (a model for FLAIR-only stacks)
    crop_size: int | None = None
    positive_fraction: float | None = 0.5
    small_lesion_power: float = 0.0  # >0: abnormal slices drawn with weight (abnormal pixels)^-power
    context_slices: int = 0  # 2.5D: neighbouring slices on either side as channels; 0: as the starting model
    samples_per_epoch: int | None = None
    patience: int = 10
    lr_patience: int = 4
    min_lr: float = 1e-5
    lr_schedule: str = "plateau"  # "plateau" (halve on plateau) or "cosine" (decay to min_lr over epochs)
    ema_momentum: float | None = None  # e.g. 0.995: validate and save an EMA of the weights
    time_budget_min: float | None = None
    precision: str = "float32"  # or "mixed_bfloat16" / "mixed_float16"
    resume: bool = False
    strategy: str | None = None  # None, "mirrored" or "multiworker"
    workers: int = 1
    log_csv: str | None = None

    def validate(self) -> TrainConfig:
        """Raise InputError for settings that cannot train; the CLI, the Train widget and
        ``train()`` all call this before any data is read. Returns self."""
        for name in ("val_patients", "test_patients"):  # one id, not its characters
            if isinstance(getattr(self, name), str):
                setattr(self, name, [getattr(self, name)])
        out = Path(self.out).expanduser()
        if not str(self.out).strip() or out.suffix != ".keras":
            raise InputError(f"'{self.out}': the output model must be a .keras file")
        if not out.parent.is_dir():
            raise InputError(f"{out}: folder {out.parent} does not exist")
        if self.log_csv is not None and Path(self.log_csv).suffix.lower() != ".csv":
            # it is appended to: any other file (an image, the model) would be damaged
            raise InputError(f"{self.log_csv}: the training log must be a .csv file")
        from .io import check_writable_folder

        check_writable_folder(out.parent, "for the output model")  # now, not after the first epoch
        if self.epochs < 1:
            raise InputError(f"epochs must be at least 1, not {self.epochs}")
        for name in ("learning_rate", "min_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
                raise InputError(f"{name.replace('_', ' ')} must be a finite number above 0, not {value!r}")
        if not (0.0 <= self.val_fraction < 1 and 0.0 <= self.test_fraction < 1):
            raise InputError(f"validation and test fractions must be in [0, 1), not {self.val_fraction} "
                             f"and {self.test_fraction}")
        if self.positive_fraction is not None and not 0.0 <= self.positive_fraction <= 1.0:
            raise InputError(f"positive fraction must be in [0, 1], not {self.positive_fraction}")
        if self.patience < 1:
            raise InputError(f"patience must be at least 1 epoch, not {self.patience}")
        if self.time_budget_min is not None and not 0 < self.time_budget_min < math.inf:
            # 0 was taken as no budget at all, a negative one stopped after the first epoch
            raise InputError(f"time budget must be a number of minutes above 0, not {self.time_budget_min}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        if self.strategy not in (None, "mirrored", "multiworker"):
            raise InputError(f"unknown strategy {self.strategy!r}; use 'mirrored' or 'multiworker'")
        if self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, not {self.batch_size}")
        if self.samples_per_epoch is not None and self.batch_size > self.samples_per_epoch:
            raise InputError(
                f"batch size {self.batch_size} is larger than the {self.samples_per_epoch} samples per epoch"
            )
        if self.crop_size is not None:
            if self.crop_size < CROP_MULTIPLE or self.crop_size % CROP_MULTIPLE:
                raise InputError(f"crop size {self.crop_size} must be a multiple of {CROP_MULTIPLE} (e.g. 64, 128)")
            if self.crop_size > min(MODEL_SIZE):
                raise InputError(
                    f"crop size {self.crop_size} is larger than the {MODEL_SIZE[0]}x{MODEL_SIZE[1]} training slices"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be a whole number, 0 or more, not {self.seed!r}")
        if self.base_filters < 1:
            raise InputError(f"base filters must be at least 1, not {self.base_filters}")
        if self.lr_schedule not in ("plateau", "cosine"):
            raise InputError(f"unknown learning-rate schedule {self.lr_schedule!r}; use 'plateau' or 'cosine'")
        if not 0.0 <= self.small_lesion_power <= 2.0:
            raise InputError(f"small-lesion power must be in [0, 2], not {self.small_lesion_power}")
        from .context import channels_for

        channels_for(self.context_slices)  # InputError unless 0..MAX_CONTEXT
        if not 0.0 <= self.missing_sequence <= 1.0:
            raise InputError(f"missing-sequence share must be in [0, 1], not {self.missing_sequence}")
        if self.ema_momentum is not None and not 0 < self.ema_momentum < 1:
            raise InputError(f"EMA momentum must be between 0 and 1, not {self.ema_momentum}")
        if self.init_from not in ("bundled", "scratch"):
            start = Path(self.init_from).expanduser()
            if not start.is_file():
                raise InputError(f"{self.init_from}: no such model file to start from")
            if not self.resume and out.exists() and out.resolve() == start.resolve():
                # the first saved epoch would replace it, even if training makes it worse
                raise InputError(f"{out}: is the model training starts from (init from); save to another file")
        return self
