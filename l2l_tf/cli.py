"""Shared pieces of the absl command-line programs in scripts/."""
import sys

from absl import app
from absl import flags
from absl import logging

from l2l_tf import registry

FLAGS = flags.FLAGS

# define_problem_flags is a DEFINE_* helper: the flags it defines belong to the script that
# calls it, so they are key flags of that script and its --help lists them (not only
# --helpfull). This module therefore defines no flags of its own.
flags.disclaim_key_flags()


def define_problem_flags():
  """Defines the optimizee flags shared by the scripts (--problem, --num_steps, --seed, ...)."""
  flags.DEFINE_enum("problem", "quadratic", list(registry.PROBLEMS + registry.CIFAR_PROBLEMS),
                    "Optimizee family.")
  flags.DEFINE_enum("dataset_source", "embedded", ["embedded", "tfds", "idx", "binary"],
                    "Where data comes from. MNIST: the sample shipped in the package "
                    "(embedded), tensorflow-datasets, or a directory of official IDX files. "
                    "CIFAR: tfds, or a directory of CIFAR-10's binary files (binary).")
  flags.DEFINE_list("labels", None, "CIFAR classes to keep (default: the problem's own; "
                    "e.g. --problem=cifar5 --labels=5,6,7,8,9 meta-trains LSTM-sub).")
  flags.DEFINE_string("data_dir", None, "Data directory for --dataset_source=tfds|idx.")
  flags.DEFINE_list("hidden_sizes", ["20"], "MNIST MLP hidden layer widths.")
  flags.DEFINE_enum("activation", "sigmoid", ["sigmoid", "relu", "tanh"], "MNIST activation.")
  flags.DEFINE_integer("num_steps", 100, "Optimizee steps per trajectory.", lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Base random seed.", lower_bound=0)


def problem_from_flags(split, batch_size=None):
  try:
    hidden_sizes = [int(h) for h in FLAGS.hidden_sizes]
  except ValueError:
    raise ValueError(f"--hidden_sizes must be integers, got {FLAGS.hidden_sizes}") from None
  if FLAGS.problem != "quadratic" and FLAGS.dataset_source in ("idx", "binary") \
      and not FLAGS.data_dir:
    raise ValueError(f"--dataset_source={FLAGS.dataset_source} needs --data_dir")
  try:
    labels = None if FLAGS.labels is None else [int(x) for x in FLAGS.labels]
  except ValueError:
    raise ValueError(f"--labels must be integers, got {FLAGS.labels}") from None
  if labels is not None and FLAGS.problem not in registry.CIFAR_PROBLEMS:
    raise ValueError("--labels applies to the CIFAR problems only")
  return registry.make_problem(FLAGS.problem, split, batch_size, FLAGS.dataset_source,
                               FLAGS.data_dir, hidden_sizes, FLAGS.activation, labels=labels)


def run(main):
  """app.run that turns expected failures (bad input, bad files) into one-line errors."""

  def guarded(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
      sys.exit(f"error: unexpected arguments {argv[1:]} (flags are written --name=value)")
    try:
      main(argv)
    except (ValueError, OSError) as e:
      sys.exit(f"error: {e}")

  app.run(guarded)
