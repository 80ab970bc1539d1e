"""Keras ``PyDataset`` generators of (image, mask) batches for training and validation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._tfload import import_tensorflow  # noqa: E402

import_tensorflow()  # before keras: avoids a crash beside Mesa OpenGL (see _tfload)

import keras
import numpy as np

from .augment import AugmentConfig, grey_values, sample_coordinates, substitute_flair, warp
from .context import channels_for, patient_neighbours, slices_with_context
from .errors import InputError
from .io import PatientStack
from .preprocess import MODEL_SIZE, as_channels_last, intensity_range, resize_slices, to_model_input


@dataclass
class SliceSet:
    """Preprocessed slices of several patients: images uint8 (N, 256, 256, 3) holding
    the model input times 255, masks uint8 (N, 256, 256), and the patient of each slice."""

    images: np.ndarray
    masks: np.ndarray
    patient: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def patient_ids(self) -> list[str]:
        return list(dict.fromkeys(self.patient.tolist()))

    def subset(self, ids: Sequence[str]) -> SliceSet:
        keep = np.isin(self.patient, list(ids))
        return SliceSet(self.images[keep], self.masks[keep], self.patient[keep])

    def flair_only(self) -> SliceSet:
        """The same slices with FLAIR in all three channels, as a FLAIR-only stack is fed
        to the model (each channel is scaled on its own, so this equals scaling FLAIR)."""
        return SliceSet(np.repeat(self.images[..., 1:2], 3, axis=-1), self.masks, self.patient)


def slices_from_stacks(stacks: Sequence[PatientStack], size: tuple[int, int] = MODEL_SIZE) -> SliceSet:
    """Preprocess patients exactly as inference does; every slice is resized to ``size``.

    Patients without masks, or with masks of another shape, raise InputError.
    """
    if not stacks:
        raise InputError("no patients to train on")
    images, masks, owners = [], [], []
    for st in stacks:
        where = st.source or st.patient_id
        if st.mask is None:
            raise InputError(f"{where}: patient {st.patient_id} has no masks; training needs ground truth")
        vol, _ = as_channels_last(st.image)
        mask = np.asarray(st.mask)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.shape != vol.shape[:3]:
            raise InputError(f"{where}: mask shape {mask.shape} does not match image {vol.shape[:3]}")
        x = to_model_input(vol, intensity_range(vol), size)
        images.append(np.rint(x * 255).astype(np.uint8))
        m = (mask > 0).astype(np.float32)
        if m.shape[1:] != tuple(size):
            m = resize_slices(m, size, order=0)
        masks.append((m > 0.5).astype(np.uint8))
        owners.extend([st.patient_id] * vol.shape[0])
    return SliceSet(np.concatenate(images), np.concatenate(masks), np.asarray(owners))


class SliceDataset(keras.utils.PyDataset):
    """Batches of (images float32 (B, S, S, C) in [0, 1], masks float32 (B, S, S, 1));
    C is 3, or more with ``context``.

    ``augment`` turns on random geometric + elastic + grey-value changes and simulated
    missing sequences (training only; see ``AugmentConfig``).
    ``crop_size`` cuts random crops; ``positive_fraction`` is the share of samples drawn
    from slices with abnormality (and then centred near it). ``small_lesion_power`` p > 0
    draws those slices with weights proportional to (abnormal pixels)^-p, so that slices
    with small abnormalities come up more often (0: uniformly). ``context`` k > 0 gives
    each slice with its k neighbours of the same patient on either side (2.5D input of
    ``3 * (2k + 1)`` channels, see ``core.context``), all warped alike. Order is reshuffled
    each epoch.
    """

    def __init__(
        self,
        data: SliceSet,
        batch_size: int = 16,
        *,
        augment: bool = False,
        crop_size: int | None = None,
        positive_fraction: float | None = None,
        shuffle: bool = False,
        seed: int = 0,
        samples_per_epoch: int | None = None,
        augment_config: AugmentConfig | None = None,
        small_lesion_power: float = 0.0,
        context: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(data) == 0:
            raise InputError("no slices to train on")
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, not {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.augment_config = (augment_config or AugmentConfig()) if augment else None
        self.crop_size = crop_size
        self.positive_fraction = positive_fraction
        self.shuffle = shuffle
        self.samples_per_epoch = samples_per_epoch or len(data)
        self.rng = np.random.default_rng(seed)
        self.channels = channels_for(context)
        self._neighbours = patient_neighbours(data.patient, context) if context else None
        self._positive = np.flatnonzero(data.masks.reshape(len(data), -1).any(axis=1))
        self._negative = np.setdiff1d(np.arange(len(data)), self._positive)
        if small_lesion_power < 0:
            raise InputError(f"small-lesion power must be >= 0, not {small_lesion_power}")
        self._positive_p = None
        if small_lesion_power > 0 and len(self._positive):
            area = data.masks[self._positive].reshape(len(self._positive), -1).sum(axis=1).astype(float)
            w = area ** -float(small_lesion_power)
            self._positive_p = w / w.sum()
        self._epoch_seed = seed
        self._order = self._draw_order()

    def _draw_order(self) -> np.ndarray:
        n = self.samples_per_epoch
        if self.positive_fraction is not None and len(self._positive) and len(self._negative):
            n_pos = int(round(n * self.positive_fraction))
            order = np.concatenate(
                [self.rng.choice(self._positive, n_pos, p=self._positive_p),
                 self.rng.choice(self._negative, n - n_pos)]
            )
            self.rng.shuffle(order)
            return order
        order = np.resize(np.arange(len(self.data)), n)
        if self.shuffle:
            order = self.rng.permutation(order)
        return order

    def __len__(self) -> int:
        return math.ceil(self.samples_per_epoch / self.batch_size)

    def on_epoch_end(self) -> None:
        self._epoch_seed += 1
        self._order = self._draw_order()

    def _center(self, rng: np.random.Generator, idx: int, size: tuple[int, int]) -> tuple[float, float]:
        if self.crop_size is None:
            return ((size[0] - 1) / 2, (size[1] - 1) / 2)
        mask = self.data.masks[idx]
        if self.positive_fraction is not None and mask.any() and rng.random() < 0.8:
            ys, xs = np.nonzero(mask)
            k = rng.integers(len(ys))
            jitter = rng.uniform(-0.35, 0.35, 2) * self.crop_size
            return (float(ys[k] + jitter[0]), float(xs[k] + jitter[1]))
        half = self.crop_size / 2
        return (rng.uniform(half, size[0] - half), rng.uniform(half, size[1] - half))

    def __getitem__(self, index: int):
        ids = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        size = self.data.images.shape[1:3]
        out = (self.crop_size, self.crop_size) if self.crop_size else size
        rng = np.random.default_rng((self._epoch_seed, index))
        xs = np.empty((len(ids), *out, self.channels), np.float32)
        ys = np.empty((len(ids), *out, 1), np.float32)
        for j, idx in enumerate(ids):
            image = slices_with_context(self.data.images, [idx], self._neighbours)[0]
            mask = self.data.masks[idx]
            if self.augment_config is None and self.crop_size is None:
                xs[j], ys[j, ..., 0] = image, mask
                continue
            coords = sample_coordinates(rng, size, out, self._center(rng, idx, size), self.augment_config)
            img, msk = warp(image, mask, coords)
            if self.augment_config is not None:
                img = grey_values(rng, substitute_flair(rng, img, self.augment_config), self.augment_config)
            xs[j], ys[j, ..., 0] = img, msk
        return xs, ys
