"""Meta-training throughput: optimizee coordinate-steps per second of one truncated unroll.

Times the forward and backward pass of one unroll (default 20 steps) of the coordinatewise LSTM
on the quadratic batch (128 x 10 = 1,280 coordinates) and on an MNIST-MLP-sized problem
(784-20-10: 15,910 coordinates, minibatch 128, synthetic data), with XLA on and off.

    python benchmarks/throughput.py [--problems=quadratic,mnist] [--jit=false,true]
        [--lstm_kernels=graph,native] [--intra_op_threads=N --inter_op_threads=N]

--lstm_kernels=native times the CPU custom ops of l2l_tf/kernels (built on first use; no XLA,
so only with jit=false).

Thread pools default to TensorFlow's choice (one thread per core each). On a 2-core CPU,
--intra_op_threads=1 --inter_op_threads=2 was faster for the quadratic problem (its ops are too
small to gain from being split across threads) and about even for MNIST: measure on yours.

Prints one line per configuration:
    RESULT problem=mnist jit=false kernel=graph coord_steps_per_s=1234567 compile_s=12.3

and with --output_json=FILE writes them as JSON (results/throughput.json feeds docs/RESULTS.md).
"""

import time

from absl import flags
import numpy as np
import tensorflow as tf

from l2l_tf import cli
from l2l_tf import evaluation
from l2l_tf.cells import CoordinatewiseLSTM
from l2l_tf.cells import coordinatewise_lstm
from l2l_tf.learned_rule import LearnedUpdateRule
from l2l_tf.problems.mlp import MLPClassificationProblem
from l2l_tf.problems.quadratic import QuadraticProblem
from l2l_tf.training import unroll as unroll_lib

_PROBLEMS = flags.DEFINE_list("problems", ["quadratic", "mnist"], "Problems to time.")
_JIT = flags.DEFINE_list("jit", ["false", "true"], "jit_compile settings to time.")
_KERNELS = flags.DEFINE_list(
  "lstm_kernels", ["graph"], f"LSTM kernels to time, of {coordinatewise_lstm.LSTM_KERNELS}."
)
_UNROLL = flags.DEFINE_integer("unroll_length", 20, "Steps per unroll.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed unrolls per configuration (median).")
_INTRA = flags.DEFINE_integer("intra_op_threads", 0, "Threads within an op (0: TF default).")
_INTER = flags.DEFINE_integer("inter_op_threads", 0, "Ops run concurrently (0: TF default).")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the results here (JSON).")


def make_problem(name):
  if name == "quadratic":
    return QuadraticProblem(batch_size=128), CoordinatewiseLSTM(
      preprocessing="identity", output_scale=1.0
    )
  rng = np.random.default_rng(0)
  images = rng.random((6000, 784), dtype=np.float32)
  return (
    MLPClassificationProblem(images, rng.integers(0, 10, 6000), minibatch_size=128),
    CoordinatewiseLSTM(),
  )


def measure(problem_name, jit, kernel):
  problem, cell = make_problem(problem_name)
  rule = LearnedUpdateRule(cell)
  batches = problem.sample_batches(0, _UNROLL.value)
  params = problem.init_params(0)

  @tf.function(jit_compile=jit)
  def forward_backward(params, batches):
    first = tf.nest.map_structure(lambda x: x[0], batches)
    rest = tf.nest.map_structure(lambda x: x[1:], batches)
    trajectory = unroll_lib.start_trajectory(problem, rule, params, first)
    with tf.GradientTape() as tape:
      meta_loss, _, _ = unroll_lib.unroll(problem, rule, trajectory, rest)
    return meta_loss, tape.gradient(meta_loss, rule.trainable_variables)

  start = time.perf_counter()
  tf.nest.map_structure(lambda t: t.numpy(), forward_backward(params, batches))
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), forward_backward(params, batches))
    times.append(time.perf_counter() - start)
  coordinates = problem.num_coordinates() * problem.batch_size
  rate = coordinates * _UNROLL.value / float(np.median(times))
  print(
    f"RESULT problem={problem_name} jit={str(jit).lower()} kernel={kernel} "
    f"coord_steps_per_s={rate:.0f} compile_s={compile_s:.1f} coordinates={coordinates}",
    flush=True,
  )
  return {
    "problem": problem_name,
    "jit_compile": jit,
    "lstm_kernel": kernel,
    "coordinates": int(coordinates),
    "coord_steps_per_s": rate,
    "compile_s": compile_s,
  }


def main(argv):
  del argv
  # Must precede the first TensorFlow op.
  tf.config.threading.set_intra_op_parallelism_threads(_INTRA.value)
  tf.config.threading.set_inter_op_parallelism_threads(_INTER.value)
  configurations = [
    (name, jit.lower() == "true", kernel)
    for name in _PROBLEMS.value
    for jit in _JIT.value
    for kernel in _KERNELS.value
  ]
  for _, jit, kernel in configurations:
    if kernel not in coordinatewise_lstm.LSTM_KERNELS:
      raise ValueError(f"--lstm_kernels: unknown kernel {kernel!r}")
  # The native ops have no XLA lowering: their jit=true configurations are not run.
  results = []
  for name, jit, kernel in configurations:
    if not (jit and kernel == "native"):
      with coordinatewise_lstm.lstm_kernel(kernel):  # chosen when the graph is traced
        results.append(measure(name, jit, kernel))
  if _OUTPUT_JSON.value:
    evaluation.write_json(
      {"unroll_length": _UNROLL.value, "repeats": _REPEATS.value, "results": results},
      _OUTPUT_JSON.value,
    )
    print(f"wrote {_OUTPUT_JSON.value}")


if __name__ == "__main__":
  cli.run(main)
