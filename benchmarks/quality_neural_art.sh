#!/usr/bin/env bash
# Quality benchmark: the shipped neural-art optimizer (savedmodels/neural_art) against SGD,
# RMSprop, Adam and NAG, each tuned for the final loss on 2 other crops, on 20 held-out content
# crops for 128 steps, in the paper's three settings (64x64 crops, 128x128 crops, a second
# style); prints each table and a RESULT learned_beats_all_baselines=true|false line per setting.
#
# usage: benchmarks/quality_neural_art.sh [--retrain] [--output_dir=DIR]
#
# --retrain first reproduces savedmodels/neural_art's recipe in --output_dir and evaluates that
# optimizer: stage 1 fine-tunes the MNIST optimizer it started from (results/training/ft200, the
# 2 x 20 LSTM after stage 3 of the MNIST recipe) on 64x64 crops with style gravel, stage 2
# continues at a lower meta learning rate, stage 4 grows stage 2 into rnnprop (new
# Adam-normalised inputs at zero weight). About 75 minutes of meta-training and 40 of
# evaluation on a quiet 2-core CPU. --output_dir=DIR: where the runs and evaluations go (default: a
# new temporary directory).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/flags.sh"
retrain=false
out=""
for arg in "$@"; do
  case "$arg" in
    --retrain) retrain=true ;;
    --output_dir | --output_dir=*) set_path_flag out "$arg" ;;
    *) help_or_unknown "$arg" ;;
  esac
done
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "$out" ]]; then out="$(mktemp -d)"; fi
optimizer=savedmodels/neural_art
start=$(date +%s)
if $retrain; then
  common=(--problem=neural_art --batch_size=1 --num_steps=128 --unroll_length=32
          --trajectories_per_epoch=20 --meta_objective=log_loss --validation_metric=final)
  python scripts/train.py "${common[@]}" --init_from=results/training/ft200/best \
      --output_dir="$out/stage1" --epochs=4 --meta_learning_rate=0.002 \
      --num_validation_problems=4
  python scripts/train.py "${common[@]}" --init_from="$out/stage1/best" \
      --output_dir="$out/stage2" --epochs=16 --meta_learning_rate=0.0005 --seed=1 \
      --num_validation_problems=8
  python scripts/train.py "${common[@]}" --grow_from="$out/stage2/best" --optimizer=rnnprop \
      --cell_config='{"raw_gradient": true, "bounded": false, "initial_learning_rate": 0}' \
      --output_dir="$out/stage4" --epochs=16 --meta_learning_rate=0.0003 --seed=1 \
      --num_validation_problems=8
  optimizer="$out/stage4/best"
fi
for setting in 64 second_style 128; do
  case "$setting" in
    64) extra=() ;;
    second_style) extra=(--style=brick) ;;
    128) extra=(--image_size=128) ;;
  esac
  python scripts/evaluate.py --problem=neural_art --optimizer_path="$optimizer" "${extra[@]}" \
      --num_problems=20 --num_tuning_problems=2 --num_steps=128 \
      --output_json="$out/$setting.json" --output_plot="$out/$setting.png"
  echo "setting $setting:"
  python benchmarks/verdict.py --eval_json="$out/$setting.json"
done
echo "RESULT wall_seconds=$(( $(date +%s) - start )) optimizer=$optimizer output=$out"
