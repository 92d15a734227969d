"""Test hook: SIGKILL the meta-training process at a named point, as a badly timed kill -9.

Set L2L_TF_TEST_CRASH_AT=<point>@<epoch> (e.g. after_checkpoint@2; epochs count from 1, the
epoch being run) and the trainer kills itself with SIGKILL there: no cleanup, no flush, no
finally block runs. Unset (always, outside tests), every call here does nothing. Points:

  mid_epoch               after the epoch's first trajectory
  best_swap               inside the replacement of best/, between its two renames: the old
                          best/ moved aside, the new one not yet in place
  checkpoint_shards       inside the checkpoint write: the data written into ckpt-N_temp/, not
                          yet merged into ckpt-N.*
  checkpoint_unrecorded   ckpt-N.* complete, the checkpoint state file not yet naming it
  after_checkpoint        the checkpoint recorded; history.json and TensorBoard not yet written
"""

import contextlib
import os
import signal

import tensorflow as tf

ENVIRONMENT_VARIABLE = "L2L_TF_TEST_CRASH_AT"
POINTS = (
  "mid_epoch",
  "best_swap",
  "checkpoint_shards",
  "checkpoint_unrecorded",
  "after_checkpoint",
)


def _requested():
  """(point, epoch) named by the environment, or None."""
  spec = os.environ.get(ENVIRONMENT_VARIABLE)
  if not spec:
    return None
  point, _, epoch = spec.partition("@")
  if point not in POINTS or not epoch.isdigit():
    raise ValueError(
      f"{ENVIRONMENT_VARIABLE}={spec!r}: expected <point>@<epoch> with point one "
      f"of {', '.join(POINTS)}"
    )
  return point, int(epoch)


def _kill():
  os.kill(os.getpid(), signal.SIGKILL)


def reach(point, epoch):
  """Dies here if the environment asks for `point` in `epoch`."""
  if _requested() == (point, epoch):
    _kill()


@contextlib.contextmanager
def _killed_on_rename_from(prefix):
  """Dies at the first os.rename whose source is named <prefix>... (atomic_directory's swap)."""
  rename = os.rename

  def killing_rename(source, *args, **kwargs):
    if os.path.basename(str(source)).startswith(prefix):
      _kill()
    return rename(source, *args, **kwargs)

  os.rename = killing_rename
  try:
    yield
  finally:
    os.rename = rename


@contextlib.contextmanager
def _killed_before_checkpoint_merge():
  """Dies when TensorFlow merges the written shards into ckpt-N.* (an internal op)."""
  from tensorflow.python.ops import gen_io_ops  # pylint: disable=g-import-not-at-top

  merge = gen_io_ops.merge_v2_checkpoints

  def killing_merge(*args, **kwargs):
    del args, kwargs
    _kill()

  gen_io_ops.merge_v2_checkpoints = killing_merge
  try:
    yield
  finally:
    gen_io_ops.merge_v2_checkpoints = merge


def inside(point, epoch, best_directory_name="best"):
  """A context for the library call that holds `point` (best_swap, checkpoint_shards).

  Returns a null context unless the environment asks for `point` in `epoch`.
  """
  if _requested() != (point, epoch):
    return contextlib.nullcontext()
  if point == "best_swap":
    return _killed_on_rename_from(f".{best_directory_name}.tmp-")
  if point == "checkpoint_shards":
    return _killed_before_checkpoint_merge()
  raise ValueError(f"{point} is not a point inside a library call")


def checkpoint_options(epoch):
  """CheckpointOptions whose write callback dies at checkpoint_unrecorded, else None.

  TensorFlow runs the callbacks given here after writing ckpt-N.* and before the
  CheckpointManager records it.
  """
  if _requested() != ("checkpoint_unrecorded", epoch):
    return None
  return tf.train.CheckpointOptions(experimental_write_callbacks=[_kill])
