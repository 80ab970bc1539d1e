cd "$(dirname "$0")/../../.."  # the project root; ../shared beside it
# Stages 2-4 of the from-scratch 2.5D U-Net (stage 1: command.sh). Run one stage at a time:
#   bash docs/training/scratch-2.5d/stages.sh 2   (add --resume after an interruption)
set -e
STAGE=$1; shift
V=$(python3 -c "import json;s=json.load(open('docs/training/split-2.0.json'));print(' '.join(s['val']))")
T=$(python3 -c "import json;s=json.load(open('docs/training/split-2.0.json'));print(' '.join(s['test']))")
COMMON="--val-patients $V --test-patients $T --batch-size 8 --samples-per-epoch 640 --precision mixed_bfloat16"
R=runs/scratch25d
case $STAGE in
  2) exec .venv/bin/napari-lgg-seg train ../shared/data/lgg/kaggle_3m --out $R/stage2.keras --init-from $R/stage1.keras \
       $COMMON --epochs 200 --learning-rate 3e-4 --positive-fraction 0.5 --missing-sequence 0.3 --patience 10 \
       --time-budget 35 --log-csv $R/stage2.csv "$@" ;;
  3) exec .venv/bin/napari-lgg-seg train ../shared/data/lgg/kaggle_3m --out $R/stage3.keras --init-from $R/stage2.keras \
       $COMMON --epochs 55 --learning-rate 3e-4 --min-lr 1e-5 --lr-schedule cosine --ema 0.995 --positive-fraction 0.4 \
       --missing-sequence 0.4 --patience 55 --time-budget 125 --log-csv $R/stage3.csv "$@" ;;
  4) exec .venv/bin/napari-lgg-seg train ../shared/data/lgg/kaggle_3m --out $R/stage4.keras --init-from $R/stage3.keras \
       $COMMON --epochs 16 --learning-rate 1e-4 --min-lr 1e-5 --lr-schedule cosine --ema 0.995 --positive-fraction 0.6 \
       --small-lesion-power 0.5 --missing-sequence 0.4 --patience 16 --time-budget 30 --log-csv $R/stage4.csv "$@" ;;
  *) echo "stage 2, 3 or 4" >&2; exit 2 ;;
esac
