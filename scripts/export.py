r"""Exports a trained optimizer as a TensorFlow SavedModel (signatures initial_state / step).

  python scripts/export.py --optimizer_path=runs/mnist/best --output_path=savedmodels/mnist \
      [--evaluation_json=runs/mnist/eval.json]

--optimizer_path is an l2l_tf optimizer directory (scripts/train.py's <output_dir>/best, or the
training output directory itself, whose best/ is then used). With --checkpoint=latest (or a
checkpoint prefix) the run's newest (or that) epoch is exported instead of the best-validating
one, e.g. to evaluate it on networks the validation did not cover. The SavedModel keeps the
optimizer's metadata (problem, training command and settings, best validation loss) under
"meta_trained_on", and the evaluation numbers of --evaluation_json (scripts/evaluate.py's
output) under "evaluation". The write is atomic: the target is replaced only when complete. An
existing --output_path is replaced only if it is empty or an earlier export; anything else
needs --overwrite.
"""

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from l2l_tf import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import export  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import optimizer_format  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf.training import meta_trainer  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string(
  "optimizer_path",
  None,
  "A trained optimizer directory (train.py's <output_dir>/best, or <output_dir>).",
)
flags.DEFINE_string("output_path", None, "Where to write the SavedModel (a directory).")
flags.DEFINE_string(
  "evaluation_json",
  None,
  "Optional scripts/evaluate.py --output_json file "
  "whose numbers are stored as the model's evaluation metadata.",
)
flags.DEFINE_bool(
  "overwrite",
  False,
  "Replace --output_path even when it is a non-empty "
  "directory that is not an earlier export (its contents are lost).",
)
flags.DEFINE_string(
  "checkpoint",
  None,
  "Export one of the run's checkpoints instead of best/: 'latest' or a checkpoint prefix "
  "(<output_dir>/checkpoints/ckpt-N); --optimizer_path is then the run's output directory.",
)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  load = optimizer_format.load_rule
  if FLAGS.checkpoint:
    checkpoint = None if FLAGS.checkpoint == "latest" else FLAGS.checkpoint
    load = functools.partial(meta_trainer.load_checkpoint_rule, checkpoint=checkpoint)
  rule, _ = export.export_optimizer_directory(
    FLAGS.optimizer_path,
    FLAGS.output_path,
    FLAGS.evaluation_json,
    overwrite=FLAGS.overwrite,
    load=load,
  )
  names = export.signature_names(rule)
  print(
    f"wrote SavedModel {os.path.abspath(FLAGS.output_path)}: signatures "
    f"{[key for keys in names.values() for key in keys]}, serving_default = "
    f"{names[next(iter(rule.cells))][1]}"
  )


if __name__ == "__main__":
  cli.run(main)
