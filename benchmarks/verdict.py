"""Prints RESULT learned_beats_all_baselines=true|false for an evaluate.py JSON (final loss).

python benchmarks/verdict.py EVAL_JSON
"""

import json
import sys

USAGE = "usage: python benchmarks/verdict.py EVAL_JSON (a file written by evaluate.py)"


def verdict_line(results):
  """The RESULT line for evaluate.py's `results` mapping (optimizer name -> summary)."""
  learned = results["learned"]["final_loss_mean"]
  others = {n: r["final_loss_mean"] for n, r in sorted(results.items()) if n != "learned"}
  beats = all(learned < loss for loss in others.values())
  return (
    f"RESULT learned_beats_all_baselines={str(beats).lower()} learned={learned:.4g} "
    + " ".join(f"{n}={loss:.4g}" for n, loss in others.items())
  )


def main(args):
  if args in (["-h"], ["--help"]):
    print(USAGE)
    return
  if len(args) != 1 or args[0].startswith("-"):
    sys.exit(f"error: {USAGE}")
  try:
    with open(args[0]) as f:
      results = json.load(f)["results"]
    print(verdict_line(results))
  except (OSError, ValueError, KeyError, TypeError) as e:
    sys.exit(f"error: {args[0]} is not a readable evaluate.py result ({type(e).__name__}: {e})")


if __name__ == "__main__":
  main(sys.argv[1:])
