r"""Exports a trained optimizer as a TensorFlow SavedModel (signatures initial_state / step).

  python scripts/export.py --optimizer_path=runs/mnist/best --output_path=savedmodels/mnist \
      [--evaluation_json=runs/mnist/eval.json]

--optimizer_path is an l2l_tf optimizer directory (scripts/train.py's <output_dir>/best, or the
training output directory itself, whose best/ is then used). The SavedModel keeps the
optimizer's metadata (problem, training command and settings, best validation loss) under
"meta_trained_on", and the evaluation numbers of --evaluation_json (scripts/evaluate.py's
output) under "evaluation". The write is atomic: the target is replaced only when complete. An
existing --output_path is replaced only if it is empty or an earlier export; anything else
needs --overwrite.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from l2l_tf import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import export  # pylint: disable=g-import-not-at-top,wrong-import-position

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
FLAGS = flags.FLAGS


def main(argv):
  del argv
  rule, _ = export.export_optimizer_directory(
    FLAGS.optimizer_path, FLAGS.output_path, FLAGS.evaluation_json, overwrite=FLAGS.overwrite
  )
  names = export.signature_names(rule)
  print(
    f"wrote SavedModel {os.path.abspath(FLAGS.output_path)}: signatures "
    f"{[key for keys in names.values() for key in keys]}, serving_default = "
    f"{names[next(iter(rule.cells))][1]}"
  )


if __name__ == "__main__":
  cli.run(main)
