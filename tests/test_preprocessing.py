import math

import numpy as np
import pytest
import tensorflow as tf

from l2l_tf import preprocessing


def test_log_sign_above_threshold_gives_log_and_sign():
  p = 10.0
  g = np.array([[0.5], [-3.0], [math.exp(-p)]], np.float64)
  out = preprocessing.LogSignPreprocessor(p)(tf.constant(g)).numpy()
  np.testing.assert_allclose(out[:, 0], np.log(np.abs(g[:, 0])) / p, rtol=1e-12)
  np.testing.assert_array_equal(out[:, 1], [1.0, -1.0, 1.0])


def test_log_sign_below_threshold_gives_minus_one_and_scaled_value():
  p = 5.0
  g = np.array([[1e-4], [-2e-3], [0.0]], np.float64)  # all below exp(-5) = 6.7e-3
  out = preprocessing.LogSignPreprocessor(p)(tf.constant(g)).numpy()
  np.testing.assert_array_equal(out[:, 0], [-1.0, -1.0, -1.0])
  np.testing.assert_allclose(out[:, 1], math.exp(p) * g[:, 0], rtol=1e-12)


def test_log_sign_is_finite_with_finite_gradient_at_zero():
  g = tf.zeros([3, 1], tf.float64)
  with tf.GradientTape() as tape:
    tape.watch(g)
    out = preprocessing.LogSignPreprocessor(10.0)(g)
    total = tf.reduce_sum(out)
  grad = tape.gradient(total, g)
  assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(grad.numpy()))


def test_identity_and_scale():
  g = tf.constant([[2.0], [-1.0]])
  np.testing.assert_array_equal(preprocessing.IdentityPreprocessor()(g).numpy(), g.numpy())
  np.testing.assert_array_equal(preprocessing.ScalePreprocessor(0.5)(g).numpy(), [[1.0], [-0.5]])


def test_get_preprocessor_round_trips_config():
  for config in (
    {"name": "log_sign", "p": 7.0},
    {"name": "scale", "scale": 3.0},
    {"name": "identity"},
  ):
    assert preprocessing.get_preprocessor(config).get_config() == config


@pytest.mark.parametrize(
  "bad", ["logsign", {"name": "scale", "scale": 0.0}, {"name": "log_sign", "p": -1.0}, 3]
)
def test_bad_preprocessing_refused(bad):
  with pytest.raises(ValueError):
    preprocessing.get_preprocessor(bad)
