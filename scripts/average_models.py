"""Average the weights of U-Nets of one architecture (a uniform "model soup").

    python scripts/average_models.py runs/bundled2/phase6.keras runs/bundled2/phase8.keras \
        --out runs/bundled2/soup68.keras

Every weight is averaged, BatchNorm moving statistics included; this suits models
fine-tuned from one another (same start, nearby weights), as phases 6 and 8 are.
A model without context is widened (``core.context.expand_first_kernel``) to average it
with one that has context.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from napari_lgg_seg.core.context import expand_first_kernel, model_context
from napari_lgg_seg.core.model import build_unet, load_model, save_model


def average(paths: list[Path]) -> "object":
    models = [load_model(p) for p in paths]
    context = max(model_context(m) for m in models)
    weights = [m.get_weights() if model_context(m) == context else expand_first_kernel(m.get_weights(), context)
               for m in models]
    if len({len(w) for w in weights}) != 1 or any(a.shape != b.shape for w in weights[1:] for a, b in zip(weights[0], w)):
        raise SystemExit("the models have different architectures; cannot average them")
    filters = int(models[0].get_layer("enc0_conv1").filters)
    soup = build_unet(filters, tuple(models[0].input_shape[1:3]) + (int(weights[0][0].shape[2]),))
    soup.set_weights([np.mean([w[i] for w in weights], axis=0) for i in range(len(weights[0]))])
    return soup


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    if len(args.models) < 2:
        raise SystemExit("give at least two models to average")
    save_model(average(args.models), args.out)
    print(f"wrote {args.out}: the average of {', '.join(map(str, args.models))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
