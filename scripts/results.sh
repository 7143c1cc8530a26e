#!/usr/bin/env bash
# Regenerates docs/results.md: Fashion-MNIST evidence for the paper's rule, its controls and its peers, on a clean,
# a long-tailed (--imbalance 10) and a noisy-label (--label-noise 0.2) training set, 3 seeds each.
# About 35-45 minutes on a 2-core CPU; rerunning skips finished runs, so an interrupted run continues.
# Usage: bash scripts/results.sh [OUT]   (default runs/results; needs `make setup` and dataset-fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/results}"
HB=".venv/bin/hardbatch"
# A network and budget that fit the CPU: LeNet-5, 8,000 class-balanced training images (the 10,000 test images
# stay whole), 5% of the 60,000 held out for choosing δ, batch 64, 10 epochs of constant-rate SGD.
COMMON=(--dataset fashion-mnist --model lenet --train-subset 8000 --val-fraction 0.05 --batch-size 64 --epochs 10
        --lr 0.05 --momentum 0.9 --seeds 0 1 2 --no-progress)
start=$(date +%s)
for setting in clean imbalance10 noise20; do
  case "$setting" in
    clean) extra=() ;;
    imbalance10) extra=(--imbalance 10) ;;
    noise20) extra=(--label-noise 0.2) ;;
  esac
  dir="$OUT/$setting"
  # The paper's rule at every δ; its controls at δ < 1 (at δ = 1 they train exactly what the rule trains); the peers.
  "$HB" compare "${COMMON[@]}" "${extra[@]}" --policies hardbatch --deltas 0.2 0.5 0.8 1.0 --out "$dir" > /dev/null
  "$HB" compare "${COMMON[@]}" "${extra[@]}" --policies random --deltas 0.2 0.5 0.8 --out "$dir" > /dev/null
  "$HB" compare "${COMMON[@]}" "${extra[@]}" --policies cyclic --deltas 0.5 --out "$dir" > /dev/null
  "$HB" compare "${COMMON[@]}" "${extra[@]}" --policies uniform selective-backprop infobatch --out "$dir" > /dev/null
  echo "$setting done after $(( $(date +%s) - start )) s" >&2
done
echo "all runs done in $(( $(date +%s) - start )) s" >&2
.venv/bin/python scripts/results_page.py "$OUT" docs/results.md --seconds "$(( $(date +%s) - start ))" \
    --readme README.md
