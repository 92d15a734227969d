"""The imitation warm start (l2l_tf.training.imitation) and its place in meta-training."""

import json
import math

import numpy as np

import pytest
import tensorflow as tf

import l2l_tf
from l2l_tf.training import imitation
from l2l_tf.training import meta_trainer
from l2l_tf.training import unroll as unroll_lib

TEACHER_RATE = 0.01


def _rule():
  tf.keras.utils.set_random_seed(0)
  return l2l_tf.LearnedUpdateRule(
    l2l_tf.CoordinatewiseLSTM(preprocessing="identity", output_scale=0.1)
  )


def _distance_to_sgd(rule, problem, seed):
  """Mean squared difference between the rule's first update and -TEACHER_RATE * g."""
  params = problem.init_params(seed)
  batch = tf.nest.map_structure(lambda x: x[0], problem.sample_batches(seed, 1))
  _, grads = unroll_lib.value_and_grad(problem, params, batch)
  stepped, _ = rule.step(params, grads, rule.init_state(params))
  update = stepped["theta"] - params["theta"]
  return float(tf.reduce_mean(tf.square(update + TEACHER_RATE * grads["theta"])))


def test_imitation_brings_the_update_close_to_the_teachers():
  problem = l2l_tf.QuadraticProblem(batch_size=16)
  rule = _rule()
  before = _distance_to_sgd(rule, problem, seed=777)
  logs = []
  warm_start = imitation.Imitation(
    rule, imitation.make_teacher(f"sgd:{TEACHER_RATE}"), 0.03, 1.0, logs.append
  )
  losses = warm_start.run([problem], list(range(20)), num_steps=20, unroll_length=10, log_every=10)
  after = _distance_to_sgd(rule, problem, seed=777)  # a problem imitation never saw
  assert after < before / 10, (before, after)
  assert losses[-1] < losses[0] / 10
  assert len(logs) == 2 and "trajectory 20/20" in logs[-1] and "ETA" in logs[-1]


@pytest.mark.parametrize(
  "spec,message",
  [
    ("adagrad:0.1", "adagrad"),
    ("adam", "NAME:LEARNING_RATE"),
    ("adam:-1", "NAME:LEARNING_RATE"),
    ("adam:nan", "NAME:LEARNING_RATE"),
  ],
)
def test_a_bad_teacher_spec_is_refused(spec, message):
  with pytest.raises(ValueError, match=message):
    meta_trainer.MetaTrainingConfig(imitate=spec, imitation_trajectories=1).validate()


def test_imitation_runs_once_and_is_part_of_the_runs_identity(tmp_path):
  out = str(tmp_path / "run")

  def train(**imitation_settings):
    logs = []
    settings = dict(
      num_steps=10,
      unroll_length=5,
      epochs=1,
      trajectories_per_epoch=1,
      jit_compile="false",
      log_every=1,
      **imitation_settings,
    )
    trainer = meta_trainer.MetaTrainer(
      _rule(),
      l2l_tf.QuadraticProblem(batch_size=8),
      l2l_tf.QuadraticProblem(batch_size=8),
      meta_trainer.MetaTrainingConfig(**settings),
      log=logs.append,
    )
    trainer.train(out)
    return logs

  logs = train(imitate="nag:0.01", imitation_trajectories=2)
  assert sum("imitation of nag trajectory" in line for line in logs) == 2
  assert not any("non-finite" in line for line in logs), logs
  with open(f"{out}/run.json") as f:
    config = json.load(f)["config"]
  assert (config["imitate"], config["imitation_trajectories"]) == ("nag:0.01", 2)
  resumed = train(imitate="nag:0.01", imitation_trajectories=2)
  assert any("resuming" in line for line in resumed)
  assert not any("imitation of" in line for line in resumed), resumed
  with pytest.raises(meta_trainer.RunDirectoryError, match="another run"):
    train(imitate="nag:0.02", imitation_trajectories=2)


def test_imitation_trains_every_cell_of_a_rule_with_parameter_groups():
  images = tf.random.stateless_normal([64, 6], seed=[1, 2])
  labels = tf.random.stateless_uniform([64], seed=[3, 4], maxval=10, dtype=tf.int32)
  problem = l2l_tf.MLPClassificationProblem(images, labels, hidden_sizes=(4,), minibatch_size=16)
  tf.keras.utils.set_random_seed(0)
  cells = {
    group: l2l_tf.CoordinatewiseLSTM(preprocessing="identity", output_scale=0.1)
    for group in ("weights", "biases")
  }
  rule = l2l_tf.LearnedUpdateRule(cells, {"weights": "/w$", "biases": "/b$"})
  before = {group: [v.numpy() for v in cell.trainable_variables] for group, cell in cells.items()}
  warm_start = imitation.Imitation(rule, imitation.make_teacher("sgd:0.1"), 0.01, 1.0, print)
  losses = warm_start.run([problem], [0, 1], num_steps=4, unroll_length=2, log_every=2)
  assert all(math.isfinite(loss) for loss in losses)
  for group, cell in cells.items():
    changed = [
      not np.array_equal(b, v.numpy()) for b, v in zip(before[group], cell.trainable_variables)
    ]
    assert any(changed), group
