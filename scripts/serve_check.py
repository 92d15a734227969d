"""Loads an exported optimizer the way a model server does and runs one `step` request.

  python scripts/serve_check.py --saved_model=savedmodels/mnist [--num_coordinates=8]

Loads the SavedModel in a TF1 Session with tf.compat.v1.saved_model.load (the C++ loader that
TensorFlow Serving uses), looks the signatures up by name in the SignatureDefs, runs
`initial_state` for n coordinates, then one `step` on a random gradient, and prints the
request and the response as TensorFlow Serving's REST predict API would show them
(columnar "inputs" / "outputs" JSON).

Bad input (a path that is not a SavedModel, a SavedModel from another program, a corrupt one)
ends with one line naming the path and the problem, and a non-zero exit code.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

import json  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from l2l_tf import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import export  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("saved_model", None, "An exported optimizer SavedModel directory.")
flags.DEFINE_string(
  "signature",
  None,
  "The step signature to call (default: step, or serving_default for a several-group export).",
)
flags.DEFINE_integer("num_coordinates", 8, "Gradient length n of the request.", lower_bound=1)
flags.DEFINE_integer("request_seed", 0, "Seed of the random gradient.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.saved_model:
    raise ValueError("--saved_model is required")
  request, response = export.serve_request(
    FLAGS.saved_model, FLAGS.signature, FLAGS.num_coordinates, FLAGS.request_seed
  )
  print("request:", json.dumps(request))
  print("response:", json.dumps(response))
  update = np.asarray(response["outputs"]["update"])
  print(
    f"OK: {FLAGS.saved_model} served {request['signature_name']!r}: {update.size} "
    f"coordinates, |update| max {np.abs(update).max():.3g}"
  )


if __name__ == "__main__":
  cli.run(main)
