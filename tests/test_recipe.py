"""Meta-training recipe options: horizon curriculum, random scaling, a family of networks."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import l2l_tf
from l2l_tf.problems import scaled
from l2l_tf.training import meta_trainer

import repo_paths

ROOT = repo_paths.ROOT


def _config(**overrides):
  settings = dict(
    num_steps=20,
    unroll_length=10,
    epochs=2,
    trajectories_per_epoch=3,
    meta_learning_rate=0.01,
    jit_compile="false",
    log_every=100,
  )
  settings.update(overrides)
  return meta_trainer.MetaTrainingConfig(**settings)


def _trainer(problem, **overrides):
  tf.keras.utils.set_random_seed(0)
  rule = l2l_tf.LearnedUpdateRule(
    l2l_tf.CoordinatewiseLSTM(preprocessing="identity", output_scale=1.0)
  )
  return meta_trainer.MetaTrainer(
    rule, problem, l2l_tf.QuadraticProblem(batch_size=4), _config(**overrides), log=lambda _: None
  )


def test_curriculum_stages_split_the_epochs():
  config = _config(num_steps=40, epochs=6, curriculum=((10, 10), (40, 10), (40, 40)))
  assert [config.stage(e) for e in range(6)] == [(10, 10)] * 2 + [(40, 10)] * 2 + [(40, 40)] * 2
  assert _config(num_steps=40).stage(3) == (40, 10)
  for bad in (((10, 15),), ((0, 10),), ((10, -10),), ((10,),), ((10.5, 10),)):
    with pytest.raises(ValueError, match="curriculum stages"):
      _config(curriculum=bad).validate()


def test_final_validation_window(monkeypatch):
  trainer = _trainer(
    l2l_tf.QuadraticProblem(batch_size=4),
    num_steps=40,
    validation_metric="final",
    validation_window=5,
  )
  losses = np.arange(41, dtype=np.float64)[:, None] * np.ones([1, 4])
  monkeypatch.setattr(meta_trainer.evaluation, "run_trajectories", lambda *_: losses)
  assert trainer.validation_loss() == pytest.approx(np.mean(np.arange(36, 41)))
  trainer.config.validation_window = 0  # one unroll (10 steps)
  assert trainer.validation_loss() == pytest.approx(np.mean(np.arange(31, 41)))
  with pytest.raises(ValueError, match="validation_window"):
    _config(validation_window=21).validate()


def test_curriculum_trains_each_epoch_at_its_stage(tmp_path):
  trainer = _trainer(
    l2l_tf.QuadraticProblem(batch_size=4),
    num_steps=40,
    epochs=3,
    curriculum=((10, 10), (30, 10), (30, 30)),
  )
  trainer.train(str(tmp_path / "run"))
  # One meta-update per unroll: 3 trajectories per epoch of 1, 3 and 1 unrolls.
  assert int(trainer.meta_optimizer.iterations.numpy()) == 3 * 1 + 3 * 3 + 3 * 1


def test_random_scale_multiplies_each_instance_by_a_constant_per_trajectory():
  base = l2l_tf.QuadraticProblem(batch_size=64)
  problem = scaled.RandomlyScaledProblem(base, 100.0)
  params = problem.init_params(7)
  batches = problem.sample_batches(7, 5)
  ratios = np.stack(
    [
      problem.loss(params, tf.nest.map_structure(lambda x, t=t: x[t], batches)).numpy()
      / base.loss(params, tf.nest.map_structure(lambda x, t=t: x[t], batches["data"])).numpy()
      for t in range(6)
    ]
  )
  np.testing.assert_allclose(ratios, np.broadcast_to(ratios[0], ratios.shape), rtol=1e-5)
  assert 1 / 100 <= ratios.min() and ratios.max() <= 100
  assert ratios.max() / ratios.min() > 100  # spread over the range, not one constant
  other = problem.sample_batches(8, 5)["log_scale"].numpy()
  assert not np.allclose(other, batches["log_scale"].numpy())
  assert problem.get_config()["random_scale"] == 100.0


def test_random_scale_needs_the_log_loss_and_wraps_training_problems_only():
  with pytest.raises(ValueError, match="log_loss"):
    _config(random_scale=10.0).validate()
  with pytest.raises(ValueError, match=">= 1"):
    _config(random_scale=0.5, meta_objective="log_loss").validate()
  trainer = _trainer(
    l2l_tf.QuadraticProblem(batch_size=4), random_scale=10.0, meta_objective="log_loss"
  )
  assert isinstance(trainer.problem, scaled.RandomlyScaledProblem)
  assert not isinstance(trainer.validation_problem, scaled.RandomlyScaledProblem)
  objective, skipped = trainer.train_trajectory(1_000_000)
  assert skipped == 0 and np.isfinite(objective)


class CountingQuadratic(l2l_tf.QuadraticProblem):
  """Counts the trajectories drawn from it."""

  def __init__(self, dim):
    super().__init__(dim=dim, batch_size=4)
    self.draws = 0

  def init_params(self, seed):
    self.draws += 1
    return super().init_params(seed)


def test_a_family_of_problems_shares_the_trajectories_and_steps_each_shape():
  families = [CountingQuadratic(3), CountingQuadratic(7)]
  trainer = _trainer(families)
  weights = [w.numpy() for w in trainer.rule.trainable_variables]
  for index in range(4):
    trainer.train_trajectory(meta_trainer.trajectory_seed(0, 0, index))
  assert [p.draws for p in families] == [2, 2]
  assert any(
    not np.array_equal(a, b.numpy()) for a, b in zip(weights, trainer.rule.trainable_variables)
  )
  with pytest.raises(ValueError, match="at least one"):
    _trainer([])


def _train_script(*args):
  return subprocess.run(
    [sys.executable, os.path.join(ROOT, "scripts", "train.py"), *args],
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
  )


def test_train_script_with_networks_curriculum_and_scale(tmp_path):
  result = _train_script(
    "--problem=mnist",
    f"--output_dir={tmp_path / 'run'}",
    "--train_networks=sigmoid:4,relu:3-3",
    "--hidden_sizes=4",
    "--num_steps=20",
    "--unroll_length=10",
    "--curriculum=10,20x20",
    "--epochs=2",
    "--trajectories_per_epoch=2",
    "--num_validation_problems=2",
    "--meta_objective=log_loss",
    "--random_scale=10",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "3190/2407 coordinates" in result.stdout
  rule, metadata = l2l_tf.optimizer_format.load_rule(str(tmp_path / "run"))
  assert [n["hidden_sizes"] for n in metadata["train_networks"]] == [[4], [3, 3]]
  assert metadata["training"]["curriculum"] == [[10, 10], [20, 20]]
  assert metadata["training"]["random_scale"] == 10


@pytest.mark.parametrize(
  "args, message",
  [
    (["--train_networks=sigmoid"], "ACTIVATION:WIDTH"),
    (["--train_networks=sigmoid:2x"], "ACTIVATION:WIDTH"),
    (["--train_networks=swish:20"], "Unknown activation"),
    (["--curriculum=a,b"], "--curriculum entries are STEPS or STEPSxUNROLL"),
    (["--curriculum=100x30"], "curriculum stages"),
    (["--random_scale=10"], "log_loss"),
  ],
)
def test_train_script_refuses_bad_recipe_flags(args, message, tmp_path):
  result = _train_script("--problem=mnist", f"--output_dir={tmp_path / 'run'}", *args)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  assert message in result.stderr.strip().splitlines()[-1]
  assert not os.path.exists(tmp_path / "run")
