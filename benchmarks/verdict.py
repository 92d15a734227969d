"""Prints RESULT learned_beats_all_baselines=true|false for an evaluate.py JSON (final loss).

    python benchmarks/verdict.py --eval_json=EVAL_JSON

The learned optimizer beats the baselines when its mean final loss is below every one of
theirs. A file that is missing or not an evaluate.py result is one `error:` line.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from l2l_tf import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string(
  "eval_json", None, "A results file written by scripts/evaluate.py.", required=True
)
FLAGS = flags.FLAGS


def verdict_line(results):
  """The RESULT line for evaluate.py's `results` mapping (optimizer name -> summary)."""
  learned = results["learned"]["final_loss_mean"]
  others = {n: r["final_loss_mean"] for n, r in sorted(results.items()) if n != "learned"}
  beats = all(learned < loss for loss in others.values())
  return (
    f"RESULT learned_beats_all_baselines={str(beats).lower()} learned={learned:.4g} "
    + " ".join(f"{n}={loss:.4g}" for n, loss in others.items())
  )


def verdict_for_file(path):
  """verdict_line of an evaluate.py JSON file; ValueError naming the file if it has none."""
  try:
    with open(path) as f:
      return verdict_line(json.load(f)["results"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(
      f"{path} is not a readable evaluate.py result ({type(e).__name__}: {e})"
    ) from None


def main(argv):
  del argv
  print(verdict_for_file(FLAGS.eval_json))


if __name__ == "__main__":
  cli.run(main)
