"""A trained optimizer as a practitioner uses it: model.fit of the paper's MNIST MLP in Keras.

    python benchmarks/keras_mnist_fit.py --optimizer_path=savedmodels/mnist \
        --dataset_source=idx --data_dir=DIR_WITH_MNIST_IDX_FILES [--seeds=0,1,2] [--epochs=1]

The 784-20-10 sigmoid MLP (Keras's default initializers), minibatches of 128, --epochs over the
train split (one epoch of full MNIST is 469 steps). Optimizers: LearnedOptimizer at its
default learning rate (1), Adam at Keras's default (1e-3), and Adam with the learning rate of
a grid (--adam_grid) that ends lowest on the first seed's training loss (tuned on the same
runs, which favours Adam). Reported per optimizer, mean over seeds: the training loss over the
last 50 steps, and test loss and accuracy on the test split. Prints RESULT lines.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

import l2l_tf  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import data  # pylint: disable=g-import-not-at-top,wrong-import-position
from l2l_tf import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("optimizer_path", "savedmodels/mnist", "The trained optimizer.")
flags.DEFINE_enum("dataset_source", "embedded", ["embedded", "tfds", "idx"], "MNIST source.")
flags.DEFINE_string("data_dir", None, "Directory for --dataset_source=idx|tfds.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Model initialisation and shuffling seeds.")
flags.DEFINE_integer("epochs", 1, "Epochs of model.fit.", lower_bound=1)
flags.DEFINE_list(
  "adam_grid",
  ["0.001", "0.003", "0.01", "0.03", "0.1"],
  "Adam learning rates tried for the tuned row.",
)
flags.DEFINE_string("output_json", None, "Write the results here.")
FLAGS = flags.FLAGS

_LAST_STEPS = 50


class _LossRecorder(keras.callbacks.Callback):
  """Per-batch training losses (Keras reports running means; this undoes them)."""

  def __init__(self):
    super().__init__()
    self.means, self.batches = [], []

  def on_train_batch_end(self, batch, logs=None):
    self.means.append(float(logs["loss"]))
    self.batches.append(batch)

  def losses(self):
    values = []
    for i, (mean, batch) in enumerate(zip(self.means, self.batches)):
      previous = self.means[i - 1] if batch > 0 else 0.0
      values.append(mean * (batch + 1) - previous * batch)
    return np.asarray(values)


def _fit(make_optimizer, seed, train, test):
  keras.utils.set_random_seed(seed)
  model = keras.Sequential(
    [keras.Input((784,)), keras.layers.Dense(20, activation="sigmoid"), keras.layers.Dense(10)]
  )
  model.compile(
    optimizer=make_optimizer(),
    metrics=["accuracy"],
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
  )
  recorder = _LossRecorder()
  model.fit(
    *train, batch_size=128, epochs=FLAGS.epochs, shuffle=True, verbose=0, callbacks=[recorder]
  )
  test_loss, test_accuracy = model.evaluate(*test, batch_size=1024, verbose=0)
  return {
    "train_loss_last": float(np.mean(recorder.losses()[-_LAST_STEPS:])),
    "test_loss": float(test_loss),
    "test_accuracy": float(test_accuracy),
  }


def _run(name, make_optimizer, seeds, train, test):
  runs = [_fit(make_optimizer, seed, train, test) for seed in seeds]
  row = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
  row["runs"] = runs
  print(
    f"RESULT optimizer={name} train_loss_last{_LAST_STEPS}={row['train_loss_last']:.4f} "
    f"test_loss={row['test_loss']:.4f} test_accuracy={row['test_accuracy']:.4f}",
    flush=True,
  )
  return row


def main(argv):
  del argv
  seeds = cli.parse_ints(FLAGS.seeds, "--seeds")
  train = data.load_mnist(FLAGS.dataset_source, "train", FLAGS.data_dir)
  test = data.load_mnist(FLAGS.dataset_source, "test", FLAGS.data_dir)
  start = time.time()
  rows = {
    "learned": _run(
      "learned",
      lambda: l2l_tf.LearnedOptimizer.from_saved_model(FLAGS.optimizer_path),
      seeds,
      train,
      test,
    ),
    "adam_default": _run("adam_default", lambda: keras.optimizers.Adam(1e-3), seeds, train, test),
  }
  grid = [float(x) for x in FLAGS.adam_grid]
  tuning = {lr: _fit(lambda lr=lr: keras.optimizers.Adam(lr), seeds[0], train, test) for lr in grid}
  best = min(grid, key=lambda lr: tuning[lr]["train_loss_last"])
  rows["adam_tuned"] = _run(
    f"adam_tuned(lr={best:g})", lambda: keras.optimizers.Adam(best), seeds, train, test
  )
  rows["adam_tuned"]["learning_rate"] = best
  learned, default, tuned = (
    rows[k]["train_loss_last"] for k in ("learned", "adam_default", "adam_tuned")
  )
  print(
    f"RESULT learned_below_adam_default={str(learned < default).lower()} "
    f"learned_over_tuned_adam={learned / tuned:.3f} wall_seconds={time.time() - start:.0f}"
  )
  if FLAGS.output_json:
    evaluation.write_json(
      {
        "optimizer_path": FLAGS.optimizer_path,
        "epochs": FLAGS.epochs,
        "seeds": seeds,
        "results": rows,
      },
      FLAGS.output_json,
    )


if __name__ == "__main__":
  cli.run(main)
