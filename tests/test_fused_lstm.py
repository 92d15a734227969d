"""The fused LSTM step (oneDNN matmul + XLA gate kernels, hand-written backward) against
plain-op autodiff through lstm_step_reference, in float64."""

import numpy as np
import pytest
import tensorflow as tf

from l2l_tf.cells import CoordinatewiseLSTM
from l2l_tf.cells import coordinatewise_lstm

TOL = 1e-10
_ARGS = ("inputs", "h", "c", "kernel", "recurrent_kernel", "bias")


def _step_args(rows=9, features=3, units=5, seed=0):
  rng = np.random.default_rng(seed)
  value = lambda *shape: tf.constant(rng.standard_normal(shape), tf.float64)
  return [
    value(rows, features),
    value(rows, units),
    value(rows, units),
    0.7 * value(features, 4 * units),
    0.7 * value(units, 4 * units),
    value(4 * units),
  ]


def _upstreams(rows=9, units=5, seed=1):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((rows, units)) for _ in range(2)]


# Which outputs the loss reads: with only one, the other output's upstream gradient is zero.
_LOSSES = {
  "h_and_c": lambda h, c, a, b: tf.reduce_sum(a * h) + tf.reduce_sum(b * c),
  "h_only": lambda h, c, a, b: tf.reduce_sum(a * h),
  "c_only": lambda h, c, a, b: tf.reduce_sum(b * c),
}


def _values_and_gradients(step, args, loss_name):
  a, b = (tf.constant(x, args[1].dtype) for x in _upstreams(*args[1].shape))
  with tf.GradientTape() as tape:
    tape.watch(args)
    h, c = step(*args)
    loss = _LOSSES[loss_name](h, c, a, b)
  return [h, c], tape.gradient(loss, args)


def _assert_close(actual, expected, names):
  for name, x, y in zip(names, actual, expected):
    assert x is not None and y is not None, name
    np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=TOL, atol=TOL, err_msg=name)


@pytest.mark.parametrize("loss_name", sorted(_LOSSES))
@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
def test_fused_step_matches_reference(loss_name, mode):
  fused, reference = coordinatewise_lstm.lstm_step, coordinatewise_lstm.lstm_step_reference
  if mode != "eager":
    # jit: the whole step under XLA, as on GPU (the custom gradient and inner kernels nest).
    wrap = lambda fn: tf.function(
      lambda *a: _values_and_gradients(fn, list(a), loss_name), jit_compile=(mode == "jit")
    )
    fused_values, fused_grads = wrap(fused)(*_step_args())
  else:
    fused_values, fused_grads = _values_and_gradients(fused, _step_args(), loss_name)
  ref_values, ref_grads = _values_and_gradients(reference, _step_args(), loss_name)
  _assert_close(fused_values, ref_values, ["new_h", "new_c"])
  _assert_close(fused_grads, ref_grads, [f"d_{n}" for n in _ARGS])


def test_fused_step_inputs_without_gradient():
  # Like the first layer's inputs in meta-training: no gradient flows to them (in a graph their
  # matmul is then pruned), and the other gradients are unchanged.
  args = _step_args(features=2, units=4)

  def loss(step, h, c, kernel, recurrent, bias):
    new_h, new_c = step(tf.stop_gradient(args[0]), h, c, kernel, recurrent, bias)
    return tf.reduce_sum(new_h * new_c) + tf.reduce_sum(tf.square(new_h))

  grads = []
  for step in (coordinatewise_lstm.lstm_step, coordinatewise_lstm.lstm_step_reference):
    with tf.GradientTape() as tape:
      tape.watch(args[1:])
      value = loss(step, *args[1:])
    grads.append(tape.gradient(value, args[1:]))
  _assert_close(grads[0], grads[1], [f"d_{n}" for n in _ARGS[1:]])


def test_float32_close_to_float64_reference():
  args64 = _step_args(rows=40, features=2, units=20)
  args32 = [tf.cast(a, tf.float32) for a in args64]
  values32, grads32 = _values_and_gradients(coordinatewise_lstm.lstm_step, args32, "h_and_c")
  values64, grads64 = _values_and_gradients(
    coordinatewise_lstm.lstm_step_reference, args64, "h_and_c"
  )
  for x, y in zip(values32 + grads32, values64 + grads64):
    assert x.dtype == tf.float32
    np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-4, atol=1e-5)


def _reference_cell(cell, gradients, states):
  """CoordinatewiseLSTM.call composed from lstm_step_reference and plain ops."""
  x = cell.preprocessor(tf.reshape(gradients, [-1, 1]))
  new_states = []
  for layer, (kernel, recurrent, bias) in enumerate(cell.lstm_weights):
    units = cell.hidden_sizes[layer]
    h, c = coordinatewise_lstm.lstm_step_reference(
      x,
      tf.reshape(states[2 * layer], [-1, units]),
      tf.reshape(states[2 * layer + 1], [-1, units]),
      kernel,
      recurrent,
      bias,
    )
    new_states += [h, c]
    x = h
  updates = (tf.matmul(x, cell.output_kernel) + cell.output_bias) * cell.output_scale
  return (
    tf.reshape(updates, gradients.shape),
    [tf.reshape(s, gradients.shape[:-1] + s.shape[-1:]) for s in new_states],
  )


def _cell_case(preprocessing="log_sign", seed=3):
  cell = CoordinatewiseLSTM(hidden_sizes=(6, 4), preprocessing=preprocessing, dtype="float64")
  rng = np.random.default_rng(seed)
  shape = (2, 5)
  # Gradients over many scales, some below exp(-10): both log_sign branches are exercised.
  gradients = tf.constant(
    rng.standard_normal(shape + (1,)) * 10.0 ** rng.integers(-7, 2, shape + (1,)), tf.float64
  )
  states = [
    tf.constant(rng.standard_normal(shape + (size,)), tf.float64) for size in cell.state_size
  ]
  return cell, gradients, states


@pytest.mark.parametrize("preprocessing", ["log_sign", "identity"])
def test_cell_matches_reference_composition(preprocessing):
  cell, gradients, states = _cell_case(preprocessing)
  weights = cell.trainable_variables
  results = []
  for fn in (cell, lambda g, s: _reference_cell(cell, g, s)):
    with tf.GradientTape() as tape:
      tape.watch(states)
      updates, new_states = fn(gradients, states)
      loss = tf.reduce_sum(tf.sin(updates)) + sum(
        tf.reduce_sum(tf.cos(float(i + 1) * s)) for i, s in enumerate(new_states)
      )
    results.append(([updates] + new_states, tape.gradient(loss, weights + states)))
  (values, grads), (ref_values, ref_grads) = results
  _assert_close(values, ref_values, ["updates"] + cell.state_names)
  _assert_close(grads, ref_grads, [w.path for w in weights] + [f"d_{n}" for n in cell.state_names])


def test_cell_in_while_loop_matches_reference_composition():
  # The meta-training setting: steps in a tf.while_loop, whose gradient keeps the fused step's
  # saved tensors in TensorList accumulators.
  cell, gradients, states = _cell_case()

  def meta_loss_and_gradients(step):
    @tf.function
    def run(gradients, states):
      with tf.GradientTape() as tape:

        def body(i, states, total):
          updates, states = step(gradients * tf.cast(i + 1, tf.float64), states)
          return i + 1, states, total + tf.reduce_sum(tf.sin(updates))

        _, _, total = tf.while_loop(
          lambda i, *_: i < 3, body, (0, states, tf.constant(0.0, tf.float64))
        )
      return total, tape.gradient(total, cell.trainable_variables)

    return run(gradients, states)

  total, grads = meta_loss_and_gradients(cell)
  ref_total, ref_grads = meta_loss_and_gradients(lambda g, s: _reference_cell(cell, g, s))
  _assert_close(
    [total] + grads,
    [ref_total] + ref_grads,
    ["meta_loss"] + [w.path for w in cell.trainable_variables],
  )
