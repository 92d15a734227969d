r"""Compares a learned optimizer with tuned baselines on the same held-out problems.

  python scripts/evaluate.py --optimizer_path=runs/quadratic --num_problems=100 \
      --output_json=runs/quadratic/eval.json --output_plot=runs/quadratic/eval.png

Baselines' learning rates are tuned on validation problems (not the test problems) for the
best final loss, unless --notune (then --learning_rate is used for all of them).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

from absl import flags

from l2l_tf import cli
from l2l_tf import evaluation
from l2l_tf import neural_art_figures
from l2l_tf import optimizer_format
from l2l_tf import registry

cli.define_problem_flags()
flags.DEFINE_string(
  "optimizer_path",
  None,
  "A trained optimizer (train.py's --output_dir, its best/ directory, or an exported SavedModel).",
)
flags.DEFINE_list(
  "optimizers",
  ["learned"] + sorted(registry.BASELINES),
  "Which optimizers to run: learned, sgd, rmsprop, adam, nag.",
)
flags.DEFINE_integer("num_problems", 100, "Held-out problems (same for all).", lower_bound=1)
flags.DEFINE_integer(
  "num_tuning_problems",
  None,
  "Validation problems for tuning (default: --num_problems).",
  lower_bound=1,
)
flags.DEFINE_bool("tune", True, "Tune baselines' learning rates on validation problems.")
flags.DEFINE_float("learning_rate", 0.01, "Baselines' learning rate with --notune.")
flags.DEFINE_string("output_json", None, "Write the results here (JSON).")
flags.DEFINE_string("output_plot", None, "Write the loss curves here (PNG).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  names = [n.strip() for n in FLAGS.optimizers]
  unknown = sorted(set(names) - {"learned"} - set(registry.BASELINES))
  if unknown:
    raise ValueError(
      f"Unknown optimizer(s) {unknown} in --optimizers; choose from learned, "
      f"{', '.join(sorted(registry.BASELINES))}"
    )
  rules = {}
  if "learned" in names:
    if not FLAGS.optimizer_path:
      raise ValueError("--optimizers includes 'learned' but no --optimizer_path was given")
    if not os.path.exists(FLAGS.optimizer_path):
      raise ValueError(f"--optimizer_path {FLAGS.optimizer_path} does not exist")
    rules["learned"], _ = optimizer_format.load_rule(FLAGS.optimizer_path)
  for path in (FLAGS.output_json, FLAGS.output_plot):
    if path and os.path.isdir(path):
      raise ValueError(f"{path} is a directory; give a file name")
  problem = cli.problem_from_flags("test", FLAGS.num_problems)
  tuning = cli.problem_from_flags("validation", FLAGS.num_tuning_problems or FLAGS.num_problems)
  baselines = [n for n in names if n != "learned"]
  fixed = None if FLAGS.tune else {n: FLAGS.learning_rate for n in baselines}
  results, losses = evaluation.compare(
    problem,
    rules,
    seed=evaluation.TEST_SEED_OFFSET + FLAGS.seed,
    num_steps=FLAGS.num_steps,
    baselines=baselines,
    tuning_problem=tuning,
    tuning_seed=1 + FLAGS.seed,
    fixed_learning_rates=fixed,
  )
  if FLAGS.problem == "neural_art":  # say which feature network ran, here and in the JSON
    print(problem.describe())
    results["problem_config"] = problem.get_config()
  print(evaluation.format_table(results))
  if FLAGS.output_json:
    evaluation.write_json(results, FLAGS.output_json)
    print(f"wrote {FLAGS.output_json}")
  if FLAGS.output_plot:
    evaluation.plot(results, FLAGS.output_plot, losses)
    print(f"wrote {FLAGS.output_plot}")
    if FLAGS.problem == "neural_art":
      grid = neural_art_figures.grid_path(FLAGS.output_plot)
      neural_art_figures.write_grid(
        grid, problem, results, rules, evaluation.TEST_SEED_OFFSET + FLAGS.seed, FLAGS.num_steps
      )
      print(f"wrote {grid}")


if __name__ == "__main__":
  cli.run(main)
