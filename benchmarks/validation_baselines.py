"""Tuned baselines on the meta-training validation problems, for reading train.py's numbers.

scripts/train.py early-stops on `num_validation_problems` problems of the validation split
(seed 1) with --validation_metric=final: the mean loss over the last --validation_window steps.
This prints the same number for SGD/RMSprop/Adam/NAG over a learning-rate grid, so that a run's
validation losses (results/training/*/history.json) can be compared with tuned baselines.

    python benchmarks/validation_baselines.py --problem=mnist --dataset_source=idx \
        --data_dir=DIR --num_validation_problems=16 --horizons=100,200 --validation_window=20
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from l2l_tf import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import registry  # pylint: disable=g-import-not-at-top,wrong-import-position

cli.define_problem_flags(default_problem="mnist")
flags.DEFINE_integer("num_validation_problems", 16, "As train.py's flag.", lower_bound=1)
flags.DEFINE_list("horizons", ["100"], "Trajectory lengths.")
flags.DEFINE_integer(
  "validation_window", 20, "Last steps averaged (train.py's final metric).", lower_bound=1
)
flags.DEFINE_list("optimizers", sorted(registry.BASELINES), "Baselines to run.")
FLAGS = flags.FLAGS

VALIDATION_SEED = 1  # MetaTrainer's default validation_seed


def main(argv):
  del argv
  problem = cli.problem_from_flags("validation", FLAGS.num_validation_problems)
  for horizon in cli.parse_ints(FLAGS.horizons, "--horizons"):
    for name in FLAGS.optimizers:
      best, scores = evaluation.tune_learning_rate(
        problem,
        name,
        VALIDATION_SEED,
        horizon,
        score=lambda losses: np.mean(losses[-FLAGS.validation_window :]),
      )
      print(
        f"RESULT horizon={horizon} optimizer={name} learning_rate={best:.3g} "
        f"validation_final{FLAGS.validation_window}={scores[best]:.4f}",
        flush=True,
      )


if __name__ == "__main__":
  cli.run(main)
