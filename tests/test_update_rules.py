"""Baselines step exactly like Keras's own optimizers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from l2l_tf import update_rules

CASES = [
  (update_rules.SGD(learning_rate=0.1), lambda: keras.optimizers.SGD(0.1)),
  (
    update_rules.NAG(learning_rate=0.05),
    lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
  ),
  (update_rules.RMSprop(learning_rate=0.01), lambda: keras.optimizers.RMSprop(0.01)),
  (update_rules.Adam(learning_rate=0.02), lambda: keras.optimizers.Adam(0.02)),
]


@pytest.mark.parametrize("rule,make_keras", CASES, ids=[c[0].name for c in CASES])
def test_baseline_matches_keras_step_for_step(rule, make_keras):
  rng = np.random.default_rng(0)
  init = {
    "a": rng.normal(size=(1, 3, 2)).astype(np.float32),
    "b": rng.normal(size=(1, 4)).astype(np.float32),
  }
  variables = {k: keras.Variable(v) for k, v in init.items()}
  optimizer = make_keras()
  params = {k: tf.constant(v) for k, v in init.items()}
  state = rule.init_state(params)
  for step in range(6):
    grads = {
      k: tf.constant(rng.normal(size=v.shape).astype(np.float32) * (step + 1))
      for k, v in init.items()
    }
    optimizer.apply_gradients([(grads[k], variables[k]) for k in init])
    params, state = rule.step(params, grads, state)
    for k in init:
      np.testing.assert_allclose(params[k].numpy(), variables[k].numpy(), rtol=1e-6, atol=1e-7)


def test_unknown_baseline_refused():
  with pytest.raises(ValueError, match="Unknown baseline"):
    update_rules.make_baseline("adagrad", 0.1)


def test_scaled_rule_multiplies_the_update_and_keeps_the_state():
  params = {"w": tf.constant([[1.0, -2.0, 3.0]], tf.float64)}
  grads = {"w": tf.constant([[0.5, -1.0, 2.0]], tf.float64)}
  adam = update_rules.Adam(0.1)
  scaled = update_rules.ScaledUpdateRule(adam, 0.3)
  assert scaled.name == "adam_x0.3"
  state, scaled_state = adam.init_state(params), scaled.init_state(params)
  for _ in range(3):
    new, state = adam.step(params, grads, state)
    new_scaled, scaled_state = scaled.step(params, grads, scaled_state)
    np.testing.assert_allclose(new_scaled["w"] - params["w"], 0.3 * (new["w"] - params["w"]))
    tf.nest.map_structure(np.testing.assert_array_equal, state, scaled_state)


def test_adam_in_float64_keeps_its_constants_in_float64():
  # Its first step is exactly -learning_rate * sign(g); float32-rounded betas or learning rate
  # (tf.cast of a Python float) are off by ~1e-6 relative.
  adam = update_rules.Adam(learning_rate=0.03, epsilon=1e-300)
  params = {"w": tf.zeros([3], tf.float64)}
  gradients = {"w": tf.constant([2.0, -1e-3, 5e2], tf.float64)}
  new_params, _ = adam.step(params, gradients, adam.init_state(params))
  np.testing.assert_allclose(new_params["w"].numpy(), [-0.03, 0.03, -0.03], rtol=1e-13)
