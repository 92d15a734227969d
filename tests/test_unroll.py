"""Truncated unrolls: meta-gradients against finite differences, carried and reset state."""

import types

import numpy as np
import pytest
import tensorflow as tf

import l2l_tf
from l2l_tf.training import meta_trainer
from l2l_tf.training import unroll as unroll_lib

K = 4  # steps of the tiny unroll


class ReplayQuadratic(l2l_tf.QuadraticProblem):
  """A quadratic whose gradient is read from the batch: the optimizer's inputs are frozen.

  Its loss is the true quadratic, so finite differences of the meta-loss through it are the
  derivative of the truncated meta-loss with the gradient edges dropped.
  """

  def loss(self, params, batch):
    @tf.custom_gradient
    def value(theta):
      residual = tf.linalg.matvec(batch["w"], theta) - batch["y"]
      return tf.reduce_sum(tf.square(residual), -1), lambda dy: dy[:, None] * batch["g"]

    return value(params["theta"])


def _setup():
  tf.random.set_seed(3)
  problem = l2l_tf.QuadraticProblem(dim=3, batch_size=2, init_stddev=1.0, dtype="float64")
  cell = l2l_tf.CoordinatewiseLSTM(
    hidden_sizes=(3, 3), preprocessing="identity", output_scale=0.3, dtype="float64"
  )
  for w in cell.trainable_variables:  # non-trivial weights, so every path matters
    w.assign(tf.random.normal(w.shape, stddev=0.5, dtype=tf.float64))
  rule = l2l_tf.LearnedUpdateRule(cell)
  params = problem.init_params(5)
  batches = problem.sample_batches(5, K)
  return problem, rule, params, batches


def _meta_loss(problem, rule, params, batches, second_derivatives):
  first = tf.nest.map_structure(lambda x: x[0], batches)
  rest = tf.nest.map_structure(lambda x: x[1:], batches)
  trajectory = unroll_lib.start_trajectory(problem, rule, params, first, second_derivatives)
  loss, _, _ = unroll_lib.unroll(problem, rule, trajectory, rest, second_derivatives)
  return loss


def _gradient(problem, rule, params, batches, second_derivatives):
  with tf.GradientTape() as tape:
    loss = _meta_loss(problem, rule, params, batches, second_derivatives)
  return tape.gradient(loss, rule.trainable_variables)


def _directional_fd(loss_fn, variables, direction, eps=1e-5):
  originals = [v.numpy() for v in variables]
  values = []
  for sign in (1, -1):
    for v, o, d in zip(variables, originals, direction):
      v.assign(o + sign * eps * d)
    values.append(float(loss_fn()))
  for v, o in zip(variables, originals):
    v.assign(o)
  return (values[0] - values[1]) / (2 * eps)


def _check_directions(grads, loss_fn, variables):
  rng = np.random.default_rng(0)
  for _ in range(4):
    direction = [rng.normal(size=v.shape) for v in variables]
    analytic = sum(float(np.sum(g.numpy() * d)) for g, d in zip(grads, direction))
    numeric = _directional_fd(loss_fn, variables, direction)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def _recorded_gradients(problem, rule, params, batches):
  """Gradients g_0 .. g_K the optimizer sees, by one-step unrolls (also tests carrying)."""
  first = tf.nest.map_structure(lambda x: x[0], batches)
  trajectory = unroll_lib.start_trajectory(problem, rule, params, first)
  grads = [trajectory.grads["theta"]]
  for t in range(1, K + 1):
    _, trajectory, _ = unroll_lib.unroll(
      problem, rule, trajectory, tf.nest.map_structure(lambda x: x[t : t + 1], batches)
    )
    grads.append(trajectory.grads["theta"])
  return tf.stack(grads)


def test_stopped_meta_gradient_matches_finite_differences():
  problem, rule, params, batches = _setup()
  grads = _gradient(problem, rule, params, batches, second_derivatives=False)
  replay = ReplayQuadratic(dim=3, batch_size=2, init_stddev=1.0, dtype="float64")
  replay_batches = dict(batches, g=_recorded_gradients(problem, rule, params, batches))
  loss_fn = lambda: _meta_loss(replay, rule, params, replay_batches, False)
  _check_directions(grads, loss_fn, rule.trainable_variables)
  # Dropping second derivatives changes the gradient: the test above is not vacuous.
  full = _gradient(problem, rule, params, batches, second_derivatives=True)
  assert max(float(np.max(np.abs(a - b))) for a, b in zip(grads, full)) > 1e-4


def test_full_meta_gradient_matches_finite_differences():
  problem, rule, params, batches = _setup()
  grads = _gradient(problem, rule, params, batches, second_derivatives=True)
  loss_fn = lambda: _meta_loss(problem, rule, params, batches, True)
  _check_directions(grads, loss_fn, rule.trainable_variables)


def test_truncations_carry_parameters_and_state():
  problem, rule, params, batches = _setup()
  first = tf.nest.map_structure(lambda x: x[0], batches)
  whole = unroll_lib.unroll(
    problem,
    rule,
    unroll_lib.start_trajectory(problem, rule, params, first),
    tf.nest.map_structure(lambda x: x[1:], batches),
  )
  trajectory = unroll_lib.start_trajectory(problem, rule, params, first)
  losses = []
  for start in (1, 3):
    _, trajectory, part = unroll_lib.unroll(
      problem,
      rule,
      unroll_lib.detach(trajectory),
      tf.nest.map_structure(lambda x, s=start: x[s : s + 2], batches),
    )
    losses.append(part)
  np.testing.assert_allclose(np.concatenate(losses), whole[2].numpy(), rtol=1e-12)
  for a, b in zip(tf.nest.flatten(trajectory), tf.nest.flatten(whole[1])):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
  # The carried optimizer state is not the initial (zero) state.
  assert np.abs(trajectory.rule_state["all"][0].numpy()).max() > 0


def test_each_trajectory_starts_from_zero_state():
  def make_trainer():
    problem = l2l_tf.QuadraticProblem(batch_size=4)
    rule = l2l_tf.LearnedUpdateRule(
      l2l_tf.CoordinatewiseLSTM(preprocessing="identity", output_scale=1.0)
    )
    config = meta_trainer.MetaTrainingConfig(num_steps=4, unroll_length=2, jit_compile="false")
    trainer = meta_trainer.MetaTrainer(rule, problem, problem, config, log=lambda *_: None)
    trainer.meta_optimizer.apply_gradients = lambda *_: None  # frozen weights
    return trainer, rule

  trainer, rule = make_trainer()
  fresh, fresh_rule = make_trainer()
  fresh_rule.cells["all"].set_weights(rule.cells["all"].get_weights())
  trainer.train_trajectory(11)
  assert trainer.train_trajectory(12) == pytest.approx(fresh.train_trajectory(12), rel=1e-6)


def test_learned_rule_takes_any_mapping_of_cells_and_refuses_mismatched_groups():
  cell = l2l_tf.CoordinatewiseLSTM(hidden_sizes=(3,), preprocessing="identity")
  rule = l2l_tf.LearnedUpdateRule(types.MappingProxyType({"theta": cell}), {"theta": ".*"})
  assert rule.cells == {"theta": cell}
  with pytest.raises(ValueError, match="mismatched: \\['other', 'theta'\\]"):
    l2l_tf.LearnedUpdateRule({"theta": cell}, {"other": ".*"})
  with pytest.raises(ValueError, match="Several cells need ParameterGroups"):
    l2l_tf.LearnedUpdateRule({"a": cell, "b": cell})
