"""Re-estimate a U-Net's BatchNorm statistics on the training slices as inference sees them.

    python scripts/recalibrate_bn.py runs/bundled2/phase8.keras --split docs/training/split-2.0.json \
        --out runs/bundled2/phase8-bn.keras

Training draws abnormal slices far more often than they occur (60%; about 1 in 3 slices
shows abnormality in the data), augments them, and keeps BatchNorm's moving statistics as an
exponential average of those batches. This recomputes them as plain averages over every
training slice once, unaugmented, in slice order shuffled with a fixed seed; no weight but
the moving means and variances changes. Only the split's training patients are used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_lgg_seg.core.context import model_context, patient_neighbours, slices_with_context
from napari_lgg_seg.core.dataset import slices_from_stacks
from napari_lgg_seg.core.io import read_patient
from napari_lgg_seg.core.model import load_model, save_model


def recalibrate(model, images: np.ndarray, patient: np.ndarray, batch_size: int = 8, seed: int = 0):
    import keras

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    context = model_context(model)
    neighbours = patient_neighbours(patient, context) if context else None
    order = np.random.default_rng(seed).permutation(len(images))
    for layer in bns:  # forget the old statistics
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, "float32"))
        layer.moving_variance.assign(np.zeros(layer.moving_variance.shape, "float32"))
    for n, start in enumerate(range(0, len(order), batch_size)):
        ids = order[start : start + batch_size]
        x = slices_with_context(images, ids, neighbours)
        for layer in bns:  # cumulative average: batch n gets weight 1 / (n + 1)
            layer.momentum = n / (n + 1)
        model(x, training=True)
    for layer in bns:
        layer.momentum = 0.99
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--split", required=True, type=Path)
    ap.add_argument("--data", default="../shared/data/lgg/kaggle_3m", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    train = json.loads(args.split.read_text())["train"]
    data = slices_from_stacks([read_patient(args.data / pid) for pid in train])
    print(f"{len(data)} training slices of {len(train)} patients", flush=True)
    model = recalibrate(load_model(args.model), data.images, data.patient, args.batch_size)
    save_model(model, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
