#!/usr/bin/env bash
# Quality benchmark: the shipped two-network convnet optimizer (savedmodels/mnist_convnet: one
# network for the conv parameters, one for the rest) against RMSprop, Adam and NAG, each tuned
# for the final loss on 4 validation problems, on 20 held-out runs of 100 steps of the CIFAR
# convnet on MNIST digits (our substitute for the paper's CIFAR panel); prints the table and
# RESULT learned_beats_all_baselines=true|false.
#
# usage: benchmarks/quality_convnet.sh [--retrain] [--data_dir=MNIST_IDX_DIR]
#
# --data_dir=MNIST_IDX_DIR (the official IDX gzip files): test runs on t10k, the committed
# panel's setting. Without it: the embedded 4,000-digit sample, a quick check only. --retrain
# first reproduces savedmodels/mnist_convnet's recipe in a temporary directory (needs
# --data_dir) and evaluates that optimizer: stage 1 from scratch (unrolls of 20 over 100 steps,
# 6 epochs), stage 2 grows it into rnnprop cells (new Adam-normalised inputs at zero weight,
# 8 epochs). About 75 minutes of meta-training and 25 of evaluation on a quiet 2-core CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/flags.sh"
parse_mnist_flags "$@"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="$(mktemp -d)"
optimizer=savedmodels/mnist_convnet
start=$(date +%s)
if $retrain; then
  common=(--problem=mnist_convnet "${data[@]}" --batch_size=1 --trajectories_per_epoch=20
          --num_validation_problems=8 --meta_objective=log_loss --validation_metric=final
          --validation_window=20 --unroll_length=20 --num_steps=100)
  python scripts/train.py "${common[@]}" --output_dir="$out/stage1" --epochs=6 \
      --meta_learning_rate=0.002
  python scripts/train.py "${common[@]}" --grow_from="$out/stage1/best" --optimizer=rnnprop \
      --cell_config='{"raw_gradient": true, "bounded": false, "initial_learning_rate": 0}' \
      --output_dir="$out/stage2" --epochs=8 --meta_learning_rate=0.0003
  optimizer="$out/stage2/best"
fi
python scripts/evaluate.py --problem=mnist_convnet --optimizer_path="$optimizer" \
    "${data[@]}" --num_problems=20 --num_tuning_problems=4 --optimizers=learned,adam,nag,rmsprop \
    --output_json="$out/eval.json" --output_plot="$out/eval.png"
echo "RESULT wall_seconds=$(( $(date +%s) - start )) optimizer=$optimizer output=$out"
python benchmarks/verdict.py --eval_json="$out/eval.json"
