"""Prints RESULT learned_beats_all_baselines=true|false for an evaluate.py JSON (final loss)."""
import json
import sys


def main(path):
  with open(path) as f:
    results = json.load(f)["results"]
  learned = results["learned"]["final_loss_mean"]
  beats = all(learned < r["final_loss_mean"] for n, r in results.items() if n != "learned")
  print(f"RESULT learned_beats_all_baselines={str(beats).lower()} learned={learned:.4g} "
        + " ".join(f"{n}={r['final_loss_mean']:.4g}" for n, r in sorted(results.items())
                   if n != "learned"))


if __name__ == "__main__":
  main(sys.argv[1])
