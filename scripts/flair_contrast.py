"""Why FLAIR alone is harder: per patient, how bright the abnormality is against the rest of
the brain in each sequence, and the bundled model's Dice with all sequences and with FLAIR
alone (its defaults, and with no post-processing).

    python scripts/flair_contrast.py [--split docs/training/split-2.0.json --set val]
    python scripts/flair_contrast.py --patients TCGA_DU_8165_19970205

Contrast = mean intensity inside the mask / mean intensity of the other brain voxels (FLAIR
above 10), in raw file values. Default: the validation patients of the split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_lgg_seg.core.inference import predict_probabilities, resolve_model, resolve_postprocessing, segment_volume
from napari_lgg_seg.core.io import read_patient
from napari_lgg_seg.core.metrics import dice
from napari_lgg_seg.core.postprocess import keep_components
from napari_lgg_seg.core.preprocess import flair_channel

CHANNELS = ("pre-contrast", "FLAIR", "post-contrast")


def contrast(image: np.ndarray, mask: np.ndarray) -> list[float]:
    img, lesion = image.astype(np.float64), mask > 0
    brain = (img[..., 1] > 10) & ~lesion
    return [float(img[..., c][lesion].mean() / img[..., c][brain].mean()) for c in range(3)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lgg/kaggle_3m")
    ap.add_argument("--split", default="docs/training/split-2.0.json")
    ap.add_argument("--set", default="val", choices=("train", "val", "test"))
    ap.add_argument("--patients", nargs="+", default=None, help="these patients instead of a split set")
    args = ap.parse_args()
    patients = args.patients or json.loads(Path(args.split).read_text())[args.set]
    print("| patient | true voxels | contrast " + " / ".join(CHANNELS) + " | Dice all | Dice FLAIR only | "
          "FLAIR only, no post-processing: Dice (voxels) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for pid in patients:
        st = read_patient(Path(args.data) / pid)
        grey = flair_channel(st.image)
        # one pass of the network for FLAIR alone, scored with and without the post-processing
        model = resolve_model(grey)
        threshold, post = resolve_postprocessing(model)
        probs = predict_probabilities(grey, model, flair_model=False)
        above = probs >= threshold
        raw = above.astype(np.uint8)
        print(f"| {pid} | {int((st.mask > 0).sum())} | " + " / ".join(f"{c:.2f}" for c in contrast(st.image, st.mask))
              + f" | {dice(st.mask, segment_volume(st.image)):.3f} | {dice(st.mask, keep_components(above, probs, post)):.3f} | "
              f"{dice(st.mask, raw):.3f} ({int(raw.sum())}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
