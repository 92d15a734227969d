#!/usr/bin/env bash
# Quality benchmark: the shipped MNIST optimizer (savedmodels/mnist) against SGD,
# RMSprop, Adam and NAG, each tuned for the final loss, on 20 held-out runs (test digits of the
# embedded sample); prints the table and
# RESULT learned_beats_all_baselines=true|false (mean loss at step 100).
# Pass --retrain to meta-train a new optimizer with the shipped command first (about 22 minutes
# on a 2-core CPU) and evaluate that one instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="$(mktemp -d)"
optimizer=savedmodels/mnist
start=$(date +%s)
if [[ "${1:-}" == "--retrain" ]]; then
  optimizer="$out/mnist"
  python scripts/train.py --problem=mnist --output_dir="$optimizer" --batch_size=2 --epochs=10 \
      --trajectories_per_epoch=20 --num_validation_problems=16 --meta_learning_rate=0.002 \
      --meta_objective=log_loss --validation_metric=final
fi
python scripts/evaluate.py --problem=mnist --optimizer_path="$optimizer" --num_problems=20 \
    --output_json="$out/eval.json" --output_plot="$out/eval.png"
echo "RESULT wall_seconds=$(( $(date +%s) - start )) optimizer=$optimizer output=$out"
python benchmarks/verdict.py "$out/eval.json"
