cd "$(dirname "$0")/../../.."  # the project root; ../shared beside it
V=$(python3 -c "import json;s=json.load(open('docs/training/split-2.0.json'));print(' '.join(s['val']))")
T=$(python3 -c "import json;s=json.load(open('docs/training/split-2.0.json'));print(' '.join(s['test']))")
exec .venv/bin/napari-lgg-seg train ../shared/data/lgg/kaggle_3m --out runs/bundled2/flair.keras \
  --init-from runs/bundled2/phase6.keras --val-patients $V --test-patients $T --flair-only \
  --epochs 16 --batch-size 8 --learning-rate 1e-4 --lr-schedule cosine --min-lr 1e-5 --ema 0.995 \
  --positive-fraction 0.6 --missing-sequence 0 --samples-per-epoch 640 --precision mixed_bfloat16 \
  --time-budget 24 --patience 16 --log-csv runs/bundled2/flair.csv
