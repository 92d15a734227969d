#!/usr/bin/env bash
# Quality benchmark: the README's main job in a fresh directory; prints the table and
# RESULT learned_beats_all_baselines=true|false (loss at step 100, 100 held-out quadratics).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-$(mktemp -d)/quadratic}"
start=$(date +%s)
python scripts/train.py --output_dir="$out"
python scripts/evaluate.py --optimizer_path="$out" --output_json="$out/eval.json" \
    --output_plot="$out/eval.png"
echo "RESULT wall_seconds=$(( $(date +%s) - start )) output=$out"
python benchmarks/verdict.py "$out/eval.json"
