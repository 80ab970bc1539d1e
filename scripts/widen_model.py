"""Widen a U-Net without context to 2.5D input, sharing its first kernel with the neighbours.

    python scripts/widen_model.py runs/bundled2/phase8.keras --context 1 --share 0.25 \
        --out runs/bundled2/phase8-wide.keras

Each neighbour slice gets ``share`` x the first kernel and the slice itself the rest
(1 - 2k x share), so on a volume whose neighbouring slices are alike the widened model
computes what the original did. Training (``--context-slices``) widens with zero weights
for the neighbours instead, which an optimiser at fine-tuning learning rates hardly moves
(phase 9: 1% of the centre's norm after 6 epochs at 1e-4); this starts them where they
matter.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_lgg_seg.core.context import channels_for, expand_first_kernel, model_context
from napari_lgg_seg.core.errors import InputError
from napari_lgg_seg.core.model import build_unet, load_model, save_model


def widen(model, context: int, share: float):
    """``model`` (no context) as a U-Net with ``context``, neighbours sharing the first kernel."""
    if model_context(model) != 0:
        raise SystemExit("the model already has context")
    try:
        weights = expand_first_kernel(model.get_weights(), context, share)
    except InputError as exc:
        raise SystemExit(str(exc)) from None
    wide = build_unet(int(model.get_layer("enc0_conv1").filters), (*model.input_shape[1:3], channels_for(context)))
    wide.set_weights(weights)
    return wide


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--context", type=int, default=1)
    ap.add_argument("--share", type=float, default=0.25)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    save_model(widen(load_model(args.model), args.context, args.share), args.out)
    print(f"wrote {args.out}: {args.model} widened to context {args.context}, neighbour share {args.share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
