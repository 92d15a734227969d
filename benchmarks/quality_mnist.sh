#!/usr/bin/env bash
# Quality benchmark: the shipped MNIST optimizer (savedmodels/mnist) against SGD, RMSprop, Adam
# and NAG, each tuned for the final loss, on 20 held-out runs of 100 steps; prints the table and
# RESULT learned_beats_all_baselines=true|false.
#
# usage: benchmarks/quality_mnist.sh [--retrain] [--data_dir=MNIST_IDX_DIR]
#
# --data_dir=MNIST_IDX_DIR (the official IDX gzip files): the paper's setting, test runs on
# t10k. Without it: the embedded 4,000-digit sample, a quick check only (100 steps memorise its
# 500 test digits). --retrain first reproduces savedmodels/mnist's recipe in a temporary
# directory and evaluates that optimizer: stage 1 on the embedded sample (truncated unrolls of
# 20), then on --data_dir, which it then needs: stage 2 (untruncated, 100 steps), 3 (200 steps
# in truncations of 100), 4 (untruncated, 100 steps, a mix of four networks), 5 (the mix,
# 200 steps untruncated) and 6 (stage 5 grown into rnnprop, whose new Adam-normalised inputs
# start at zero weight; the mix, 200 steps untruncated). About 4 hours on a quiet 2-core CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/flags.sh"
parse_mnist_flags "$@"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="$(mktemp -d)"
optimizer=savedmodels/mnist
start=$(date +%s)
if $retrain; then
  common=(--problem=mnist --batch_size=2 --trajectories_per_epoch=20 --num_validation_problems=16
          --meta_objective=log_loss --validation_metric=final)
  python scripts/train.py "${common[@]}" --output_dir="$out/stage1" --epochs=10 \
      --meta_learning_rate=0.002
  full=("${common[@]}" "${data[@]}" --meta_learning_rate=0.001 --validation_window=20
        --unroll_length=100)
  python scripts/train.py "${full[@]}" --init_from="$out/stage1/best" \
      --output_dir="$out/stage2" --epochs=11
  python scripts/train.py "${full[@]}" --init_from="$out/stage2/best" \
      --output_dir="$out/stage3" --epochs=9 --num_steps=200
  mix=(--train_networks=sigmoid:20,sigmoid:40,sigmoid:20-20,relu:20 --recompute=blocks)
  python scripts/train.py "${full[@]}" "${mix[@]}" --init_from="$out/stage3/best" \
      --output_dir="$out/stage4" --epochs=40
  python scripts/train.py "${full[@]}" "${mix[@]}" --init_from="$out/stage4/best" \
      --output_dir="$out/stage5" --epochs=12 --num_steps=200 --unroll_length=200
  python scripts/train.py "${full[@]}" "${mix[@]}" --grow_from="$out/stage5/best" \
      --optimizer=rnnprop \
      --cell_config='{"raw_gradient": true, "bounded": false, "initial_learning_rate": 0}' \
      --output_dir="$out/stage6" --epochs=6 --num_steps=200 --unroll_length=200 \
      --meta_learning_rate=0.0003
  optimizer="$out/stage6/best"
fi
python scripts/evaluate.py --problem=mnist --optimizer_path="$optimizer" --num_problems=20 \
    "${data[@]}" --output_json="$out/eval.json" --output_plot="$out/eval.png"
echo "RESULT wall_seconds=$(( $(date +%s) - start )) optimizer=$optimizer output=$out"
python benchmarks/verdict.py --eval_json="$out/eval.json"
