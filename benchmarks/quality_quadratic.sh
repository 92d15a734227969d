#!/usr/bin/env bash
# Quality benchmark: the README's main job in a fresh directory; prints the table and
# RESULT learned_beats_all_baselines=true|false (loss at step 100, 100 held-out quadratics).
#
# usage: benchmarks/quality_quadratic.sh [--output_dir=DIR]
#
# --output_dir=DIR: where the training run and eval.json go (default: a new temporary
# directory).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/flags.sh"
out=""
for arg in "$@"; do
  case "$arg" in
    --output_dir | --output_dir=*) set_path_flag out "$arg" ;;
    *) help_or_unknown "$arg" ;;
  esac
done
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${out:-$(mktemp -d)/quadratic}"
start=$(date +%s)
python scripts/train.py --output_dir="$out"
python scripts/evaluate.py --optimizer_path="$out" --output_json="$out/eval.json" \
    --output_plot="$out/eval.png"
echo "RESULT wall_seconds=$(( $(date +%s) - start )) output=$out"
python benchmarks/verdict.py --eval_json="$out/eval.json"
