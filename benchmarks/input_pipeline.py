"""Input pipeline: is an unroll's data ready before the unroll starts, and is it cheap?

The data problems keep their dataset in memory as tensors, and sample_batches(seed, K) draws
the minibatch indices of all K steps of an unroll (the meta-trainer draws a whole trajectory's
at once) before any step runs; each step then gathers its minibatch inside the unroll's graph.
So the unroll never waits on a host-side input pipeline. This measures, per problem, with
synthetic data of the real shapes:

  sample_ms   host time to prepare one unroll's batches (sample_batches(seed, K), materialised)
  gather_ms   the in-graph minibatch gathers of one unroll's K steps, alone
  unroll_ms   one meta-training unroll: K steps forward + meta-gradient (what the data feeds)
  sample_pct  sample_ms / unroll_ms in percent (how long the unroll would wait if nothing
              were prepared ahead); gather_pct likewise for the gathers

    python benchmarks/input_pipeline.py [--problems=mnist,cifar10,keras_mlp] [--unroll_length=20]

Prints one line per problem:
    RESULT problem=mnist coordinates=15910 minibatch=128 unroll_length=20 sample_ms=0.4
      gather_ms=3.1 unroll_ms=512.0 sample_pct=0.08 gather_pct=0.6
"""

import time

from absl import flags
import keras
import numpy as np
import tensorflow as tf

from l2l_tf import cli
from l2l_tf import learned_rule
from l2l_tf.cells import CoordinatewiseLSTM
from l2l_tf.learned_rule import LearnedUpdateRule
from l2l_tf.problems.convnet import ConvNetClassificationProblem
from l2l_tf.problems.keras_model import KerasModelProblem
from l2l_tf.problems.mlp import MLPClassificationProblem
from l2l_tf.training import unroll as unroll_lib

_PROBLEMS = flags.DEFINE_list(
  "problems", ["mnist", "cifar10"], "Problems to time: mnist, cifar10, keras_mlp."
)
_UNROLL = flags.DEFINE_integer("unroll_length", 20, "Steps per unroll.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions (median).", lower_bound=1)
_EXAMPLES = flags.DEFINE_integer("examples", 10000, "Synthetic dataset size.", lower_bound=128)


def make_problem(name, examples):
  """(problem, rule) on synthetic data with the real shapes."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, examples).astype(np.int32)
  if name == "mnist":
    images = rng.random((examples, 784), dtype=np.float32)
    return MLPClassificationProblem(images, labels), LearnedUpdateRule(CoordinatewiseLSTM())
  if name == "cifar10":
    images = rng.random((examples, 32, 32, 3), dtype=np.float32)
    return ConvNetClassificationProblem(images, labels), learned_rule.make_rule("lstm", name)
  if name == "keras_mlp":  # the MNIST MLP written as a Keras model
    model = keras.Sequential(
      [keras.Input((784,)), keras.layers.Dense(20, activation="sigmoid"), keras.layers.Dense(10)]
    )
    images = rng.random((examples, 784), dtype=np.float32)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return (
      KerasModelProblem(model, images, labels, loss=loss),
      LearnedUpdateRule(CoordinatewiseLSTM()),
    )
  raise ValueError(f"Unknown problem {name!r}; choose mnist, cifar10 or keras_mlp")


def _median_ms(fn, repeats):
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    fn(i)
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


def _materialise(structure):
  return tf.nest.map_structure(lambda t: t.numpy(), structure)


def measure(name):
  k, repeats = _UNROLL.value, _REPEATS.value
  problem, rule = make_problem(name, _EXAMPLES.value)

  # 1. Preparing one unroll's batches on the host (what happens before the unroll starts).
  _materialise(problem.sample_batches(0, k))  # warm-up
  sample_ms = _median_ms(lambda i: _materialise(problem.sample_batches(100 + i, k)), repeats)

  # 2. The in-graph gathers of those K minibatches (part of the unroll's compute).
  data = getattr(problem, "images", None)
  if data is None:
    data = problem.x

  @tf.function
  def gather_all(indices):
    return tf.reduce_sum(tf.gather(data, indices))

  indices = problem.sample_batches(0, k)["indices"][1:]
  gather_all(indices).numpy()
  gather_ms = _median_ms(lambda i: gather_all(indices).numpy(), repeats)

  # 3. The unroll the data feeds: K steps forward and the meta-gradient, as the meta-trainer
  # runs it (trajectory start excluded).
  @tf.function
  def forward_backward(trajectory, batches):
    with tf.GradientTape() as tape:
      meta_loss, _, _ = unroll_lib.unroll(problem, rule, trajectory, batches)
    return meta_loss, tape.gradient(meta_loss, rule.trainable_variables)

  start = tf.function(lambda p, b: unroll_lib.start_trajectory(problem, rule, p, b))
  batches = problem.sample_batches(0, k)
  trajectory = start(problem.init_params(0), tf.nest.map_structure(lambda t: t[0], batches))
  rest = tf.nest.map_structure(lambda t: t[1:], batches)
  begin = time.perf_counter()
  _materialise(forward_backward(trajectory, rest))
  trace_s = time.perf_counter() - begin
  unroll_ms = _median_ms(lambda i: _materialise(forward_backward(trajectory, rest)), repeats)

  print(
    f"RESULT problem={name} coordinates={problem.num_coordinates()} "
    f"minibatch={problem.minibatch_size} unroll_length={k} sample_ms={sample_ms:.2f} "
    f"gather_ms={gather_ms:.2f} unroll_ms={unroll_ms:.1f} "
    f"sample_pct={100 * sample_ms / unroll_ms:.3f} "
    f"gather_pct={100 * gather_ms / unroll_ms:.2f} "
    f"trace_s={trace_s:.1f}",
    flush=True,
  )


def main(argv):
  del argv
  for name in _PROBLEMS.value:
    measure(name)


if __name__ == "__main__":
  cli.run(main)
