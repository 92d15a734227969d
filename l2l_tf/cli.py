"""Shared pieces of the absl command-line programs in scripts/."""

import os
import re
import sys
import traceback

from absl import app
from absl import flags
from absl import logging

from l2l_tf import registry
from l2l_tf.problems import neural_art

FLAGS = flags.FLAGS

# define_problem_flags is a DEFINE_* helper: the flags it defines belong to the script that
# calls it, so they are key flags of that script and its --help lists them (not only
# --helpfull). This module therefore defines no flags of its own.
flags.disclaim_key_flags()


def define_problem_flags(default_problem: str = "quadratic"):
  """Defines the optimizee flags shared by the scripts (--problem, --num_steps, --seed, ...);
  a benchmark of one problem family makes it the default."""
  flags.DEFINE_enum("problem", default_problem, list(registry.PROBLEMS), "Optimizee family.")
  flags.DEFINE_enum(
    "dataset_source",
    "embedded",
    ["embedded", "tfds", "idx", "binary"],
    "Where data comes from. MNIST (mnist, mnist_convnet): the sample shipped in "
    "the package (embedded), tensorflow-datasets, or a directory of official IDX files. "
    "CIFAR: tfds, or a directory of CIFAR-10's binary files (binary).",
  )
  flags.DEFINE_list(
    "labels",
    None,
    "CIFAR classes to keep (default: the problem's own; "
    "e.g. --problem=cifar5 --labels=5,6,7,8,9 meta-trains LSTM-sub).",
  )
  flags.DEFINE_string(
    "data_dir",
    None,
    "Data directory for --dataset_source=tfds|idx; for "
    "neural_art, a directory of content photos in train/, validation/, test/.",
  )
  flags.DEFINE_list("hidden_sizes", ["20"], "MNIST MLP hidden layer widths.")
  flags.DEFINE_enum("activation", "sigmoid", ["sigmoid", "relu", "tanh"], "MNIST activation.")
  flags.DEFINE_integer("num_steps", 100, "Optimizee steps per trajectory.", lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Base random seed.", lower_bound=0)
  flags.DEFINE_string(
    "style",
    None,
    "neural_art style: "
    f"{'|'.join(neural_art.STYLES)} (shipped) or an image file (default "
    f"{neural_art.DEFAULT_STYLE}).",
  )
  flags.DEFINE_integer(
    "image_size", 64, "neural_art: side of the square content crops.", lower_bound=8
  )
  flags.DEFINE_enum(
    "feature_network",
    "auto",
    list(neural_art.FEATURE_NETWORKS),
    "neural_art features: vgg19 (ImageNet weights from Keras's cache, never "
    "downloaded), random (seeded random-filter convnet); auto = vgg19 when its "
    "weights are cached, else random.",
  )


def parse_ints(values, flag):
  """A list flag's strings as ints, or a one-line error naming the flag."""
  try:
    return [int(v) for v in values]
  except ValueError:
    raise ValueError(f"{flag} must be integers, got {list(values)}") from None


def parse_json_object(text, flag):
  """A flag's JSON object as a dict ({} for an empty flag), or a one-line error naming the flag.

  Parsed as optimizer files are (optimizer_format.parse_json: nesting depth bounded).
  """
  if not text:
    return {}
  from l2l_tf import optimizer_format  # pylint: disable=g-import-not-at-top  # loads Keras

  value = optimizer_format.parse_json(text, flag)
  if not isinstance(value, dict):
    raise ValueError(f"{flag} must be a JSON object such as '{{\"hidden_sizes\": [40, 40]}}'")
  return value


# The problem flags that only some problems read: a flag given for another problem is refused
# rather than silently ignored.
_PROBLEM_SPECIFIC_FLAGS = {
  "hidden_sizes": ("mnist",),
  "activation": ("mnist",),
  "labels": registry.CIFAR_PROBLEMS,
  "style": ("neural_art",),
  "image_size": ("neural_art",),
  "feature_network": ("neural_art",),
}


def problem_from_flags(split, batch_size=None):
  _check_problem_specific_flags()
  hidden_sizes = parse_ints(FLAGS.hidden_sizes, "--hidden_sizes")
  labels = None if FLAGS.labels is None else parse_ints(FLAGS.labels, "--labels")
  if FLAGS.problem == "neural_art" and FLAGS.dataset_source != "embedded":
    raise ValueError(
      "--problem=neural_art reads the package's photos or --data_dir (with "
      "train/, validation/, test/ subdirectories); drop --dataset_source"
    )
  if (
    FLAGS.problem != "quadratic"
    and FLAGS.dataset_source in ("idx", "binary")
    and not FLAGS.data_dir
  ):
    raise ValueError(f"--dataset_source={FLAGS.dataset_source} needs --data_dir")
  return registry.make_problem(
    FLAGS.problem,
    split,
    batch_size,
    FLAGS.dataset_source,
    FLAGS.data_dir,
    hidden_sizes,
    FLAGS.activation,
    labels=labels,
    style=FLAGS.style,
    image_size=FLAGS.image_size,
    feature_network=FLAGS.feature_network,
  )


def _check_problem_specific_flags():
  """One error line for every given flag that --problem does not read."""
  ignored = {}
  for name, problems in _PROBLEM_SPECIFIC_FLAGS.items():
    if FLAGS[name].present and FLAGS.problem not in problems:
      ignored.setdefault(tuple(problems), []).append(f"--{name}")
  if ignored:
    raise ValueError(
      "; ".join(
        f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to "
        f"--problem={'|'.join(problems)} only"
        for problems, given in ignored.items()
      )
      + f", not --problem={FLAGS.problem}"
    )


_CHECKPOINT_READER = "py_checkpoint_reader.py"  # tensorflow/python/training/
_FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")  # where in a graph, not what


def is_expected_error(error):
  """Whether a script reports `error` as one line rather than a traceback.

  Expected: bad input (ValueError), file and disk errors (OSError; TensorFlow's OpError, e.g.
  a checkpoint write on a full disk or a corrupt checkpoint), and what TensorFlow's checkpoint
  reader raises for a damaged file: its C++ status becomes IndexError ("Read less bytes than
  requested") or RuntimeError, recognised by being raised inside that reader, so that the
  same exception types from a bug elsewhere still give a traceback.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  # loaded already via registry

  if isinstance(error, (ValueError, OSError, tf.errors.OpError)):
    return True
  frames = traceback.extract_tb(error.__traceback__)
  return (
    isinstance(error, (IndexError, RuntimeError))
    and bool(frames)
    and os.path.basename(frames[-1].filename) == _CHECKPOINT_READER
  )


def error_line(error):
  """The single `error: ...` line for an expected failure (never a multi-line message)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if isinstance(error, tf.errors.OpError):  # its first line; the rest is graph context
    lines = (error.message or "").strip().splitlines()
    first = _FUNCTION_NODE.sub("", lines[0]) if lines else ""
    return f"error: {type(error).__name__}: {first}"
  return "error: " + " ".join(str(error).split())


def guarded_main(main):
  """`main` for app.run: expected failures exit 1 with error_line instead of a traceback."""

  def guarded(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
      sys.exit(f"error: unexpected arguments {argv[1:]} (flags are written --name=value)")
    try:
      main(argv)
    except Exception as e:  # pylint: disable=broad-except  # filtered just below
      if not is_expected_error(e):
        raise
      sys.exit(error_line(e))

  return guarded


def parse_flags(argv):
  """absl's flag parsing, with a bad or missing flag as one `error:` line (exit 1).

  absl's own parser prints "FATAL Flags parsing error" and a second line of advice.
  """
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {' '.join(str(e).split())} (see --help)")


def run(main):
  """app.run that turns bad flags and expected failures (bad input, bad files) into one-line
  errors."""
  app.run(guarded_main(main), flags_parser=parse_flags)
