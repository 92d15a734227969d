"""A trained MNIST optimizer in the paper's setting: full MNIST, tuned baselines, 100 and 200
steps, and its sensitivity to a learning-rate multiplier beside Adam's.

    python benchmarks/mnist_paper_setting.py --optimizer_path=savedmodels/mnist \
        --dataset_source=idx --data_dir=DIR_WITH_MNIST_IDX_FILES --output_json=mnist_paper.json

The optimizee is the paper's 784-20-10 sigmoid MLP (or --hidden_sizes / --activation) trained
on the official test digits (t10k), the same --num_problems runs for every optimizer; the
baselines' learning rates are tuned for the final loss at each horizon on validation runs
(digits of the train split), as scripts/evaluate.py does. The sensitivity study multiplies the
learned update (what LearnedOptimizer's learning_rate does) and Adam's tuned learning rate by
the same factors, on the test runs of the first horizon. Prints RESULT lines and writes JSON.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from l2l_tf import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import optimizer_format  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import update_rules  # pylint: disable=g-import-not-at-top,wrong-import-position

cli.define_problem_flags(default_problem="mnist")
flags.DEFINE_string("optimizer_path", None, "The trained optimizer.", required=True)
flags.DEFINE_list("horizons", ["100", "200"], "Steps of each evaluation.")
flags.DEFINE_integer("num_problems", 20, "Held-out runs per evaluation.", lower_bound=1)
flags.DEFINE_list(
  "scales",
  ["0.3", "0.5", "1", "2", "3"],
  "Learning-rate multipliers of the sensitivity study ('' to skip it).",
)
flags.DEFINE_string("output_json", None, "Write all results here.")
FLAGS = flags.FLAGS


def _sensitivity(problem, rule, adam_rate, num_steps, seed):
  # Variables, so that each rule is traced once for all the scales.
  scale, rate = tf.Variable(1.0, dtype=tf.float64), tf.Variable(adam_rate, dtype=tf.float64)
  learned_rule, adam = update_rules.ScaledUpdateRule(rule, scale), update_rules.Adam(rate)
  rows = []
  for value in (float(s) for s in FLAGS.scales if s):
    scale.assign(value)
    rate.assign(adam_rate * value)
    learned = evaluation.run_trajectories(problem, learned_rule, seed, num_steps)
    adam_losses = evaluation.run_trajectories(problem, adam, seed, num_steps)
    rows.append(
      {
        "scale": value,
        "learned": float(np.mean(learned[-1])),
        "adam": float(np.mean(adam_losses[-1])),
      }
    )
    print(
      f"RESULT sensitivity scale={value:g} learned={rows[-1]['learned']:.4g} "
      f"adam={rows[-1]['adam']:.4g} (adam lr {adam_rate * value:.3g})",
      flush=True,
    )
  return rows


def main(argv):
  del argv
  rule, metadata = optimizer_format.load_rule(FLAGS.optimizer_path)
  horizons = cli.parse_ints(FLAGS.horizons, "--horizons")
  problem = cli.problem_from_flags("test", FLAGS.num_problems)
  tuning = cli.problem_from_flags("validation", FLAGS.num_problems)
  report = {
    "optimizer_path": FLAGS.optimizer_path,
    "problem": problem.get_config(),
    "dataset_source": FLAGS.dataset_source,
    "meta_trained": metadata,
    "horizons": {},
  }
  start = time.time()
  for horizon in horizons:
    results, _ = evaluation.compare(
      problem,
      {"learned": rule},
      seed=evaluation.TEST_SEED_OFFSET + FLAGS.seed,
      num_steps=horizon,
      tuning_problem=tuning,
      tuning_seed=1 + FLAGS.seed,
    )
    report["horizons"][horizon] = results
    print(evaluation.format_table(results), flush=True)
    learned = results["results"]["learned"]["final_loss_mean"]
    others = {n: r["final_loss_mean"] for n, r in results["results"].items() if n != "learned"}
    print(
      f"RESULT horizon={horizon} learned={learned:.4g} best_baseline="
      f"{min(others, key=others.get)}:{min(others.values()):.4g} "
      f"learned_beats_all_baselines={str(learned < min(others.values())).lower()}",
      flush=True,
    )
  if any(FLAGS.scales):
    adam_rate = report["horizons"][horizons[0]]["results"]["adam"]["learning_rate"]
    report["sensitivity"] = _sensitivity(
      problem, rule, adam_rate, horizons[0], evaluation.TEST_SEED_OFFSET + FLAGS.seed
    )
  report["wall_seconds"] = time.time() - start
  print(f"RESULT wall_seconds={report['wall_seconds']:.0f}")
  if FLAGS.output_json:
    evaluation.write_json(report, FLAGS.output_json)
    print(f"wrote {FLAGS.output_json}")


if __name__ == "__main__":
  cli.run(main)
