"""RNNprop: Adam at the start, scale-free inputs, a bounded step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import l2l_tf
from l2l_tf import update_rules


def _updates(cell, gradients_per_step):
  states = cell.get_initial_state(list(gradients_per_step[0].shape[:-1]))
  updates = []
  for gradients in gradients_per_step:
    update, states = cell(gradients, states)
    updates.append(update.numpy())
  return np.stack(updates)


def _gradients(steps=6, coordinates=9, seed=0):
  rng = np.random.default_rng(seed)
  # Coordinates of very different sizes, as in a network's layers.
  sizes = np.logspace(-4, 1, coordinates)[:, None]
  return [tf.constant(rng.normal(size=(coordinates, 1)) * sizes) for _ in range(steps)]


def test_untrained_cell_without_its_lstm_is_adam_through_a_tanh():
  cell = l2l_tf.RNNprop(
    initial_learning_rate=0.03,
    output_scale=0.1,
    epsilon=1e-14,
    preprocessing="identity",
    dtype="float64",
  )
  cell.output_kernel.assign(tf.zeros_like(cell.output_kernel))
  gradients = _gradients()
  updates = _updates(cell, gradients)

  adam = update_rules.Adam(learning_rate=0.03, epsilon=1e-14)
  params = {"w": tf.zeros_like(gradients[0])}
  state = adam.init_state(params)
  expected = []
  for g in gradients:
    new_params, state = adam.step(params, {"w": g}, state)
    expected.append(0.1 * np.tanh((new_params["w"] - params["w"]).numpy() / 0.1))
    params = new_params
  np.testing.assert_allclose(updates, np.stack(expected), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("factor", [1e-3, 1e3])
def test_updates_do_not_depend_on_the_scale_of_the_gradients(factor):
  cell = l2l_tf.RNNprop(preprocessing="identity", epsilon=1e-30, dtype="float64")
  gradients = _gradients(seed=1)
  scaled = [g * factor for g in gradients]
  np.testing.assert_allclose(_updates(cell, scaled), _updates(cell, gradients), rtol=1e-9)


def test_no_step_exceeds_the_output_scale():
  cell = l2l_tf.RNNprop(output_scale=0.05, initial_learning_rate=10.0)
  updates = _updates(cell, [tf.constant([[1e6], [-1e6], [3.0]], tf.float32)] * 4)
  assert np.all(np.abs(updates) <= 0.05 + 1e-7)
  # A strongly driven coordinate saturates at the bound, against its gradient.
  np.testing.assert_allclose(updates[-1, :2, 0], [-0.05, 0.05], rtol=1e-4)


@pytest.mark.parametrize(
  "arguments",
  [
    dict(momentum_decays=()),
    dict(momentum_decays=(1.0,)),
    dict(second_moment_decay=-0.1),
    dict(epsilon=0.0),
    dict(initial_learning_rate=-1.0),
    dict(output_scale=0.0),
  ],
)
def test_bad_arguments_are_refused(arguments):
  with pytest.raises(ValueError):
    l2l_tf.RNNprop(**arguments)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_untrained_cell_trains_a_keras_model(jit_compile):
  keras.utils.set_random_seed(0)
  x = np.random.default_rng(0).normal(size=(64, 5)).astype("float32")
  y = (x @ np.arange(1, 6, dtype="float32"))[:, None]
  model = keras.Sequential(
    [keras.Input((5,)), keras.layers.Dense(8, "tanh"), keras.layers.Dense(1)]
  )
  optimizer = l2l_tf.LearnedOptimizer(l2l_tf.RNNprop(hidden_sizes=(4,)))
  model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
  losses = model.fit(x, y, batch_size=64, epochs=30, verbose=0).history["loss"]
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(optimizer.skipped_steps.numpy()) == 0
