cd "$(dirname "$0")/../../.."  # the project root; ../shared beside it
# A 2.5D U-Net (one neighbour either side) from scratch on the 2.0 split, stage 1 of the 1.1
# recipe (128-px crops, 60% abnormal, plateau-halving from 1e-3), with missing sequences
# simulated from the start. Resumable: add --resume to continue after an interruption.
V=$(python3 -c "import json;s=json.load(open('docs/training/split-2.0.json'));print(' '.join(s['val']))")
T=$(python3 -c "import json;s=json.load(open('docs/training/split-2.0.json'));print(' '.join(s['test']))")
exec .venv/bin/napari-lgg-seg train ../shared/data/lgg/kaggle_3m --out runs/scratch25d/stage1.keras \
  --init-from scratch --context-slices 1 --val-patients $V --test-patients $T \
  --epochs 200 --batch-size 16 --learning-rate 1e-3 --crop-size 128 --positive-fraction 0.6 \
  --samples-per-epoch 2048 --patience 12 --missing-sequence 0.3 --precision mixed_bfloat16 \
  --time-budget 110 --log-csv runs/scratch25d/stage1.csv "$@"
