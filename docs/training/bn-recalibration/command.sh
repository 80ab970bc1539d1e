cd "$(dirname "$0")/../../.."
.venv/bin/python scripts/recalibrate_bn.py runs/bundled2/phase8.keras --split docs/training/split-2.0.json \
  --out runs/bundled2/phase8-bn.keras
.venv/bin/python scripts/evaluate_bundled.py select --model runs/bundled2/phase8-bn.keras \
  --baseline runs/bundled2/phase8.keras --split docs/training/split-2.0.json --out runs/bundled2/eval-bn
