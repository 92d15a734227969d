"""Recomputed unrolls (unroll(recompute=...)): the plain unroll's meta-gradient, less memory."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import l2l_tf
from l2l_tf.problems.mlp import MLPClassificationProblem
from l2l_tf.training import meta_trainer
from l2l_tf.training import unroll as unroll_lib

import repo_paths

K = 6  # unroll length: "steps" recomputes blocks of 1 step, "blocks" blocks of 2


class CountingQuadratic(l2l_tf.QuadraticProblem):
  """A quadratic that counts how often its loss is built (eagerly: evaluated)."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.loss_calls = 0

  def loss(self, params, batch):
    self.loss_calls += 1
    return super().loss(params, batch)


def _quadratic():
  return CountingQuadratic(dim=3, batch_size=2, init_stddev=1.0, dtype="float64")


def _mlp():
  rng = np.random.default_rng(0)
  return MLPClassificationProblem(
    rng.normal(size=(40, 5)),
    rng.integers(0, 3, 40),
    hidden_sizes=(4,),
    num_classes=3,
    minibatch_size=8,
    batch_size=2,
    init_stddev=0.5,
    dtype="float64",
  )


def _rule(seed=3):
  tf.random.set_seed(seed)
  cell = l2l_tf.CoordinatewiseLSTM(
    hidden_sizes=(3, 3), preprocessing="log_sign", output_scale=0.3, dtype="float64"
  )
  for w in cell.trainable_variables:  # non-trivial weights, so every path matters
    w.assign(tf.random.normal(w.shape, stddev=0.5, dtype=tf.float64))
  return l2l_tf.LearnedUpdateRule(cell)


def _inputs(problem):
  """theta_0 and the batches of one K-step unroll."""
  return problem.init_params(5), problem.sample_batches(5, K)


def _meta_gradient(problem, rule, params, batches, recompute, second_derivatives=False):
  """Meta-loss, losses, final parameters and meta-gradients (weights, theta_0) of an unroll."""
  first = tf.nest.map_structure(lambda x: x[0], batches)
  rest = tf.nest.map_structure(lambda x: x[1:], batches)
  with tf.GradientTape() as tape:
    tape.watch(params)
    trajectory = unroll_lib.start_trajectory(problem, rule, params, first, second_derivatives)
    meta_loss, final, losses = unroll_lib.unroll(
      problem, rule, trajectory, rest, second_derivatives, recompute=recompute
    )
  weight_grads, param_grads = tape.gradient(meta_loss, (rule.trainable_variables, params))
  return {
    "meta_loss": meta_loss,
    "losses": losses,
    "final": final,
    "weights": weight_grads,
    "theta_0": param_grads,
  }


def _assert_same(actual, expected, rtol=1e-10):
  actual, expected = tf.nest.flatten(actual), tf.nest.flatten(expected)
  assert len(actual) == len(expected)
  for a, e in zip(actual, expected):
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("make_problem", [_quadratic, _mlp], ids=["quadratic", "mlp"])
@pytest.mark.parametrize("second_derivatives", [False, True])
def test_recomputed_meta_gradient_equals_plain(make_problem, second_derivatives):
  problem, rule = make_problem(), _rule()
  params, batches = _inputs(problem)
  expected = _meta_gradient(problem, rule, params, batches, "none", second_derivatives)
  for recompute in ("steps", "blocks"):
    _assert_same(
      _meta_gradient(problem, rule, params, batches, recompute, second_derivatives), expected
    )
  # The weights' meta-gradient is not zero: the comparisons above are not vacuous.
  assert all(float(tf.reduce_max(tf.abs(g))) > 1e-6 for g in expected["weights"])


@pytest.mark.parametrize("recompute", ["steps", "blocks"])
def test_recomputed_meta_gradient_in_graphs_and_xla(recompute):
  problem, rule = _mlp(), _rule()
  params, batches = _inputs(problem)
  expected = _meta_gradient(problem, rule, params, batches, "none")
  for jit_compile in (False, True):
    compute = tf.function(_meta_gradient, autograph=False, jit_compile=jit_compile)
    _assert_same(compute(problem, rule, params, batches, recompute), expected)


@pytest.mark.parametrize("recompute", ["none", "steps", "blocks"])
def test_backward_pass_recomputes_each_step_once(recompute):
  problem = _quadratic()
  params, batches = _inputs(problem)
  calls = problem.loss_calls
  _meta_gradient(problem, _rule(), params, batches, recompute)  # eager: a call per evaluation
  forward = 1 + K  # theta_0, then each step
  assert problem.loss_calls - calls == forward + (0 if recompute == "none" else K)


def test_block_sizes():
  assert [unroll_lib.block_size(k, "blocks") for k in (1, 6, 7, 20, 100)] == [1, 2, 1, 4, 10]
  assert unroll_lib.block_size(20, "steps") == 1


def test_unknown_mode_is_refused():
  problem, rule = _quadratic(), _rule()
  batches = problem.sample_batches(0, 2)
  trajectory = unroll_lib.start_trajectory(
    problem, rule, problem.init_params(0), tf.nest.map_structure(lambda x: x[0], batches)
  )
  with pytest.raises(ValueError, match="recompute must be one of none, steps, blocks"):
    unroll_lib.unroll(problem, rule, trajectory, batches, recompute="chunks")
  with pytest.raises(ValueError, match="recompute must be one of"):
    meta_trainer.MetaTrainingConfig(recompute="all").validate()


def test_meta_trainer_passes_recompute_to_the_unroll():
  def trainer_unroll(recompute):
    problem = _quadratic()
    config = meta_trainer.MetaTrainingConfig(
      num_steps=K, unroll_length=K, jit_compile="false", recompute=recompute
    )
    trainer = meta_trainer.MetaTrainer(_rule(), problem, problem, config, log=lambda *_: None)
    batches = problem.sample_batches(7, K)
    trajectory = trainer._start[0](
      problem.init_params(7), tf.nest.map_structure(lambda x: x[0], batches)
    )
    calls = problem.loss_calls
    objective, _, grads, _ = trainer._train_unroll[0](
      trajectory, tf.nest.map_structure(lambda x: x[1:], batches)
    )
    return problem.loss_calls - calls, [objective] + grads

  plain_traces, plain = trainer_unroll("none")
  recomputed_traces, recomputed = trainer_unroll("steps")
  # Tracing the recomputed meta-step builds the loss once more: in the backward pass.
  assert recomputed_traces == plain_traces + 1
  _assert_same(recomputed, plain)


def test_train_script_records_and_runs_recompute(tmp_path):
  out = tmp_path / "run"
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(repo_paths.ROOT, "scripts", "train.py"),
      f"--output_dir={out}",
      "--recompute=blocks",
      "--epochs=1",
      "--trajectories_per_epoch=2",
      "--num_steps=8",
      "--unroll_length=4",
      "--num_validation_problems=4",
      "--batch_size=4",
    ],
    capture_output=True,
    text=True,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads((out / "run.json").read_text())["config"]["recompute"] == "blocks"
