"""The native LSTM kernels (l2l_tf/kernels): built from source, equal to the graph path.

Values and gradients are compared in float64 (to 1e-10) against plain-op autodiff and the
graph path, for shapes that take the register-tiled kernels and the Eigen fallbacks, for every
LSTM-based cell, and for a whole unroll's meta-gradient. The library is built once per test
session into a temporary cache (conftest; the first test pays the compile, about a minute).
"""

import os
import re
import stat
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import repo_paths

import l2l_tf
from l2l_tf import kernels
from l2l_tf import registry
from l2l_tf.cells import coordinatewise_lstm
from l2l_tf.training import unroll as unroll_lib

TOLERANCE = {tf.float64: 1e-10, tf.float32: 2e-5}


@pytest.fixture(name="native", scope="module")
def fixture_native():
  """Builds the library into the session's fresh cache (conftest; the build itself is under
  test), then gives a context manager that traces with the native kernels."""
  path = kernels.library_path()
  assert path.parent == kernels.cache_dir() and path.is_file()
  kernels.load()
  return lambda: coordinatewise_lstm.lstm_kernel("native")


def _relative_error(actual, expected):
  actual, expected = np.asarray(actual), np.asarray(expected)
  return float(np.max(np.abs(actual - expected), initial=0.0)) / (
    1.0 + float(np.max(np.abs(expected), initial=0.0))
  )


def _assert_all_close(actual, expected, dtype, what):
  assert len(actual) == len(expected), what
  for i, (x, y) in enumerate(zip(actual, expected)):
    assert (x is None) == (y is None), f"{what}: output {i}"
    if x is not None:
      assert _relative_error(x, y) < TOLERANCE[dtype], f"{what}: output {i}"


def _step_values_and_gradients(step, rows, features, units, dtype, seed=0):
  rng = np.random.default_rng(seed)
  value = lambda *shape: tf.constant(rng.standard_normal(shape), dtype)
  args = [
    value(rows, features),
    value(rows, units),
    value(rows, units),
    0.7 * value(features, 4 * units),
    0.7 * value(units, 4 * units),
    value(4 * units),
  ]
  a, b = value(rows, units), value(rows, units)
  with tf.GradientTape() as tape:
    tape.watch(args)
    h, c = step(*args)
    loss = tf.reduce_sum(a * h) + tf.reduce_sum(b * c)
  return [h, c, *tape.gradient(loss, args)]


# (rows, features, units): float32 packets hold 16, float64 8. 4 x 20 = 80 gates take the tiled
# kernels (float32: 5 packets); 4 x 5 = 20 the Eigen fallback; 4 x 4 = 16 one packet; row
# counts that are not a multiple of a tile (4) or of a block (64); and no rows at all.
_SHAPES = [(300, 2, 20), (9, 3, 5), (7, 3, 4), (130, 20, 8), (1, 1, 20), (0, 2, 20)]


@pytest.mark.parametrize("dtype", [tf.float64, tf.float32], ids=lambda d: d.name)
@pytest.mark.parametrize("shape", _SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_native_step_matches_the_reference(native, shape, dtype):
  expected = _step_values_and_gradients(coordinatewise_lstm.lstm_step_reference, *shape, dtype)
  with native():
    actual = _step_values_and_gradients(coordinatewise_lstm.lstm_step, *shape, dtype)
    traced = tf.function(
      lambda: _step_values_and_gradients(coordinatewise_lstm.lstm_step, *shape, dtype)
    )()
  _assert_all_close(actual, expected, dtype, "eager")
  _assert_all_close(traced, expected, dtype, "tf.function")


_CELLS = [
  ("lstm", {}),
  ("lstm", {"hidden_sizes": (4, 7, 8)}),  # three layers of different widths
  ("rnnprop", {}),
  ("lstm_gac", {}),  # transform_hidden: one native layer at a time
  ("ntm_bfgs", {}),
]


@pytest.mark.parametrize("name,kwargs", _CELLS, ids=lambda x: str(x))
def test_cells_compute_the_same_with_native_kernels(native, name, kwargs):
  tf.random.set_seed(0)
  cell = registry.CELLS.get(name)(dtype="float64", **kwargs)
  for w in cell.trainable_variables:  # non-trivial weights, so every path matters
    w.assign(tf.random.normal(w.shape, stddev=0.5, dtype=tf.float64))
  n = 37
  gradients = tf.random.normal([n, 1], dtype=tf.float64)
  # Positive states: rnnprop's include a second moment.
  states = [
    tf.abs(tf.random.normal(s.shape, dtype=tf.float64)) + 0.1 for s in cell.get_initial_state(n)
  ]

  def values_and_gradients():
    with tf.GradientTape() as tape:
      tape.watch([gradients, *states])
      updates, new_states = cell(gradients, states)
      loss = tf.reduce_sum(1.3 * updates) + sum(
        tf.reduce_sum((i + 0.5) * s) for i, s in enumerate(new_states)
      )
    return [updates, *new_states, *tape.gradient(loss, [gradients, *states, *cell.weights])]

  expected = values_and_gradients()
  with native():
    actual = values_and_gradients()
  _assert_all_close(actual, expected, tf.float64, name)


def _tiny_unroll(seed, preprocessing, hidden_sizes):
  """(meta_loss(second_derivatives), rule): a 4-step unroll of an LSTM with random weights on
  two 3-dimensional quadratics, in float64."""
  tf.random.set_seed(seed)
  problem = l2l_tf.QuadraticProblem(dim=3, batch_size=2, init_stddev=1.0, dtype="float64")
  cell = l2l_tf.CoordinatewiseLSTM(
    hidden_sizes=hidden_sizes, preprocessing=preprocessing, output_scale=0.3, dtype="float64"
  )
  for w in cell.trainable_variables:  # non-trivial weights, so every path matters
    w.assign(tf.random.normal(w.shape, stddev=0.5, dtype=tf.float64))
  rule = l2l_tf.LearnedUpdateRule(cell)
  params, batches = problem.init_params(5), problem.sample_batches(5, 5)

  def meta_loss(second_derivatives):
    first = tf.nest.map_structure(lambda x: x[0], batches)
    rest = tf.nest.map_structure(lambda x: x[1:], batches)
    trajectory = unroll_lib.start_trajectory(problem, rule, params, first, second_derivatives)
    return unroll_lib.unroll(problem, rule, trajectory, rest, second_derivatives)[0]

  return meta_loss, rule


def test_meta_gradient_of_an_unroll_is_unchanged(native):
  """The meta-gradient through the unroll's tf.while_loop and its gradient, float64."""
  meta_loss, rule = _tiny_unroll(3, "log_sign", (4, 4))

  def meta_gradient():
    with tf.GradientTape() as tape:
      loss = meta_loss(False)
    return [loss, *tape.gradient(loss, rule.trainable_variables)]

  expected = tf.function(meta_gradient)()
  with native():
    actual = tf.function(meta_gradient)()
  assert _relative_error(expected[1], np.zeros_like(expected[1])) > 1e-3  # not vacuous
  _assert_all_close(actual, expected, tf.float64, "meta-gradient")


def test_full_meta_gradient_matches_finite_differences(native):
  """With second derivatives kept, the meta-gradient also runs through d_x of the ops (the
  optimizer's input gradient): central differences of the meta-loss in float64."""
  meta_loss, rule = _tiny_unroll(4, "identity", (3, 3))
  variables = rule.trainable_variables
  with native():
    with tf.GradientTape() as tape:
      loss = meta_loss(True)
    grads = tape.gradient(loss, variables)
    rng = np.random.default_rng(0)
    for _ in range(3):
      direction = [rng.normal(size=v.shape) for v in variables]
      originals = [v.numpy() for v in variables]
      values = []
      for sign in (1, -1):
        for v, o, d in zip(variables, originals, direction):
          v.assign(o + sign * 1e-5 * d)
        values.append(float(meta_loss(True)))
      for v, o in zip(variables, originals):
        v.assign(o)
      numeric = (values[0] - values[1]) / 2e-5
      analytic = sum(float(np.sum(g.numpy() * d)) for g, d in zip(grads, direction))
      np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_an_export_traced_under_native_kernels_uses_the_graph_ops(native, tmp_path):
  """A SavedModel must not need the custom op: export traces the graph path regardless."""
  cell = l2l_tf.CoordinatewiseLSTM()
  states = [tf.TensorSpec([5, 20])] * 4
  with native():
    traced = tf.function(cell.call).get_concrete_function(tf.TensorSpec([5, 1]), states)
    path = l2l_tf.export_saved_model(cell, str(tmp_path / "exported"))
  op_types = {node.op for node in traced.graph.as_graph_def().node}
  assert "L2lLstmStack" in op_types  # what a trace under the native kernels would hold
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    graph = f.read()
  assert b"L2lLstmStack" not in graph and b"MatMul" in graph


def test_the_op_refuses_shapes_that_do_not_fit(native):
  ops = kernels.load()
  x, h, c = tf.zeros([5, 2]), tf.zeros([5, 4]), tf.zeros([5, 4])
  with pytest.raises(tf.errors.InvalidArgumentError, match="do not fit"):
    ops.l2l_lstm_stack(x, [h], [c], [tf.zeros([7, 16])], [tf.zeros([16])], tf.zeros([4, 1]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="rows of x"):
    ops.l2l_lstm_stack(
      x,
      [tf.zeros([6, 4])],
      [tf.zeros([6, 4])],
      [tf.zeros([6, 16])],
      [tf.zeros([16])],
      tf.zeros([4, 1]),
    )


def test_unknown_kernel_is_refused():
  with pytest.raises(ValueError, match="one of graph, native"):
    with coordinatewise_lstm.lstm_kernel("fast"):
      pass


def _fake_compiler(directory, script):
  path = directory / "fake-g++"
  path.write_text("#!/bin/sh\n" + script)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return str(path)


@pytest.mark.parametrize(
  "compiler,message",
  [
    ("/nonexistent/g++", "cannot run the C\\+\\+ compiler /nonexistent/g\\+\\+"),
    ("failing", "compiling lstm_step.cc failed: lstm_step.cc:1:1: error: no AVX today"),
  ],
)
def test_a_failed_build_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, compiler, message):
  if compiler == "failing":
    compiler = _fake_compiler(
      tmp_path,
      "echo 'In file included from x.h:1,' >&2\n"
      "echo 'lstm_step.cc:1:1: error: no AVX today' >&2\nexit 1\n",
    )
  cache = tmp_path / "cache"
  monkeypatch.setenv("CXX", compiler)
  monkeypatch.setenv("L2L_TF_KERNEL_CACHE", str(cache))
  with pytest.raises(kernels.NativeKernelError, match=message) as raised:
    kernels.library_path()
  assert "\n" not in str(raised.value)
  assert isinstance(raised.value, OSError)  # the scripts print it as one error line
  assert not list(cache.iterdir())  # no partial library left behind


def test_a_built_library_is_reused_not_rebuilt(native, capfd):
  path = kernels.library_path()
  mtime = path.stat().st_mtime_ns
  capfd.readouterr()
  assert kernels.library_path() == path and path.stat().st_mtime_ns == mtime
  assert "compiling" not in capfd.readouterr().err


def test_throughput_benchmark_times_the_native_kernels(native):
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(repo_paths.ROOT, "benchmarks", "throughput.py"),
      "--problems=quadratic",
      "--jit=false,true",
      "--lstm_kernels=graph,native",
      "--repeats=1",
    ],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  configurations = re.findall(r"RESULT problem=quadratic jit=(\w+) kernel=(\w+) ", result.stdout)
  # Native has no XLA lowering: its jit=true configuration is skipped, not failed.
  assert configurations == [("false", "graph"), ("false", "native"), ("true", "graph")]
  assert "compiling" not in result.stderr  # the session's library was reused
