import numpy as np
import pytest
import tensorflow as tf

import l2l_tf
from l2l_tf import optimizer_format


def _run(cell, grads, steps=3):
  states = cell.get_initial_state(list(grads.shape[:-1]))
  outs = []
  for _ in range(steps):
    out, states = cell(grads, states)
    outs.append(out.numpy())
  return outs, [s.numpy() for s in states]


def test_parameter_count_does_not_depend_on_coordinates():
  cell = l2l_tf.CoordinatewiseLSTM()
  count = cell.count_params()
  _run(cell, tf.random.normal([7, 1]))
  _run(cell, tf.random.normal([2, 513, 1]))
  assert cell.count_params() == count
  # 2 layers of 20: (2+20+1)*80 + (20+20+1)*80 + 21
  assert count == 23 * 80 + 41 * 80 + 21


def test_permuting_coordinates_permutes_outputs_and_states():
  cell = l2l_tf.CoordinatewiseLSTM(preprocessing="log_sign")
  grads = tf.random.normal([2, 50, 1], seed=1)
  perm = np.random.default_rng(0).permutation(50)
  outs, states = _run(cell, grads)
  outs_p, states_p = _run(cell, tf.gather(grads, perm, axis=1))
  for a, b in zip(outs, outs_p):
    np.testing.assert_allclose(a[:, perm], b, rtol=1e-5, atol=1e-7)
  for a, b in zip(states, states_p):
    np.testing.assert_allclose(a[:, perm], b, rtol=1e-5, atol=1e-7)


def test_state_shapes_and_initial_zero_state():
  cell = l2l_tf.CoordinatewiseLSTM(hidden_sizes=(5, 7))
  states = cell.get_initial_state([3, 11])
  assert [s.shape.as_list() for s in states] == [[3, 11, 5]] * 2 + [[3, 11, 7]] * 2
  assert all(np.all(s.numpy() == 0) for s in states)
  assert cell.state_names == ["lstm_0_h", "lstm_0_c", "lstm_1_h", "lstm_1_c"]
  out, new = cell(tf.ones([3, 11, 1]), states)
  assert out.shape == (3, 11, 1) and [s.shape for s in new] == [s.shape for s in states]


def test_output_scale_scales_the_update():
  cell = l2l_tf.CoordinatewiseLSTM(output_scale=1.0)
  scaled = l2l_tf.CoordinatewiseLSTM.from_config(dict(cell.get_config(), output_scale=0.1))
  scaled.set_weights(cell.get_weights())
  grads = tf.random.normal([9, 1])
  np.testing.assert_allclose(
    _run(scaled, grads)[0][-1], 0.1 * _run(cell, grads)[0][-1], rtol=1e-5, atol=1e-8
  )


def test_save_and_load_reproduces_outputs(tmp_path):
  rule = l2l_tf.LearnedUpdateRule(l2l_tf.CoordinatewiseLSTM(hidden_sizes=(4, 3)))
  for w in rule.trainable_variables:
    w.assign(tf.random.normal(w.shape))
  optimizer_format.save_rule(rule, str(tmp_path / "opt"), {"note": "x"})
  loaded, metadata = optimizer_format.load_rule(str(tmp_path / "opt"))
  grads = tf.random.normal([2, 6, 1])
  assert metadata == {"note": "x"}
  np.testing.assert_array_equal(
    _run(rule.cells["all"], grads)[0][-1], _run(loaded.cells["all"], grads)[0][-1]
  )


def test_load_refuses_non_optimizer_directories(tmp_path):
  with pytest.raises(optimizer_format.OptimizerFileError, match="not an l2l_tf optimizer"):
    optimizer_format.load_rule(str(tmp_path))
  (tmp_path / optimizer_format.CONFIG_FILE).write_text("{not json")
  with pytest.raises(optimizer_format.OptimizerFileError, match="unreadable"):
    optimizer_format.load_rule(str(tmp_path))


def test_bad_hidden_sizes_refused():
  with pytest.raises(ValueError, match="hidden_sizes"):
    l2l_tf.CoordinatewiseLSTM(hidden_sizes=(20, 0))
