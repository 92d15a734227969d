"""The meta-training loop: learning, NaN guard, run directories, resume."""

import functools
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import l2l_tf
from l2l_tf import optimizer_format
from l2l_tf.training import meta_trainer
from l2l_tf.training import run_directory


def _trainer(log=None, problem=None, **overrides):
  problem = problem or l2l_tf.QuadraticProblem(batch_size=32)
  tf.keras.utils.set_random_seed(0)
  rule = l2l_tf.LearnedUpdateRule(
    l2l_tf.CoordinatewiseLSTM(preprocessing="identity", output_scale=1.0)
  )
  settings = dict(
    num_steps=20,
    unroll_length=10,
    epochs=2,
    trajectories_per_epoch=6,
    meta_learning_rate=0.01,
    jit_compile="false",
    log_every=100,
  )
  settings.update(overrides)
  logs = [] if log is None else log
  trainer = meta_trainer.MetaTrainer(
    rule,
    problem,
    l2l_tf.QuadraticProblem(batch_size=32),
    meta_trainer.MetaTrainingConfig(**settings),
    log=logs.append,
  )
  return trainer, rule, logs


def test_short_meta_training_lowers_the_meta_loss(tmp_path):
  trainer, rule, logs = _trainer(epochs=3, trajectories_per_epoch=10)
  before = trainer.validation_loss()
  history = trainer.train(str(tmp_path / "run"))
  assert history[-1]["best_validation_loss"] < 0.7 * before
  assert history[-1]["meta_loss"] < history[0]["meta_loss"]
  loaded, metadata = optimizer_format.load_rule(str(tmp_path / "run"))
  assert metadata["best_validation_loss"] == pytest.approx(history[-1]["best_validation_loss"])
  assert any("ETA" in line for line in logs)
  for name in ("run.json", "history.json", "checkpoints", "tensorboard", "best"):
    assert os.path.exists(tmp_path / "run" / name), name


class ExplodingQuadratic(l2l_tf.QuadraticProblem):
  """Its loss turns to NaN once the parameters leave a small ball (a diverging optimizee)."""

  def loss(self, params, batch):
    value = super().loss(params, batch)
    far = tf.reduce_max(tf.abs(params["theta"]), axis=-1) > 0.02
    return tf.where(far, tf.constant(np.nan, value.dtype), value)


def test_non_finite_meta_loss_is_reported_and_skipped(tmp_path):
  logs = []
  trainer, rule, _ = _trainer(
    log=logs, problem=ExplodingQuadratic(batch_size=8), epochs=1, trajectories_per_epoch=2
  )
  weights = [w.numpy() for w in rule.trainable_variables]
  objective, skipped = trainer.train_trajectory(1_000_000)
  assert skipped == 1
  assert any("non-finite meta-loss" in line and "meta-step 1" in line for line in logs)
  for before, after in zip(weights, rule.trainable_variables):
    np.testing.assert_array_equal(before, after.numpy())
  history = trainer.train(str(tmp_path / "run"))
  assert history[0]["skipped_updates"] == 2
  # Every update skipped: best/ is still the untrained optimizer, and says so.
  assert history[0]["best_epoch"] == run_directory.best_epoch(history) == 0
  _, metadata = optimizer_format.load_rule(str(tmp_path / "run"))
  assert metadata["untrained"] and metadata["epoch"] == 0


def test_too_many_skipped_updates_in_a_row_stop_training(tmp_path):
  trainer, _, _ = _trainer(
    problem=ExplodingQuadratic(batch_size=8),
    epochs=2,
    trajectories_per_epoch=5,
    max_consecutive_skips=3,
  )
  with pytest.raises(
    meta_trainer.TrainingDivergedError,
    match="epoch 1, trajectory 3: 3 meta-updates in a row.*untrained",
  ):
    trainer.train(str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints" / "checkpoint")
  never, _, _ = _trainer(
    problem=ExplodingQuadratic(batch_size=8),
    epochs=1,
    trajectories_per_epoch=5,
    max_consecutive_skips=0,
  )
  assert never.train(str(tmp_path / "never"))[0]["skipped_updates"] == 5


def test_a_directory_in_use_is_refused_before_anything_is_written(tmp_path):
  out = tmp_path / "run"
  trainer, _, _ = _trainer(epochs=1, trajectories_per_epoch=1)
  with meta_trainer.run_directory.exclusive_lock(str(out)):
    with pytest.raises(meta_trainer.RunDirectoryError, match="in use by another training"):
      trainer.train(str(out))
  assert os.listdir(out) == [".lock"]
  trainer.train(str(out))  # released with the block
  assert (out / "best").is_dir()


def test_a_checkpoint_written_before_the_history_was_in_it_resumes(tmp_path):
  out = tmp_path / "run"
  first, rule, _ = _trainer(epochs=1, trajectories_per_epoch=2)
  first.train(str(out))
  # Rewrite epoch 1's checkpoint in the older layout (no history, no skip count) and leave a
  # history.json that also holds an epoch 2 the checkpoint does not have.
  old = tf.train.Checkpoint(
    cells=rule.cells,
    meta_optimizer=first.meta_optimizer,
    epoch=first.epoch,
    best_validation=first.best_validation,
  )
  tf.train.CheckpointManager(old, str(out / "checkpoints"), 2).save(checkpoint_number=1)
  history = json.loads((out / "history.json").read_text())
  (out / "history.json").write_text(json.dumps(history + [dict(history[0], epoch=2)]))
  again, _, logs = _trainer(epochs=2, trajectories_per_epoch=2)
  (out / "run.json").write_text(
    (out / "run.json").read_text().replace('"epochs": 1', '"epochs": 2')
  )
  history = again.train(str(out))
  assert any("resuming" in line and "at epoch 1" in line for line in logs)
  assert [h["epoch"] for h in history] == [1, 2]
  assert json.loads((out / "history.json").read_text()) == history


def test_directory_with_another_run_is_refused(tmp_path):
  trainer, _, _ = _trainer(epochs=1, trajectories_per_epoch=1)
  trainer.train(str(tmp_path / "run"))
  other, _, _ = _trainer(epochs=1, trajectories_per_epoch=1, meta_learning_rate=0.5)
  with pytest.raises(meta_trainer.RunDirectoryError, match="holds another run"):
    other.train(str(tmp_path / "run"))
  (tmp_path / "stuff").mkdir()
  (tmp_path / "stuff" / "notes.txt").write_text("mine")
  with pytest.raises(meta_trainer.RunDirectoryError, match="holds no l2l_tf run"):
    other.train(str(tmp_path / "stuff"))
  assert (tmp_path / "stuff" / "notes.txt").read_text() == "mine"


def test_resume_continues_from_the_checkpoint(tmp_path):
  out = str(tmp_path / "run")
  first, _, _ = _trainer(epochs=2, trajectories_per_epoch=3)
  first.train(out)
  resumed, rule, logs = _trainer(epochs=3, trajectories_per_epoch=3)
  # Same configuration but for the epoch count is another run: refuse; same one resumes.
  with pytest.raises(meta_trainer.RunDirectoryError):
    resumed.train(out)
  again, rule, logs = _trainer(epochs=2, trajectories_per_epoch=3)
  history = again.train(out)
  assert any("resuming" in line for line in logs)
  assert [h["epoch"] for h in history] == [1, 2]  # nothing re-run
  assert int(again.meta_optimizer.iterations.numpy()) == int(
    first.meta_optimizer.iterations.numpy()
  )


def test_a_moved_run_directory_resumes_and_its_command_line_is_not_its_identity(tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top

  first, _, _ = _trainer(epochs=1, trajectories_per_epoch=2)
  first.metadata = {"command": f"train.py --output_dir={tmp_path / 'a'}", "problem": "q"}
  first.train(str(tmp_path / "a"))
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  moved, _, logs = _trainer(epochs=1, trajectories_per_epoch=2)
  moved.metadata = {"command": f"train.py --output_dir={tmp_path / 'b'}", "problem": "q"}
  moved.train(str(tmp_path / "b"))
  assert any("resuming" in line for line in logs)
  other, _, _ = _trainer(epochs=1, trajectories_per_epoch=2)
  other.metadata = {"command": "train.py", "problem": "another"}
  with pytest.raises(meta_trainer.RunDirectoryError, match="holds another run"):
    other.train(str(tmp_path / "b"))


def test_settings_that_do_not_change_results_are_not_a_runs_identity(tmp_path):
  out = str(tmp_path / "run")
  first, _, _ = _trainer(epochs=1, trajectories_per_epoch=2)
  first.train(out)
  resumed, _, logs = _trainer(
    epochs=1, trajectories_per_epoch=2, recompute="blocks", log_every=7, max_consecutive_skips=3
  )
  assert [h["epoch"] for h in resumed.train(out)] == [1]
  assert any("resuming" in line for line in logs)


def test_log_loss_objective_is_the_mean_log_loss_and_trains(tmp_path):
  trainer, rule, _ = _trainer(meta_objective="log_loss", epochs=2, trajectories_per_epoch=8)
  problem = trainer.problem
  params = problem.init_params(5)
  batches = problem.sample_batches(5, 10)
  first = tf.nest.map_structure(lambda x: x[0], batches)
  window = tf.nest.map_structure(lambda x: x[1:], batches)
  trajectory = trainer._start[0](params, first)
  objective, _, grads, finite = trainer._train_unroll[0](trajectory, window)
  _, _, losses = meta_trainer.unroll_lib.unroll(problem, rule, trajectory, window)
  assert bool(finite)
  np.testing.assert_allclose(float(objective), np.mean(np.log(losses.numpy())), rtol=1e-5)
  assert all(np.abs(g.numpy()).max() > 0 for g in grads)
  before = trainer.validation_loss()
  history = trainer.train(str(tmp_path / "run"))
  assert history[-1]["best_validation_loss"] < before


def test_final_validation_metric_is_the_mean_over_the_last_unroll():
  mean_trainer, rule, _ = _trainer()
  final_trainer, _, _ = _trainer(validation_metric="final")
  final_trainer.rule = rule
  losses = l2l_tf.evaluation.run_trajectories(mean_trainer.validation_problem, rule, 1, 20)
  assert mean_trainer.validation_loss() == pytest.approx(np.mean(losses[1:]))
  assert final_trainer.validation_loss() == pytest.approx(np.mean(losses[-10:]))
  assert np.mean(losses[-10:]) < np.mean(losses[1:])  # the two metrics differ here


def test_run_written_before_a_setting_existed_resumes_with_its_default(tmp_path):
  out = tmp_path / "run"
  first, _, _ = _trainer(epochs=1, trajectories_per_epoch=2)
  first.train(str(out))
  run = json.loads((out / "run.json").read_text())
  del run["config"]["meta_objective"], run["config"]["validation_metric"]
  (out / "run.json").write_text(json.dumps(run))
  again, _, logs = _trainer(epochs=1, trajectories_per_epoch=2)
  again.train(str(out))
  assert any("resuming" in line for line in logs)
  changed, _, _ = _trainer(epochs=1, trajectories_per_epoch=2, meta_objective="log_loss")
  with pytest.raises(meta_trainer.RunDirectoryError, match="holds another run"):
    changed.train(str(out))


@pytest.mark.parametrize(
  "bad",
  [
    dict(num_steps=30, unroll_length=20),
    dict(num_steps=0),
    dict(meta_learning_rate=-1.0),
    dict(jit_compile="maybe"),
    dict(meta_objective="loss_squared"),
    dict(max_consecutive_skips=-1),
    dict(validation_metric="median"),
  ],
)
def test_inconsistent_config_refused(bad):
  with pytest.raises(ValueError):
    meta_trainer.MetaTrainingConfig(**bad).validate()


def test_a_damaged_checkpoint_state_file_resumes_from_the_newest_checkpoint(tmp_path):
  out = tmp_path / "run"
  first, _, _ = _trainer(epochs=2, trajectories_per_epoch=2)
  first.train(str(out))
  best_before = (out / "best" / "weights.npz").read_bytes()
  (out / "checkpoints" / "checkpoint").write_bytes(b"\x00garbage{")
  again, _, logs = _trainer(epochs=2, trajectories_per_epoch=2)
  history = again.train(str(out))
  assert any("resuming" in line and "epoch 2" in line for line in logs)
  assert [h["epoch"] for h in history] == [1, 2]
  assert (out / "best" / "weights.npz").read_bytes() == best_before
  assert int(again.meta_optimizer.iterations.numpy()) == int(
    first.meta_optimizer.iterations.numpy()
  )


def test_a_checkpoint_loads_as_its_epochs_optimizer_and_exports(tmp_path):
  out = str(tmp_path / "run")
  trainer, rule, _ = _trainer(epochs=2, trajectories_per_epoch=3)
  history = trainer.train(out)
  # The newest checkpoint is epoch 2's optimizer, whatever best/ holds.
  loaded, metadata = meta_trainer.load_checkpoint_rule(out)
  for got, want in zip(
    optimizer_format.weight_arrays(loaded), optimizer_format.weight_arrays(rule)
  ):
    np.testing.assert_array_equal(got, want)
  assert metadata["epoch"] == 2
  assert metadata["validation_loss"] == pytest.approx(history[-1]["validation_loss"])
  assert "best_validation_loss" not in metadata and metadata["untrained"] is False
  first = os.path.join(out, "checkpoints", "ckpt-1")
  assert meta_trainer.load_checkpoint_rule(out, first)[1]["epoch"] == 1
  exported, _ = l2l_tf.export.export_optimizer_directory(
    out,
    str(tmp_path / "saved"),
    load=functools.partial(meta_trainer.load_checkpoint_rule, checkpoint=first),
  )
  stored = optimizer_format.read_config(str(tmp_path / "saved"))["metadata"]
  assert stored["exported_from"] == os.path.abspath(first)
  assert stored["meta_trained_on"]["epoch"] == 1


def test_a_checkpoint_of_something_else_is_refused_in_one_line(tmp_path):
  with pytest.raises(optimizer_format.OptimizerFileError, match="not a scripts/train.py output"):
    meta_trainer.load_checkpoint_rule(str(tmp_path))
  out = str(tmp_path / "run")
  _trainer(epochs=1, trajectories_per_epoch=1)[0].train(out)
  other = tf.train.Checkpoint(cells={"all": tf.Variable([1.0])})
  prefix = other.write(str(tmp_path / "other" / "ckpt"))
  with pytest.raises(optimizer_format.OptimizerFileError, match="not a checkpoint of") as error:
    meta_trainer.load_checkpoint_rule(out, prefix)
  assert "\n" not in str(error.value)
