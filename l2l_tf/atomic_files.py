"""Atomic file and directory writes: a crash leaves the old version or the new, never half.

Both write next to the target (same file system) and rename into place. Temporaries are named
`.tmp-*` (files) and `.<name>.tmp-*` / `.<name>.old-*` (directories), which
l2l_tf.leftovers and l2l_tf.training.run_directory remove after a killed run.
"""

import contextlib
import os
import shutil
import tempfile


def current_umask():
  """The process's umask (read without changing it where /proc allows)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  umask = os.umask(0)  # elsewhere: set and restore (not thread-safe, but brief)
  os.umask(umask)
  return umask


@contextlib.contextmanager
def atomic_directory(path):
  """Yields a temporary directory that replaces `path` only if the block succeeds."""
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
  os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would make shipped models private
  try:
    yield tmp
    if os.path.isdir(path):
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
      os.rename(path, os.path.join(old, "x"))
      os.rename(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, path)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(path, data):
  """Writes a file (str or bytes) through a temporary file and rename.

  The file gets the mode open() would give it (0666 less the umask), not mkstemp's 0600.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
  try:
    os.fchmod(fd, 0o666 & ~current_umask())
    with os.fdopen(fd, "w" if isinstance(data, str) else "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
