"""Several trained optimizers (e.g. one per meta-training seed) on the same held-out runs.

    python benchmarks/mnist_seeds.py --problem=mnist --dataset_source=idx --data_dir=DIR \
        --optimizer_paths=savedmodels/mnist,results/training/ship_s1/stage3/best,... \
        --horizons=100,200 --output_json=results/mnist_seeds.json

The test runs are scripts/evaluate.py's (seed evaluation.TEST_SEED_OFFSET + --seed), so the
numbers sit beside the tuned baselines of benchmarks/mnist_paper_setting.py. Prints each
optimizer's mean loss at every horizon, then the mean and spread (std, min, max) over them.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from l2l_tf import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import optimizer_format  # pylint: disable=g-import-not-at-top,wrong-import-position

cli.define_problem_flags(default_problem="mnist")
flags.DEFINE_list("optimizer_paths", None, "Trained optimizers to compare.", required=True)
flags.DEFINE_list("horizons", ["100", "200"], "Steps at which the mean loss is reported.")
flags.DEFINE_integer("num_problems", 20, "Held-out runs.", lower_bound=1)
flags.DEFINE_string("output_json", None, "Write the results here.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  horizons = cli.parse_ints(FLAGS.horizons, "--horizons")
  problem = cli.problem_from_flags("test", FLAGS.num_problems)
  per_optimizer = {}
  for path in FLAGS.optimizer_paths:
    rule, _ = optimizer_format.load_rule(path)
    losses = evaluation.run_trajectories(
      problem, rule, evaluation.TEST_SEED_OFFSET + FLAGS.seed, max(horizons)
    )
    per_optimizer[path] = {str(h): float(np.mean(losses[h])) for h in horizons}
    print(
      f"RESULT optimizer={path} "
      + " ".join(f"step{h}={per_optimizer[path][str(h)]:.4f}" for h in horizons),
      flush=True,
    )
  spread = {}
  for h in horizons:
    values = np.array([r[str(h)] for r in per_optimizer.values()])
    spread[str(h)] = {
      "mean": float(values.mean()),
      "std": float(values.std()),
      "min": float(values.min()),
      "max": float(values.max()),
    }
    print(
      f"RESULT step={h} over {len(values)} optimizers: mean {values.mean():.4f} std "
      f"{values.std():.4f} min {values.min():.4f} max {values.max():.4f}",
      flush=True,
    )
  if FLAGS.output_json:
    evaluation.write_json(
      {
        "problem": problem.get_config(),
        "num_problems": FLAGS.num_problems,
        "optimizers": per_optimizer,
        "spread": spread,
      },
      FLAGS.output_json,
    )


if __name__ == "__main__":
  cli.run(main)
