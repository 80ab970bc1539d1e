cd "$(dirname "$0")/../../.."  # the project root; ../shared beside it
# Phase 9b: phase 8 widened to 2.5D with the neighbours sharing the first kernel (0.15 each,
# 0.70 for the slice itself), then phase 8's recipe for up to 24 epochs.
V=$(python3 -c "import json;s=json.load(open('docs/training/split-2.0.json'));print(' '.join(s['val']))")
T=$(python3 -c "import json;s=json.load(open('docs/training/split-2.0.json'));print(' '.join(s['test']))")
.venv/bin/python scripts/widen_model.py runs/bundled2/phase8.keras --context 1 --share 0.15 \
  --out runs/bundled2/phase8-wide.keras
exec .venv/bin/napari-lgg-seg train ../shared/data/lgg/kaggle_3m --out runs/bundled2/phase9b.keras \
  --init-from runs/bundled2/phase8-wide.keras --context-slices 1 --val-patients $V --test-patients $T \
  --small-lesion-power 0.5 \
  --epochs 24 --batch-size 8 --learning-rate 1e-4 --lr-schedule cosine --min-lr 1e-5 --ema 0.995 \
  --positive-fraction 0.6 --missing-sequence 0.4 --samples-per-epoch 640 --precision mixed_bfloat16 \
  --time-budget 40 --patience 24 --log-csv runs/bundled2/phase9b.csv
