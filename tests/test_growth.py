"""Growth: a trained optimizer inside a larger cell steps exactly as before."""

import numpy as np
import pytest
import tensorflow as tf

import l2l_tf
from l2l_tf import learned_rule
from l2l_tf.training import growth

NEUTRAL = dict(raw_gradient=True, bounded=False, initial_learning_rate=0.0)


def _trained_lstm():
  cell = l2l_tf.CoordinatewiseLSTM(hidden_sizes=(6, 5), output_scale=0.1)
  rng = np.random.default_rng(3)
  for weight in cell.weights:  # weights far from any initialisation, as after training
    weight.assign(rng.normal(size=weight.shape) * 0.5)
  return cell


def _updates(cell, steps=6):
  rng = np.random.default_rng(7)
  states = cell.get_initial_state([2, 30])
  updates = []
  for _ in range(steps):
    gradients = rng.normal(size=(2, 30, 1)) * np.logspace(-6, 1, 30)[:, None]
    update, states = cell(tf.constant(gradients, tf.float32), states)
    updates.append(update.numpy())
  return np.stack(updates)


def test_grown_cell_steps_as_the_trained_one_and_can_learn_from_its_new_inputs():
  trained = _trained_lstm()
  grown = l2l_tf.RNNprop(hidden_sizes=(6, 5), output_scale=0.1, **NEUTRAL)
  growth.grow_from(learned_rule.LearnedUpdateRule(grown), learned_rule.LearnedUpdateRule(trained))
  np.testing.assert_allclose(_updates(grown), _updates(trained), rtol=1e-5, atol=1e-8)
  # The rows of the new inputs start at zero, the rest are the trained weights.
  kernel = grown.lstm_weights[0][0].numpy()
  np.testing.assert_array_equal(kernel[:2], trained.lstm_weights[0][0].numpy())
  assert not kernel[2:].any()
  # ... and they are trainable: the new inputs change the updates once their rows move.
  grown.lstm_weights[0][0].assign(kernel + 0.5)
  assert np.abs(_updates(grown) - _updates(trained)).max() > 1e-3


@pytest.mark.parametrize(
  "larger,message",
  [
    (lambda: l2l_tf.RNNprop(hidden_sizes=(6, 5), output_scale=0.1), "does not step as"),
    (lambda: l2l_tf.RNNprop(hidden_sizes=(6, 5), output_scale=0.2, **NEUTRAL), "does not step as"),
    (lambda: l2l_tf.RNNprop(hidden_sizes=(7, 5), output_scale=0.1, **NEUTRAL), "only rows"),
    (lambda: l2l_tf.CoordinatewiseLSTM(hidden_sizes=(6,)), "no weight for"),
  ],
)
def test_growth_that_would_change_the_optimizer_is_refused(larger, message):
  with pytest.raises(ValueError, match=message):
    growth.grow_from(
      learned_rule.LearnedUpdateRule(larger()), learned_rule.LearnedUpdateRule(_trained_lstm())
    )
