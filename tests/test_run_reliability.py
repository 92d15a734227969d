"""Meta-training survives kill -9 anywhere, one run per directory, and no leftovers (issue 13).

The kills are deterministic: L2L_TF_TEST_CRASH_AT=<point>@<epoch> makes the trainer SIGKILL
itself in that window (l2l_tf/training/fault_injection.py).
"""

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf

from l2l_tf import leftovers
from l2l_tf.training import fault_injection
from l2l_tf.training import run_directory

import repo_paths

# Kills and restarts training subprocesses: the slow tier.
pytestmark = pytest.mark.slow

ROOT = repo_paths.ROOT
EPOCHS = 5
TINY_RUN = [
  "--problem=quadratic",
  "--batch_size=4",
  "--num_steps=20",
  "--unroll_length=10",
  "--trajectories_per_epoch=2",
  f"--epochs={EPOCHS}",
  "--num_validation_problems=4",
  "--log_every=100",
  "--jit_compile=false",
]


def _train(output_dir, *args, crash_at=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop(fault_injection.ENVIRONMENT_VARIABLE, None)
  if crash_at:
    env[fault_injection.ENVIRONMENT_VARIABLE] = crash_at
  return subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "scripts", "train.py"),
      f"--output_dir={output_dir}",
      *TINY_RUN,
      *args,
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  out = tmp_path_factory.mktemp("runs") / "uninterrupted"
  result = _train(out)
  assert result.returncode == 0, result.stderr[-2000:]
  return out


def _history(run):
  """history.json without the wall-clock times (the one field a rerun may change)."""
  records = json.loads((run / "history.json").read_text())
  return [{k: v for k, v in record.items() if k != "epoch_seconds"} for record in records]


def _best_weights(run):
  with np.load(run / "best" / "weights.npz") as stored:
    return {name: stored[name] for name in stored.files}


def _checkpointed_values(run):
  """The latest checkpoint's numeric variables (weights, meta-optimizer state, counters)."""
  reader = tf.train.load_checkpoint(str(run / "checkpoints"))
  return {
    name: reader.get_tensor(name)
    for name in reader.get_variable_to_shape_map()
    if not name.startswith(("history/", "save_counter/", "_CHECKPOINTABLE"))
  }


def _tensorboard_steps(run):
  """{tag: [(step, value), ...]} over every event file of the run."""
  steps = {}
  for path in glob.glob(str(run / "tensorboard" / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        steps.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
  return {tag: sorted(pairs) for tag, pairs in steps.items()}


def _latest_checkpoint(run):
  return os.path.basename(tf.train.latest_checkpoint(str(run / "checkpoints")) or "")


def _leftovers(run):
  patterns = [
    ".best.tmp-*",
    ".best.old-*",
    ".tmp-*",
    "checkpoints/ckpt-*_temp",
    "checkpoints/checkpoint.tmp*",
  ]
  return sorted(p for pattern in patterns for p in glob.glob(str(run / pattern)))


def _error_lines(result):
  """The program's own stderr lines (TensorFlow's start-up chatter aside)."""
  assert "Traceback" not in result.stderr
  return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _assert_killed(result):
  assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-2000:])


def test_kill_in_every_window_then_rerun_matches_an_uninterrupted_run(uninterrupted, tmp_path):
  run = tmp_path / "killed"
  # Killed after epoch 1's first trajectory: nothing but the untrained best/ was saved.
  _assert_killed(_train(run, crash_at="mid_epoch@1"))
  assert _latest_checkpoint(run) == ""
  assert json.loads((run / "best" / "optimizer.json").read_text())["metadata"]["untrained"]

  # Killed between the checkpoint and history.json: the file lacks epoch 2 (it used to vanish).
  result = _train(run, crash_at="after_checkpoint@2")
  _assert_killed(result)
  assert "resuming" not in result.stdout  # no checkpoint to resume from: a fresh start
  assert _latest_checkpoint(run) == "ckpt-2"
  assert [r["epoch"] for r in _history(run)] == [1]

  # Killed inside the checkpoint write, before the shards are merged: ckpt-3_temp/ is left.
  result = _train(run, crash_at="checkpoint_shards@3")
  _assert_killed(result)
  assert "at epoch 2" in result.stdout
  assert (run / "checkpoints" / "ckpt-3_temp").is_dir()
  assert _latest_checkpoint(run) == "ckpt-2"
  assert [r["epoch"] for r in _history(run)] == [1, 2]  # rebuilt from the checkpoint

  # Killed after ckpt-4.* were written, before the checkpoint state names them.
  result = _train(run, crash_at="checkpoint_unrecorded@4")
  _assert_killed(result)
  assert "at epoch 2" in result.stdout
  assert (run / "checkpoints" / "ckpt-4.index").is_file()
  assert _latest_checkpoint(run) == "ckpt-3"

  # Killed between the two renames of the best/ swap: no best/ at all, the old one aside.
  result = _train(run, crash_at="best_swap@5")
  _assert_killed(result)
  assert "at epoch 3" in result.stdout
  assert not (run / "best").exists()
  assert glob.glob(str(run / ".best.old-*" / "x")) and glob.glob(str(run / ".best.tmp-*"))

  result = _train(run)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "at epoch 4" in result.stdout and "removed what an interrupted run left" in result.stdout
  assert _history(run) == _history(uninterrupted)
  assert [r["epoch"] for r in _history(run)] == list(range(1, EPOCHS + 1))
  reference, resumed = _best_weights(uninterrupted), _best_weights(run)
  assert sorted(resumed) == sorted(reference)
  for name, value in reference.items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)
  reference, resumed = _checkpointed_values(uninterrupted), _checkpointed_values(run)
  assert sorted(resumed) == sorted(reference)
  for name, value in reference.items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)
  # TensorBoard: each epoch once per scalar, the history's values, in one event file.
  history = _history(run)
  expected = {
    "meta_loss": [(r["epoch"], r["meta_loss"]) for r in history],
    "validation_loss": [(r["epoch"], r["validation_loss"]) for r in history],
  }
  logged = _tensorboard_steps(run)
  assert sorted(logged) == sorted(expected)
  for tag, pairs in expected.items():
    assert [step for step, _ in logged[tag]] == [step for step, _ in pairs]
    np.testing.assert_allclose([v for _, v in logged[tag]], [v for _, v in pairs], rtol=1e-6)
  assert len(glob.glob(str(run / "tensorboard" / "events.out.tfevents.*"))) == 1
  assert _leftovers(run) == []


def test_a_second_train_py_into_a_directory_in_use_is_refused(tmp_path):
  run = tmp_path / "busy"
  with run_directory.exclusive_lock(str(run)):  # this test process plays the first run
    result = _train(run)
  assert result.returncode != 0
  assert _error_lines(result) == [
    f"error: {run} is in use by another training process (pid {os.getpid()}); wait for it "
    "to finish or choose another --output_dir"
  ]
  assert sorted(os.listdir(run)) == [run_directory.LOCK_FILE]  # nothing else touched


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
  # The lock protocol by hand (flock on .lock, pid inside), without TensorFlow's start-up.
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import fcntl, os, sys, time\n"
      "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
      "fcntl.flock(fd, fcntl.LOCK_EX)\n"
      "os.write(fd, str(os.getpid()).encode())\n"
      "print('locked', flush=True)\n"
      "time.sleep(600)",
      str(tmp_path / run_directory.LOCK_FILE),
    ],
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(run_directory.RunDirectoryError, match=f"pid {holder.pid}"):
      with run_directory.exclusive_lock(str(tmp_path)):
        pass
  finally:
    holder.kill()
    holder.wait()
  with run_directory.exclusive_lock(str(tmp_path)):  # kill -9 released it
    pass


def test_a_run_whose_updates_are_all_skipped_stops_with_one_error_line(tmp_path):
  run = tmp_path / "diverged"
  result = _train(
    run, "--output_scale=1e19", "--max_consecutive_skips=3", "--trajectories_per_epoch=4"
  )
  assert result.returncode != 0
  lines = _error_lines(result)
  assert len(lines) == 1 and lines[0].startswith(
    "error: meta-training stopped in epoch 1, trajectory 3: 3 meta-updates in a row"
  )
  assert "best/ holds the untrained optimizer" in lines[0]
  metadata = json.loads((run / "best" / "optimizer.json").read_text())["metadata"]
  assert metadata["untrained"] and metadata["epoch"] == 0


def _make_directory(path, age_seconds=0):
  os.makedirs(path)
  stamp = time.time() - age_seconds
  os.utime(path, (stamp, stamp))
  return os.path.basename(path)


def _dead_pid():
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


def test_export_staging_directories_are_removed_only_when_their_process_is_gone(tmp_path):
  day = leftovers.STALE_SECONDS
  live = _make_directory(tmp_path / f"l2l_tf_export_pid{os.getpid()}_abc123")
  dead = _make_directory(tmp_path / f"l2l_tf_export_pid{_dead_pid()}_abc123")
  old_live = _make_directory(tmp_path / f"l2l_tf_export_pid{os.getpid()}_old123", 2 * day)
  unnamed_new = _make_directory(tmp_path / "l2l_tf_export_k3j_x9z1")
  unnamed_old = _make_directory(tmp_path / "l2l_tf_export_q8w2e7r1", 2 * day)
  foreign = _make_directory(tmp_path / "other_program_staging", 2 * day)
  removed = leftovers.remove_stale_staging(str(tmp_path), "l2l_tf_export_")
  assert sorted(removed) == sorted([dead, old_live, unnamed_old])
  assert sorted(os.listdir(tmp_path)) == sorted([live, unnamed_new, foreign])


def test_an_interrupted_directory_swap_is_undone_and_its_temporaries_removed(tmp_path):
  target = tmp_path / "sm"
  old = tmp_path / ".sm.old-a1b2c3d4"
  (old / "x").mkdir(parents=True)
  (old / "x" / "saved_model.pb").write_text("previous export")
  (tmp_path / ".sm.tmp-e5f6g7h8").mkdir()
  (tmp_path / ".other.tmp-e5f6g7h8").mkdir()  # another target's: not ours to touch
  (tmp_path / "sm.tmp-notours").mkdir()
  removed = leftovers.clean_atomic_directory(str(target))
  assert sorted(removed) == [".sm.old-a1b2c3d4", ".sm.tmp-e5f6g7h8"]
  assert (target / "saved_model.pb").read_text() == "previous export"
  assert sorted(os.listdir(tmp_path)) == [".other.tmp-e5f6g7h8", "sm", "sm.tmp-notours"]
  # With the target in place, leftovers are only removed.
  (tmp_path / ".sm.old-zzzzzzzz" / "x").mkdir(parents=True)
  assert leftovers.clean_atomic_directory(str(target)) == [".sm.old-zzzzzzzz"]
  assert (target / "saved_model.pb").read_text() == "previous export"


def test_export_removes_what_killed_exports_left(tmp_path, monkeypatch):
  import l2l_tf  # pylint: disable=g-import-not-at-top
  from l2l_tf import export  # pylint: disable=g-import-not-at-top

  system_temp = tmp_path / "tmp"
  system_temp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
  _make_directory(system_temp / f"l2l_tf_export_pid{_dead_pid()}_abc123")
  live = _make_directory(system_temp / f"l2l_tf_export_pid{os.getpid()}_abc123")
  (tmp_path / ".sm.tmp-a1b2c3d4").mkdir()
  (tmp_path / ".sm.old-a1b2c3d4").mkdir()
  export.export_saved_model(
    l2l_tf.CoordinatewiseLSTM(preprocessing="identity"), str(tmp_path / "sm")
  )
  assert [name for name in os.listdir(system_temp) if name.startswith("l2l_tf_export_")] == [live]
  assert sorted(os.listdir(tmp_path)) == ["sm", "tmp"]
