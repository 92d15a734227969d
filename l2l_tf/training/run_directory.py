"""A meta-training output directory: one writer at a time, and no leftovers from killed runs.

exclusive_lock(directory) holds an fcntl.flock on <directory>/.lock while a run writes there.
The kernel releases the lock when its holder exits or dies (kill -9 included), so a lock is
never stale; the file itself stays (removing it would let two processes lock two different
files of the same name).

remove_leftovers(directory) deletes the temporaries a killed run leaves: the best/ swap's
.best.tmp-*/.best.old-* (putting best/ back if the kill fell between the swap's two renames),
atomic_files.atomic_write's .tmp-* files, and TensorFlow's unfinished checkpoint writes in
checkpoints/ (ckpt-N_temp/, checkpoint.tmp<hex>). Call it only while holding the lock.
"""

import contextlib
import fcntl
import math
import os
import re
import shutil

from l2l_tf import leftovers

# The layout (see meta_trainer's module docstring).
RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
BEST = "best"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
EVENT_FILE_PREFIX = "events.out.tfevents."  # tf.summary's event files in TENSORBOARD
LOCK_FILE = ".lock"

_ATOMIC_WRITE_TEMPORARY = re.compile(r"^\.tmp-[A-Za-z0-9_]+$")
_CHECKPOINT_TEMPORARIES = re.compile(r"^(ckpt-\d+_temp|checkpoint\.tmp[0-9a-f]{32})$")


class RunDirectoryError(ValueError):
  """The output directory holds something other than this run, or another run is using it."""


def _holder(fd):
  """' (pid N)' from the lock file's content, or '' when unreadable."""
  text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
  return f" (pid {text})" if text.isdigit() else ""


@contextlib.contextmanager
def exclusive_lock(directory):
  """Holds the directory's lock for the block; RunDirectoryError if another process has it."""
  os.makedirs(directory, exist_ok=True)
  fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise RunDirectoryError(
        f"{directory} is in use by another training process{_holder(fd)}; wait for it to "
        "finish or choose another --output_dir"
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock


def _remove_matching(directory, pattern):
  removed = []
  if not os.path.isdir(directory):
    return removed
  for entry in sorted(os.listdir(directory)):
    path = os.path.join(directory, entry)
    if not pattern.match(entry) or os.path.islink(path):
      continue
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      os.remove(path)
    removed.append(entry)
  return removed


def remove_leftovers(directory):
  """Deletes a killed run's temporaries in `directory`; returns their paths (relative)."""
  removed = leftovers.clean_atomic_directory(os.path.join(directory, BEST))
  removed += _remove_matching(directory, _ATOMIC_WRITE_TEMPORARY)
  removed += [
    os.path.join(CHECKPOINTS, entry)
    for entry in _remove_matching(os.path.join(directory, CHECKPOINTS), _CHECKPOINT_TEMPORARIES)
  ]
  return removed


def best_epoch(history) -> int:
  """The epoch whose optimizer best/ holds, per a run's history; 0 is the untrained one."""
  for record in reversed(history):
    if "best_epoch" in record:
      return record["best_epoch"]
    # A record written before best_epoch existed: the epoch that set the best loss.
    if math.isfinite(record["validation_loss"]) and (
      record["validation_loss"] == record["best_validation_loss"]
    ):
      return record["epoch"]
  return 0
